"""The command line end to end on tiny synthetic data: run folders, errors, exit codes."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys

import pytest

from mnistlab import cli
from mnistlab.training import autoencoder
from tests.conftest import TINY_RUN_PRESET, assert_one_line_error

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
    argv.append("--json")  # the folder and its test metrics, read below
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


# ------------------------------------------------------------------- the console, off a terminal
# pytest's captured stderr is no terminal, as a log file or CI's is not: no bar may be drawn there.


def test_train_off_a_terminal_says_what_it_trains_a_line_per_epoch_and_what_next(
    idx_dir, tmp_path, capsys, caplog
):
    out = tmp_path / "run"
    argv = ["train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out)]
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        assert run(*argv, *TINY[:-1], "--set", "train.epochs=3") == 0  # progress asked for (no --no-progress)
    printed = capsys.readouterr()
    assert "\r" not in printed.err + printed.out and "it/s" not in printed.err  # no bar, not even a fragment
    lines = caplog.messages
    assert "mnistlab train ae, preset quick: loading the data" in lines
    start = next(m for m in lines if m.startswith("training "))
    assert f"training 3 epochs of 96 images (6 steps of 16) on cpu into {out}" in start
    epochs = [m for m in lines if m.startswith("epoch ")]
    assert [m.split()[1] for m in epochs] == ["1/3", "2/3", "3/3"]
    assert all("train_loss=" in m and "val_loss=" in m and " elapsed" in m for m in epochs)
    assert "left)" in epochs[0] and "left" not in epochs[-1]  # an estimate once measured; none at the end
    assert "{" not in printed.out  # plain lines, not JSON
    assert printed.out.splitlines()[0].startswith(f"ae trained into {out}; test: mse ")
    assert f"`mnistlab eval {out}`" in printed.out and f"`mnistlab serve {out}`" in printed.out


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved_and_how_to_start_over(
    idx_dir, tmp_path, monkeypatch, capsys
):
    from mnistlab.runs import folder as rundir
    from mnistlab.training import loop

    real = loop.lr_factor

    def interrupt_at_step_two(schedule, step, total, warmup=0.25):
        if step == 1:
            raise KeyboardInterrupt
        return real(schedule, step, total, warmup)

    monkeypatch.setattr(loop, "lr_factor", interrupt_at_step_two)
    out = tmp_path / "run"
    argv = ["train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out), *TINY]
    assert run(*argv) == 130
    message = assert_one_line_error(capsys, "interrupted; no epoch had finished, so nothing was saved")
    assert message.endswith("rerun with --force to start over") and "--resume" not in message
    assert not rundir.checkpoint_path(out).exists()
    monkeypatch.setattr(loop, "lr_factor", real)
    assert run(*argv, "--force") == 0  # the advice works (a plain rerun is refused: the folder holds a run)


def stage_numbers(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(r"stage (\d+)/\d+: ", line))]


def test_run_off_a_terminal_numbers_its_stages_in_order_and_ends_on_the_report(
    tmp_path, monkeypatch, capsys, caplog
):
    """`mnistlab run` off a terminal (tiny preset, each stage's work left out: what is printed around
    them is tested): the start line, stage lines numbered 1..n, an end line per stage with the
    study's count, no bar, and a last line that names the report and `mnistlab serve`; again, every
    stage skipped, in order."""
    from mnistlab.study import run as pipeline

    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, name, resume: None)
    out = tmp_path / "study"
    argv = ["run", "--preset", str(TINY_RUN_PRESET), "--out", str(out), "--set", "run.workers=1"]
    for again in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mnistlab"):
            assert run(*argv) == 0
        printed = capsys.readouterr()
        assert "\r" not in printed.err + printed.out and "stage/s" not in printed.err
        lines = caplog.messages
        stages = json.loads((out / "run.json").read_text())["stages"]
        n = len(stages)
        assert lines[0].startswith(f"mnistlab run: preset {TINY_RUN_PRESET}, {n} stages (ae, probe, ")
        assert f"into {out}; time left: after the first stage" in lines[0]
        assert stage_numbers(lines) == list(range(1, n + 1))
        if again:
            assert f"stage 1/{n}: ae (done, skipped)" in lines
        else:
            ends = [m for m in lines if " stages done, " in m]
            assert [m.split(";")[1].split(" of ")[0].strip() for m in ends] == [
                str(k) for k in range(1, n + 1)
            ]
            assert ends[0].startswith(f"{stages[0]['name']} done (")
        assert printed.out.splitlines()[-1] == f"open {out / 'report.html'}, or `mnistlab serve {out}`"


def test_stage_lines_count_up_when_stages_start_out_of_plan_order(caplog):
    """Side by side, the gan stage (last in the plan) starts beside the first: stages are numbered
    as they start, so "stage 2/4" is never printed after "stage 3/4"."""
    from mnistlab.study.console import StudyConsole

    screen = StudyConsole(total=4, done=0, workers=2, progress=True)
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        screen.started("ae", resuming=False)
        screen.started("gan", resuming=False)
        screen.ended("gan", None, 3.0)
        screen.started("probe", resuming=False)
        screen.ended("ae", None, 5.0)
        screen.started("latent", resuming=True)
        screen.ended("probe", "interrupted", 1.0)
    screen.close()
    lines = caplog.messages
    assert lines[:2] == ["stage 1/4: ae (1 running)", "stage 2/4: gan (2 running)"]
    assert stage_numbers(lines) == [1, 2, 3, 4] and "stage 4/4: latent (resuming) (2 running)" in lines
    assert lines[2].startswith("gan done (0:03); 1 of 4 stages done, ") and "left" in lines[2]
    assert lines[-1].startswith("probe interrupted (0:01); 2 of 4 stages done")


@pytest.mark.slow
def test_a_study_in_worker_processes_logs_plain_ordered_lines(tmp_path):
    """The real thing, in a process whose stderr is a pipe: two stages at a time in worker processes,
    the tiny preset's autoencoder (its probe and t-SNE map) and GAN."""
    out = tmp_path / "study"
    sets = ["run.workers=2", "run.tasks=ae,gan", "run.labels_per_class=", "run.finetune=false"]
    cmd = [sys.executable, "-m", "mnistlab", "run", "--preset", str(TINY_RUN_PRESET), "--out", str(out)]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("mnistlab run: preset") and ", 2 at a time," in lines[0]
    assert stage_numbers(lines) == [1, 2, 3, 4]
    assert "Ignoring initalization" not in proc.stderr and "negative gradient method" not in proc.stderr
    assert any(line.startswith("[ae] epoch 1/1 ") and " elapsed" in line for line in lines)
    assert "generation scores of ae run" in proc.stdout  # the latent stage's table has a title
    assert proc.stdout.splitlines()[-1] == f"open {out / 'report.html'}, or `mnistlab serve {out}`"
