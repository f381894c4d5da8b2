"""benchmarks/gan_sweep.py: config files, the result table, and (slow) a real sweep of tiny configs in
which one config fails and another times out without stopping the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import gan_sweep

TINY = [
    "data.train_limit=24",
    "data.test_limit=6",
    "train.batch_size=15",
    "train.epochs=1",
    "gan.grid_epochs=1",
    "gan.grid_size=2",
    "gan.eval_samples=0",
    "gan.final_samples=0",
]


def test_read_configs_and_reject_bad_tables(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text('[a]\nset = ["train.lr=1e-3"]\n[b]\npreset = "quick"\nnote = "x"\n')
    assert gan_sweep.read_configs(good) == {"a": ("seed", ["train.lr=1e-3"]), "b": ("quick", [])}
    bad = tmp_path / "bad.toml"
    bad.write_text('[a]\nsets = ["x=1"]\n')
    with pytest.raises(SystemExit, match="only preset, set and note"):
        gan_sweep.read_configs(bad)
    bad.write_text('[a]\nset = ["no-equals"]\n')
    with pytest.raises(SystemExit, match="section.key=value"):
        gan_sweep.read_configs(bad)


def test_shipped_candidates_are_valid_configs():
    from mnistlab.tasks import load_experiment

    configs = gan_sweep.read_configs(gan_sweep.HERE / "gan_sweep_configs.toml")
    assert "seed" in configs and len(configs) >= 6
    for preset, overrides in configs.values():
        load_experiment("gan", preset, overrides)  # raises on a typo in any override


def test_command_resumes_an_interrupted_run(tmp_path):
    job = gan_sweep.Job("a", "seed", ["train.lr=1e-3"], tmp_path / "a")
    cmd = gan_sweep.command(job, "cpu", ["train.epochs=1"])
    assert cmd[-4:] == ["--set", "train.lr=1e-3", "--set", "train.epochs=1"] and "--resume" not in cmd
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.toml").write_text("")
    assert gan_sweep.command(job, "cpu", [])[-1] == "--resume"


def test_result_rows_and_table(tmp_path):
    ok = gan_sweep.Job("good", "seed", ["x=1"], tmp_path / "good")
    ok.out.mkdir()
    summary = {
        "status": "finished",
        "epochs": 15,
        "collapse_warnings": ["w"],
        "test": {"fid_mnist": 3.5, "precision": 0.8, "recall": 0.7, "class_hist": [0.1] * 8 + [0.05, 0.15]},
    }
    (ok.out / "summary.json").write_text(json.dumps(summary))
    ok.returncode, ok.seconds = 0, 12.0
    bad = gan_sweep.Job("bad", "seed", [], tmp_path / "bad")
    bad.returncode = 2
    bad.log.write_text("mnistlab: error: unknown key 'gan.nope'\n")
    rows = [gan_sweep.result_row(j) for j in (bad, ok)]
    gan_sweep.add_targets(rows, baseline="good")
    assert rows[1]["class_min_share"] == pytest.approx(0.05) and rows[1]["class_max_share"] == pytest.approx(
        0.15
    )
    assert rows[1]["collapse_warnings"] == 1 and rows[1]["fid_mnist"] == 3.5
    assert rows[0]["status"] == "failed (exit 2)" and "unknown key" in rows[0]["error"]
    table = gan_sweep.markdown(rows).splitlines()
    assert table[2].startswith("| good | finished | 3.50 | 1.0 | 5.0% | 15.0% | yes | 0.800 | 0.700 | 1 |")
    assert table[3].startswith("| bad | failed (exit 2) | - | - |")
    assert rows[1]["all_digits_5_to_15"] and rows[0]["all_digits_5_to_15"] is None


@pytest.mark.slow
def test_sweep_runs_tiny_configs_and_survives_failures(tmp_path):
    configs = tmp_path / "configs.toml"
    configs.write_text(
        '[one]\nset = ["gan.loss=bce_logits", "train.lr=2e-4", "gan.d_lr=2e-4"]\n'
        '[two]\nset = ["gan.loss=bce_logits", "train.lr=1e-4", "gan.d_lr=4e-4", "gan.g_ema=0.9"]\n'
        '[typo]\nset = ["gan.nope=1"]\n'
    )
    out = tmp_path / "sweep"
    args = [
        "--configs",
        str(configs),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--device",
        "cpu",
        "--timeout",
        "600",
    ]
    code = gan_sweep.main(args + [f"--common-set={s}" for s in TINY])
    assert code == 1  # one config failed
    rows = {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["results"]}
    assert rows["one"]["status"] == rows["two"]["status"] == "finished"
    assert rows["typo"]["status"].startswith("failed") and "gan.nope" in rows["typo"]["error"]
    assert (out / "sweep.md").read_text().count("| finished |") == 2
    assert Path(rows["one"]["run_dir"], "summary.json").exists()
    # Again: finished configs are read back, not rerun; a timeout is recorded, the others still run.
    code = gan_sweep.main(args[:-1] + ["0.5", "--only", "one,typo"] + [f"--common-set={s}" for s in TINY])
    rows = {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["results"]}
    assert rows["one"]["status"] == "finished" and rows["typo"]["status"] == "timed out"
