"""Faults a hostile user or machine makes, each a one-line error or a clean stop, never a traceback, a
hang or a process left behind (issue 33): OS errors at the CLI's boundary (a full disk simulated with
RLIMIT_FSIZE, a read-only folder, a name too long, a file where a folder belongs, a closed stdout),
SIGTERM to a study and to a training, a search worker killed with SIGKILL, FIFOs where records belong,
records edited with wrong types, TOML and IDX bombs, and bounds on threads and scored images.
benchmarks/faults.py is the long part (signals at random points of a study, then a resume)."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import anyio
import numpy as np
import pytest
from benchmarks.sessions import session_processes

from mnistlab import cli
from mnistlab.core.errors import ConfigError, WorkersDied, os_error_line
from mnistlab.core.fsio import MAX_TOML_DEPTH, read_toml
from mnistlab.data import datasets as D
from mnistlab.runs import folder as rundir
from mnistlab.search import grid

from .conftest import TINY_RUN_PRESET, assert_one_line_error, write_dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_TRAIN = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--device", "cpu", "--no-progress"]


def mnistlab(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err[-2000:]
    return lines[-1]


def in_time(fn, seconds: float = 10.0):
    """fn()'s exception or result, failing the test (instead of hanging it) when fn does not return."""
    box: dict = {}

    def call():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} did not return within {seconds} s"
    return box.get("error", box.get("result"))


# ------------------------------------------------------------------------- OS errors, one line


@pytest.mark.parametrize(
    "error, words",
    [
        (
            OSError(errno.EROFS, "Read-only file system", "/ro/run/summary.json"),
            "cannot write /ro/run/summary.json",
        ),
        (OSError(errno.ENOSPC, "No space left on device", "/full/x"), "cannot write /full/x: No space left"),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/t/" + "x" * 5000), "File name too long"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/home-file/pretrained"), "Not a directory"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/root-only/x"),
            "/root-only/x: Permission denied",
        ),
    ],
)
def test_every_os_error_is_one_line_with_exit_1(monkeypatch, capsys, error, words):
    def command(args):
        raise error

    monkeypatch.setattr("mnistlab.cli.data.cmd_data", command)
    assert cli.main(["data", "info"]) == 1
    message = assert_one_line_error(capsys, words)
    assert len(message) < 400  # a name past the OS's limit is shortened in the message
    assert os_error_line(error) in message


def test_a_full_disk_is_one_line_naming_the_file(idx_dir, tmp_path):
    """RLIMIT_FSIZE in the child: every write past 64 KB fails with EFBIG, as on a full disk (Python
    ignores SIGXFSZ, so the write raises instead of the process dying)."""
    limit = 64 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    proc = mnistlab(
        "train",
        "ae",
        "--preset",
        "quick",
        "--data-dir",
        str(idx_dir),
        "--out",
        str(out),
        *TINY_TRAIN,
        preexec_fn=small_files,
    )
    code, _, err = finish(proc)
    assert code == 1, err[-2000:]
    line = one_line(err)
    assert "cannot write" in line and str(out) in line and "File too large" in line, line


def test_a_read_only_folder_is_one_line(idx_dir, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root from writing")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = mnistlab(
            "train",
            "ae",
            "--preset",
            "quick",
            "--data-dir",
            str(idx_dir),
            "--out",
            str(locked / "run"),
            *TINY_TRAIN,
        )
        code, _, err = finish(proc)
    finally:
        locked.chmod(0o700)
    assert code in (1, 2), err
    assert "Permission denied" in one_line(err)


def test_a_file_valued_home_and_a_long_name_are_one_line(tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    code, _, err = finish(
        subprocess.Popen(
            [sys.executable, "-m", "mnistlab", "pretrained", "path", "ae"],
            env={**ENV, "MNISTLAB_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    assert code in (1, 2) and str(home) in one_line(err), err
    long = tmp_path / ("x" * 300) / "report"
    code, _, err = finish(mnistlab("report", str(long)))
    assert code in (1, 2) and "Traceback" not in err, err
    one_line(err)


def test_a_closed_stdout_is_a_quiet_exit(idx_dir):
    proc = mnistlab("data", "info", "--data-dir", str(idx_dir))
    proc.stdout.close()  # the reader has gone (`| head` after its lines) before anything is printed
    err = proc.stderr.read()
    proc.wait(120)
    assert proc.returncode == cli.EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# --------------------------------------------------------------------------------------- signals


def _wait_for(predicate, seconds: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_stops_a_study_and_its_workers_and_exits_143(idx_dir, tmp_path):
    out = tmp_path / "study"
    # Two stages that read nothing, side by side in worker processes, each long enough to be stopped.
    proc = mnistlab(
        "run",
        "--preset",
        str(TINY_RUN_PRESET),
        "--data-dir",
        str(idx_dir),
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-report",
        "--no-progress",
        "--set",
        "run.tasks=gan,cgan",
        "--set",
        "run.search=false",
        "--set",
        "gan.train.epochs=2000",
        "--set",
        "cgan.train.epochs=2000",
        start_new_session=True,
    )
    try:

        def both_running() -> bool:
            try:
                state = json.loads((out / "run.json").read_text())
            except (OSError, ValueError):
                return False
            return sum(e["status"] == "running" for e in state["stages"]) == 2

        assert _wait_for(both_running, 180), finish(proc, 60)
        # The stages' own processes exist (main, fork server, two stages) before the signal.
        assert _wait_for(lambda: len(session_processes(proc.pid)) >= 4, 60), session_processes(proc.pid)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, err[-3000:]
    assert "rerun the same command to resume" in one_line(err)
    assert _wait_for(lambda: not session_processes(proc.pid), 15), session_processes(proc.pid)
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "failed"
    assert {e["name"]: (e["status"], e["error"]) for e in state["stages"]} == {
        "gan": ("failed", "interrupted"),
        "cgan": ("failed", "interrupted"),
    }


def test_sigterm_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=20_000, n_test=40)  # an epoch of some seconds
    out = tmp_path / "run"
    proc = mnistlab(
        "train",
        "ae",
        "--preset",
        "quick",
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "--set",
        "train.epochs=5",
        "--set",
        "train.batch_size=16",
        "--device",
        "cpu",
        "--no-progress",
    )
    try:
        assert _wait_for(lambda: (out / "metrics.jsonl").exists(), 120)  # written as the first epoch starts
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143, err[-3000:]
    line = one_line(err)
    assert "no epoch had finished, so nothing was saved; rerun with --force to start over" in line, line
    assert not rundir.checkpoint_path(out).exists()


def test_ctrl_c_after_an_epoch_names_the_checkpoint(idx_dir, tmp_path, monkeypatch, capsys):
    from mnistlab.training import loop

    real = loop.lr_factor

    def interrupt_in_epoch_two(schedule, step, total, warmup=0.25):
        if step == total // 2:  # the first step of the second of two epochs
            raise KeyboardInterrupt
        return real(schedule, step, total, warmup)

    monkeypatch.setattr(loop, "lr_factor", interrupt_in_epoch_two)
    out = tmp_path / "run"
    argv = ["train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out)]
    assert cli.main([*argv, *TINY_TRAIN, "--set", "train.epochs=2"]) == 130
    message = assert_one_line_error(capsys, "epoch 1/2 is checkpointed")
    assert "rerun with --resume" in message


# --------------------------------------------------------------------------- search workers


def _dies_first(task, exp, run_dir: Path, threads: int) -> str:
    """A grid job whose worker is killed (SIGKILL) the first time it runs each trial."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / "died-once"
    if not marker.exists():
        marker.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    rundir.write_summary(run_dir, {"status": "finished"})
    return "finished"


def _always_dies(task, exp, run_dir: Path, threads: int) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def test_a_killed_search_worker_is_requeued_not_a_traceback(tmp_path):
    todo = [(None, tmp_path / "trials" / "a"), (None, tmp_path / "trials" / "b")]
    grid._run_pools("ae", todo, 1, False, job=_dies_first)
    assert all(rundir.read_summary(d)["status"] == "finished" for _, d in todo)


def test_a_worker_that_always_dies_ends_the_search_with_one_line(tmp_path):
    todo = [(None, tmp_path / "trials" / "a")]
    with pytest.raises(WorkersDied) as e:
        grid._run_pools("ae", todo, 1, False, job=_always_dies)
    assert_one_line_error(e, f"died {grid.MAX_POOLS} times")


# ------------------------------------------------------------------------------------ records


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl"])
def test_a_fifo_record_is_refused_not_waited_on(tmp_path, name):
    os.mkfifo(tmp_path / name)
    read = rundir.read_summary if name == "summary.json" else rundir.read_history
    result = in_time(lambda: read(tmp_path))
    assert isinstance(result, ConfigError) and "not a regular file" in str(result), result


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/dev/urandom"])
def test_a_checkpoint_that_is_no_file_is_refused_not_read_forever(tmp_path, target):
    """A checkpoint (or its recorded SHA-256) linked to a device or made a FIFO would be read until
    memory ran out, or waited on forever: refused before it is read (hostile pass)."""
    from mnistlab.runs.checkpoint import CheckpointError, read_checkpoint, recorded_sha256, sidecar_path

    path = tmp_path / "last.safetensors"
    if target == "fifo":
        os.mkfifo(path)
        os.mkfifo(sidecar_path(path))
    else:
        path.symlink_to(target)
        sidecar_path(path).symlink_to(target)
    for read in (lambda: read_checkpoint(path), lambda: recorded_sha256(path)):
        result = in_time(read)
        assert isinstance(result, CheckpointError) and "not a regular file" in str(result), result


def test_a_history_that_is_not_json_lines_is_refused_not_read_as_empty(tmp_path):
    """Only a last line cut short by a crash is skipped: a file of other lines (a symlink to
    /etc/passwd, a hand edit) is a one-line error naming the line, not an empty history."""
    good = '{"epoch": 1, "step": 4, "seconds": 1.0}\n'
    (tmp_path / "metrics.jsonl").write_text(good + "root:x:0:0:root:/root:/bin/bash\n" + good)
    with pytest.raises(ConfigError, match="metrics.jsonl line 2: not a JSON line"):
        rundir.read_history(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(good + "\n" + good + '{"epoch": 3, "st')
    assert [r["epoch"] for r in rundir.read_history(tmp_path)] == [1, 1]


def test_compare_refuses_an_empty_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "compare", str(tmp_path / "missing"), "--out", ""]) == 2
    assert_one_line_error(capsys, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_provenance_file_is_refused_by_score(tmp_path, capsys):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((4, 28, 28), np.uint8))
    os.mkfifo(tmp_path / "s.json")
    assert in_time(lambda: cli.main(["score", str(samples), "--no-progress"]), 30) == 2
    assert_one_line_error(capsys, "not a regular file")


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("summary.json", '{"status": 3}', "field 'status' must be a string, got 3"),
        ("summary.json", '{"test": [1]}', "field 'test' must be a JSON object or null"),
        ("metrics.jsonl", '{"epoch": "3"}\n', "line 1: field 'epoch' must be a whole number, got '3'"),
        ("metrics.jsonl", '{"epoch": 1, "val_loss": "low"}\n', "field 'val_loss' must be a number"),
        ("metrics.jsonl", '{"step": 1}\n', "no 'epoch' field"),
        ("metrics.jsonl", "[1, 2]\n", "expected a JSON object, got list"),
    ],
)
def test_run_records_with_wrong_types_name_the_file_and_field(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    read = rundir.read_summary if name == "summary.json" else rundir.read_history
    with pytest.raises(ConfigError) as e:
        read(tmp_path)
    assert_one_line_error(e, words)
    assert name in str(e.value)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s["stages"][0].update(attempts="x"), "stages[0]: field 'attempts' must be a whole number"),
        (lambda s: s["stages"][0].update(status="paused"), "field 'status' must be one of"),
        (lambda s: s.update(overrides="a=b"), "field 'overrides' must be a list of strings"),
        (lambda s: s.update(stages={}), "no stage list"),
    ],
)
def test_run_json_with_wrong_types_is_one_line(tmp_path, capsys, change, words):
    state = {"kind": "mnistlab-run", "preset": "quick", "overrides": [], "status": "done", "plan": {}}
    state["stages"] = [{"name": "ae", "folder": "ae", "status": "done", "attempts": 1}]
    change(state)
    (tmp_path / "run.json").write_text(json.dumps(state))
    assert cli.main(["report", str(tmp_path)]) == 2
    assert_one_line_error(capsys, words)


def test_a_provenance_file_with_wrong_types_is_one_line(tmp_path, capsys):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "s.json").write_text(json.dumps({"digit": "3", "data": {"dataset": "mnist", "data_dir": ""}}))
    assert cli.main(["score", str(samples), "--no-progress"]) == 2
    assert_one_line_error(capsys, "s.json: field 'digit' must be a whole number or null")


def test_score_refuses_more_images_than_its_bound_from_the_header(tmp_path, capsys):
    from mnistlab.cli.explore import MAX_SCORED_IMAGES

    samples = tmp_path / "many.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (MAX_SCORED_IMAGES + 1, 28, 28)
    with open(samples, "wb") as f:  # the header alone: nothing that big is written or read
        np.lib.format.write_array_header_1_0(f, header)
    assert cli.main(["score", str(samples), "--no-progress"]) == 2
    assert_one_line_error(capsys, f"at most {MAX_SCORED_IMAGES:,}")


# -------------------------------------------------------------------------------- TOML and config


@pytest.mark.parametrize(
    "text, words",
    [
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", f"nested more than {MAX_TOML_DEPTH} deep"),
        ("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "nested more than"),
        ("[ae.train]\nseed = " + "9" * 5000 + "\n", "a number of more than"),
        ("[ae.train]\nlr = 1" + "0" * 5000 + ".0\n", "a number of more than"),
    ],
)
def test_toml_bombs_are_refused_before_parsing(tmp_path, text, words):
    path = tmp_path / "bomb.toml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        read_toml(path)
    assert_one_line_error(e, words)
    assert time.perf_counter() - start < 1.0


def test_a_huge_or_fifo_preset_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than a valid file"):
        read_toml(big)
    os.mkfifo(tmp_path / "fifo.toml")
    assert isinstance(in_time(lambda: read_toml(tmp_path / "fifo.toml")), ConfigError)


def test_a_quoted_number_in_a_preset_is_refused_but_a_set_string_is_parsed(idx_dir, tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text('[ae.train]\nepochs = "3"\n')
    argv = ["train", "ae", "--preset", str(preset), "--data-dir", str(idx_dir), "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 2
    assert_one_line_error(capsys, "train.epochs: expected int, got the string '3'")
    from mnistlab.tasks import load_experiment

    assert load_experiment("ae", "quick", ["train.epochs=3"]).train.epochs == 3


# ----------------------------------------------------------------------------------------- IDX


def _gzip_idx(path: Path, dims: tuple[int, ...], body_bytes: int) -> None:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(body_bytes >> 20):
            f.write(zeros)


def test_an_idx_gzip_bomb_stops_at_the_size_its_header_states(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_idx(bomb, (10, 28, 28), 256 << 20)  # 256 MB of zeros behind a header for 10 images
    tracemalloc.start()
    try:
        with pytest.raises(D.DataError) as e:
            D.read_idx(bomb, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line_error(e, "trailing bytes")
    assert peak < 8 << 20, peak


def test_an_idx_header_asking_for_more_than_its_file_can_hold_allocates_nothing(tmp_path):
    liar = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_idx(liar, (1_000_000, 28, 28), 0)  # 784 MB stated, a few bytes compressed
    raw = tmp_path / "raw-idx3-ubyte"
    raw.write_bytes(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**20, 28, 28)) + bytes(10))
    tracemalloc.start()
    try:
        for path, words in ((liar, "compressed bytes can hold"), (raw, "data truncated")):
            with pytest.raises(D.DataError) as e:
                D.read_idx(path, 3)
            assert_one_line_error(e, words)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_a_dataset_without_test_images_is_one_line(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=40, n_test=0)
    assert cli.main(["data", "info", "--data-dir", str(data)]) == 2
    assert_one_line_error(capsys, "the test split (t10k-images-idx3-ubyte) holds no images")


# ------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--threads", "100000"],
        ["serve", "--threads", "0"],
    ],
)
def test_thread_counts_are_bounded_before_anything_starts(argv, capsys):
    assert cli.main(argv) == 2
    assert_one_line_error(capsys, "--threads must be in [1, ")


def test_search_workers_are_bounded(tmp_path):
    with pytest.raises(ConfigError, match="--workers must be in"):
        grid.run_grid("ae", {"train.lr": ["1e-3"]}, tmp_path / "s", "quick", workers=100_000)


# ------------------------------------------------------------------------------------ explorer


@contextlib.contextmanager
def _explorer_server(app):
    """uvicorn with the explorer's own settings (web.app.server_config) in a thread; yields its port."""
    import uvicorn

    from mnistlab.web.app import server_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = uvicorn.Server(server_config(app))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: srv.started, 10)
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


async def _hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_client_that_never_finishes_its_headers_is_cut_off(monkeypatch):
    from mnistlab.web import guard

    monkeypatch.setattr(guard, "HEADER_TIMEOUT_S", 0.5)
    with _explorer_server(_hello) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
        slow.settimeout(5)
        t0 = time.monotonic()
        assert slow.recv(100) == b""  # closed by the server
        assert 0.3 < time.monotonic() - t0 < 4
        slow.close()
        fine = socket.create_connection(("127.0.0.1", port))  # a whole request is answered as before
        fine.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        fine.settimeout(5)
        assert fine.recv(100).startswith(b"HTTP/1.1 200")
        fine.close()


def _request(chunks: list[bytes], pause: float = 0.0):
    from starlette.requests import Request

    messages = [
        {"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)
    ]

    async def receive():
        if pause:
            await anyio.sleep(pause)
        return messages.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


def test_request_bodies_are_bounded_in_time_and_number(monkeypatch):
    from mnistlab.web import app
    from mnistlab.web.errors import ApiError

    monkeypatch.setattr(app, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(app, "BODY_WAIT_S", 0.3)

    async def body(bodies, request, limit: int) -> bytes:
        async with bodies.receive(request, limit) as raw:
            return raw

    async def scenario():
        slots = app.Bodies(slots=1)  # (a body of unknown length takes a slot)
        assert await body(slots, _request([b"ab", b"cd"]), 100) == b"abcd"
        with pytest.raises(ApiError) as slow:  # a body trickling in: 408, and its slot is given back
            await body(slots, _request([b"x"] * 100, pause=0.05), 1000)
        assert slow.value.status == 408
        with pytest.raises(ApiError) as big:  # refused while it streams, past the limit
            await body(slots, _request([b"x" * 60, b"x" * 60]), 100)
        assert big.value.status == 413
        await slots.slots.acquire()  # every slot taken by other bodies: a 503 after BODY_WAIT_S
        with pytest.raises(ApiError) as busy:
            await body(slots, _request([b"ab"]), 100)
        assert busy.value.status == 503

    anyio.run(scenario)


def test_a_negative_latent_seed_is_one_line_not_a_scikit_learn_traceback():
    """`mnistlab latent RUN --seed -1` reached scikit-learn's silhouette_score (hostile pass)."""
    from mnistlab.latent.run import LatentConfig

    with pytest.raises(ConfigError, match="--seed"):
        LatentConfig(seed=-1)
