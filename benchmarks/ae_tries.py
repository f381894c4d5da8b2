"""What makes the autoencoder's training step faster on this CPU: variants of one step on a pre-made
batch, timed round-robin in one process (a busy shared machine then slows all of them alike), each
reported as a ratio to the tutorial step (nn.Dropout, contiguous tensors, torch's default Adam).

    PYTHONPATH=src nice -n 5 python -m benchmarks.ae_tries [--rounds 6] [--steps 5] [--only a,b]

Each variant's gradients are checked against the tutorial step's: one backward pass from the same
weights, without dropout, max |difference| relative to the largest gradient. Results of each try,
kept or not, are recorded by hand in benchmarks/results/cpu_speed.md.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import tutorial_model
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder

CL = torch.channels_last


@dataclass
class Variant:
    """One way to run the step: the module it trains, its input batch and optimizer, and options
    applied around each step (thread count, oneDNN on/off)."""

    model: nn.Module
    x: torch.Tensor
    opt: torch.optim.Optimizer
    threads: int = 0
    mkldnn: bool = True
    bf16: bool = False  # CPU autocast to bfloat16 (changes the numbers: recorded, not kept)

    def loss(self) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            recon, _ = self.model(self.x)
        return F.mse_loss(recon.float(), self.x)

    def step(self) -> None:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.backends.mkldnn.flags(enabled=self.mkldnn):
                loss = self.loss()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
        finally:
            torch.set_num_threads(before)


def variants(x: torch.Tensor) -> dict[str, Callable[[ConvAutoencoder], Variant]]:
    """name -> setup(fresh model with the reference weights) -> Variant."""

    def build(
        fast_dropout=False,
        cl=False,
        adam=None,
        threads=0,
        mkldnn=True,
        compile_=False,
        no_dropout=False,
        bf16=False,
    ):
        def setup(model: ConvAutoencoder) -> Variant:
            m = model if fast_dropout else tutorial_model(model)
            if no_dropout:  # the floor: what the step costs without any dropout layer
                m = ConvAutoencoder(
                    AEConfig(latent_dim=10, dropout=0.0)
                )  # other layer indices: fresh weights
            xb = x
            if cl:
                m = m.to(memory_format=CL)
                xb = x.contiguous(memory_format=CL)
            opt = torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=1e-4, **(adam or {}))
            if compile_:
                m = torch.compile(m)
            return Variant(m, xb, opt, threads, mkldnn, bf16)

        return setup

    return {
        "tutorial": build(),
        "channels_last": build(cl=True),
        "fast_dropout": build(fast_dropout=True),
        "fast_dropout+cl": build(fast_dropout=True, cl=True),
        "adam_fused": build(adam={"fused": True}),
        "adam_single_tensor": build(adam={"foreach": False}),
        "fast_dropout+cl+fused": build(fast_dropout=True, cl=True, adam={"fused": True}),
        "no_mkldnn": build(mkldnn=False),
        "fast_dropout+cl+1thread": build(fast_dropout=True, cl=True, threads=1),
        "no_dropout+cl (floor)": build(cl=True, no_dropout=True),
        "bf16_autocast+fast_dropout+cl": build(fast_dropout=True, cl=True, bf16=True),
        "compile(nn.Dropout)+cl": build(cl=True, compile_=True),
        "compile(fast_dropout)+cl": build(fast_dropout=True, cl=True, compile_=True),
    }


def grad_diff(x: torch.Tensor, setup) -> float:
    """max |grad_variant - grad_tutorial| / max |grad_tutorial| of one backward pass from the same
    weights, dropout off (the variant must compute the same gradients to float rounding)."""
    torch.manual_seed(1)
    ref = ConvAutoencoder(AEConfig(latent_dim=10, dropout=0.0))
    a = variants(x)["tutorial"](copy.deepcopy(ref))
    b = setup(copy.deepcopy(ref))
    for v in (a, b):
        v.loss().backward()
    ga = torch.cat([p.grad.flatten() for p in a.model.parameters()])
    gb = torch.cat([p.grad.flatten() for p in b.model.parameters()])
    return ((ga - gb).abs().max() / ga.abs().max()).item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5, help="steps per timing [5]")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated variant names (tutorial always runs)")
    ap.add_argument("--malloc", action="store_true", help="keep freed memory (mnistlab.core.allocator) first")
    args = ap.parse_args(argv)
    if args.malloc:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = AEConfig(latent_dim=10, dropout=args.dropout)
    x = torch.rand(args.batch, 1, 28, 28)
    all_v = variants(x)
    chosen = args.only.split(",") if args.only else [n for n in all_v if "compile" not in n]
    names = ["tutorial"] + [n for n in chosen if n != "tutorial"]
    torch.manual_seed(0)
    ref = ConvAutoencoder(cfg)
    steps = {}
    for n in names:
        steps[n] = all_v[n](copy.deepcopy(ref)).step
        t0 = time.perf_counter()
        steps[n]()  # warm-up: oneDNN primitives, allocator; compilation for "compile"
        steps[n]()
        if "compile" in n:
            print(f"{n}: first two steps (compilation) took {time.perf_counter() - t0:.1f} s", flush=True)
    best = {n: float("inf") for n in names}  # wall seconds per step
    cpu = {n: float("inf") for n in names}  # process CPU seconds per step: steadier on a shared machine
    for _ in range(args.rounds):
        for n in names:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steps[n]()
            best[n] = min(best[n], (time.perf_counter() - t0) / args.steps)
            cpu[n] = min(cpu[n], (time.process_time() - c0) / args.steps)
    print(
        f"batch {args.batch}, dropout {args.dropout}, threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds x {args.steps} steps, best step time (wall, and CPU time of the process)"
    )
    for n in names:
        diff = grad_diff(x, all_v[n]) if n != "tutorial" else 0.0
        print(
            f"{n:26s} {best[n] * 1e3:7.1f} ms wall {args.batch / best[n]:6.0f} img/s "
            f"{best['tutorial'] / best[n]:5.2f}x | {cpu[n] * 1e3:7.1f} ms CPU {cpu['tutorial'] / cpu[n]:5.2f}x"
            f" | rel. grad diff (no dropout) {diff:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
