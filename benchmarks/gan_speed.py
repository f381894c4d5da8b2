"""Speed of GAN training: mnistlab's loop against the usual tutorial code, one process, same networks,
batch 200, plus the share of this machine's measured fp32 matmul peak that each reaches.

    python -m benchmarks.gan_speed                      # 40 batches (8,000 images) per measurement
    python -m benchmarks.gan_speed --batches 350 --repeats 1    # a whole 70,000-image epoch

The baseline is written the way course notebooks do it: a Dataset that makes a PIL image per item
and converts it with a ToTensor-like transform, a shuffling DataLoader (batch 200, no workers),
BCELoss on D's probabilities, D called on real and fake separately, and D's gradients left on while
G trains. mnistlab's side is `training.loop.fit` with `GANTask` (uint8 batches in memory, real and fake
through D as one batch, D frozen in the G phase, channels_last). Both run the same number of batches
from the same 70,000 images; the epoch is limited to --batches batches for time, and the two sides
alternate --repeats times so that a busy machine slows both alike; the best of each is reported.
Both do the same update (tests/test_gan.py::test_step_matches_a_tutorial_step checks it to float
rounding), so the speed-up costs nothing in FID-MNIST.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import matmul_peak_gflops, tutorial_loader, write_result
from benchmarks.common import result as common_result
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.data.datasets import DataConfig, Split, load
from mnistlab.models.gan import DISCRIMINATOR_MACS, GAN, GANConfig, train_step_flops
from mnistlab.training.gan import GANTask, GANTrainConfig
from mnistlab.training.loop import TrainConfig, fit

BATCH = 200


def baseline_epoch(images: torch.Tensor, labels: torch.Tensor, n_batches: int, seed: int = 0) -> float:
    """Images per second of the tutorial-style loop over n_batches batches."""
    torch.manual_seed(seed)
    gan = GAN(GANConfig())
    G, D = gan.generator, gan.discriminator
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = tutorial_loader(images, labels, BATCH)
    bce = torch.nn.BCELoss()
    seen, t0 = 0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if i == n_batches:
            break
        b = x.size(0)
        ones, zeros = torch.ones(b), torch.zeros(b)
        fake = G(torch.randn(b, 100))
        d_loss = bce(D(x), ones) + bce(D(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(D(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        _ = d_loss.item(), g_loss.item()  # the tutorial logs both
        seen += b
    return seen / (time.perf_counter() - t0)


def mnistlab_epoch(train: Split, n_batches: int, seed: int = 0) -> float:
    """Images per second of mnistlab's loop (fit + GANTask) over the first n_batches batches."""
    torch.manual_seed(seed)
    part = train.take(slice(0, n_batches * BATCH))  # fit runs whole epochs: give it n_batches' worth
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=2e-4, seed=seed, device="cpu")
    task = GANTask(GAN(GANConfig()), cfg, GANTrainConfig(d_lr=2e-4), torch.device("cpu"), n_batches)
    result = fit(task, part, cfg, run_dir=None, progress=False)
    return result.images_per_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GAN training speed: mnistlab's loop vs the tutorial way")
    p.add_argument("--batches", type=int, default=40, help="batches of 200 per measurement [40]")
    p.add_argument("--repeats", type=int, default=2, help="alternating measurements of each side [2]")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's allocator settings alone")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # `mnistlab train` keeps freed memory in the process (allocator.py); the setting is process-wide,
    # so the baseline in this process gets it too and the ratio understates mnistlab's gain from it.
    if not args.no_malloc_tuning:
        keep_freed_memory()

    data = load(DataConfig(val_fraction=0.0))
    train = Split(
        torch.cat([data.train.images, data.test.images]), torch.cat([data.train.labels, data.test.labels])
    )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    train = train.take(order)  # the same shuffled 70,000 images for both sides

    peak = matmul_peak_gflops(repeats=10)
    baseline_epoch(train.images, train.labels, 2)  # warm-up of both paths (thread pools, oneDNN kernels)
    mnistlab_epoch(train, 2)
    base, ours = [], []
    for r in range(args.repeats):
        base.append(baseline_epoch(train.images, train.labels, args.batches, seed=r))
        ours.append(mnistlab_epoch(train, args.batches, seed=r))
        print(f"repeat {r + 1}: tutorial {base[-1]:.0f} img/s, mnistlab {ours[-1]:.0f} img/s", flush=True)
    peak = max(peak, matmul_peak_gflops(repeats=10))
    flops = train_step_flops()
    b, o = max(base), max(ours)
    result = common_result(
        "gan_epoch", baseline=b, mnistlab=o, unit="images/s", flops_per_item=flops, peak_gflops=peak
    )
    result |= {
        "batches": args.batches,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "tutorial_images_per_s": round(b, 1),
        "mnistlab_images_per_s": round(o, 1),
        "speedup": round(o / b, 3),
        "matmul_peak_gflops": round(peak, 1),
        "mflop_per_image_step": round(flops / 1e6, 1),
        "tutorial_fraction_of_peak": round(b * flops / 1e9 / peak, 3),
        "mnistlab_fraction_of_peak": round(o * flops / 1e9 / peak, 3),
        "all_tutorial": [round(v, 1) for v in base],
        "all_mnistlab": [round(v, 1) for v in ours],
    }
    print(
        f"\nGAN step, batch {BATCH}, {args.batches} batches, {result['threads']} threads: tutorial {b:.0f} img/s, "
        f"mnistlab {o:.0f} img/s, speed-up {o / b:.2f}x (target >= 1.5x)\n"
        f"fp32 matmul peak {peak:.0f} GFLOP/s; at {flops / 1e6:.1f} MFLOP per image per step the tutorial "
        f"reaches {result['tutorial_fraction_of_peak']:.0%} of it and mnistlab "
        f"{result['mnistlab_fraction_of_peak']:.0%} (nominal: mnistlab skips D's weight gradients in the G "
        f"phase, so it does {1 - 2 * DISCRIMINATOR_MACS / flops:.0%} of those FLOPs)"
    )
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
