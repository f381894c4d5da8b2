"""The report's content, read from a `mnistlab run` folder: one `Section` per part of the study, made of
tables, figures (paths of PNGs the stages drew, with captions) and notes. Every number comes from the
run folder's JSON/CSV files; the only constants are the original report's own numbers (ORIGINAL),
labelled as such wherever they appear. A stage that has not run gives a section that says so.

report/build.py turns these sections into report.html (figures embedded) and report.md.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mnistlab.report.content import Figure, RunFolder, Section, Table, num, pct, read_toml

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
    sec = Section("settings", "1. Settings and stage timings")
    sec.intro = f"Preset {st.get('preset')!r}; command: {st.get('command', '-')}"
    ae = run.json("ae/summary.json")
    sec.tables.append(Table("Run", ["setting", "value"], [
        ["preset", str(st.get("preset"))], ["overrides", ", ".join(st.get("overrides") or []) or "none"],
        ["data", str(ae.get("data") or st.get("data_dir") or "the embedded MNIST")],
        ["images (train / validation / test)", f"{num(ae.get('n_train'))} / {num(ae.get('n_val'))} / {num(ae.get('n_test'))}"],
        ["device", str(ae.get("device") or st.get("device") or "-")],
        ["started", str(st.get("created"))], ["last update", str(st.get("updated"))], ["status", str(st.get("status"))],
    ]))  # fmt: skip
    rows = []
    for name in ("ae", "dae", "gan"):
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


def ae_section(run: RunFolder) -> Section:
    sec = Section("autoencoder", "2. Autoencoder")
    if "search" in run.stages:
        sec.figures += _search(run, sec)
    sec.missing = run.not_run("ae", "trained autoencoder")
    if sec.missing:
        return sec
    s = run.json("ae/summary.json")
    test = s.get("test", {})
    trial = f" It is the search's best trial, {s['search_trial']}." if s.get("search_trial") else ""
    sec.intro = (f"The convolutional autoencoder trained {num(s.get('epochs'))} epochs on {num(s.get('n_train'))} "
                 f"images in {num(s.get('train_seconds'))} s.{trial}")  # fmt: skip
    sec.tables.append(Table(f"Test reconstruction quality ({num(s.get('n_test'))} test images)",
                            ["MSE", "PSNR (dB)", "SSIM", "best validation MSE"],
                            [[num(test.get("mse")), num(test.get("psnr")), num(test.get("ssim")),
                              num(s.get("best_val_loss"))]]))  # fmt: skip
    sec.figures += run.figure("ae/figures/loss_curves.png", "Training and validation reconstruction MSE "
                              "per epoch (log scale). x: epoch; y: MSE.")  # fmt: skip
    sec.figures += run.figure("ae/figures/reconstructions.png", "Top row: test images; bottom row: their "
                              "reconstructions (image grid, no axes: one column per digit).")  # fmt: skip
    return sec


def _search(run: RunFolder, sec: Section) -> list[Figure]:
    missing = run.not_run("search", "grid-search table")
    if missing:
        sec.notes.append(missing)
        return []
    path = run.root / "search" / "results.csv"
    if not path.is_file():
        sec.notes.append(f"The search stage is marked done but {path.name} is missing from search/.")
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    spec = run.json("search/search.json")
    params = list(spec.get("grid", {}))
    objective = spec.get("objective", "val_loss")
    cols = ["rank", "trial", *params, objective, "status", "best_epoch", "test_mse", "train_seconds"]
    cols = list(dict.fromkeys(cols))
    body = [[_cell(r.get(c)) for c in cols] for r in rows]
    sec.tables.append(Table(f"Grid search: {len(rows)} trials ranked by {objective} (best first); "
                            f"preset {spec.get('preset')!r}", cols, body))  # fmt: skip
    return run.figure("search/val_curves.png", "Validation loss per epoch of every trial (log scale), the "
                      "best one thick black. x: epoch; y: validation MSE.")  # fmt: skip


def _cell(text: str | None) -> str:
    try:
        return num(float(text)) if text not in (None, "") and not str(text).isdigit() else (text or "-")
    except ValueError:
        return text or "-"


def denoising_section(run: RunFolder) -> Section:
    sec = Section("denoising", "3. Denoising autoencoder")
    sec.missing = run.not_run("dae", "denoising result")
    if sec.missing:
        return sec
    s = run.json("dae/summary.json")
    noise = s.get("noise", {})
    sec.intro = (f"The same network trained on inputs plus Gaussian noise (sigma {num(noise.get('sigma'))}, "
                 f"clip {noise.get('clip')}) against the clean image, {num(s.get('epochs'))} epochs; tested on "
                 "fixed, seeded noise beside the plain autoencoder of section 2 fed the same noisy images.")  # fmt: skip
    has_ae = any("ae" in r for r in s.get("denoising", []))
    cols = ["sigma", "noisy PSNR", "noisy SSIM", "DAE PSNR", "DAE SSIM"]
    cols += ["plain AE PSNR", "plain AE SSIM"] if has_ae else []
    rows = []
    for r in s.get("denoising", []):
        row = [num(r.get("sigma")), num(r["noisy"]["psnr"]), num(r["noisy"]["ssim"]),
               num(r["dae"]["psnr"]), num(r["dae"]["ssim"])]  # fmt: skip
        if has_ae:
            row += [num(r.get("ae", {}).get("psnr")), num(r.get("ae", {}).get("ssim"))]
        rows.append(row)
    sec.tables.append(Table(f"Test set ({num(s.get('n_test'))} images): PSNR (dB) and SSIM against the clean "
                            "image, of the noisy input and of each model's output", cols, rows))  # fmt: skip
    sec.figures += run.figure("dae/figures/denoising_examples.png", "Triplets per noise level (one row per "
                              "sigma): noisy input, DAE output" + (", plain AE output" if has_ae else "")
                              + ", original (image grid, no axes).")  # fmt: skip
    sec.figures += run.figure("dae/figures/denoising_metrics.png", "PSNR and SSIM against the noise level. "
                              "x: noise sigma; y: PSNR (dB) / SSIM against the clean image.")  # fmt: skip
    sec.figures += run.figure("dae/figures/loss_curves.png", "DAE training and validation MSE per epoch. "
                              "x: epoch; y: MSE against the clean image (log scale).")  # fmt: skip
    return sec


def classification_section(run: RunFolder) -> Section:
    sec = Section("classification", "4. Classification with the encoder")
    sec.missing = run.not_run("probe", "probe or fine-tuning result")
    if sec.missing:
        return sec
    s = run.json("ae/probe/summary.json")
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
    f = "ae/probe/figures/"
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
    sec = Section("latent", "5. Latent space")
    sec.missing = run.not_run("latent", "latent-space map")
    if sec.missing:
        return sec
    s = run.json("ae/latent/summary.json")
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
    d = "ae/latent/"
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


def _first(table: dict[str, Any], *names: str) -> list[tuple[str, Any]]:
    """The items of `table` with `names` first, in that order (JSON files keep keys sorted)."""
    head = [(n, table[n]) for n in names if n in table]
    return head + [(k, v) for k, v in table.items() if k not in names]


def gan_section(run: RunFolder) -> Section:
    sec = Section("gan", "6. GAN")
    sec.missing = run.not_run("gan", "GAN result")
    if sec.missing:
        return sec
    s = run.json("gan/summary.json")
    cfg = read_toml(run.root / "gan" / "config.toml").get("gan", {})
    test = s.get("test", {})
    sec.intro = (f"The GAN trained {num(s.get('epochs'))} epochs on {num(s.get('n_train'))} images in "
                 f"{num(s.get('train_seconds'))} s (status {s.get('status')}); grids kept at epochs "
                 f"{', '.join(str(e) for e in cfg.get('gan', {}).get('grid_epochs', []) or [])}".rstrip() + ".")  # fmt: skip
    if test:
        hist = test.get("class_hist") or []
        sec.tables.append(Table(f"Final samples ({num(s.get('n_samples_scored'))}) scored against the test set",
                                ["FID-MNIST", "precision", "recall", "KL(class | uniform)", "rarest digit",
                                 "commonest digit", "nearest training image (L2)"],
                                [[num(test.get("fid_mnist")), num(test.get("precision")), num(test.get("recall")),
                                  num(test.get("kl_uniform")), pct(min(hist)) if hist else "-",
                                  pct(max(hist)) if hist else "-", num(test.get("nn_train_dist"))]]))  # fmt: skip
    sec.warnings = list(s.get("collapse_warnings", []))
    if not sec.warnings:
        sec.notes.append("The collapse detector raised no warning.")
    g = "gan/figures/"
    sec.figures += run.figure(g + "epoch_grids.png", "The same fixed noise decoded at each kept epoch "
                              "(one panel per epoch; image grids, no axes).")  # fmt: skip
    sec.figures += run.figure(
        g + "samples_final.png", "Final generator: samples from fixed noise (image grid, no axes)."
    )
    sec.figures += run.figure(
        g + "loss_curves.png", "Discriminator and generator losses (epoch means). x: epoch; y: BCE loss."
    )
    sec.figures += run.figure(
        g + "fid_by_epoch.png", "FID-MNIST of samples at the kept epochs. x: epoch; y: FID-MNIST (log scale)."
    )
    sec.figures += run.figure(g + "coverage_by_epoch.png", "Share of the rarest and commonest generated digit. "
                              "x: epoch; y: share of samples.")  # fmt: skip
    sec.figures += run.figure(g + "class_histogram.png", "Final samples by digit, as the reference classifier "
                              "reads them. x: digit; y: share of samples (red: outside 5%-15%).")  # fmt: skip
    sec.figures += run.figure(g + "d_outputs.png", "Mean discriminator output on real and generated images. "
                              "x: epoch; y: mean D output.")  # fmt: skip
    return sec


def _mean_and_range(row: dict, key: str) -> str:
    """'92.38%' or, for a row averaged over labelled subsets, '92.38% (91.92-92.91)'."""
    values = [s[key] for s in row.get("subsets", [])]
    text = pct(row.get(key))
    return f"{text} ({100 * min(values):.2f}-{100 * max(values):.2f})" if values else text


def _points(diff) -> str:
    return "-" if diff is None else f"{100 * float(diff):+.1f} points"


def comparison_section(run: RunFolder) -> Section:
    sec = Section("original", "7. Against the original report")
    sec.intro = ("Left: the original report's own numbers, as it printed them (not measured here). Right: "
                 "this run's measured numbers, read from the run folder.")  # fmt: skip
    o = ORIGINAL
    probe = run.json("ae/probe/summary.json") if run.done("probe") else {}
    ae_cfg = read_toml(run.root / "ae" / "config.toml").get("ae", {}) if run.done("ae") else {}
    ae_sum = run.json("ae/summary.json") if run.done("ae") else {}
    gan = run.json("gan/summary.json") if run.done("gan") else {}
    scratch = next(
        (r["scratch"] for r in probe.get("label_efficiency", []) if r["labels_per_class"] == "all"), None
    )
    ft = (probe.get("finetune") or {}).get("test_acc")
    tr, model = ae_cfg.get("train", {}), ae_cfg.get("model", {})
    source = (f"the search's best trial {ae_sum['search_trial']}" if ae_sum.get("search_trial")
              else f"preset {run.state.get('preset')!r}") if ae_cfg else "the ae stage has not run"  # fmt: skip
    hist = (gan.get("test") or {}).get("class_hist") or []
    poor = [d for d, h in enumerate(hist) if h < POOR_SHARE]
    poor_text = ("none" if not poor else ", ".join(map(str, poor))) if hist else "the gan stage has not run"
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


BUILDERS = (settings_section, ae_section, denoising_section, classification_section, latent_section,
            gan_section, comparison_section)  # fmt: skip


def build_sections(root: Path, state: dict[str, Any]) -> list[Section]:
    run = RunFolder(root, state)
    return [b(run) for b in BUILDERS]
