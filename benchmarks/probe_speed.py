"""Speed of the linear probe on a frozen encoder: mnistlab's way against the usual tutorial loop.

    PYTHONPATH=src nice -n 5 python -m benchmarks.probe_speed [--images 6000] [--epochs 3] [--json F]

Tutorial way (what course notebooks do): a DataLoader of one PIL image per item, and in every epoch
every batch goes through the frozen encoder (eval mode, no_grad) before the Linear(latent -> 10) head
takes its Adam step; the test set is scored through the encoder the same way. mnistlab's way
(`training/probe.py`, as `mnistlab probe` runs it): the codes of train and test images are computed
once, in batches of eval_batch_size, and the head trains on those feature rows through the shared
loop (`fit`). Both train the same head with the same settings (seed preset: batch 256, Adam lr 1e-3)
from the same initial weights on the same encoder; test accuracies are printed so a speed-up that
changed the result would show at real sizes. The encoder's weights are a seeded random
initialisation (speed does not depend on them), and at the benchmark's sizes (tens of head steps)
both accuracies stay near chance: they are a smoke check here, not a result; `mnistlab probe` gives
the real ones. Time per probe is the whole job:
codes + training + test scoring; the ratio is tutorial seconds / mnistlab seconds.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from benchmarks.common import result, tutorial_loader, write_result
from mnistlab.data.datasets import DataConfig, Split, load
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.encoder_classifier import LinearHead
from mnistlab.probe.fit import encode, features_to, predict, train_classifier
from mnistlab.training.loop import TrainConfig


def tutorial_probe(encoder, head, train: Split, test: Split, cfg: TrainConfig) -> float:
    """Per-batch encoder forward in every epoch; returns test accuracy."""
    encoder.eval()
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    for _ in range(cfg.epochs):
        for x, y in tutorial_loader(train.images, train.labels, cfg.batch_size):
            with torch.no_grad():
                z = encoder(x)
            loss = F.cross_entropy(head(z), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = 0
    with torch.no_grad():
        for x, y in tutorial_loader(test.images, test.labels, 1000):
            correct += (head(encoder(x)).argmax(1) == y).sum().item()
    return correct / len(test)


def mnistlab_probe(encoder, head, train: Split, test: Split, cfg: TrainConfig) -> float:
    """Codes once, then the head on feature rows through `fit`; returns test accuracy."""
    cpu = torch.device("cpu")
    codes = [encode(encoder, s.images, cpu, cfg.eval_batch_size) for s in (train, test)]
    empty = Split(codes[0][:0], train.labels[:0])  # no validation: the tutorial loop has none either
    train_classifier(
        head,
        [{"params": head.parameters()}],
        Split(codes[0], train.labels),
        empty,
        cfg,
        cpu,
        features_to,
        None,
        progress=False,
    )
    logits = predict(head, codes[1], cpu, features_to, cfg.eval_batch_size)
    return (logits.argmax(1) == test.labels).float().mean().item()


def measure(images: int, test_images: int, epochs: int, repeats: int) -> dict:
    data = load(DataConfig(val_fraction=0.0, train_limit=images, test_limit=test_images))
    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, device="cpu")
    torch.manual_seed(0)
    encoder = ConvAutoencoder(AEConfig(latent_dim=10, dropout=0.1)).encoder
    head0 = LinearHead(10)
    sides = {"tutorial": tutorial_probe, "mnistlab": mnistlab_probe}
    best = {k: float("inf") for k in sides}
    acc = {}
    for _ in range(repeats):  # alternate, so load changes on the shared machine hit both alike
        for name, fn in sides.items():
            torch.manual_seed(1)
            t0 = time.perf_counter()
            acc[name] = fn(encoder, copy.deepcopy(head0), data.train, data.test, cfg)
            best[name] = min(best[name], time.perf_counter() - t0)
    work = images * epochs  # training images processed per probe
    out = result(
        "probe",
        baseline=work / best["tutorial"],
        mnistlab=work / best["mnistlab"],
        unit="train images/s",
        tutorial_seconds=round(best["tutorial"], 3),
        mnistlab_seconds=round(best["mnistlab"], 3),
        tutorial_test_acc=round(acc["tutorial"], 4),
        mnistlab_test_acc=round(acc["mnistlab"], 4),
        images=images,
        test_images=len(data.test),
        epochs=epochs,
        threads=torch.get_num_threads(),
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6_000, help="training images [6000]")
    ap.add_argument("--test-images", type=int, default=2_000, help="test images [2000]")
    ap.add_argument("--epochs", type=int, default=3, help="probe epochs [3]")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = measure(args.images, args.test_images, args.epochs, args.repeats)
    print(
        f"linear probe, {args.images} images x {args.epochs} epochs + {out['test_images']} test images, "
        f"{out['threads']} threads:\n"
        f"  tutorial (encoder per batch, PIL DataLoader) {out['tutorial_seconds']:7.2f} s  "
        f"test acc {out['tutorial_test_acc']:.4f}\n"
        f"  mnistlab (codes once, fit on rows)          {out['mnistlab_seconds']:7.2f} s  "
        f"test acc {out['mnistlab_test_acc']:.4f}\n"
        f"  speed-up {out['ratio']:.2f}x"
    )
    if args.json:
        write_result(args.json, out)
    return out


if __name__ == "__main__":
    main()
