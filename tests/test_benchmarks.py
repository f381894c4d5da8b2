"""The benchmark suite's collection logic on the quickest benchmark at tiny sizes, so it cannot rot.
No timing is asserted: this machine is shared and the sizes are far too small to mean anything."""

from __future__ import annotations

import pytest
from benchmarks.common import result
from benchmarks.suite import ENTRIES, Entry, Outcome, available, run_entry, select, table

TINY_PROBE = Entry(
    "probe",
    "benchmarks.probe_speed",
    args=("--images", "128", "--test-images", "50", "--epochs", "1", "--repeats", "1", "--threads", "1"),
    target=1.0,
)


def test_runs_a_benchmark_in_its_own_process_and_reads_its_json():
    o = run_entry(TINY_PROBE)
    assert o.status == "ok", o.message
    assert {"baseline", "mnistlab", "ratio", "unit"} <= o.data.keys()
    assert o.data["baseline"] > 0 and o.data["mnistlab"] > 0
    assert o.value == o.data["ratio"]
    assert o.verdict in ("pass", "FAIL")
    assert o.peak_rss_mib is not None and o.peak_rss_mib > 50  # the child's own RSS: torch alone is more
    assert "probe" in table([o])


def test_missing_module_is_not_available_and_a_crash_is_an_error():
    missing = run_entry(Entry("later", "benchmarks.no_such_benchmark"))
    assert missing.status == "not available" and missing.verdict == "not available"
    broken = run_entry(Entry("broken", "json.tool", args=("--no-such-flag",)))  # exits 2 at once
    assert broken.status == "error"
    assert "exit 2" in broken.message
    text = table([missing, broken])
    assert "not available" in text and "error" in text


def test_verdicts_follow_the_target_direction():
    higher = Entry("x", "m", target=2.5)
    lower = Entry("y", "m", metric="peak_rss_mib", target=2048, lower_is_better=True)
    assert Outcome(higher, "ok", {"ratio": 3.0}).verdict == "pass"
    assert Outcome(higher, "ok", {"ratio": 1.2}).verdict == "FAIL"
    assert Outcome(lower, "ok", {"peak_rss_mib": 900}).verdict == "pass"
    assert Outcome(lower, "ok", {"peak_rss_mib": 3000}).verdict == "FAIL"
    assert Outcome(Entry("z", "m"), "ok", {"ratio": 3.0}).verdict == "-"  # no target


def test_entries_exist_and_selection_checks_names():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
    for name in ("ae_epoch", "gan_epoch", "probe", "tsne"):
        assert available(select([name])[0].module)
    with pytest.raises(ValueError, match="unknown benchmark"):
        select(["ae_epoch", "nope"])


def test_result_fraction_of_peak():
    r = result("ae", baseline=1000.0, mnistlab=2000.0, unit="images/s", flops_per_item=1e7, peak_gflops=100.0)
    assert r["ratio"] == 2.0
    assert r["fraction_of_peak"] == pytest.approx(0.2)  # 2000 images/s x 10 MFLOP = 20 of 100 GFLOP/s
    assert result("t", 1.0, 2.0, "points/s")["fraction_of_peak"] is None


def test_study_headline_reads_each_stage_summary_by_what_it_holds(tmp_path):
    import json

    from benchmarks.study import headline

    summaries = {
        "ae": {"test": {"mse": 0.0096}},
        "dae": {"denoising": [{"sigma": 0.5, "dae": {"psnr": 20.0}}, {"sigma": 1.0, "dae": {"psnr": 16.4}}]},
        "ae/probe": {"linear_probe": {"test_acc": 0.95}, "finetune": {"test_acc": 0.993}},
        "ae/latent": {"generation": {"rows": {"gmm": {"fid_mnist": 9.1}}}},
        "gan": {"test": {"fid_mnist": 5.3, "class_hist": [0.08, 0.12, 0.1]}},
    }
    for folder, s in summaries.items():
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "summary.json").write_text(json.dumps(s))
    names = {
        "ae": "ae",
        "dae": "dae",
        "ae/probe": "probe",
        "ae/latent": "latent",
        "gan": "gan",
        "cgan": "cgan",
    }
    state = {"stages": [{"name": n, "folder": f} for f, n in names.items()]}  # cgan: not finished, no summary
    assert headline(tmp_path, state) == {
        "ae: test MSE": 0.0096,
        "dae: PSNR at sigma 1.0": 16.4,
        "probe: frozen probe acc": 0.95,
        "probe: fine-tuned acc": 0.993,
        "latent: gmm sampler FID-MNIST": 9.1,
        "gan: FID-MNIST": 5.3,
        "gan: rarest digit share": 0.08,
        "gan: commonest digit share": 0.12,
    }
