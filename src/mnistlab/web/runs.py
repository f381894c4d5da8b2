"""Find and load the pieces of a run folder the explorer shows, each one optional, chosen by role.

Two layouts are accepted:
- the study folder of `mnistlab run`: one sub-folder per trained task (RUN/ae/ with RUN/ae/probe/ from
  `mnistlab probe` and the maps of `mnistlab latent` in RUN/ae/latent/ or RUN/ae/figures/latent/,
  RUN/dae/, RUN/gan/, ...);
- one training run folder of any task.
The pieces: the encoder (the first run, in stage order, that encodes and decodes and is not a
denoiser, else the first that encodes and decodes, else the first that encodes and classifies: a
classifier's codes are mapped and its own head predicts, with no decoder to reconstruct), the
denoiser, and every other generator. A piece that is missing or fails to load is recorded with the
reason; nothing here raises for it. Also the run's own page (`find_report`): report.html of a study,
else the page of `mnistlab compare`; what the run was trained with (`smoke_note`: a smoke-sized
preset's numbers are not meaningful); and the scores its summaries record for a sampler
(`recorded_score`).
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab import tasks
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataError
from mnistlab.models.encoder_classifier import LinearHead
from mnistlab.probe.fit import feature_stats, fold_standardization
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import CheckpointError
from mnistlab.tasks import load_run_config

log = logging.getLogger("mnistlab")

LOAD_ERRORS = (ConfigError, CheckpointError, DataError, OSError, ValueError, KeyError, RuntimeError)
MAP_FOLDERS = ("latent", "figures/latent")  # where an ae run keeps `mnistlab latent`'s map_*.csv
# The run's page, first found wins: a study's report, then the compare page of a pretrained bundle or a
# run folder. Fixed names only: the explorer never serves a path a client chose.
REPORT_PAGES = ("report.html", "report/compare.html", "figures/compare.html", "compare.html")
# A run trained on fewer images than this is smoke-sized, whatever its preset is called: the report's
# rule too (report/key_results.py), the quick preset's 12,000-image slice being far below it.
SMOKE_TRAIN_IMAGES = 40_000
SMOKE_PRESETS = ("quick",)  # the shipped presets that are smoke runs (configs/quick.toml says so)


@dataclass(frozen=True)
class Layout:
    encoder: Path | None  # the autoencoder run: encoder, decoder, maps, probe (or a classifier's run)
    denoiser: Path | None
    generators: dict[str, Path]  # task name -> run folder, in stage order
    missing: dict[str, str]  # piece -> why it is not there


def _task(folder: Path) -> str | None:
    try:
        return load_run_config(folder)[0]
    except ConfigError:
        return None


def _roles(task: str) -> frozenset[str]:
    try:
        return tasks.get(task).roles
    except ConfigError:
        return frozenset()


def _pick(runs: list[tuple[str, Path]]) -> Layout:
    """The pieces among (task, folder) pairs, in stage order."""
    coders = [(t, p) for t, p in runs if {"encoder", "decoder"} <= _roles(t)]
    plain = [(t, p) for t, p in coders if tasks.plain_coder(_roles(t))]
    classifiers = [(t, p) for t, p in runs if {"encoder", "classifier"} <= _roles(t)]
    encoder = (plain or coders or classifiers or [(None, None)])[0][1]
    denoiser = next((p for t, p in runs if "denoiser" in _roles(t)), None)
    # Every other run that generates: the GANs, and a coder that is neither the encoder nor the
    # denoiser (a VAE beside the autoencoder: its own sampler, the prior, gets a panel).
    generators = {t: p for t, p in runs if "generator" in _roles(t) and p not in (encoder, denoiser)}
    return Layout(encoder, denoiser, generators, {})


def find_runs(run_dir: Path) -> Layout:
    """Which run folders make up `run_dir`; a one-line ConfigError if it holds none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir} is not a folder; give a run folder of `mnistlab run` or `mnistlab train`"
        )
    if (run_dir / "config.toml").is_file():
        task, _ = load_run_config(run_dir)  # a bad config.toml is a one-line error
        layout = _pick([(task, run_dir)])
        if layout.encoder is None and not layout.generators:
            usable = ", ".join(s.name for s in tasks.all_tasks() if s.roles & {"encoder", "generator"})
            raise ConfigError(f"{run_dir} holds a {task!r} run; serve a study folder or a run of: {usable}")
        why = f"{run_dir} is a single {task} run (serve the study folder of `mnistlab run` for all panels)"
        missing = {
            k: why for k, v in (("encoder", layout.encoder), ("denoiser", layout.denoiser)) if v is None
        }
        if not layout.generators:
            missing["generator"] = why
        return Layout(layout.encoder, layout.denoiser, layout.generators, missing)
    order = {s.name: i for i, s in enumerate(tasks.all_tasks())}
    runs = []
    for sub in sorted(p for p in run_dir.iterdir() if (p / "config.toml").is_file()):
        task = _task(sub)
        if task is not None and task in order:
            runs.append((task, sub))
    runs.sort(key=lambda r: order[r[0]])
    layout = _pick(runs)
    if layout.encoder is None and not layout.generators:
        raise ConfigError(
            f"{run_dir} holds no run: expected config.toml, or run folders (ae/, dae/, gan/, ...) inside it"
        )
    missing = {}
    for piece, found in (("encoder", layout.encoder), ("denoiser", layout.denoiser)):
        if found is None:
            missing[piece] = f"no run in {run_dir} has a {piece}"
    if not layout.generators:
        missing["generator"] = f"no generator run (GAN) in {run_dir}"
    return Layout(layout.encoder, layout.denoiser, layout.generators, missing)


def read_map_csv(path: Path, labels: np.ndarray) -> np.ndarray:
    """2-D coordinates (N, 2) of `mnistlab latent`'s map_<name>.csv (index,label,x,y per test image),
    checked against the test labels the explorer loaded; ValueError if they differ."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or len(rows[0]) != 4 or rows[0][:2] != ["index", "label"]:
        raise ValueError(f"{path} is not a map file of `mnistlab latent` (header {rows[:1]})")
    body = np.asarray(rows[1:], dtype=np.float64)  # (N, 4)
    if len(body) != len(labels) or not np.array_equal(body[:, 1].astype(np.int64), labels):
        raise ValueError(
            f"{path} does not match this run's test set ({len(body)} rows against {len(labels)} test "
            f"images, or other labels); rerun `mnistlab latent`"
        )
    if not np.isfinite(body[:, 2:]).all():
        raise ValueError(f"{path} holds non-finite coordinates")
    return body[:, 2:].astype(np.float32)


def find_maps(ae_dir: Path, labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Maps saved by `mnistlab latent` other than pca/latent (the explorer computes those itself):
    name -> (N, 2) points, and name -> reason for the ones that are missing or unreadable."""
    maps: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    folders = [ae_dir / f for f in MAP_FOLDERS if (ae_dir / f).is_dir()]
    for folder in folders:
        for path in sorted(folder.glob("map_*.csv")):
            name = path.stem[len("map_") :]
            if name in ("pca", "latent") or name in maps:
                continue
            try:
                maps[name] = read_map_csv(path, labels)
                reasons.pop(name, None)
            except (OSError, ValueError) as e:
                reasons[name] = str(e)
    if "tsne" not in maps and "tsne" not in reasons:
        reasons["tsne"] = f"no t-SNE map in {ae_dir}: run `mnistlab latent {ae_dir}` first"
    return maps, reasons


def load_probe_head(ae_dir: Path, latent_dim: int, train_codes: np.ndarray):
    """The linear probe of `mnistlab probe` (ae_dir/probe) as a torch Linear head on raw codes, and
    its test accuracy. The probe trains on codes z-scored with the training codes' statistics, which
    it does not save; they are recomputed here from the same training codes and folded into the head
    (`fold_standardization`), so the head takes raw codes."""
    probe_dir = ae_dir / "probe"
    if not (probe_dir / "config.toml").is_file():
        raise ConfigError(f"no probe in {probe_dir}: run `mnistlab probe {ae_dir}` first")
    task, exp = load_run_config(probe_dir)
    if task != "probe":
        raise ConfigError(f"{probe_dir} holds a {task!r} run, not a probe")
    head = LinearHead(latent_dim)
    rundir.load_weights(probe_dir / "linear", head, "model")
    if exp.options.standardize:
        mean, std = feature_stats(torch.from_numpy(train_codes))
        head = fold_standardization(head, mean, std)
    accuracy = rundir.read_summary(probe_dir).get("linear_probe", {}).get("test_acc")
    return head.eval(), accuracy


def find_report(run_dir: Path) -> Path | None:
    """The first of REPORT_PAGES that is a regular file inside `run_dir` once links are resolved (a
    symlink that leads out of the folder is ignored), else None."""
    root = Path(run_dir).resolve()
    for name in REPORT_PAGES:
        try:
            path = (root / name).resolve()
            if path.is_relative_to(root) and path.is_file():
                return path
        except OSError:  # a link loop, a folder we may not read
            continue
    return None


# ------------------------------------------------------------------------------- what the run is


def _json(path: Path) -> dict:
    """A JSON object from `path`, {} when it is missing or unreadable (these are notes, not inputs)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _preset(run_dir: Path) -> str | None:
    """The preset a study (run.json) or a training run (the --preset of its command.txt) was made
    with; None when neither says."""
    preset = _json(run_dir / "run.json").get("preset")
    if isinstance(preset, str):
        return preset
    try:
        words = shlex.split((run_dir / "command.txt").read_text())
    except (OSError, ValueError):
        return None
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--preset":
            return value
    return next((w.split("=", 1)[1] for w in words if w.startswith("--preset=")), None)


def smoke_note(run_dir: Path, layout: Layout) -> dict | None:
    """{"preset", "runs": [{task, epochs, n_train}], "text"} when the served run is smoke-sized (its
    preset is one of SMOKE_PRESETS, or a piece of it trained on fewer than SMOKE_TRAIN_IMAGES
    images), else None. Read from run.json / command.txt and each piece's summary.json."""
    run_dir = Path(run_dir)
    folders = [p for p in (layout.encoder, layout.denoiser, *layout.generators.values()) if p is not None]
    preset = _preset(run_dir) or next((p for p in map(_preset, folders) if p), None)
    runs = []
    for folder in folders:
        summary = _json(folder / "summary.json")
        n, epochs = summary.get("n_train"), summary.get("epochs")
        runs.append(
            {
                "task": _task(folder) or folder.name,
                "epochs": epochs if isinstance(epochs, int) else None,
                "n_train": n if isinstance(n, int) else None,
            }
        )
    named = preset is not None and Path(preset).stem in SMOKE_PRESETS
    small = [r for r in runs if r["n_train"] is not None and r["n_train"] < SMOKE_TRAIN_IMAGES]
    if not named and not small:
        return None

    def sized(r: dict) -> str:
        parts = [f"{r['epochs']} epoch{'' if r['epochs'] == 1 else 's'}" if r["epochs"] else ""]
        parts.append(f"{r['n_train']:,} training images" if r["n_train"] else "")
        return f"{r['task']}: " + ", ".join(p for p in parts if p)

    how = f"the {Path(preset).stem!r} preset" if preset else "a small slice of the data"
    text = (
        f"Smoke run: this run was trained with {how} ({'; '.join(sized(r) for r in small or runs)}). "
        "Its digits, predictions and scores show that every panel works, not what the models reach. "
        "`mnistlab serve` with no folder opens the runs shipped with mnistlab (default preset)."
    )
    return {"preset": preset, "runs": runs, "text": text}


SCORE_FIELDS = ("fid_mnist", "precision", "recall", "n_samples")


def recorded_score(folder: Path, sampler: str, task_sampler: str | None = None) -> dict | None:
    """The generation scores a run's summary.json records for `sampler`, as the page shows them beside
    its grid: {fid_mnist, precision, recall, n_samples, where}; None when it records none.

    Where they are: a generator's own samples under "test" (GAN, cGAN, flow) or under
    "generation"/<its sampler> (the VAE's prior); the code samplers of an autoencoder under
    "latent"/"generation"/"rows"/<sampler> (written by `mnistlab latent`)."""
    summary = _json(Path(folder) / "summary.json")
    latent = summary.get("latent")
    places = []
    if task_sampler is None:  # a code sampler of the encoder run
        rows = latent.get("generation", {}).get("rows", {}) if isinstance(latent, dict) else {}
        places.append(
            (rows.get(sampler) if isinstance(rows, dict) else None, f"latent.generation.rows.{sampler}")
        )
    else:
        generation = summary.get("generation")
        if isinstance(generation, dict):
            places.append((generation.get(task_sampler), f"generation.{task_sampler}"))
        places.append((summary.get("test"), "test"))
    for table, where in places:
        if isinstance(table, dict) and isinstance(table.get("fid_mnist"), int | float):
            score = {k: table[k] for k in SCORE_FIELDS if isinstance(table.get(k), int | float)}
            sampling = summary.get("sampling")
            if where == "test" and isinstance(sampling, dict) and isinstance(sampling.get("steps"), int):
                score["steps"] = sampling["steps"]  # an ODE solver's scores hold at its default steps
            return {**score, "where": f"{Path(folder).name}/summary.json: {where}"}
    return None
