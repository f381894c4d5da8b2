"""`mnistlab probe RUN_DIR`: how good is a trained encoder's code for classifying digits?

Writes one folder (default RUN_DIR/probe/) with config.toml, summary.json, figures/ and one sub-folder
per trained classifier (metrics.jsonl, checkpoint, TensorBoard events):
- the report's probe: the frozen encoder plus one Linear(latent -> 10), cross-entropy;
- baselines on the same split: kNN and logistic regression (scikit-learn) on the same codes, and the
  same linear probe on raw pixels and on PCA codes of the latent's dimension;
- `--finetune`: encoder + head trained together, the encoder at a lower learning rate;
- `--labels-per-class`: probe, fine-tuned and from-scratch networks on balanced labelled subsets.
The probed run is only read: the encoder is copied before fine-tuning.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from mnistlab import tasks
from mnistlab.core.config import load_table, save_experiment
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes, read_jsonl, write_json
from mnistlab.data.datasets import Data, Split, load, to_float
from mnistlab.models.encoder_classifier import EncoderClassifier, LinearHead
from mnistlab.plots.evaluation import plot_confusion, plot_metric_lines
from mnistlab.plots.figures import plot_curves
from mnistlab.probe.config import ProbeExperiment
from mnistlab.probe.fit import (
    balanced_subset,
    check_labels_per_class,
    classification_scores,
    confusion_matrix,
    encode,
    feature_stats,
    features_to,
    fold_standardization,
    predict,
    repeat_to,
    standardize,
    train_classifier,
)
from mnistlab.runs import owner
from mnistlab.runs.folder import command_line
from mnistlab.training.loop import resolve_device
from mnistlab.training.run_folder import seed_everything

log = logging.getLogger("mnistlab")


class EncoderArch(NamedTuple):
    """What the fine-tuned and from-scratch networks are built from: an untrained encoder of the
    probed run's architecture, (B, 1, 28, 28) -> (B, latent_dim), and that code size."""

    fresh: Callable[[], torch.nn.Module]
    latent_dim: int


def run_probe(
    run_dir: Path,
    preset: str = "default",
    overrides: list[str] | None = None,
    out: Path | None = None,
    finetune: bool = False,
    labels_per_class: tuple[int | None, ...] = (),
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Probe the encoder of autoencoder run `run_dir`; returns (and writes) the summary."""
    run_dir = Path(run_dir)
    run = _load_encoder_run(run_dir)
    run_task, run_exp, encoder = run.task, run.exp, run.modules("encoder")
    exp: ProbeExperiment = load_table("probe", preset, overrides, ProbeExperiment)
    exp = dataclasses.replace(exp, data=run_exp.data)  # the encoder's own train / val / test split
    if device:
        exp = dataclasses.replace(
            exp,
            linear=dataclasses.replace(exp.linear, device=device),
            finetune=dataclasses.replace(exp.finetune, device=device),
        )
    out = Path(out) if out else run_dir / "probe"
    _check_out(out, overwrite)
    data = load(exp.data)
    check_labels_per_class(data.train.labels, labels_per_class)  # before any training
    _prepare_out(out, exp, overwrite)
    if exp.linear.threads:
        torch.set_num_threads(exp.linear.threads)
    dev = resolve_device(exp.linear.device)
    ft_dev = resolve_device(exp.finetune.device)
    opts = exp.options
    t0 = time.perf_counter()

    # The frozen encoder's codes, computed once: (N, latent) per split.
    codes = [
        encode(encoder, s.images, dev, exp.linear.eval_batch_size) for s in (data.train, data.val, data.test)
    ]
    latent = codes[0].shape[1]
    arch = EncoderArch(run.fresh_encoder, latent)
    stats = feature_stats(codes[0]) if opts.standardize else None
    if stats is not None:
        codes = standardize(*codes)
    summary: dict = {
        "run": str(run_dir),
        "run_task": run_task,
        "out": str(out),
        "latent_dim": latent,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }

    log.info("linear probe on the frozen %d-d code", latent)
    linear, logits, head = feature_probe(codes, data, exp, dev, out / "linear", progress)
    summary["linear_probe"] = linear
    _classifier_figures(
        out, "linear", logits, data.test.labels, linear, f"Frozen encoder + Linear({latent} -> 10)"
    )

    summary["baselines"] = _baselines(codes, data, exp, dev, latent, linear, progress)

    if finetune:
        log.info("fine-tuning encoder + head on all %d labelled training images", len(data.train))
        ft, ft_logits = _network(
            encoder,
            _raw_head(head, stats),
            arch,
            data.train,
            data,
            exp,
            ft_dev,
            opts.encoder_lr_scale,
            out / "finetune",
            progress,
        )
        summary["finetune"] = ft
        _classifier_figures(
            out, "finetune", ft_logits, data.test.labels, ft, "Fine-tuned encoder + linear head"
        )

    if labels_per_class:
        summary["label_efficiency"] = _label_efficiency(
            labels_per_class,
            codes,
            stats,
            encoder,
            arch,
            data,
            exp,
            dev,
            ft_dev,
            out,
            summary,
            head,
            progress,
        )
        _label_figure(summary["label_efficiency"], out / "figures" / "label_efficiency.png", latent)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "summary.json", summary)
    return summary


def _load_encoder_run(run_dir: Path) -> tasks.TrainedRun:
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder; give a run of a task with an encoder "
            f"({', '.join(s.name for s in tasks.with_role('encoder'))})"
        )
    return tasks.load_run(run_dir, role="encoder")


def _check_out(out: Path, overwrite: bool) -> None:
    """Claim `out` (owner.claim: a new or empty folder, or a probe's); a probe there is replaced only
    with --overwrite."""
    owner.claim(out, "probe")
    if owner.owned_files(out) and not overwrite:
        raise ConfigError(f"{out} already holds a probe; pass --overwrite to replace it or choose --out")


def _prepare_out(out: Path, exp: ProbeExperiment, overwrite: bool) -> Path:
    _check_out(out, overwrite)
    owner.clear(out)  # the previous probe's files only: the user's own stay
    (out / "figures").mkdir(parents=True, exist_ok=True)
    save_experiment(out / "config.toml", exp, "probe")
    atomic_write_bytes(out / "command.txt", (command_line() + "\n").encode())
    return out


def _result(fitted, logits: torch.Tensor, labels: torch.Tensor, n_labelled: int) -> dict:
    last = fitted.history[-1] if fitted.history else {}
    test = classification_scores(logits, labels)
    return {
        "test_acc": round(test["acc"], 5),
        "test_loss": round(test["loss"], 5),
        "val_acc": round(last["val_acc"], 5) if "val_acc" in last else None,
        "train_acc": round(last["train_acc"], 5) if "train_acc" in last else None,
        "n_labelled": n_labelled,
        "epochs": len(fitted.history),
        "seconds": round(fitted.seconds, 2),
    }


def feature_probe(feats, data: Data, exp, dev, out, progress, subset=None):
    """The linear probe on feature rows: feats = (train, val, test) tensors (N, D); on the rows
    `subset` of the training set if given. Returns (result, test logits, trained head)."""
    train_x, val_x, test_x = feats
    train = Split(train_x, data.train.labels)
    if subset is not None:
        train = train.take(subset)
    n_labelled = len(train)
    seed_everything(exp.linear.seed)
    head = LinearHead(train_x.shape[1])
    fitted = train_classifier(
        head,
        [{"params": head.parameters()}],
        repeat_to(train, exp.options.min_epoch_images),
        Split(val_x, data.val.labels),
        exp.linear,
        dev,
        features_to,
        out,
        progress=progress,
    )
    logits = predict(head, test_x, dev, features_to, exp.linear.eval_batch_size)
    return _result(fitted, logits, data.test.labels, n_labelled), logits, head.cpu()


def _raw_head(head: LinearHead, stats) -> LinearHead:
    """The probe's head as a head on the raw code (standardization folded in), to start fine-tuning."""
    return fold_standardization(head, *stats) if stats is not None else copy.deepcopy(head)


def _network(
    encoder: torch.nn.Module | None,
    head: LinearHead | None,
    cfg: EncoderArch,
    train: Split,
    data: Data,
    exp: ProbeExperiment,
    dev,
    encoder_lr_scale: float,
    out: Path | None,
    progress: bool,
    curves: bool = True,
):
    """Encoder + head trained on images: fine-tuning copies of `encoder` and `head` (the linear probe
    trained on its frozen code), or the same network from scratch if both are None. Without `curves`
    (the label-efficiency networks: only their last epoch is reported) validation runs once, at the end."""
    seed_everything(exp.finetune.seed)
    encoder = copy.deepcopy(encoder) if encoder is not None else cfg.fresh()
    model = EncoderClassifier(encoder, cfg.latent_dim, head=copy.deepcopy(head) if head is not None else None)
    lr = exp.finetune.lr
    groups = [
        {"params": model.encoder.parameters(), "lr": lr * encoder_lr_scale},
        {"params": model.head.parameters(), "lr": lr},
    ]
    fitted = train_classifier(
        model,
        groups,
        repeat_to(train, exp.options.min_epoch_images),
        data.val,
        exp.finetune,
        dev,
        to_float,
        out,
        exp.options.shift,
        progress,
        curves,
    )
    logits = predict(model, data.test.images, dev, to_float, exp.finetune.eval_batch_size)
    return _result(fitted, logits, data.test.labels, len(train)), logits


def _baselines(
    codes, data: Data, exp: ProbeExperiment, dev, latent: int, linear: dict, progress: bool
) -> list:
    """kNN and logistic regression on the codes; the linear probe on pixels and on PCA codes."""
    opts = exp.options
    train_z, _, test_z = (c.numpy() for c in codes)
    y_train, y_test = data.train.labels.numpy(), data.test.labels.numpy()
    rows = [
        {"method": "linear probe", "features": f"encoder code ({latent}-d)", "test_acc": linear["test_acc"]}
    ]
    knn = KNeighborsClassifier(n_neighbors=opts.knn_k).fit(train_z, y_train)
    rows.append(
        {
            "method": f"kNN (k={opts.knn_k})",
            "features": f"encoder code ({latent}-d)",
            "test_acc": round(float((knn.predict(test_z) == y_test).mean()), 5),
        }
    )
    logreg = LogisticRegression(C=opts.logreg_c, max_iter=2000).fit(train_z, y_train)
    rows.append(
        {
            "method": "logistic regression",
            "features": f"encoder code ({latent}-d)",
            "test_acc": round(float((logreg.predict(test_z) == y_test).mean()), 5),
        }
    )

    # Pixels stay as they are, in [0, 1] (standardizing them would blow up border pixels that are
    # almost always 0 in training); PCA codes, like the encoder's, have very unequal scales.
    pixels = [s.images.reshape(len(s), -1).float() / 255.0 for s in (data.train, data.val, data.test)]
    pca = PCA(n_components=min(latent, *pixels[0].shape), random_state=0).fit(pixels[0].numpy())
    pca_codes = [torch.from_numpy(pca.transform(p.numpy())).float() for p in pixels]
    if opts.standardize:
        pca_codes = standardize(*pca_codes)
    for name, feats in (
        (f"pixels ({pixels[0].shape[1]}-d)", pixels),
        (f"PCA ({pca.n_components_}-d)", pca_codes),
    ):
        log.info("baseline: linear probe on %s", name)
        result, _, _ = feature_probe(feats, data, exp, dev, None, progress)
        rows.append({"method": "linear probe", "features": name, "test_acc": result["test_acc"]})
    return rows


def _label_efficiency(
    counts,
    codes,
    stats,
    encoder,
    cfg: EncoderArch,
    data: Data,
    exp: ProbeExperiment,
    dev,
    ft_dev,
    out: Path,
    summary: dict,
    main_head: LinearHead,
    progress: bool,
) -> list:
    """Test accuracy of probe / fine-tuned / from-scratch networks on nested balanced subsets: one row
    per count, the mean over `options.label_subsets` subsets (each subset's numbers under "subsets")."""
    opts = exp.options
    rows = []
    for n in counts:
        tag = "all" if n is None else str(n)
        seeds = label_seeds(n, opts)
        subsets = []
        for seed in seeds:
            folder = out / "labels" / tag / (f"seed{seed}" if len(seeds) > 1 else "")
            subsets.append(
                {
                    "label_seed": seed,
                    **_label_subset(
                        n,
                        seed,
                        codes,
                        stats,
                        encoder,
                        cfg,
                        data,
                        exp,
                        dev,
                        ft_dev,
                        folder,
                        summary,
                        main_head,
                        progress,
                    ),
                }
            )
        row = {"labels_per_class": tag, "n_labelled": subsets[0]["n_labelled"]}
        for key in ("probe", "finetune", "scratch", "finetune_minus_scratch"):
            row[key] = round(sum(r[key] for r in subsets) / len(subsets), 5)
        if len(subsets) > 1:
            row["subsets"] = subsets
        rows.append(row)
        log.info(
            "  mean of %d subset(s): probe %.4f  finetune %.4f  scratch %.4f",
            len(subsets),
            row["probe"],
            row["finetune"],
            row["scratch"],
        )
    return rows


def label_seeds(n: int | None, opts) -> list[int]:
    """The seeds of the labelled subsets drawn for `n` labels per class: one per subset, and just one
    for every label (n None), where there is nothing to draw."""
    return [opts.label_seed] if n is None else [opts.label_seed + i for i in range(opts.label_subsets)]


def _label_subset(
    n,
    seed,
    codes,
    stats,
    encoder,
    cfg: EncoderArch,
    data: Data,
    exp: ProbeExperiment,
    dev,
    ft_dev,
    folder: Path,
    summary: dict,
    main_head: LinearHead,
    progress: bool,
) -> dict:
    """Probe, fine-tuned and from-scratch test accuracy on `n` labelled images per class drawn with
    `seed` (every labelled image if n is None)."""
    subset = None if n is None else balanced_subset(data.train.labels, n, seed)
    train = data.train if subset is None else data.train.take(subset)
    log.info(
        "label efficiency: %s labelled images per class (%d images, label seed %d)",
        "all" if n is None else n,
        len(train),
        seed,
    )
    if n is None:
        probe, head = summary["linear_probe"], main_head  # the probe above already used every label
    else:
        probe, _, head = feature_probe(codes, data, exp, dev, folder / "probe", progress, subset)
    if n is None and "finetune" in summary:
        ft = summary["finetune"]
    else:
        ft, _ = _network(
            encoder,
            _raw_head(head, stats),
            cfg,
            train,
            data,
            exp,
            ft_dev,
            exp.options.encoder_lr_scale,
            folder / "finetune",
            progress,
            curves=False,
        )
    scratch, _ = _network(
        None,
        None,
        cfg,
        train,
        data,
        exp,
        ft_dev,
        exp.options.scratch_lr_scale,
        folder / "scratch",
        progress,
        curves=False,
    )
    return {
        "n_labelled": len(train),
        "probe": probe["test_acc"],
        "finetune": ft["test_acc"],
        "scratch": scratch["test_acc"],
        "finetune_minus_scratch": round(ft["test_acc"] - scratch["test_acc"], 5),
    }


def _classifier_figures(out: Path, name: str, logits, labels, result: dict, title: str) -> None:
    history = read_jsonl(out / name / "metrics.jsonl")
    figures = out / "figures"
    plot_curves(
        history,
        ("train_loss", "val_loss"),
        figures / f"{name}_loss.png",
        f"{title}: cross-entropy",
        ylabel="cross-entropy",
    )
    plot_curves(
        history,
        ("train_acc", "val_acc"),
        figures / f"{name}_accuracy.png",
        f"{title}: accuracy",
        ylabel="accuracy",
    )
    matrix = confusion_matrix(logits.argmax(1), labels).numpy()
    plot_confusion(
        matrix,
        figures / f"{name}_confusion.png",
        f"{title}\ntest accuracy {result['test_acc']:.2%} on {int(matrix.sum())} images",
    )


def _label_figure(rows: list, path: Path, latent: int) -> None:
    """Mean test accuracy against labelled images; shaded from the worst to the best labelled subset."""
    xs = [r["n_labelled"] for r in rows]
    names = {
        "probe": f"frozen encoder + linear ({latent}-d code)",
        "finetune": "fine-tuned pretrained encoder",
        "scratch": "same network from scratch",
    }
    series = {name: [r[key] for r in rows] for key, name in names.items()}
    bands = {}
    if any("subsets" in r for r in rows):
        spread = {key: [[s[key] for s in r.get("subsets", [r])] for r in rows] for key in names}
        bands = {
            "acc": {
                name: ([min(v) for v in spread[key]], [max(v) for v in spread[key]])
                for key, name in names.items()
            }
        }
    plot_metric_lines(
        xs,
        {"acc": series},
        path,
        xlabel="labelled training images (balanced over 10 digits)",
        ylabels={"acc": "test accuracy"},
        log_x=True,
        xticklabels=[f"{x}\n({per_class_tick(r['labels_per_class'])})" for x, r in zip(xs, rows)],
        title=_label_title(rows),
        bands=bands,
    )


def _label_title(rows: list) -> str:
    k = max(len(r.get("subsets", [r])) for r in rows)
    title = "Label efficiency: what pretraining buys"
    return title if k == 1 else f"{title}\n(mean of {k} labelled subsets; shaded: worst to best subset)"


def per_class_tick(count: str) -> str:
    """A tick's second line: "10/class", or "all labels" for the whole training split."""
    return "all labels" if count == "all" else f"{count}/class"
