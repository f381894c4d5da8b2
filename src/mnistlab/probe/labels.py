"""Label efficiency of every encoder's frozen code, one curve per encoder run: the `labels` stage of
`mnistlab run` (RUN/label_efficiency/).

The probe stage goes deep on the study's first encoder (fine-tuning, from-scratch networks, baselines);
this asks one question of every encoder (autoencoder, denoising autoencoder, VAE mean, a plug-in's):
how well does a linear classifier on its frozen code do with 10, 100, ... labelled digits per class?
The same probe recipe (the preset's `[probe.*]` tables), the same balanced subsets (seeded per count),
each run's own train / validation / test split; codes are computed once per run and standardised with
the training split's statistics, as the probe stage does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from mnistlab import tasks
from mnistlab.core.fsio import write_json
from mnistlab.data.datasets import load
from mnistlab.plots.evaluation import plot_metric_lines
from mnistlab.probe.fit import balanced_subset, check_labels_per_class, encode, standardize
from mnistlab.probe.run import feature_probe, label_seeds, per_class_tick
from mnistlab.runs.folder import read_summary
from mnistlab.training.loop import resolve_device

log = logging.getLogger("mnistlab")
FIGURE = "label_efficiency_by_model.png"


def code_curve(run_dir: Path, exp, counts: tuple[int | None, ...], progress: bool = True) -> dict:
    """The frozen linear probe of `run_dir`'s code at each labels-per-class count (None = every label):
    {"task", "latent_dim", "rows": [{"labels_per_class", "n_labelled", "probe" (mean test accuracy),
    "low", "high" (worst and best subset)}]}."""
    run = tasks.load_run(run_dir, role="encoder")
    exp = dataclasses.replace(exp, data=run.exp.data)  # the encoder's own split
    data, dev = load(exp.data), resolve_device(exp.linear.device)
    check_labels_per_class(data.train.labels, counts)
    encoder = run.modules("encoder")
    # (N, latent) per split, computed once, standardised with the training split's statistics.
    splits = (data.train, data.val, data.test)
    codes = [encode(encoder, s.images, dev, exp.linear.eval_batch_size) for s in splits]
    if exp.options.standardize:
        codes = standardize(*codes)
    opts, rows = exp.options, []
    for n in counts:
        seeds = label_seeds(n, opts)
        accs, n_labelled = [], 0
        for seed in seeds:
            subset = None if n is None else balanced_subset(data.train.labels, n, seed)
            result, _, _ = feature_probe(codes, data, exp, dev, None, progress, subset)
            accs.append(result["test_acc"])
            n_labelled = result["n_labelled"]
        rows.append(
            {
                "labels_per_class": "all" if n is None else str(n),
                "n_labelled": n_labelled,
                "probe": round(sum(accs) / len(accs), 5),
                "low": min(accs),
                "high": max(accs),
            }
        )
        log.info(
            "%s: %s labels per class: frozen probe %.4f",
            run.task,
            rows[-1]["labels_per_class"],
            rows[-1]["probe"],
        )
    return {"task": run.task, "latent_dim": int(codes[0].shape[1]), "rows": rows}


def run_code_labels(
    runs: dict[str, Path], exp, counts: tuple[int | None, ...], out: Path, progress: bool = True
) -> dict:
    """code_curve for every run of `runs` (stage name -> run folder), into out/summary.json and one
    figure with a curve per run (shaded: worst to best labelled subset)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    models = {name: code_curve(path, exp, counts, progress) for name, path in runs.items()}
    trained = {name: p for name, path in runs.items() if (p := trained_point(path))}
    summary = {
        "counts": ["all" if n is None else n for n in counts],
        "label_subsets": exp.options.label_subsets,
        "models": models,
        "trained_with_labels": trained,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    draw(models, out / "figures" / FIGURE, trained)
    write_json(out / "summary.json", summary)
    return summary


def trained_point(run_dir: Path) -> dict | None:
    """A run that was itself trained from a labelled subset (its summary's "labels", as the
    semi-supervised task writes it) as one point of the curve: its own test accuracy at its count."""
    s = read_summary(run_dir)
    lab, acc = s.get("labels"), (s.get("test") or {}).get("accuracy")
    if not isinstance(lab, dict) or acc is None:
        return None
    per_class = lab.get("labels_per_class")
    return {
        "labels_per_class": "all" if per_class is None else str(per_class),
        "n_labelled": lab.get("n_labelled"),
        "label_seed": lab.get("label_seed"),
        "test_accuracy": acc,
    }


def draw(models: dict[str, dict], path: Path, trained: dict[str, dict] | None = None) -> Path | None:
    """One curve per model against labelled images (log x); the x values are the first model's counts
    (every run of one study shares its split, so the counts agree). A run trained from its own
    labelled subset (`trained`) is one point at its count."""
    if not models:
        return None
    first = next(iter(models.values()))["rows"]
    xs = [r["n_labelled"] for r in first]
    label = {name: f"{name} ({m['latent_dim']}-d code)" for name, m in models.items()}
    series = {label[name]: [r["probe"] for r in m["rows"]] for name, m in models.items()}
    for name, p in (trained or {}).items():
        series[f"{name} trained end to end with its labels"] = [
            p["test_accuracy"] if r["labels_per_class"] == p["labels_per_class"] else None for r in first
        ]
    bands = {
        label[name]: ([r["low"] for r in m["rows"]], [r["high"] for r in m["rows"]])
        for name, m in models.items()
    }
    return plot_metric_lines(
        xs,
        {"acc": series},
        path,
        xlabel="labelled training images (balanced over 10 classes)",
        ylabels={"acc": "test accuracy of a linear probe"},
        log_x=True,
        xticklabels=[f"{x}\n({per_class_tick(r['labels_per_class'])})" for x, r in zip(xs, first)],
        title="Label efficiency of each encoder's frozen code",
        bands={"acc": bands},
    )
