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
