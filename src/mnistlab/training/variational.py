"""Variational training pieces shared by the VAE's task: the second stage trained after the first on
its frozen codes, and the VAE's test-set evaluation."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from mnistlab.data.datasets import Split, to_float
from mnistlab.metrics import images as metrics
from mnistlab.models.vae import VAE, CodePrior, beta_at, kl_per_dimension, reconstruction_nll
from mnistlab.training.loop import adam_kernel, lr_factor
from mnistlab.training.progress import bars


def fit_code_prior(
    stage: CodePrior,
    mu: torch.Tensor,
    sd: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    schedule: str = "cosine",
    warmup: float = 0.25,
    kl_warmup: float = 0.0,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Train the second stage after the first, on its frozen codes (Dai & Wipf's two stages): each
    epoch draws every training image's code once from q(z|x) = N(mu, sd^2) (mu, sd: (N, d), CPU
    tensors) in a shuffled order, and AdamW takes a step per `batch_size` codes at `lr` times
    training.loop.lr_factor(`schedule`, `warmup`), on the stage's device, with the KL term's weight
    ramped up from 0 over the first `kl_warmup` share of the steps. With the joint training's own
    schedules (one-cycle, KL warm-up over 30%) it came within 0.1 FID-MNIST of the joint stage on the
    same codes; with a cosine and no warm-up, 0.36 worse (docs/results.md). All draws come from a CPU
    generator seeded by `seed`, so the same inputs train the same stage. Returns one row per epoch:
    {"epoch", "code_nll", "code_kl"} (means over the epoch's codes)."""
    n, d = mu.shape
    device = stage.log_gamma.device
    g = torch.Generator().manual_seed(seed)
    params = list(stage.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **adam_kernel(params))
    total, step, rows = epochs * math.ceil(n / batch_size), 0, []
    stage.train()
    for epoch in tqdm(range(epochs), desc="second stage", disable=not bars(progress), leave=False):
        order = torch.randperm(n, generator=g)
        z = mu[order] + sd[order] * torch.randn(n, d, generator=g)  # (N, d): this epoch's codes
        eps = torch.randn(n, d, generator=g)  # (N, d): the stage's own reparameterisation noise
        sums = torch.zeros(2, device=device)
        for start in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step, total, warmup)
            batch = slice(start, start + batch_size)
            nll, kl = stage.losses(z[batch].to(device), eps[batch].to(device))
            loss = (nll + beta_at(step, total, 1.0, kl_warmup) * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([nll.detach().sum(), kl.detach().sum()])
            step += 1
        rows.append({"epoch": epoch + 1, "code_nll": sums[0].item() / n, "code_kl": sums[1].item() / n})
    stage.eval()
    return rows


@torch.no_grad()
def evaluate_vae(
    model: VAE,
    split: Split,
    device,
    likelihood: str,
    batch_size: int = 1000,
    scores: tuple[str, ...] = tuple(metrics.QUALITY),
) -> dict[str, float]:
    """Means over `split`: `scores` (of MSE, PSNR, SSIM) of the mean code's reconstruction, its NLL,
    and the KL; `active_units`: code dimensions whose mean KL exceeds 0.01 nats (the others carry
    nothing)."""
    was = model.training
    model.eval()
    sums = dict.fromkeys((*scores, "recon_nll", "kl"), 0.0)
    kl_dims = None
    for start in range(0, len(split), batch_size):
        x = to_float(split.images[start : start + batch_size], device)
        out = model(x)
        for k in scores:
            sums[k] += metrics.QUALITY[k](out.recon, x).sum().item()
        sums["recon_nll"] += reconstruction_nll(out.logits, x, likelihood).sum().item()
        per_dim = kl_per_dimension(out.mu, out.logvar)  # (B, d)
        sums["kl"] += per_dim.sum().item()
        kl_dims = per_dim.sum(0) if kl_dims is None else kl_dims + per_dim.sum(0)
    model.train(was)
    n = max(len(split), 1)
    result = {k: v / n for k, v in sums.items()}
    result["active_units"] = int(((kl_dims / n) > 0.01).sum()) if kl_dims is not None else 0
    return result


def refit_code_prior(
    model: VAE, moments: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int, **schedules
) -> dict[str, float]:
    """Replace `model`'s second stage by a fresh one of the same width (weights seeded by `seed`) and
    train it on the first stage's frozen codes, `moments` (N, 2d): the mean and log-variance of q(z|x)
    of the training images (`fit_code_prior`, given its `schedules` keywords). Returns its last
    epoch's row."""
    mu, logvar = moments.chunk(2, dim=1)  # (N, d) each
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    model.code_prior = CodePrior(model.cfg.latent_dim, model.cfg.code_prior).to(device)
    return fit_code_prior(
        model.code_prior, mu, logvar.mul(0.5).exp(), epochs, batch_size, lr, seed, **schedules
    )[-1]
