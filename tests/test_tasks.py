"""The task registry: names, roles, preset tables, plug-ins through entry points driven through the CLI
(an autoencoder, and a generator on the generic GeneratorRun: train, eval, sample, score, its report
section), their help facts without torch, a broken plug-in named in one line, a plug-in study stage,
the Python API, and the package's layers (import-linter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab import cli, tasks
from mnistlab.core import task_catalog
from mnistlab.core.errors import ConfigError
from mnistlab.plots.content import RunFolder, Section
from mnistlab.pretrained import bundle
from mnistlab.report.build import write_report
from mnistlab.report.sections import build_sections
from mnistlab.study import registry
from mnistlab.study.run import run_study

from .conftest import TINY_RUN_PRESET, assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).parent / "plugin"
TINY = ["--set", "data.train_limit=300", "--set", "data.test_limit=100", "--set", "train.device=cpu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown task 'vea'; did you mean 'vae'.*known tasks: ae, dae"):
        tasks.get("vea")
    with pytest.raises(ConfigError, match="unknown task"):
        tasks.load_experiment("nope", "quick")


def test_roles_select_tasks_and_builtins_register_themselves():
    assert {"ae", "dae", "vae", "gan", "classifier"} <= set(tasks.names())
    assert [s.name for s in tasks.with_role("denoiser")] == ["dae"]
    assert {"ae", "dae", "vae"} <= {s.name for s in tasks.with_role("encoder")}
    with pytest.raises(ValueError, match="unknown role"):
        tasks.with_role("painter")
    with pytest.raises(ValueError, match="unknown roles"):
        tasks.TaskSpec("x", "", object, print, print, roles=frozenset({"painter"}))


def test_a_task_module_carries_its_preset_tables_and_a_file_overrides_them(tmp_path):
    # The VAE's tables live in tasks/vae.py, not in configs/*.toml.
    assert (
        tasks.load_experiment("vae", "default").train.epochs
        == tasks.get("vae").presets["default"]["train"]["epochs"]
    )
    assert tasks.load_experiment("vae", "seed").train.batch_size == 256
    preset = tmp_path / "mine.toml"
    preset.write_text("[vae.train]\nepochs = 3\n[mistake.train]\nepochs = 1\n")
    with pytest.raises(ConfigError, match="unknown table.*mistake"):
        tasks.load_experiment("vae", str(preset))
    preset.write_text("[vae.train]\nepochs = 3\n")
    assert tasks.load_experiment("vae", str(preset)).train.epochs == 3


def plugin_entry_points() -> str:
    """tests/plugin/pyproject.toml's entry points, as pip writes them into entry_points.txt."""
    groups = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    return "\n".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items())
        for group, eps in groups.items()
    )


PLUGIN_ENTRY_POINTS = plugin_entry_points()


@pytest.fixture
def plugin_installed(tmp_path, monkeypatch):
    """The plug-in of tests/plugin as pip would install it: its package on sys.path and a dist-info
    folder with its entry point (what `pip install tests/plugin` writes), then the registry reloaded."""
    site = tmp_path / "site"
    info = site / "toy_mnistlab-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-mnistlab\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    paths = [str(site), str(PLUGIN / "src")]
    monkeypatch.setattr(sys, "path", [*paths, *sys.path])
    monkeypatch.setattr(tasks, "_loaded", False)
    monkeypatch.setattr(registry, "_loaded", False)
    yield paths
    tasks.unregister("linae")
    tasks.unregister("noisegen")
    registry.unregister("knn_probe")
    monkeypatch.setattr(tasks, "_loaded", False)
    monkeypatch.setattr(registry, "_loaded", False)


def test_a_plugin_task_trains_samples_probes_and_maps_through_the_cli(plugin_installed, tmp_path, capsys):
    assert "linae" in tasks.names()
    run = tmp_path / "linae"
    assert cli.main(["train", "linae", "--preset", "quick", "--out", str(run), "--no-progress", *TINY]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "7", "--sampler", "gaussian", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    args = [
        "probe",
        str(run),
        "--preset",
        "quick",
        "--no-progress",
        "--set",
        "linear.device=cpu",
        "--set",
        "linear.epochs=1",
        "--finetune",
        "--set",
        "finetune.epochs=1",
        "--set",
        "finetune.device=cpu",
    ]
    assert cli.main(args) == 0
    probe = json.loads((run / "probe" / "summary.json").read_text())
    assert probe["run_task"] == "linae" and probe["linear_probe"]["test_acc"] > 0.2 and "finetune" in probe
    assert cli.main(["latent", str(run), "--no-score", "--maps", "pca", "--no-progress"]) == 0
    assert (run / "figures" / "latent" / "map_pca.png").is_file()
    loaded = tasks.load_run(run)
    assert loaded.encode(torch.zeros(3, 28, 28, dtype=torch.uint8)).shape == (3, 8)


def test_a_plugin_generator_gets_eval_sample_score_and_a_report_section_from_the_generic_run(
    plugin_installed, tmp_path, capsys
):
    """tests/plugin's noisegen writes no scoring, sampling or report code of its own: GeneratorRun,
    finish_generator, evaluate_generator and generator_section give them."""
    run = tmp_path / "noisegen"
    argv = ["train", "noisegen", "--preset", "quick", "--out", str(run), "--no-progress", *TINY]
    assert cli.main([*argv, "--set", "train.epochs=1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["n_samples_scored"] == 1000
    assert summary["test"]["fid_mnist"] > 0 and len(summary["test"]["class_hist"]) == 10
    assert (run / "figures" / "samples.png").is_file()
    assert "val_mmd" in json.loads((run / "metrics.jsonl").read_text().splitlines()[0])  # its val_metrics
    capsys.readouterr()

    (run / "figures" / "samples.png").unlink()
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["test"]["fid_mnist"] == summary["test"]["fid_mnist"]  # the same seeded samples again
    assert (run / "figures" / "samples.png").is_file()

    out = tmp_path / "s.npy"
    assert (
        cli.main(["sample", str(run), "--n", "40", "--seed", "3", "--out", str(out), "--device", "cpu"]) == 0
    )
    loaded = tasks.load_run(run)
    assert np.array_equal(np.load(out), loaded.generate(40, seed=3).numpy())  # "prior", the default sampler
    assert cli.main(["score", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert "fid" in capsys.readouterr().out.lower()
    assert cli.main(["sample", str(run), "--n", "4", "--digit", "3", "--out", str(tmp_path / "d.npy")]) == 2
    assert_one_line_error(capsys, "cannot be asked for a digit")
    assert (
        cli.main(["sample", str(run), "--n", "4", "--sampler", "gmm", "--out", str(tmp_path / "g.npy")]) == 2
    )
    assert_one_line_error(capsys, "unknown sampler 'gmm'")

    # Its report section, called as build_sections calls a stage's report: (RunFolder, stage name).
    state = {"stages": [{"name": "noisegen", "folder": "noisegen", "status": "done"}]}
    sec = tasks.get("noisegen").report(
        RunFolder(tmp_path, state, {"noisegen": loaded.roles}, None), "noisegen"
    )
    assert isinstance(sec, Section) and not sec.missing and "FID-MNIST ↓" in sec.tables[0].columns
    assert [f.rel for f in sec.figures] == ["noisegen/figures/samples.png"]


def test_a_task_report_is_called_as_documented(monkeypatch, tmp_path):
    """TaskSpec.report(run, stage): the study report passes the study folder as a RunFolder and the
    stage's name (docs/plugins.md)."""
    calls = []

    def report(run, stage):
        calls.append((run, stage))
        return Section(stage, "spy")

    spec = tasks.TaskSpec("spytask", "a spy", object, print, print, report=report)
    monkeypatch.setattr(tasks, "_TASKS", {**tasks._TASKS, "spytask": spec})
    state = {"stages": [{"name": "spytask", "folder": "spytask", "status": "done"}]}
    sections = build_sections(tmp_path, state)
    assert len(calls) == 1 and isinstance(calls[0][0], RunFolder) and calls[0][1] == "spytask"
    assert calls[0][0].root == tmp_path and any(s.id == "spytask" for s in sections)


def test_plugin_tasks_are_in_the_help_with_their_roles_and_samplers_without_torch(tmp_path):
    """The help reads a plug-in's `mnistlab.task_info` entry (a light module): the task lists by role
    and the samplers name the plug-ins, and printing them imports no torch."""
    site = tmp_path / "site"
    info = site / "toy_mnistlab-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-mnistlab\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    code = (
        "import sys\nfrom mnistlab.cli import build_parser\np = build_parser()\n"
        "for c in ('sample', 'train', 'probe'):\n"
        "    print(p._subparsers._group_actions[0].choices[c].format_help())\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN / "src"), str(ROOT / "src")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "TORCH False" in text
    assert "noisegen: prior [default]" in text and "ae, dae, linae: gmm [default]" in text
    assert "gan, cgan, flow, linae, noisegen)" in text  # sample's run_dir: the tasks that generate
    assert "noisegen (a noise-to-image generator" in text  # train's task list
    entry = task_catalog.TaskEntry.from_info("x", {"roles": ["generator"], "samplers": ("prior",)})
    assert entry.roles == frozenset({"generator"}) and entry.plugin
    with pytest.raises(ValueError, match="unknown field.*colour"):
        task_catalog.TaskEntry.from_info("x", {"colour": "red"})


def test_a_plugin_that_fails_to_load_is_one_line_naming_it_on_the_command_line(tmp_path, monkeypatch, capsys):
    """Its own load error (a module raising with a message over several lines), not argparse's
    "invalid choice" or a traceback; the help still names it and the built-ins still work."""
    site = tmp_path / "site"
    info = site / "badplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mnistlab.tasks]\nbadplug = badplug_mod:SPEC\nmisnamed = misnamed_mod:SPEC\n"
    )
    (site / "badplug_mod.py").write_text("raise RuntimeError('needs libfoo 2.0\\nsecond line')\n")
    (site / "misnamed_mod.py").write_text(
        "from mnistlab.plugin import TaskSpec\nSPEC = TaskSpec('other', '', object, print, print)\n"
    )
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setattr(tasks, "_loaded", False)
    monkeypatch.setattr(tasks, "_BROKEN", {})
    try:
        assert cli.main(["train", "badplug", "--preset", "quick", "--out", str(tmp_path / "r")]) == 2
        msg = assert_one_line_error(capsys, "plug-in task 'badplug' (badplug_mod:SPEC) failed to load")
        assert msg.endswith("RuntimeError: needs libfoo 2.0") and "invalid choice" not in msg
        assert not (tmp_path / "r").exists()
        with pytest.raises(SystemExit):  # --help exits through argparse
            cli.main(["train", "--help"])
        assert "badplug" in capsys.readouterr().out
        assert "ae" in tasks.names() and "other" not in tasks.names()
        with pytest.raises(
            ConfigError, match="it registers a task named 'other'; name the entry point 'other' too"
        ):
            tasks.get("misnamed")
    finally:
        monkeypatch.setattr(tasks, "_loaded", False)


def test_builtin_val_metrics_are_what_their_runs_log():
    """TaskSpec.val_metrics (what a search checks an objective against) against the val_* columns of
    the shipped runs' metrics.jsonl, trained with each task's default preset."""
    names = bundle.available()
    if not names:
        pytest.skip("this installation ships no trained runs")
    for name in names:
        rows = [
            json.loads(line) for line in (bundle.BUNDLE / name / "metrics.jsonl").read_text().splitlines()
        ]
        logged = {k.removeprefix("val_") for r in rows for k in r if k.startswith("val_")}
        assert logged <= set(tasks.get(name).val_metrics), (name, logged)
    declared = {e.name: e.val_metrics for e in task_catalog.entries()}
    assert all(declared.values()) and declared["vae"] == ("loss", "recon_nll", "kl")


def test_a_broken_plugin_is_named_and_does_not_hide_the_builtins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mnistlab.tasks]\nbroken = no_such_module:SPEC\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setattr(tasks, "_loaded", False)
    monkeypatch.setattr(tasks, "_BROKEN", {})
    assert "ae" in tasks.names()
    with pytest.raises(ConfigError, match="plug-in task 'broken'.*failed to load"):
        tasks.get("broken")
    monkeypatch.setattr(tasks, "_loaded", False)


def test_a_role_the_run_lacks_is_a_one_line_error(tmp_path, capsys):
    classifier = tmp_path / "clf"
    assert (
        cli.main(
            [
                "train",
                "classifier",
                "--preset",
                "quick",
                "--out",
                str(classifier),
                "--no-progress",
                "--set",
                "train.epochs=1",
                *TINY,
            ]
        )
        == 0
    )
    run = tasks.load_run(classifier)
    assert run.classify(torch.zeros(2, 28, 28)).shape == (2, 10)
    with pytest.raises(tasks.RoleError, match="has no encoder; tasks with one: ae, dae, vae"):
        run.encode(torch.zeros(1, 28, 28))
    assert cli.main(["probe", str(classifier), "--preset", "quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no encoder" in err and "\n" not in err


def test_python_api_trains_and_loads_a_run(tmp_path):
    import mnistlab

    summary = mnistlab.train(
        "ae",
        preset="quick",
        out=tmp_path / "ae",
        progress=False,
        overrides=["data.train_limit=300", "data.test_limit=100", "train.epochs=1"],
    )
    assert summary["status"] == "finished"
    run = mnistlab.load_run(tmp_path / "ae")
    codes = run.encode(torch.rand(10, 1, 28, 28))
    assert codes.shape == (10, 10)
    walk = run.decode(torch.stack([codes[0] + t * (codes[1] - codes[0]) for t in torch.linspace(0, 1, 5)]))
    assert walk.shape == (5, 28, 28) and 0 <= walk.min() and walk.max() <= 1
    assert run.generate(4, seed=1).dtype == torch.uint8
    with pytest.raises(ConfigError, match="cannot be asked for a digit"):
        run.generate(4, digit=3)
    with pytest.raises(ConfigError, match="takes no option"):
        mnistlab.train("ae", preset="quick", out=tmp_path / "x", baseline=tmp_path)


def test_a_plugin_stage_runs_in_the_study_and_reports_with_nothing_edited(plugin_installed, tmp_path):
    """tests/plugin's k-NN probe stage, found by its entry point: planned after the encoders it reads,
    run, recorded in run.json, fingerprinted, and given its section of the report."""
    out = tmp_path / "study"
    plan = [
        "run.tasks=ae,linae",
        "run.labels_per_class=",
        "run.finetune=false",
        "run.latent_maps=pca",
        "run.latent_score=false",
        "run.workers=1",
        "linae.train.epochs=1",
    ]
    state = run_study(out, str(TINY_RUN_PRESET), plan, progress=False, report=write_report)
    names = [s["name"] for s in state["stages"]]
    assert names.index("knn_probe") > max(names.index("ae"), names.index("linae"))
    accuracy = json.loads((out / "knn_probe" / "summary.json").read_text())["test_accuracy"]
    assert set(accuracy) == {"ae", "linae"} and all(0.1 < a <= 1 for a in accuracy.values())
    html = (out / "report.html").read_text()
    assert "k-nearest-neighbour probe (a plug-in stage)" in html and "5-NN on each encoder" in html


def test_the_layers_hold(tmp_path):
    """The import-linter contracts of pyproject.toml (layers one way; models import no training; metrics
    no tasks): an upward import anywhere, inside a function too, fails here."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
