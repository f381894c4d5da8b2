"""Shipped pretrained runs: packing keeps the weights bit for bit without the resume-only state,
records where each run came from, re-evaluates to the same test numbers and ships the explorer's
start-up cache; `path` gives a writable copy that every command takes; bad names are one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnistlab import cli, tasks
from mnistlab.core.errors import ConfigError
from mnistlab.pretrained import bundle as bundle_files
from mnistlab.pretrained import pack as pretrained_pack
from mnistlab.pretrained import shipped as pretrained
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import CheckpointError, read_checkpoint, restore
from mnistlab.web import cache
from mnistlab.web.explorer import Explorer
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def bundle(tiny_study, tmp_path_factory) -> Path:
    """The tiny study's task stages packed (without the compare page: scoring full MNIST is slow)."""
    out = tmp_path_factory.mktemp("bundle") / "pretrained"
    sources = {name: tiny_study / name for name in ("ae", "dae", "vae", "gan")}
    pretrained_pack.pack(sources, out, compare=False)
    return out


def test_packed_runs_keep_the_weights_and_record_their_origin(bundle, tiny_study):
    assert pretrained.available(bundle) == ["ae", "dae", "vae", "gan"]  # stage order
    for name in pretrained.available(bundle):
        src, dst = rundir.checkpoint_path(tiny_study / name), rundir.checkpoint_path(bundle / name)
        (a, _), (b, state) = read_checkpoint(src), read_checkpoint(dst)
        kept = [k for k in a if k.startswith("module/")]
        assert sorted(b) == sorted(kept)
        for k in kept:  # float32 rounded to float16, everything else (counters) as it was
            assert torch.equal(b[k], a[k].half() if a[k].dtype == torch.float32 else a[k]), k
        assert dst.stat().st_size < src.stat().st_size / 4  # no optimizer moments, no RNG state, float16
        assert state["epoch"] == read_checkpoint(src)[1]["epoch"]
        made = rundir.read_summary(bundle / name)["pretrained"]
        # Where it came from, without the packing machine's folders: the source's name, the command
        # that trained it less its --out (and console switches); a baseline is the shipped copy.
        assert made["source"] == name and made["machine"] and made["packed_at_commit"] != ""
        command = made["command"]
        assert command == pretrained_pack.public_command(
            (tiny_study / name / "command.txt").read_text().strip()
        )
        assert str(tiny_study) not in command and "--out" not in command
        probe = bundle / name / "probe" / "summary.json"
        if probe.is_file():
            assert str(tiny_study) not in probe.read_text()
        data = rundir.read_summary(bundle / name).get("data")
        assert not (isinstance(data, str) and Path(data).is_absolute()), data
        assert made["source_checkpoint_sha256"] == rundir.read_summary(tiny_study / name)["checkpoint_sha256"]
        if tasks.get(name).evaluate is not None:  # re-measured with float16 weights, beside the trained
            assert made["source_test"] == rundir.read_summary(tiny_study / name)["test"]
            assert 0 <= made["test_max_relative_change"] < 0.02, made
    assert rundir.read_summary(bundle / "dae")["baseline"]["run"] == "../ae"  # the packed sibling
    assert (bundle / "ae" / cache.FILE).is_file()  # the explorer starts from it


def test_public_command_drops_the_packing_machines_folders():
    cmd = "mnistlab -q train dae --preset default --set 'a=b c' --baseline /tmp/m/ae --out /tmp/d/dae --no-progress"
    assert pretrained_pack.public_command(cmd) == (
        "mnistlab train dae --preset default --set 'a=b c' --baseline $(mnistlab pretrained path ae)"
    )
    assert pretrained_pack.public_command(None) is None


def test_public_command_is_the_same_when_applied_again_and_names_the_cli_of_a_study_stage():
    """A bundle's run packed again passes its public command through unchanged; a study stage's
    recorded argv ("python: .../mnistlab run ...") is shown as the `mnistlab` command it was."""
    once = pretrained_pack.public_command("mnistlab train dae --preset default --baseline /tmp/m/ae --out /x")
    assert pretrained_pack.public_command(once) == once
    study = "python: /home/u/.venv/bin/mnistlab run --preset default --no-progress --out /tmp/runs/s"
    assert pretrained_pack.public_command(study) == "mnistlab run --preset default"
    other = "python: -m pytest tests"
    assert pretrained_pack.public_command(other) == "python: -m pytest tests"


def test_a_run_of_an_earlier_bundle_packed_again_keeps_where_it_was_trained(bundle, tmp_path):
    for name in ("ae", "dae", "gan"):
        shutil.copytree(bundle / name, tmp_path / name, ignore=shutil.ignore_patterns(*owner.BOOKKEEPING))
    pretrained_pack.pack({n: tmp_path / n for n in ("ae", "dae", "gan")}, tmp_path / "again", compare=False)
    assert rundir.read_summary(tmp_path / "again" / "dae")["baseline"]["run"] == "../ae"  # found again
    first = rundir.read_summary(bundle / "gan")["pretrained"]
    again = rundir.read_summary(tmp_path / "again" / "gan")["pretrained"]
    assert again["repacked"] and {k: again[k] for k in first if k != "test_max_relative_change"} == {
        k: v for k, v in first.items() if k != "test_max_relative_change"
    }
    before, after = (
        read_checkpoint(rundir.checkpoint_path(p))[0] for p in (bundle / "gan", tmp_path / "again" / "gan")
    )
    assert all(torch.equal(before[k], after[k]) for k in before)  # float16 weights pass through unchanged


def test_a_copy_serves_and_samples_without_computing_again(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNISTLAB_HOME", str(tmp_path / "home"))
    root = pretrained.bundle_path(bundle)
    assert root == tmp_path / "home" / "pretrained" and (root / "gan" / "summary.json").is_file()
    monkeypatch.setattr(cache, "compute", lambda *a, **k: pytest.fail("the shipped cache was not used"))
    ex = Explorer(root)
    assert ex is not None
    out = tmp_path / "s.npy"
    assert cli.main(["-q", "sample", str(pretrained.path("gan", bundle)), "--n", "4", "--out", str(out)]) == 0
    assert out.is_file()


def test_eval_of_a_copy_reproduces_its_recorded_numbers_and_resume_is_refused(bundle, tmp_path, capsys):
    copy = pretrained.path("ae", bundle, root=tmp_path)
    recorded = rundir.read_summary(copy)["test"]
    assert cli.main(["-q", "eval", str(copy)]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == recorded
    run = tasks.load_run(copy)
    model = run.modules("encoder")
    tensors, state = rundir.read_run_checkpoint(copy)
    with pytest.raises(CheckpointError, match="weights-only .* cannot resume"):
        restore(tensors, state, {}, {"model": torch.optim.Adam(model.parameters())})


def test_a_copy_keeps_the_probe_checkpoint_and_one_without_it_is_redone(bundle, tmp_path):
    run = bundle / "ae"
    nested = [f.relative_to(run) for f in run.rglob("*.safetensors") if f.parent != run / "checkpoints"]
    assert any("probe" in str(rel) for rel in nested)  # the study's linear probe, which serve uses
    copy = pretrained.path("ae", bundle, root=tmp_path)
    assert all((copy / rel).is_file() for rel in nested)
    for rel in nested:  # as an earlier version copied it: without them
        (copy / rel).unlink()
    assert pretrained.path("ae", bundle, root=tmp_path) == copy
    assert all((copy / rel).is_file() for rel in nested)


def test_a_changed_shipped_checkpoint_refreshes_the_copy(bundle, tmp_path):
    shipped = tmp_path / "shipped"
    import shutil

    shutil.copytree(bundle, shipped)
    copy = pretrained.path("gan", shipped, root=tmp_path / "home")
    mark = copy / "mine.txt"
    mark.write_text("the user's own notes")
    assert pretrained.path("gan", shipped, root=tmp_path / "home") == copy and mark.is_file()
    ckpt = rundir.checkpoint_path(shipped / "gan")
    ckpt.write_bytes(ckpt.read_bytes() + b" ")  # another shipped checkpoint (a newer package)
    pretrained.path("gan", shipped, root=tmp_path / "home")
    assert rundir.checkpoint_path(copy).read_bytes() == ckpt.read_bytes()  # refreshed ...
    assert mark.read_text() == "the user's own notes"  # ... beside the user's own file


def test_bad_names_and_an_empty_bundle_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert cli.main(["pretrained", "path", "nope"]) == 2
    assert_one_line_error(capsys, "no shipped run named 'nope'")
    monkeypatch.setattr(pretrained, "BUNDLE", tmp_path / "empty")
    with pytest.raises(Exception, match="ships no trained runs"):
        pretrained.bundle_path(tmp_path / "empty", root=tmp_path / "home")
    with pytest.raises(SystemExit):  # an action is required: argparse's usage line
        cli.main(["pretrained"])


def test_serve_without_a_run_opens_the_shipped_runs(bundle, tmp_path, monkeypatch):
    from mnistlab.web import app

    served = []
    monkeypatch.setattr(pretrained, "BUNDLE", bundle)
    monkeypatch.setenv("MNISTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(app, "serve", lambda run_dir, *a, **k: served.append(run_dir))
    assert cli.main(["-q", "serve", "--port", "0"]) == 0
    assert served == [tmp_path / "home" / "pretrained"] and (served[0] / "ae" / cache.FILE).is_file()


def test_pack_takes_a_study_folder_and_refuses_two_runs_of_one_task(tiny_study, tmp_path, capsys):
    out = tmp_path / "b"
    args = ["-q", "pretrained", "pack", str(tiny_study), "--out", str(out), "--no-compare", "--float32"]
    assert cli.main(args) == 0 and pretrained.available(out) == ["ae", "dae", "vae", "gan"]
    (a, _), (b, _) = (read_checkpoint(rundir.checkpoint_path(r / "ae")) for r in (tiny_study, out))
    assert all(torch.equal(a[k], b[k]) for k in b) and len(b) > 0  # --float32: bit for bit
    made = rundir.read_summary(out / "ae")["pretrained"]
    assert made["weights"] == "float32 (bit for bit)" and made["test_max_relative_change"] == 0
    capsys.readouterr()
    assert (
        cli.main(["-q", "pretrained", "pack", str(tiny_study), str(tiny_study / "ae"), "--out", str(out)])
        == 2
    )
    assert_one_line_error(capsys, "two runs named 'ae'")
    assert cli.main(["pretrained", "list", "--json"]) == 0


def test_a_smoke_run_report_shows_the_shipped_runs_beside_its_own(bundle, tiny_study, tmp_path, monkeypatch):
    import shutil

    from mnistlab.report.build import write_report

    run = Path(shutil.copytree(tiny_study, tmp_path / "run"))
    monkeypatch.setattr(pretrained, "BUNDLE", bundle)
    md = write_report(run)["markdown"].read_text()
    key = md[md.index("## 1. Key results") : md.index("## 2.")]
    assert "shipped default run (measured)" in key and "`mnistlab pretrained list`" in key
    shipped_mse = rundir.read_summary(bundle / "ae")["test"]["mse"]
    assert f"MSE {shipped_mse:.3g}" in key.split("ae: test reconstruction")[1].split("\n")[0]
    monkeypatch.setattr(pretrained, "BUNDLE", tmp_path / "none")
    assert "shipped default run" not in write_report(run)["markdown"].read_text()


def test_pretrained_list_reads_the_bundle_without_torch(tmp_path):
    """`pretrained list` answers from the bundle's files (config.toml, summary.json) with no torch
    imported, in the tasks' listing order; a run of a task mnistlab does not know still lists."""
    for name, task in (("gan", "gan"), ("ae", "ae"), ("mine", "someplugin")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.toml").write_text(f'task = "{task}"\n')
    (tmp_path / "ae" / "summary.json").write_text(json.dumps({"epochs": 3, "test": {"mse": 0.01}}))
    (tmp_path / "notes").mkdir()  # no config.toml: not a run
    assert bundle_files.available(tmp_path) == ["ae", "gan", "mine"]
    ae = bundle_files.describe("ae", tmp_path)
    assert ae["task"] == "ae" and ae["epochs"] == 3 and ae["test"] == {"mse": 0.01}
    assert ae["description"] == tasks.get("ae").description
    assert (
        bundle_files.describe("mine", tmp_path)["description"] == ""
        and bundle_files.describe("gan", tmp_path)["test"] == {}
    )
    with pytest.raises(ConfigError, match="no shipped run named 'vae'; shipped: ae, gan, mine"):
        bundle_files.describe("vae", tmp_path)
    code = (
        "import sys\nfrom mnistlab import cli\nrc = cli.main(['pretrained', 'list', '--json'])\n"
        "print('TORCH', 'torch' in sys.modules, rc, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TORCH False 0" in done.stderr, done.stderr[-2000:]
    assert [r["name"] for r in json.loads(done.stdout)] == pretrained.available()
