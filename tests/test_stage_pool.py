"""Stages side by side (stage_pool.py, `run.workers`): a stage starts only after what it reads has
ended, at most `workers` run at once, a failure stops new starts and comes back as the stage's own
error, a process that dies without a word is an error too; and a tiny study run with two workers
records the same numbers as one run in a single process."""

from __future__ import annotations

import json
import os
import time

import pytest

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.study import pool as stage_pool
from mnistlab.study import run as pipeline

from .conftest import TINY_RUN_PRESET


def _nap(seconds: float) -> None:
    time.sleep(seconds)


def _fail(message: str) -> None:
    raise ConfigError(message)


def _die() -> None:
    os._exit(3)


def _threads_when_alone(path: str, seconds: float) -> None:
    """Wait (up to `seconds`) for the parent's word that this stage runs alone; write the thread count."""
    import torch

    deadline = time.monotonic() + seconds
    while torch.get_num_threads() < (os.cpu_count() or 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path, "w") as f:
        f.write(str(torch.get_num_threads()))


def _write_command(path: str) -> None:
    from mnistlab.runs.folder import command_line

    with open(path, "w") as f:
        f.write(command_line())


def _graph(names, reads, workers, jobs, exclusive=frozenset()):
    """run_graph with books kept as a list of ("start" | "end", name, running or error)."""
    events: list[tuple] = []
    running: set[str] = set()
    peak = [0]

    def start(name, n):
        running.add(name)
        peak[0] = max(peak[0], len(running))
        events.append(("start", name, n))

    def end(name, outcome):
        running.discard(name)
        events.append(("end", name, outcome.error))

    error = stage_pool.run_graph(names, reads, workers, lambda n: jobs[n], start, end, exclusive)
    return events, error, peak[0]


def _at(events, kind, name):
    return next(i for i, e in enumerate(events) if e[:2] == (kind, name))


def test_a_stage_starts_after_what_it_reads_and_at_most_workers_run():
    jobs = {"a": (_nap, (0.6,)), "b": (_nap, (0.0,)), "c": (_nap, (0.1,)), "d": (_nap, (0.1,))}
    events, error, peak = _graph(["a", "b", "c", "d"], {"b": ["a"]}, 2, jobs)
    assert error is None and peak == 2
    assert _at(events, "start", "b") > _at(events, "end", "a")  # b reads a
    assert _at(events, "start", "c") < _at(events, "end", "a")  # c reads nothing: it runs beside a
    assert all(e[2] is None for e in events if e[0] == "end")


def test_an_exclusive_stage_runs_alone():
    jobs = {"search": (_nap, (0.3,)), "x": (_nap, (0.0,)), "y": (_nap, (0.0,))}
    events, error, _ = _graph(["search", "x", "y"], {}, 2, jobs, exclusive=frozenset({"search"}))
    assert error is None
    assert _at(events, "start", "x") > _at(events, "end", "search")


@pytest.mark.skipif(stage_pool.WIDEN is None, reason="no signal to widen a stage with here")
def test_a_stage_gone_before_it_is_widened_is_collected_not_a_crash(monkeypatch):
    # The last stage can end (and be reaped by the fork server) between "it runs alone" and the signal.
    def gone(pid, sig):
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(stage_pool.os, "kill", gone)
    jobs = {"a": (_nap, (0.0,)), "b": (_nap, (0.0,))}
    events, error, _ = _graph(["a", "b"], {"b": ["a"]}, 2, jobs)
    assert error is None
    assert [e[:2] for e in events] == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]


def test_a_failure_is_the_stages_own_error_and_stops_new_starts():
    jobs = {"bad": (_fail, ("no such thing",)), "later": (_nap, (0.0,))}
    events, error, _ = _graph(["bad", "later"], {}, 1, jobs)
    assert isinstance(error, ConfigError) and str(error) == "no such thing"
    assert [e[:2] for e in events] == [("start", "bad"), ("end", "bad")]  # "later" never started


def test_a_process_that_dies_without_a_word_is_an_error():
    events, error, _ = _graph(["gone"], {}, 2, {"gone": (_die, ())})
    assert isinstance(error, RuntimeError) and "exit code 3" in str(error)
    assert events[-1][:2] == ("end", "gone") and events[-1][2] is error


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every stage has it all")
def test_the_last_stage_running_alone_gets_every_core(tmp_path):
    out = tmp_path / "threads.txt"
    jobs = {"short": (_nap, (0.2,)), "long": (_threads_when_alone, (str(out), 20.0))}
    events, error, _ = _graph(["short", "long"], {}, 2, jobs)
    assert error is None
    assert int(out.read_text()) == os.cpu_count()  # one thread each while both ran, every core after


def test_workers_zero_means_one_per_core_and_never_more_than_the_stages():
    assert stage_pool.workers_for(3, 2) == 2 and stage_pool.workers_for(1, 8) == 1
    assert 1 <= stage_pool.workers_for(0, 8) <= min(4, os.cpu_count() or 1)


SMALL = ["run.tasks=ae,dae", "run.labels_per_class=5,all", "run.latent_maps=pca"]


def _numbers(run):
    ae = json.loads((run / "ae/summary.json").read_text())
    probe = json.loads((run / "ae/probe/summary.json").read_text())
    dae = json.loads((run / "dae/summary.json").read_text())
    return [
        ae["test"]["mse"],
        probe["linear_probe"]["test_acc"],
        probe["finetune"]["test_acc"],
        dae["denoising"][0]["dae"]["psnr"],
    ]


def test_a_study_with_two_workers_keeps_the_books_and_the_numbers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    pipeline.run_study(one, str(TINY_RUN_PRESET), [*SMALL, "run.workers=1"], progress=False, report=None)
    # latent and probe asked to start first: once the autoencoder ends they take both workers, the DAE
    # waits for one of them.
    first = "run.start_first=latent,probe"
    pipeline.run_study(
        two, str(TINY_RUN_PRESET), [*SMALL, "run.workers=2", first], progress=False, report=None
    )
    state = json.loads((two / "run.json").read_text())
    stage = {s["name"]: s for s in state["stages"]}
    assert list(stage) == ["ae", "probe", "latent", "dae", "labels"] and state["status"] == "done"
    assert all(
        s["status"] == "done" and s["cpu_seconds"] > 0 and s["peak_rss_mb"] > 0 for s in stage.values()
    )
    for later, earlier in [("dae", "ae"), ("probe", "ae"), ("latent", "ae"), ("labels", "dae")]:
        assert stage[later]["started"] >= stage[earlier]["ended"], (later, earlier)
    assert stage["dae"]["started"] >= min(stage["latent"]["ended"], stage["probe"]["ended"])
    # One torch thread per worker against the test process's threads: the same training up to float
    # summation order, so the MSE and PSNR agree closely; an accuracy on 150 test images may move by
    # an image or two where rounding flips a borderline prediction.
    mse, probe, finetune, psnr = _numbers(two)
    mse1, probe1, finetune1, psnr1 = _numbers(one)
    assert mse == pytest.approx(mse1, rel=1e-3) and psnr == pytest.approx(psnr1, abs=0.05)
    assert probe == pytest.approx(probe1, abs=0.02) and finetune == pytest.approx(finetune1, abs=0.02)


def test_a_failing_stage_in_a_worker_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "r"
    bad = "gan.data.data_dir=" + str(tmp_path / "missing")
    args = [
        "run",
        "--preset",
        str(TINY_RUN_PRESET),
        "--out",
        str(out),
        "--no-progress",
        "--no-report",
        "--set",
        "run.tasks=ae,gan",
        "--set",
        "run.workers=2",
        "--set",
        bad,
    ]
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "missing" in err[-1], err
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "failed"
    assert {s["name"]: s["status"] for s in state["stages"]}["gan"] == "failed"


def test_start_first_moves_stages_to_the_front_and_unknown_names_are_one_line_errors(tmp_path, capsys):
    names = ["ae", "dae", "probe", "latent", "gan"]
    assert stage_pool.start_order(names, ("vae", "probe", "gan")) == ["probe", "gan", "ae", "dae", "latent"]
    assert stage_pool.start_order(names, ()) == names
    assert stage_pool.start_order(names, ("gan", "gan")) == ["gan", "ae", "dae", "probe", "latent"]
    code = cli.main(
        [
            "run",
            "--preset",
            str(TINY_RUN_PRESET),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
            "--no-report",
            "--set",
            "run.start_first=probe,nope",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "run.start_first: unknown stage 'nope'" in err[0], err
    assert not (tmp_path / "r" / "run.json").exists()  # refused before any stage ran


def test_a_stage_records_the_mnistlab_command_its_parent_runs(tmp_path):
    """A stage's process writes the run folders of the parent's `mnistlab` command: they record that
    command, not the process's own argv."""
    from mnistlab.runs.folder import cli_command

    out = tmp_path / "command.txt"
    with cli_command(["run", "--preset", "default"]):
        _, error, _ = _graph(["a"], {}, 1, {"a": (_write_command, (str(out),))})
    assert error is None and out.read_text() == "mnistlab run --preset default"
