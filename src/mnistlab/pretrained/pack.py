"""Packing the shipped runs (see pretrained/shipped.py): `pack` copies finished runs into a bundle with
weights-only checkpoints, re-evaluates them, builds the explorer's start-up cache and the compare
page; `make` trains every task's default preset first, so the bundle can be remade from scratch.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mnistlab import tasks
from mnistlab.bench import compare as bench
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes, write_json
from mnistlab.pretrained.shipped import REPORT
from mnistlab.report import bench_page
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import write_weights_only
from mnistlab.web.explorer import Explorer

log = logging.getLogger("mnistlab")

COPY_FILES = ("config.toml", "command.txt", "metrics.jsonl")
# probe/ and latent/: what the explorer classifies with and maps (with `mnistlab probe` / `latent` run on it)
COPY_DIRS = ("figures", "grids", "probe", "latent")


def provenance(source: Path) -> dict[str, Any]:
    """Where a run came from: its command, the commit of the tree that packed it, this machine (the
    one that trained it: `make` trains and packs in one go)."""
    command = (source / "command.txt").read_text().strip() if (source / "command.txt").is_file() else None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return {
        "source": str(source),
        "command": command,
        "packed_at_commit": commit,
        "machine": f"{platform.machine()} {cpu or platform.processor()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        "packed": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# Options of a recorded training command that name folders of the machine that trained it, or only
# change what it printed: left out of the command a bundle shows (`mnistlab pretrained list`).
_PRIVATE_OPTIONS = {"--out": 1, "--data-dir": 1, "--resume": 0, "--no-progress": 0, "-q": 0}


SHIPPED_AE = "$(mnistlab pretrained path ae)"  # the --baseline of a packed command: the shipped copy


def public_command(command: str | None) -> str | None:
    """`command` as a bundle shows it: without the packing machine's folders (`--out`, `--data-dir`)
    or its console switches; a `--baseline` folder becomes the shipped autoencoder's copy, so the
    line can be run again as it stands."""
    if not command:
        return command
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: shown as recorded
        return command
    if len(words) > 1 and words[0] == "python:" and Path(words[1]).name == "mnistlab":
        # A study stage's folder made before stages recorded their parent's command holds the process's
        # argv: the CLI's script.
        words = ["mnistlab", *words[2:]]
    kept, i = [], 0
    while i < len(words):
        word = words[i]
        if word in _PRIVATE_OPTIONS:
            i += 1 + _PRIVATE_OPTIONS[word]
            continue
        if word == "--baseline" and i + 1 < len(words):
            kept += [word, SHIPPED_AE]
            i += 2
            if words[i - 1].startswith("$("):  # already a shipped copy's (a bundle's run packed again)
                while i < len(words) and not words[i - 1].endswith(")"):
                    i += 1
            continue
        kept.append(word)
        i += 1
    return " ".join(w if w.startswith("$(") else shlex.quote(w) for w in kept)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A provenance record without the packing machine's folders: the source's folder name only."""
    out = {**record, "command": public_command(record.get("command"))}
    if out.get("source"):
        out["source"] = Path(str(out["source"])).name
    return out


def _relative_records(dest: Path) -> None:
    """The packed run's summaries name no folder of the machine that made them: the probe's run and
    folder relative to the packed run, the training data by its folder's name."""
    summary = rundir.read_summary(dest)
    if isinstance(summary.get("data"), str) and Path(summary["data"]).is_absolute():
        rundir.write_summary(dest, {**summary, "data": Path(summary["data"]).name})
    path = dest / "probe" / "summary.json"
    if path.is_file():
        summary = rundir.read_summary(dest / "probe")
        for key, rel in (("run", ".."), ("out", ".")):
            if isinstance(summary.get(key), str) and Path(summary[key]).is_absolute():
                summary[key] = rel
        rundir.write_summary(dest / "probe", summary)


def _relative_pages(report: Path, staging: Path) -> None:
    """The compare page names the bundle's runs by their folder names, not by the staging folder of
    the machine that packed it (which is gone once the bundle is in place)."""
    prefixes = sorted({f"{staging}/", f"{staging.resolve()}/"}, key=len, reverse=True)
    for page in report.glob("compare.*"):
        text = page.read_text()
        for prefix in prefixes:
            text = text.replace(prefix, "")
        atomic_write_bytes(page, text.encode())


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def pack_run(
    source: Path, dest: Path, device: Any, baselines: dict[Path, Path] | None = None, half: bool = True
) -> dict[str, Any]:
    """Copy finished run `source` into `dest` with a weights-only checkpoint (float16 with `half`),
    then evaluate the copy (tasks that can) and record how far its test numbers moved from the
    source's. `baselines` maps source run folders to their packed copies, for a run evaluated beside
    another (the denoiser's baseline)."""
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
            shutil.copytree(
                source / name, dest / name, ignore=shutil.ignore_patterns("tensorboard", *owner.BOOKKEEPING)
            )
    sha = write_weights_only(
        rundir.checkpoint_path(source),
        rundir.checkpoint_path(dest),
        summary.get("checkpoint_sha256"),
        half=half,
    )
    earlier = summary.get("pretrained")
    if isinstance(earlier, dict) and earlier.get("command"):
        # A run of an earlier bundle, packed again beside new ones: where it was trained stays its
        # provenance (its float16 weights pass through unchanged); only the repacking is new.
        record = _public({**earlier, "repacked": provenance(source)["packed"]})
    else:
        record = _public(
            {
                **provenance(source),
                "source_checkpoint_sha256": summary.get("checkpoint_sha256"),
                "weights": "float16" if half else "float32 (bit for bit)",
            }
        )
    _relative_records(dest)
    rundir.write_summary(dest, {**summary, "checkpoint_sha256": sha, "pretrained": record})
    spec = tasks.get(task)
    if spec.evaluate is not None:
        options = {}
        base = (summary.get("baseline") or {}).get("run")
        if base and not Path(base).is_absolute():  # a packed run's sibling ("../ae"): next to the run
            base = source / base
        if "baseline" in spec.options and base and Path(base).resolve() in (baselines or {}):
            options["baseline"] = baselines[Path(base).resolve()]
        spec.evaluate(dest, exp, device, **options)
        after = rundir.read_summary(dest)
        if "baseline" in options and isinstance(after.get("baseline"), dict):  # the sibling, wherever copied
            after["baseline"]["run"] = f"../{Path(options['baseline']).name}"
        # the trained weights' numbers, before any rounding (an earlier bundle's run: as it recorded them)
        record.setdefault("source_test", summary.get("test"))
        record["test_max_relative_change"] = max_relative_change(record["source_test"], after.get("test"))
        rundir.write_summary(dest, {**after, "pretrained": record})
        _relative_records(dest)
    return record


def max_relative_change(before: Any, after: Any) -> float | None:
    """Largest |after - before| / |before| over the numbers both test tables hold (None if none)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    changes = [
        abs(after[k] - v) / abs(v)
        for k, v in before.items()
        if isinstance(v, int | float) and isinstance(after.get(k), int | float) and v != 0
    ]
    return max(changes) if changes else None


def pack(
    sources: dict[str, Path], out: Path, device: Any = "cpu", compare: bool = True, half: bool = True
) -> dict[str, Any]:
    """Pack finished runs (name -> run folder) into bundle `out`: each run, the explorer's start-up
    cache, and (with `compare`) `mnistlab compare`'s measures and page. The bundle is built aside and
    then replaces the files of the bundle that was in `out` (a user's own files there stay); an `out`
    that holds something other than a bundle is left alone and the bundle written beside it."""
    with owner.session():
        out = owner.claim(bundle_folder(Path(out)), "bundle", bundle=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{owner.STAGING}", dir=out.parent))
        try:
            # Claimed too, so that what the runs' caches write into it (the explorer's, compare's)
            # is this command's, written under its claim.
            owner.claim(staging, "bundle", bundle=True)
            records = _build(sources, staging, torch.device(device), compare, half)
            owner.clear(out)
            owner.move_into(staging, out)
        finally:
            owner.release(staging)
            shutil.rmtree(staging, ignore_errors=True)  # made above: nothing in it is the user's
    return records


def bundle_folder(out: Path) -> Path:
    """`out` if a bundle may be written there (new, empty or a bundle), else the first free sibling
    `<out>-bundle`, `<out>-bundle-2`, ...: a bundle never goes over a folder that is not one."""
    out = out.resolve()  # "DIR/inner/.." is DIR: its siblings are DIR's
    if out.exists() and not out.is_dir():  # a file or a device (/dev/null): no folder to write beside
        raise ConfigError(f"--out {out} is not a folder; name the bundle's folder")
    if owner.claimable(out, "bundle"):
        return out
    for k in range(1, 1000):
        beside = out.with_name(f"{out.name}-bundle" + (f"-{k}" if k > 1 else ""))
        if owner.claimable(beside, "bundle"):
            log.warning(
                "%s holds files that are not a bundle of mnistlab's; writing the bundle to %s", out, beside
            )
            return beside
    raise ConfigError(
        f"{out} holds files that are not a bundle, and so do its -bundle siblings; choose another --out"
    )


def _build(sources: dict[str, Path], staging: Path, device: Any, compare: bool, half: bool) -> dict[str, Any]:
    packed, records = {}, {}
    for name, src in sources.items():
        records[name] = pack_run(Path(src), staging / name, device, packed, half)
        packed[Path(src).resolve()] = staging / name
    Explorer(staging)  # computes and writes the start-up cache into the encoder run it serves
    timing: dict[str, float] = {}
    if compare:
        t0 = time.perf_counter()
        cfg = bench.BenchConfig(device=str(device))
        # The measures are cached in each run (compare.json), so `mnistlab compare` of the bundle reads files.
        entries, notes = bench.compare([staging / n for n in sources], cfg, compute=True)
        bench_page.write(entries, notes, cfg, staging / REPORT)
        _relative_pages(staging / REPORT, staging)
        timing["compare_seconds"] = round(time.perf_counter() - t0, 1)  # every measure computed
    write_json(staging / "bundle.json", {"runs": records, **timing})
    return records


def make(work: Path, out: Path, device: Any = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train every task that has a default preset into `work` (finished runs are kept, unfinished ones
    resumed), then pack them into `out`: the bundle, from scratch."""
    work = Path(work)
    sources: dict[str, Path] = {}
    for spec in tasks.all_tasks():  # every task (built-in or plug-in) has a default preset
        run = work / spec.name
        if rundir.read_summary(run).get("status") != "finished":
            options = {"baseline": sources[_first_autoencoder(sources)]} if "baseline" in spec.options else {}
            with owner.session():  # the run's folder is locked while it trains
                tasks.train(
                    spec.name,
                    "default",
                    out=run,
                    resume=(run / "config.toml").is_file(),
                    progress=progress,
                    **options,
                )
        sources[spec.name] = run
    return pack(sources, out, device)


def _first_autoencoder(sources: dict[str, Path]) -> str:
    """The first trained run that serves as an autoencoder run (TaskSpec.provides; what a denoiser
    compares with), as the study picks its autoencoder stage."""
    for name in sources:
        if "autoencoder" in tasks.get(name).provides:
            return name
    raise ConfigError("no plain autoencoder was trained before the denoiser to compare it with")
