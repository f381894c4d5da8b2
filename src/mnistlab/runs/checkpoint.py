"""Checkpoints as one safetensors file: every model and optimizer tensor plus the RNG states, with
all non-tensor state as JSON in the file's metadata. Written atomically; never unpickled.

Key layout: "module/<name>/<param>", "optim/<name>/<param id>/<key>", "rng/torch", "rng/numpy",
"rng/cuda/<i>". Metadata "state" holds {"format", "epoch", "step", "optim": {<name>: param_groups
and non-tensor state}, "rng_python", "rng_numpy", **extra} (files written before the format moved
into "state" carry it as a second metadata key).

Integrity: `<name>.sha256` next to each checkpoint records the SHA-256 of what was written, and every
read verifies the file against it (and against an expected hash the caller has, such as the run's
summary.json), so a checkpoint changed on disk is refused instead of silently loaded.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes, read_regular_bytes

FORMAT = "mnistlab-checkpoint-1"


# Far above any model a config allows (the default GAN's checkpoint with its optimizers is tens of MB):
# only a file that is not a checkpoint is this large.
MAX_BYTES = 4 << 30
SIDECAR_BYTES = 4096  # a few SHA-256 lines


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, not safetensors (e.g. a pickle), changed since it was
    written, or not matching."""


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(keys.astype(np.int64))
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    py = random.getstate()
    meta = {
        "rng_python": [py[0], list(py[1]), py[2]],
        "rng_numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    kind, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or DataParallel) wrapper, else the module itself:
    checkpoints hold plain state dicts (no "module." prefix), loadable by any number of processes."""
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return module.module if isinstance(module, parallel) else module


def save_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    step: int,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write everything needed to resume exactly; return the file's SHA-256."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in unwrap(module).state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().cpu().contiguous()
    optim_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, pstate in sd["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    state = {"epoch": epoch, "step": step, "optim": optim_meta, **rng_meta, **(extra or {}), "format": FORMAT}
    # One metadata key of sorted JSON: safetensors writes several metadata keys in a random order (a
    # Rust HashMap), so the same state saved by two processes would differ in bytes and SHA-256.
    data = st_save(tensors, metadata={"state": json.dumps(state, sort_keys=True)})
    sha = hashlib.sha256(data).hexdigest()
    _record(Path(path), sha)
    atomic_write_bytes(path, data)
    return sha


def sidecar_path(path: Path) -> Path:
    """Where the SHA-256 of checkpoint `path` is recorded as it is written: `<name>.sha256`."""
    return Path(path).with_name(Path(path).name + ".sha256")


def _record(path: Path, sha: str) -> None:
    """Record `sha` before `path` is replaced by the file it hashes, keeping the hash of the file being
    replaced: a crash between the two writes leaves either file verifiable, never a refused resume.
    The cost: the previous epoch's checkpoint, put back byte for byte, also verifies; any other
    change, a single flipped byte included, is still caught."""
    before = recorded_sha256(path)
    if before is None:  # a checkpoint from before the records: the file it is about to replace
        before = [file_sha256(path)] if path.exists() else []
    atomic_write_bytes(sidecar_path(path), "".join(f"{h}\n" for h in [sha, *before[:1]]).encode())


def recorded_sha256(path: Path) -> list[str] | None:
    """The hashes recorded for checkpoint `path` (newest first), or None when it has no record."""
    side = sidecar_path(path)
    try:
        return read_regular_bytes(side, SIDECAR_BYTES).decode().split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ConfigError) as e:
        raise CheckpointError(f"{side}: cannot read the checkpoint's recorded SHA-256 ({e})") from e


def verify(path: Path, raw: bytes, expected_sha256: str | None = None) -> None:
    """Refuse checkpoint bytes `raw` (read from `path`) unless they hash to what was recorded when the
    file was written: its sidecar, and `expected_sha256` (a run's summary.json) when given. A file with
    neither record is accepted, as every checkpoint was before the records existed."""
    actual = hashlib.sha256(raw).hexdigest()
    recorded = recorded_sha256(path)  # read after the bytes, so a save meanwhile still lists them
    if recorded is not None and actual not in recorded:
        _changed(path, actual, recorded[0] if recorded else "(none)", sidecar_path(path).name)
    if expected_sha256 and actual != expected_sha256:
        _changed(path, actual, expected_sha256, "the run's summary.json")


def _changed(path: Path, actual: str, expected: str, where: str) -> None:
    raise CheckpointError(
        f"{path}: changed since it was written (SHA-256 {actual[:16]}..., {where} recorded "
        f"{expected[:16]}...); refusing to load it"
    )


def read_checkpoint(
    path: Path, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, state) from a checkpoint, refusing anything that is not safetensors or that
    changed since it was written (see `verify`)."""
    try:
        raw = read_bytes(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from e
    verify(Path(path), raw, expected_sha256)
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
        state = json.loads(meta["state"])
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as e:
        # Sniff for pickle only after safetensors refused the file: a safetensors header length
        # (8 little-endian bytes) can itself start with 0x80, the pickle protocol marker.
        if raw[:2] == b"PK" or raw[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: a pickle/torch.save file, not safetensors; mnistlab never unpickles checkpoints"
            ) from e
        raise CheckpointError(f"{path}: not a valid mnistlab safetensors checkpoint ({e})") from e
    return tensors, state


def module_state(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The state dict of module `name` inside a checkpoint's tensors."""
    prefix = f"module/{name}/"
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not sd:
        raise CheckpointError(f"checkpoint holds no module {name!r}")
    return sd


def restore(
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Load modules, optimizers and RNG states saved by `save_checkpoint`."""
    if optimizers and "optim" not in state:
        raise CheckpointError(
            "a weights-only checkpoint (a shipped pretrained run) holds no optimizer or "
            "RNG state, so training cannot resume from it; train a new run instead"
        )
    for name, module in modules.items():
        try:
            unwrap(module).load_state_dict(module_state(tensors, name))
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint does not fit module {name!r}: {e}") from e
    for name, opt in optimizers.items():
        meta = state["optim"][name]
        per_param: dict[int, dict[str, Any]] = {}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, tkey = key[len(prefix) :].split("/", 1)
                per_param.setdefault(int(pid), {})[tkey] = value
        for pid, scalars in meta["scalars"].items():
            per_param.setdefault(int(pid), {}).update(scalars)
        # JSON turned tuples (Adam's betas) into lists; give them back their type.
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
        opt.load_state_dict({"state": per_param, "param_groups": groups})
        _match_layouts(opt)
    _set_rng_state(tensors, state)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each restored state tensor (Adam's moments) its parameter's memory layout. The file keeps
    them contiguous (NCHW) while channels_last conv weights are NHWC, and torch's fused Adam kernel
    walks a parameter and its moments as flat memory: without this, a resumed run would pair each
    weight with another weight's moments, wrong from the first step on (tests/test_training.py)."""
    for param, pstate in opt.state.items():
        for key, value in pstate.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                pstate[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def write_weights_only(src: Path, dst: Path, expected_sha256: str | None = None, half: bool = False) -> str:
    """Copy checkpoint `src` to `dst` keeping only the module tensors ("module/...") and the epoch and
    step: what loading a trained run needs, about a third of a resumable checkpoint (Adam keeps two
    moments per weight). Bit for bit, or with `half` every float32 tensor rounded to float16 (half
    the size again; loading casts them back into the float32 modules). Returns the new file's SHA-256
    (also recorded beside it)."""
    tensors, state = read_checkpoint(src, expected_sha256)
    kept = {
        k: (v.half() if half and v.dtype == torch.float32 else v).contiguous()
        for k, v in tensors.items()
        if k.startswith("module/")
    }
    meta = {
        "format": FORMAT,
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "float16": half,
        # read_checkpoint verified the bytes against expected_sha256: no second read to hash them
        "weights_only_from": expected_sha256 or file_sha256(src),
    }
    data = st_save(kept, metadata={"state": json.dumps(meta, sort_keys=True)})
    sha = hashlib.sha256(data).hexdigest()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(sidecar_path(dst), f"{sha}\n".encode())
    atomic_write_bytes(dst, data)
    return sha


def file_sha256(path: Path) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


def read_bytes(path: Path) -> bytes:
    """The bytes of checkpoint file `path`: a regular file of at most MAX_BYTES (a FIFO, a device
    such as /dev/zero or a file past the bound is a one-line CheckpointError before it is read, so
    it can neither hang the reader nor fill memory). OSError (missing, unreadable) propagates."""
    try:
        return read_regular_bytes(Path(path), MAX_BYTES)
    except ConfigError as e:
        raise CheckpointError(str(e).replace("a run's records are", "checkpoints are")) from None
