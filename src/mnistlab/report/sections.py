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
from mnistlab.report.bench_section import bench_section
from mnistlab.report.content import RunFolder, Section, Table, num, pct, read_toml
from mnistlab.report.key_results import key_results_section

# The original study's own numbers (its written report), shown beside this run's measured ones.
ORIGINAL = {
    "probe_acc": 0.8941,  # frozen encoder + Linear(10 -> 10), test accuracy
    "supervised_acc": 0.9912,  # its supervised CNN, test accuracy
    "lr": 1e-3,  # the autoencoder settings its grid search chose
    "weight_decay": 1e-4,
    "latent_dim": 10,
    "poor_digits": (0, 2, 5, 6, 8),  # digits its GAN generated poorly (by eye)
}
POOR_SHARE = 0.05  # this run's GAN: a digit under this share of the final samples counts as poorly generated


# -------------------------------------------------------------------------------------- sections


def settings_section(run: RunFolder) -> Section:
    st = run.state
    sec = Section("settings", "Settings and stage timings")
    sec.intro = f"Preset {st.get('preset')!r}; command: {st.get('command', '-')}"
    ae = run.json(f"{run.encoder}/summary.json")
    sec.tables.append(Table("Run", ["setting", "value"], [
        ["preset", str(st.get("preset"))], ["overrides", ", ".join(st.get("overrides") or []) or "none"],
        ["data", str(ae.get("data") or st.get("data_dir") or "the embedded MNIST")],
        ["images (train / validation / test)", f"{num(ae.get('n_train'))} / {num(ae.get('n_val'))} / {num(ae.get('n_test'))}"],
        ["device", str(ae.get("device") or st.get("device") or "-")],
        ["started", str(st.get("created"))], ["last update", str(st.get("updated"))], ["status", str(st.get("status"))],
    ]))  # fmt: skip
    rows = []
    for name in run.trained:
        cfg = read_toml(run.root / name / "config.toml").get(name, {})
        tr, model = cfg.get("train", {}), cfg.get("model", {})
        if tr:
            extra = ", ".join(f"{k} {v}" for k, v in model.items())
            rows.append([name, num(tr.get("epochs")), num(tr.get("batch_size")), num(tr.get("lr")),
                         num(tr.get("weight_decay")), str(tr.get("optimizer")), str(tr.get("schedule")), extra])  # fmt: skip
    if rows:
        sec.tables.append(Table("Training settings of each trained model (from its config.toml)",
                                ["model", "epochs", "batch", "lr", "weight decay", "optimizer", "schedule", "network"],
                                rows))  # fmt: skip
    timing = [[s["name"], s.get("status", "-"), num(s.get("attempts")), str(s.get("started") or "-"),
               str(s.get("ended") or "-"), num(s.get("seconds")), num(s.get("cpu_seconds")), num(s.get("peak_rss_mb"))]
              for s in st.get("stages", [])]  # fmt: skip
    sec.tables.append(Table("Stages in the order they ran (wall-clock and CPU seconds of the run's process, "
                            "summed over attempts; peak RSS: its memory high-water mark when the stage ended)",
                            ["stage", "status", "attempts", "started (UTC)", "ended (UTC)", "seconds", "CPU seconds", "peak RSS (MB)"],
                            timing))  # fmt: skip
    return sec


def classification_section(run: RunFolder) -> Section:
    sec = Section("classification", "Classification with the encoder")
    sec.missing = run.not_run("probe", "probe or fine-tuning result")
    if sec.missing:
        return sec
    s = run.json(f"{run.folder('probe')}/summary.json")
    lp, ft = s.get("linear_probe", {}), s.get("finetune")
    sec.intro = (f"Classifiers on the autoencoder's {num(s.get('latent_dim'))}-d code, trained on "
                 f"{num(s.get('n_train'))} labelled images, tested on {num(s.get('n_test'))}.")  # fmt: skip
    rows = [
        [
            "frozen encoder + linear layer",
            pct(lp.get("test_acc")),
            pct(lp.get("val_acc")),
            num(lp.get("epochs")),
        ]
    ]
    if ft:
        rows.append(["fine-tuned encoder + linear layer", pct(ft.get("test_acc")), pct(ft.get("val_acc")),
                     num(ft.get("epochs"))])  # fmt: skip
    sec.tables.append(Table("Test and validation accuracy", ["model", "test accuracy", "validation accuracy",
                                                               "epochs"], rows))  # fmt: skip
    base = s.get("baselines", [])
    if base:
        sec.tables.append(Table("Baselines on the same split", ["method", "features", "test accuracy"],
                                [[b["method"], b["features"], pct(b.get("test_acc"))] for b in base]))  # fmt: skip
    eff = s.get("label_efficiency", [])
    if eff:
        k = max(len(r.get("subsets", [r])) for r in eff)
        title = "Label efficiency: test accuracy against labelled training images" + (
            f" (mean of {k} seeded labelled subsets; worst to best in brackets)" if k > 1 else ""
        )
        sec.tables.append(Table(title, ["labels per class", "labelled images", "frozen probe", "fine-tuned",
                                        "from scratch", "fine-tuned minus scratch"],
                                [[str(r["labels_per_class"]), num(r["n_labelled"])]
                                 + [_mean_and_range(r, key) for key in ("probe", "finetune", "scratch")]
                                 + [_points(r.get("finetune_minus_scratch"))] for r in eff]))  # fmt: skip
    f = f"{run.folder('probe')}/figures/"
    sec.figures += run.figure(
        f + "linear_accuracy.png", "Frozen-encoder probe: accuracy per epoch. x: epoch; y: accuracy."
    )
    sec.figures += run.figure(
        f + "linear_loss.png", "Frozen-encoder probe: cross-entropy per epoch. x: epoch; y: loss."
    )
    sec.figures += run.figure(f + "linear_confusion.png", "Frozen-encoder probe: confusion matrix on the test "
                              "set. x: predicted digit; y: true digit; colour: share of the true digit.")  # fmt: skip
    sec.figures += run.figure(
        f + "finetune_accuracy.png", "Fine-tuning: accuracy per epoch. x: epoch; y: accuracy."
    )
    sec.figures += run.figure(f + "finetune_confusion.png", "Fine-tuned model: confusion matrix on the test set. "
                              "x: predicted digit; y: true digit.")  # fmt: skip
    sec.figures += run.figure(f + "label_efficiency.png", "Label efficiency. x: labelled training images "
                              "(log scale); y: test accuracy of the frozen probe, the fine-tuned encoder and the "
                              "same network from scratch.")  # fmt: skip
    return sec


def latent_section(run: RunFolder) -> Section:
    sec = Section("latent", "Latent space")
    sec.missing = run.not_run("latent", "latent-space map")
    if sec.missing:
        return sec
    s = run.json(f"{run.folder('latent')}/summary.json")
    q = s.get("cluster_quality", {})
    sec.intro = (
        f"The {num(s.get('n_test'))} test images encoded by the autoencoder; maps, samplers, interpolations."
    )
    sec.tables.append(Table("Cluster quality of the digit labels: silhouette (-1..1) and leave-one-out "
                            "5-NN accuracy, in the raw code and in each 2-D map", ["space", "silhouette", "kNN accuracy"],
                            [[k, num(v.get("silhouette")), num(v.get("knn_accuracy"))] for k, v in _first(q, "raw")]))  # fmt: skip
    gen = s.get("generation")
    if gen:
        rows = []
        for name, r in _first(
            gen.get("rows", {}), "test (floor)", "reconstruction", *s.get("config", {}).get("samplers", [])
        ):
            hist = r.get("class_hist") or []
            rows.append([name, num(r.get("fid_mnist")), num(r.get("precision")), num(r.get("recall")),
                         num(r.get("kl_uniform")), pct(min(hist)) if hist else "-", pct(max(hist)) if hist else "-"])  # fmt: skip
        sec.tables.append(Table(f"Digits from each sampler ({num(gen.get('n_samples'))} each): FID-MNIST "
                                f"(lower is better; {gen.get('fid_note', '')}), precision/recall and class coverage, "
                                f"measured with {gen.get('reference')}",
                                ["digits", "FID-MNIST", "precision", "recall", "KL(class | uniform)",
                                 "rarest digit", "commonest digit"], rows))  # fmt: skip
    d = f"{run.folder('latent')}/"
    for m, axis in (("latent", "latent"), ("pca", "PC"), ("tsne", "t-SNE"), ("umap", "UMAP")):
        qm = q.get(m, {})
        sec.figures += run.figure(d + f"map_{m}.png", f"{axis} map of the test codes coloured by digit "
                                  f"(silhouette {num(qm.get('silhouette'))}, 5-NN accuracy {num(qm.get('knn_accuracy'))}). "
                                  f"x: {axis} 1; y: {axis} 2.")  # fmt: skip
    for sampler in s.get("config", {}).get("samplers", []):
        sec.figures += run.figure(d + f"samples_{sampler}.png", f"Digits decoded from the {sampler} sampler's "
                                  "codes (image grid, no axes).")  # fmt: skip
    sec.figures += run.figure(d + "interpolation.png", "Straight lines between the codes of two test digits, "
                              "decoded (one row per pair, the real digits at both ends; image grid, no axes).")  # fmt: skip
    sec.figures += run.figure(d + "generation_metrics.png", "Generation metrics per sampler beside the test-set "
                              "floor. x: digits scored; y: each metric.")  # fmt: skip
    return sec


def labels_section(run: RunFolder) -> Section:
    """The labels stage: every encoder's frozen code at each label count, one column per model."""
    sec = Section("labels", "Label efficiency of every encoder")
    sec.missing = run.not_run("labels", "comparison of the encoders' codes")
    if sec.missing:
        return sec
    folder = run.folder("labels")
    s = run.json(f"{folder}/summary.json")
    models = s.get("models", {})
    if not models:
        sec.missing = "The labels stage recorded no encoder."
        return sec
    k = s.get("label_subsets", 1)
    sec.intro = ("The same linear probe on each encoder's frozen code (the probe stage's recipe), trained on "
                 "balanced labelled subsets of the same training split, tested on the whole test set"
                 + (f"; each cell is the mean of {k} seeded subsets, worst to best in brackets." if k > 1 else "."))  # fmt: skip
    first = next(iter(models.values()))["rows"]
    cells = []
    for i, r in enumerate(first):
        row = [str(r["labels_per_class"]), num(r["n_labelled"])]
        for m in models.values():
            c = m["rows"][i] if i < len(m["rows"]) else {}
            spread = f" ({100 * c['low']:.1f}-{100 * c['high']:.1f})" if k > 1 and "low" in c else ""
            row.append(pct(c.get("probe")) + spread)
        cells.append(row)
    sec.tables.append(Table("Frozen-code linear probe: test accuracy against labelled training images",
                            ["labels per class", "labelled images"]
                            + [f"{name} ({m.get('latent_dim')}-d code)" for name, m in models.items()], cells))  # fmt: skip
    sec.figures += run.figure(f"{folder}/figures/label_efficiency_by_model.png", "Label efficiency of each "
                              "encoder's frozen code. x: labelled training images (log scale); y: test accuracy "
                              "of a linear probe; one line per model.")  # fmt: skip
    return sec


def _first(table: dict[str, Any], *names: str) -> list[tuple[str, Any]]:
    """The items of `table` with `names` first, in that order (JSON files keep keys sorted)."""
    head = [(n, table[n]) for n in names if n in table]
    return head + [(k, v) for k, v in table.items() if k not in names]


def _mean_and_range(row: dict, key: str) -> str:
    """'92.38%' or, for a row averaged over labelled subsets, '92.38% (91.92-92.91)'."""
    values = [s[key] for s in row.get("subsets", [])]
    text = pct(row.get(key))
    return f"{text} ({100 * min(values):.1f}-{100 * max(values):.1f})" if values else text


def _points(diff) -> str:
    return "-" if diff is None else f"{100 * float(diff):+.1f} points"


def comparison_section(run: RunFolder) -> Section:
    sec = Section("original", "Against the original report")
    sec.intro = ("Left: the original report's own numbers, as it printed them (not measured here). Right: "
                 "this run's measured numbers, read from the run folder.")  # fmt: skip
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
    source = (f"the search's best trial {ae_sum['search_trial']}" if ae_sum.get("search_trial")
              else f"preset {run.state.get('preset')!r}") if ae_cfg else f"the {enc} stage has not run"  # fmt: skip
    hist = (gan.get("test") or {}).get("class_hist") or []
    poor = [d for d, h in enumerate(hist) if h < POOR_SHARE]
    poor_text = (
        ("none" if not poor else ", ".join(map(str, poor))) if hist else f"the {gen} stage has not run"
    )
    rows = [
        ["frozen-encoder linear probe, test accuracy", pct(o["probe_acc"]), pct((probe.get("linear_probe") or {}).get("test_acc"))],
        ["supervised CNN, test accuracy (here: the fine-tuned encoder)", pct(o["supervised_acc"]), pct(ft)],
        ["the same network from scratch on all labels", "-", pct(scratch)],
        ["autoencoder learning rate", num(o["lr"]), num(tr.get("lr"))],
        ["autoencoder weight decay", num(o["weight_decay"]), num(tr.get("weight_decay"))],
        ["latent dimension", num(o["latent_dim"]), num(model.get("latent_dim"))],
        [f"poorly generated digits (here: under {POOR_SHARE:.0%} of the final GAN samples)",
         ", ".join(map(str, o["poor_digits"])) + " (by eye)", poor_text],
    ]  # fmt: skip
    sec.tables.append(Table(f"The original report beside this run (autoencoder settings from {source})",
                            ["quantity", "original report (its own numbers)", "this run (measured)"], rows))  # fmt: skip
    return sec


def build_sections(root: Path, state: dict[str, Any]) -> list[Section]:
    """Settings, then one section per stage in the order they ran (a task's from its own module, the
    probe and latent stages from here), then the comparison with the original report; numbered."""
    known = {s.name: s.roles for s in tasks.all_tasks()}
    run = RunFolder(root, state, known)
    sections = [key_results_section(run, known), settings_section(run)]
    consumers = {"probe": classification_section, "latent": latent_section, "labels": labels_section}
    for name in run.stages:
        if name in consumers:
            sections.append(consumers[name](run))
        elif name in run.trained and tasks.get(name).report is not None:
            sections.append(tasks.get(name).report(run, name))
    sections.append(bench_section(run))
    sections.append(comparison_section(run))
    for i, sec in enumerate(sections, 1):
        sec.title = f"{i}. {sec.title}"
    return sections
