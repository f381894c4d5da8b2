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
KL weight's warm-up. (Its training pieces and evaluation: training/variational.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import check
from mnistlab.models.autoencoder import AEConfig, Decoder, Encoder


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    hidden: int = 128  # width of the linear layer between the conv stack and the code
    code_prior: int = 0  # hidden width of the second-stage VAE on the codes; 0: none (draws are N(0, I))

    def __post_init__(self):
        check(
            isinstance(self.latent_dim, int) and 0 < self.latent_dim <= 4096,
            f"model.latent_dim must be in [1, 4096], got {self.latent_dim}",
        )
        check(
            isinstance(self.hidden, int) and 0 < self.hidden <= 65536,
            f"model.hidden must be in [1, 65536], got {self.hidden}",
        )
        check(
            isinstance(self.code_prior, int) and 0 <= self.code_prior <= 65536,
            f"model.code_prior must be in [0, 65536], got {self.code_prior}",
        )


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
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


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


# ------------------------------------------------------------- start from an autoencoder

# Log-variance q(z|x) starts at when the VAE starts from an autoencoder: a posterior s.d. of 0.14 on
# standardised codes, inside the 0.08 to 0.3 that the default VAE's posteriors end at (docs/results.md).
WARM_LOGVAR = -4.0


def _weighted(net: nn.Module) -> list[nn.Module]:
    """The layers with weights, in order (dropout layers, which an autoencoder may have, skipped)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]


@torch.no_grad()
def warm_start(
    model: VAE,
    encoder: nn.Module,
    decoder: nn.Module,
    codes: torch.Tensor,
    logvar: float = WARM_LOGVAR,
    where: str = "",
) -> None:
    """Start `model` from a trained autoencoder of the same shapes (its `encoder` and `decoder`), its
    codes standardised: the mean head gives (c - m) / s for the autoencoder's code c, where m and s
    (d,) are the mean and s.d. of `codes` (N, d), its training codes; the decoder's first layer undoes
    that, so the mean code decodes to the autoencoder's reconstruction; the log-variance head starts
    flat at `logvar`. The KL term then has codes of the prior's scale to shape, not a fresh network to
    train (20 epochs gave a better first stage than the default's 60; docs/history.md, "the VAE started
    from the autoencoder"). A one-line error, `where` first, if the shapes differ."""
    d = model.cfg.latent_dim
    check(
        codes.ndim == 2 and codes.shape[1] == d,
        f"{where}the autoencoder has a {codes.shape[-1]}-d code, the VAE model.latent_dim={d}",
    )
    src_enc, src_dec = _weighted(encoder), _weighted(decoder)
    dst_enc, dst_dec = _weighted(model.encoder.body), _weighted(model.decoder.body)
    pairs = list(zip(src_enc[:-1] + src_dec[1:], dst_enc[:-1] + dst_dec[1:]))  # all but the code layers
    same = len(src_enc) == len(dst_enc) and len(src_dec) == len(dst_dec)
    check(
        same and all(a.weight.shape == b.weight.shape for a, b in pairs),
        f"{where}the autoencoder's layers do not match the VAE's (model.hidden={model.cfg.hidden})",
    )
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
