"""Trained runs shipped inside the package, so that `mnistlab serve` opens a model at once.

The bundle (src/mnistlab/_pretrained/) holds one run folder per task trained with its default preset:
config.toml, command.txt, metrics.jsonl, figures, summary.json and a weights-only checkpoint (the
module tensors bit for bit, without the optimizer and RNG state that only resuming needs), plus the
explorer's start-up cache and `mnistlab compare`'s measures and page (report/). Each summary records
where the run came from under "pretrained": the training command, the source checkpoint's SHA-256,
the commit and the machine; `mnistlab eval` on a shipped run reproduces its recorded test numbers.

Users never write into the installed package: `path(name)` copies a shipped run into the user's
folder (MNISTLAB_HOME, else ~/.cache/mnistlab) the first time, and again whenever the shipped
checkpoint differs, and every command takes that copy like any run folder.

`make` remakes the bundle from scratch: it trains every task that has a default preset (skipping runs
already finished in its work folder) and packs them.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistlab import rundir, tasks
from mnistlab.errors import ConfigError
from mnistlab.fsio import write_json
from mnistlab.training.checkpoint import file_sha256, write_weights_only

log = logging.getLogger("mnistlab")

BUNDLE = Path(__file__).parent / "_pretrained"
COPY_FILES = ("config.toml", "command.txt", "metrics.jsonl")
# probe/ and latent/: what the explorer classifies with and maps (with `mnistlab probe` / `latent` run on it)
COPY_DIRS = ("figures", "grids", "probe", "latent")
REPORT = "report"  # `mnistlab compare`'s page of the bundle's runs


def available(bundle: Path | None = None) -> list[str]:
    """Names of the shipped runs, in the registry's stage order."""
    bundle = bundle or BUNDLE
    if not bundle.is_dir():
        return []
    order = {s.name: i for i, s in enumerate(tasks.all_tasks())}
    found = [p.name for p in bundle.iterdir() if (p / "config.toml").is_file()]
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def describe(name: str, bundle: Path | None = None) -> dict[str, Any]:
    """Task, description, provenance and headline numbers of shipped run `name`."""
    folder = _shipped(name, bundle)
    task, _ = tasks.load_run_config(folder)
    summary = rundir.read_summary(folder)
    return {"name": name, "task": task, "description": tasks.get(task).description, "epochs": summary.get("epochs"),
            "test": summary.get("test", {}), "pretrained": summary.get("pretrained", {}),
            "megabytes": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 2)}  # fmt: skip


def user_root() -> Path:
    """Where shipped runs are copied for use: $MNISTLAB_HOME/pretrained, else ~/.cache/mnistlab/pretrained."""
    home = os.environ.get("MNISTLAB_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "mnistlab") / "pretrained"


def path(name: str, bundle: Path | None = None, root: Path | None = None) -> Path:
    """A writable copy of shipped run `name`, refreshed when the shipped checkpoint differs."""
    source = _shipped(name, bundle)
    target = (root or user_root()) / name
    ckpt = rundir.checkpoint_path(source)
    copy = rundir.checkpoint_path(target)
    if not copy.is_file() or file_sha256(copy) != file_sha256(ckpt):
        tmp = target.with_name(f".{name}.copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        log.info("copied the shipped %s run to %s", name, target)
    return target


def bundle_path(bundle: Path | None = None, root: Path | None = None) -> Path:
    """A writable copy of every shipped run (a folder `serve` takes whole, like a study folder)."""
    bundle = bundle or BUNDLE
    names = available(bundle)
    if not names:
        raise ConfigError(f"this installation ships no trained runs ({bundle} is empty); train one, e.g. "
                          "`mnistlab run --preset quick`, and serve its folder")  # fmt: skip
    for name in names:
        path(name, bundle, root)
    report = bundle / REPORT
    target = (root or user_root()) / REPORT
    if report.is_dir() and not target.is_dir():
        shutil.copytree(report, target)
    return root or user_root()


def _shipped(name: str, bundle: Path | None) -> Path:
    bundle = bundle or BUNDLE
    names = available(bundle)
    if name not in names:
        raise ConfigError(f"no shipped run named {name!r}; shipped: {', '.join(names) or 'none'}")
    return bundle / name


# ------------------------------------------------------------------------------------ packing


def provenance(source: Path) -> dict[str, Any]:
    """Where a run came from: its command, the commit of the tree that packed it, this machine (the
    one that trained it: `make` trains and packs in one go)."""
    command = (source / "command.txt").read_text().strip() if (source / "command.txt").is_file() else None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return {"source": str(source), "command": command, "packed_at_commit": commit,
            "machine": f"{platform.machine()} {cpu or platform.processor()}, {os.cpu_count()} CPUs, "
                       f"{platform.system()} {platform.release()}",
            "packed": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def pack_run(
    source: Path, dest: Path, device: Any, baselines: dict[Path, Path] | None = None
) -> dict[str, Any]:
    """Copy finished run `source` into `dest` with a weights-only checkpoint, then evaluate the copy
    (tasks that can) and record whether its test numbers equal the source's. `baselines` maps source
    run folders to their packed copies, for a run evaluated beside another (the denoiser's baseline)."""
    source, dest = Path(source), Path(dest)
    task, exp = tasks.load_run_config(source)
    summary = rundir.read_summary(source)
    if summary.get("status") != "finished":
        raise ConfigError(f"{source}: not a finished run (status {summary.get('status')!r}); finish it first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    for name in COPY_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, ignore=shutil.ignore_patterns("tensorboard"))
    sha = write_weights_only(rundir.checkpoint_path(source), rundir.checkpoint_path(dest),
                             summary.get("checkpoint_sha256"))  # fmt: skip
    record = {**provenance(source), "source_checkpoint_sha256": summary.get("checkpoint_sha256")}
    rundir.write_summary(dest, {**summary, "checkpoint_sha256": sha, "pretrained": record})
    spec = tasks.get(task)
    if spec.evaluate is not None:
        options = {}
        base = (summary.get("baseline") or {}).get("run")
        if "baseline" in spec.options and base and Path(base).resolve() in (baselines or {}):
            options["baseline"] = baselines[Path(base).resolve()]
        spec.evaluate(dest, exp, device, **options)
        after = rundir.read_summary(dest)
        if "baseline" in options and isinstance(after.get("baseline"), dict):  # the sibling, wherever copied
            after["baseline"]["run"] = f"../{Path(options['baseline']).name}"
        record["eval_reproduces_test"] = after.get("test") == summary.get("test")
        rundir.write_summary(dest, {**after, "pretrained": record})
    return record


def pack(sources: dict[str, Path], out: Path, device: Any = "cpu", compare: bool = True) -> dict[str, Any]:
    """Pack finished runs (name -> run folder) into bundle `out`, replacing it whole: each run, the
    explorer's start-up cache, and (with `compare`) `mnistlab compare`'s measures and page."""
    import torch

    out = Path(out)
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    device = torch.device(device)
    packed, records = {}, {}
    for name, src in sources.items():
        records[name] = pack_run(Path(src), staging / name, device, packed)
        packed[Path(src).resolve()] = staging / name
    from mnistlab.web.explorer import Explorer

    Explorer(staging)  # computes and writes the start-up cache into the encoder run it serves
    if compare:
        from mnistlab import bench
        from mnistlab.report import bench_page

        cfg = bench.BenchConfig(device=str(device))
        # The measures are cached in each run (compare.json), so `mnistlab compare` of the bundle reads files.
        entries, notes = bench.compare([staging / n for n in sources], cfg, compute=True)
        bench_page.write(entries, notes, cfg, staging / REPORT)
    write_json(staging / "bundle.json", {"runs": records})
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return records


def make(work: Path, out: Path, device: Any = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train every task that has a default preset into `work` (finished runs are kept, unfinished ones
    resumed), then pack them into `out`: the bundle, from scratch."""
    work = Path(work)
    sources: dict[str, Path] = {}
    for spec in tasks.all_tasks():  # every task (built-in or plug-in) has a default preset
        run = work / spec.name
        if rundir.read_summary(run).get("status") != "finished":
            options = {"baseline": sources[_first_plain_coder(sources)]} if "baseline" in spec.options else {}
            tasks.train(spec.name, "default", out=run, resume=(run / "config.toml").is_file(), progress=progress,
                        **options)  # fmt: skip
        sources[spec.name] = run
    return pack(sources, out, device)


def _first_plain_coder(sources: dict[str, Path]) -> str:
    """The first trained run that encodes and decodes without denoising (what a denoiser compares with)."""
    for name in sources:
        roles = tasks.get(name).roles
        if {"encoder", "decoder"} <= roles and "denoiser" not in roles:
            return name
    raise ConfigError("no plain autoencoder was trained before the denoiser to compare it with")
