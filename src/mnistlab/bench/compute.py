"""The bench's measures computed from a finished run's checkpoint, through its `TrainedRun` (the task
registry's roles: encode, decode, denoise, generate): what `mnistlab compare` computes when a run's
summary.json lacks it. mnistlab.bench.compare decides what is missing and caches the results; this module
only measures, and draws the key figures compare shows side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import tasks
from mnistlab.core.errors import ConfigError, check_int, check_seed
from mnistlab.data.datasets import DataError, load, to_float
from mnistlab.data.noise import NoiseConfig, apply_noise, fixed_noise
from mnistlab.metrics import images as metrics
from mnistlab.metrics.codes import probe_accuracy
from mnistlab.metrics.generation import score_samples, to_uint8
from mnistlab.metrics.scores import nearest_distances
from mnistlab.plots.latent import image_grid
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.training.reference import load_reference

log = logging.getLogger("mnistlab")

GAIN_SIGMA = 1.0  # the noise level of the denoising gain
FIGURE_PREFIX = "compare_"  # the figures compare draws into RUN/figures/
SAMPLE_KEYS = ("fid", "precision", "recall", "rarest", "commonest", "nn_train", "n_samples")


@dataclass(frozen=True)
class BenchConfig:
    """How the computed measures are measured (the cache keys carry these settings)."""

    samples: int = 10_000  # samples drawn and scored per sampler
    seed: int = 0  # of the samples, the probe and the precision/recall subsets
    probe_train: int = 10_000  # training codes the probe is fit on (lbfgs on all is slower, not better)
    # Samples whose nearest training image is searched (a seeded subset: the mean distance is estimated
    # to about 1%, and the search, N x 48,000 images of 784 pixels, would otherwise dominate the scoring)
    nn_samples: int = 2_000
    knn_k: int = 5
    samplers: tuple[str, ...] | None = None  # None: every sampler of a generator but bench.SKIP_SAMPLERS
    device: str = "cpu"

    def __post_init__(self):
        check_int(self.samples, "--samples", 10, 100_000, "precision/recall use 3 neighbours")
        check_int(self.probe_train, "--probe-train", 10, 1_000_000)
        check_int(self.nn_samples, "nn_samples", 1, 100_000)
        check_int(self.knn_k, "knn_k", 1, 1000)
        check_seed(self.seed, "--seed")


def score_measures(scores: dict[str, Any]) -> dict[str, Any]:
    """The bench's generator measures (SAMPLE_KEYS and the reference) from a `score_samples` result."""
    hist = scores.get("class_hist") or []
    return {
        "fid": scores.get("fid_mnist"),
        "precision": scores.get("precision"),
        "recall": scores.get("recall"),
        "rarest": min(hist) if hist else None,
        "commonest": max(hist) if hist else None,
        "nn_train": scores.get("nn_train_dist"),
        "n_samples": scores.get("n_samples"),
        "reference": scores.get("reference"),
    }


def history_timing(history: list[dict[str, Any]], n_train: Any) -> tuple[float | None, float | None]:
    """(train seconds, train images/s) from metrics.jsonl rows (cumulative seconds per epoch)."""
    if not history or "seconds" not in history[-1]:
        return None, None
    seconds = float(history[-1]["seconds"])
    epochs = history[-1].get("epoch", len(history))
    rate = n_train * epochs / seconds if isinstance(n_train, int) and seconds > 0 else None
    return round(seconds, 2), (round(rate, 1) if rate is not None else None)


def parameter_count(run: Any) -> int:
    """Parameters of the networks a loaded run holds (each counted once, however it is reached):
    the modules among its attributes and theirs, three levels down (a GAN run holds its generator)."""
    seen: dict[int, int] = {}
    visited: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in visited or depth > 3 or torch.is_tensor(obj):
            return
        visited.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            seen.update((id(p), p.numel()) for p in obj.parameters())
            return
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else None
        for value in items if items is not None else getattr(obj, "__dict__", {}).values():
            walk(value, depth + 1)

    walk(run, 0)
    return sum(seen.values())


class Shared:
    """What the runs of one compare share: the data of a data config and its reference classifier
    (whose features of the real test images are then computed once)."""

    def __init__(self):
        self._data: dict[Any, Any] = {}
        self._refs: dict[Any, Any] = {}

    def data(self, cfg) -> Any:
        if cfg not in self._data:
            self._data[cfg] = load(cfg)
        return self._data[cfg]

    def reference(self, cfg, device) -> Any:
        key = (cfg.data_dir, cfg.dataset, str(device))
        if key not in self._refs:
            self._refs[key] = load_reference(cfg, device, progress=False)
        return self._refs[key]


class Computer:
    """The measures of one finished run folder, from its checkpoint; the run is loaded on first use.
    A measure that cannot be computed gives no value and a line in `notes` saying why."""

    def __init__(self, path: Path, label: str, roles: frozenset[str], cfg: BenchConfig, shared: Shared):
        self.path, self.label, self.roles, self.cfg, self.shared = Path(path), label, roles, cfg, shared
        self.notes: list[str] = []
        self._run: tasks.TrainedRun | None = None
        self._codes: dict[str, Any] = {}

    @property
    def run(self) -> tasks.TrainedRun:
        if self._run is None:
            self._run = tasks.load_run(self.path, self.cfg.device)
        return self._run

    @property
    def data(self) -> Any:
        return self.shared.data(self.run.exp.data)

    def codes(self, split: str) -> Any:
        if split not in self._codes:
            self._codes[split] = self.run.encode(getattr(self.data, split).images)  # (N, d)
        return self._codes[split]

    def attempt(self, what: str, step: Callable[[], Any]) -> Any:
        """step(), or None and a note when it fails: one run's broken measure leaves a '-' and says why,
        and the other measures and runs are still measured."""
        try:
            return step()
        except (ConfigError, DataError) as err:
            self.notes.append(f"no {what}: {err}")
        except Exception as err:  # a role method that fails is a bug of its task: logged with its traceback
            log.warning("compare: %s: computing %s failed", self.label, what, exc_info=True)
            self.notes.append(f"no {what}: computing it failed ({type(err).__name__}: {err})")
        return None

    def measures(self, missing: list[str]) -> dict[str, Any]:
        """The run-level measures among `missing` that can be computed: {key: value}."""
        steps = [
            (("mse", "psnr", "ssim"), self._reconstruction),
            (("denoise_gain",), self._denoise_gain),
            (("probe_acc",), self._probe),
            (("knn_acc",), self._knn),
            (("params",), self._params),
            (("n_test",), lambda: {"n_test": len(self.data.test)}),
            (("train_seconds", "images_per_s"), self._timing),
        ]
        out: dict[str, Any] = {}
        for keys, step in steps:
            wanted = [k for k in keys if k in missing]
            if wanted:
                log.info("compare: %s: computing %s", self.label, ", ".join(wanted))
                got = self.attempt(", ".join(wanted), step) or {}
                out.update({k: v for k, v in got.items() if k in wanted and v is not None})
        return out

    def _reconstruction(self) -> dict[str, float]:
        if "encoder" not in self.roles:
            self.notes.append("no reconstruction measures: a decoder without an encoder has no test codes")
            return {}
        x = to_float(self.data.test.images)  # (N, 1, 28, 28)
        recon = self.run.decode(self.codes("test"))[:, None]  # (N, 1, 28, 28)
        return {
            "mse": round(metrics.mse(recon, x).mean().item(), 6),
            "psnr": round(metrics.psnr(recon, x).mean().item(), 6),
            "ssim": round(metrics.ssim(recon, x).mean().item(), 6),
        }

    def noisy(self, n: int | None = None) -> tuple[Any, Any]:
        """(clean, noisy) first n test images (N, 1, 28, 28): sigma GAIN_SIGMA, and the noise seed and
        clipping the run trained with when its task says (its `noise`), else NoiseConfig's."""
        noise = getattr(self.run, "noise", None) or NoiseConfig()
        x = to_float(self.data.test.images[:n])
        eps = fixed_noise(len(self.data.test), noise.seed, "test")[: len(x)]  # the test table's noise
        return x, apply_noise(x, eps, GAIN_SIGMA, noise.clip)

    def _denoise_gain(self) -> dict[str, float]:
        x, noisy = self.noisy()
        out = self.run.denoise(noisy)[:, None]  # (N, 1, 28, 28)
        gain = metrics.psnr(out, x).mean().item() - metrics.psnr(noisy, x).mean().item()
        return {"denoise_gain": round(gain, 6)}

    def _probe(self) -> dict[str, float]:
        n = min(self.cfg.probe_train, len(self.data.train))
        acc = probe_accuracy(
            self.codes("train")[:n].numpy(),
            self.data.train.labels[:n].numpy(),
            self.codes("test").numpy(),
            self.data.test.labels.numpy(),
            seed=self.cfg.seed,
        )
        return {"probe_acc": round(acc, 6)}

    def _knn(self) -> dict[str, float]:
        from sklearn.neighbors import KNeighborsClassifier

        train, test = self.codes("train").numpy(), self.codes("test").numpy()
        knn = KNeighborsClassifier(n_neighbors=min(self.cfg.knn_k, len(train)))
        knn.fit(train, self.data.train.labels.numpy())
        return {"knn_acc": round(float((knn.predict(test) == self.data.test.labels.numpy()).mean()), 6)}

    def _params(self) -> dict[str, int]:
        return {"params": parameter_count(self.run)}

    def _timing(self) -> dict[str, Any]:
        seconds, rate = history_timing(rundir.read_history(self.path), len(self.data.train))
        if seconds is None:
            self.notes.append("no train seconds: neither summary.json nor metrics.jsonl records them")
        return {"train_seconds": seconds, "images_per_s": rate}

    def score(self, sampler: str) -> tuple[dict[str, Any], Any] | None:
        """(measures, the first 100 samples) of `cfg.samples` samples of `sampler`, or None."""

        def step():
            images = self.run.generate(self.cfg.samples, seed=self.cfg.seed, sampler=sampler).numpy()
            ref = self.shared.reference(self.run.exp.data, self.run.device)
            scores = score_samples(images, ref, self.data.test, None, seed=self.cfg.seed)
            n = min(self.cfg.nn_samples, len(images))
            pick = np.sort(np.random.default_rng(self.cfg.seed).choice(len(images), n, replace=False))
            dist, _ = nearest_distances(torch.from_numpy(images[pick]), self.data.train.images)
            scores["nn_train_dist"] = round(float(dist.mean()), 4)
            return score_measures(scores), images[:100]  # uint8 (100, 28, 28)

        log.info("compare: %s: scoring %d samples of the %s sampler", self.label, self.cfg.samples, sampler)
        return self.attempt(f"scores of the {sampler} sampler", step)

    # ----------------------------------------------------------------------------------- figures

    def grid(self, kind: str, images: Any, title: str) -> tuple[str, str] | None:
        """Draw uint8 digits (N, 28, 28), ten per row, into RUN/figures/; (file name, title) or None."""
        file = f"{FIGURE_PREFIX}{kind.replace(':', '_')}.png"
        try:
            owner.claim_files([self.path / "figures" / file])  # new, or mnistlab's: the run's figure
            image_grid(images, self.path / "figures" / file, title, ncols=10)
        except ConfigError as e:
            self.notes.append(f"{file} not drawn ({e})")
            return None
        except OSError as e:
            self.notes.append(f"cannot draw {file} ({e.strerror})")
            return None
        return file, title

    def figures(self, have: set[str], samplers: list[str]) -> dict[str, tuple[str, str]]:
        """The key figures not in `have`: the same ten test digits reconstructed ("reconstructions")
        and denoised ("denoising") by every model, 100 samples of each sampler ("samples:<name>");
        kind -> (file name in RUN/figures, title)."""
        return self.attempt("key figures", lambda: self._figures(have, samplers)) or {}

    def _figures(self, have: set[str], samplers: list[str]) -> dict[str, tuple[str, str]]:
        drawn: dict[str, tuple[str, str] | None] = {}
        if {"encoder", "decoder"} <= self.roles and "reconstructions" not in have:
            x = self.data.test.images[:10]
            rows = np.concatenate([x.numpy(), to_uint8(self.run.decode(self.run.encode(x)))])
            drawn["reconstructions"] = self.grid(
                "reconstructions", rows, "test digits (top), reconstructions (bottom)"
            )
        if "denoiser" in self.roles and "denoising" not in have:
            x, noisy = self.noisy(10)
            out = self.attempt("denoising figure", lambda: self.run.denoise(noisy))
            if out is not None:
                rows = np.concatenate([to_uint8(noisy), to_uint8(out), to_uint8(x)])
                drawn["denoising"] = self.grid(
                    "denoising", rows, f"rows: noisy (sigma {GAIN_SIGMA:g}), denoised, clean"
                )
        for name in samplers:
            kind = f"samples:{name}"
            if kind not in have:
                images = self.run.generate(100, seed=self.cfg.seed, sampler=name).numpy()
                drawn[kind] = self.grid(kind, images, f"100 samples, {name} sampler")
        return {k: v for k, v in drawn.items() if v is not None}
