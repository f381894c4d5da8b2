"""The reference classifier for a dataset other than MNIST: trained once by the `classifier` task's
training and cached under `<cache>/references/<key>/`, where the key hashes the dataset's four IDX
files and the classifier config; and exporting a trained classifier run as a reference weights file.
(The reference itself, its shipped MNIST weights and its features: metrics/reference.py.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from mnistlab.core.config import build, preset_path, to_doc
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes, read_toml, write_json
from mnistlab.data.datasets import MNIST_SHA256, DataConfig, cache_dir
from mnistlab.metrics.reference import (
    FORMAT,
    Reference,
    dataset_fingerprint,
    read_reference,
    shipped_reference,
)
from mnistlab.runs import folder as rundir
from mnistlab.training.classifier import ClassifierExperiment, load_classifier, train_classifier

log = logging.getLogger("mnistlab")


def export_reference(run_dir: Path, dest: Path) -> str:
    """Write the classifier of run `run_dir` as a weights-only safetensors file; return its SHA-256."""
    exp, model = load_classifier(run_dir)
    summary = rundir.read_summary(run_dir)
    info = {
        "format": FORMAT,
        "config": {
            "channels": list(exp.model.channels),
            "feature_dim": exp.model.feature_dim,
            "n_classes": exp.model.n_classes,
        },
        "test_accuracy": summary.get("test", {}).get("accuracy"),
        "trained_with": (Path(run_dir) / "command.txt").read_text().strip(),
        "data": str(summary.get("data", "")),
    }
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes several keys in a random order, which would make the
    # bytes (and the SHA-256 checked on load) differ between two exports of the same weights.
    data = st_save(sd, metadata={"mnistlab": json.dumps(info, sort_keys=True)})
    atomic_write_bytes(Path(dest), data)
    return hashlib.sha256(data).hexdigest()


def load_reference(
    data_cfg: DataConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
    preset: str = "default",
    overrides: tuple[str, ...] = (),
) -> Reference:
    """The reference classifier for the dataset `data_cfg` names (limits such as train_limit are
    ignored: a reference always learns from the whole training set).

    MNIST (embedded, or any folder whose files carry MNIST's checksums) gets the shipped weights.
    Any other dataset gets a classifier trained once by the `classifier` task of `preset` (plus
    `overrides`) and cached; its name carries the dataset label and the cache key."""
    if not data_cfg.data_dir and data_cfg.dataset == "mnist":
        return shipped_reference(device)
    label, sums = dataset_fingerprint(data_cfg)
    if sums == MNIST_SHA256:
        return shipped_reference(device)
    data_overrides = [
        f"data.data_dir={data_cfg.data_dir}",
        f"data.dataset={data_cfg.dataset}",
        "data.train_limit=0",
        "data.test_limit=0",
    ]
    # The classifier's tables of the preset (no task registry here: training sits below the tasks).
    path = preset_path(preset)
    exp = build(ClassifierExperiment, "classifier", read_toml(path), str(path), [*overrides, *data_overrides])
    doc = to_doc(exp, "classifier")
    doc["data"] = {k: v for k, v in doc["data"].items() if k not in ("data_dir", "dataset")}
    key = hashlib.sha256(json.dumps({"files": sums, "config": doc}, sort_keys=True).encode()).hexdigest()
    folder = cache_dir() / "references" / key[:24]
    name = f"reference-{label}-{key[:12]}"
    if not (folder / "reference.safetensors").is_file():
        _train_cached(exp, folder, label, progress)
    sha = json.loads((folder / "reference.json").read_text())["sha256"]
    return read_reference(folder / "reference.safetensors", sha, name, device)


def _train_cached(exp, folder: Path, label: str, progress: bool) -> None:
    """Train a reference into a temporary run folder, export it, then move the folder into place."""
    log.info("training the reference classifier for %s once; it is cached in %s", label, folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = train_classifier(exp, tmp, progress=progress)
        sha = export_reference(tmp, tmp / "reference.safetensors")
        write_json(tmp / "reference.json", {"sha256": sha, "test_accuracy": summary["test"]["accuracy"]})
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "reference.safetensors").is_file():  # not a concurrent winner: a real error
                raise
    except OSError as e:
        raise ConfigError(f"cannot write the reference cache {folder}: {e.strerror}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("reference for %s: test accuracy %.4f", label, summary["test"]["accuracy"])
