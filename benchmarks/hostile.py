"""A hostile pass over the CLI (issue 33's closing check): several hundred tries of kinds beyond the
issue's own examples, each run as a process of its own with a timeout and classified.

    PYTHONPATH=src python -m benchmarks.hostile [--list] [--only KIND,...] [--spawn] [--json FILE]

Kinds: odd paths (unicode, newlines, names past the OS's limit, `..`, a file or a device where a
folder belongs), symlinks (out of a run folder, at /dev/zero, loops), records (zero-byte, truncated
or duplicate-keyed config.toml, summary.json, metrics.jsonl, manifests), weights (empty, truncated or
lying safetensors checkpoints, a pickle in their place), samples for `score` (wrong dtypes, shapes,
headers, NaN, a FIFO), `--set` with odd types and nested keys, numbers (huge, negative, NaN, inf),
environment variables (MNISTLAB_HOME a file or a device, TMPDIR gone), `pretrained path`/`pack` with
odd names, folders that are files, and processes: two writers into one folder, SIGTERM/SIGINT/SIGKILL
mid-train then `--resume`. Each try says what it expects: a refusal, an acceptance, or either
(where both are right, e.g. a folder named in Chinese).

Each try is a process running `mnistlab ARGS` in a session of its own, its stdout and stderr to
files. To fit several hundred tries into minutes on a small CPU, the processes fork from a server that
has imported mnistlab and torch once (`--spawn` starts each as `python -m mnistlab` instead: the same
classes, ~3 s of imports each); the signal and two-writer tries always run as fresh commands. A try
ends as one of:

- error: exit 1 or 2, the last stderr line `mnistlab...: error: ...` and no other error line, no
  traceback (expected for a refusal; a failure where an acceptance was expected);
- accepted: exit 0 where that was expected (and its output checks held);
- traceback, hang (past the timeout, then killed), orphan (a process of the try's session still alive
  after it exited), lost file (a file of the user's beside it changed or vanished), silent acceptance
  (exit 0 where a refusal was expected), crash (any other exit code): failures.

Prints a table of counts per kind and class, then every failure with its command and stderr's tail.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.sessions import session_processes

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TIMEOUT = 40.0  # seconds per try; the slowest accepted try (a tiny compare) takes a few
ORPHAN_GRACE = 3.0  # seconds a try's processes get to end after it exits before they count as orphans
SENTINEL = b"the user's own file: must survive every try\n"
PASS = ("error", "accepted")
FAILURES = ("traceback", "hang", "orphan", "lost file", "silent acceptance", "refused", "crash")

TRAIN = ["--data-dir", "@IDX", "--device", "cpu", "--no-progress"]
TRAIN += ["--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "model.latent_dim=2"]
TRAIN += ["--set", "train.threads=1"]
LONG_EPOCHS = 40  # the signal tries' training: signalled once its first epoch is checkpointed


@dataclasses.dataclass
class Try:
    """One hostile invocation: `argv` after `mnistlab -q` (tokens @T: the try's folder, @IDX: the
    tiny dataset, @AE: a copy of a finished tiny ae run in @T/ae, @NPY: a copy of its samples),
    files made first by `setup(T)`, what it expects, and files of the user's (`sentinels`, relative to
    T) that must be left as they were."""

    kind: str
    name: str
    argv: list[str]
    expect: str = "error"  # "error", "ok" or "either"
    setup: Callable[[Path], None] | None = None
    needs: tuple[str, ...] = ()  # "ae", "npy"
    sentinels: tuple[str, ...] = ()
    env: dict[str, str | None] = dataclasses.field(default_factory=dict)
    cwd: str = "@T"
    timeout: float = TIMEOUT
    check: Callable[[Path], str | None] | None = None  # after an accepted try: None, or what is wrong
    special: str | None = None  # "signal:<SIG>" or "two" (run by the driver as fresh commands)


# ------------------------------------------------------------------------------------ the tries


def user_file(*names: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        for name in names:
            (t / name).parent.mkdir(parents=True, exist_ok=True)
            (t / name).write_bytes(SENTINEL)

    return make


def chain(*steps: Callable[[Path], None] | None) -> Callable[[Path], None]:
    def run(t: Path) -> None:
        for step in steps:
            if step is not None:
                step(t)

    return run


def write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return make


def link(rel: str, target: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target.replace("@T", str(t)))

    return make


def fifo(rel: str) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists():
            p.unlink()
        os.mkfifo(p)

    return make


def edit(rel: str, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        p = t / rel
        p.write_bytes(fn(p.read_bytes()))

    return make


def npy_bytes(dtype: str, shape: tuple, data: bytes | None = None, fortran: bool = False) -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    size = 1
    for d in shape:
        size *= d
    item = {"|u1": 1, "|b1": 1, "<f4": 4, "<f8": 8, "<i8": 8, "<c8": 8, "<U1": 4, "|i1": 1}.get(dtype, 1)
    body = data if data is not None else bytes(min(size * item, 1 << 20))
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def exists(*rels: str) -> Callable[[Path], str | None]:
    def check(t: Path) -> str | None:
        missing = [r for r in rels if not (t / r).exists()]
        return f"missing {', '.join(missing)}" if missing else None

    return check


def tries() -> list[Try]:
    out: list[Try] = []
    add = out.append

    # -------------------------------------------------------------------------- odd paths
    names = {
        "unicode": ("数字-ß-é", "ok"),
        "emoji": ("run-\U0001f600", "ok"),
        "spaces": ("my run", "ok"),
        "leading dash": ("-x", "either"),  # argparse may read it as an option
        "newline": ("a\nb", "either"),
        "tab": ("a\tb", "either"),
        "dots": ("...", "ok"),
        "name past NAME_MAX": ("x" * 300, "error"),
        "path past PATH_MAX": ("/".join(["y" * 200] * 25), "error"),
        "surrogate-free latin1": ("caf\u00e9", "ok"),
    }
    heavy = ("unicode", "newline", "name past NAME_MAX", "path past PATH_MAX")  # trained/mapped: seconds each
    for label, (name, expect) in names.items():
        if label in heavy:
            add(Try("paths", f"train --out {label}", ["train", "ae", *TRAIN, "--out", f"@T/{name}"], expect))
        add(
            Try(
                "paths",
                f"sample --out {label}.npy",
                ["sample", "@AE", "--n", "5", "--out", f"@T/{name}.npy", "--device", "cpu"],
                expect,
                needs=("ae",),
            )
        )
        if label not in heavy:
            continue
        add(
            Try(
                "paths",
                f"latent --out {label}",
                ["latent", "@AE", "--maps", "pca", "--n", "20", "--no-score", "--out", f"@T/{name}"],
                expect,
                needs=("ae",),
                sentinels=("ae/notes.txt",),
                setup=user_file("ae/notes.txt"),
            )
        )
    for label, out_arg in {
        "..": "@T/mine/inner/..",
        "relative ..": "../mine",
        "dot": ".",
        "double slash": "@T//mine//",
        "trailing /.": "@T/mine/.",
    }.items():
        for cmd, argv in {
            "train": ["train", "ae", *TRAIN],
            "latent": ["latent", "@AE", "--maps", "pca", "--n", "20", "--no-score"],
            "compare": ["compare", "@AE", "--samples", "10", "--probe-train", "40", "--samplers", "gaussian"],
        }.items():
            add(
                Try(
                    "paths",
                    f"{cmd} --out {label} (a folder of the user's)",
                    [*argv, "--out", out_arg],
                    "either",
                    setup=user_file("mine/notes.txt", "mine/summary.json", "mine/compare.md", "notes.txt"),
                    needs=("ae",) if "@AE" in argv else (),
                    sentinels=("mine/notes.txt", "mine/summary.json", "mine/compare.md", "notes.txt"),
                    cwd="@T/mine" if label == "relative .." else "@T",
                )
            )
    for label, target in {
        "/dev/null": "/dev/null",
        "/proc": "/proc/hostile-x",
        "/dev/full": "/dev/full",
        "a file": "@T/file",
        "under a file": "@T/file/sub",
        "root": "/",
    }.items():
        setup = user_file("file")
        add(
            Try(
                "paths",
                f"train --out {label}",
                ["train", "ae", *TRAIN, "--out", target],
                setup=setup,
                sentinels=("file",),
            )
        )
        add(
            Try(
                "paths",
                f"sample --out {label}",
                ["sample", "@AE", "--n", "5", "--out", target if label != "root" else "/x.npy"],
                "error" if label != "root" else "either",
                setup=setup,
                needs=("ae",),
                sentinels=("file",),
            )
        )
        add(
            Try(
                "paths",
                f"compare --out {label}",
                [
                    "compare",
                    "@AE",
                    "--samples",
                    "10",
                    "--probe-train",
                    "40",
                    "--samplers",
                    "gaussian",
                    "--out",
                    target,
                ],
                setup=setup,
                needs=("ae",),
                sentinels=("file",),
            )
        )
    for cmd, argv in {
        "train": ["train", "ae", *TRAIN, "--out", ""],
        "sample": ["sample", "@AE", "--n", "5", "--out", ""],
        "latent": ["latent", "@AE", "--maps", "pca", "--n", "20", "--no-score", "--out", ""],
        "compare": ["compare", "@AE", "--samples", "10", "--out", ""],
        "pack": ["pretrained", "pack", "@AE", "--out", ""],
        "score --json": ["score", "@NPY", "--json", ""],
        "probe": ["probe", "@AE", "--out", ""],
        "search": ["search", "ae", *TRAIN, "--grid", "train.lr=1e-3,2e-3", "--out", ""],
    }.items():
        add(
            Try(
                "paths",
                f"{cmd} --out '' (the current folder)",
                argv,
                setup=user_file("notes.txt"),
                needs=("ae", "npy"),
                sentinels=("notes.txt",),
            )
        )

    # ------------------------------------------------------------------------------ symlinks
    devices = {"/dev/zero": "/dev/zero", "/dev/urandom": "/dev/urandom", "/etc/passwd": "/etc/passwd"}
    for rel in (
        "config.toml",
        "summary.json",
        "metrics.jsonl",
        "checkpoints/last.safetensors",
        ".mnistlab.json",
    ):
        for dev_label, dev in devices.items():
            for cmd, argv, expect in (
                ("eval", ["eval", "@AE", "--device", "cpu"], "error"),
                ("sample", ["sample", "@AE", "--n", "5", "--out", "@T/s.npy"], "error"),
            ):
                # sample reads neither the history nor the manifest (it writes outside the run)
                fine = rel in ("metrics.jsonl", ".mnistlab.json") and cmd == "sample"
                add(
                    Try(
                        "symlinks",
                        f"{cmd}: {rel} -> {dev_label}",
                        argv,
                        "either" if fine else expect,
                        setup=chain(link(f"ae/{rel}", dev), user_file("ae/notes.txt")),
                        needs=("ae",),
                        sentinels=("ae/notes.txt",),
                        timeout=20,
                    )
                )
    add(
        Try(
            "symlinks",
            "run folder is a link to a run",
            ["eval", "@T/alias", "--device", "cpu"],
            "ok",
            setup=link("alias", "@T/ae"),
            needs=("ae",),
        )
    )
    add(Try("symlinks", "run folder is a link loop", ["eval", "@T/loop"], setup=link("loop", "@T/loop")))
    add(
        Try(
            "symlinks", "run folder is a dangling link", ["eval", "@T/gone"], setup=link("gone", "@T/nowhere")
        )
    )
    add(
        Try(
            "symlinks",
            "train --out a link to the user's folder",
            ["train", "ae", *TRAIN, "--out", "@T/alias"],
            setup=chain(user_file("mine/notes.txt"), link("alias", "@T/mine")),
            sentinels=("mine/notes.txt",),
        )
    )
    add(
        Try(
            "symlinks",
            "sample --out a link to the user's file",
            ["sample", "@AE", "--n", "5", "--out", "@T/link.npy"],
            setup=chain(user_file("mine.npy"), link("link.npy", "@T/mine.npy")),
            needs=("ae",),
            sentinels=("mine.npy",),
        )
    )
    add(
        Try(
            "symlinks",
            "figures/ is a link out of the run folder",
            ["eval", "@AE", "--device", "cpu"],
            "either",
            setup=chain(
                user_file("elsewhere/loss_curves.png", "elsewhere/reconstructions.png"),
                lambda t: shutil.rmtree(t / "ae" / "figures"),
                link("ae/figures", "@T/elsewhere"),
            ),
            needs=("ae",),
            sentinels=("elsewhere/loss_curves.png", "elsewhere/reconstructions.png"),
        )
    )
    add(
        Try(
            "symlinks",
            "checkpoints/ is a link out of the run folder, train --force",
            ["train", "ae", *TRAIN, "--out", "@AE", "--force"],
            "either",
            setup=chain(
                user_file("elsewhere/mine.bin"),
                lambda t: shutil.rmtree(t / "ae" / "checkpoints"),
                link("ae/checkpoints", "@T/elsewhere"),
            ),
            needs=("ae",),
            sentinels=("elsewhere/mine.bin",),
        )
    )
    for f in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        for dev_label, dev in {
            "/dev/zero": "/dev/zero",
            "/dev/urandom": "/dev/urandom",
            "a loop": "@T/idx/" + f,
        }.items():
            add(
                Try(
                    "symlinks",
                    f"--data-dir with {f} -> {dev_label}",
                    ["data", "info", "--data-dir", "@T/idx"],
                    setup=chain(lambda t: shutil.copytree(FX["idx"], t / "idx"), link(f"idx/{f}", dev)),
                    timeout=20,
                )
            )

    # -------------------------------------------------------------------------------- records
    bad_toml = {
        "zero-byte": b"",
        "duplicate key": b'task = "ae"\ntask = "ae"\n',
        "duplicate table": b'task = "ae"\n[train]\nepochs = 1\n[train]\nepochs = 2\n',
        "BOM": b'\xef\xbb\xbftask = "ae"\n',
        "NUL bytes": b'task = "ae"\x00\x00\n',
        "latin-1": b'task = "\xe9"\n',
        "task a number": b"task = 5\n",
        "task a table": b"[task]\nname = 'ae'\n",
        "unknown task": b'task = "nosuch"\n',
        "task edited to vae": None,
        "task edited to gan": None,
        "epochs a string": None,
        "latent_dim a float": None,
        "truncated": None,
        "a table where a number goes": None,
        "an array of tables": b'task = "ae"\n[[train]]\nepochs = 1\n',
        "inline table 40 deep": b'task = "ae"\nx = ' + b"{a=" * 40 + b"1" + b"}" * 40 + b"\n",
        "a 200-digit number": b'task = "ae"\n[train]\nseed = ' + b"9" * 200 + b"\n",
        "2 MB of comments": b'task = "ae"\n' + b"#" * (2 << 20) + b"\n",
    }

    def cfg_edit(label: str) -> Callable[[Path], None]:
        data = bad_toml[label]
        if data is not None:
            return write("ae/config.toml", data)
        fns = {
            "task edited to vae": lambda b: b.replace(b'task = "ae"', b'task = "vae"'),
            "task edited to gan": lambda b: b.replace(b'task = "ae"', b'task = "gan"'),
            "epochs a string": lambda b: b.replace(b"epochs = 1\n", b'epochs = "1"\n'),
            "latent_dim a float": lambda b: b.replace(b"latent_dim = 2\n", b"latent_dim = 2.0\n"),
            "truncated": lambda b: b[: len(b) // 2],
            "a table where a number goes": lambda b: b.replace(b"epochs = 1\n", b"epochs = {a = 1}\n"),
        }
        return edit("ae/config.toml", fns[label])

    for label in bad_toml:
        for cmd, argv in (
            ("eval", ["eval", "@AE", "--device", "cpu"]),
            ("sample", ["sample", "@AE", "--n", "5", "--out", "@T/s.npy"]),
            ("resume", ["train", "ae", *TRAIN, "--out", "@AE", "--resume"]),
        ):
            expect = "error"
            if label == "truncated" and cmd != "resume":
                expect = "either"  # half a config can still be a whole one (defaults fill the rest)
            add(
                Try(
                    "records",
                    f"{cmd}: config.toml {label}",
                    argv,
                    expect,
                    setup=chain(cfg_edit(label), user_file("ae/notes.txt")),
                    needs=("ae",),
                    sentinels=("ae/notes.txt",),
                )
            )
    bad_json = {
        "zero-byte": b"",
        "truncated": b'{"task": "ae", "status": "fini',
        "an array": b"[1, 2]",
        "null": b"null",
        "NaN literal": b'{"task": "ae", "status": "finished", "test": {"mse": NaN}}',
        "status a number": b'{"task": "ae", "status": 1}',
        "test a list": b'{"task": "ae", "status": "finished", "test": [1]}',
        "epochs a string": b'{"task": "ae", "status": "finished", "epochs": "3"}',
        "a 1e400 number": b'{"task": "ae", "status": "finished", "train_seconds": 1e400}',
        "duplicate keys": b'{"task": "ae", "task": "gan", "status": "finished"}',
        "task gan": b'{"task": "gan", "status": "finished"}',
        "deep nesting": b'{"task": "ae", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        "invalid UTF-8": b'{"task": "\xff"}',
    }
    for label, data in bad_json.items():
        for cmd, argv in (
            ("eval", ["eval", "@AE", "--device", "cpu"]),
            ("sample", ["sample", "@AE", "--n", "5", "--out", "@T/s.npy"]),
            (
                "compare",
                [
                    "compare",
                    "@AE",
                    "--samples",
                    "10",
                    "--probe-train",
                    "40",
                    "--samplers",
                    "gaussian",
                    "--out",
                    "@T/c",
                ],
            ),
            ("pack", ["pretrained", "pack", "@AE", "--out", "@T/bundle", "--no-compare"]),
        ):
            # eval rewrites a run's summary from its checkpoint: a bad old one may be replaced
            expect = "either" if cmd == "eval" else "error"
            if label == "duplicate keys" and cmd != "pack":
                expect = "either"  # JSON keeps the last: a record that reads as the gan run it names
            add(
                Try(
                    "records",
                    f"{cmd}: summary.json {label}",
                    argv,
                    expect,
                    setup=chain(write("ae/summary.json", data), user_file("ae/notes.txt")),
                    needs=("ae",),
                    sentinels=("ae/notes.txt",),
                )
            )
    bad_metrics = {
        "zero-byte": (b"", "either"),
        "truncated last line": (None, "either"),
        "a string line": (b'"x"\n', "error"),
        "epoch a float": (b'{"epoch": 1.5, "step": 1, "seconds": 1}\n', "error"),
        "NaN loss": (b'{"epoch": 1, "step": 1, "seconds": 1, "train_loss": NaN}\n', "either"),
        "a blank line": (b'\n\n{"epoch": 1, "step": 1, "seconds": 1}\n', "either"),
    }
    for label, (data, expect) in bad_metrics.items():
        setup = (
            edit("ae/metrics.jsonl", lambda b: b[:-7]) if data is None else write("ae/metrics.jsonl", data)
        )
        add(
            Try(
                "records",
                f"compare: metrics.jsonl {label}",
                [
                    "compare",
                    "@AE",
                    "--samples",
                    "10",
                    "--probe-train",
                    "40",
                    "--samplers",
                    "gaussian",
                    "--out",
                    "@T/c",
                ],
                "either",  # compare reads a history only when the summary lacks the timing
                setup=setup,
                needs=("ae",),
            )
        )
        add(
            Try(
                "records",
                f"resume: metrics.jsonl {label}",
                ["train", "ae", *TRAIN, "--out", "@AE", "--resume", "--set", "train.epochs=2"],
                expect,
                setup=chain(setup, user_file("ae/notes.txt")),
                needs=("ae",),
                sentinels=("ae/notes.txt",),
            )
        )
    for label, data in {
        "zero-byte": b"",
        "an array": b"[]",
        "kind a number": b'{"kind": 1, "files": []}',
        "files listing the user's file": b'{"kind": "train", "files": ["notes.txt"]}',
        "kind probe": b'{"kind": "probe", "files": []}',
        "files a string": b'{"kind": "train", "files": "config.toml"}',
    }.items():
        # A manifest edited to list the user's file as mnistlab's: --force may then delete it (the
        # manifest is the record), so that try keeps no sentinel.
        listed = "user's" in label
        add(
            Try(
                "records",
                f"train --force: .mnistlab.json {label}",
                ["train", "ae", *TRAIN, "--out", "@AE", "--force"],
                "either" if listed else "error",
                setup=chain(write("ae/.mnistlab.json", data), user_file("ae/notes.txt")),
                needs=("ae",),
                sentinels=() if listed else ("ae/notes.txt",),
            )
        )
    for label, data in {"garbage PID": b"abc\n", "PID 1": b"1\n", "zero-byte": b"", "a folder": None}.items():
        setup = (
            (lambda t: (t / "ae" / ".mnistlab.lock.pid").mkdir())
            if data is None
            else write("ae/.mnistlab.lock.pid", data)
        )
        add(
            Try(
                "records",
                f"eval with a stale lock file: {label}",
                ["eval", "@AE", "--device", "cpu"],
                "either",
                setup=chain(setup, user_file("ae/notes.txt")),
                needs=("ae",),
                sentinels=("ae/notes.txt",),
            )
        )
    add(
        Try(
            "records",
            "train --out a user's folder holding a config.toml of their own",
            ["train", "ae", *TRAIN, "--out", "@T/proj", "--force"],
            setup=chain(write("proj/config.toml", b"[my]\nsetting = 1\n"), user_file("proj/notes.txt")),
            sentinels=("proj/notes.txt",),
        )
    )
    add(
        Try(
            "records",
            "run --out a user's folder holding a run.json of their own",
            ["run", "--preset", str(ROOT / "tests/presets/tiny.toml"), "--out", "@T/proj", "--no-progress"],
            setup=chain(write("proj/run.json", b'{"my": "run"}'), user_file("proj/notes.txt")),
            sentinels=("proj/notes.txt",),
        )
    )
    add(
        Try(
            "records",
            "report of a user's folder holding a run.json of their own",
            ["report", "@T/proj"],
            setup=chain(write("proj/run.json", b'{"my": "run"}'), user_file("proj/notes.txt")),
            sentinels=("proj/notes.txt",),
        )
    )

    # -------------------------------------------------------------------------------- weights
    ckpt = "ae/checkpoints/last.safetensors"
    header = json.dumps({"model.x": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4]}}).encode()
    bad_ckpt = {
        "zero-byte": b"",
        "8 bytes": b"\x00" * 8,
        "header length past the file": struct.pack("<Q", 1 << 40) + b"{}",
        "header not JSON": struct.pack("<Q", 8) + b"notjson!",
        "a tensor claiming a terabyte": struct.pack("<Q", len(header)) + header + b"\0" * 4,
        "a pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",
        "a zip (torch.save)": b"PK\x03\x04" + b"\0" * 100,
        "truncated": None,
        "one byte flipped": None,
    }
    for label, data in bad_ckpt.items():
        if data is None:
            fn = (
                (lambda b: b[: len(b) // 2])
                if label == "truncated"
                else (lambda b: b[:-1] + bytes([b[-1] ^ 1]))
            )
            setup = edit(ckpt, fn)
        else:
            setup = write(ckpt, data)
        for cmd, argv in (
            ("eval", ["eval", "@AE", "--device", "cpu"]),
            ("sample", ["sample", "@AE", "--n", "5", "--out", "@T/s.npy"]),
            ("latent", ["latent", "@AE", "--maps", "pca", "--n", "20", "--no-score"]),
            ("probe", ["probe", "@AE", "--device", "cpu", "--no-progress"]),
            ("compare", ["compare", "@AE", "--samples", "10", "--out", "@T/c"]),
            ("pack", ["pretrained", "pack", "@AE", "--out", "@T/bundle", "--no-compare"]),
            ("resume", ["train", "ae", *TRAIN, "--out", "@AE", "--resume", "--set", "train.epochs=2"]),
        ):
            add(
                Try(
                    "weights",
                    f"{cmd}: checkpoint {label}",
                    argv,
                    setup=chain(setup, user_file("ae/notes.txt")),
                    needs=("ae",),
                    sentinels=("ae/notes.txt",),
                )
            )
    for label, setup in {
        "checkpoints/ is a file": chain(
            lambda t: shutil.rmtree(t / "ae" / "checkpoints"), write("ae/checkpoints", b"x")
        ),
        "no checkpoint": lambda t: (t / ckpt).unlink(),
        "checkpoint a folder": chain(lambda t: (t / ckpt).unlink(), lambda t: (t / ckpt).mkdir()),
        "checkpoint a FIFO": fifo(ckpt),
        "the state JSON gone": lambda t: [p.unlink() for p in (t / "ae" / "checkpoints").glob("*.json")],
    }.items():
        for cmd, argv in (
            ("eval", ["eval", "@AE", "--device", "cpu"]),
            ("sample", ["sample", "@AE", "--n", "5", "--out", "@T/s.npy"]),
            ("resume", ["train", "ae", *TRAIN, "--out", "@AE", "--resume", "--set", "train.epochs=2"]),
        ):
            expect = "either" if label == "the state JSON gone" and cmd != "resume" else "error"
            add(Try("weights", f"{cmd}: {label}", argv, expect, setup=setup, needs=("ae",), timeout=20))

    # -------------------------------------------------------------------------------- score
    n = 20
    rng_bytes = hashlib.sha256(b"x").digest() * (n * 784 // 32 + 1)
    samples = {
        "uint8 (N, 28, 28)": (npy_bytes("|u1", (n, 28, 28), rng_bytes[: n * 784]), "ok"),
        "zero-byte": (b"", "error"),
        "truncated header": (npy_bytes("|u1", (n, 28, 28))[:20], "error"),
        "truncated data": (npy_bytes("|u1", (n, 28, 28), rng_bytes[:100]), "error"),
        "float64": (npy_bytes("<f8", (n, 28, 28), bytes(n * 784 * 8)), "either"),
        "float32 NaN": (npy_bytes("<f4", (n, 28, 28), b"\x00\x00\xc0\x7f" * (n * 784)), "error"),
        "float32 inf": (npy_bytes("<f4", (n, 28, 28), b"\x00\x00\x80\x7f" * (n * 784)), "error"),
        "float32 negative": (npy_bytes("<f4", (n, 28, 28), b"\x00\x00\x80\xbf" * (n * 784)), "error"),
        "float32 above 255": (npy_bytes("<f4", (n, 28, 28), b"\x00\x00\x80\x44" * (n * 784)), "error"),
        "int64": (npy_bytes("<i8", (n, 28, 28), bytes(n * 784 * 8)), "either"),
        "int8": (npy_bytes("|i1", (n, 28, 28), bytes(n * 784)), "either"),
        "bool": (npy_bytes("|b1", (n, 28, 28), bytes(n * 784)), "either"),
        "complex": (npy_bytes("<c8", (n, 28, 28), bytes(n * 784 * 8)), "error"),
        "unicode": (npy_bytes("<U1", (n, 28, 28), bytes(n * 784 * 4)), "error"),
        "object (pickle)": (npy_bytes("|O", (n,), b"\x80\x04N."), "error"),
        "(N, 784)": (npy_bytes("|u1", (n, 784), rng_bytes[: n * 784]), "either"),
        "(N, 1, 28, 28)": (npy_bytes("|u1", (n, 1, 28, 28), rng_bytes[: n * 784]), "either"),
        "(N, 28, 29)": (npy_bytes("|u1", (n, 28, 29), bytes(n * 28 * 29)), "error"),
        "(N, 3, 28, 28)": (npy_bytes("|u1", (n, 3, 28, 28), bytes(n * 3 * 784)), "error"),
        "(0, 28, 28)": (npy_bytes("|u1", (0, 28, 28), b""), "error"),
        "a scalar": (npy_bytes("|u1", (), b"\x01"), "error"),
        "(28, 28)": (npy_bytes("|u1", (28, 28), bytes(784)), "either"),
        "a terabyte header": (npy_bytes("|u1", (1 << 40, 28, 28), b""), "error"),
        "negative shape": (npy_bytes("|u1", (-1, 28, 28), b""), "error"),
        "fortran order": (npy_bytes("|u1", (n, 28, 28), rng_bytes[: n * 784], fortran=True), "either"),
        "not numpy": (b"hello world", "error"),
        "npz": (b"PK\x03\x04" + b"\0" * 64, "error"),
        "header of 70,000 bytes": (
            b"\x93NUMPY\x02\x00" + struct.pack("<I", 70000) + b"{" + b" " * 69998 + b"\n",
            "error",
        ),
    }
    for label, (data, expect) in samples.items():
        add(
            Try(
                "score",
                f"score {label}",
                ["score", "@T/x.npy", "--data-dir", "@IDX", "--device", "cpu", "--no-progress"],
                expect,
                setup=write("x.npy", data),
                timeout=60,
            )
        )
    for label, setup in {
        "a FIFO": fifo("x.npy"),
        "/dev/zero": link("x.npy", "/dev/zero"),
        "a folder": lambda t: (t / "x.npy").mkdir(),
        "missing": None,
    }.items():
        add(
            Try(
                "score",
                f"score {label}",
                ["score", "@T/x.npy", "--data-dir", "@IDX"],
                setup=setup,
                timeout=20,
            )
        )
    provenance = {
        "zero-byte": b"",
        "an array": b"[]",
        "n a string": b'{"run": "x", "task": "ae", "sampler": "gmm", "n": "5", "seed": 0, "data": {}}',
        "data a string": b'{"run": "x", "task": "ae", "sampler": "gmm", "n": 5, "seed": 0, "data": "mnist"}',
        "data_dir nowhere": b'{"run": "x", "task": "ae", "sampler": "gmm", "n": 5, "seed": 0, "data": {"dataset": "mnist", "data_dir": "/nowhere"}}',
        "a FIFO": None,
    }
    for label, data in provenance.items():
        setup = fifo("npy/samples.json") if data is None else write("npy/samples.json", data)
        add(
            Try(
                "score",
                f"score: provenance {label}",
                ["score", "@NPY", "--device", "cpu", "--no-progress"],
                setup=setup,
                needs=("npy",),
                timeout=20,
            )
        )
    for k in ("0", "-1", "1000000", "nan", "2.5", "x"):
        add(Try("score", f"score --k {k}", ["score", "@NPY", "--data-dir", "@IDX", "--k", k], needs=("npy",)))
    add(
        Try(
            "score",
            "score --json over the user's file",
            ["score", "@NPY", "--data-dir", "@IDX", "--json", "@T/mine.json", "--no-progress"],
            setup=user_file("mine.json"),
            needs=("npy",),
            sentinels=("mine.json",),
        )
    )
    add(
        Try(
            "score",
            "score --json a folder",
            ["score", "@NPY", "--data-dir", "@IDX", "--json", "@T"],
            needs=("npy",),
        )
    )
    add(
        Try(
            "score",
            "score --json new",
            ["score", "@NPY", "--data-dir", "@IDX", "--json", "@T/new.json", "--no-progress"],
            "ok",
            needs=("npy",),
            check=exists("new.json"),
        )
    )

    # ---------------------------------------------------------------------------------- --set
    # (the command's --data-dir and --device win over data.data_dir, data.dataset and train.device;
    # threads 0 and train_limit 0 mean "every core" and "no limit")
    odd_sets = {
        "train.epochs=[1]": "error",
        "train.epochs={a=1}": "error",
        "train.epochs=true": "error",
        'train.epochs="1"': "error",
        "train.epochs=1.0": "error",
        "train.epochs=0x1": "either",
        "train.epochs=1_0": "either",
        "train.epochs=+1": "either",
        "train.epochs=1e0": "error",
        "train.epochs=": "error",
        "train.epochs": "error",
        "train.epochs==1": "error",
        "train.epochs=1=2": "error",
        "=1": "error",
        ".=1": "error",
        "train..epochs=1": "error",
        "train.epochs.x=1": "error",
        "train.epochs.x.y.z=1": "error",
        "a.b.c.d.e.f=1": "error",
        "train=1": "error",
        "train={epochs=1}": "either",
        "Train.Epochs=1": "error",
        "train.épochs=1": "error",
        "train.epochs=1 # comment": "either",
        "train.epochs=1\nx=2": "error",
        "train.lr=nan": "error",
        "train.lr=inf": "error",
        "train.lr=-inf": "error",
        "train.lr=1e-400": "error",
        "train.lr=1e400": "error",
        "train.lr=-0.0": "error",
        "train.lr='1e-3'": "error",
        "train.lr=1e-3e": "error",
        "train.seed=18446744073709551616": "error",
        "train.seed=-1": "error",
        "train.batch_size=0": "error",
        "train.batch_size=99999999999": "error",
        "train.threads=0": "either",
        "train.threads=4096": "error",
        "model.latent_dim=-1": "error",
        "model.latent_dim=1e9": "error",
        "model.dropout=nan": "error",
        "data.train_limit=-1": "error",
        "data.train_limit=0": "either",
        "data.val_fraction=nan": "error",
        "data.data_dir=/dev/null": "either",
        "data.data_dir=": "either",
        "data.dataset=../../etc": "either",
        "task=gan": "error",
        "model=[]": "error",
        "train.schedule=['cosine']": "error",
        "train.device=cuda:99": "either",
        "train.epochs=9" * 30: "error",
        "x" * 5000 + "=1": "error",
    }
    for item, expect in odd_sets.items():
        add(
            Try(
                "set",
                f"train --set {item[:40]!r}",
                ["train", "ae", *TRAIN, "--out", "@T/r", "--set", item],
                expect,
                timeout=60,
            )
        )
    for item in (
        "linear.lr=nan",
        "linear.epochs=-1",
        "linear={}",
        "nosuch.x=1",
        "options.label_subsets=0",
        "linear.batch_size=[1]",
    ):
        add(
            Try("set", f"probe --set {item}", ["probe", "@AE", "--set", item, "--no-progress"], needs=("ae",))
        )
    for item in (
        "run.tasks=[]",
        "run.tasks=nosuch",
        "run.workers=-1",
        "run.set=[1]",
        "run.labels_per_class=['x']",
        "ae.train.epochs=x",
        "nosuch.train.epochs=1",
        "run.latent_samples=-5",
        "run.tsne_iter=nan",
    ):
        add(
            Try(
                "set",
                f"run --set {item}",
                [
                    "run",
                    "--preset",
                    str(ROOT / "tests/presets/tiny.toml"),
                    "--set",
                    item,
                    "--out",
                    "@T/study",
                    "--no-progress",
                ],
                timeout=60,
            )
        )
    for grid in (
        "train.lr=",
        "train.lr=nan,1",
        "train.epochs=1.5",
        "nosuch=1,2",
        "train.lr",
        "=1,2",
        "train.lr=1,1",
    ):
        add(
            Try(
                "set",
                f"search --grid {grid}",
                ["search", "ae", *TRAIN, "--grid", grid, "--out", "@T/s", "--workers", "1"],
                "either" if grid == "train.lr=1,1" else "error",
            )
        )

    # -------------------------------------------------------------------------------- numbers
    for flag, values in {
        "--n": ["-1", "0", "nan", "1e3", "99999999999", "2.5"],
        "--seed": ["-1", "18446744073709551616", "nan"],
        "--components": ["0", "-1", "100000"],
        "--digit": ["10", "-1", "x"],
        "--steps": ["0", "-1", "1000000000"],
        "--guidance": ["nan", "-1"],
    }.items():
        for v in values:
            add(
                Try(
                    "numbers",
                    f"sample {flag} {v}",
                    ["sample", "@AE", "--n", "5", "--out", "@T/s.npy", flag, v],
                    needs=("ae",),
                )
            )
    for flag, values in {
        "--samples": ["-1", "0", "9", "100000000"],
        "--probe-train": ["-1", "0", "1000000000"],
        "--seed": ["-5"],
    }.items():
        for v in values:
            add(
                Try(
                    "numbers",
                    f"compare {flag} {v}",
                    ["compare", "@AE", flag, v, "--out", "@T/c"],
                    needs=("ae",),
                )
            )
    for flag, values in {"--n": ["-1", "1000000000"], "--components": ["0"], "--seed": ["-1"]}.items():
        for v in values:
            add(
                Try(
                    "numbers",
                    f"latent {flag} {v}",
                    ["latent", "@AE", "--maps", "pca", "--no-score", flag, v],
                    needs=("ae",),
                )
            )
    for flag, values in {
        "--workers": ["-1", "100000", "x"],
        "--trials": ["0", "-1"],
        "--heartbeat": ["-1", "nan"],
    }.items():
        for v in values:
            extra = ["--optuna"] if flag in ("--trials", "--heartbeat") else ["--grid", "train.lr=1e-3,2e-3"]
            add(
                Try(
                    "numbers",
                    f"search {flag} {v}",
                    ["search", "ae", *TRAIN, *extra, flag, v, "--out", "@T/s"],
                )
            )
    for flag, values in {"--port": ["-1", "70000", "x"], "--threads": ["0", "-1", "100000"]}.items():
        for v in values:
            add(Try("numbers", f"serve {flag} {v}", ["serve", "@AE", flag, v], needs=("ae",), timeout=20))
    for v in ("-1", "100000"):  # (0: one stage per core, a whole study: not a refusal)
        add(
            Try(
                "numbers",
                f"run --workers {v}",
                [
                    "run",
                    "--preset",
                    str(ROOT / "tests/presets/tiny.toml"),
                    "--workers",
                    v,
                    "--out",
                    "@T/study",
                ],
                timeout=60,
            )
        )
    for v in ("0,1", "-1", "nan", "1e400", ""):
        # ('' reads as "not given": the run's own levels)
        add(
            Try(
                "numbers",
                f"eval --sigmas {v!r}",
                ["eval", "@AE", "--sigmas", v],
                "either" if not v else "error",
                needs=("ae",),
            )
        )
    for v in ("0", "-1", "x,y", "100000000"):  # (5,5 is a valid, slow probe)
        add(
            Try(
                "numbers",
                f"probe --labels-per-class {v}",
                ["probe", "@AE", "--labels-per-class", v, "--out", "@T/p"],
                needs=("ae",),
            )
        )

    # ---------------------------------------------------------------------------- environment
    env_cases = {
        "MNISTLAB_HOME a file": ({"MNISTLAB_HOME": "@T/file"}, user_file("file"), ("file",)),
        "MNISTLAB_HOME /dev/null": ({"MNISTLAB_HOME": "/dev/null"}, None, ()),
        "MNISTLAB_HOME under a file": ({"MNISTLAB_HOME": "@T/file/sub"}, user_file("file"), ("file",)),
        "MNISTLAB_HOME in /proc": ({"MNISTLAB_HOME": "/proc/self/x"}, None, ()),
        "MNISTLAB_HOME a FIFO": ({"MNISTLAB_HOME": "@T/fifo"}, fifo("fifo"), ()),
        "MNISTLAB_HOME past PATH_MAX": ({"MNISTLAB_HOME": "/" + "/".join(["z" * 250] * 20)}, None, ()),
        "MNISTLAB_HOME inside the package": (
            {"MNISTLAB_HOME": str(ROOT / "src/mnistlab/_pretrained")},
            None,
            (),
        ),
        "MNISTLAB_HOME a link to /dev/zero": ({"MNISTLAB_HOME": "@T/z"}, link("z", "/dev/zero"), ()),
    }
    for label, (env, setup, sentinels) in env_cases.items():
        add(
            Try(
                "env",
                f"pretrained path ae: {label}",
                ["pretrained", "path", "ae"],
                setup=setup,
                sentinels=sentinels,
                env=env,
            )
        )
    for label, env, expect in (
        ("MNISTLAB_HOME relative", {"MNISTLAB_HOME": "rel/home"}, "ok"),
        ("MNISTLAB_HOME empty", {"MNISTLAB_HOME": "", "HOME": "@T/home"}, "ok"),
        ("HOME unset, MNISTLAB_HOME unset", {"MNISTLAB_HOME": None, "HOME": None}, "either"),
        ("MNISTLAB_HOME unicode", {"MNISTLAB_HOME": "@T/家"}, "ok"),
    ):
        add(Try("env", f"pretrained path ae: {label}", ["pretrained", "path", "ae"], expect, env=env))
    for label, env in {
        "MNISTLAB_CACHE a file": {"MNISTLAB_CACHE": "@T/file"},
        "MNISTLAB_CACHE /dev/null": {"MNISTLAB_CACHE": "/dev/null"},
    }.items():
        add(
            Try(
                "env",
                f"score (reference for a new dataset): {label}",
                ["score", "@NPY", "--data-dir", "@T/idx2", "--no-progress"],
                setup=chain(user_file("file"), lambda t: shutil.copytree(FX["idx"], t / "idx2")),
                sentinels=("file",),
                env=env,
                needs=("npy",),
            )
        )
    for label, env, expect in (
        ("TMPDIR gone", {"TMPDIR": "@T/nowhere"}, "either"),
        ("TMPDIR a file", {"TMPDIR": "@T/file"}, "either"),
        ("OMP_NUM_THREADS=abc", {"OMP_NUM_THREADS": "abc"}, "either"),
        ("MNISTLAB_MALLOC_TUNING=x", {"MNISTLAB_MALLOC_TUNING": "x"}, "either"),
        ("LC_ALL=C", {"LC_ALL": "C", "LANG": "C"}, "either"),
    ):
        add(
            Try(
                "env",
                f"pack: {label}",
                ["pretrained", "pack", "@AE", "--out", "@T/bundle", "--no-compare"],
                expect,
                setup=user_file("file"),
                sentinels=("file",),
                env=env,
                needs=("ae",),
            )
        )
        add(Try("env", f"train ae: {label}", ["train", "ae", *TRAIN, "--out", "@T/r"], expect, env=env))

    # ----------------------------------------------------------------------------- pretrained
    for name in (
        "",
        "..",
        "../ae",
        "ae/..",
        "/etc",
        "AE",
        "ae ",
        "ä",
        "x" * 300,
        "bundle.json",
        "ae/figures",
        ".",
        "-ae",
        "ae\n",
    ):
        add(
            Try(
                "pretrained",
                f"pretrained path {name[:20]!r}",
                ["pretrained", "path", name],
                env={"MNISTLAB_HOME": "@T/home"},
            )
        )
    for label, out_arg, expect in (
        ("-", "-", "either"),
        ("..", "..", "either"),
        ("unicode", "@T/束", "ok"),
        ("a file", "@T/file", "error"),
        ("/dev/null", "/dev/null", "error"),
        ("inside a run", "@AE/bundle", "either"),
        ("the run itself", "@AE", "either"),
        ("name past NAME_MAX", "@T/" + "b" * 300, "error"),
        ("a link to the user's folder", "@T/alias", "either"),
        ("the package's _weights folder", str(ROOT / "src/mnistlab/_weights"), "error"),
        ("the package's tasks", str(ROOT / "src/mnistlab/tasks"), "error"),
    ):
        add(
            Try(
                "pretrained",
                f"pack --out {label}",
                ["pretrained", "pack", "@AE", "--out", out_arg, "--no-compare"],
                expect,
                setup=chain(user_file("file", "mine/notes.txt", "ae/notes.txt"), link("alias", "@T/mine")),
                sentinels=("file", "mine/notes.txt", "ae/notes.txt"),
                needs=("ae",),
                cwd="@T/mine",
            )
        )
    add(
        Try(
            "pretrained",
            "pack the same run twice",
            ["pretrained", "pack", "@AE", "@AE", "--out", "@T/b"],
            needs=("ae",),
        )
    )
    add(
        Try(
            "pretrained",
            "pack an unfinished run",
            ["pretrained", "pack", "@AE", "--out", "@T/b"],
            setup=edit("ae/summary.json", lambda b: b.replace(b'"finished"', b'"running"')),
            needs=("ae",),
        )
    )
    add(
        Try(
            "pretrained",
            "pack a folder of the user's",
            ["pretrained", "pack", "@T/mine", "--out", "@T/b"],
            setup=user_file("mine/notes.txt"),
            sentinels=("mine/notes.txt",),
        )
    )
    add(
        Try(
            "pretrained",
            "pack --float32 into a new folder",
            ["pretrained", "pack", "@AE", "--out", "@T/b", "--no-compare", "--float32"],
            "ok",
            needs=("ae",),
            check=exists("b/ae/checkpoints/last.safetensors"),
        )
    )

    # ----------------------------------------------------------------- folders that are files
    for cmd, argv in {
        "eval": ["eval", "@T/file"],
        "sample": ["sample", "@T/file", "--n", "5", "--out", "@T/s.npy"],
        "latent": ["latent", "@T/file"],
        "probe": ["probe", "@T/file"],
        "report": ["report", "@T/file"],
        "compare": ["compare", "@T/file"],
        "serve": ["serve", "@T/file", "--port", "0"],
        "pack": ["pretrained", "pack", "@T/file", "--out", "@T/b"],
        "train --resume": ["train", "ae", *TRAIN, "--out", "@T/file", "--resume"],
        "run": ["run", "--out", "@T/file"],
        "data info": ["data", "info", "--data-dir", "@T/file"],
        "search": ["search", "ae", *TRAIN, "--grid", "train.lr=1e-3,2e-3", "--out", "@T/file"],
    }.items():
        add(
            Try(
                "folders",
                f"{cmd}: the run folder is a file",
                argv,
                setup=user_file("file"),
                sentinels=("file",),
            )
        )
        add(
            Try(
                "folders",
                f"{cmd}: the run folder is a FIFO",
                [a.replace("@T/file", "@T/fifo") for a in argv],
                setup=fifo("fifo"),
                timeout=20,
            )
        )
    idx_cases = {
        "three of the four files": lambda t: (t / "idx" / "t10k-labels-idx1-ubyte.gz").unlink(),
        "an empty images file": write("idx/train-images-idx3-ubyte.gz", b""),
        "a gzip of nothing": write("idx/train-images-idx3-ubyte.gz", gzip.compress(b"")),
        "raw and gzip both": lambda t: (t / "idx" / "train-labels-idx1-ubyte").write_bytes(
            gzip.decompress((t / "idx" / "train-labels-idx1-ubyte.gz").read_bytes())
        ),
        "labels past 9": edit(
            "idx/train-labels-idx1-ubyte.gz",
            lambda b: gzip.compress(gzip.decompress(b)[:8] + bytes([200]) * (len(gzip.decompress(b)) - 8)),
        ),
        "no test images": chain(
            write(
                "idx/t10k-images-idx3-ubyte.gz",
                gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 0, 28, 28)),
            ),
            write("idx/t10k-labels-idx1-ubyte.gz", gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 0))),
        ),
        "images of 14x14": write(
            "idx/train-images-idx3-ubyte.gz",
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 200, 14, 14) + bytes(200 * 196)),
        ),
        "a FIFO for the images": fifo("idx/train-images-idx3-ubyte.gz"),
    }
    for label, setup in idx_cases.items():
        expect = "either" if label == "raw and gzip both" else "error"
        prep = chain(lambda t: shutil.copytree(FX["idx"], t / "idx"), setup)
        add(
            Try(
                "folders",
                f"data info: {label}",
                ["data", "info", "--data-dir", "@T/idx"],
                expect,
                setup=prep,
                timeout=20,
            )
        )
        add(
            Try(
                "folders",
                f"train: {label}",
                ["train", "ae", *[a if a != "@IDX" else "@T/idx" for a in TRAIN], "--out", "@T/r"],
                expect,
                setup=prep,
                timeout=20,
            )
        )

    # ------------------------------------------------------------------------------- processes
    # Long enough to be signalled after its first checkpoint, short enough for the resume to finish
    # within the try's timeout on a busy 2-core host.
    long_train = [
        "train",
        "ae",
        *TRAIN,
        "--set",
        f"train.epochs={LONG_EPOCHS}",
        "--set",
        "train.batch_size=16",
    ]
    for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"):
        add(
            Try(
                "processes",
                f"{sig} mid-train, then --resume",
                [*long_train, "--out", "@T/r"],
                "ok",
                special=f"signal:{sig}",
                setup=user_file("notes.txt"),
                sentinels=("notes.txt",),
                timeout=120,
            )
        )
    add(
        Try(
            "processes",
            "two `train` into one folder at once",
            [*long_train, "--set", "train.epochs=3", "--out", "@T/r"],
            "ok",
            special="two",
            timeout=120,
        )
    )
    add(
        Try(
            "processes",
            "two `sample` into one file at once",
            ["sample", "@AE", "--n", "2000", "--out", "@T/same.npy", "--device", "cpu"],
            "ok",
            special="two",
            needs=("ae",),
            timeout=120,
        )
    )
    add(
        Try(
            "processes",
            "SIGTERM to `run --workers 2`, then run again",
            [
                "run",
                "--preset",
                str(ROOT / "tests/presets/tiny.toml"),
                "--set",
                "run.tasks=ae,gan",
                "--set",
                "run.labels_per_class=5",
                "--set",
                "run.latent_maps=pca",
                "--workers",
                "2",
                "--out",
                "@T/study",
                "--no-progress",
            ],
            "ok",
            special="signal:SIGTERM",
            timeout=200,
        )
    )
    return out


# ------------------------------------------------------------------------------- the fixtures

FX: dict[str, Path] = {}


def build_fixtures(root: Path, run: Callable[..., dict[str, Any]]) -> None:
    """The tiny dataset, a finished tiny ae run and 20 of its samples with their provenance."""
    from tests.tiny_idx import write_blocks

    FX["idx"] = write_blocks(root / "idx", n_train=200, n_test=60)
    FX["ae"] = root / "ae"
    argv = ["-q", "train", "ae", *[a.replace("@IDX", str(FX["idx"])) for a in TRAIN], "--out", str(FX["ae"])]
    for args in (
        argv,
        [
            "-q",
            "sample",
            str(FX["ae"]),
            "--n",
            "20",
            "--out",
            str(root / "npy" / "samples.npy"),
            "--device",
            "cpu",
        ],
        # the reference classifier of the tiny dataset, trained once into MNISTLAB_CACHE
        ["-q", "score", str(root / "npy" / "samples.npy"), "--no-progress"],
    ):
        r = run(args, root, {}, root / "fx.out", root / "fx.err", 600)
        if r["rc"] != 0:
            raise SystemExit(
                f"fixture `mnistlab {' '.join(args)}` failed:\n{(root / 'fx.err').read_text()[-3000:]}"
            )
    FX["npy"] = root / "npy"
    for p in (FX["ae"], FX["npy"]):  # the fixtures' own bookkeeping is not copied into tries
        for name in (".mnistlab.lock", ".mnistlab.lock.pid"):
            (p / name).unlink(missing_ok=True)


# ------------------------------------------------------------------------- running one process


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _child_env(env: dict[str, str | None]) -> dict[str, str]:
    full = dict(ENV)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return full


def wait_session(
    pid: int, timeout: float, signal_at: tuple[Callable[[], bool], int] | None = None
) -> dict[str, Any]:
    """Wait for child `pid` (leader of its own session) up to `timeout`; optionally send a signal once
    `signal_at[0]()` is true. Then look for processes of its session still alive (orphans)."""
    t0 = time.monotonic()
    status, timed_out, signalled = None, False, False
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if signal_at is not None and not signalled and signal_at[0]():
            os.kill(pid, signal_at[1])
            signalled = True
        if time.monotonic() - t0 > timeout:
            timed_out = True
            with _quiet():
                os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    orphans: list[int] = []
    deadline = time.monotonic() + ORPHAN_GRACE
    while True:
        orphans = session_processes(pid)
        if not orphans or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    names = [cmdline(p) for p in orphans]
    for p in orphans:
        with _quiet():
            os.kill(p, signal.SIGKILL)
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "wall": round(wall, 2),
        "timed_out": timed_out,
        "orphans": names,
        "signalled": signalled,
    }


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def fork_run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str | None],
    out: Path,
    err: Path,
    timeout: float,
    signal_at=None,
) -> dict[str, Any]:
    """`mnistlab ARGV` in a child forked from this (pre-imported) process, in a session of its own."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the server
        code = 1
        try:
            os.setsid()
            fo, fe = (
                os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            )
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(_child_env(env))
            os.chdir(cwd)
            sys.argv = ["mnistlab", *argv]
            from mnistlab.cli import main

            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
        try:
            import atexit
            import threading

            threading._shutdown()  # non-daemon threads are waited for, as at a normal exit
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)
    return wait_session(pid, timeout, signal_at)


def spawn_run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str | None],
    out: Path,
    err: Path,
    timeout: float,
    signal_at=None,
) -> dict[str, Any]:
    """`python -m mnistlab ARGV` as a fresh process in a session of its own."""
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnistlab", *argv],
            cwd=cwd,
            env=_child_env(env),
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return wait_session(proc.pid, timeout, signal_at)


# --------------------------------------------------------------------------------- one try


def _subst(text: str, t: Path) -> str:
    for token, value in (
        ("@T", str(t)),
        ("@IDX", str(FX["idx"])),
        ("@AE", str(t / "ae")),
        ("@NPY", str(t / "npy" / "samples.npy")),
    ):
        text = text.replace(token, value)
    return text


def digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def error_line(err: str) -> str | None:
    """The one error line of a clear refusal, else None."""
    lines = [line for line in err.splitlines() if line.strip()]
    if not lines or "Traceback" in err:
        return None
    errors = [
        line for line in lines if line.startswith("mnistlab") and ("error:" in line or "incomplete" in line)
    ]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return None
    return errors[0]


def classify(tr: Try, r: dict[str, Any], err: str, lost: list[str], t: Path) -> tuple[str, str]:
    if r["timed_out"]:
        return "hang", f"killed after {tr.timeout:.0f} s"
    if "Traceback" in err:
        return "traceback", err.strip().splitlines()[-1][:200]
    if r["orphans"]:
        return "orphan", "; ".join(r["orphans"])
    if lost:
        return "lost file", ", ".join(lost)
    rc = r["rc"]
    if rc == 0:
        if tr.expect == "error":
            return "silent acceptance", "exit 0"
        why = tr.check(t) if tr.check else None
        return ("accepted", "") if why is None else ("silent acceptance", f"exit 0 but {why}")
    if rc in (1, 2):
        line = error_line(err)
        if line is None:
            return "crash", f"exit {rc} without one clear error line: {err.strip()[-300:]!r}"
        if tr.expect == "ok":
            return "refused", line[:200]
        return "error", line[:200]
    return "crash", f"exit {rc}: {err.strip()[-300:]!r}"


def prepare(tr: Try, t: Path) -> tuple[list[str], Path, dict[str, str | None], dict[str, str | None]]:
    t.mkdir(parents=True)
    if "ae" in tr.needs:
        shutil.copytree(FX["ae"], t / "ae", symlinks=True)
    if "npy" in tr.needs:
        shutil.copytree(FX["npy"], t / "npy")
    (t / "mine").mkdir(exist_ok=True)
    if tr.setup is not None:
        tr.setup(t)
    before = {s: digest(t / s) for s in tr.sentinels}
    argv = ["-q", *[_subst(a, t) for a in tr.argv]]
    env = {k: (None if v is None else _subst(v, t)) for k, v in tr.env.items()}
    env.setdefault("MNISTLAB_CACHE", str(FX["cache"]))
    return argv, Path(_subst(tr.cwd, t)), env, before


def run_try(tr: Try, t: Path, runner) -> dict[str, Any]:
    argv, cwd, env, before = prepare(tr, t)
    out, err_path = t.parent / f"{t.name}.out", t.parent / f"{t.name}.err"
    if tr.special and tr.special.startswith("signal:"):
        r, err = _signal_try(tr, t, argv, cwd, env, out, err_path)
    elif tr.special == "two":
        r, err = _two_writers(tr, t, argv, cwd, env, out, err_path)
    else:
        r = runner(argv, cwd, env, out, err_path, tr.timeout)
        err = err_path.read_text(errors="replace")
    lost = [s for s, d in before.items() if d is None or digest(t / s) != d]
    cls, detail = classify(tr, r, err, lost, t)
    return {
        "kind": tr.kind,
        "name": tr.name,
        "expect": tr.expect,
        "class": cls,
        "detail": detail,
        "wall": r["wall"],
        "argv": argv,
    }


def _signal_try(tr, t, argv, cwd, env, out, err_path) -> tuple[dict[str, Any], str]:
    """A signal once the command has saved something to resume from (a training's first checkpoint,
    a study's first finished stage), then the same command again (train with --resume), which must
    finish. The first command must end with its own exit code for the signal (143, 130, 129; -9 for
    SIGKILL) and a line saying what was saved."""
    sig = getattr(signal, tr.special.split(":")[1])
    study = argv[1] == "run"
    mark = (t / "study" / "run.json") if study else (t / "r" / "checkpoints" / "last.safetensors")

    def ready() -> bool:
        if study:
            try:
                return '"done"' in mark.read_text()
            except OSError:
                return False
        return mark.exists()

    r = spawn_run(argv, cwd, env, out, err_path, tr.timeout, (ready, sig))
    err = err_path.read_text(errors="replace")
    expected_rc = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGHUP: 129, signal.SIGKILL: -9}[sig]
    if r["timed_out"] or r["orphans"] or "Traceback" in err:
        return r, err
    if not r["signalled"]:
        return {**r, "rc": 99}, f"ended before the signal (exit {r['rc']}): {err[-300:]}"
    if r["rc"] != expected_rc:
        return {**r, "rc": 98}, f"exit {r['rc']} for {sig.name}, not {expected_rc}: {err[-300:]}"
    again = argv if study else [*argv, "--resume"]
    r2 = spawn_run(again, cwd, env, out, err_path, tr.timeout)
    err2 = err_path.read_text(errors="replace")
    if r2["rc"] == 0 and not study:
        epochs = [
            json.loads(line)["epoch"]
            for line in (t / "r" / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        if epochs != list(range(1, len(epochs) + 1)) or len(epochs) != LONG_EPOCHS:
            return {
                **r2,
                "rc": 97,
            }, f"resumed run's epochs {epochs[:3]}...{epochs[-3:]} ({len(epochs)}), not 1..{LONG_EPOCHS}"
    return {**r2, "wall": r["wall"] + r2["wall"]}, err2


def _two_writers(tr, t, argv, cwd, env, out, err_path) -> tuple[dict[str, Any], str]:
    """The same command twice at once: one must finish, the other be refused in one line naming the
    writer, or both finish one after the other (whichever comes second then sees the first's output)."""
    out2, err2 = out.with_suffix(".out2"), err_path.with_suffix(".err2")
    with open(out, "wb") as fo, open(err_path, "wb") as fe, open(out2, "wb") as fo2, open(err2, "wb") as fe2:
        cmd = [sys.executable, "-m", "mnistlab", *argv]
        p1 = subprocess.Popen(cmd, cwd=cwd, env=_child_env(env), stdout=fo, stderr=fe, start_new_session=True)
        p2 = subprocess.Popen(
            cmd, cwd=cwd, env=_child_env(env), stdout=fo2, stderr=fe2, start_new_session=True
        )
    r1 = wait_session(p1.pid, tr.timeout)
    r2 = wait_session(p2.pid, tr.timeout)
    e1, e2 = err_path.read_text(errors="replace"), err2.read_text(errors="replace")
    both = {
        "rc": 0,
        "wall": max(r1["wall"], r2["wall"]),
        "timed_out": r1["timed_out"] or r2["timed_out"],
        "orphans": r1["orphans"] + r2["orphans"],
    }
    if "Traceback" in e1 + e2 or both["timed_out"] or both["orphans"]:
        return both, e1 + e2
    codes = sorted([r1["rc"], r2["rc"]])
    if codes == [0, 0]:
        return both, ""
    if codes == [0, 2]:
        line = error_line(e1 if r1["rc"] else e2) or ""
        if (
            "being written by another mnistlab process (PID" in line
            or "already holds a run" in line
            or "exists and was not written" in line
        ):
            return both, ""
        return {**both, "rc": 96}, f"the second writer's message: {line!r}"
    return {**both, "rc": 95}, f"exit codes {codes}: {e1[-300:]} | {e2[-300:]}"


# -------------------------------------------------------------------------------------- main


def preimport() -> None:
    """Import what the commands import (every mnistlab module, and the libraries they import inside
    functions), once, in the process the tries fork from; most of a command's start is imports."""
    import importlib
    import pkgutil

    import matplotlib

    matplotlib.use("Agg")
    import torch

    import mnistlab

    for mod in pkgutil.walk_packages(mnistlab.__path__, "mnistlab."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    for name in (
        "matplotlib.pyplot",
        "sklearn.decomposition",
        "sklearn.mixture",
        "sklearn.linear_model",
        "sklearn.neighbors",
        "sklearn.manifold",
        "openTSNE",
        "safetensors.torch",
        "safetensors.numpy",
        "scipy.linalg",
        "optuna",
    ):
        with _quiet_import():
            importlib.import_module(name)
    torch.set_num_threads(1)


class _quiet_import:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ImportError)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--list", action="store_true", help="list the tries (kind, expectation, name) and their count"
    )
    ap.add_argument("--only", help="comma-separated kinds to run")
    ap.add_argument("--match", help="run only the tries whose name contains this")
    ap.add_argument("--spawn", action="store_true", help="each try as a fresh `python -m mnistlab` (slow)")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--keep", action="store_true", help="keep the tries' folders (printed)")
    args = ap.parse_args(argv)
    selected = tries()
    if args.only:
        kinds = set(args.only.split(","))
        selected = [t for t in selected if t.kind in kinds]
    if args.match:
        selected = [t for t in selected if args.match in t.name]
    if args.list:
        for tr in selected:
            print(f"{tr.kind:<11}{tr.expect:<7}{tr.name!r}")
        counts = Counter(t.kind for t in selected)
        print(f"{len(selected)} tries: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0

    os.environ.update({k: v for k, v in ENV.items() if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    if not args.spawn:
        preimport()
    runner = spawn_run if args.spawn else fork_run
    root = Path(tempfile.mkdtemp(prefix="mnistlab-hostile-"))
    t0 = time.monotonic()
    FX["cache"] = root / "cache"
    build_fixtures(root / "fx", runner)
    print(f"fixtures ready in {time.monotonic() - t0:.0f} s ({root})", flush=True)
    results = []
    for k, tr in enumerate(selected):
        res = run_try(tr, root / "tries" / f"{k:04d}", runner)
        results.append(res)
        mark = "" if res["class"] in PASS else f"  <-- {res['class']}: {res['detail']}"
        print(
            f"[{k + 1}/{len(selected)}] {tr.kind}: {tr.name!r} -> {res['class']} ({res['wall']:.1f} s){mark}",
            flush=True,
        )
    wall = time.monotonic() - t0
    print_table(results, wall)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        _rm_readonly(root)
    failures = [r for r in results if r["class"] not in PASS]
    return 1 if failures else 0


def _rm_readonly(root: Path) -> None:
    if root.exists():
        for p, _, _ in os.walk(root):
            with _quiet():
                os.chmod(p, stat.S_IRWXU)
        shutil.rmtree(root, ignore_errors=True)


def print_table(results: list[dict[str, Any]], wall: float) -> None:
    classes = [*PASS, *FAILURES]
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    counts = Counter((r["kind"], r["class"]) for r in results)
    shown = [c for c in classes if any(counts[(k, c)] for k in kinds)] or list(PASS)
    print()
    print(f"{'kind':<12}{'tries':>6}" + "".join(f"{c:>19}" for c in shown))
    for k in [*kinds, "all"]:
        row = [r for r in results if k in ("all", r["kind"])]
        cells = [sum(1 for r in row if r["class"] == c) for c in shown]
        print(f"{k:<12}{len(row):>6}" + "".join(f"{n:>19}" for n in cells))
    expects = Counter(r["expect"] for r in results)
    print(
        f"\n{len(results)} tries in {wall:.0f} s; expected: "
        + ", ".join(f"{k} {v}" for k, v in expects.items())
    )
    failures = [r for r in results if r["class"] not in PASS]
    print(f"failures: {len(failures)}")
    for r in failures:
        print(f"- [{r['class']}] {r['kind']}: {r['name']!r}: {r['detail']}")
        print(f"    mnistlab {' '.join(map(repr, r['argv']))[:300]}")


if __name__ == "__main__":
    sys.exit(main())
