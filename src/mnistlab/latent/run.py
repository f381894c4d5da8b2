"""`mnistlab latent RUN_DIR`: the latent-space study of an autoencoder run, written into the run.

1. Encode the test set; 2-D maps (PCA, t-SNE, UMAP if installed) as scatter PNGs and CSV
   coordinates, with cluster quality (silhouette, k-NN accuracy) for each map and the raw latent.
   A 2-D latent is plotted directly, with its decoded manifold.
2. Sample digits with each code sampler (uniform, gaussian, gmm) and interpolate between pairs of
   test digits; PNG grids.
3. Evidence: FID-MNIST, precision/recall and class coverage of each sampler's digits (and of the
   test reconstructions) beside the floor (the test set scored against the train set), in
   summary.json["latent"] and figures/latent/generation_metrics.png.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import tasks
from mnistlab.core.errors import ConfigError, check, check_seed
from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.data.datasets import load
from mnistlab.latent import maps as latent
from mnistlab.metrics.generation import format_table, score_floor, score_samples
from mnistlab.models import code_samplers
from mnistlab.plots.latent import (
    evidence_figure,
    image_grid,
    interpolation_figure,
    manifold_figure,
    scatter_map,
)
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.training.reference import load_reference

log = logging.getLogger("mnistlab")


@dataclass(frozen=True)
class LatentConfig:
    maps: tuple[str, ...] = field(default_factory=latent.default_maps)
    samplers: tuple[str, ...] = tuple(code_samplers.SAMPLERS)
    n_samples: int = 0  # digits drawn per sampler for the metrics; 0 = as many as test images
    components: int = 10  # gmm components
    knn_k: int = 5  # neighbours for the k-NN accuracy of a map
    pairs: int = 8  # interpolation rows
    steps: int = 10  # decoded points per interpolation row (ends included)
    seed: int = 0
    score: bool = True  # compute the generation metrics (needs the reference classifier)
    tsne: latent.TSNEConfig = field(default_factory=latent.TSNEConfig)

    def __post_init__(self):
        for m in self.maps:
            check(m in latent.MAPS, f"unknown map {m!r}; choose from {', '.join(latent.MAPS)}")
        for s in self.samplers:
            check(
                s in code_samplers.SAMPLERS,
                f"unknown sampler {s!r}; choose one of {', '.join(code_samplers.SAMPLERS)}",
            )
        check(self.n_samples >= 0, f"--n must be >= 0 (0 = as many as test images), got {self.n_samples}")
        check(self.components >= 1, f"--components must be >= 1, got {self.components}")
        check_seed(self.seed, "--seed")  # numpy's and scikit-learn's seeds: 0 .. 2^32 - 1
        check(self.knn_k >= 1 and self.pairs >= 1 and self.steps >= 2, "knn_k, pairs >= 1 and steps >= 2")


def load_encoder_run(run_dir: Path, device: torch.device | None = None):
    """The TrainedRun of a run with an encoder; other runs give a one-line error. Its decoder, where
    it has one, draws the samplers, interpolations and the 2-D manifold; without one (a classifier's
    features) only the maps and their cluster quality are made."""
    return tasks.load_run(run_dir, device or torch.device("cpu"), role="encoder")


def write_csv(path: Path, labels: np.ndarray, points: np.ndarray, names: tuple[str, str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "label", *names])
    for i, (lab, (a, b)) in enumerate(zip(labels.tolist(), points.tolist())):
        w.writerow([i, lab, f"{a:.6g}", f"{b:.6g}"])
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def _maps(
    cfg: LatentConfig, codes: np.ndarray, labels: np.ndarray, decoder, device, out: Path, name: str
) -> dict:
    results: dict[str, Any] = {
        "raw": {"dim": codes.shape[1], **latent.cluster_quality(codes, labels, cfg.knn_k, cfg.seed)}
    }
    maps = dict.fromkeys(cfg.maps)
    if codes.shape[1] == 2:
        maps = {"latent": None, **maps}  # the latent itself is the first map
    for m in maps:
        log.info("latent map: %s of %d codes", m, len(codes))
        if m == "latent":
            pts = codes
        elif m == "tsne":
            pts = latent.tsne_map(codes, cfg.seed, cfg.tsne)
        else:
            pts = latent.MAPS[m](codes, cfg.seed)
        q = latent.cluster_quality(pts, labels, cfg.knn_k, cfg.seed)
        axis = {"latent": "latent", "pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}[m]
        write_csv(out / f"map_{m}.csv", labels, pts, (f"{m}_1", f"{m}_2"))
        caption = (
            f"{len(codes)} test codes of {name} ({codes.shape[1]}-D). Silhouette on the digit labels "
            f"{q['silhouette']:.3f} (raw latent {results['raw']['silhouette']:.3f}); leave-one-out "
            f"{cfg.knn_k}-NN accuracy in 2-D {q['knn_accuracy']:.3f} (raw {results['raw']['knn_accuracy']:.3f})."
        )
        scatter_map(pts, labels, out / f"map_{m}.png", f"{name}: {axis} map of the test codes", axis, caption)
        results[m] = q
    if codes.shape[1] == 2 and decoder is not None:
        grid = latent.manifold_grid(codes)
        imgs = code_samplers.decode(decoder, grid, device)
        manifold_figure(imgs, grid, 15, out / "manifold.png", f"{name}: decoded 2-D latent (15 x 15 grid)")
    return results


def run_latent(
    run_dir: Path,
    cfg: LatentConfig,
    device: torch.device | None = None,
    progress: bool = True,
    out: Path | None = None,
) -> dict:
    """The whole study for one run; figures and CSVs under `out` (default run_dir/figures/latent);
    returns the "latent" section added to summary.json (and written to out/summary.json with `out`)."""
    run_dir = Path(run_dir)
    device = device or torch.device("cpu")
    run = load_encoder_run(run_dir, device)
    task, exp = run.task, run.exp
    encoder = run.modules("encoder").to(device).eval()
    decoder = run.modules("decoder").to(device).eval() if "decoder" in run.roles else None
    # "ae run ae" says nothing twice: name the folder only when it is not just the task's name
    name = f"{task} run" if run_dir.name == task else f"{task} run {run_dir.name}"
    own_folder = out is not None
    owner.claim(run_dir, "train")  # its summary.json gets the "latent" section (and its figures the maps)
    out = owner.claim(out, "latent") if own_folder else run_dir / "figures" / "latent"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
    data = load(exp.data)
    test = data.test
    codes = code_samplers.encode(encoder, test.images, device)  # (N_test, d)
    labels = test.labels.numpy()
    section: dict[str, Any] = {"config": asdict(cfg), "n_test": len(test)}
    section["cluster_quality"] = _maps(cfg, codes, labels, decoder, device, out, name)
    if decoder is None:
        log.info("latent: %s has no decoder: its maps only (no samplers, interpolations or scores)", name)
        section["decoder"] = False
        return _record(run_dir, out if own_folder else None, task, section)

    gen = code_samplers.AutoencoderGenerator(encoder, decoder, data.train.images, device)
    n = cfg.n_samples or len(test)
    samples = {}
    for s in cfg.samplers:
        samples[s] = gen.sample(code_samplers.SampleRequest(s, n, cfg.seed, cfg.components))
        image_grid(samples[s][:100], out / f"samples_{s}.png", f"{name}: {s} sampler (100 of {n})")
    pairs = latent.pick_pairs(labels, cfg.pairs, cfg.seed)
    rows = []
    for i, j in pairs:
        line = code_samplers.decode(decoder, latent.interpolate(codes[i], codes[j], cfg.steps), device)
        rows.append(np.concatenate([test.images[i : i + 1].numpy(), line, test.images[j : j + 1].numpy()]))
    if rows:
        interpolation_figure(rows, out / "interpolation.png", f"{name}: straight lines between test codes")

    if cfg.score:
        ref = load_reference(exp.data, device, progress=progress)
        recon = code_samplers.decode(decoder, codes, device)  # what the decoder makes of real codes
        table = {
            "test (floor)": score_floor(ref, test, data.train, cfg.seed),
            "reconstruction": score_samples(recon, ref, test, data.train, seed=cfg.seed),
        }
        # How far to trust class coverage on decoder output: the reference's accuracy on the
        # reconstructions, whose true digits are known (blur can push a classifier to one class).
        recon_pred = ref.probs(recon).argmax(1)
        table["reconstruction"]["label_accuracy"] = round(float((recon_pred == labels).mean()), 4)
        for s, imgs in samples.items():
            log.info("scoring the %s sampler's %d digits", s, len(imgs))
            table[s] = score_samples(imgs, ref, test, data.train, seed=cfg.seed)
        caption = (
            f"Reference: {ref.name}. FID-MNIST: Frechet distance on the reference classifier's "
            f"penultimate features, not comparable with Inception FID. 'test (floor)': the {len(test)} "
            f"test images scored against as many training images; the others against the test set. "
            f"Precision/recall: k-NN manifolds (Kynkaanniemi et al. 2019)."
        )
        evidence_figure(table, out / "generation_metrics.png", f"{name}: digits from each sampler", caption)
        section["generation"] = {
            "reference": ref.name,
            "fid_note": table["test (floor)"]["fid_note"],
            "n_samples": n,
            "rows": table,
        }
        # A title, since in a study this table lands among other stages' lines; flushed, so that in a
        # log it sits where it was made and not where stdout's buffer happens to be written out.
        title = (
            f"generation scores of {name}: the test set (floor), its reconstructions, {n} digits per sampler"
        )
        acc = table["reconstruction"]["label_accuracy"]
        print(
            f"{title}\n{format_table(table)}\n"
            f"reference accuracy on the test reconstructions (true digits known): {acc:.3f}",
            flush=True,
        )
    return _record(run_dir, out if own_folder else None, task, section)


def _record(run_dir: Path, out: Path | None, task: str, section: dict) -> dict:
    """`section` as the "latent" part of the run's summary.json (and as out/summary.json)."""
    summary = rundir.read_summary(run_dir)
    summary["latent"] = section
    rundir.write_summary(run_dir, summary)
    if out is not None:
        rundir.write_summary(out, {"run": str(run_dir), "task": task, **section})
    return section
