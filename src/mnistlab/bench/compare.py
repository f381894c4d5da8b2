"""The models bench: finished runs of any tasks in one table, each measure in the rows of the runs
whose role it needs (`mnistlab compare`, and the study report's "Models side by side" section).

Measures, by role (the roles come from the task registry; no task is named here):
  decoder    test MSE / PSNR / SSIM of test images encoded and decoded (a denoiser's: of clean inputs)
  denoiser   PSNR gain at sigma 1: PSNR of its output minus that of its noisy input (seeded test noise)
  encoder    frozen probe: logistic regression on standardised codes, fit on (up to `probe_train`)
             training images, test accuracy; k-NN accuracy on the raw codes (all training images)
  generator  per sampler: FID-MNIST, precision, recall, rarest and commonest digit share, mean L2
             distance to the nearest training image, scored samples
  every run  parameters, train seconds, train images/s, test images

`collect` reads a run's summary.json first; with `compute`, a measure the summary lacks is computed
from the checkpoint through the run's `TrainedRun` (bench/compute.py) and cached in RUN/compare.json
under the checkpoint's SHA-256, so a second compare reads files only. Without `compute` (the report)
a measure nothing recorded stays None and shows as '-'. The table itself (`rows`, `table`,
`markdown`, `csv_text`) is made of pure functions of the collected `Entry`s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnistlab import tasks
from mnistlab.bench.compute import (
    GAIN_SIGMA,
    SAMPLE_KEYS,
    BenchConfig,
    Computer,
    Shared,
    history_timing,
    score_measures,
)
from mnistlab.bench.table import BY_KEY, CACHE_FILE, MEASURES, Entry, Measure, applies  # noqa: F401
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import read_toml, write_json
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.training.denoise import OWN  # the denoiser's own column in a "denoising" table of summary.json

log = logging.getLogger("mnistlab")

CACHE_FORMAT = "mnistlab-compare-1"
FIGURE_KINDS = ("reconstructions", "denoising")  # then "samples:<sampler>"
SKIP_SAMPLERS = ("uniform",)  # a box around the codes: the report's unreadable random codes; on request only
DEFAULT_SAMPLER = "default"  # a generator's scores in its summary whose sampler is not named there


# ------------------------------------------------------------------------- from the run's files (pure)


def _is_scores(obj: Any) -> bool:
    return isinstance(obj, dict) and "fid_mnist" in obj


def summary_samplers(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Generator measures a summary.json holds, by sampler: "test" scores (a generator's final
    samples, sampler not named: DEFAULT_SAMPLER), "generation" {sampler: scores}, and the code
    samplers `mnistlab latent` scored into its "latent" part."""
    out: dict[str, dict[str, Any]] = {}
    if _is_scores(summary.get("test")):
        out[DEFAULT_SAMPLER] = score_measures(summary["test"])
    for name, scores in (summary.get("generation") or {}).items():
        if _is_scores(scores):
            out[name] = score_measures(scores)
    lat = summary.get("latent") or {}
    rows = (lat.get("generation") or {}).get("rows") or {}
    for name in (lat.get("config") or {}).get("samplers") or []:
        if _is_scores(rows.get(name)):
            out.setdefault(name, score_measures(rows[name]))
    return out


def summary_measures(summary: dict[str, Any], roles: Iterable[str], own_key: str | None = None) -> dict:
    """Run-level measures of `summary` for a run with `roles`: every measure that applies, None when
    the summary does not hold it. `own_key` names the denoiser's own column of a "denoising" table."""
    roles = set(roles)
    values: dict[str, Any] = {m.key: None for m in MEASURES if applies(m, roles) and not m.per_sampler}
    if "decoder" in roles:
        # A denoiser's "test" scores its denoised output; its reconstruction of clean inputs is apart.
        test = summary.get("test_clean_input") or summary.get("test") or {}
        for key in ("mse", "psnr", "ssim"):
            values[key] = test.get(key) if isinstance(test, dict) else None
    if "denoiser" in roles and own_key:
        values["denoise_gain"] = denoise_gain_from_table(summary.get("denoising") or [], own_key)
    values["params"] = summary.get("parameters")
    values["train_seconds"] = summary.get("train_seconds")
    values["images_per_s"] = summary.get("train_images_per_s")
    values["n_test"] = summary.get("n_test")
    return values


def denoise_gain_from_table(table: list[dict[str, Any]], own_key: str, sigma: float = GAIN_SIGMA) -> Any:
    """PSNR of the denoiser's output minus the noisy input's, at `sigma`, from a denoising table."""
    for row in table:
        if isinstance(row, dict) and math.isclose(float(row.get("sigma", -1)), sigma):
            own, noisy = row.get(own_key) or {}, row.get("noisy") or {}
            if "psnr" in own and "psnr" in noisy:
                return round(own["psnr"] - noisy["psnr"], 6)
    return None


def probe_stage_knn(run_dir: Path, k: int, n_test: Any) -> float | None:
    """The k-NN accuracy on the codes that `mnistlab probe` recorded in RUN/probe (same definition:
    raw codes, every training image, the test split), when it measured the same test set."""
    probe = _read_json(Path(run_dir) / "probe" / "summary.json")
    if not probe or (n_test is not None and probe.get("n_test") != n_test):
        return None
    for row in probe.get("baselines") or []:
        if row.get("method") == f"kNN (k={k})" and str(row.get("features", "")).startswith("encoder code"):
            return row.get("test_acc")
    return None


# ----------------------------------------------------------------------------------------- run folders


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _task_of(folder: Path) -> str | None:
    """The registered task named by folder/config.toml, or None."""
    path = Path(folder) / "config.toml"
    if not path.is_file():
        return None
    task = read_toml(path).get("task")
    return task if isinstance(task, str) and task in tasks.names() else None


def expand(path: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """([(label, run folder)], notes) for a path given to compare: a run folder, or a `mnistlab run`
    study folder (every finished task stage of it). Anything else is a one-line ConfigError."""
    path = Path(path)
    if (path / "config.toml").is_file():
        return [(path.name, path)], []
    if not path.is_dir():
        raise ConfigError(
            f"{path}: no such folder" if not path.exists() else f"{path}: a file, not a run folder"
        )
    if not (path / rundir.RUN_FILE).is_file():
        raise ConfigError(
            f"{path} is not a run folder (no config.toml) nor a `mnistlab run` study folder "
            f"(no {rundir.RUN_FILE})"
        )
    state = rundir.read_run(path)
    found, notes = [], []
    for stage in state["stages"]:
        folder = path / (stage.get("folder") or stage["name"])
        if _task_of(folder) is None:
            continue  # a stage that trains no task (search, probe, latent)
        if stage.get("status") != "done" or rundir.read_summary(folder).get("status") != "finished":
            notes.append(
                f"{path.name}/{stage['name']}: left out, its stage has not finished "
                f"(status {stage.get('status')})."
            )
            continue
        found.append((f"{path.name}/{stage['name']}", folder))
    return found, notes


def unique_labels(paths: list[Path]) -> list[str]:
    """The shortest trailing parts of each path that tell them apart: ae, ae (2) -> a/ae, b/ae."""
    parts = [Path(p).resolve().parts for p in paths]
    labels = []
    for i, p in enumerate(parts):
        depth = 1
        while depth < len(p) and any(q[-depth:] == p[-depth:] for j, q in enumerate(parts) if j != i):
            depth += 1
        labels.append("/".join(p[-depth:]))
    return labels


def checkpoint_sha(run_dir: Path, summary: dict[str, Any]) -> str | None:
    if summary.get("checkpoint_sha256"):
        return summary["checkpoint_sha256"]
    path = rundir.checkpoint_path(run_dir)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def read_cache(run_dir: Path, sha: str | None) -> dict[str, Any]:
    """RUN/compare.json when it was written for checkpoint `sha` (else an empty cache)."""
    doc = _read_json(Path(run_dir) / CACHE_FILE)
    if sha is None or doc.get("format") != CACHE_FORMAT or doc.get("checkpoint_sha256") != sha:
        return {"format": CACHE_FORMAT, "checkpoint_sha256": sha, "values": {}, "samplers": {}, "figures": {}}
    for key in ("values", "samplers", "figures"):
        doc.setdefault(key, {})
    return doc


def _keys(cfg: BenchConfig) -> dict[str, str]:
    """Cache keys of the computed measures whose value depends on the bench's settings."""
    return {
        "probe_acc": f"probe_acc/train={cfg.probe_train}/seed={cfg.seed}",
        "knn_acc": f"knn_acc/k={cfg.knn_k}",
    }


def _sampler_key(name: str, cfg: BenchConfig) -> str:
    return f"{name}/n={cfg.samples}/seed={cfg.seed}/nn={cfg.nn_samples}"


def wanted_samplers(offered: list[str], cfg: BenchConfig) -> list[str]:
    """The samplers of a generator the bench scores: those asked for, or every one but SKIP_SAMPLERS
    (the first one if that leaves none)."""
    if cfg.samplers is not None:
        return [s for s in offered if s in cfg.samplers]
    keep = [s for s in offered if s not in SKIP_SAMPLERS]
    return keep or offered[:1]


def collect(
    path: Path,
    label: str,
    cfg: BenchConfig | None = None,
    compute: bool = False,
    shared: Shared | None = None,
) -> Entry:
    """The bench entry of finished run folder `path`. Without `compute`: from its files only (summary,
    the compare cache, what `mnistlab probe` / `latent` wrote). With it: what those lack is computed
    from the checkpoint, cached in RUN/compare.json."""
    cfg = cfg or BenchConfig()
    path = Path(path)
    task, _ = tasks.load_run_config(path)  # a folder that is no run folder: a one-line error
    spec = tasks.get(task)
    summary = rundir.read_summary(path)
    if summary.get("status") != "finished":
        raise ConfigError(
            f"{path}: the {task} run has not finished (status {summary.get('status', 'none')}); "
            "compare takes finished runs"
        )
    entry = Entry(label, path, task, spec.roles)
    comp = Computer(path, label, spec.roles, cfg, shared or Shared()) if compute else None
    cache = read_cache(path, checkpoint_sha(path, summary))
    keys = _keys(cfg)
    entry.values = summary_measures(summary, spec.roles, OWN)
    if "knn_acc" in entry.values:
        entry.values["knn_acc"] = probe_stage_knn(path, cfg.knn_k, summary.get("n_test"))
    if entry.values.get("train_seconds") is None or entry.values.get("images_per_s") is None:
        seconds, rate = history_timing(rundir.read_history(path), summary.get("n_train"))
        entry.values["train_seconds"] = _first(entry.values.get("train_seconds"), seconds)
        entry.values["images_per_s"] = _first(entry.values.get("images_per_s"), rate)
    for key, value in entry.values.items():
        if value is None:
            entry.values[key] = cache["values"].get(keys.get(key, key))
    if "generator" in spec.roles:
        _collect_samplers(entry, summary_samplers(summary), cache, cfg, comp)
    if comp is not None and _fill(entry, comp, cache, cfg):
        try:
            owner.claim_files(
                [path / CACHE_FILE]
            )  # a run of mnistlab's, not the user's file, no other writer
            write_json(path / CACHE_FILE, cache)
        except ConfigError as e:
            entry.notes.append(f"{path / CACHE_FILE} not written ({e}); nothing was cached")
        except OSError as e:
            entry.notes.append(f"cannot write {path / CACHE_FILE} ({e.strerror}); nothing was cached")
    entry.figures = _figures(path, cache, entry)
    return entry


def _fill(entry: Entry, comp: Computer, cache: dict[str, Any], cfg: BenchConfig) -> bool:
    """Compute what the entry lacks, into the entry and the cache; whether anything was added."""
    keys = _keys(cfg)
    for k, v in comp.measures([k for k, v in entry.values.items() if v is None]).items():
        entry.values[k] = cache["values"][keys.get(k, k)] = v
        entry.computed.append(BY_KEY[k].header)
    for name, values in entry.samplers.items():
        got = comp.score(name) if any(values.get(k) is None for k in SAMPLE_KEYS) else None
        if got is not None:
            values.update(got[0])
            cache["samplers"][_sampler_key(name, cfg)] = values
            entry.computed.append(f"{name} samples")
            drawn = comp.grid(f"samples:{name}", got[1], f"100 samples, {name} sampler")
            cache["figures"].update({f"samples:{name}": list(drawn)} if drawn else {})
    drawn = comp.figures(set(cache["figures"]), list(entry.samplers))
    cache["figures"].update({k: list(v) for k, v in drawn.items()})
    entry.notes += comp.notes
    return bool(entry.computed or drawn)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _collect_samplers(
    entry: Entry,
    found: dict[str, dict[str, Any]],
    cache: dict[str, Any],
    cfg: BenchConfig,
    comp: Computer | None,
) -> None:
    """entry.samplers: the measures of each sampler the bench scores, from the files (None if unknown)."""
    offered = cache.get("sampler_names")
    if offered is None and comp is not None:
        offered = cache["sampler_names"] = list(comp.run.generator().samplers)
    if offered is None and DEFAULT_SAMPLER in found:
        offered = _generator_samplers(entry.path)
    if offered is None:  # from the files alone: the samplers they scored
        offered = [s for s in found if s != DEFAULT_SAMPLER] or list(found)
    if DEFAULT_SAMPLER in found and offered and offered[0] != DEFAULT_SAMPLER:
        found.setdefault(offered[0], found.pop(DEFAULT_SAMPLER))  # a generator's final samples: its default
    names = wanted_samplers(offered, cfg)
    if comp is None:  # from the files alone: the samplers some file scored, not rows of '-' for the rest
        names = [n for n in names if n in found or _sampler_key(n, cfg) in cache["samplers"]] or names[:1]
    for name in names:
        values = found.get(name)
        if comp is not None and values and values.get("n_samples") != cfg.samples:
            # One count for every model: a run's own scores of another count are scored again.
            values = None
        values = values or cache["samplers"].get(_sampler_key(name, cfg)) or {}
        entry.samplers[name] = {k: values.get(k) for k in (*SAMPLE_KEYS, "reference")}
    if cfg.samplers is not None and not names:
        entry.notes.append(f"it has none of the samplers asked for (its samplers: {', '.join(offered)})")


def _generator_samplers(path: Path) -> list[str] | None:
    """The sampler names of a finished generator run (the first is what its final samples were drawn
    with, e.g. a GAN's "prior"), from its checkpoint; None when it cannot be loaded. The files name no
    sampler for a generator's final samples, and without this the report's table would call it
    DEFAULT_SAMPLER while `mnistlab compare` and the task's own section call it by its name."""
    try:
        return list(tasks.load_run(path, "cpu", "generator").generator().samplers)
    except (ConfigError, OSError, RuntimeError, KeyError, ValueError):
        return None


def _figures(path: Path, cache: dict[str, Any], entry: Entry) -> list[tuple[str, str, Path]]:
    """(kind, caption, PNG) of the key figures compare drew for this run (kept in RUN/figures/); kinds:
    FIGURE_KINDS, "samples:<sampler>" for each sampler in the table."""
    out = []
    for kind, (file, caption) in cache.get("figures", {}).items():
        png = path / "figures" / file
        if png.is_file() and (not kind.startswith("samples:") or kind[8:] in entry.samplers):
            out.append((kind, caption, png))
    order = [*FIGURE_KINDS, *(f"samples:{s}" for s in entry.samplers)]
    return sorted(out, key=lambda f: order.index(f[0]) if f[0] in order else len(order))


# ------------------------------------------------------------------------------------------------ compare


def compare(
    paths: list[Path], cfg: BenchConfig | None = None, compute: bool = True
) -> tuple[list[Entry], list[str]]:
    """(entries, notes) of the run and study folders `paths`, in that order."""
    cfg = cfg or BenchConfig()
    found, notes = [], []
    for p in paths:
        runs, more = expand(p)
        found += [(label, folder, Path(p)) for label, folder in runs]
        notes += more
    seen, unique = set(), []
    for label, folder, given in found:
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            unique.append((label, folder, given))
    if not unique:
        raise ConfigError(f"no finished run among {', '.join(map(str, paths))}")
    plain = [folder for label, folder, given in unique if folder == given]
    labels = dict(zip(plain, unique_labels(plain)))
    shared = Shared()
    entries = [
        collect(folder, labels.get(folder, label), cfg, compute, shared) for label, folder, _ in unique
    ]
    return entries, notes
