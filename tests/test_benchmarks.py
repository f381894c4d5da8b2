"""The benchmark suite's collection logic on the quickest benchmark at tiny sizes, so it cannot rot.
No timing is asserted: this machine is shared and the sizes are far too small to mean anything."""

from __future__ import annotations

import pytest
from benchmarks import stages
from benchmarks.common import bf16_units, result
from benchmarks.stages import chain_lengths, critical_chain, list_schedule
from benchmarks.suite import ENTRIES, Entry, Outcome, available, run_entry, select, table

from mnistlab.study import registry

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


# ------------------------------------------------------------------ benchmarks/stages.py (issue 36)


def test_stages_quick_has_a_row_per_training_stage_and_a_real_critical_chain(capsys):
    out = stages.main(["--quick", "--threads", "1"])
    printed = capsys.readouterr().out
    assert printed.startswith("host: ")  # the host comes first
    assert "fp32 matmul peak" in printed and "budget of the default study" in printed
    planned = set(out["reads"])
    assert {"ae", "dae", "vae", "gan", "cgan", "flow", "semi", "probe"} <= planned  # the default study
    timed = {r["stage"] for r in out["rows"]}
    assert timed | set(out["untimed"]) == planned and not timed & set(out["untimed"])
    assert timed == planned & set(stages.BUILDERS)  # every stage with a training step has its row
    for r in out["rows"]:
        assert r["images_per_s"] > 0 and r["mflop_per_image"] > 0 and r["projected_s"] > 0, r
        assert r["precision"] in ("fp32", "bf16")
        assert f"\n{r['part']} " in printed  # a line of the printed table
    chain = out["critical_chain"]
    assert chain and set(chain) <= set(registry.names())
    for before, after in zip(chain, chain[1:]):
        assert before in out["reads"][after]  # each stage of the chain reads the one before it
    # Every figure is rounded to 0.1 s, the total and each stage on its own: up to 0.05 s each apart.
    assert out["projected_s"] >= sum(out["stage_seconds"][n] for n in chain) - 0.05 * (len(chain) + 1)
    assert out["budget_s"] == pytest.approx(1800 * 158 / out["host"]["fp32_2_threads"], abs=0.051)  # rounded


def test_list_schedule_waits_for_what_a_stage_reads_and_for_a_free_worker():
    reads = {"a": [], "b": ["a"], "c": [], "d": ["b", "c"]}
    secs = {"a": 10.0, "b": 30.0, "c": 25.0, "d": 5.0}
    assert critical_chain(list(reads), reads, secs) == ["a", "b", "d"]  # 45 s against c -> d's 30
    assert chain_lengths(list(reads), reads, secs)["a"] == 45.0
    two = {n: (s, e) for n, s, e in list_schedule(["a", "c", "b", "d"], reads, secs, 2)}
    assert two == {"a": (0, 10), "c": (0, 25), "b": (10, 40), "d": (40, 45)}
    one = {n: (s, e) for n, s, e in list_schedule(["c", "a", "b", "d"], reads, secs, 1)}
    assert one["d"] == (65, 70) and one["c"] == (0, 25)  # one after another, in order, d last


def test_bf16_units_follow_the_flags_and_the_isa_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert bf16_units(["avx2", "fma"]) == "no"
    assert bf16_units(["avx2", "avx512f", "avx512_bf16"]) == "yes"
    assert bf16_units(["amx_bf16"]) == "yes"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bf16_units(["avx2", "avx512f", "avx512_bf16"]) == "hidden"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert bf16_units(["avx512_bf16"]) == "yes"
