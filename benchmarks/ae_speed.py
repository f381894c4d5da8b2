"""Speed of one autoencoder training epoch: mnistlab's loop against a tutorial-style baseline (a
Dataset returning one PIL image per item through a ToTensor-style transform, a DataLoader, the same
model, optimizer and batch size), both in this process, plus the bare compute of the same steps on a
pre-made batch and the limit set by the machine's fp32 matmul peak.

    python -m benchmarks.ae_speed [--images 12800] [--preset seed] [--repeats 2]
Prints images/s for each and the ratios; the machine is shared and noisy, so trust ratios only.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from benchmarks.common import matmul_peak_gflops, timed, train_flops_per_image, tutorial_loader
from mnistlab.config import load_experiment
from mnistlab.data import DataConfig, load
from mnistlab.models import build_model
from mnistlab.train.autoencoder import AutoencoderTask
from mnistlab.train.loop import fit, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12_800, help="images per timed epoch [12800]")
    ap.add_argument("--preset", default="seed")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    exp = load_experiment("ae", args.preset, ["train.device=cpu"])
    cfg = exp.train
    data = load(DataConfig(val_fraction=0.0, train_limit=args.images))
    train = data.train
    torch.manual_seed(0)

    def baseline() -> int:
        model = build_model("ae", exp.model)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = 0
        for x, _ in tutorial_loader(train.images, train.labels, cfg.batch_size):
            recon, _ = model(x)
            loss = F.mse_loss(recon, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(x)
        return n

    def mnistlab_loop() -> int:
        model = build_model("ae", exp.model)
        task = AutoencoderTask(model, dataclasses.replace(cfg, epochs=1), data.val, torch.device("cpu"))
        fit(task, train, dataclasses.replace(cfg, epochs=1), run_dir=None, progress=False)
        return len(train)

    model = build_model("ae", exp.model)
    opt = make_optimizer(model.parameters(), cfg)
    batch = train.images[: cfg.batch_size].unsqueeze(1).float() / 255

    def step(x: torch.Tensor) -> None:
        recon, _ = model(x)
        loss = F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def bare() -> int:
        steps = args.images // cfg.batch_size
        for _ in range(steps):
            step(batch)
        return steps * cfg.batch_size

    flops = train_flops_per_image(step, batch)
    peak = matmul_peak_gflops()
    results = {"baseline": 0.0, "mnistlab": 0.0, "bare": 0.0}
    for _ in range(args.repeats):  # interleaved, so load changes hit all three alike
        results["baseline"] = max(results["baseline"], timed(baseline))
        results["mnistlab"] = max(results["mnistlab"], timed(mnistlab_loop))
        results["bare"] = max(results["bare"], timed(bare))
    limit = peak * 1e9 / flops
    print(
        f"preset {args.preset}: batch {cfg.batch_size}, dropout {exp.model.dropout}, {args.images} images per epoch"
    )
    print(f"threads {torch.get_num_threads()}, fp32 matmul peak {peak:.1f} GFLOP/s, "
          f"{flops / 1e6:.1f} MFLOP per image per training step -> limit {limit:,.0f} images/s")  # fmt: skip
    for name, ips in results.items():
        print(f"{name:9s} {ips:9,.0f} images/s  {ips / results['baseline']:5.2f}x baseline  "
              f"{ips * flops / 1e9 / peak:6.1%} of peak")  # fmt: skip
    print(f"mnistlab loop / bare compute: {results['mnistlab'] / results['bare']:.2f}")


if __name__ == "__main__":
    main()
