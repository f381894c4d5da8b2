"""Nothing of the user's is ever lost (runs/owner.py): a command writes only into a folder it claimed
(new, empty or holding its own kind of output), replaces only the files mnistlab wrote there, holds a
lock while it writes (a second writer is told the holder's PID; a dead holder's lock is taken over),
and never writes inside the installed package; `--resume` without a checkpoint is an error."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.pretrained import pack as pretrained_pack
from mnistlab.pretrained import shipped as pretrained
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "model.latent_dim=2"]
TINY += ["--device", "cpu", "--no-progress"]


def train(idx_dir: Path, out: Path, *extra: str) -> int:
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out)]
    return cli.main([*argv, *TINY, *extra])


def user_files(folder: Path) -> dict[str, str]:
    """A user's own files in `folder` (a note at the top, a figure where mnistlab writes its own)."""
    files = {"notes.txt": "mine", "figures/mine.png": "my figure"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


def assert_kept(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (folder / name).read_text() == text, name


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    """One tiny finished `mnistlab train ae` run (copied by the tests that change a run)."""
    from tests.conftest import write_dataset

    base = tmp_path_factory.mktemp("owned")
    idx = write_dataset(base / "idx")
    out = base / "ae"
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(idx), "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    return out


def copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(owner.LOCK, owner.PID_FILE))
    return dest


# ------------------------------------------------------------------------------------ the rule


def test_a_folder_of_the_users_is_refused_by_name_and_left_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    files = user_files(folder)
    with pytest.raises(ConfigError, match=r"mine holds files mnistlab did not write \(figures, notes.txt\)"):
        owner.claim(folder, "train")
    assert sorted(p.name for p in folder.iterdir()) == ["figures", "notes.txt"]  # no manifest, no lock
    assert_kept(folder, files)


def test_only_the_files_mnistlab_wrote_are_replaced_and_other_kinds_are_refused(tmp_path):
    folder = tmp_path / "out"
    with owner.session():
        owner.claim(folder, "latent")
        (folder / "map.csv").write_text("ours")
        (folder / "sub").mkdir()
        (folder / "sub" / "grid.png").write_text("ours")
    assert owner.manifest(folder) == {"kind": "latent", "files": ["map.csv", "sub/grid.png"]}
    files = user_files(folder)  # added by the user afterwards
    with pytest.raises(
        ConfigError, match=r"holds a latent analysis \(`mnistlab latent --out`\), not a training run"
    ):
        owner.claim(folder, "train")
    with owner.session():
        owner.claim(folder, "latent", force=True)  # what a rerun with --force does
        assert not (folder / "map.csv").exists() and not (folder / "sub").exists()
        (folder / "map.csv").write_text("new")
    assert_kept(folder, files)
    assert owner.manifest(folder)["files"] == ["map.csv"]
    assert owner.clear(folder) == ["map.csv"]
    assert_kept(folder, files)


def test_files_written_under_a_claim_that_never_ended_are_still_mnistlabs(tmp_path):
    """A crash (or a library call, which has no end) leaves the manifest open: what appeared since
    the claim is counted as mnistlab's at the next one, what was there before is not."""
    folder = tmp_path / "run"
    folder.mkdir()
    owner.claim(folder, "train")  # outside a session: checked, recorded, not held
    (folder / "metrics.jsonl").write_text("{}\n")
    assert not owner.holds(folder)
    assert owner.owned_files(folder) == {"metrics.jsonl"}
    assert owner.clear(folder) == ["metrics.jsonl"]


def test_files_are_claimed_one_by_one_next_to_the_users(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "digits.png").write_text("my picture")
    with pytest.raises(ConfigError, match=r"digits.png exists and was not written by mnistlab"):
        owner.claim_files([folder / "digits.npy", folder / "digits.png"])
    owner.claim_files([folder / "other.npy"])
    (folder / "other.npy").write_text("ours")
    owner.claim_files([folder / "other.npy"])  # ours: may be replaced
    assert (folder / "digits.png").read_text() == "my picture"


# --------------------------------------------------------------------------------- the commands


def test_train_refuses_a_folder_of_the_users_and_the_current_folder(idx_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}')
    (out / "metrics.jsonl").write_text("my log\n")
    assert train(idx_dir, out) == 2
    assert_one_line_error(capsys, "holds files mnistlab did not write (metrics.jsonl, summary.json)")
    assert (out / "summary.json").read_text() == '{"mine": true}' and (
        out / "metrics.jsonl"
    ).read_text() == "my log\n"
    monkeypatch.chdir(out)
    assert train(idx_dir, Path(".")) == 2
    assert_one_line_error(capsys, "holds files mnistlab did not write")


def test_force_replaces_a_run_but_keeps_the_users_files(ae_run, idx_dir, tmp_path, capsys):
    run = copy_run(ae_run, tmp_path / "run")
    files = user_files(run)
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(run), *TINY]
    assert cli.main(argv) == 2
    assert_one_line_error(capsys, "already holds a run; pass --resume to continue it, --force to replace it")
    (run / "metrics.jsonl").write_text("")  # so that a replaced run shows
    assert cli.main([*argv, "--force"]) == 0
    assert len(rundir.read_history(run)) == 1  # trained again from the start
    assert_kept(run, files)
    assert not owner.holds(run)  # released when the command ended
    assert "notes.txt" not in owner.manifest(run)["files"] and "summary.json" in owner.manifest(run)["files"]


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_start(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(out), *TINY]
    assert cli.main([*argv, "--resume"]) == 2
    assert_one_line_error(capsys, "nothing to resume (no ")
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert cli.main([*argv, "--resume"]) == 2
    assert_one_line_error(capsys, "nothing to resume")
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert cli.main([*argv, "--resume", "--force"]) == 2
    assert_one_line_error(capsys, "pass one")


def test_latent_search_and_sample_keep_same_named_files_of_the_users(ae_run, idx_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("results.csv", "best.toml", "digits.png", "digits.json", "summary.json"):
        (mine / name).write_text("mine")
    run = copy_run(ae_run, tmp_path / "run")
    assert cli.main(["-q", "latent", str(run), "--out", str(mine), "--no-score", "--maps", "pca"]) == 2
    assert_one_line_error(capsys, "holds files mnistlab did not write")
    search = ["-q", "search", "ae", "--preset", "quick", "--data-dir", str(idx_dir), "--out", str(mine)]
    assert cli.main([*search, "--grid", "train.lr=1e-3", "--workers", "1", *TINY]) == 2
    assert_one_line_error(capsys, "holds files mnistlab did not write")
    assert cli.main(["-q", "sample", str(run), "--n", "4", "--out", str(mine / "digits.npy")]) == 2
    assert_one_line_error(capsys, "digits.png exists and was not written by mnistlab")
    assert all(
        (mine / n).read_text() == "mine" for n in ("results.csv", "best.toml", "digits.png", "digits.json")
    )
    assert not (mine / "digits.npy").exists()
    # Into a folder of its own, sample writes and may write again (its files are listed as mnistlab's).
    out = tmp_path / "d" / "digits.npy"
    for _ in range(2):
        assert cli.main(["-q", "sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert sorted(owner.manifest(out.parent)["files"]) == ["digits.json", "digits.npy", "digits.png"]


def test_latent_and_eval_write_into_a_run_beside_the_users_files(ae_run, tmp_path, capsys):
    run = copy_run(ae_run, tmp_path / "run")
    files = user_files(run)
    assert cli.main(["-q", "latent", str(run), "--no-score", "--maps", "pca", "--samplers", "gaussian"]) == 0
    assert cli.main(["-q", "eval", str(run)]) == 0
    assert_kept(run, files)
    assert (run / "figures" / "latent" / "map_pca.png").is_file()
    assert "figures/latent/map_pca.png" in owner.manifest(run)["files"]


# ----------------------------------------------------------------------------------- pretrained


def test_pack_writes_beside_a_folder_that_is_not_a_bundle(ae_run, tmp_path):
    mine = tmp_path / "DIR"
    (mine / "inner").mkdir(parents=True)
    files = user_files(mine)
    sibling = tmp_path / "DIR.new"  # what an earlier pack staged in and removed
    sibling.mkdir()
    (sibling / "keep.txt").write_text("mine too")
    pretrained_pack.pack({"ae": ae_run}, mine / "inner" / "..", compare=False)
    assert_kept(mine, files) and (sibling / "keep.txt").read_text() == "mine too"
    bundle = tmp_path / "DIR-bundle"
    assert pretrained.available(bundle) == ["ae"] and owner.manifest(bundle)["kind"] == "bundle"
    # Packing into a bundle again replaces its files and keeps the user's there.
    (bundle / "notes.txt").write_text("about this bundle")
    pretrained_pack.pack({"ae": ae_run}, bundle, compare=False)
    assert (bundle / "notes.txt").read_text() == "about this bundle" and pretrained.available(bundle) == [
        "ae"
    ]
    assert not [p for p in tmp_path.iterdir() if "packing" in p.name]  # the staging folder is gone


def test_a_refreshed_copy_keeps_the_users_files(ae_run, tmp_path):
    shipped = tmp_path / "shipped"
    pretrained_pack.pack({"ae": ae_run}, shipped, compare=False)
    copy = pretrained.path("ae", shipped, root=tmp_path / "home")
    files = user_files(copy)
    ckpt = rundir.checkpoint_path(shipped / "ae")
    ckpt.write_bytes(ckpt.read_bytes() + b" ")  # a newer package ships other weights
    assert pretrained.path("ae", shipped, root=tmp_path / "home") == copy
    assert rundir.checkpoint_path(copy).read_bytes() == ckpt.read_bytes()
    assert_kept(copy, files)
    # A user's file where a shipped file goes: the old copy is moved aside whole, not overwritten.
    (copy / "figures" / "mine.png").unlink()
    (copy / "command.txt").unlink()
    (copy / "command.txt").write_text("my own notes")
    owner_files = owner.manifest(copy)
    owner_files["files"].remove("command.txt")
    (copy / owner.MANIFEST).write_text(json.dumps(owner_files))
    ckpt.write_bytes(ckpt.read_bytes() + b" ")
    pretrained.path("ae", shipped, root=tmp_path / "home")
    assert (tmp_path / "home" / "ae.old" / "command.txt").read_text() == "my own notes"
    assert (copy / "command.txt").read_text() != "my own notes"


def test_nothing_writes_inside_the_installed_package(ae_run, idx_dir, capsys):
    package = Path(owner.__file__).resolve().parents[1]
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(idx_dir), *TINY]
    assert cli.main([*argv, "--out", str(package / "_pretrained" / "mine")]) == 2
    assert_one_line_error(capsys, "is inside the installed mnistlab package")
    assert not (package / "_pretrained" / "mine").exists()
    with pytest.raises(ConfigError, match="pretrained path NAME"):
        owner.claim(package / "_pretrained" / "ae", "train")
    with pytest.raises(ConfigError, match="inside the installed mnistlab package"):
        owner.claim_files([package / "digits.npy"])
    shipped = sorted(p for p in (package / "_pretrained").iterdir() if (p / "config.toml").is_file())
    if shipped:  # eval of a shipped run would rewrite its summary inside the package
        before = (shipped[0] / "summary.json").read_bytes()
        assert cli.main(["-q", "eval", str(shipped[0])]) == 2
        assert_one_line_error(capsys, "inside the installed mnistlab package")
        assert (shipped[0] / "summary.json").read_bytes() == before


# ---------------------------------------------------------------------------------------- locks


HOLD = """
import sys, time
from mnistlab.runs import owner
with owner.session():
    owner.claim(sys.argv[1], sys.argv[2])
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, idx_dir, capsys):
    folder = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), "run"], env=env, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(
            ConfigError, match=rf"being written by another mnistlab process \(PID {holder.pid}\)"
        ):
            owner.claim(folder, "run")
        run = ["-q", "run", "--preset", str(REPO / "tests/presets/tiny.toml"), "--out", str(folder)]
        assert cli.main([*run, "--data-dir", str(idx_dir), "--no-report", "--no-progress"]) == 2
        assert_one_line_error(capsys, f"PID {holder.pid}")
        assert not (folder / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    owner.claim(folder, "run")  # its process is gone: the kernel dropped its lock


def test_a_stale_lock_of_an_exited_process_is_taken_over(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mnistlab")
    folder = tmp_path / "run"
    folder.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (folder / owner.LOCK).write_text("")
    (folder / owner.PID_FILE).write_text(gone.stdout)
    with owner.session():
        owner.claim(folder, "train")
        assert (folder / owner.PID_FILE).read_text().strip() == str(os.getpid())
    assert f"took over the lock of process {gone.stdout.strip()}" in caplog.text
    assert not (folder / owner.PID_FILE).exists()  # let go with the session


# ------------------------------------------------------------- study stages, caches, pack, tasks


def test_a_study_stage_folder_without_a_manifest_keeps_the_users_files(tmp_path):
    """The labels stage starts over in RUN/label_efficiency/ (no manifest of its own): the study's
    manifest says which files there are mnistlab's, and only those go."""
    study = tmp_path / "study"
    with owner.session():
        owner.claim(study, "run")
        (study / "label_efficiency" / "figures").mkdir(parents=True)
        (study / "label_efficiency" / "summary.json").write_text("{}")
        (study / "label_efficiency" / "figures" / "curve.png").write_text("png")
    files = {"label_efficiency/notes.txt": "mine", "label_efficiency/figures/mine.png": "my figure"}
    for name, text in files.items():
        (study / name).write_text(text)
    with owner.session():
        owner.claim(study, "run")
        removed = owner.clear(study / "label_efficiency")
    assert sorted(removed) == ["figures/curve.png", "summary.json"]
    assert_kept(study, files)
    assert "label_efficiency/summary.json" not in owner.manifest(study)["files"]


def test_the_latent_stage_starts_over_keeping_the_users_files(ae_run, tmp_path):
    from types import SimpleNamespace

    from mnistlab.study.stages import latent as latent_stage

    study = tmp_path / "study"
    copy_run(ae_run, study / "ae")
    plan = SimpleNamespace(
        tsne_early_iter=10, tsne_iter=10, latent_maps=(), latent_samples=20, latent_score=False
    )
    ctx = SimpleNamespace(plan=plan, out=study, encoder="ae", device="cpu", progress=False)
    with owner.session():
        latent_stage.run(ctx, resume=False)
    stale = study / "ae" / "latent" / "samples_stale.png"  # what an earlier attempt of the stage wrote
    with owner.session():
        owner.claim(study / "ae" / "latent", "latent")
        stale.write_text("old")
    files = user_files(study / "ae" / "latent")
    with owner.session():
        latent_stage.run(ctx, resume=False)
    assert_kept(study / "ae" / "latent", files)
    assert not stale.exists() and (study / "ae" / "latent" / "summary.json").is_file()


def test_the_best_trial_is_copied_in_beside_the_users_files(ae_run, tmp_path):
    from mnistlab.study import registry

    search = tmp_path / "study" / "search"
    copy_run(ae_run, search / "trials" / "t0")
    (search / "search.json").write_text(json.dumps({"objective": "val_loss"}))
    (search / "results.csv").write_text("trial,status,val_loss\nt0,finished,0.1\n")
    target = tmp_path / "study" / "ae"
    with owner.session():  # an earlier attempt's copy, then the user's notes in it
        registry._copy_best_trial(search, target)
    files = user_files(target)
    with owner.session():  # a file that attempt wrote
        owner.claim(target, "train")
        (target / "stale.txt").write_text("")
    with owner.session():
        registry._copy_best_trial(search, target)
    assert_kept(target, files)
    assert not (target / "stale.txt").exists()  # the earlier copy's files are replaced, the user's stay
    assert rundir.read_summary(target)["search_trial"] == "t0"
    assert not [p for p in target.parent.iterdir() if "copying" in p.name]
    # A file of the user's where the trial has one: refused before anything moves.
    (target / "command.txt").unlink()
    (target / "command.txt").write_text("my command")
    doc = owner.manifest(target)
    (target / owner.MANIFEST).write_text(
        json.dumps({**doc, "files": [f for f in doc["files"] if f != "command.txt"]})
    )
    with owner.session(), pytest.raises(ConfigError, match="command.txt would replace"):
        registry._copy_best_trial(search, target)
    assert (target / "command.txt").read_text() == "my command"


def test_the_explorer_cache_is_claimed_before_it_is_written(ae_run, tmp_path, caplog):
    import numpy as np

    from mnistlab.web import cache

    state = cache.StartState(
        np.zeros((2, 28, 28), np.uint8),
        np.zeros(2, np.int64),
        np.zeros((2, 2), np.float32),
        np.zeros((3, 2), np.float32),
        cache.Projection(np.zeros(2), np.eye(2)),
        {},
        {},
        cached=False,
    )
    run = copy_run(ae_run, tmp_path / "run")
    cache._write(run / cache.FILE, "key", state)  # new in a run of mnistlab's: written and listed
    assert (run / cache.FILE).stat().st_size > 100 and cache.FILE in owner.owned_files(run)
    mine = tmp_path / "mine"  # a folder of the user's with a file of that name: left alone
    mine.mkdir()
    (mine / cache.FILE).write_text("mine")
    (mine / "config.toml").write_text("[my]\nsettings = 1\n")  # not a run's config: not adopted
    with caplog.at_level(logging.WARNING, logger="mnistlab"):
        cache._write(mine / cache.FILE, "key", state)
    assert (mine / cache.FILE).read_text() == "mine" and "not written" in caplog.text
    package = Path(owner.__file__).resolve().parents[1] / "_pretrained" / "ae" / cache.FILE
    before = package.stat().st_mtime_ns if package.exists() else None
    cache._write(package, "key", state)  # the installed package: never written
    assert (package.stat().st_mtime_ns if package.exists() else None) == before


def test_compare_claims_the_figures_and_cache_it_writes_into_a_run(ae_run, tmp_path):
    import numpy as np

    from mnistlab.bench import compare as bench
    from mnistlab.bench import compute

    run = copy_run(ae_run, tmp_path / "run")
    comp = compute.Computer(run, "ae", frozenset(), compute.BenchConfig(), compute.Shared())
    digits = np.zeros((10, 28, 28), np.uint8)
    assert comp.grid("reconstructions", digits, "t") is not None  # new: drawn, listed in the run's manifest
    assert "figures/compare_reconstructions.png" in owner.owned_files(run)
    assert not (run / "figures" / owner.MANIFEST).exists()  # the run's figures are the run's
    (run / "figures" / "compare_denoising.png").write_text("mine")
    assert comp.grid("denoising", digits, "t") is None and "not drawn" in comp.notes[-1]
    assert (run / "figures" / "compare_denoising.png").read_text() == "mine"
    (run / "compare.json").write_text('{"my": "notes"}')  # the user's file of that name
    entry = bench.collect(run, "ae", bench.BenchConfig(samples=10, probe_train=40), compute=True)
    assert (run / "compare.json").read_text() == '{"my": "notes"}'
    assert any("compare.json not written" in n for n in entry.notes)


def test_pack_refuses_an_empty_out(ae_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["-q", "pretrained", "pack", str(ae_run), "--out", ""]) == 2
    assert_one_line_error(capsys, "--out is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_config_edited_to_another_task_is_refused_naming_both(ae_run, tmp_path, capsys):
    from mnistlab import tasks

    run = copy_run(ae_run, tmp_path / "run")
    config = run / "config.toml"
    config.write_text(config.read_text().replace('task = "ae"', 'task = "vae"'))
    with pytest.raises(ConfigError, match="names task 'vae' but summary.json records a 'ae' run"):
        tasks.load_run(run)
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 2
    assert_one_line_error(capsys, "'vae'")


def test_a_run_whose_figures_link_out_of_it_is_refused_and_the_linked_files_kept(ae_run, tmp_path, capsys):
    """eval writes RUN/figures/*.png: through a link to a folder of the user's it would overwrite
    theirs (hostile pass), so a claimed folder with a folder link leading out of it is refused."""
    import shutil

    run = copy_run(ae_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    files = {"loss_curves.png": "my curve", "reconstructions.png": "my digits"}
    elsewhere.mkdir()
    for name, text in files.items():
        (elsewhere / name).write_text(text)
    shutil.rmtree(run / "figures")
    (run / "figures").symlink_to(elsewhere)
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 2
    assert_one_line_error(capsys, "figures is a link to")
    assert_kept(elsewhere, files)


def test_a_manifest_that_is_no_file_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / owner.MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        owner.claim(folder, "train")


def test_pack_refuses_an_out_that_is_a_file_or_a_device(ae_run, tmp_path):
    """`pack --out /dev/null` wrote a bundle to /dev/null-bundle (hostile pass): refused now."""
    (tmp_path / "file").write_text("mine")
    for out in (tmp_path / "file", Path("/dev/null")):
        with pytest.raises(ConfigError, match="is not a folder"):
            pretrained_pack.pack({"ae": ae_run}, out, compare=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
