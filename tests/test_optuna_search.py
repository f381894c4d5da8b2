"""Optuna search on a few hundred MNIST images: the objective on a FixedTrial, two worker processes on
one SQLite study, median pruning, a killed worker's trial retried (and resumed), diverging trials
recorded as failed, and the same study on a real PostgreSQL server started here."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mnistlab import cli, tasks
from mnistlab.runs import folder as rundir
from mnistlab.search.optuna import StudySpec, TrialObjective, open_study, run_optuna
from mnistlab.search.space import parse_space

TINY = (
    "data.train_limit=200",
    "data.test_limit=100",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_batch_size=200",
    "train.threads=1",
)
LR_SPACE = tuple(parse_space({"train": {"lr": {"type": "float", "low": 1e-6, "high": 3e-2, "log": True}}}))
REPO = Path(__file__).resolve().parents[1]


def spec_for(out: Path, **kw) -> StudySpec:
    base = dict(
        task="ae", out=out, space=LR_SPACE, n_trials=2, preset="quick", overrides=TINY, progress=False
    )
    return StudySpec(**{**base, **kw})


def test_objective_with_fixed_trial(tmp_path):
    spec = spec_for(tmp_path)
    value = TrialObjective(spec)(optuna.trial.FixedTrial({"train.lr": 1e-2}, number=7))
    run_dir = tmp_path / "trials" / "trial-0007"
    history = rundir.read_history(run_dir)
    assert [r["epoch"] for r in history] == [1, 2]
    assert value == min(r["val_loss"] for r in history)
    assert rundir.read_summary(run_dir)["status"] == "finished"


def test_two_workers_share_one_sqlite_study(tmp_path):
    spec = spec_for(tmp_path, n_trials=3, prune=False)
    rows = run_optuna(spec, workers=2)
    study = optuna.load_study(study_name=spec.name, storage=spec.url)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    # The budget may overshoot by at most workers - 1 when both ask for the last trial at once.
    assert 3 <= len(done) <= 4 and len(done) == len(study.get_trials())
    assert len({t.number for t in done}) == len(done)
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)  # one run folder each
    assert len({t.user_attrs["worker_pid"] for t in done}) == 2  # both processes ran trials
    for t in done:
        assert rundir.read_summary(t.user_attrs["run_dir"])["status"] == "finished"
    assert len(rows) == len(done) and (tmp_path / "best.toml").is_file()
    assert rows[0]["val_loss"] == min(t.value for t in done)


def test_median_pruner_stops_a_bad_trial_early(tmp_path):
    spec = spec_for(
        tmp_path,
        n_trials=3,
        prune_startup_trials=2,
        prune_warmup_epochs=1,
        overrides=(*TINY, "train.epochs=4"),
    )
    study = open_study(spec)
    for lr in (1e-2, 1e-2, 1e-6):  # two good trials set the median, then one that barely learns
        study.enqueue_trial({"train.lr": lr})
    rows = run_optuna(spec, workers=1)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    bad = trials[2]
    stopped = max(bad.intermediate_values)
    assert stopped == 2  # the first epoch after the 1-epoch warm-up, well before its 4th
    assert rundir.read_summary(bad.user_attrs["run_dir"])["status"] == "pruned"
    history = rundir.read_history(bad.user_attrs["run_dir"])
    assert [r["epoch"] for r in history] == [1, 2]  # the deciding epoch is logged too
    assert history[-1]["val_loss"] == bad.intermediate_values[2]
    assert [r["status"] for r in rows] == ["finished", "finished", "pruned"]


def fake_diverging_trainer(exp, out, resume=False, progress=True, on_epoch_end=None):
    from mnistlab.training.loop import NonFiniteLossError

    rundir.prepare(out, exp, "ae", resume)
    raise NonFiniteLossError("non-finite loss=nan at epoch 1, step 3; training stopped")


def test_diverging_trials_are_failed_not_a_crash(tmp_path, monkeypatch):
    spec = tasks.get("ae")
    monkeypatch.setitem(tasks._TASKS, "ae", dataclasses.replace(spec, train=fake_diverging_trainer))
    spec = spec_for(tmp_path, n_trials=2)
    rows = run_optuna(spec, workers=1)  # returns normally
    trials = optuna.load_study(study_name=spec.name, storage=spec.url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["status"] == "diverged" and "non-finite" in t.user_attrs["error"] for t in trials)
    assert [r["status"] for r in rows] == ["diverged", "diverged"]


def search_command(out: Path, space: Path, overrides: list[str], *extra: str) -> list[str]:
    """`mnistlab search` arguments of a 1-trial study of 20 tiny epochs: long enough to be killed in."""
    args = [
        "-q",
        "search",
        "ae",
        "--optuna",
        "--trials",
        "1",
        "--preset",
        "quick",
        "--space",
        str(space),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    for o in overrides:
        args += ["--set", o]
    return args


def kill_after_an_epoch(process: subprocess.Popen, trials: Path, pid_of=None) -> Path:
    """Wait until some trial has logged and checkpointed an epoch (the row is written first), then
    SIGKILL `process`, or the worker process that `pid_of(run_dir)` names; returns the trial's run
    folder. No clean-up runs: its trial stays RUNNING."""
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trial finished an epoch"
        started = [
            p.parent
            for p in sorted(trials.glob("*/metrics.jsonl"))
            if rundir.read_history(p.parent) and (p.parent / "checkpoints" / "last.safetensors").exists()
        ]
        if started:
            break
        time.sleep(0.05)
    run_dir = started[0]
    pid = process.pid if pid_of is None else pid_of(run_dir)
    os.kill(pid, signal.SIGKILL)
    if pid == process.pid:
        process.wait()
    return run_dir


SPACE_TOML = '[train.lr]\ntype = "float"\nlow = 1e-3\nhigh = 1e-2\nlog = true\n'


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("where", ["this machine", "another machine"])
def test_killed_workers_trial_is_retried_and_resumes(tmp_path, monkeypatch, where):
    """A search killed mid-trial: the same command, rerun, fails the trial, re-queues it and resumes it
    from its last checkpoint. On this machine at once, with the default heartbeat (the trial names its
    dead process); a trial of another machine once its heartbeat is stale."""
    out, space = tmp_path / "study", tmp_path / "space.toml"
    space.write_text(SPACE_TOML)
    overrides = [*TINY, "train.epochs=20"]
    heartbeat = ["--heartbeat", "1"] if where == "another machine" else []  # else the default, 60 s
    args = search_command(out, space, overrides, "--workers", "1", *heartbeat)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    search = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    run_dir = kill_after_an_epoch(search, out / "trials")
    first_rows = rundir.read_history(run_dir)
    assert (run_dir / "checkpoints" / "last.safetensors").exists() and len(first_rows) < 20

    spec = spec_for(out, n_trials=1)
    study = optuna.load_study(study_name=spec.name, storage=spec.url)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    if where == "another machine":
        monkeypatch.setattr(socket, "gethostname", lambda: "another-machine")
        # Past the grace period (2 x heartbeat = 2 s) by a margin: SQLite keeps heartbeats in whole
        # seconds, so 2.5 s after a heartbeat can still read as 2 s, which is not stale.
        time.sleep(4.5)
    assert cli.main(args) == 0  # the same command, right after
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.params == trials[0].params
    assert retry.user_attrs["run_dir"] == str(run_dir)  # the same run folder ...
    history = rundir.read_history(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, 21))
    # ... resumed: the epochs finished before the kill were kept, not retrained.
    assert history[0] == first_rows[0]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_worker_is_noticed_by_its_launcher(tmp_path):
    """One of two worker processes killed mid-trial, default heartbeat (60 s): the launcher sees its
    worker gone, re-queues the trial and runs it before reporting, rather than report the search done
    with the trial still "running" (the other worker counts it as taken and stops)."""
    out, space = tmp_path / "study", tmp_path / "space.toml"
    space.write_text(SPACE_TOML)
    args = search_command(out, space, [*TINY, "train.epochs=20"], "--workers", "2")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    spec = spec_for(out, n_trials=1)
    killed = []

    def worker_of(run_dir: Path) -> int:
        study = optuna.load_study(study_name=spec.name, storage=spec.url)
        trial = next(t for t in study.get_trials() if t.user_attrs.get("run_dir") == str(run_dir))
        killed.append(trial.number)
        assert trial.state == TrialState.RUNNING and trial.user_attrs["worker_pid"] != launcher.pid
        return trial.user_attrs["worker_pid"]

    try:
        run_dir = kill_after_an_epoch(launcher, out / "trials", worker_of)
        first_rows = rundir.read_history(run_dir)
        stdout, stderr = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stderr.decode()[-2000:]
    assert "re-queued" in stderr.decode()
    trials = optuna.load_study(study_name=spec.name, storage=spec.url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed[0]].state == TrialState.FAIL
    retry = next(t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed[0])
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_dir"] == str(run_dir)
    history = rundir.read_history(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, 21)) and history[0] == first_rows[0]
    results = (out / "results.csv").read_text()
    assert "running" not in results and "stale, retried" in results
    assert (out / "best.toml").is_file()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_requeue_dead_takes_only_trials_whose_local_process_is_gone(tmp_path):
    """A trial of a process of this machine that is gone is failed and re-queued, without that
    process's identity; trials of a live process, or of another machine, are left running."""
    from mnistlab.search.optuna import requeue_dead

    spec = spec_for(tmp_path)
    study = open_study(spec)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here = socket.gethostname()
    owners = {"gone": (here, int(gone.stdout)), "alive": (here, os.getpid()), "elsewhere": ("elsewhere", 1)}
    for name, (host, pid) in owners.items():
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2)})
        trial.set_user_attr("worker_host", host)
        trial.set_user_attr("worker_pid", pid)
        trial.set_user_attr("owner", name)
    assert requeue_dead(spec, study) == 1
    state = {t.user_attrs["owner"]: t for t in study.get_trials() if t.state != TrialState.WAITING}
    assert {k: t.state for k, t in state.items()} == {
        "gone": TrialState.FAIL,
        "alive": TrialState.RUNNING,
        "elsewhere": TrialState.RUNNING,
    }
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(queued) == state["gone"].number
    assert queued.params == state["gone"].params and queued.user_attrs["owner"] == "gone"
    assert "worker_pid" not in queued.user_attrs  # until a worker takes it, nobody may think it dead
    assert requeue_dead(spec, study) == 0  # failed once, re-queued once


# ---------------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's postgresql package); skipped, with the
    reason, where it cannot start."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL test skipped: the psycopg2 driver is not installed (pip install -e '.[dev]')")
    initdb = shutil.which("initdb") or next(iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    if initdb is None:
        pytest.skip("PostgreSQL test skipped: no initdb/pg_ctl (apt-get install -y postgresql)")
    bindir = Path(initdb).resolve().parent
    as_user = {}
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's postgres user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(
                "PostgreSQL test skipped: running as root and there is no 'postgres' user to run the server"
            )
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
    if as_user:
        os.chown(base, as_user["user"], as_user["group"])
    data, port = base / "data", _free_port()
    run = dict(cwd=base, capture_output=True, text=True, timeout=120, **as_user)
    try:
        step = subprocess.run(
            [bindir / "initdb", "-D", data, "-A", "trust", "-U", "mnistlab", "--no-sync"], **run
        )
        if step.returncode == 0:
            opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c fsync=off"
            step = subprocess.run(
                [
                    bindir / "pg_ctl",
                    "-D",
                    data,
                    "-l",
                    base / "server.log",
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ],
                **run,
            )
        if step.returncode != 0:
            log = (base / "server.log").read_text()[-500:] if (base / "server.log").exists() else ""
            pytest.skip(
                f"PostgreSQL test skipped: the server did not start: {(step.stderr or step.stdout)[-500:]} {log}"
            )
        yield f"postgresql+psycopg2://mnistlab@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], **run)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_on_a_postgresql_study(tmp_path, postgres_url):
    spec = spec_for(tmp_path, n_trials=2, storage=postgres_url, study_name="pg-test", prune=False)
    rows = run_optuna(spec, workers=2)
    study = optuna.load_study(study_name="pg-test", storage=postgres_url)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert 2 <= len(done) <= 3 and len({t.number for t in done}) == len(done)
    assert not (tmp_path / "study.db").exists()  # nothing went to the default SQLite file
    assert len(rows) == len(done)
    assert "postgresql" in (tmp_path / "search.json").read_text()
