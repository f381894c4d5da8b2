"""The report's GAN conditioned on the digit: the generator and discriminator of models/gan.py (imported,
unchanged), each given the class label y in {0, ..., 9}.

Generator G(z, y), for one noise vector z (noise_dim,) and a digit y:
  [z, e_G(y)]  (noise_dim + embed_dim)  -> the report's generator (Linear -> 128x3x3 -> three transposed
  convolutions -> (1, 28, 28) in [0, 1]), its first layer embed_dim inputs wider.
  e_G is a learnt embedding (10 x embed_dim). Followed by that linear layer it spans the same functions
  as the one-hot label concatenated to the noise (Mirza & Osindero 2014, "Conditional Generative
  Adversarial Nets") when embed_dim >= 10; the default, 10, is exactly that model.
Discriminator D(x, y), for one image (1, 28, 28):
  phi(x) = the report's discriminator features (three strided convolutions, 2304 after flattening);
  logits = w . phi(x) + b + <e_D(y), phi(x)>   (a projection discriminator: Miyato & Koyama 2018,
  "cGANs with Projection Discriminator"), e_D a learnt (10 x 2304) embedding.

Why these two:
- Projection in D. Miyato & Koyama derive it from the form of the optimal discriminator, the log density
  ratio log p(x, y) / q(x, y) = log p(y|x)/q(y|x) + log p(x)/q(x), with p(y|x) a softmax over features:
  the class term is then an inner product of a class embedding with phi(x). Their experiments (CIFAR-10,
  ImageNet) put it ahead of concatenating y to D's input or a hidden layer and of an auxiliary classifier
  (AC-GAN, Odena et al. 2017), whose classification loss rewards easily classified samples at the cost of
  diversity within a class (Shu et al. 2017) - the failure the per-digit collapse detector looks for. It is
  also the conditioning that StyleGAN2-ADA (Karras et al. 2020) trains with the same recipe as the default
  GAN here (non-saturating logistic loss, R1 on real images, G weight averaging). It adds one (10 x 2304)
  table and no layer: D's own network is the report's, and D(x, y) = sigmoid(logits) as in models/gan.py.
- Concatenation in G. The partner of projection D in SNGAN/BigGAN is conditional batch normalisation,
  but the report's generator has no normalisation layers to condition; concatenation at the input
  widens the first layer only, and keeps everything after it the report's network.
Optional (model.aux_classifier, off by default): a linear classifier of phi(x) beside the projection,
for AC-GAN's class cross-entropies (Odena et al. 2017) added to both losses: it trades some diversity
within a digit for samples read as their digit more often than projection alone gives.

`N_CLASSES` is 10: mnistlab's IDX reader accepts labels 0-9 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mnistlab.core.errors import check, check_bool, check_float, check_int
from mnistlab.models.gan import Discriminator, GANConfig, Generator

N_CLASSES = 10


@dataclass(frozen=True)
class CGANConfig:
    noise_dim: int = 100  # length of the generator's noise vector
    embed_dim: int = 10  # length of the generator's label embedding (10: the one-hot model)
    leak: float = 0.2  # negative slope of the discriminator's LeakyReLUs
    aux_classifier: bool = False  # D also classifies the digit from its features (AC-GAN; see above)

    def __post_init__(self):
        why = "the first layer's weights grow with noise_dim + embed_dim (at most 4096 together)"
        check_int(self.noise_dim, "model.noise_dim", 1, 4096, why)
        check_int(self.embed_dim, "model.embed_dim", 1, 4096, why)
        check(
            self.noise_dim + self.embed_dim <= 4096,
            f"model.noise_dim + model.embed_dim must be <= 4096 ({why})",
        )
        check_float(self.leak, "model.leak", 0, 1, high_open=True)
        check_bool(self.aux_classifier, "model.aux_classifier")


class ConditionalGenerator(nn.Module):
    def __init__(self, cfg: CGANConfig):
        super().__init__()
        self.noise_dim = cfg.noise_dim
        self.embed = nn.Embedding(N_CLASSES, cfg.embed_dim)  # N(0, 1) rows: the noise's scale
        self.net = Generator(GANConfig(noise_dim=cfg.noise_dim + cfg.embed_dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, noise_dim), (B,) digits -> images (B, 1, 28, 28) in [0, 1]."""
        return self.net(torch.cat([z, self.embed(y).to(z.dtype)], 1))


class ProjectionDiscriminator(nn.Module):
    def __init__(self, cfg: CGANConfig):
        super().__init__()
        self.net = Discriminator(GANConfig(leak=cfg.leak))  # .features (B, 2304), .head 2304 -> 1
        width = self.net.head.in_features
        self.embed = nn.Embedding(N_CLASSES, width)
        bound = 1 / math.sqrt(width)  # as the head's weights: both terms start at the same scale
        nn.init.uniform_(self.embed.weight, -bound, bound)
        self.classifier = nn.Linear(width, N_CLASSES) if cfg.aux_classifier else None

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1, 28, 28), (B,) digits -> (B,) scores before the Sigmoid, and (B, 10) class logits when
        model.aux_classifier (else None)."""
        phi = self.net.features(x)  # (B, 2304)
        s = self.net.head(phi).squeeze(1) + (self.embed(y).to(phi.dtype) * phi).sum(1)
        return s, self.classifier(phi) if self.classifier is not None else None

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scores(x, y)[0]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) probability that each image is a real image of its digit."""
        return torch.sigmoid(self.logits(x, y))


class ProjectionScores(nn.Module):
    """D.scores(x, y) as a module's forward (what DistributedDataParallel wraps); no weights of its own."""

    def __init__(self, discriminator: ProjectionDiscriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.discriminator.scores(x, y)


class CGAN(nn.Module):
    """The pair, built from one config (as models/gan.GAN); training uses the parts."""

    def __init__(self, cfg: CGANConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = ConditionalGenerator(cfg)
        self.discriminator = ProjectionDiscriminator(cfg)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.generator(z, y)


def warm_start(cgan: CGAN, generator: Generator, discriminator: Discriminator) -> None:
    """Start `cgan` from the report's unconditional GAN (models/gan.py), which it extends: every layer
    of G and D copied, the label's columns of G's first layer and D's projection embedding at 0, so
    that the pair starts as that GAN whatever the digit and learns the label from there. The class
    head (model.aux_classifier) keeps its fresh weights. A GAN of another noise length or leak is a
    ValueError."""
    g_first, mine = generator.net[0], cgan.generator.net.net[0]  # Linear(noise -> 1152)
    if g_first.in_features != cgan.generator.noise_dim:
        raise ValueError(
            f"the GAN's noise has {g_first.in_features} values, this cGAN's {cgan.generator.noise_dim}"
        )
    leak, own = discriminator.features[1].negative_slope, cgan.discriminator.net.features[1].negative_slope
    if leak != own:
        raise ValueError(f"the GAN's discriminator has LeakyReLU slope {leak}, this cGAN's {own}")
    with torch.no_grad():
        rest = {k: v for k, v in generator.state_dict().items() if not k.startswith("net.0.")}
        cgan.generator.net.load_state_dict({**cgan.generator.net.state_dict(), **rest})
        mine.weight.zero_()
        mine.weight[:, : g_first.in_features] = g_first.weight  # (1152, noise + embed): label columns 0
        mine.bias.copy_(g_first.bias)
        cgan.discriminator.net.load_state_dict(discriminator.state_dict())
        cgan.discriminator.embed.weight.zero_()


def digit_labels(n: int, digit: int | None = None) -> torch.Tensor:
    """(n,) digits: all `digit`, or 0, 1, ..., 9, 0, 1, ... (equal shares, one digit per grid column)."""
    return torch.arange(n) % N_CLASSES if digit is None else torch.full((n,), digit, dtype=torch.long)


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """uint8 digits (N, 28, 28) on the CPU from noise z (N, noise_dim) and digits y (N,), in eval mode."""
    device, was = next(G.parameters()).device, G.training
    G.eval()
    try:
        out = [
            G(z[i : i + batch_size].to(device), y[i : i + batch_size].to(device))
            .squeeze(1)
            .mul(255)
            .round_()
            .to("cpu", torch.uint8)
            for i in range(0, len(z), batch_size)
        ]
    finally:
        G.train(was)
    return torch.cat(out) if out else torch.empty(0, 28, 28, dtype=torch.uint8)
