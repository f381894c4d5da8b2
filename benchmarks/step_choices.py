"""The per-step speed choices the default preset makes on the CPU, each against its alternative, on
one pre-made batch at one torch thread: bfloat16 autocast (`train.amp = "auto"`) for the GAN and the
conditional GAN, and for the autoencoder where it is not used; channels_last conv weights for the probe
stage's fine-tuned and from-scratch networks and for the VAE.

    PYTHONPATH=src:. python -m benchmarks.step_choices [--rounds 3] [--steps 40] [--json FILE]

Each round times every variant of a step back to back, so a busy machine slows them alike; the best
round of each is compared. bf16 pays only on a CPU with bfloat16 instructions (AVX512-BF16, AMX): the
output says whether this one has them (on a Zen 3 without them bf16 ran at 0.05x to 0.24x).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.common import write_result
from mnistlab import tasks
from mnistlab.data.datasets import Split, to_float
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.cgan import CGAN, CGANConfig
from mnistlab.models.encoder_classifier import encoder_classifier
from mnistlab.models.gan import GAN, GANConfig
from mnistlab.models.vae import VAE
from mnistlab.probe.fit import ProbeTask
from mnistlab.tasks.cgan import cgan_task
from mnistlab.tasks.vae import VAETask
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.gan import GANTask, GANTrainConfig
from mnistlab.training.loop import TrainConfig, cpu_has_bf16, make_optimizer

CPU = torch.device("cpu")


def _gan_recipe() -> GANTrainConfig:
    exp = tasks.load_experiment("gan", "default", ["train.device=cpu"])
    return exp.gan


def gan(amp: str, batch: int):
    cfg = TrainConfig(batch_size=batch, lr=1e-3, device="cpu", amp=amp)
    return GANTask(GAN(GANConfig()), cfg, _gan_recipe(), CPU, 10_000)


def cgan(amp: str, batch: int):
    cfg = TrainConfig(batch_size=batch, lr=1e-3, device="cpu", amp=amp)
    return cgan_task(CGAN(CGANConfig()), cfg, _gan_recipe(), CPU, 10_000)


def autoencoder(amp: str, batch: int):
    cfg = TrainConfig(batch_size=batch, lr=4e-3, optimizer="adamw", device="cpu", amp=amp)
    return AutoencoderTask(ConvAutoencoder(AEConfig(latent_dim=10, dropout=0.0)), cfg, _batch(batch), CPU)


def probe_network(layout: str, batch: int):
    """An encoder + head as the probe stage fine-tunes it (shifted digits); NCHW by undoing the task's
    channels_last after it is built."""
    model = encoder_classifier(AEConfig(latent_dim=10, dropout=0.0))
    opt = make_optimizer(model.parameters(), TrainConfig(lr=3e-3, optimizer="adamw"))
    task = ProbeTask(model, opt, _batch(batch), CPU, to_float, shift=2)
    if layout == "nchw":
        model.to(memory_format=torch.contiguous_format)
    return task


def vae(layout: str, batch: int):
    exp = tasks.load_experiment("vae", "default", ["train.device=cpu"])
    task = VAETask(VAE(exp.model), exp, _batch(batch), CPU, 10_000)
    if layout == "nchw":
        task.model.to(memory_format=torch.contiguous_format)
    return task


def _batch(n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10)


# step -> (its batch size, the variant the default preset uses on this CPU first, the other, builder)
STEPS: dict[str, tuple[int, str, str, Callable]] = {
    "gan": (64, "bf16", "off", gan),
    "cgan": (64, "bf16", "off", cgan),
    "autoencoder": (64, "bf16", "off", autoencoder),
    "probe network": (128, "channels_last", "nchw", probe_network),
    "vae": (64, "channels_last", "nchw", vae),
}


def images_per_s(task, batch: Split, steps: int) -> float:
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        task.train_step(batch.images, batch.labels)
    t0 = time.perf_counter()
    for _ in range(steps):
        task.train_step(batch.images, batch.labels)
    return steps * len(batch) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Per-step speed of the default preset's CPU choices (bf16, channels_last)"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds of every variant back to back [3]")
    p.add_argument("--steps", type=int, default=40, help="timed steps per variant per round [40]")
    p.add_argument("--only", help="comma-separated steps to time [all]: " + ", ".join(STEPS))
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(STEPS)
    bf16 = cpu_has_bf16()
    print(f"CPU bfloat16 instructions (AVX512-BF16 or AMX): {'yes' if bf16 else 'no'}; 1 torch thread")
    out: dict = {"cpu_bf16": bf16, "threads": 1, "rounds": args.rounds, "steps": {}}
    for name in names:
        size, chosen, other, build = STEPS[name]
        batch = _batch(size)
        torch.manual_seed(0)
        built = {v: build(v, size) for v in (chosen, other)}
        rates: dict[str, list[float]] = {v: [] for v in built}
        for _ in range(args.rounds):
            for v, task in built.items():
                rates[v].append(images_per_s(task, batch, args.steps))
        best = {v: max(r) for v, r in rates.items()}
        ratio = best[chosen] / best[other]
        print(
            f"{name:14s} batch {size}: {chosen} {best[chosen]:7.0f} img/s, {other} {best[other]:7.0f} img/s, "
            f"{ratio:.2f}x  (rounds: "
            + "; ".join(f"{v} " + "/".join(f"{x:.0f}" for x in r) for v, r in rates.items())
            + ")"
        )
        out["steps"][name] = {
            "batch": size,
            "variant": chosen,
            "other": other,
            "ratio": round(ratio, 3),
            **{f"{v}_images_per_s": round(b, 1) for v, b in best.items()},
        }
    out["ratio"] = min(s["ratio"] for s in out["steps"].values())
    if args.json:
        write_result(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
