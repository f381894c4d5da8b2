"""Grid search end to end on a few hundred MNIST images: outputs, skipping finished trials, resuming
interrupted ones, the probe objective, a diverging trial recorded rather than raised, and an objective
the task never logs refused before training."""

from __future__ import annotations

import csv
import dataclasses
import json
import re

import pytest

from mnistlab import cli, tasks
from mnistlab.runs import folder as rundir
from mnistlab.search import grid as search
from mnistlab.search import optuna as search_optuna
from mnistlab.tasks import load_experiment, load_run_config
from mnistlab.training.loop import NonFiniteLossError

TINY = [
    "data.train_limit=200",
    "data.test_limit=100",
    "train.epochs=1",
    "train.batch_size=32",
    "train.eval_batch_size=200",
    "train.threads=1",
]
GRID = {"train.lr": ["1e-2", "1e-5"], "model.latent_dim": ["4"]}


@pytest.fixture
def counted_trainer(monkeypatch):
    """Wrap the real trainer and record every call's (run folder, resume)."""
    calls = []
    real = search.trainer_for

    def trainer_for(task):
        trainer = real(task)

        def wrapped(exp, out, resume=False, progress=True, on_epoch_end=None):
            calls.append((out.name, resume))
            return trainer(exp, out, resume=resume, progress=progress, on_epoch_end=on_epoch_end)

        return wrapped

    monkeypatch.setattr(search, "trainer_for", trainer_for)
    return calls


def test_grid_writes_table_curves_best_preset_and_skips_on_rerun(tmp_path, counted_trainer):
    out = tmp_path / "search"
    rows = search.run_grid("ae", GRID, out, "quick", TINY, progress=False)
    assert sorted(c[0] for c in counted_trainer) == ["lr=1e-2_latent_dim=4", "lr=1e-5_latent_dim=4"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["val_loss"] <= rows[1]["val_loss"]  # sorted best first
    assert rows[0]["trial"] == "lr=1e-2_latent_dim=4"  # lr 1e-5 barely moves in 5 steps
    for name in ("results.csv", "results.md", "val_curves.png", "best.toml", "search.json"):
        assert (out / name).is_file(), name
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["trial"] for t in table] == [r["trial"] for r in rows]
    assert float(table[0]["val_loss"]) == pytest.approx(rows[0]["val_loss"])
    assert "| 1 | lr=1e-2_latent_dim=4 |" in (out / "results.md").read_text()

    # best.toml is a preset that `train --preset PATH` accepts, equal to the best trial's config.
    best = load_experiment("ae", str(out / "best.toml"))
    assert best == load_run_config(out / "trials" / rows[0]["trial"])[1]
    assert best.train.lr == 1e-2 and best.model.latent_dim == 4

    # Same search again: nothing is trained, the table is the same.
    counted_trainer.clear()
    again = search.run_grid("ae", GRID, out, "quick", TINY, progress=False)
    assert counted_trainer == []
    assert [r["trial"] for r in again] == [r["trial"] for r in rows]


def test_interrupted_trial_resumes_and_probe_objective(tmp_path, counted_trainer):
    out = tmp_path / "search"
    grid = {"train.lr": ["1e-2"]}
    search.run_grid("ae", grid, out, "quick", TINY, progress=False)
    trial = out / "trials" / "lr=1e-2"
    # Simulate a crash after the last epoch's checkpoint but before the summary was written.
    (trial / "summary.json").unlink()
    counted_trainer.clear()
    rows = search.run_grid("ae", grid, out, "quick", TINY, objective="probe_acc", progress=False)
    assert counted_trainer == [("lr=1e-2", True)]  # resumed, not restarted
    assert rundir.read_summary(trial)["status"] == "finished"
    acc = rows[0]["probe_acc"]
    assert 0.0 <= acc <= 1.0
    assert rundir.read_summary(trial)["probe_acc"] == pytest.approx(acc, abs=1e-6)  # cached
    assert "probe_acc" in (out / "results.md").read_text()
    # Another objective on a finished search trains nothing.
    counted_trainer.clear()
    search.run_grid("ae", grid, out, "quick", TINY, objective="val_loss", progress=False)
    search.run_grid("ae", grid, out, "quick", TINY, objective="probe_acc", progress=False)
    assert counted_trainer == []


def fake_diverging_trainer(exp, out, resume=False, progress=True, on_epoch_end=None):
    """A trainer whose first step is non-finite, as a trainer that diverged raises."""
    rundir.prepare(out, exp, "ae", resume)
    raise NonFiniteLossError("non-finite loss=nan at epoch 1, step 1; training stopped")


def test_diverging_trial_is_recorded_not_raised(tmp_path, monkeypatch):
    spec = tasks.get("ae")
    monkeypatch.setitem(tasks._TASKS, "ae", dataclasses.replace(spec, train=fake_diverging_trainer))
    out = tmp_path / "search"
    rows = search.run_grid("ae", {"train.lr": ["2e-2"]}, out, "quick", TINY, progress=False)
    assert rows[0]["status"] == "diverged" and rows[0]["val_loss"] is None
    summary = json.loads((out / "trials" / "lr=2e-2" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["error"]
    assert not (out / "best.toml").exists()  # no trial has a value


def test_search_refuses_a_trial_folder_with_another_config(tmp_path):
    out = tmp_path / "search"
    search.run_grid("ae", {"train.lr": ["1e-2"]}, out, "quick", TINY, progress=False)
    (out / "trials" / "lr=1e-2" / "summary.json").unlink()  # unfinished, so it would be resumed
    with pytest.raises(search.ConfigError, match="another config"):
        search.run_grid(
            "ae", {"train.lr": ["1e-2"]}, out, "quick", [*TINY, "model.latent_dim=3"], progress=False
        )


@pytest.mark.parametrize(
    ("task", "objective", "message"),
    [
        ("gan", "val_loss", "the gan task never logs it; it logs val_d_real, val_d_fake"),
        ("vae", "val_recon", "the vae task never logs it; it logs val_loss, val_recon_nll, val_kl"),
        ("gan", "probe_acc", "objective probe_acc needs an encoder and gan has none (tasks with one: ae,"),
    ],
)
def test_an_objective_the_task_never_logs_is_refused_before_training(
    tmp_path, monkeypatch, capsys, task, objective, message
):
    """From the task's declared TaskSpec.val_metrics and roles: one line, before any trial trains or
    the search folder is made (grid, Optuna and the CLI alike)."""
    monkeypatch.setattr(search, "trainer_for", lambda t: pytest.fail("a trial trained"))
    with pytest.raises(tasks.ConfigError, match=re.escape(message)):
        search.run_grid(task, GRID, tmp_path / "grid", "quick", TINY, objective)
    spec = search_optuna.StudySpec(
        task=task, out=tmp_path / "optuna", space=(), n_trials=1, objective=objective
    )
    with pytest.raises(tasks.ConfigError, match=re.escape(message)):
        search_optuna.run_optuna(spec)
    assert (
        cli.main(
            ["search", task, "--preset", "quick", "--objective", objective, "--out", str(tmp_path / "c")]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tmp_path.iterdir())  # no folder made
    assert search.check_objective("vae", "val_recon_nll").name == "val_recon_nll"  # one it logs passes
