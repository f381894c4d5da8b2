"""The probe and labels stages' parts of the study report: classification with the encoder, and every
encoder's frozen code at each label count. Sections are plots.content types; report/ assembles them."""

from __future__ import annotations

from mnistlab.plots.content import RunFolder, Section, Table, num, pct


def classification_section(run: RunFolder) -> Section:
    sec = Section("classification", "Classification with the encoder")
    sec.missing = run.not_run("probe", "probe or fine-tuning result")
    if sec.missing:
        return sec
    s = run.json(f"{run.folder('probe')}/summary.json")
    lp, ft = s.get("linear_probe", {}), s.get("finetune")
    sec.intro = (
        f"Classifiers on the autoencoder's {num(s.get('latent_dim'))}-d code, trained on "
        f"{num(s.get('n_train'))} labelled images, tested on {num(s.get('n_test'))}."
    )
    rows = [
        [
            "frozen encoder + linear layer",
            pct(lp.get("test_acc")),
            pct(lp.get("val_acc")),
            num(lp.get("epochs")),
        ]
    ]
    if ft:
        rows.append(
            [
                "fine-tuned encoder + linear layer",
                pct(ft.get("test_acc")),
                pct(ft.get("val_acc")),
                num(ft.get("epochs")),
            ]
        )
    sec.tables.append(
        Table(
            "Test and validation accuracy (higher is better)",
            ["model", "test accuracy ↑", "validation accuracy ↑", "epochs"],
            rows,
        )
    )
    base = s.get("baselines", [])
    if base:
        sec.tables.append(
            Table(
                "Baselines on the same split",
                ["method", "features", "test accuracy ↑"],
                [[b["method"], b["features"], pct(b.get("test_acc"))] for b in base],
            )
        )
    eff = s.get("label_efficiency", [])
    if eff:
        k = max(len(r.get("subsets", [r])) for r in eff)
        title = "Label efficiency: test accuracy against labelled training images" + (
            f" (mean of {k} seeded labelled subsets; worst to best in brackets)" if k > 1 else ""
        )
        sec.tables.append(
            Table(
                title,
                [
                    "labels per class",
                    "labelled images",
                    "frozen probe",
                    "fine-tuned",
                    "from scratch",
                    "fine-tuned minus scratch",
                ],
                [
                    [str(r["labels_per_class"]), num(r["n_labelled"])]
                    + [_mean_and_range(r, key) for key in ("probe", "finetune", "scratch")]
                    + [_points(r.get("finetune_minus_scratch"))]
                    for r in eff
                ],
            )
        )
    f = f"{run.folder('probe')}/figures/"
    sec.figures += run.figure(
        f + "linear_accuracy.png", "Frozen-encoder probe: accuracy per epoch. x: epoch; y: accuracy."
    )
    sec.figures += run.figure(
        f + "linear_loss.png", "Frozen-encoder probe: cross-entropy per epoch. x: epoch; y: loss."
    )
    sec.figures += run.figure(
        f + "linear_confusion.png",
        "Frozen-encoder probe: confusion matrix on the test "
        "set. x: predicted digit; y: true digit; colour: share of the true digit.",
    )
    sec.figures += run.figure(
        f + "finetune_accuracy.png", "Fine-tuning: accuracy per epoch. x: epoch; y: accuracy."
    )
    sec.figures += run.figure(
        f + "finetune_confusion.png",
        "Fine-tuned model: confusion matrix on the test set. x: predicted digit; y: true digit.",
    )
    sec.figures += run.figure(
        f + "label_efficiency.png",
        "Label efficiency. x: labelled training images "
        "(log scale); y: test accuracy of the frozen probe, the fine-tuned encoder and the "
        "same network from scratch.",
    )
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
    sec.intro = (
        "The same linear probe on each encoder's frozen code (the probe stage's recipe), trained on "
        "balanced labelled subsets of the same training split, tested on the whole test set"
        + (f"; each cell is the mean of {k} seeded subsets, worst to best in brackets." if k > 1 else ".")
    )
    first = next(iter(models.values()))["rows"]
    # Runs trained end to end from their own labelled subset (semi-supervised): one cell each, at
    # their count.
    trained = s.get("trained_with_labels") or {}
    cells = []
    for i, r in enumerate(first):
        row = [str(r["labels_per_class"]), num(r["n_labelled"])]
        for m in models.values():
            c = m["rows"][i] if i < len(m["rows"]) else {}
            spread = f" ({100 * c['low']:.1f}-{100 * c['high']:.1f})" if k > 1 and "low" in c else ""
            row.append(pct(c.get("probe")) + spread)
        for p in trained.values():
            same = str(p.get("labels_per_class")) == str(r["labels_per_class"])
            row.append(pct(p.get("test_accuracy")) if same else "-")
        cells.append(row)
    counts = {str(r["labels_per_class"]) for r in first}
    for j, p in enumerate(trained.values()):  # a count the curve does not have: a row of its own
        if str(p.get("labels_per_class")) not in counts:
            blank = ["-"] * (len(models) + len(trained))
            blank[len(models) + j] = pct(p.get("test_accuracy"))
            cells.append([str(p.get("labels_per_class")), num(p.get("n_labelled")), *blank])
    sec.tables.append(
        Table(
            "Frozen-code linear probe: test accuracy against labelled training images"
            + (
                "; a run trained end to end from its own labelled subset in its own column" if trained else ""
            ),
            ["labels per class", "labelled images"]
            + [f"{name} ({m.get('latent_dim')}-d code)" for name, m in models.items()]
            + [
                f"{name} trained end to end (label seed {p.get('label_seed')})" for name, p in trained.items()
            ],
            cells,
        )
    )
    sec.figures += run.figure(
        f"{folder}/figures/label_efficiency_by_model.png",
        "Label efficiency of each "
        "encoder's frozen code. x: labelled training images (log scale); y: test accuracy "
        "of a linear probe; one line per model.",
    )
    return sec


def _mean_and_range(row: dict, key: str) -> str:
    """'92.38%' or, for a row averaged over labelled subsets, '92.38% (91.92-92.91)'."""
    values = [s[key] for s in row.get("subsets", [])]
    text = pct(row.get(key))
    return f"{text} ({100 * min(values):.1f}-{100 * max(values):.1f})" if values else text


def _points(diff) -> str:
    return "-" if diff is None else f"{100 * float(diff):+.1f} points"
