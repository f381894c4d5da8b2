"""The command line end to end on tiny synthetic data: run folders, errors, exit codes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from mnistlab import cli
from mnistlab.training import autoencoder
from tests.conftest import assert_one_line_error

TINY = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=16",
    "--set",
    "model.latent_dim=3",
    "--device",
    "cpu",
    "--no-progress",
]


def run(*args: str) -> int:
    return cli.main(list(args))


def test_train_ae_writes_a_complete_run_folder(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out), *TINY]
    assert run(*argv) == 0
    for name in (
        "config.toml",
        "command.txt",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.safetensors",
        "figures/loss_curves.png",
        "figures/reconstructions.png",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2
    assert set(summary["test"]) == {"mse", "psnr", "ssim"} and 0 < summary["test"]["mse"] < 1
    assert len(summary["checkpoint_sha256"]) == 64
    # The machine and the precision, beside which its time means something.
    assert summary["precision"] == "float32" and summary["host"]["cores"] >= 1
    assert summary["host"]["kernels"] in ("DEFAULT", "AVX2", "AVX512") and summary["host"]["cpu"]
    # The command that was run, not pytest's own argv.
    assert (out / "command.txt").read_text() == shlex.join(["mnistlab", *argv]) + "\n"
    printed = json.loads(capsys.readouterr().out)
    assert printed["test"] == summary["test"]

    # Same folder again: refused without --resume; with it, nothing left to train and the result stands.
    assert run("train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out), *TINY) == 2
    assert_one_line_error(capsys, "--resume")
    assert (
        run(
            "train",
            "ae",
            "--preset",
            "quick",
            "--data-dir",
            str(idx_dir),
            "--out",
            str(out),
            "--resume",
            *TINY,
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["test"] == summary["test"]
    # A different config cannot resume this run.
    args = [
        "train",
        "ae",
        "--preset",
        "quick",
        "--data-dir",
        str(idx_dir),
        "--out",
        str(out),
        "--resume",
        *TINY,
    ]
    assert run(*args, "--set", "train.lr=0.5") == 2
    assert_one_line_error(capsys, "ae.train.lr: 0.004 -> 0.5")  # the changed key is named
    # A run folder written before a config field existed (here: no train.channels_last line) resumes,
    # since the missing field takes its default; the folder's config.toml then gains the field.
    cfg = out / "config.toml"
    lines = cfg.read_text().splitlines(keepends=True)
    cfg.write_text("".join(line for line in lines if not line.startswith("channels_last")))
    assert "channels_last" not in cfg.read_text()
    assert run(*args) == 0
    assert "channels_last" in cfg.read_text()

    # eval recomputes the same test numbers from the checkpoint.
    capsys.readouterr()
    assert run("eval", str(out)) == 0
    assert json.loads(capsys.readouterr().out)["test"] == summary["test"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.nope=1"], "unknown key 'model.nope'"),
        (["--set", "train.epochs=many"], "not a valid int"),
        (["--preset", "missing.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(idx_dir, tmp_path, capsys, args, message):
    assert run("train", "ae", "--data-dir", str(idx_dir), "--out", str(tmp_path / "r"), *args) == 2
    assert_one_line_error(capsys, message)


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert run("eval", str(tmp_path)) == 2
    assert_one_line_error(capsys, "not a run folder")


def test_diverging_training_exits_3_and_says_so(idx_dir, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = autoencoder.reconstruction_loss

    def explode(recon, target):
        calls["n"] += 1
        loss = real(recon, target)
        return loss * float("nan") if calls["n"] > 7 else loss

    monkeypatch.setattr(autoencoder, "reconstruction_loss", explode)
    out = tmp_path / "run"
    assert run("train", "ae", "--data-dir", str(idx_dir), "--out", str(out), *TINY) == 3
    assert "non-finite loss" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "step 8" in summary["error"]
    assert (out / "checkpoints" / "last.safetensors").is_file()


def test_data_info(idx_dir, capsys):
    assert run("data", "info", "--data-dir", str(idx_dir), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 120 and info["test"] == 40 and sum(info["train_class_counts"]) == 120
    assert run("data", "info", "--data-dir", str(idx_dir)) == 0
    table = capsys.readouterr().out
    assert "train   120 images" in table and "test    40 images" in table


def test_bare_command_prints_help_and_version_is_known(capsys):
    assert run() == 0
    assert "usage: mnistlab" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        run("--version")
    assert e.value.code == 0 and "mnistlab 0.1.0" in capsys.readouterr().out


def test_python_dash_m_and_help_on_every_command():
    for args in ([], ["train"], ["eval"], ["data"], ["data", "info"], ["data", "download"]):
        proc = subprocess.run(
            [sys.executable, "-m", "mnistlab", *args, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0 and "usage: mnistlab" in proc.stdout, args


def test_a_corrupt_summary_is_a_one_line_error(tmp_path, capsys):
    from mnistlab.core.errors import ConfigError
    from mnistlab.runs import folder as rundir

    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ConfigError, match="summary.json: not a readable JSON file"):
        rundir.read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        rundir.read_summary(tmp_path)


@pytest.mark.parametrize(
    ("argv", "word", "hint"),
    [
        (["trian", "ae"], "trian", "did you mean 'train'?"),
        (["-q", "sampel"], "sampel", "did you mean 'sample'?"),
        (["zzz"], "zzz", ""),
    ],
)
def test_an_unknown_command_is_one_line_with_a_guess(capsys, argv, word, hint):
    assert run(*argv) == 2
    message = assert_one_line_error(capsys, f"unknown command {word!r}")
    assert hint in message and "commands: train, eval" in message


HEAVY = ("torch", "numpy", "matplotlib", "mnistlab.tasks")


@pytest.mark.parametrize(
    "args", [["--help"], ["train", "--help"], ["sample", "--help"], ["--version"], ["trian"]]
)
def test_help_version_and_a_typo_import_nothing_heavy(args):
    """`mnistlab --help` and the like answer without torch, numpy, matplotlib or the task modules (the
    CLI's start-up: cli/__init__.py); how fast is measured by benchmarks/cli_start.py, not here."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['mnistlab', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('mnistlab', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print('loaded', [m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    expected = 2 if args == ["trian"] else 0
    assert proc.stderr.splitlines()[-1] == f"loaded [] {expected}", proc.stderr


def test_the_help_task_catalogue_is_the_registry():
    """The help texts list the built-in tasks from core.task_catalog; each built-in task module builds
    its TaskSpec from its entry there. Every built-in task has one entry and each entry a task, with the
    same facts, and `eval_baseline` says what the task's evaluate takes."""
    import importlib
    import inspect
    import pkgutil

    from mnistlab import tasks
    from mnistlab.core import task_catalog

    assert task_catalog.ENTRY_POINT_GROUP == tasks.ENTRY_POINT_GROUP
    modules = [
        importlib.import_module(f"mnistlab.tasks.{m.name}") for m in pkgutil.iter_modules(tasks.__path__)
    ]
    built_in = {m.SPEC.name: m.SPEC for m in modules if isinstance(getattr(m, "SPEC", None), tasks.TaskSpec)}
    assert len(built_in) >= 8 and all(tasks.get(name) is spec for name, spec in built_in.items())
    assert set(built_in) == set(task_catalog.BUILT_IN)
    for name, spec in built_in.items():
        entry = task_catalog.BUILT_IN[name]
        assert {k: getattr(spec, k) for k in entry.spec_fields()} == entry.spec_fields(), name
        takes = spec.evaluate is not None and "baseline" in inspect.signature(spec.evaluate).parameters
        assert entry.eval_baseline == takes, name
    assert [e.name for e in task_catalog.entries()] == [n for n in tasks.names() if n in built_in]


def test_a_plugin_task_is_named_in_the_help_without_loading_it(tmp_path, monkeypatch, capsys):
    from mnistlab.cli import task_help

    info = tmp_path / "toy_mnistlab-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-mnistlab\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[mnistlab.tasks]\nlinae = not_imported_here:SPEC\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert task_help.task_list().endswith("; plug-ins: linae") and task_help.names().endswith(", linae")
    assert "not_imported_here" not in sys.modules
    assert run("train", "vea") == 2  # a task's name is checked when the command runs
    assert "did you mean 'vae'?" in assert_one_line_error(capsys, "unknown task 'vea'")
