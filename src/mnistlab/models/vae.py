"""A variational autoencoder on the report's shapes: the autoencoder's encoder with a final layer of
2 x latent_dim (mean and log-variance of q(z|x)), the reparameterisation trick, and the autoencoder's
decoder, whose last layer gives Bernoulli logits (the Sigmoid is applied for images).

Shapes for a batch: x (B, 1, 28, 28) -> encoder -> (B, 2d) -> mu, logvar (B, d);
z = mu + exp(logvar / 2) * eps (B, d) -> decoder -> logits (B, 1, 28, 28).

With `code_prior` > 0 the model also holds a second-stage VAE on the codes (Dai & Wipf 2019,
"Diagnosing and enhancing VAE models"): a small VAE whose data are the first stage's codes z and whose
own prior is N(0, I). The first stage's aggregate posterior (where digits encode) is not N(0, I): it
is a mixture of tight clusters with gaps between them, and prior draws that land in a gap decode as
blends of digits. The second stage learns that aggregate from N(0, I), so a draw u ~ N(0, I) decoded
by both stages lands where digits do. It trains on the detached codes, so the first stage's training
is unchanged by it.

The losses are pure functions here too: KL to N(0, I), the reconstruction NLL, MMD to N(0, I), the
KL weight's warm-up; and the model's own measures on a split (`evaluate_vae`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab import metrics
from mnistlab.data import Split, to_float
from mnistlab.errors import check
from mnistlab.models.autoencoder import AEConfig, Decoder, Encoder


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    hidden: int = 128  # width of the linear layer between the conv stack and the code
    code_prior: int = 0  # hidden width of the second-stage VAE on the codes; 0: none (draws are N(0, I))

    def __post_init__(self):
        check(isinstance(self.latent_dim, int) and 0 < self.latent_dim <= 4096,
              f"model.latent_dim must be in [1, 4096], got {self.latent_dim}")  # fmt: skip
        check(isinstance(self.hidden, int) and 0 < self.hidden <= 65536,
              f"model.hidden must be in [1, 65536], got {self.hidden}")  # fmt: skip
        check(isinstance(self.code_prior, int) and 0 <= self.code_prior <= 65536,
              f"model.code_prior must be in [0, 65536], got {self.code_prior}")  # fmt: skip


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # (B, 1, 28, 28) in [0, 1]: sigmoid of the logits
    z: torch.Tensor  # (B, d): the mean code (what probes and maps use)
    logits: torch.Tensor  # (B, 1, 28, 28)
    mu: torch.Tensor  # (B, d)
    logvar: torch.Tensor  # (B, d)
    code_nll: torch.Tensor | None = None  # (B,): the second stage's -log p(z|u) of the detached codes
    code_kl: torch.Tensor | None = None  # (B,): the second stage's KL(q(u|z) || N(0, I))


class GaussianEncoder(nn.Module):
    """The autoencoder's encoder ending in 2d numbers; calling it gives the mean code, so it can stand
    wherever an encoder is expected (probes, latent maps, fine-tuning)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.body = Encoder(AEConfig(latent_dim=2 * cfg.latent_dim, hidden=cfg.hidden))

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, 2d)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.moments(x)[0]


class BernoulliDecoder(nn.Module):
    """The autoencoder's decoder; `logits` stops before its Sigmoid (for a stable BCE)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.body = Decoder(AEConfig(latent_dim=cfg.latent_dim, hidden=cfg.hidden))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body.net[:-1](z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)  # (B, 1, 28, 28) in [0, 1]


# ------------------------------------------------------------------------ losses (pure)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each code dimension: (B, d) -> (B, d)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row: (B, d) -> (B,)."""
    return kl_per_dimension(mu, logvar).sum(1)


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Negative log-likelihood of images x (B, 1, 28, 28) in [0, 1] under the decoder's logits, per
    image (B,), summed over pixels (constants dropped)."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)


def beta_at(step: int, total: int, beta: float, warmup: float) -> float:
    """beta, ramped linearly from 0 over the first `warmup` share of `total` steps."""
    ramp = warmup * total
    return beta if ramp <= 0 else beta * min(1.0, step / ramp)


def mmd_to_prior(z: torch.Tensor) -> torch.Tensor:
    """Squared MMD between the codes z (B, d) and N(0, I) under a Gaussian kernel of variance s = d
    (k(a, b) = exp(-|a - b|^2 / 2s)); the prior's expectations in closed form, so no prior samples are
    drawn: E_p k(z_i, .) = (s / (s + 1))^(d/2) exp(-|z_i|^2 / 2(s + 1)), E_pp k = (s / (s + 2))^(d/2).
    Unbiased over the pairs i != j. A scalar, zero in expectation when the codes are N(0, I)."""
    b, d = z.shape
    s = float(d)
    pairs = torch.exp(-torch.cdist(z, z).pow(2) / (2 * s))  # (B, B)
    within = (pairs.sum() - pairs.diagonal().sum()) / (b * (b - 1))
    cross = (s / (s + 1)) ** (d / 2) * torch.exp(-z.pow(2).sum(1) / (2 * (s + 1)))  # (B,)
    return within - 2 * cross.mean() + (s / (s + 2)) ** (d / 2)


# ------------------------------------------------------------------------------ networks


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))  # fmt: skip


# The second stage's decoder variance gamma starts at exp(-2) ~ 0.14, about its squared error per code
# dimension after training; started at 1 (the codes' own variance; tried without KL warm-up) it stayed
# at the trivial solution that encodes nothing (KL 1 nat; measured in docs/results.md).
LOG_GAMMA_INIT = -2.0


class CodePrior(nn.Module):
    """The second-stage VAE: codes z (B, d) -> MLP -> mean and log-variance of q(u|z) (B, d each);
    u -> MLP -> mean of p(z|u) (B, d), a Gaussian with one learned variance gamma for all dimensions
    (Dai & Wipf's learned gamma: it sets how exactly the stage must reproduce the codes)."""

    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = _mlp(latent_dim, hidden, 2 * latent_dim)
        self.decoder = _mlp(latent_dim, hidden, latent_dim)
        self.log_gamma = nn.Parameter(torch.tensor(LOG_GAMMA_INIT))

    def losses(self, z: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(z|u) (constants dropped) and KL(q(u|z) || N(0, I)) per row (B,) for codes z and
        standard-normal noise eps (B, d)."""
        h = self.encoder(z)
        mu, logvar = h[:, : self.latent_dim], h[:, self.latent_dim :]
        z_hat = self.decoder(mu + torch.exp(0.5 * logvar) * eps)
        nll = (z - z_hat).pow(2).sum(1) / (2 * self.log_gamma.exp()) + 0.5 * self.latent_dim * self.log_gamma
        return nll, kl_divergence(mu, logvar)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Draws u (B, d) of N(0, I) -> codes (B, d): the mean of p(z|u)."""
        return self.decoder(u)


def fit_code_prior(stage: CodePrior, mu: torch.Tensor, sd: torch.Tensor, epochs: int, batch_size: int, lr: float,
                   seed: int, schedule: str = "cosine", warmup: float = 0.25, kl_warmup: float = 0.0,
                   progress: bool = False) -> list[dict[str, float]]:  # fmt: skip
    """Train the second stage after the first, on its frozen codes (Dai & Wipf's two stages): each
    epoch draws every training image's code once from q(z|x) = N(mu, sd^2) (mu, sd: (N, d), CPU
    tensors) in a shuffled order, and AdamW takes a step per `batch_size` codes at `lr` times
    training.loop.lr_factor(`schedule`, `warmup`), on the stage's device, with the KL term's weight
    ramped up from 0 over the first `kl_warmup` share of the steps. With the joint training's own
    schedules (one-cycle, KL warm-up over 30%) it came within 0.1 FID-MNIST of the joint stage on the
    same codes; with a cosine and no warm-up, 0.36 worse (docs/results.md). All draws come from a CPU
    generator seeded by `seed`, so the same inputs train the same stage. Returns one row per epoch:
    {"epoch", "code_nll", "code_kl"} (means over the epoch's codes)."""
    from tqdm.auto import tqdm

    from mnistlab.training.loop import lr_factor

    n, d = mu.shape
    device = stage.log_gamma.device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(stage.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    total, step, rows = epochs * math.ceil(n / batch_size), 0, []
    stage.train()
    for epoch in tqdm(range(epochs), desc="second stage", disable=not progress, leave=False):
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


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = GaussianEncoder(cfg)
        self.decoder = BernoulliDecoder(cfg)
        self.code_prior = CodePrior(cfg.latent_dim, cfg.code_prior) if cfg.code_prior else None

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None = None, code_eps: torch.Tensor | None = None
    ) -> VAEOutput:
        """With `eps` (B, d) standard normal: a sample of q(z|x) is decoded (training); without, the
        mean (evaluation: deterministic reconstructions). With `code_eps` (B, d) too, the second stage's
        losses of the detached sample z (inside forward, so DDP averages its gradients)."""
        mu, logvar = self.encoder.moments(x)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder.logits(z)
        code_nll = code_kl = None
        if self.code_prior is not None and code_eps is not None:
            code_nll, code_kl = self.code_prior.losses(z.detach(), code_eps)
        return VAEOutput(torch.sigmoid(logits), mu, logits, mu, logvar, code_nll, code_kl)

    def codes_from_prior(self, u: torch.Tensor) -> torch.Tensor:
        """Draws u (B, d) of N(0, I) -> codes for the decoder (B, d): through the second stage when
        the model has one, else u itself."""
        return u if self.code_prior is None else self.code_prior(u)


@torch.no_grad()
def evaluate_vae(
    model: VAE, split: Split, device, likelihood: str, batch_size: int = 1000
) -> dict[str, float]:
    """Means over `split`: MSE / PSNR / SSIM of the mean code's reconstruction, its NLL, and the KL;
    `active_units`: code dimensions whose mean KL exceeds 0.01 nats (the others carry nothing)."""
    was = model.training
    model.eval()
    sums = dict.fromkeys(("mse", "psnr", "ssim", "recon_nll", "kl"), 0.0)
    kl_dims = None
    for start in range(0, len(split), batch_size):
        x = to_float(split.images[start : start + batch_size], device)
        out = model(x)
        sums["mse"] += metrics.mse(out.recon, x).sum().item()
        sums["psnr"] += metrics.psnr(out.recon, x).sum().item()
        sums["ssim"] += metrics.ssim(out.recon, x).sum().item()
        sums["recon_nll"] += reconstruction_nll(out.logits, x, likelihood).sum().item()
        per_dim = kl_per_dimension(out.mu, out.logvar)  # (B, d)
        sums["kl"] += per_dim.sum().item()
        kl_dims = per_dim.sum(0) if kl_dims is None else kl_dims + per_dim.sum(0)
    model.train(was)
    n = max(len(split), 1)
    result = {k: v / n for k, v in sums.items()}
    result["active_units"] = int(((kl_dims / n) > 0.01).sum()) if kl_dims is not None else 0
    return result


def refit_code_prior(model: VAE, moments: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int,
                     **schedules) -> dict[str, float]:  # fmt: skip
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


# ------------------------------------------------------------- start from an autoencoder

# Log-variance q(z|x) starts at when the VAE starts from an autoencoder: a posterior s.d. of 0.14 on
# standardised codes, inside the 0.08 to 0.3 that the default VAE's posteriors end at (docs/results.md).
WARM_LOGVAR = -4.0


def _weighted(net: nn.Module) -> list[nn.Module]:
    """The layers with weights, in order (dropout layers, which an autoencoder may have, skipped)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]


@torch.no_grad()
def warm_start(model: VAE, encoder: nn.Module, decoder: nn.Module, codes: torch.Tensor,
               logvar: float = WARM_LOGVAR, where: str = "") -> None:  # fmt: skip
    """Start `model` from a trained autoencoder of the same shapes (its `encoder` and `decoder`), its
    codes standardised: the mean head gives (c - m) / s for the autoencoder's code c, where m and s
    (d,) are the mean and s.d. of `codes` (N, d), its training codes; the decoder's first layer undoes
    that, so the mean code decodes to the autoencoder's reconstruction; the log-variance head starts
    flat at `logvar`. The KL term then has codes of the prior's scale to shape, not a fresh network to
    train (20 epochs gave a better first stage than the default's 60; docs/results.md, "the VAE started
    from the autoencoder"). A one-line error, `where` first, if the shapes differ."""
    d = model.cfg.latent_dim
    check(codes.ndim == 2 and codes.shape[1] == d,
          f"{where}the autoencoder has a {codes.shape[-1]}-d code, the VAE model.latent_dim={d}")  # fmt: skip
    src_enc, src_dec = _weighted(encoder), _weighted(decoder)
    dst_enc, dst_dec = _weighted(model.encoder.body), _weighted(model.decoder.body)
    pairs = list(zip(src_enc[:-1] + src_dec[1:], dst_enc[:-1] + dst_dec[1:]))  # all but the code layers
    same = len(src_enc) == len(dst_enc) and len(src_dec) == len(dst_dec)
    check(same and all(a.weight.shape == b.weight.shape for a, b in pairs),
          f"{where}the autoencoder's layers do not match the VAE's (model.hidden={model.cfg.hidden})")  # fmt: skip
    for src, dst in pairs:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    m, s = codes.mean(0), codes.std(0).clamp_min(1e-6)  # (d,), (d,)
    w, b = src_enc[-1].weight, src_enc[-1].bias  # (d, hidden), (d,)
    head = dst_enc[-1]  # (2d, hidden): rows [:d] the mean, [d:] the log-variance
    head.weight.copy_(torch.cat([w / s[:, None], torch.zeros_like(w)]))
    head.bias.copy_(torch.cat([(b - m) / s, torch.full_like(b, logvar)]))
    w, b = src_dec[0].weight, src_dec[0].bias  # (hidden, d), (hidden,)
    dst_dec[0].weight.copy_(w * s[None, :])
    dst_dec[0].bias.copy_(b + w @ m)
