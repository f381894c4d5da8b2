"""Speed of one optimizer step: torch's default per-tensor Adam loop against the fused kernel that
`training.loop.make_optimizer` picks, on the parameters of the autoencoder and both GAN networks.

    python -m benchmarks.adam_kernels [--steps 300] [--repeats 3] [--threads 1]

Each side steps the same parameters with the same stored gradients (AdamW, lr 1e-3, weight decay 1e-4);
the sides alternate --repeats times and the best CPU time of each is kept (process time, so a busy
machine's waiting is left out). The printed difference is the largest absolute parameter difference
after all the steps: float rounding, since both compute the same update.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import result, write_result
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.gan import GAN, GANConfig
from mnistlab.training.loop import TrainConfig, make_optimizer


def networks() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    gan = GAN(GANConfig())
    return {
        "ae": ConvAutoencoder(AEConfig()),
        "gan_generator": gan.generator,
        "gan_discriminator": gan.discriminator,
    }


def step_ms(net: torch.nn.Module, fused: bool, steps: int) -> tuple[float, torch.Tensor]:
    """CPU milliseconds per optimizer step, and the parameters (flat) after `steps` steps."""
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    opt = make_optimizer(params, cfg) if fused else torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    assert opt.defaults.get("fused") is (True if fused else None), (
        "make_optimizer did not pick the fused kernel"
    )
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(4)]
    t0 = time.process_time()
    for s in range(steps):
        for p, g in zip(params, grads[s % 4]):
            p.grad = g
        opt.step()
    ms = (time.process_time() - t0) / steps * 1e3
    return ms, torch.cat([p.detach().flatten() for p in params])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    per_net, base_total, fused_total = {}, 0.0, 0.0
    for name, net in networks().items():
        times: dict[bool, list[float]] = {False: [], True: []}
        after = {}
        for _ in range(args.repeats):
            for fused in (False, True):
                ms, after[fused] = step_ms(net, fused, args.steps)
                times[fused].append(ms)
        base, fast = min(times[False]), min(times[True])
        diff = (after[True] - after[False]).abs().max().item()
        per_net[name] = {"per_tensor_ms": round(base, 3), "fused_ms": round(fast, 3), "max_abs_diff": diff}
        base_total, fused_total = base_total + base, fused_total + fast
        print(
            f"{name:<18} per-tensor {base:.3f} ms, fused {fast:.3f} ms per step ({base / fast:.2f}x); "
            f"largest parameter difference after {args.steps} steps {diff:.2g}"
        )
    print(f"all three: {base_total / fused_total:.2f}x ({args.threads} thread(s))")
    out = result(
        "adam_step", 1e3 / base_total, 1e3 / fused_total, "steps/s", networks=per_net, threads=args.threads
    )
    if args.json:
        write_result(args.json, out)


if __name__ == "__main__":
    main()
