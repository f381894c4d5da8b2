"""`mnistlab compare` (the models bench): runs of different tasks in one table, each measure in the
rows of the role it needs; a measure missing from a summary is computed from the checkpoint and
cached (the second compare loads no checkpoint); a study folder stands for its finished stages; a
folder that is not a run is a one-line error; the HTML is self-contained. Tiny runs (300 training
images, 1 epoch) and 200 scored samples keep it to seconds."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnistlab import cli, tasks
from mnistlab.bench import compare as bench
from mnistlab.bench import table as bench_table
from mnistlab.latent import sample as latent_sample
from mnistlab.plots.content import RunFolder
from mnistlab.report.bench_section import bench_section
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["data.train_limit=300", "data.test_limit=100", "train.epochs=1", "train.device=cpu"]
EXTRA = {"gan": ["gan.eval_samples=0", "gan.final_samples=200", "gan.grid_epochs=1"]}
SAMPLES = ["--samples", "200"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished tiny runs of three tasks with different roles (shared: tests that change one copy it)."""
    root = tmp_path_factory.mktemp("bench")
    out = {}
    for task in ("ae", "dae", "gan"):
        out[task] = root / task
        tasks.train(task, preset="quick", overrides=TINY + EXTRA.get(task, []), out=out[task], progress=False)
    return out


def _copy(runs: dict[str, Path], tmp_path: Path, *names: str) -> list[Path]:
    """Copies of the shared runs, without what an earlier compare cached in them."""
    copies = []
    for name in names:
        shutil.copytree(runs[name], tmp_path / name)
        (tmp_path / name / bench.CACHE_FILE).unlink(missing_ok=True)
        copies.append(tmp_path / name)
    return copies


def _edit_summary(run: Path, drop: list[str]) -> dict:
    """Remove `drop` from the run's summary.json; return the summary as it was."""
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in summary.items() if k not in drop}))
    return summary


def _csv(out: Path) -> dict[str, dict[str, str]]:
    with (out / "compare.csv").open() as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_each_measure_sits_in_the_rows_of_its_role(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        cli.main(
            ["compare", str(runs["ae"]), str(runs["dae"]), str(runs["gan"]), *SAMPLES, "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # The terminal shows the headline columns with their better way; the files hold the whole table.
    assert printed.startswith("model") and "FID-MNIST ↓" in printed and "test PSNR (dB) ↑" in printed
    assert "test MSE" not in printed and "nearest train image" not in printed
    assert "* the best of its column" in printed and "the full table:" in printed
    rows = _csv(out)
    ae, dae, gan = rows["ae"], rows["dae"], rows["gan"]
    # decoders: reconstruction; encoders: probe and k-NN; the denoiser alone: the PSNR gain
    for r in (ae, dae):
        assert all(r[k] != "" for k in ("mse", "psnr", "ssim", "probe_acc", "knn_acc")), r
    assert ae["denoise_gain"] == "" and dae["denoise_gain"] != ""
    summary = json.loads((runs["dae"] / "summary.json").read_text())
    at_1 = next(r for r in summary["denoising"] if r["sigma"] == 1.0)
    assert float(dae["denoise_gain"]) == pytest.approx(at_1["dae"]["psnr"] - at_1["noisy"]["psnr"], abs=1e-5)
    # a generator without encoder or decoder: FID and the rest, no reconstruction, probe or gain
    assert all(gan[k] == "" for k in ("mse", "psnr", "ssim", "denoise_gain", "probe_acc", "knn_acc"))
    assert all(gan[k] != "" for k in ("fid", "precision", "recall", "rarest", "commonest", "nn_train"))
    assert gan["sampler"] == "prior" and float(gan["fid"]) == pytest.approx(
        json.loads((runs["gan"] / "summary.json").read_text())["test"]["fid_mnist"]
    )  # the summary's own score
    # each sampler of an autoencoder is a row of its own; the uniform box only on request
    assert rows["ae (gaussian)"]["sampler"] == "gaussian" and rows["ae"]["sampler"] == "gmm"
    assert rows["ae (gaussian)"]["mse"] == "" and rows["ae (gaussian)"]["fid"] != ""
    assert not any(r["sampler"] == "uniform" for r in rows.values())
    # every run: parameters and training speed
    for r in (ae, dae, gan):
        assert int(r["params"]) > 1000 and float(r["train_seconds"]) > 0 and float(r["images_per_s"]) > 0
    assert (runs["ae"] / bench.CACHE_FILE).is_file()


def test_the_html_is_self_contained(runs, tmp_path):
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(runs["ae"]), str(runs["gan"]), *SAMPLES, "--out", str(out)]) == 0
    html = (out / "compare.html").read_text()
    images = re.findall(r'src="([^"]*)"', html)
    assert len(images) >= 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert not re.search(r"(src|href)=\"(?!data:)", html)
    md = (out / "compare.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link  # the Markdown links the run folders' figures


def test_a_measure_missing_from_the_summary_is_computed_and_cached(runs, tmp_path, monkeypatch):
    ae, gan = _copy(runs, tmp_path, "ae", "gan")
    before = _edit_summary(ae, ["test", "train_seconds"])
    gan_before = _edit_summary(gan, ["test"])
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(ae), str(gan), *SAMPLES, "--out", str(out)]) == 0
    rows = _csv(out)
    for key in ("mse", "psnr", "ssim"):  # recomputed from the checkpoint: the numbers training measured
        assert float(rows["ae"][key]) == pytest.approx(before["test"][key], rel=1e-4)
    assert float(rows["ae"]["train_seconds"]) > 0  # from metrics.jsonl
    assert float(rows["gan"]["fid"]) > 0 and rows["gan"]["n_samples"] == "200"
    cache = json.loads((gan / bench.CACHE_FILE).read_text())
    assert cache["checkpoint_sha256"] == gan_before["checkpoint_sha256"]
    # The second compare reads files only: no run is loaded, the numbers are the same.
    monkeypatch.setattr(tasks, "load_run", lambda *a, **k: pytest.fail("a checkpoint was loaded again"))
    out2 = tmp_path / "cmp2"
    assert cli.main(["compare", str(ae), str(gan), *SAMPLES, "--out", str(out2)]) == 0
    assert _csv(out2) == rows


def test_another_checkpoint_invalidates_the_cache(runs, tmp_path):
    (ae,) = _copy(runs, tmp_path, "ae")
    _edit_summary(ae, ["test"])
    cfg = bench.BenchConfig(samples=200)
    first = bench.collect(ae, "ae", cfg, compute=True)
    path = ae / bench.CACHE_FILE
    cache = json.loads(path.read_text())
    cache["checkpoint_sha256"] = "0" * 64
    cache["values"]["mse"] = 123.0
    path.write_text(json.dumps(cache))
    again = bench.collect(ae, "ae", cfg, compute=True)
    assert again.values["mse"] == pytest.approx(first.values["mse"]) and "test MSE" in again.computed


def test_the_denoising_gain_is_computed_from_the_checkpoint(runs, tmp_path):
    (dae,) = _copy(runs, tmp_path, "dae")
    summary = _edit_summary(dae, ["denoising"])  # the summary as training wrote it
    assert "denoising" not in json.loads((dae / "summary.json").read_text())
    entry = bench.collect(dae, "dae", bench.BenchConfig(samples=200), compute=True)
    assert entry.values["denoise_gain"] is not None, entry.notes
    expected = bench.denoise_gain_from_table(summary["denoising"], "dae")  # what training measured
    assert entry.values["denoise_gain"] == pytest.approx(expected, abs=1e-4)
    assert "PSNR gain at sigma 1 (dB)" in entry.computed


def test_a_study_folder_stands_for_its_finished_stages(runs, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    _copy(runs, study, "ae", "gan")
    stages = [
        {"name": "ae", "folder": "ae", "status": "done"},
        {"name": "probe", "folder": "ae/probe", "status": "done"},
        {"name": "gan", "folder": "gan", "status": "done"},
        {"name": "dae", "folder": "dae", "status": "pending"},
    ]
    _copy(runs, study, "dae")
    (study / "run.json").write_text(json.dumps({"kind": "mnistlab-run", "stages": stages}))
    entries, notes = bench.compare([study], bench.BenchConfig(samples=200), compute=False)
    assert [e.label for e in entries] == ["study/ae", "study/gan"]
    assert any("study/dae" in n and "not finished" in n for n in notes)
    # The report's section reads files only: nothing is loaded, what no file records shows '-'.
    state = json.loads((study / "run.json").read_text())
    sec = bench_section(RunFolder(study, state, {s.name: s.roles for s in tasks.all_tasks()}))
    (table,) = sec.tables
    assert [r[0] for r in table.rows][:1] == ["ae"] and "gan" in [r[0] for r in table.rows]
    ae_row = dict(zip(table.columns, table.rows[0]))
    assert ae_row["test MSE ↓"] not in ("", "-") and ae_row["frozen probe ↑"] == "-"
    assert any("mnistlab compare" in n for n in sec.notes)
    gan_row = dict(zip(table.columns, next(r for r in table.rows if r[0] == "gan")))
    assert gan_row["test MSE ↓"] == "" and gan_row["FID-MNIST ↓"] not in ("", "-")
    # the GAN's final samples under its sampler's name, as compare and the GAN's section call it
    assert gan_row["sampler"] == "prior"


@pytest.mark.parametrize("kind", ["empty", "file", "missing", "unfinished"])
def test_a_folder_that_is_not_a_run_is_a_one_line_error(runs, tmp_path, capsys, kind):
    target = tmp_path / "x"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("hello")
    elif kind == "unfinished":
        (target,) = _copy(runs, tmp_path, "ae")
        _edit_summary(target, ["status"])
    assert cli.main(["compare", str(runs["gan"]), str(target), *SAMPLES, "--out", str(tmp_path / "o")]) == 2
    err = assert_one_line_error(capsys, str(target))
    assert err.startswith("mnistlab: error: "), err
    assert not (tmp_path / "o").exists()


def test_the_table_leaves_blank_what_does_not_apply_and_marks_what_is_unknown():
    enc = bench.Entry("enc", Path("enc"), "x", frozenset({"encoder", "decoder"}))
    enc.values = bench.summary_measures({"test": {"mse": 0.01, "psnr": 20.0, "ssim": 0.9}}, enc.roles)
    gen = bench.Entry("gen", Path("gen"), "y", frozenset({"generator"}))
    gen.values = bench.summary_measures({"train_seconds": 3.0}, gen.roles)
    gen.samplers = {"prior": bench.score_measures({"fid_mnist": 12.5, "class_hist": [0.05] * 5 + [0.15] * 5})}
    rows = bench_table.rows([enc, gen])
    assert "fid" not in rows[0] and "mse" not in rows[1] and rows[1]["rarest"] == 0.05
    headers, cells = bench_table.table(rows)
    cell = {name: dict(zip(headers, row)) for name, row in zip(("enc", "gen"), cells)}
    assert cell["enc"]["test MSE ↓"] == "0.01" and cell["enc"]["frozen probe ↑"] == "-"  # applies, unknown
    assert cell["gen"]["test MSE ↓"] == "" and cell["gen"]["FID-MNIST ↓"] == "12.5"  # does not apply; known
    assert "PSNR gain at sigma 1 (dB)" not in headers  # no denoiser among the rows: no column
    assert bench_table.csv_text(rows).splitlines()[0].startswith("model,task,sampler,mse,psnr,ssim,probe_acc")


def test_compare_scores_every_generator_at_one_count(runs, tmp_path):
    # The GAN's summary holds scores of 200 samples; asked for 100, compare scores it again at 100, like
    # the autoencoder's samplers, so every FID in the table comes from the same count.
    ae, gan = _copy(runs, tmp_path, "ae", "gan")
    own = json.loads((gan / "summary.json").read_text())["test"]
    assert own["n_samples"] == 200
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(ae), str(gan), "--samples", "100", "--out", str(out)]) == 0
    rows = _csv(out)
    assert {r["n_samples"] for r in rows.values() if r["sampler"]} == {"100"}
    assert float(rows["gan"]["fid"]) != pytest.approx(own["fid_mnist"])
    assert "different sample counts" not in (out / "compare.md").read_text()


def _scored(label: str, fid: float, precision: float, n: int = 1000) -> bench.Entry:
    entry = bench.Entry(label, Path(label), "gan", frozenset({"generator"}))
    entry.values = bench.summary_measures({}, entry.roles)
    hist = [0.1] * 10
    entry.samplers = {
        "prior": bench.score_measures(
            {"fid_mnist": fid, "precision": precision, "recall": 0.5, "class_hist": hist, "n_samples": n}
        )
    }
    return entry


def test_the_best_value_of_each_column_is_marked():
    rows = bench_table.rows([_scored("a", 9.0, 0.7), _scored("b", 4.0, 0.6), _scored("c", 4.0, 0.5)])
    headers, cells = bench_table.table(rows)
    best = bench_table.best(rows)
    col = {h: j for j, h in enumerate(headers)}
    assert {i for i, j in best if j == col["FID-MNIST ↓"]} == {1, 2}  # lower is better; ties both
    assert {i for i, j in best if j == col["precision ↑"]} == {0}  # higher is better
    assert {i for i, j in best if j == col["recall ↑"]} == {0, 1, 2}  # a tie: each
    assert not [j for _, j in best if j == col["nearest train image (L2)"]]  # no better side: no mark
    md = bench_table.markdown(headers, cells, best)
    assert "| **4** |" in md and "| 9 |" in md and "| **0.7** |" in md
    text = bench_table.terminal(rows)
    assert "4 *" in text and "9 *" not in text and "0.7 *" in text
    assert "FID-MNIST ↓" in text and "(-)" in bench_table.terminal(rows, arrows=False)
    # Scores of different sample counts are not ranked: FID-MNIST grows as the count shrinks.
    mixed = bench_table.rows([_scored("a", 9.0, 0.7, 1000), _scored("b", 4.0, 0.6, 64)])
    assert not bench_table.best(mixed)


def _fake_score(n: int):
    def score_file(path, *args, **kwargs):
        return {"n_samples": n, "fid_mnist": 1.0, "precision": 0.5, "recall": 0.5, "reference": "r"}

    return score_file


@pytest.mark.parametrize("n,cautioned", [(64, True), (999, True), (1000, False), (5000, False)])
def test_score_cautions_below_a_thousand_samples(tmp_path, monkeypatch, capsys, n, cautioned):
    path = tmp_path / "s.npy"
    np.save(path, np.zeros((n, 28, 28), np.uint8))
    monkeypatch.setattr(latent_sample, "score_file", _fake_score(n))  # the caution, not the scoring
    assert cli.main(["score", str(path), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "lower FID-MNIST is better" in out and "higher precision" in out
    assert ("caution:" in err and f"{n:,} samples is too few" in err) == cautioned
    assert ("caution" in out + err) == cautioned
