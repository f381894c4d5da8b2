"""The explorer's start-up cache: what `Explorer` computes from an encoder run before it can serve
(the codes of the test and training digits, the PCA of the test codes, the code samplers fitted to
the training codes), kept in the run folder as RUN/explorer_cache.safetensors so that the next start
reads it back instead of encoding ~58,000 digits and fitting a GMM again (most of a full-size run's
start on a CPU; reading the file back is a small fraction of that).

One safetensors file (arrays only, never unpickled), written atomically, with JSON metadata: the key
it was computed for and a SHA-256 of its arrays. The key holds everything the result depends on: the
checkpoint's SHA-256 (of the file's bytes, hashed before the weights are loaded and again after, so
a checkpoint replaced meanwhile is neither trusted nor cached), the run's whole config (data, model,
...), the size and modification time of the files of a --data-dir folder (the built-in datasets are
verified against their checksums), the sampler seed, components and names, and the format below. A
file with another key is recomputed and replaced. An unreadable or corrupt file costs one log line
and is rebuilt; a folder that cannot be written costs one log line and the computed state is served.
The file is claimed before it is written (runs.owner.claim_files): one of the user's by that name, a
run inside the installed package or one another process is writing is not written to (one log line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.core.config import to_doc
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.data import datasets
from mnistlab.models import code_samplers
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import CheckpointError, file_sha256, read_bytes
from mnistlab.runs.folder import checkpoint_path

log = logging.getLogger("mnistlab")

FILE = "explorer_cache.safetensors"
FORMAT = "mnistlab-explorer-cache-1"  # change it whenever what is computed or how it is stored changes
SAMPLERS = tuple(code_samplers.SAMPLERS)


@dataclass(frozen=True)
class Projection:
    """The PCA of the test codes (scikit-learn's, as `mnistlab latent`'s map) as its mean (d,) and
    components (k, d), k = min(2, d): all the explorer needs to place codes on the map and decode
    points of it, with scikit-learn's method names. Rebuilt from the cache without importing sklearn."""

    mean: np.ndarray
    components: np.ndarray

    @property
    def n_components_(self) -> int:
        return len(self.components)

    def transform(self, codes: np.ndarray) -> np.ndarray:  # (n, d) -> (n, k)
        return (np.asarray(codes) - self.mean) @ self.components.T

    def inverse_transform(self, points: np.ndarray) -> np.ndarray:  # (n, k) -> (n, d)
        return np.asarray(points) @ self.components + self.mean


@dataclass(frozen=True)
class StartState:
    """What the explorer starts from, computed or read back."""

    test_images: np.ndarray  # uint8 (N, 28, 28)
    test_labels: np.ndarray  # int64 (N,)
    test_codes: np.ndarray  # float32 (N, d)
    train_codes: np.ndarray  # float32 (N_train, d): the probe's standardization is recomputed from them
    pca: Projection
    samplers: dict[str, code_samplers.CodeSampler]
    errors: dict[str, str]  # sampler -> why it could not be fitted
    cached: bool  # read from the cache file


def checkpoint_sha256(run_dir: Path) -> str | None:
    """SHA-256 of the run's checkpoint file as it is now; None if it cannot be read."""
    try:
        return file_sha256(checkpoint_path(run_dir))  # a regular file only: a FIFO cannot hang the start
    except (OSError, CheckpointError):
        return None


def cache_key(run: Any, sha: str, seed: int, components: int) -> str:
    """The key (JSON text) a cache file must hold to be used for `run` (a TrainedRun) whose
    checkpoint hashed to `sha`."""
    config = json.dumps(to_doc(run.exp, run.task), sort_keys=True, default=str)
    folder, checksums = datasets.resolve_dir(run.exp.data)
    files = []
    if checksums is None:  # a --data-dir folder: nothing vouches for its bytes but their file times
        files = [
            [p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()
        ]
    key = {
        "format": FORMAT,
        "checkpoint_sha256": sha,
        "task": run.task,
        "data_files": files,
        "seed": seed,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "components": components,
        "samplers": list(SAMPLERS),
    }
    return json.dumps(key, sort_keys=True)


def start_state(
    run: Any, encoder: torch.nn.Module, sha: str | None, seed: int, components: int
) -> StartState:
    """The explorer's start state for encoder run `run` (a TrainedRun, its weights in `encoder`), from
    RUN/explorer_cache.safetensors when it was computed for the same inputs, else computed and saved
    there. `sha` is the checkpoint's SHA-256 taken before the weights were loaded."""
    path = Path(run.path) / FILE
    key = None
    if sha is not None and checkpoint_sha256(run.path) == sha:
        key = cache_key(run, sha, seed, components)
    else:
        log.warning("explorer: %s changed while it was loaded; its start-up cache is not used", run.path)
    if key is not None:
        t0 = time.perf_counter()
        test = datasets.load_test(run.exp.data)
        try:
            state = _read(path, key, test.images.numpy(), test.labels.numpy())
        except (OSError, CheckpointError) as e:
            # There but unreadable (permissions; a folder, FIFO or device, which read_bytes refuses
            # before reading): it could not be replaced either, so nothing is written.
            reason = getattr(e, "strerror", None) or e
            log.warning("explorer: start-up cache %s unreadable (%s); computing without it", path, reason)
            state, key = None, None
        if state is not None:
            log.info(
                "explorer: codes, PCA and samplers read from %s (%.2f s)", path, time.perf_counter() - t0
            )
            return state
    state = compute(encoder, datasets.load(run.exp.data), seed, components)
    if key is not None:
        _write(path, key, state)
    return state


def compute(encoder: torch.nn.Module, data: Any, seed: int, components: int) -> StartState:
    """Encode the test and training digits of `data` (mnistlab.data.datasets.Data), fit the PCA of the test
    codes and every code sampler to the training codes (a sampler that cannot be fitted is named
    in `errors`)."""
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    with torch.inference_mode():
        test_codes = code_samplers.encode(encoder, data.test.images)  # (N, d)
        train_codes = code_samplers.encode(encoder, data.train.images)  # (N_train, d)
    log.info(
        "explorer: %d test and %d training digits encoded (%.1f s)",
        len(test_codes),
        len(train_codes),
        time.perf_counter() - t0,
    )
    # The same PCA as `mnistlab latent`'s map (latent.pca_map), kept to place and decode points.
    pca = PCA(n_components=min(2, test_codes.shape[1]), random_state=seed).fit(test_codes)
    t0 = time.perf_counter()
    samplers, errors = {}, {}
    for name in SAMPLERS:
        try:  # fitted once; each request draws from it with its own seed
            samplers[name] = code_samplers.fit_sampler(name, train_codes, seed, components)
        except (ConfigError, ValueError) as e:
            errors[name] = str(e)
    log.info(
        "explorer: samplers fitted to %d training codes (%.1f s)", len(train_codes), time.perf_counter() - t0
    )
    return StartState(
        data.test.images.numpy(),
        data.test.labels.numpy(),
        test_codes,
        train_codes,
        Projection(pca.mean_, pca.components_),
        samplers,
        errors,
        cached=False,
    )


# ------------------------------------------------------------------------------- the file


def _arrays(state: StartState) -> dict[str, np.ndarray]:
    arrays = {
        "test_codes": state.test_codes,
        "train_codes": state.train_codes,
        "pca.mean": state.pca.mean,
        "pca.components": state.pca.components,
    }
    for name, sampler in state.samplers.items():
        arrays.update({f"sampler.{name}.{k}": v for k, v in sampler.state().items()})
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays' names, types, shapes and bytes: a flipped bit in the data is caught too."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write(path: Path, key: str, state: StartState) -> None:
    from safetensors.numpy import save

    arrays = _arrays(state)
    meta = {
        "format": FORMAT,
        "key": key,
        "errors": json.dumps(state.errors, sort_keys=True),
        "content_sha256": _digest(arrays),
    }
    try:
        # Into a run folder this process does not own: claimed first, so that a file of the user's
        # by that name, the installed package or a run another process is writing is left alone.
        owner.claim_files([path])
    except ConfigError as e:
        log.warning("explorer: start-up cache not written (%s); the next start computes it again", e)
        return
    try:
        atomic_write_bytes(path, save(arrays, metadata=meta))
    except OSError as e:
        log.warning(
            "explorer: start-up cache not written to %s (%s); the next start computes it again",
            path,
            e.strerror or e,
        )
    else:
        log.info("explorer: start-up cache written to %s", path)


def _read(path: Path, key: str, test_images: np.ndarray, test_labels: np.ndarray) -> StartState | None:
    """The state saved in `path` for `key`; None when there is none, or it was computed for other
    inputs, or it is corrupt (one log line); OSError or CheckpointError when the file is there but
    cannot be read (or is no regular file)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        meta = header.get("__metadata__") or {}
        if meta.get("format") != FORMAT or meta.get("key") != key:
            log.info("explorer: %s was computed for another checkpoint or settings; computing it again", path)
            return None
        arrays = load(raw)
        if meta.get("content_sha256") != _digest(arrays):
            raise ValueError("its arrays do not match the SHA-256 recorded with them")
        return _unpack(arrays, json.loads(meta["errors"]), test_images, test_labels)
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        why = " ".join(str(e).split())[:200]
        log.warning(
            "explorer: start-up cache %s is corrupt (%s: %s); rebuilding it", path, type(e).__name__, why
        )
        return None


def _unpack(
    arrays: dict[str, np.ndarray], errors: Any, test_images: np.ndarray, test_labels: np.ndarray
) -> StartState:
    """The state from the file's arrays, checked against the test set just read; ValueError if off."""
    test_codes, train_codes = arrays["test_codes"], arrays["train_codes"]
    mean, comps = arrays["pca.mean"], arrays["pca.components"]
    d = test_codes.shape[-1]
    ok = (
        test_codes.ndim == 2
        and len(test_codes) == len(test_labels)
        and train_codes.ndim == 2
        and train_codes.shape[1] == d
        and mean.shape == (d,)
        and comps.shape == (min(2, d), d)
        and all(np.isfinite(a).all() for a in (test_codes, train_codes, mean, comps))
    )
    if not ok:
        raise ValueError(f"arrays of the wrong shape for {len(test_labels)} test digits")
    if not isinstance(errors, dict) or not all(isinstance(v, str) for v in errors.values()):
        raise ValueError("its sampler errors are not a table of messages")
    samplers = {}
    for name in SAMPLERS:
        if name in errors:
            continue
        cls = code_samplers.SAMPLERS[name]
        samplers[name] = cls.from_state({f: arrays[f"sampler.{name}.{f}"] for f in cls.fields})
        if samplers[name].sample(1, np.random.default_rng(0)).shape != (1, d):
            raise ValueError(f"its {name} sampler draws codes of another size than {d}")
    return StartState(
        test_images,
        test_labels,
        test_codes,
        train_codes,
        Projection(mean, comps),
        samplers,
        {k: errors[k] for k in SAMPLERS if k in errors},
        cached=True,
    )
