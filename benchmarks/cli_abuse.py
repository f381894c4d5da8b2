"""An adversarial pass over the CLI: several hundred bad invocations (bad values just outside each
range, wrong types, garbage files where runs, presets, IDX or .npy files are expected), each run
in-process through `mnistlab.cli.main`. Every one must end as a one-line error with exit code 2 (or
argparse's usage error, also 2): no traceback, no crash, nothing accepted. Prints the tally.

    PYTHONPATH=src python -m benchmarks.cli_abuse
"""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
import tempfile
from pathlib import Path

from mnistlab import cli

BAD_VALUES = {
    "train.epochs": ["0", "-1", "1.5", "x", "1e9"],
    "train.batch_size": ["0", "1e22", "65537", "-3", "[]"],
    "train.lr": ["0", "-1", "1e308", "nan", "inf", "fast"],
    "train.seed": ["-1", "4294967296", "1.0"],
    "train.threads": ["100000", "-1"],
    "train.weight_decay": ["-1", "nan"],
    "train.schedule": ["linear", ""],
    "train.optimizer": ["sgd"],
    "train.device": ["tpu"],
    "train.warmup": ["1", "-0.1"],
    "train.amp": ["fp8"],
    "model.latent_dim": ["0", "100000000", "2.5", "ten"],
    "model.dropout": ["1", "-0.1"],
    "data.val_fraction": ["1", "-0.1", "2"],
    "data.train_limit": ["-5", "x"],
    "data.data_dir": ["/nonexistent"],
    "data.dataset": ["cifar"],
    "nope.key": ["1"],
    "train.nope": ["1"],
    "model": ["3"],
    "train": ["x"],
}


def invocations(tmp: Path) -> list[list[str]]:
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"\x00\xffnot anything" * 50)
    bad_toml = tmp / "bad.toml"
    bad_toml.write_bytes(b"\xff\xfe[not utf8")
    folder = tmp / "folder"
    folder.mkdir()
    fake_run = tmp / "fakerun"
    fake_run.mkdir()
    (fake_run / "config.toml").write_text('task = "ae"\n[ae.model]\nlatent_dim = 4\n')
    npy = tmp / "huge.npy"
    npy.write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776, 28, 28), }"
        + b" " * 40
        + b"\n"
    )
    cases = []
    task_keys = {
        "dae": {
            "noise.sigma": ["0", "-1", "11", "nan"],
            "noise.seed": ["-1"],
            "noise.eval_sigmas": ["0,1", "x"],
        },
        "vae": {
            "vae.beta": ["-1", "1e9", "nan"],
            "vae.kl_warmup": ["2", "-1"],
            "vae.likelihood": ["gauss"],
            "vae.eval_samples": ["-1", "1e9"],
        },
        "gan": {
            "gan.d_lr": ["-1", "inf"],
            "gan.loss": ["wgan"],
            "gan.r1_every": ["0"],
            "gan.g_ema": ["1.5"],
            "gan.grid_epochs": ["x"],
            "model.noise_dim": ["0", "100000"],
        },
    }
    for task, keys in task_keys.items():
        for key, values in keys.items():
            cases += [
                ["train", task, "--preset", "quick", "--out", str(tmp / "never"), "--set", f"{key}={v}"]
                for v in values
            ]
    for task, (key, values) in itertools.product(
        ("ae", "dae", "vae", "gan", "classifier"), BAD_VALUES.items()
    ):
        for v in values:
            cases.append(
                ["train", task, "--preset", "quick", "--out", str(tmp / "never"), "--set", f"{key}={v}"]
            )
    for preset in ("nosuch", str(folder), str(bad_toml), str(garbage), "quik"):
        cases += [["train", "ae", "--preset", preset], ["run", "--preset", preset, "--out", str(tmp / "r")]]
    for path in (tmp / "missing", folder, garbage, fake_run):
        cases += [
            ["eval", str(path)],
            ["probe", str(path)],
            ["latent", str(path)],
            ["sample", str(path), "--n", "3", "--out", str(tmp / "s.npy")],
            ["serve", str(path), "--port", "0"],
            ["report", str(path)],
            ["compare", str(path)],
        ]
    for samples in (garbage, npy, tmp / "missing.npy", folder):
        cases.append(["score", str(samples)])
    cases += [
        ["train", "nosuchtask"],
        ["search", "ae", "--objective", "loss"],
        ["sample", str(fake_run), "--n", "0", "--out", str(tmp / "x.npy")],
        ["sample", str(fake_run), "--n", "3", "--out", str(tmp / "x.png")],
        ["data", "info", "--data-dir", str(folder)],
        ["data", "info", "--data-dir", str(tmp / "missing")],
        ["data", "download", "nosuch"],
        ["run", "--set", "run.labels_per_class=abc", "--out", str(tmp / "r2")],
        ["run", "--set", "nope=1", "--out", str(tmp / "r3")],
        ["run", "--set", "run.tasks=aee", "--out", str(tmp / "r4")],
    ]
    return cases


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cases = invocations(tmp)
        tally = {"one-line error": 0, "usage error": 0, "accepted": 0, "crash": 0}
        bad = []
        for args in cases:
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli.main(args)
                kind = (
                    "one-line error"
                    if code == 2 and len(err.getvalue().strip().splitlines()) == 1
                    else "accepted"
                )
            except SystemExit as e:
                kind = "usage error" if e.code == 2 else "crash"
            except BaseException as e:  # a traceback would have reached the user
                kind = "crash"
                err.write(f"{type(e).__name__}: {e}")
            tally[kind] += 1
            if kind in ("accepted", "crash"):
                bad.append((args, err.getvalue().strip()[-300:]))
            if (tmp / "never" / "summary.json").exists():
                bad.append((args, "a run folder was trained"))
    print(f"{len(cases)} bad invocations: " + ", ".join(f"{k} {v}" for k, v in tally.items()))
    for args, err in bad:
        print("  NOT REFUSED CLEANLY:", " ".join(args), "->", err)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
