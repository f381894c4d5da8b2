"""`mnistlab run`: every stage into one run folder with the agreed layout, run.json bookkeeping, resume
after an interrupted stage (done stages skipped, the training stage continued from its checkpoint),
and one-line errors for bad input. The tiny preset is tests/presets/tiny.toml."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import read_jsonl
from mnistlab.report.build import write_report
from mnistlab.study import registry
from mnistlab.study import run as pipeline
from mnistlab.study.context import StudyContext, split_overrides
from mnistlab.study.plan import RunPlan
from mnistlab.training.denoise import DenoisingTask

from .conftest import TINY_RUN_PRESET

PRESET = str(TINY_RUN_PRESET)
LAYOUT = [
    "run.json",
    "search/results.csv",
    "search/best.toml",
    "ae/summary.json",
    "ae/config.toml",
    "ae/checkpoints/last.safetensors",
    "ae/probe/summary.json",
    "ae/latent/summary.json",
    "ae/latent/map_tsne.csv",
    "dae/summary.json",
    "label_efficiency/summary.json",
    "vae/summary.json",
    "gan/summary.json",
    "report.html",
    "report.md",
]


def test_tiny_run_writes_every_stage_into_one_folder(tiny_study):
    for rel in LAYOUT:
        assert (tiny_study / rel).is_file(), rel
    state = json.loads((tiny_study / "run.json").read_text())
    assert state["status"] == "done" and state["preset"] == PRESET
    assert state["host"]["cores"] >= 1 and "host" in (tiny_study / "report.md").read_text()
    stages = ["search", "ae", "probe", "latent", "dae", "vae", "labels", "gan"]
    assert [s["name"] for s in state["stages"]] == stages
    for s in state["stages"]:
        assert s["status"] == "done" and s["attempts"] == 1 and s["seconds"] >= 0, s
        assert s["started"] <= s["ended"] and s["peak_rss_mb"] > 0
    ae = json.loads((tiny_study / "ae/summary.json").read_text())
    results = (tiny_study / "search/results.csv").read_text().splitlines()
    assert ae["search_trial"] == results[1].split(",")[1]  # the AE is the search's best trial
    dae = json.loads((tiny_study / "dae/summary.json").read_text())
    assert dae["baseline"]["run"] == str(tiny_study / "ae") and "ae" in dae["denoising"][0]
    probe = json.loads((tiny_study / "ae/probe/summary.json").read_text())
    assert "finetune" in probe and [r["labels_per_class"] for r in probe["label_efficiency"]] == ["5", "all"]
    gan = json.loads((tiny_study / "gan/summary.json").read_text())
    assert gan["status"] == "finished" and gan["epochs"] == 2
    vae = json.loads((tiny_study / "vae/summary.json").read_text())  # run.set: from the study's AE
    assert vae["started_from"] == str(tiny_study / "ae") and vae["code_prior_after"]["epoch"] == 2
    codes = json.loads((tiny_study / "label_efficiency/summary.json").read_text())["models"]
    assert list(codes) == ["ae", "dae", "vae"]  # every encoder stage, in stage order
    for m in codes.values():
        assert [r["labels_per_class"] for r in m["rows"]] == ["5", "all"] and m["latent_dim"] > 0
        assert all(0 <= r["low"] <= r["probe"] <= r["high"] <= 1 for r in m["rows"])
    assert codes["ae"]["rows"][-1]["probe"] == probe["linear_probe"]["test_acc"]  # the probe stage's recipe
    assert (tiny_study / "label_efficiency/figures/label_efficiency_by_model.png").is_file()


def test_rerunning_a_finished_run_skips_every_stage(tiny_study, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_study, copy)
    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, name, resume: pytest.fail(f"stage {name} re-ran"))
    args = ["run", "--preset", PRESET, "--set", "run.search=true", "--out", str(copy), "--no-progress"]
    assert cli.main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "done" and printed["report"] == str(copy / "report.html")
    state = json.loads((copy / "run.json").read_text())
    assert all(s["attempts"] == 1 for s in state["stages"])


def test_resume_after_an_interrupted_stage(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    real_stage = pipeline.run_stage

    def short(ctx, name, resume):  # probe, latent and the generators: covered by the end-to-end test
        if name in ("ae", "dae"):
            real_stage(ctx, name, resume)

    monkeypatch.setattr(pipeline, "run_stage", short)
    real_evaluate = DenoisingTask.evaluate
    calls = []

    def evaluate_then_crash(self):
        calls.append(1)
        if len(calls) == 2:  # the DAE's second epoch, after epoch 1 was checkpointed
            raise RuntimeError("power cut")
        return real_evaluate(self)

    monkeypatch.setattr(DenoisingTask, "evaluate", evaluate_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        pipeline.run_study(out, PRESET, progress=False, report=write_report)  # what ran is reported anyway
    state = json.loads((out / "run.json").read_text())
    status = {s["name"]: s["status"] for s in state["stages"]}
    assert status == {
        "ae": "done",
        "probe": "done",  # skipped by `short`
        "latent": "done",
        "dae": "failed",
        "vae": "pending",
        "labels": "pending",
        "gan": "pending",
    }
    assert state["status"] == "failed" and "power cut" in state["stages"][3]["error"]
    assert "The dae stage has not run to the end (status: failed)" in (out / "report.html").read_text()
    first_epoch = read_jsonl(out / "dae/metrics.jsonl")
    assert [r["epoch"] for r in first_epoch] == [1]
    ae_ckpt = (out / "ae/checkpoints/last.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(DenoisingTask, "evaluate", real_evaluate)
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        state = pipeline.run_study(out, PRESET, progress=False, report=None)
    assert state["status"] == "done"
    stages = {s["name"]: s for s in state["stages"]}
    assert stages["ae"]["attempts"] == 1 and stages["dae"]["attempts"] == 2
    assert (out / "ae/checkpoints/last.safetensors").stat().st_mtime_ns == ae_ckpt  # skipped
    assert "stage 1/7: ae (done, skipped)" in caplog.text
    assert "resumed from" in caplog.text  # the DAE continued from its epoch-1 checkpoint
    history = read_jsonl(out / "dae/metrics.jsonl")
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == first_epoch[0]


def test_a_run_folder_refuses_other_folders_and_an_impossible_plan(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files mnistlab did not write \(notes.txt\)"):
        pipeline.run_study(out, PRESET, progress=False)
    # 320 training images: 1000 labels per class cannot be drawn; said before any stage runs.
    fresh = tmp_path / "fresh"
    with pytest.raises(
        ConfigError, match=r"run.labels_per_class: --labels-per-class 1000: the training split"
    ):
        pipeline.run_study(fresh, PRESET, ["run.labels_per_class=1000"], progress=False)
    assert not (fresh / "run.json").exists()


@pytest.mark.parametrize("stages", ["vae,gan", "dae"])
def test_a_stage_that_reads_the_autoencoder_needs_it_in_the_study(tmp_path, monkeypatch, stages):
    """The tiny preset starts its VAE from the study's autoencoder; the DAE compares with it. Said
    before any stage; a VAE that does not start from it runs alone."""
    name = stages.split(",")[0]
    with pytest.raises(
        ConfigError, match=rf"^{name} reads the study's autoencoder stage.*add one to run.tasks \(ae\)"
    ):
        pipeline.run_study(tmp_path / "r", PRESET, [f"run.tasks={stages}"], progress=False)
    assert not (tmp_path / "r").exists()
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, stage, resume: ran.append(stage))
    pipeline.run_study(
        tmp_path / "cold",
        PRESET,
        [f"run.tasks={stages}", "vae.init.from_baseline=false"],
        progress=False,
        report=None,
    ) if name == "vae" else None
    assert ran == (["vae", "gan"] if name == "vae" else [])


def test_a_cgan_started_from_the_gan_reads_the_studys_gan_stage(tmp_path):
    """`cgan.init.from_gan`: the study's gan stage is read (it finishes first, and a change to it
    reruns the cGAN); a study without a gan stage is told so before any stage runs."""
    sets = ["run.tasks=ae,gan,cgan", "cgan.init.from_gan=true"]
    ctx = StudyContext(tmp_path / "r", PRESET, RunPlan(tasks=("ae", "gan", "cgan")), split_overrides(sets))
    stages = registry.planned(ctx)
    assert {s.name: s.reads(ctx) for s in stages}["cgan"] == ("gan",)
    with pytest.raises(ConfigError, match=r"^cgan reads the study's gan stage.*add one to run.tasks \(gan\)"):
        pipeline.run_study(
            tmp_path / "r", PRESET, ["run.tasks=ae,cgan", "cgan.init.from_gan=true"], progress=False
        )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override, rerun",
    [
        ("probe.linear.epochs=1", ["probe", "labels"]),  # the probe and the codes' probes read it
        ("dae.train.epochs=1", ["dae", "labels"]),
        (
            "ae.train.lr=5e-3",
            ["search", "ae", "probe", "latent", "dae", "vae", "labels"],
        ),  # the search trains the AE; the rest read it (the VAE starts from it)
        ("vae.init.from_baseline=false", ["vae", "labels"]),
        ("run.latent_samples=50", ["latent"]),
    ],
)
def test_a_changed_setting_reruns_the_stages_that_read_it_and_keeps_the_rest(
    tiny_study, tmp_path, monkeypatch, override, rerun
):
    copy = tmp_path / "run"
    shutil.copytree(tiny_study, copy)
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, name, resume: ran.append(name))
    state = pipeline.run_study(copy, PRESET, ["run.search=true", override], progress=False, report=None)
    assert ran == rerun and state["status"] == "done"
    assert state["overrides"] == ["run.search=true", override]
    if "ae" in rerun:
        assert not (copy / "ae" / "summary.json").exists()  # removed: it was trained with other settings


def test_overrides_are_split_by_stage():
    per = pipeline.split_overrides(
        ["ae.train.epochs=3", "data.train_limit=500", "run.search=true"], "/d", "cpu"
    )
    assert per["ae"] == ["data.data_dir=/d", "data.train_limit=500", "train.epochs=3", "train.device=cpu"]
    assert per["gan"] == ["data.data_dir=/d", "data.train_limit=500", "train.device=cpu"]
    assert per["run"] == ["data.data_dir=/d", "data.train_limit=500", "search=true"]
    with pytest.raises(ConfigError, match="start with a stage table"):
        pipeline.split_overrides(["train.epochs=3"])


def test_the_plans_stage_settings_apply_before_the_commands_own(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, name, resume: seen.setdefault(name, ctx))
    plan = "run.set=dae.init.from_baseline=true,dae.train.epochs=3"
    pipeline.run_study(tmp_path / "a", PRESET, [plan], progress=False, report=None)
    dae = seen["dae"].experiment("dae")
    assert dae.init.from_baseline and dae.train.epochs == 3
    assert seen["dae"].experiment("ae").train.epochs != 3  # only the task the item names
    seen.clear()
    pipeline.run_study(tmp_path / "b", PRESET, [plan, "dae.train.epochs=2"], progress=False, report=None)
    assert seen["dae"].experiment("dae").train.epochs == 2  # --set wins over the plan
    with pytest.raises(ConfigError, match="run.set item 'data.train_limit=5'"):
        pipeline.run_study(tmp_path / "c", PRESET, ["run.set=data.train_limit=5"], progress=False)
    with pytest.raises(ConfigError, match="^run.set item 'nope.train.epochs=2': start with a stage table"):
        pipeline.run_study(tmp_path / "d", PRESET, ["run.set=nope.train.epochs=2"], progress=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--set", "ae.train.lr=fast"], "'fast' is not a valid float"),
        (["--set", "run.labels_per_class=ten"], "run.labels_per_class item 'ten'"),
        (["--set", "epochs=3"], "start with a stage table"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    code = cli.main(["run", "--no-progress", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()  # nothing written before the settings are checked


def test_every_preset_has_a_run_plan():
    from mnistlab.tasks import load_experiment

    plans = {p: load_experiment("run", p) for p in ("quick", "seed", "default")}
    assert plans["seed"].search and not plans["quick"].search and not plans["default"].search
    assert all(p.finetune and p.labels_per_class for p in plans.values())


def test_latent_command_writes_into_out(tiny_study, tmp_path, capsys):
    import shutil

    ae = tmp_path / "ae"
    shutil.copytree(tiny_study / "ae", ae, ignore=shutil.ignore_patterns("probe", "latent"))
    out = tmp_path / "lat"
    args = ["latent", str(ae), "--out", str(out), "--maps", "pca", "--no-score", "--n", "50", "--no-progress"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert (out / "map_pca.png").is_file() and not (ae / "figures" / "latent").exists()
    assert json.loads((out / "summary.json").read_text())["cluster_quality"]["pca"]["knn_accuracy"] >= 0


def _planned(plan: RunPlan) -> list[tuple[str, str]]:
    ctx = StudyContext(Path("study"), "default", plan, split_overrides(list(plan.set)))
    return [(stage.name, stage.folder(ctx)) for stage in registry.planned(ctx)]


def test_the_default_study_trains_every_study_task_and_compares_every_encoder():
    names = [name for name, _ in _planned(RunPlan())]
    # Each stage that trains no task comes right after the last stage it reads.
    assert names == ["ae", "probe", "latent", "dae", "vae", "gan", "cgan", "flow", "semi", "labels"]
    assert dict(_planned(RunPlan()))["labels"] == "label_efficiency"
    assert dict(_planned(RunPlan()))["probe"] == "ae/probe"
    one_encoder = [n for n, _ in _planned(RunPlan(tasks=("ae", "gan")))]
    assert one_encoder == ["ae", "probe", "latent", "gan"]  # one encoder: the probe stage has its curve
    assert "labels" not in [n for n, _ in _planned(RunPlan(labels_per_class=()))]
    searched = _planned(RunPlan(search=True))
    assert [n for n, _ in searched][:2] == ["search", "ae"]  # the search before the stage it becomes


def test_an_unknown_stage_name_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown stage 'porbe'; stages: search, probe, latent, labels"):
        registry.check_names(("porbe",), "run.start_first")
