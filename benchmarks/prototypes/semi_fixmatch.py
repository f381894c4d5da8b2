"""Semi-supervised MNIST prototype (issue "100 labels, 99%"): FixMatch-style consistency training on the
CPU, not yet a mnistlab task; its tries and numbers are in docs/history.md ("Semi-supervised: the first
prototype"). Run: `PYTHONPATH=src python -m benchmarks.prototypes.semi_fixmatch --lpc 10 --label-seed 0`.

Builds on FixMatch (Sohn et al. 2020: weak/strong augmentation, confidence-thresholded
pseudo-labels), FlexMatch (Zhang et al. 2021: class-wise curriculum thresholds), mean teacher (Tarvainen & Valpola 2017: EMA weights as teacher and for
evaluation), distribution alignment (Berthelot et al. 2020, ReMixMatch) and MNIST elastic
distortion (Simard et al. 2003). Evaluation follows Oliver et al. 2018: fixed schedule,
the last (EMA) model is reported, no early stopping, no validation/test label in training.

Everything is batched tensor ops; call torch.set_num_threads(1) before training to
reproduce the one-thread CPU-second numbers in docs/history.md.

The task `semi` (tasks/semi.py, training/semi.py) grew out of this file; the recipe it ships and the
tries behind it are in docs/semi.md. Two switches were added here for those tries: `thr_floor` (a
lower bound of FlexMatch's class thresholds) and `strong_l` (strong views on the labelled batch).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081


# ----------------------------------------------------------------------------- data
def load_mnist():
    """(train_x u8 [48000,28,28], train_y i64, test_x, test_y): mnistlab's training split of its embedded
    MNIST (the default DataConfig: a seeded 48,000 / 12,000 split) and the test set. (The numbers in
    docs/history.md were measured on the first 48,000 training images in file order.)"""
    from mnistlab.data.datasets import DataConfig, load

    data = load(DataConfig())
    return data.train.images, data.train.labels, data.test.images, data.test.labels


def draw_labelled(labels, per_class, label_seed):
    """Indices (sorted) of `per_class` images per class drawn with `label_seed`; None = all."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(label_seed)
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    width: int = 16  # channels w, 2w, 4w
    steps: int = 2000  # fixed schedule length (optimizer steps)
    batch_l: int = 64  # labelled images per step (class-balanced)
    mu: int = 7  # unlabelled images per labelled image
    lr: float = 0.05
    momentum: float = 0.9
    wd: float = 5e-4
    warmup: float = 0.03  # fraction of steps of linear lr warm-up, then cosine to 0
    ema: float = 0.99  # EMA of weights: teacher for pseudo-labels and evaluated model
    teacher: str = "ema_bn"  # "ema_bn": EMA weights with batch statistics of the weak batch (its own
    # running stats then track weak images only); "ema": EMA weights in eval
    # mode with the student's running stats; "student": no-grad student
    bn_recal: int = 10000  # after training, re-estimate the EMA model's BN stats on this many
    # weakly augmented unlabelled images (0 = off)
    threshold: float = 0.95
    flex: bool = True  # FlexMatch class-wise thresholds (curriculum pseudo-labelling)
    thr_floor: float = 0.0  # lower bound of the class-wise thresholds (0 = FlexMatch as published)
    strong_l: bool = False  # strong instead of weak augmentation on the labelled batch
    lambda_u: float = 1.0
    dist_align: bool = True
    da_momentum: float = 0.99
    # augmentation (pixels / degrees)
    weak_shift: float = 2.0
    rot: float = 20.0
    scale: float = 0.15
    shear: float = 0.2
    shift: float = 4.0
    elastic: float = 0.06  # std of the coarse displacement field, normalized coords (1.0 = 14 px)
    elastic_grid: int = 5
    cutout: int = 8  # side of the zeroed square (0 = off)
    morph: float = 0.2  # probability of stroke thickening / thinning (3x3 max-pool)
    channels_last: bool = True
    log_every: int = 250


# ----------------------------------------------------------------------------- model
class Net(nn.Module):
    def __init__(self, w=16):
        super().__init__()

        def block(i, o, k, p):
            return [nn.Conv2d(i, o, k, padding=p, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(1, w, 5, 2),
            nn.MaxPool2d(2),
            *block(w, 2 * w, 3, 1),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w, 3, 0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x):
        return self.fc(self.body(x))


# ----------------------------------------------------------------------------- augmentation
def _to_float(x_u8):
    return x_u8.unsqueeze(1).float().div_(255.0)


def _finish(x, channels_last):
    x = (x - MEAN) / STD
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def weak_aug(x_u8, cfg, g):
    """Random shift of up to cfg.weak_shift pixels (bilinear), whole batch at once."""
    n = x_u8.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 * cfg.weak_shift / 28)
    x = _to_float(x_u8)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return _finish(F.grid_sample(x, grid, align_corners=False), cfg.channels_last)


def strong_aug(x_u8, cfg, g):
    """Random affine (rotation, anisotropic scale, shear, shift) + elastic field + morphology + cutout."""
    n = x_u8.shape[0]
    u = lambda *s: torch.rand(*s, generator=g) * 2 - 1  # noqa: E731
    a = u(n) * math.radians(cfg.rot)
    sx, sy = 1 + u(n) * cfg.scale, 1 + u(n) * cfg.scale
    sh = u(n) * cfg.shear
    c, s = torch.cos(a), torch.sin(a)
    # A = R @ Shear @ Scale (maps output coords to input coords)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = c * sx
    theta[:, 0, 1] = (c * sh - s) * sy
    theta[:, 1, 0] = s * sx
    theta[:, 1, 1] = (s * sh + c) * sy
    theta[:, :, 2] = u(n, 2) * (2 * cfg.shift / 28)
    x = _to_float(x_u8)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    if cfg.elastic > 0:
        k = cfg.elastic_grid
        field = torch.randn(n, 2, k, k, generator=g) * cfg.elastic
        field = F.interpolate(field, size=(28, 28), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, align_corners=False)
    if cfg.morph > 0:
        r = torch.rand(n, 1, 1, 1, generator=g)
        dil = F.max_pool2d(x, 3, 1, 1)
        ero = -F.max_pool2d(-x, 3, 1, 1)
        x = torch.where(r < cfg.morph / 2, dil, torch.where(r < cfg.morph, ero, x))
    if cfg.cutout > 0:
        cy, cx = torch.randint(0, 28, (2, n, 1, 1), generator=g)
        ar = torch.arange(28)
        h = cfg.cutout // 2
        my = (ar.view(1, 28, 1) - cy).abs() <= h
        mx = (ar.view(1, 1, 28) - cx).abs() <= h
        x = x.masked_fill((my & mx).unsqueeze(1), 0.0)
    return _finish(x, cfg.channels_last)


# ----------------------------------------------------------------------------- training
def _lr_at(step, cfg):
    w = max(1, int(cfg.warmup * cfg.steps))
    if step < w:
        return cfg.lr * (step + 1) / w
    t = (step - w) / max(1, cfg.steps - w)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def _ema_update(ema, model, decay, copy_buffers=True):
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
    if copy_buffers:
        for be, b in zip(ema.buffers(), model.buffers()):
            be.copy_(b)


@torch.no_grad()
def recalibrate_bn(model, images_u8, cfg, g, n_images, batch=500):
    """Re-estimate BN running statistics (cumulative average) on weakly augmented images."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    old = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    idx = torch.randperm(images_u8.shape[0], generator=g)[:n_images]
    for i in range(0, len(idx), batch):
        model(weak_aug(images_u8[idx[i : i + batch]], cfg, g))
    for m, mo in zip(bns, old):
        m.momentum = mo
    model.eval()


def train(
    images_u8, labels, labelled_idx, cfg: Config = Config(), seed: int = 0, monitor_labels=None, log=print
):
    """Train on `images_u8` (uint8 [N,28,28]); only labels[labelled_idx] are read.

    Every image in images_u8 is also used as an unlabelled image. Returns the EMA model
    (eval mode) with attribute `.stats` (CPU seconds, steps, last mask rate).
    `monitor_labels` (optional) is used only to log pseudo-label accuracy, never in training.
    """
    t0 = time.process_time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = images_u8.shape[0]
    labelled_idx = torch.as_tensor(np.asarray(labelled_idx), dtype=torch.long)
    # only the labelled entries are ever read; others are set to -1
    lab_of = torch.full((n,), -1, dtype=torch.long)
    lab_of[labelled_idx] = torch.as_tensor(np.asarray(labels))[labelled_idx]
    y_l = lab_of[labelled_idx]
    by_class = [labelled_idx[y_l == c] for c in range(10)]
    per_class = cfg.batch_l // 10
    extra = cfg.batch_l - per_class * 10

    model = Net(cfg.width)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.eval()
    decay_p = [p for nm, p in model.named_parameters() if p.ndim > 1]
    other_p = [p for nm, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay_p, "weight_decay": cfg.wd}, {"params": other_p, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )
    p_avg = torch.full((10,), 0.1)
    # FlexMatch memory: latest confident (> threshold) prediction per unlabelled image, -1 = none
    flex_pred = torch.full((n,), -1, dtype=torch.long)
    n_u = cfg.batch_l * cfg.mu
    perm, pos = torch.randperm(n, generator=g), 0
    mask_hist, acc_hist, loss_hist = [], [], []

    for step in range(cfg.steps):
        # class-balanced labelled batch (sampling with replacement inside each class)
        li = [cl[torch.randint(len(cl), (per_class,), generator=g)] for cl in by_class]
        if extra:
            li.append(labelled_idx[torch.randint(len(labelled_idx), (extra,), generator=g)])
        li = torch.cat(li)
        if pos + n_u > n:
            perm, pos = torch.randperm(n, generator=g), 0
        ui = perm[pos : pos + n_u]
        pos += n_u

        x_l = (strong_aug if cfg.strong_l else weak_aug)(images_u8[li], cfg, g)
        target_l = lab_of[li]

        # pseudo-labels from the teacher on weakly augmented unlabelled images
        with torch.no_grad():
            x_w = weak_aug(images_u8[ui], cfg, g)
            if cfg.teacher == "ema_bn":
                ema.train()
                logits_w = ema(x_w)
            elif cfg.teacher == "ema":
                logits_w = ema(x_w)
            else:
                model.train()
                logits_w = model(x_w)
            p = logits_w.softmax(1)
            if cfg.dist_align:
                p_avg.mul_(cfg.da_momentum).add_(p.mean(0), alpha=1 - cfg.da_momentum)
                p = p / p_avg
                p = p / p.sum(1, keepdim=True)
            conf, pl = p.max(1)
            if cfg.flex:
                sigma = torch.bincount(flex_pred[flex_pred >= 0], minlength=10).float()
                unused = float((flex_pred < 0).sum())
                beta = sigma / max(float(sigma.max()), unused, 1.0)
                thr = (cfg.threshold * beta / (2 - beta)).clamp_min(cfg.thr_floor)
                keep = conf >= thr[pl]
                over = conf > cfg.threshold
                flex_pred[ui[over]] = pl[over]
            else:
                keep = conf >= cfg.threshold

        model.train()
        k = int(keep.sum())
        if k > 0:
            x_s = strong_aug(images_u8[ui[keep]], cfg, g)
            logits = model(torch.cat([x_l, x_s]))
            loss_l = F.cross_entropy(logits[: len(li)], target_l)
            loss_u = F.cross_entropy(logits[len(li) :], pl[keep], reduction="sum") / n_u
        else:
            logits = model(x_l)
            loss_l = F.cross_entropy(logits, target_l)
            loss_u = torch.zeros(())
        loss = loss_l + cfg.lambda_u * loss_u
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        d = min(cfg.ema, (1 + step) / (10 + step))
        _ema_update(ema, model, d, copy_buffers=cfg.teacher != "ema_bn")

        mask_hist.append(k / n_u)
        loss_hist.append(float(loss.detach()))
        if monitor_labels is not None and k > 0:
            acc_hist.append(float((pl[keep] == monitor_labels[ui[keep]]).float().mean()))
        if cfg.log_every and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            m = np.mean(mask_hist[-cfg.log_every :])
            a = np.mean(acc_hist[-cfg.log_every :]) if acc_hist else float("nan")
            log(
                f"step {step + 1:5d} cpu {time.process_time() - t0:7.1f}s loss {np.mean(loss_hist[-cfg.log_every :]):.4f} "
                f"mask {m:.3f} pl_acc(monitor) {a:.4f} lr {_lr_at(step, cfg):.4f}"
            )

    if cfg.bn_recal:
        recalibrate_bn(ema, images_u8, cfg, g, cfg.bn_recal)
    ema.eval()
    ema.stats = {
        "cpu_s": time.process_time() - t0,
        "steps": cfg.steps,
        "mask_last": float(np.mean(mask_hist[-100:])),
    }
    return ema


@torch.no_grad()
def evaluate(model, images_u8, labels, cfg: Config = Config(), batch=1000):
    """Accuracy (fraction) of `model` in eval mode on un-augmented images."""
    model.eval()
    correct = 0
    for i in range(0, len(images_u8), batch):
        x = _finish(_to_float(images_u8[i : i + batch]), cfg.channels_last)
        correct += int((model(x).argmax(1) == labels[i : i + batch]).sum())
    return correct / len(images_u8)


__all__ = [
    "Config",
    "Net",
    "train",
    "evaluate",
    "load_mnist",
    "draw_labelled",
    "weak_aug",
    "strong_aug",
    "replace",
]


def main() -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lpc", default="10", help="labelled images per class, or 'all'")
    ap.add_argument("--label-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = Config()
    trx, tr_y, tex, tey = load_mnist()
    x, y = trx, tr_y
    idx = draw_labelled(y.numpy(), None if a.lpc == "all" else int(a.lpc), a.label_seed)
    model = train(x, y, idx, cfg, seed=a.seed)
    out = {"lpc": a.lpc, "label_seed": a.label_seed, "cpu_s": round(model.stats["cpu_s"], 1)}
    out["test_acc"] = evaluate(model, tex, tey, cfg)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
