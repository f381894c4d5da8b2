"""The report's content, read from a `mnistlab run` folder: one `Section` per part of the study, made of
tables, figures (paths of PNGs the stages drew, with captions) and notes. Every number comes from the
run folder's JSON/CSV files; the only constants are the original report's own numbers (ORIGINAL),
labelled as such wherever they appear. A stage that has not run gives a section that says so.

report/build.py turns these sections into report.html (figures embedded) and report.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistlab import tasks
from mnistlab.core.errors import ConfigError
from mnistlab.core.host import summary_line
from mnistlab.metrics.collapse import CollapseConfig
from mnistlab.plots.content import RunFolder, Section, Table, num, pct, read_toml
from mnistlab.report.bench_section import bench_section
from mnistlab.report.key_results import key_results_section
from mnistlab.study import registry
from mnistlab.study.context import autoencoder_of

# The original study's own numbers (its written report), shown beside this run's measured ones.
ORIGINAL = {
    "probe_acc": 0.8941,  # frozen encoder + Linear(10 -> 10), test accuracy
    "supervised_acc": 0.9912,  # its supervised CNN, test accuracy
    "lr": 1e-3,  # the autoencoder settings its grid search chose
    "weight_decay": 1e-4,
    "latent_dim": 10,
    "poor_digits": (0, 2, 5, 6, 8),  # digits its GAN generated poorly (by eye)
}
# This run's GAN: a digit under this share of the final samples counts as poorly generated (the collapse
# detector's rare-class threshold, so that this table and its warnings agree).
POOR_SHARE = CollapseConfig().min_class_share


# -------------------------------------------------------------------------------------- sections


def settings_section(run: RunFolder) -> Section:
    st = run.state
    sec = Section("settings", "Settings and stage timings")
    sec.intro = f"Preset {st.get('preset')!r}; command: {st.get('command', '-')}"
    ae = run.json(f"{run.encoder}/summary.json")
    sec.tables.append(
        Table(
            "Run",
            ["setting", "value"],
            [
                ["preset", str(st.get("preset"))],
                ["overrides", ", ".join(st.get("overrides") or []) or "none"],
                ["data", str(ae.get("data") or st.get("data_dir") or "the embedded MNIST")],
                [
                    "images (train / validation / test)",
                    f"{num(ae.get('n_train'))} / {num(ae.get('n_val'))} / {num(ae.get('n_test'))}",
                ],
                ["device", str(ae.get("device") or st.get("device") or "-")],
                ["host", summary_line(st["host"]) if st.get("host") else "-"],
                ["started", str(st.get("created"))],
                ["last update", str(st.get("updated"))],
                ["status", str(st.get("status"))],
            ],
        )
    )
    rows = []
    for name in run.trained:
        cfg = read_toml(run.root / name / "config.toml").get(name, {})
        tr, model = cfg.get("train", {}), cfg.get("model", {})
        if tr:
            extra = ", ".join(f"{k} {v}" for k, v in model.items())
            rows.append(
                [
                    name,
                    num(tr.get("epochs")),
                    num(tr.get("batch_size")),
                    num(tr.get("lr")),
                    num(tr.get("weight_decay")),
                    str(tr.get("optimizer")),
                    str(tr.get("schedule")),
                    extra,
                ]
            )
    if rows:
        sec.tables.append(
            Table(
                "Training settings of each trained model (from its config.toml)",
                ["model", "epochs", "batch", "lr", "weight decay", "optimizer", "schedule", "network"],
                rows,
            )
        )
    timing = [
        [
            s["name"],
            s.get("status", "-"),
            num(s.get("attempts")),
            str(s.get("started") or "-"),
            str(s.get("ended") or "-"),
            num(s.get("seconds")),
            num(s.get("cpu_seconds")),
            num(s.get("peak_rss_mb")),
        ]
        for s in st.get("stages", [])
    ]
    sec.tables.append(
        Table(
            "Stages in the order they ran (wall-clock and CPU seconds of the run's process, "
            "summed over attempts; peak RSS: its memory high-water mark when the stage ended)",
            [
                "stage",
                "status",
                "attempts",
                "started (UTC)",
                "ended (UTC)",
                "seconds",
                "CPU seconds",
                "peak RSS (MB)",
            ],
            timing,
        )
    )
    return sec


def comparison_section(run: RunFolder) -> Section:
    sec = Section("original", "Against the original report")
    sec.intro = (
        "Left: the original report's own numbers, as it printed them (not measured here). Right: "
        "this run's measured numbers, read from the run folder."
    )
    o = ORIGINAL
    enc, gen = run.encoder, run.generator
    probe = run.json(f"{run.folder('probe')}/summary.json") if run.done("probe") else {}
    ae_cfg = read_toml(run.root / enc / "config.toml").get(enc, {}) if enc and run.done(enc) else {}
    ae_sum = run.json(f"{enc}/summary.json") if enc and run.done(enc) else {}
    gan = run.json(f"{gen}/summary.json") if gen and run.done(gen) else {}
    scratch = next(
        (r["scratch"] for r in probe.get("label_efficiency", []) if r["labels_per_class"] == "all"), None
    )
    ft = (probe.get("finetune") or {}).get("test_acc")
    tr, model = ae_cfg.get("train", {}), ae_cfg.get("model", {})
    source = (
        (
            f"the search's best trial {ae_sum['search_trial']}"
            if ae_sum.get("search_trial")
            else f"preset {run.state.get('preset')!r}"
        )
        if ae_cfg
        else f"the {enc} stage has not run"
    )
    hist = (gan.get("test") or {}).get("class_hist") or []
    poor = [d for d, h in enumerate(hist) if h < POOR_SHARE]
    poor_text = (
        ("none" if not poor else ", ".join(map(str, poor))) if hist else f"the {gen} stage has not run"
    )
    rows = [
        [
            "frozen-encoder linear probe, test accuracy",
            pct(o["probe_acc"]),
            pct((probe.get("linear_probe") or {}).get("test_acc")),
        ],
        ["supervised CNN, test accuracy (here: the fine-tuned encoder)", pct(o["supervised_acc"]), pct(ft)],
        ["the same network from scratch on all labels", "-", pct(scratch)],
        ["autoencoder learning rate", num(o["lr"]), num(tr.get("lr"))],
        ["autoencoder weight decay", num(o["weight_decay"]), num(tr.get("weight_decay"))],
        ["latent dimension", num(o["latent_dim"]), num(model.get("latent_dim"))],
        [
            f"poorly generated digits (here: under {POOR_SHARE:.0%} of the final GAN samples)",
            ", ".join(map(str, o["poor_digits"])) + " (by eye)",
            poor_text,
        ],
    ]
    sec.tables.append(
        Table(
            f"The original report beside this run (autoencoder settings from {source})",
            ["quantity", "original report (its own numbers)", "this run (measured)"],
            rows,
        )
    )
    return sec


def build_sections(root: Path, state: dict[str, Any]) -> list[Section]:
    """Key results and settings, then one section per stage in the order they ran (each stage's own,
    from the stage registry), the bench, and the comparison with the original report; numbered."""
    known = {s.name: s.roles for s in tasks.all_tasks()}
    entries = state.get("stages", [])
    trained = {e["name"]: known[e["name"]] for e in entries if e["name"] in known}
    run = RunFolder(root, state, trained, autoencoder_of(list(trained)))
    sections = [key_results_section(run, known), settings_section(run)]
    for entry in entries:
        try:
            stage = registry.get(entry["name"])
        except ConfigError:  # a plug-in stage that is no longer installed: its files stay, unread
            continue
        if stage.report is not None:
            sections.append(stage.report(run, stage.name))
    sections.append(bench_section(run))
    sections.append(comparison_section(run))
    for i, sec in enumerate(sections, 1):
        sec.title = f"{i}. {sec.title}"
    return sections
