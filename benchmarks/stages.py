"""Where the default study's time goes on this host: each training stage's step, its share of the
matmul peak, its projected seconds, and the chain of stages that sets the study's wall time.

    PYTHONPATH=src python -m benchmarks.stages [--preset default] [--threads N] [--quick] [--json FILE]

First the host: the CPU's model and the flags that pick kernels, torch's version, the fp32 matmul peak
at 2 threads (the issue's budget is 1800 s x 158 / that peak: 158 GFLOP/s was the 2-core AVX2 host's)
and at the stages' threads, and the bf16 peak where the CPU has bf16 units.

Then one row per training part of each stage of `mnistlab run --preset P`: the task objects built as
the tasks' train functions build them (the study's `run.set` items applied), fed batches of the
embedded MNIST at the preset's batch size, in the precision `train.amp` resolves to here; a few steps
of warm-up, then steps until `--seconds` have passed (at least `--steps`): images per wall second,
and per CPU second of this process (at one thread the steadier on a shared host: it leaves out the
time spent waiting for a core). Its FLOPs per image come from torch's FlopCounterMode over one step.
Projected seconds: the stage's training images (steps per epoch x epochs of the preset, as `fit`
counts them) / the rate, from either rate. Left out, so the projection is a lower bound: validation,
checkpoints, the GANs' and the flow's scoring between epochs and at the end, the probe's linear heads
and baselines, the latent and labels stages (no training step).

Last, the schedule: the stages' reads (study/registry.py) and the study's workers (run.workers: 0 is
one per core), list-scheduled over the projected seconds, longest chain first and in the study's own
start order (run.start_first), each stage at the threads the study gives it (the last one left running
is widened to every core by the study; not modelled). The projected wall time is printed against the
budget. `--quick`: one timed step of batch 16 on a 1,024-image slice and small peaks, for tests; not
a measurement.

The semi-supervised step is timed with every pseudo-label accepted (threshold 0: every strong view
forwarded), the most a step of its recipe can cost, as benchmarks/semi_speed.py does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import host_report, write_result
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.core.config import load_table
from mnistlab.data.datasets import Data, DataConfig, Split, load, to_float
from mnistlab.models import build_model
from mnistlab.models.autoencoder import Encoder
from mnistlab.models.cgan import CGAN
from mnistlab.models.encoder_classifier import EncoderClassifier
from mnistlab.models.vae import VAE, CodePrior
from mnistlab.probe.fit import ProbeTask, balanced_subset, parse_labels_per_class, repeat_to
from mnistlab.probe.run import label_seeds
from mnistlab.search.grid import worker_threads
from mnistlab.study import registry
from mnistlab.study.context import StudyContext, split_overrides
from mnistlab.study.plan import RunPlan
from mnistlab.study.pool import start_order, workers_for
from mnistlab.tasks.cgan import cgan_task
from mnistlab.tasks.flow import FlowTask
from mnistlab.tasks.vae import VAETask
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.denoise import DenoisingTask
from mnistlab.training.gan import GANTask
from mnistlab.training.gan_run import merged
from mnistlab.training.loop import amp_mode, make_optimizer
from mnistlab.training.semi import SemiTask, check_experiment
from mnistlab.training.variational import fit_code_prior

CPU = torch.device("cpu")
# --quick: a slice for every stage, and label subsets it can hold
QUICK_SET = ("data.train_limit=1024", "data.test_limit=256", "run.labels_per_class=10,all")
QUICK_BATCH, QUICK_PROBE = 16, "probe.finetune.batch_size=16"
LONGEST_FIRST, STUDY_ORDER = "longest chain first", "study's start order"
CODE_PRIOR_CHUNK = 64  # batches of the VAE's second stage per timed call (each call runs one epoch)


@dataclass
class Part:
    """One timed training part of a study stage: `step(i)` runs one training step on its i-th batch."""

    stage: str
    name: str
    batch: int  # images the loop counts per step
    steps: int  # steps of the preset's whole run
    precision: str
    step: Callable[[int], object]
    note: str = ""
    period: int = 1  # steps after which the step's work repeats (the GANs' lazy R1 penalty)
    # measured
    wall_rate: float = 0.0  # images per wall second
    cpu_rate: float = 0.0  # images per CPU second of this process
    flops_per_image: float = 0.0

    @property
    def images(self) -> int:
        return self.steps * self.batch

    @property
    def seconds(self) -> float:
        return self.images / self.wall_rate if self.wall_rate else math.nan

    @property
    def cpu_seconds(self) -> float:
        """The same at the rate per CPU second: what a quiet host would give, at one thread."""
        return self.images / self.cpu_rate if self.cpu_rate else math.nan


class Study:
    """The study's context and its data, loaded once per DataConfig."""

    def __init__(self, preset: str, extra: tuple[str, ...] = (), quick: bool = False):
        self.quick = quick
        plan = load_table("run", preset, split_overrides(list(extra)).get("run", []), RunPlan)
        self.ctx = StudyContext(
            Path(tempfile.gettempdir()) / "mnistlab-stages-benchmark",  # never written: reads only
            preset,
            plan,
            split_overrides([*plan.set, *extra]),
            "cpu",
            progress=False,
        )
        self._data: dict[DataConfig, Data] = {}

    def data(self, cfg: DataConfig) -> Data:
        if cfg not in self._data:
            self._data[cfg] = load(cfg)
        return self._data[cfg]


def _cycling(split: Split, batch: int, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches (uint8 images (B, 28, 28), labels (B,)) drawn from `split`, as the loop draws them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        for idx in torch.randperm(len(split), generator=g).split(batch):
            if len(idx) == batch:
                out.append((split.images[idx], split.labels[idx]))
    return out[:n]


def _steps(n_train: int, cfg) -> int:
    return math.ceil(n_train / cfg.batch_size) * cfg.epochs


def _precision(cfg) -> str:
    return "bf16" if amp_mode(cfg, CPU) == "bf16" else "fp32"


def _plain(stage: str, task, split: Split, cfg, n_batches: int, note: str = "", period: int = 1) -> Part:
    """A part whose task steps on (images, labels) as `fit` calls it."""
    data = _cycling(split, cfg.batch_size, n_batches)
    return Part(
        stage,
        stage,
        cfg.batch_size,
        _steps(len(split), cfg),
        _precision(cfg),
        lambda i: task.train_step(*data[i % len(data)]),
        note,
        period,
    )


def _r1_period(gcfg) -> int:
    """Steps between two R1 penalties (each a double backward through D): 1 without the penalty."""
    return gcfg.r1_every if gcfg.r1 > 0 else 1


# Each task's parts, its objects built as its train function builds them (weights untrained: the
# speed of a step does not depend on them). A task without an entry is listed as not timed.


def _ae(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    task = AutoencoderTask(build_model("conv_autoencoder", exp.model), exp.train, data.val, CPU)
    return [_plain(name, task, data.train, exp.train, n)]


def _dae(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    task = DenoisingTask(build_model("conv_autoencoder", exp.model), exp.train, data.val, CPU, exp.noise)
    return [_plain(name, task, data.train, exp.train, n)]


def _vae(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    model = VAE(exp.model)
    task = VAETask(model, exp, data.val, CPU, _steps(len(data.train), exp.train))
    parts = [_plain(name, task, data.train, exp.train, n)]
    if exp.vae.code_prior_epochs:  # the second stage, after the first, on its frozen codes (N, d)
        d, bs = exp.model.latent_dim, exp.train.batch_size
        per_call = 2 if study.quick else CODE_PRIOR_CHUNK
        rows = bs * per_call
        g = torch.Generator().manual_seed(0)
        mu, sd = torch.randn(rows, d, generator=g), torch.rand(rows, d, generator=g) + 0.1
        stage = CodePrior(d, exp.model.code_prior)

        def chunk(i: int) -> object:
            return fit_code_prior(stage, mu, sd, 1, bs, exp.train.lr, i, schedule=exp.train.schedule)

        steps = math.ceil(len(data.train) / bs) * exp.vae.code_prior_epochs
        parts.append(
            Part(
                name,
                f"{name} 2nd stage",
                rows,
                math.ceil(steps / per_call),
                "fp32",
                chunk,
                f"{per_call} batches of {bs} codes per call",
            )
        )
    return parts


def _gan(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    train = merged(data) if exp.gan.merge_test else data.train
    total = _steps(len(train), exp.train)
    task = GANTask(build_model("report_gan", exp.model), exp.train, exp.gan, CPU, total, None)
    return [_plain(name, task, train, exp.train, n, _note(exp.gan), _r1_period(exp.gan))]


def _cgan(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    train = merged(data) if exp.gan.merge_test else data.train
    total = _steps(len(train), exp.train)
    task = cgan_task(CGAN(exp.model), exp.train, exp.gan, CPU, total, None, exp.cgan.aux_weight)
    return [_plain(name, task, train, exp.train, n, _note(exp.gan), _r1_period(exp.gan))]


def _note(gcfg) -> str:
    period = _r1_period(gcfg)
    return f"timed and counted over whole R1 periods ({period} steps)" if period > 1 else ""


def _flow(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    data = study.data(exp.data)
    task = FlowTask(exp, CPU, data.val)
    return [_plain(name, task, data.train, exp.train, n)]


def _semi(study: Study, name: str, n: int) -> list[Part]:
    exp = study.ctx.experiment(name)
    exp = dataclasses.replace(exp, semi=dataclasses.replace(exp.semi, threshold=0.0, threshold_floor=0.0))
    data = study.data(exp.data)
    task = SemiTask(exp, data.train, check_experiment(exp, data.train), data.val, CPU)
    indexed = Split(data.train.images, torch.arange(len(data.train)))  # the loop's split: index as label
    return [
        _plain(
            name,
            task,
            indexed,
            exp.train,
            n,
            f"+{exp.semi.batch_labelled} labelled per step; every strong view",
        )
    ]


def _probe(study: Study, name: str, n: int) -> list[Part]:
    """The probe's networks (encoder + linear head on images: the fine-tuned ones and those from
    scratch, one architecture, one step); its linear heads on codes are left out (rows of d numbers)."""
    ctx = study.ctx
    enc = ctx.experiment(ctx.encoder)
    probe = ctx.probe_table()
    cfg, opts = probe.finetune, probe.options
    data = study.data(enc.data)
    counts = parse_labels_per_class(",".join(ctx.plan.labels_per_class)) if ctx.plan.labels_per_class else ()
    steps, nets = 0, 0

    def network(split: Split) -> None:
        nonlocal steps, nets
        steps += _steps(len(repeat_to(split, opts.min_epoch_images)), cfg)
        nets += 1

    if ctx.plan.finetune:
        network(data.train)
    for count in counts:
        for seed in label_seeds(count, opts):
            subset = (
                data.train
                if count is None
                else data.train.take(balanced_subset(data.train.labels, count, seed))
            )
            if count is not None or not ctx.plan.finetune:
                network(subset)  # fine-tuned
            network(subset)  # from scratch
    model = EncoderClassifier(Encoder(enc.model), enc.model.latent_dim)  # the encoder run's fresh_encoder
    opt = make_optimizer(model.parameters(), cfg)
    task = ProbeTask(model, opt, data.val, CPU, to_float, opts.shift, cfg.eval_batch_size)
    batches = _cycling(data.train, cfg.batch_size, n)
    part = Part(
        name,
        f"{name} networks",
        cfg.batch_size,
        steps,
        _precision(cfg),
        lambda i: task.train_step(*batches[i % len(batches)]),
        f"{nets} networks; linear heads not timed",
    )
    return [part]


BUILDERS: dict[str, Callable[[Study, str, int], list[Part]]] = {
    "ae": _ae,
    "dae": _dae,
    "vae": _vae,
    "gan": _gan,
    "cgan": _cgan,
    "flow": _flow,
    "semi": _semi,
    "probe": _probe,
}


def measure(part: Part, warmup: int, min_steps: int, seconds: float) -> None:
    """Fill in the part's rates (after `warmup` untimed steps: steps until at least `seconds` and
    `min_steps` have passed, in whole periods) and its FLOPs per image (over one period of steps)."""
    i = 0
    for _ in range(warmup):
        part.step(i)
        i += 1
    t0, c0, done = time.perf_counter(), time.process_time(), 0
    while done < min_steps or time.perf_counter() - t0 < seconds or done % part.period:
        part.step(i)
        i, done = i + 1, done + 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    part.wall_rate = done * part.batch / wall
    part.cpu_rate = done * part.batch / cpu if cpu > 0 else math.nan
    with FlopCounterMode(display=False) as counter:
        for j in range(part.period):
            part.step(i + j)
    part.flops_per_image = counter.get_total_flops() / (part.batch * part.period)


# ------------------------------------------------------------------------------------- schedule


def chain_lengths(
    names: list[str], reads: dict[str, list[str]], seconds: dict[str, float]
) -> dict[str, float]:
    """Each stage's seconds plus the longest chain of stages that read it (itself included)."""
    readers = {n: [m for m in names if n in reads[m]] for n in names}
    tail: dict[str, float] = {}

    def length(n: str) -> float:
        if n not in tail:
            tail[n] = seconds[n] + max((length(m) for m in readers[n]), default=0.0)
        return tail[n]

    for n in names:
        length(n)
    return tail


def critical_chain(names: list[str], reads: dict[str, list[str]], seconds: dict[str, float]) -> list[str]:
    """The chain of stages, each reading the one before, with the most seconds in all."""
    tail = chain_lengths(names, reads, seconds)
    readers = {n: [m for m in names if n in reads[m]] for n in names}
    heads = [n for n in names if not reads[n]]
    chain = [max(heads, key=lambda n: tail[n])]
    while readers[chain[-1]]:
        chain.append(max(readers[chain[-1]], key=lambda n: tail[n]))
    return chain


def list_schedule(
    order: list[str], reads: dict[str, list[str]], seconds: dict[str, float], workers: int
) -> list[tuple[str, float, float]]:
    """(stage, start, end) of each stage when `workers` run at once, a stage starting once the stages
    it reads have ended, the first ready one in `order` taking a free worker."""
    pending, running, done, out, now = list(order), [], {}, [], 0.0
    while pending or running:
        while len(running) < workers:
            ready = next((n for n in pending if all(r in done for r in reads[n])), None)
            if ready is None:
                break
            pending.remove(ready)
            running.append((now + seconds[ready], ready, now))
        running.sort()
        end, name, start = running.pop(0)
        now, done[name] = end, end
        out.append((name, start, end))
    return sorted(out, key=lambda r: r[1])


# ------------------------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> dict:
    keep_freed_memory()  # as `mnistlab train` does
    extra = QUICK_SET if args.quick else ()
    study = Study(args.preset, extra)
    ctx = study.ctx
    stages = registry.planned(ctx)
    names = [s.name for s in stages]
    reads = {s.name: [r for r in s.reads(ctx) if r in names and r != s.name] for s in stages}
    workers = workers_for(ctx.plan.workers, len(stages))
    threads = args.threads or worker_threads(workers)
    host = host_report(threads, quick=args.quick)
    for line in host["lines"]:
        print(line, flush=True)
    if args.quick:  # small batches too: seconds in all
        extra += (*(f"{t}.train.batch_size={QUICK_BATCH}" for t in ctx.trained), QUICK_PROBE)
    if host["bf16_units"] == "hidden":
        # Emulating a host without bf16 units: train.amp=auto resolves there to fp32, but
        # training.loop.cpu_has_bf16 reads the CPU's flags, which the ISA cap does not hide.
        auto = [t for t in ctx.trained if ctx.experiment(t).train.amp == "auto"]
        print(f"  bf16 hidden: train.amp=auto taken as off (fp32) for {', '.join(auto)}, as on such a host")
        extra += tuple(f"{t}.train.amp=off" for t in auto)
    study = Study(args.preset, extra, args.quick)
    ctx = study.ctx
    torch.set_num_threads(threads)
    warmup, min_steps, secs = (1, 1, 0.0) if args.quick else (args.warmup, args.steps, args.seconds)
    n_batches = warmup + min_steps + 1 if args.quick else 64

    parts: list[Part] = []
    for name in names:
        build = BUILDERS.get(name)
        if build is None:
            continue
        torch.manual_seed(0)
        for part in build(study, name, n_batches):
            if args.quick:  # a smoke run: one step, whatever the step's period
                part.period = 1
            measure(part, warmup, min_steps, secs)
            print(
                f"  {part.name}: {part.wall_rate:,.0f} images/s ({part.precision}, batch {part.batch})",
                flush=True,
            )
            parts.append(part)
    untimed = [n for n in names if n not in BUILDERS]
    print(f"\nTraining parts of `mnistlab run --preset {args.preset}`, {threads} thread(s) each:")
    text, rows = table(parts, host, untimed)
    print(text)
    print(
        "\nStages and what they read: "
        + "; ".join(f"{n} <- {', '.join(reads[n])}" for n in names if reads[n])
    )
    rates = {"wall": [p.seconds for p in parts], "CPU": [p.cpu_seconds for p in parts]}
    plans = {}
    for rate, secs in rates.items():
        seconds = {n: sum(t for p, t in zip(parts, secs) if p.stage == n) for n in names}
        plans[rate] = plan_report(names, reads, seconds, workers, ctx.plan.start_first)
        chain, made = plans[rate]["critical_chain"], plans[rate]["makespans"]
        print(
            f"From the images per {rate} second: critical chain {' -> '.join(chain)} "
            f"({sum(seconds[n] for n in chain):,.0f} s of training)"
        )
        for label, sched in plans[rate]["schedules"].items():
            timeline = ", ".join(f"{n} {s:,.0f}-{e:,.0f}" for n, s, e in sched)
            print(f"  {workers} workers, {label}: {made[label]:,.0f} s  ({timeline})")
    projected = plans["wall"]["makespans"][STUDY_ORDER]
    quiet = plans["CPU"]["makespans"][STUDY_ORDER]
    budget, quiet_budget = host["budget_s"], host["budget_from_cpu_s"]
    print(
        f"Projected training wall time {projected:,.0f} s against this host's budget {budget:,.0f} s: "
        f"{projected / budget:.2f}x the budget\nFrom the CPU-second rates and peaks: {quiet:,.0f} s "
        f"against {quiet_budget:,.0f} s: {quiet / quiet_budget:.2f}x"
        + ("   [--quick: smoke sizes, not measurements]" if args.quick else "")
    )
    return {
        "name": "stages",
        "preset": args.preset,
        "quick": args.quick,
        "host": {k: v for k, v in host.items() if k != "lines"},
        "threads": threads,
        "workers": workers,
        "rows": rows,
        "untimed": untimed,
        "reads": reads,
        "stage_seconds": plans["wall"]["stage_seconds"],
        "critical_chain": plans["wall"]["critical_chain"],
        "schedules": plans["wall"]["schedules"],
        "from_cpu_rates": plans["CPU"],
        "projected_s": round(projected, 1),
        "projected_cpu_rates_s": round(quiet, 1),
        "budget_s": round(budget, 1),
        "ratio_to_budget": round(projected / budget, 3),
        "budget_from_cpu_s": round(quiet_budget, 1),
        "ratio_to_budget_from_cpu": round(quiet / quiet_budget, 3),
        "matmul_peak_gflops": round(host["fp32_stage"], 1),
    }


def _pct(rate: float, flops: float, peak: float | None) -> float | None:
    return 100 * rate * flops / 1e9 / peak if peak else None


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def table(parts: list[Part], host: dict, untimed: list[str]) -> tuple[str, list[dict]]:
    """The parts as a printed table and as JSON rows; the stages in `untimed` as rows of 0 s. The
    shares of the peaks: wall rate against the wall-clock peaks, and (starred) CPU-second rate against
    the peaks per CPU second, both at the stages' threads."""
    head = (
        f"{'part':<16}{'precision':>9}{'batch':>6}{'images/s':>10}{'/CPU s':>8}{'MFLOP/img':>10}"
        f"{'% fp32':>8}{'% bf16':>8}{'% fp32*':>8}{'% bf16*':>8}{'images':>12}{'proj. s':>9}{'CPU s':>8}  note"
    )
    lines, rows = [head, "-" * len(head)], []
    for p in parts:
        f = p.flops_per_image
        f32, f16 = _pct(p.wall_rate, f, host["fp32_stage"]), _pct(p.wall_rate, f, host.get("bf16_stage"))
        c32 = _pct(p.cpu_rate, f, host["fp32_stage_cpu"])
        c16 = _pct(p.cpu_rate, f, host.get("bf16_stage_cpu"))
        lines.append(
            f"{p.name:<16}{p.precision:>9}{p.batch:>6}{p.wall_rate:>10,.0f}{p.cpu_rate:>8,.0f}"
            f"{f / 1e6:>10.1f}{_cell(f32):>8}{_cell(f16):>8}{_cell(c32):>8}{_cell(c16):>8}"
            f"{p.images:>12,}{p.seconds:>9,.0f}{p.cpu_seconds:>8,.0f}  {p.note}"
        )
        rows.append(
            {
                "stage": p.stage,
                "part": p.name,
                "precision": p.precision,
                "batch": p.batch,
                "images_per_s": round(p.wall_rate, 1),
                "images_per_cpu_s": round(p.cpu_rate, 1),
                "mflop_per_image": round(p.flops_per_image / 1e6, 3),
                "pct_fp32_peak": round(f32, 2),
                "pct_bf16_peak": None if f16 is None else round(f16, 2),
                "pct_fp32_peak_cpu": round(c32, 2),
                "pct_bf16_peak_cpu": None if c16 is None else round(c16, 2),
                "images": p.images,
                "projected_s": round(p.seconds, 1),
                "projected_cpu_s": round(p.cpu_seconds, 1),
                "note": p.note,
            }
        )
    for n in untimed:
        lines.append(f"{n:<16}{'':>87}{'0':>9}{'0':>8}  not timed")
    lines.append("* images per CPU second against the matmul's GFLOP per CPU second, at the same threads")
    return "\n".join(lines), rows


def plan_report(
    names: list[str], reads: dict[str, list[str]], seconds: dict[str, float], workers: int, first
) -> dict:
    """The critical chain and two list schedules (longest chain first; the study's start order,
    `run.start_first` then stage order) of stages taking `seconds`, with their makespans."""
    tail = chain_lengths(names, reads, seconds)
    orders = {
        LONGEST_FIRST: sorted(names, key=lambda n: -tail[n]),
        STUDY_ORDER: start_order(names, first),
    }
    schedules = {k: list_schedule(order, reads, seconds, workers) for k, order in orders.items()}
    return {
        "stage_seconds": {n: round(s, 1) for n, s in seconds.items()},
        "critical_chain": critical_chain(names, reads, seconds),
        "schedules": {k: [[n, round(s, 1), round(e, 1)] for n, s, e in v] for k, v in schedules.items()},
        "makespans": {k: max(e for _, _, e in v) for k, v in schedules.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads per stage [0: as the study gives each]"
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per part, at least [4]")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per part, at least [5]")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first [3]")
    ap.add_argument("--quick", action="store_true", help="a 1,024-image slice, one timed step: a smoke run")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    out = run(args)
    if args.json:
        write_result(args.json, out)
    return out


if __name__ == "__main__":
    main()
