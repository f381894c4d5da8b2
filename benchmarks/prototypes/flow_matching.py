"""Conditional flow matching on MNIST (issue "Flow matching: a conditional generator in 20 steps"): a
prototype, not yet a mnistlab task; its tries and numbers are in docs/history.md ("Flow matching: the
first prototype"). Run as `PYTHONPATH=src python -m benchmarks.prototypes.flow_matching ...`.

Straight path between noise and data (Lipman et al. 2023; Liu et al. 2023):
    x_t = (1 - t) x0 + t x1,  x0 ~ N(0, I),  x1 a training image in [-1, 1],
    target velocity x1 - x0, MSE loss.
One small U-Net learns the conditional and the unconditional field (the label is replaced
by a "no label" token with probability cfg.p_uncond); classifier-free guidance at sampling.
Samplers: euler / heun / midpoint over a fixed grid, counted in network evaluations (NFE).

Usage:
    flow_matching train OUT.pt [--set key=value ...]
    flow_matching sample OUT.pt SAMPLES.npy [--n 10000] [--solver euler] [--nfe 16]
                   [--digit d | --labels empirical|uniform|none] [--guidance 1.0] [--raw] [--threads 2]
    flow_matching bench [--set key=value ...]       # throughput of one config, 1 thread
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_CLASSES = 10
NULL = N_CLASSES  # the "no label" token


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    # network
    channels: tuple = (16, 32, 64)  # per level: 28, 14, 7
    blocks: tuple = (1, 1, 1)  # residual blocks per level on the way down (the way up mirrors it)
    mid_blocks: int = 1
    patch: int = 1  # 2: pixel-unshuffle 28x28x1 to 14x14x4 first (levels 14, 7), shuffle back at the end
    out_kernel: int = 1  # the last conv (to the velocity): 1x1 is much cheaper on the CPU than 3x3
    channels_last: bool = True
    emb_dim: int = 64
    groups: int = 8
    # training
    batch: int = 128
    steps: int = 6000
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.0
    p_uncond: float = 0.15
    t_dist: str = "uniform"  # uniform | logitnormal
    ema_decay: float = 0.999
    n_train: int = 48000  # first 48,000 training images; the last 12,000 are validation
    seed: int = 0
    threads: int = 1
    log_every: int = 250
    save_every: int = 0  # also save a checkpoint every this many steps (0: only at the end)

    def replace(self, **kw) -> Config:
        return dataclasses.replace(self, **kw)


def parse_sets(cfg: Config, sets: list[str]) -> Config:
    kw = {}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for s in sets:
        k, v = s.split("=", 1)
        cur = getattr(cfg, k)
        if isinstance(cur, tuple):
            kw[k] = tuple(int(x) for x in v.split(","))
        elif isinstance(cur, bool):
            kw[k] = v.lower() in ("1", "true", "yes")
        else:
            kw[k] = type(cur)(v)
        assert k in fields
    return cfg.replace(**kw)


# --------------------------------------------------------------------------- data
def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and labels (N,) of mnistlab's training split (its default seeded
    48,000 / 12,000 split of the embedded MNIST) or of the test set. (The numbers in docs/history.md
    were measured on the first 48,000 training images in file order.)"""
    from mnistlab.data.datasets import DataConfig, load

    data = load(DataConfig())
    part = data.train if split == "train" else data.test
    return part.images.numpy(), part.labels.numpy()


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in [-1, 1]."""
    return x_uint8.unsqueeze(1).float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.squeeze(1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------- network
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = (1000.0 * t)[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)  # scale and shift after the second norm
        self.n2 = nn.GroupNorm(min(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        h = self.c2(F.silu(h))
        return self.skip(x) + h


class UNet(nn.Module):
    """28 -> 14 -> 7 U-Net. Down: cfg.blocks[i] residual blocks per level, a stride-2 conv between
    levels. Up: as many blocks per level, each fed the matching down block's output
    (concatenated), a 2x2 transposed conv between levels that also halves the channels."""

    def __init__(self, cfg: Config):
        super().__init__()
        ch, nb, E, g = cfg.channels, cfg.blocks, cfg.emb_dim, cfg.groups
        self.emb_dim = E
        self.t_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.label = nn.Embedding(N_CLASSES + 1, E)
        self.patch = cfg.patch
        self.inp = nn.Conv2d(cfg.patch**2, ch[0], 3, padding=1)
        self.down, self.downsample, skips, c = nn.ModuleList(), nn.ModuleList(), [], ch[0]
        for i, (ci, ni) in enumerate(zip(ch, nb)):
            blocks = nn.ModuleList()
            for _ in range(ni):
                blocks.append(ResBlock(c, ci, E, g))
                c = ci
                skips.append(c)
            self.down.append(blocks)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(c, c, E, g) for _ in range(cfg.mid_blocks)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(nb[i]):
                blocks.append(ResBlock(c + skips.pop(), ch[i], E, g))
                c = ch[i]
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.ConvTranspose2d(c, ch[i - 1], 2, stride=2))
                c = ch[i - 1]
        self.out_norm = nn.GroupNorm(min(g, c), c)
        self.out = nn.Conv2d(c, cfg.patch**2, cfg.out_kernel, padding=cfg.out_kernel // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, y):
        e = F.silu(self.t_mlp(timestep_embedding(t, self.emb_dim)) + self.label(y))
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h = self.inp(x)
        hs = []
        for i, blocks in enumerate(self.down):
            for b in blocks:
                h = b(h, e)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for b in self.mid:
            h = b(h, e)
        for j, blocks in enumerate(self.up):
            for b in blocks:
                h = b(torch.cat([h, hs.pop()], dim=1), e)
            if j < len(self.upsample):
                h = self.upsample[j](h)
        h = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, self.patch) if self.patch > 1 else h


def make_model(cfg: Config) -> UNet:
    m = UNet(cfg)
    return m.to(memory_format=torch.channels_last) if cfg.channels_last else m


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- loss
def sample_t(n: int, dist: str, gen: torch.Generator) -> torch.Tensor:
    if dist == "uniform":
        return torch.rand(n, generator=gen)
    if dist == "logitnormal":  # SD3's logit-normal(0, 1): more weight on the middle of the path
        return torch.sigmoid(torch.randn(n, generator=gen))
    raise ValueError(dist)


def fm_loss(model, x1, y, cfg: Config, gen: torch.Generator) -> torch.Tensor:
    n = x1.shape[0]
    x0 = torch.randn(x1.shape, generator=gen)
    t = sample_t(n, cfg.t_dist, gen)
    drop = torch.rand(n, generator=gen) < cfg.p_uncond
    y = torch.where(drop, torch.full_like(y, NULL), y)
    tb = t[:, None, None, None]
    xt = (1 - tb) * x0 + tb * x1
    return F.mse_loss(model(xt, t, y), x1 - x0)


# --------------------------------------------------------------------------- training
def train(cfg: Config, out: str) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = load_mnist("train")
    x = torch.from_numpy(x[: cfg.n_train].copy())
    y = torch.from_numpy(y[: cfg.n_train].astype(np.int64))
    model = make_model(cfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step):  # linear warmup, cosine decay to 0
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * p))

    print(f"params {count_params(model):,}  config {cfg}", flush=True)
    cpu0, wall0 = time.process_time(), time.time()
    perm, pos, run_loss = torch.randperm(len(x), generator=gen), 0, 0.0
    log = []
    for step in range(cfg.steps):
        if pos + cfg.batch > len(x):
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx = perm[pos : pos + cfg.batch]
        pos += cfg.batch
        for g_ in opt.param_groups:
            g_["lr"] = lr_at(step)
        loss = fm_loss(model, to_unit(x[idx]), y[idx], cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # EMA with a warm-up of its own (decay <= (1+n)/(10+n))
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        run_loss += loss.item()
        if (step + 1) % cfg.log_every == 0:
            cpu = time.process_time() - cpu0
            print(
                f"step {step + 1}  loss {run_loss / cfg.log_every:.4f}  cpu {cpu:.0f}s  "
                f"wall {time.time() - wall0:.0f}s",
                flush=True,
            )
            log.append((step + 1, run_loss / cfg.log_every, cpu))
            run_loss = 0.0
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save(out.replace(".pt", f"_s{step + 1}.pt"), cfg, model, ema, time.process_time() - cpu0, log)
    cpu = time.process_time() - cpu0
    print(f"done: {cfg.steps} steps, {cpu:.0f} CPU s, {time.time() - wall0:.0f} wall s", flush=True)
    save(out, cfg, model, ema, cpu, log)
    return {"cpu_s": cpu}


def save(path, cfg, model, ema, cpu, log):
    torch.save(
        {
            "cfg": dataclasses.asdict(cfg),
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "train_cpu_s": cpu,
            "log": log,
        },
        path,
    )


def load(path: str, use_ema: bool = True) -> tuple[UNet, Config, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    d = ck["cfg"]
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    model = make_model(cfg)
    model.load_state_dict(ck["ema" if use_ema else "model"])
    return model.eval().requires_grad_(False), cfg, ck


# --------------------------------------------------------------------------- sampling
def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """0 = noise, 1 = data. shift > 1 spends more steps near the noise end (SD3's shift on
    the noise level sigma = 1 - t)."""
    g = []
    for i in range(steps + 1):
        s = 1 - i / steps
        s = shift * s / (1 + (shift - 1) * s)
        g.append(1 - s)
    return g


@torch.inference_mode()
def velocity(model, x, t: float, y, guidance: float):
    tt = torch.full((x.shape[0],), t)
    if y is None:  # unconditional field
        return model(x, tt, torch.full((x.shape[0],), NULL, dtype=torch.long))
    if guidance == 1.0:  # plain conditional field: one pass
        return model(x, tt, y)
    # classifier-free guidance: conditional and unconditional pass batched together
    v = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, NULL)]))
    vc, vu = v.chunk(2)
    return vu + guidance * (vc - vu)


@torch.inference_mode()
def solve(model, x, y, solver: str = "heun", nfe: int = 20, guidance: float = 1.0, shift: float = 1.0):
    """Integrate dx/dt = v(x, t) from t=0 (noise) to t=1 with at most `nfe` evaluations
    (one evaluation = one network call per sample; with guidance != 1 each costs two passes).
    euler: nfe steps; midpoint: nfe // 2 steps; heun: k steps use 2k - 1 evaluations
    (the last step is Euler, so Heun with nfe=19 or 20 takes 10 steps)."""

    def v(x_, t_):
        return velocity(model, x_, t_, y, guidance)

    if solver == "euler":
        g = time_grid(nfe, shift)
        for t0, t1 in zip(g[:-1], g[1:]):
            x = x + (t1 - t0) * v(x, t0)
    elif solver == "midpoint":
        g = time_grid(max(1, nfe // 2), shift)
        for t0, t1 in zip(g[:-1], g[1:]):
            h = t1 - t0
            x = x + h * v(x + 0.5 * h * v(x, t0), t0 + 0.5 * h)
    elif solver == "heun":
        k = (nfe + 1) // 2
        g = time_grid(k, shift)
        for i, (t0, t1) in enumerate(zip(g[:-1], g[1:])):
            h = t1 - t0
            d0 = v(x, t0)
            xe = x + h * d0
            if i == k - 1 and 2 * k - 1 <= nfe and 2 * k > nfe:  # last step: Euler
                x = xe
            else:
                x = x + 0.5 * h * (d0 + v(xe, t1))
    else:
        raise ValueError(solver)
    return x


def generate(
    model, n: int, labels=None, solver="euler", nfe=16, guidance=1.0, shift=1.0, batch=250, seed=0
) -> np.ndarray:
    """labels: None (unconditional field), an int digit, or an int64 array of n labels."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        x0 = torch.randn((b, 1, 28, 28), generator=gen)
        if labels is None:
            y = None
        elif isinstance(labels, int):
            y = torch.full((b,), labels, dtype=torch.long)
        else:
            y = torch.as_tensor(labels[i : i + b], dtype=torch.long)
        out.append(to_uint8(solve(model, x0, y, solver, nfe, guidance, shift)))
    return np.concatenate(out)


# --------------------------------------------------------------------------- CLI
def bench(cfg: Config, n_steps: int = 20, n_fwd: int = 5):
    torch.set_num_threads(1)
    model = make_model(cfg)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(cfg.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (cfg.batch,))
    for _ in range(3):
        fm_loss(model, x, y, cfg, gen).backward()
    c0 = time.process_time()
    for _ in range(n_steps):
        loss = fm_loss(model, x, y, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tr = (time.process_time() - c0) / n_steps
    model.eval()
    xb = torch.randn(250, 1, 28, 28)
    with torch.inference_mode():
        model(xb, torch.rand(250), torch.randint(0, 11, (250,)))
        c0 = time.process_time()
        for _ in range(n_fwd):
            model(xb, torch.rand(250), torch.randint(0, 11, (250,)))
    fw = (time.process_time() - c0) / n_fwd / 250
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(xb[:10], torch.rand(10), torch.randint(0, 11, (10,)))
    print(
        f"{cfg.channels} {cfg.blocks} mid {cfg.mid_blocks} {fc.get_total_flops() / 1e7:.1f} MFLOP/img params {count_params(model):,}: train step "
        f"{tr * 1000:.0f} ms (batch {cfg.batch}, {cfg.batch / tr:.0f} img/s); forward "
        f"{fw * 1e6:.0f} us/img -> 10k x 20 NFE = {fw * 2e5:.0f} CPU s",
        flush=True,
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("train")
    a.add_argument("out")
    a.add_argument("--set", nargs="*", default=[])
    b = sub.add_parser("bench")
    b.add_argument("--set", nargs="*", default=[])
    s = sub.add_parser("sample")
    s.add_argument("ckpt")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--solver", default="euler")
    s.add_argument("--nfe", type=int, default=16)
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--shift", type=float, default=1.0)
    s.add_argument("--digit", type=int, default=None)
    s.add_argument(
        "--labels",
        choices=["none", "uniform", "empirical"],
        default="empirical",
        help="uniform: each digit n/10 times, conditional field (no digit asked for "
        "in the output's order: shuffled); empirical: each label drawn from the "
        "48,000 training labels (ancestral sampling of p(x)); none: the null-label field",
    )
    s.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        train(parse_sets(Config(), args.set), args.out)
    elif args.cmd == "bench":
        bench(parse_sets(Config(), args.set))
    else:
        torch.set_num_threads(args.threads)
        model, cfg, ck = load(args.ckpt, use_ema=not args.raw)
        labels = None
        if args.digit is not None:
            labels = args.digit
        elif args.labels == "uniform":
            labels = np.random.default_rng(args.seed).permutation(np.arange(args.n) % 10)
        elif args.labels == "empirical":
            ytr = load_mnist("train")[1][:48000]
            labels = np.random.default_rng(args.seed).choice(ytr, args.n).astype(np.int64)
        c0, w0 = time.process_time(), time.time()
        x = generate(model, args.n, labels, args.solver, args.nfe, args.guidance, args.shift, seed=args.seed)
        cpu, wall = time.process_time() - c0, time.time() - w0
        np.save(args.out, x)
        print(
            json.dumps(
                {
                    "n": args.n,
                    "solver": args.solver,
                    "nfe": args.nfe,
                    "guidance": args.guidance,
                    "shift": args.shift,
                    "digit": args.digit,
                    "labels": args.labels,
                    "ema": not args.raw,
                    "threads": args.threads,
                    "sample_cpu_s": round(cpu, 1),
                    "sample_wall_s": round(wall, 1),
                    "train_cpu_s": round(ck["train_cpu_s"], 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
