"""Everything the explorer computes, loaded once from a run folder: `Explorer(run_dir)`.

At start: the encoder run and its test set (codes, the PCA map, saved t-SNE/UMAP maps), the training
codes (for the code samplers, fitted once, and for the probe's standardization; the codes, the PCA and
the fitted samplers are kept in RUN/explorer_cache.safetensors for the next start, see `cache.py`), the
probe head, the denoiser and every generator run (GAN, VAE prior, ...), each optional and each found
by its role. A missing piece makes its panels unavailable, with the reason in `info()`, and its API
calls answer 409 with that reason.

A classifier that encodes but does not decode (the semi task) serves as the encoder when the folder
holds no autoencoder: its test codes are mapped (PCA, computed here), its own head predicts from a
code, and what needs a decoder (reconstruction, sliders, interpolation, code samplers) is unavailable
with the reason. `info()` also says what the page opens on (a test digit), whether the run is
smoke-sized (`runs.smoke_note`) and the scores each sampler's run recorded (`runs.recorded_score`).

Requests take numpy arrays that the app has already checked for type and shape; the values a model
cannot take (codes out of range, unknown sampler or map) are checked here. Images are (28, 28) float32
in [0, 1] in, uint8 out. Inference runs under torch.inference_mode, read-only, so the app may call
these methods from several threads at once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import tasks
from mnistlab.data import datasets
from mnistlab.data.datasets import add_noise
from mnistlab.latent import maps as latent
from mnistlab.models import code_samplers
from mnistlab.runs import folder as rundir
from mnistlab.web import cache
from mnistlab.web.errors import ApiError
from mnistlab.web.runs import (
    LOAD_ERRORS,
    find_maps,
    find_report,
    find_runs,
    load_probe_head,
    recorded_score,
    smoke_note,
)

log = logging.getLogger("mnistlab")

KNN = 5  # a code's place on a map that cannot embed new points: the mean of its 5 nearest test codes
MAX_SAMPLES, MAX_STEPS, MAX_SIGMA = 256, 32, 2.0
SAMPLE_COUNTS = (16, 64, 256)  # the page's choices; the API takes any count in 1..MAX_SAMPLES
MAX_ROW_SAMPLES = 64  # per digit when every digit is drawn from the same noise: 640 digits at most
# Solver steps a request may ask of an ODE-solving generator: 256 digits x 50 network evaluations is the
# most one request costs; `mnistlab sample --steps` takes up to 1000.
MAX_SAMPLE_STEPS = 50
AE_SAMPLERS = tuple(code_samplers.SAMPLERS)  # uniform, gaussian, gmm
MAP_AXES = {"latent": "latent", "pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}
START_INDEX = 0  # the test digit the page opens on when its address names none
HEAD_CHECK = 32  # test digits on which a classifier's own head is checked against its predictions


class Explorer:
    def __init__(self, run_dir: Path, seed: int = 0, components: int = 10):
        t0 = time.perf_counter()
        self.run_dir = Path(run_dir)
        layout = find_runs(self.run_dir)
        self.layout = layout
        self.missing: dict[str, str] = dict(layout.missing)  # piece -> reason it is unavailable
        self.ae = self.dae = self.head = self.pca = None
        self.generators: dict[str, Any] = {}  # task name -> its generator (samplers + sample(request))
        # The generator-only tasks (the GANs): a sampler each on the page, unavailable without its run.
        self.generator_tasks = [s.name for s in tasks.with_role("generator") if "encoder" not in s.roles]
        self.conditional = {s.name: s.conditional for s in tasks.with_role("generator")}
        self.maps: dict[str, np.ndarray] = {}
        self.samplers: dict[str, Any] = {}
        self.probe_accuracy = None
        self.decoder = None  # the encoder run's decoder; None for a classifier that does not decode
        self.head_label = "linear probe"  # what predicts on the page: the probe, or the run's own head
        self.dae_sigma = None
        if layout.encoder is not None:
            self._try("encoder", lambda: self._load_ae(layout.encoder, seed, components))
        if layout.denoiser is not None:
            self._try("denoiser", lambda: self._load_dae(layout.denoiser))
        for name, folder in layout.generators.items():
            self._try(f"generator:{name}", lambda f=folder: self._load_generator(f))
        if self.ae is None and not self.generators:
            raise ApiError(409, "; ".join(f"{k}: {v}" for k, v in self.missing.items()))
        self.smoke = smoke_note(self.run_dir, layout)
        log.info("explorer ready in %.1f s (%s)", time.perf_counter() - t0, self.run_dir)

    def _try(self, piece: str, load) -> None:
        try:
            load()
        except LOAD_ERRORS as e:
            self.missing[piece] = f"{piece} run failed to load: {e}"
            log.warning("explorer: %s", self.missing[piece])

    # ------------------------------------------------------------------------------- loading

    def _load_ae(self, ae_dir: Path, seed: int, components: int) -> None:
        sha = cache.checkpoint_sha256(ae_dir)  # before the weights are read: the cache's key (web/cache.py)
        run = tasks.load_run(ae_dir, role="encoder")
        if "decoder" not in run.roles:
            self._load_classifier(run, seed)
            return
        model = _Coder(run.modules("encoder"), run.modules("decoder"))
        # Codes of the test and training digits, their PCA and the fitted samplers: read back from
        # RUN/explorer_cache.safetensors when it was computed for this checkpoint, else computed.
        state = cache.start_state(run, model.encoder, sha, seed, components)
        self.test_images, self.test_labels = state.test_images, state.test_labels  # uint8 (N, 28, 28), (N,)
        self.test_codes = state.test_codes  # (N, d)
        d = self.test_codes.shape[1]
        # Sliders span the test codes; a code may go one span further each way before it is refused.
        self.code_low, self.code_high = self.test_codes.min(0), self.test_codes.max(0)
        span = np.maximum(self.code_high - self.code_low, 1e-3)
        self.limit_low, self.limit_high = self.code_low - span, self.code_high + span
        self.ae, self.decoder = model, model.decoder
        self.pca = state.pca  # the PCA of the test codes, to place and decode points
        if d == 2:
            self.maps["latent"] = self.test_codes
        self.maps["pca"] = self._pca_points(self.test_codes)
        saved, reasons = find_maps(ae_dir, self.test_labels)
        self.maps.update(saved)
        self.missing.update({f"map:{k}": v for k, v in reasons.items()})
        self.samplers.update(state.samplers)  # fitted once; each request draws with its own seed
        self.missing.update({f"sampler:{k}": v for k, v in state.errors.items()})
        try:
            self.head, self.probe_accuracy = load_probe_head(ae_dir, d, state.train_codes)
        except LOAD_ERRORS as e:
            self.missing["probe"] = str(e)

    def _load_classifier(self, run: Any, seed: int) -> None:
        """A run that encodes and classifies but does not decode: its test codes, their PCA map, and
        its own head (codes -> logits) as the page's predictor. Its code samplers would draw codes
        nothing can decode, so none is fitted and no training digit is encoded."""
        run.require("classifier")
        encoder = run.modules("encoder").eval()
        test = datasets.load_test(run.exp.data)
        self.test_images, self.test_labels = test.images.numpy(), test.labels.numpy()  # (N, 28, 28), (N,)
        with torch.inference_mode():
            self.test_codes = code_samplers.encode(encoder, test.images)  # (N, d)
        self.code_low, self.code_high = self.test_codes.min(0), self.test_codes.max(0)
        span = np.maximum(self.code_high - self.code_low, 1e-3)
        self.limit_low, self.limit_high = self.code_low - span, self.code_high + span
        self.ae = _Coder(encoder, None)
        self.maps["pca"] = latent.pca_map(self.test_codes, seed)  # nothing to invert: a click finds a digit
        why = f"{run.path} holds a {run.task} run, which has no decoder"
        self.missing["decoder"] = why
        self.missing["map:tsne"] = f"no t-SNE map: `mnistlab latent` maps runs with a decoder only ({why})"
        for name in AE_SAMPLERS:
            self.missing[f"sampler:{name}"] = f"{why}: codes drawn from a sampler cannot be decoded"
        self.head_label = f"the {run.task} classifier itself"
        try:
            self.head = _own_head(run, encoder, test.images[:HEAD_CHECK])
        except LOAD_ERRORS as e:
            self.missing["probe"] = str(e)
        acc = rundir.read_summary(run.path).get("test", {})
        self.probe_accuracy = acc.get("accuracy") if isinstance(acc, dict) else None

    def _load_dae(self, dae_dir: Path) -> None:
        self.dae = tasks.load_run(dae_dir, role="denoiser")
        noise = getattr(self.dae, "noise", None)  # the noise it trained with, if the task says
        self.dae_sigma, self.dae_clip = (noise.sigma, noise.clip) if noise is not None else (1.0, False)

    def _load_generator(self, folder: Path) -> None:
        run = tasks.load_run(folder, role="generator")
        self.generators[run.task] = run.generator()

    def _pca_points(self, codes: np.ndarray) -> np.ndarray:
        pts = self.pca.transform(codes).astype(np.float32)
        return pts if pts.shape[1] == 2 else np.pad(pts, ((0, 0), (0, 2 - pts.shape[1])))  # 1-D latent

    # ------------------------------------------------------------------------------- checks

    def need(self, piece: str) -> None:
        """409 with the reason if `piece` (encoder, decoder, denoiser, probe, generator:NAME) did not
        load."""
        if piece.startswith("generator:"):
            loaded = self.generators.get(piece.split(":", 1)[1])
        else:
            loaded = {"encoder": self.ae, "decoder": self.decoder, "denoiser": self.dae, "probe": self.head}[
                piece
            ]
        if loaded is None:
            if piece.startswith("generator:"):
                name = piece.split(":", 1)[1]
                reason = (
                    self.missing.get(piece)
                    or self.missing.get("generator")
                    or f"no {name} run in {self.run_dir} (train one: `mnistlab train {name}`)"
                )
            else:
                reason = self.missing.get(piece) or self.missing.get(
                    "encoder", "the autoencoder is unavailable"
                )
            raise ApiError(409, f"{piece} unavailable: {reason}")

    @property
    def latent_dim(self) -> int:
        self.need("encoder")
        return self.test_codes.shape[1]

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """(n, d) float32 within the limits, else 422 naming the first bad value."""
        d = self.latent_dim
        if codes.ndim != 2 or codes.shape[1] != d:
            raise ApiError(422, f"a code has {d} numbers for this run, got {codes.shape[-1]}")
        bad = np.argwhere((codes < self.limit_low) | (codes > self.limit_high))
        if len(bad):
            i, j = bad[0]
            raise ApiError(
                422,
                f"code value {codes[i, j]:.4g} in dimension {j} is out of range "
                f"[{self.limit_low[j]:.4g}, {self.limit_high[j]:.4g}]",
            )
        return codes.astype(np.float32)

    def check_index(self, index: int) -> int:
        self.need("encoder")
        if not 0 <= index < len(self.test_labels):
            raise ApiError(404, f"test index {index} out of range 0..{len(self.test_labels) - 1}")
        return index

    def check_map(self, name: str) -> np.ndarray:
        self.need("encoder")
        if name not in self.maps:
            reason = self.missing.get(f"map:{name}", f"known maps: {', '.join(self.maps)}")
            raise ApiError(404, f"no map {name!r}: {reason}")
        return self.maps[name]

    # ------------------------------------------------------------------------------- inference

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) float in [0, 1] -> codes (n, d)."""
        self.need("encoder")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
            return self.ae.encoder(x.unsqueeze(1)).numpy()  # (n, 1, 28, 28) -> (n, d)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (n, d), checked -> uint8 (n, 28, 28)."""
        codes = self.check_codes(codes)
        self.need("decoder")
        with torch.inference_mode():
            return code_samplers.decode(self.decoder, codes)

    @property
    def decodable_maps(self) -> tuple[str, ...]:
        """The maps whose points can be decoded: PCA and a 2-d latent have an inverse, given a decoder."""
        return ("pca", "latent") if self.decoder is not None else ()

    def classify(self, codes: np.ndarray) -> np.ndarray:
        """Codes (n, d) -> the probe's class probabilities (n, 10)."""
        self.need("probe")
        with torch.inference_mode():
            return torch.softmax(self.head(torch.from_numpy(codes)), 1).numpy()

    def denoise(self, image: np.ndarray, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(28, 28) in [0, 1] plus N(0, sigma^2) noise (seeded; none for sigma 0) -> (noisy, denoised)
        uint8 images; the DAE sees the noise unclipped unless it was trained on clipped noise."""
        self.need("denoiser")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]  # (1, 1, 28, 28)
            if sigma > 0:
                x = add_noise(x, sigma, self.dae_clip, torch.Generator().manual_seed(seed))
            out = self.dae.denoise(x)  # (1, 28, 28)
        return _uint8(x[0, 0]), _uint8(out[0])

    def positions(self, code: np.ndarray) -> dict[str, list[float]]:
        """Where code (d,) lands on each map: PCA / latent exactly, the others at the mean place of
        its KNN nearest test codes (t-SNE and UMAP do not embed new points here)."""
        out = {}
        nearest = None
        for name, pts in self.maps.items():
            if name == "latent":
                p = code
            elif name == "pca" and self.pca is not None:
                p = self._pca_points(code[None])[0]
            else:
                if nearest is None:
                    dist = ((self.test_codes - code[None]) ** 2).sum(1)
                    nearest = np.argpartition(dist, min(KNN, len(dist) - 1))[:KNN]
                p = pts[nearest].mean(0)
            out[name] = [round(float(v), 4) for v in p]
        return out

    def click(self, name: str, x: float, y: float) -> dict[str, Any]:
        """A point of map `name`: decoded on PCA and latent maps (their inverse is known), else the
        nearest test digit."""
        pts = self.check_map(name)
        if name in self.decodable_maps:
            if name == "pca":
                code = self.pca.inverse_transform(np.array([[x, y]])[:, : self.pca.n_components_])
            else:
                code = np.array([[x, y]], dtype=np.float32)
            code = np.clip(code, self.limit_low, self.limit_high).astype(np.float32)
            return {"kind": "decoded", "code": _floats(code[0]), "image": self.decode(code)[0].tolist()}
        i = int((((pts - np.array([x, y], dtype=np.float32)) ** 2).sum(1)).argmin())
        return {"kind": "nearest", **self.test_item(i)}

    def test_item(self, index: int) -> dict[str, Any]:
        i = self.check_index(index)
        return {
            "index": i,
            "label": int(self.test_labels[i]),
            "image": self.test_images[i].tolist(),
            "code": _floats(self.test_codes[i]),
        }

    def _generator(self, sampler: str, digit: int | None, steps: int | None) -> Any:
        """The loaded generator of task `sampler`, once the digit and the steps asked are ones it takes."""
        self.need(f"generator:{sampler}")
        if digit is not None and not self.conditional.get(sampler):
            raise ApiError(422, f"the {sampler} sampler cannot be asked for a digit (not conditional)")
        gen = self.generators[sampler]
        if steps is not None and "steps" not in getattr(gen, "options", ()):
            raise ApiError(422, f"the {sampler} sampler takes no steps (it does not solve an ODE)")
        return gen

    def sample(
        self, sampler: str, n: int, seed: int, digit: int | None = None, steps: int | None = None
    ) -> np.ndarray:
        """n uint8 digits (n, 28, 28) from a code sampler (decoded) or a generator run (by task name);
        `digit` asks a conditional generator for that class (the same seed gives the same noise);
        `steps`, an ODE-solving generator's network evaluations per digit (None: its default)."""
        known = (*AE_SAMPLERS, *dict.fromkeys([*self.generator_tasks, *self.generators]))
        if sampler not in known:
            raise ApiError(422, f"unknown sampler {sampler!r}; choose one of {', '.join(known)}")
        if sampler not in AE_SAMPLERS:
            gen = self._generator(sampler, digit, steps)
            with torch.inference_mode():
                return gen.sample(
                    code_samplers.SampleRequest(gen.samplers[0], n, seed, digit=digit, steps=steps)
                )
        if steps is not None:
            raise ApiError(422, f"the {sampler} code sampler takes no steps (it does not solve an ODE)")
        if digit is not None:
            raise ApiError(422, f"the {sampler} code sampler cannot be asked for a digit (not conditional)")
        self.need("encoder")
        if sampler not in self.samplers:
            raise ApiError(409, f"sampler {sampler} unavailable: {self.missing.get(f'sampler:{sampler}')}")
        codes = self.samplers[sampler].sample(n, np.random.default_rng(seed))
        # A gaussian or gmm draw can land past the limits `decode` enforces on requests; clip it there.
        with torch.inference_mode():
            return code_samplers.decode(self.ae.decoder, np.clip(codes, self.limit_low, self.limit_high))

    def trajectory(
        self, sampler: str, seed: int, digit: int | None = None, steps: int | None = None
    ) -> np.ndarray:
        """One digit's way from noise: uint8 (k + 1, 28, 28), the noise, then the state after each of
        the k solver steps, from a generator that keeps its path (an ODE solver's)."""
        if sampler not in self.generator_tasks and sampler not in self.generators:
            raise ApiError(422, f"unknown generator {sampler!r}")
        gen = self._generator(sampler, digit, steps)
        if not hasattr(gen, "trajectory"):
            raise ApiError(
                422, f"the {sampler} sampler has no path from noise to digit (it does not solve an ODE)"
            )
        with torch.inference_mode():
            return gen.trajectory(
                code_samplers.SampleRequest(gen.samplers[0], 1, seed, digit=digit, steps=steps)
            )

    def interpolate(self, z0: np.ndarray, z1: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes (steps, d) on the line from z0 to z1 and their decoded digits (steps, 28, 28)."""
        codes = latent.interpolate(self.check_codes(z0[None])[0], self.check_codes(z1[None])[0], steps)
        return codes, self.decode(codes)

    def map_data(self, name: str) -> dict[str, Any]:
        pts = self.check_map(name)
        return {
            "name": name,
            "axis": MAP_AXES.get(name, name),
            "decodable": name in self.decodable_maps,
            "x": np.round(pts[:, 0], 4).tolist(),
            "y": np.round(pts[:, 1], 4).tolist(),
            "labels": self.test_labels.tolist(),
        }

    # ------------------------------------------------------------------------------- info

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out: which panels work, and why the others do not."""

        def panel(*pieces: str) -> dict[str, Any]:
            for p in pieces:
                try:
                    self.need(p)
                except ApiError as e:
                    return {"available": False, "reason": e.message}
            return {"available": True, "reason": ""}

        ae = self.ae is not None
        samplers = {
            s: (
                {"available": True, "reason": "", "label": f"{s} codes, decoded"}
                if s in self.samplers
                else {
                    "available": False,
                    "label": f"{s} codes, decoded",
                    "reason": self.missing.get(f"sampler:{s}") or panel("encoder")["reason"],
                }
            )
            for s in AE_SAMPLERS
        }
        for s in self.samplers:
            samplers[s]["score"] = recorded_score(self.layout.encoder, s)
        for name in dict.fromkeys([*self.generator_tasks, *self.layout.generators]):
            folder = self.layout.generators.get(name)
            default = getattr(self.generators.get(name), "samplers", ("prior",))[0]
            samplers[name] = {
                **panel(f"generator:{name}"),
                "label": f"{name} (its {default})",
                "run": str(folder) if folder else None,
                "conditional": bool(self.conditional.get(name)),
                "score": recorded_score(folder, name, default) if folder else None,
            }
            gen = self.generators.get(name)
            if "steps" in getattr(gen, "options", ()):  # an ODE solver: the page shows a steps slider
                samplers[name]["steps"] = {
                    "default": min(gen.default_steps, MAX_SAMPLE_STEPS),
                    "max": MAX_SAMPLE_STEPS,
                }
                samplers[name]["trajectory"] = hasattr(gen, "trajectory")
        on = any(v["available"] for v in samplers.values())
        sampler_panel = {
            "available": on,
            "reason": ""
            if on
            else "no generator run, and no autoencoder whose decoder could decode sampled codes",
        }
        maps = {
            m: {"available": True, "decodable": m in self.decodable_maps, "axis": MAP_AXES.get(m, m)}
            for m in self.maps
        }
        for key, reason in self.missing.items():
            if key.startswith("map:"):
                maps[key[4:]] = {"available": False, "reason": reason, "axis": MAP_AXES.get(key[4:], key[4:])}
        report = find_report(self.run_dir)  # looked up per call: a report may be written while serving
        return {
            "run": str(self.run_dir),
            "run_name": self.run_dir.resolve().name,
            "smoke": self.smoke,
            "start_index": START_INDEX if ae else None,
            "report": report.relative_to(self.run_dir.resolve()).as_posix() if report else None,
            "runs": {
                "encoder": str(self.layout.encoder) if self.layout.encoder else None,
                "denoiser": str(self.layout.denoiser) if self.layout.denoiser else None,
                "generators": {k: str(v) for k, v in self.layout.generators.items()},
            },
            "panels": {
                "draw": panel("encoder"),
                "reconstruct": panel("encoder", "decoder"),
                "denoise": panel("denoiser"),
                "classify": panel("encoder", "probe"),
                "map": panel("encoder"),
                "sliders": panel("encoder", "decoder"),
                "interpolate": panel("encoder", "decoder"),
                "samplers": sampler_panel,
            },
            "latent_dim": self.test_codes.shape[1] if ae else None,
            "code_low": _floats(self.code_low) if ae else None,
            "code_high": _floats(self.code_high) if ae else None,
            "limit_low": _floats(self.limit_low) if ae else None,
            "limit_high": _floats(self.limit_high) if ae else None,
            "n_test": len(self.test_labels) if ae else 0,
            "maps": maps,
            "samplers": samplers,
            "probe_accuracy": self.probe_accuracy,
            "predictor": self.head_label,
            "dae_sigma": self.dae_sigma,
            "limits": {
                "max_samples": MAX_SAMPLES,
                "max_steps": MAX_STEPS,
                "max_sigma": MAX_SIGMA,
                "sample_counts": list(SAMPLE_COUNTS),
                "max_row_samples": MAX_ROW_SAMPLES,
            },
        }


class _Coder(torch.nn.Module):
    """The encoder and decoder of a run as one module with `.encoder` / `.decoder` (what the maps,
    sliders and samplers call); a classifier's run has no decoder (None)."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module | None):
        super().__init__()
        self.encoder = encoder.eval()
        self.decoder = decoder.eval() if decoder is not None else None


def _own_head(run: Any, encoder: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """A classifier run's last layer, codes (n, d) -> logits (n, 10), so that the page can predict
    from a code as it does with a probe: the `head` of the run's model, used only once it gives the
    run's own predictions on `images` (uint8 (n, 28, 28)); else a LOAD_ERRORS error with the reason."""
    head = getattr(getattr(run, "model", None), "head", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"the {run.task} run exposes no head over its codes to predict with")
    head = head.eval()
    with torch.inference_mode():
        mine = torch.softmax(head(torch.from_numpy(code_samplers.encode(encoder, images))), 1)
        theirs = run.classify(images)
    if not torch.allclose(mine, theirs.float(), atol=1e-4):
        raise ValueError(f"the {run.task} run's head does not give its own predictions from its codes")
    return head


def _uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


def _floats(v: np.ndarray) -> list[float]:
    return [round(float(a), 5) for a in np.asarray(v).ravel()]
