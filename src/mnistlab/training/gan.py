"""The GAN's part of training: its settings, the losses, and the two-phase step that the shared loop
(`training.loop.fit`) drives. Whole runs (grids, scores, figures, summary) live in `training/gan_run.py`.

One step on a real batch x (B, 1, 28, 28):
  1. discriminator phase: fake = G(z), D scores x and fake.detach() (so D's loss never reaches G),
     loss_D = BCE(D(x), real_label) + BCE(D(fake), 0); step D's optimizer;
  2. generator phase: the updated D scores the same fakes, loss_G = BCE(D(fake), 1) (the
     non-saturating loss); step G's optimizer. D's weights are frozen for this backward pass, since
     the gradients it would get are thrown away anyway (a fifth of the step's FLOPs).
Optional, none of which changes either network: an R1 gradient penalty on real images (gan.r1),
instance noise on D's inputs (gan.d_noise), one-sided label smoothing (gan.real_label), and an
exponential moving average of the generator's weights used for sampling (gan.g_ema).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mnistlab.core import distributed
from mnistlab.core.errors import check, check_bool, check_float, check_int
from mnistlab.data.datasets import Split, to_float
from mnistlab.metrics.collapse import CollapseConfig
from mnistlab.models.cgan import CGAN, ProjectionScores
from mnistlab.models.cgan import generate as generate_digits
from mnistlab.models.gan import GAN
from mnistlab.training.loop import MAX_EPOCHS, NonFiniteLossError, TrainConfig, autocast, make_optimizer

log = logging.getLogger("mnistlab")

LOSSES = ("bce_probs", "bce_logits")
MAX_SAMPLES = 1_000_000  # generated digits scored at once, as `mnistlab sample --n` allows


@dataclass(frozen=True)
class GANTrainConfig:
    """What GAN training adds to `TrainConfig` (whose lr is the generator's)."""

    d_lr: float = 0.0  # discriminator learning rate; 0 = the same as train.lr
    beta1: float = 0.5  # Adam betas of both optimizers (the report: 0.5, 0.999)
    beta2: float = 0.999
    # "bce_probs": BCELoss on the Sigmoid's output, as the report (log clamped at -100, so a saturated
    # D pins its loss at 100); "bce_logits": the same loss computed from logits, numerically stable.
    loss: str = "bce_probs"
    real_label: float = 1.0  # target for real images in D's loss; 0.9 = one-sided label smoothing
    d_noise: float = 0.0  # std of Gaussian noise added to D's inputs, annealed linearly to 0
    r1: float = 0.0  # weight gamma of the R1 penalty gamma/2 * E|grad_x D(x)|^2 on real images; 0 = off
    r1_every: int = 1  # apply R1 every this many steps, scaled up to match (lazy regularisation)
    g_ema: float = 0.0  # decay of an average of G's weights used for samples and scores; 0 = off
    channels_last: bool = True  # memory layout of images and conv weights (speed only)
    merge_test: bool = True  # train on train + val + test (the report's 70,000 images)
    grid_epochs: tuple[int, ...] = (1, 5, 10, 15)  # epochs whose fixed-noise grid (and scores) are kept
    grid_size: int = 10  # the fixed noise batch is grid_size**2 vectors
    eval_samples: int = 5000  # samples scored (FID-MNIST, class coverage) at each grid epoch
    final_samples: int = 10000  # samples scored at the end
    stop_on_divergence: bool = True  # stop when D or G loss stays pinned; else flag it and go on
    pinned_loss: float = 20.0  # a step's D or G loss above this counts as pinned ...
    pinned_steps: int = 50  # ... and this many pinned steps in a row is divergence
    collapse: CollapseConfig = field(default_factory=CollapseConfig)

    def __post_init__(self):
        check_float(self.d_lr, "gan.d_lr", 0, 10, why="0 = train.lr")
        check_float(self.beta1, "gan.beta1", 0, 1, high_open=True)
        check_float(self.beta2, "gan.beta2", 0, 1, high_open=True)
        check(self.loss in LOSSES, f"gan.loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        check_float(self.real_label, "gan.real_label", 0.5, 1, low_open=True)
        check_float(self.d_noise, "gan.d_noise", 0, 10, why="a std on [0, 1] images")
        check_float(self.r1, "gan.r1", 0, 1e4)
        check_int(self.r1_every, "gan.r1_every", 1, 1_000_000)
        check_float(self.g_ema, "gan.g_ema", 0, 1, high_open=True)
        for name in ("channels_last", "merge_test", "stop_on_divergence"):
            check_bool(getattr(self, name), f"gan.{name}")
        check(isinstance(self.grid_epochs, tuple), "gan.grid_epochs must be a list of epoch numbers")
        for epoch in self.grid_epochs:
            check_int(epoch, "gan.grid_epochs", 1, MAX_EPOCHS)
        check_int(self.grid_size, "gan.grid_size", 1, 32)
        # Samples are generated and scored in memory (784 bytes each, plus the classifier's features).
        check_int(self.eval_samples, "gan.eval_samples", 0, MAX_SAMPLES, "0 = no scores during training")
        check_int(self.final_samples, "gan.final_samples", 0, MAX_SAMPLES, "0 = no final scores")
        check_float(self.pinned_loss, "gan.pinned_loss", 0, 1e4, low_open=True)
        check_int(self.pinned_steps, "gan.pinned_steps", 1, 1_000_000_000)
        check(isinstance(self.collapse, CollapseConfig), "gan.collapse must be a table")


class GANDivergedError(NonFiniteLossError):
    """The losses stayed pinned (saturated discriminator): training cannot recover; stopped."""


def bce(scores: torch.Tensor, target: float, loss: str) -> torch.Tensor:
    """Mean binary cross-entropy of D's logits `scores` (B,) against a constant `target` (pure)."""
    t = torch.full_like(scores, target)
    if loss == "bce_logits":
        return F.binary_cross_entropy_with_logits(scores, t)
    return F.binary_cross_entropy(torch.sigmoid(scores), t)  # the report's way, clamped log


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, real_label: float, loss: str) -> torch.Tensor:
    """BCE(D(x), real_label) + BCE(D(G(z)), 0) from logits (B,); summed, as the DCGAN example."""
    return bce(real, real_label, loss) + bce(fake, 0.0, loss)


def generator_loss(fake: torch.Tensor, loss: str) -> torch.Tensor:
    """Non-saturating generator loss BCE(D(G(z)), 1) = -log D(G(z)) from logits (B,)."""
    return bce(fake, 1.0, loss)


def fixed_noise(n: int, noise_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n, noise_dim) standard normal noise from its own generator: the same for a seed, whatever the
    global RNG has done, so grids and scores are comparable across epochs and runs."""
    return torch.randn(n, noise_dim, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def generate(generator: torch.nn.Module, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """uint8 images (N, 28, 28) on the CPU from noise z (N, noise_dim), in eval mode, in batches."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        out = [
            generator(z[i : i + batch_size].to(device)).squeeze(1).mul(255).round_().to("cpu", torch.uint8)
            for i in range(0, len(z), batch_size)
        ]
    finally:
        generator.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 28, 28, dtype=torch.uint8)


def r1_penalty(real_scores: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """E |d D(x) / d x|^2 over a batch: D's logits (B,) with respect to the inputs (B, 1, 28, 28)
    that produced them (which must require grad); differentiable, so it can be minimised."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real_inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def ema_decay(target: float, step: int) -> float:
    """Decay of the generator average at `step` (0-based): (1 + step) / (10 + step) early on, so the
    average forgets the random initial weights within the first few hundred steps, then `target`."""
    return min(target, (1.0 + step) / (10.0 + step))


class _Logits(torch.nn.Module):
    """D.logits as a module's forward, so DistributedDataParallel can wrap the call the step makes."""

    def __init__(self, discriminator: torch.nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator.logits(x)


class GANTask:
    """Two networks, two optimizers, one two-phase step; see the module docstring."""

    metrics_reduced = True  # under torchrun the step averages its numbers over the ranks itself

    def __init__(
        self,
        gan: GAN | CGAN,
        cfg: TrainConfig,
        gcfg: GANTrainConfig,
        device: torch.device,
        total_steps: int,
        val: Split | None = None,
        conditional: bool = False,
        aux_weight: float = 1.0,
    ):
        """`conditional`: `gan` is a models.cgan.CGAN, whose G and D take the batch's digits (the real
        images' labels, which the fakes are drawn for); with a class head in D, its cross-entropies
        weigh `aux_weight` (AC-GAN, Odena et al. 2017)."""
        # channels_last suits oneDNN's CPU convolutions (benchmarks/results/cpu_speed.md); same values.
        last = gcfg.channels_last or cfg.channels_last
        self.memory_format = torch.channels_last if last else torch.contiguous_format
        self.gan = gan.to(device, memory_format=self.memory_format)
        self.G, self.D = self.gan.generator, self.gan.discriminator
        self.conditional, self.aux = conditional, aux_weight
        # What the step calls for G's forward and D's scores in the discriminator phase: the networks,
        # or their DistributedDataParallel wrappers under torchrun (see `distribute`).
        self.g_net = self.G
        self.d_net = self.D.scores if conditional else self.D.logits
        self.autocast = autocast(cfg, device)
        self.gcfg = gcfg
        self.device = device
        self.total_steps = max(total_steps, 1)
        self.step = 0  # steps taken; anneals d_noise (set from the checkpoint when resuming)
        self.val = val if val is not None and len(val) else None
        self.eval_batch_size = cfg.eval_batch_size
        betas = (gcfg.beta1, gcfg.beta2)
        self.modules = {"generator": self.G, "discriminator": self.D}
        # The average of G's weights is a third module, so it is checkpointed and resumed like the others.
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if gcfg.g_ema > 0 else None
        if self.G_ema is not None:
            self.modules["generator_ema"] = self.G_ema
        self.optimizers = {
            "generator": make_optimizer(self.G.parameters(), cfg, betas=betas),
            "discriminator": make_optimizer(self.D.parameters(), cfg, lr=gcfg.d_lr or cfg.lr, betas=betas),
        }
        self.pinned = 0  # consecutive steps with a pinned loss
        self._last_r1 = 0.0
        self.diverged_at: int | None = None  # first step of a pinned stretch (when not stopping)
        n_val = min(len(self.val), 1000) if self.val is not None else 0
        self._val_z = fixed_noise(n_val, gan.cfg.noise_dim, 1, device)

    def distribute(self, wrap) -> None:
        """Wrap both networks in DistributedDataParallel: G's forward, and D's logits in the discriminator
        phase (the generator phase calls the plain D, whose weights take no gradient there, so D's
        gradients are averaged once per step). `modules` keep the plain networks for checkpoints."""
        self.g_net = wrap(self.G)
        self.d_net = wrap(ProjectionScores(self.D) if self.conditional else _Logits(self.D))

    def _randn_like(self, x: torch.Tensor) -> torch.Tensor:
        world = distributed.current()
        if not world.enabled:
            return torch.randn_like(x)
        return distributed.randn_rows(len(x), *x.shape[1:], device=x.device, dtype=x.dtype)

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator to draw samples from: the weight average when gan.g_ema > 0."""
        return self.G_ema if self.G_ema is not None else self.G

    def _d_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images as D sees them: with annealed instance noise when gan.d_noise > 0."""
        sigma = self.gcfg.d_noise * max(0.0, 1.0 - self.step / self.total_steps)
        return x + sigma * self._randn_like(x) if sigma > 0 else x

    def _scores(
        self, net, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's scores of x (N,) and its class logits (N, 10) (None without a class head), by `net`
        (D's own method, or its wrapper); a conditional D reads the digits y (N,)."""
        if self.conditional:
            return net(x, y)
        return net(x), None

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        g, loss = self.gcfg, self.gcfg.loss
        x = to_float(images, self.device).contiguous(memory_format=self.memory_format)  # (B, 1, 28, 28)
        y = labels.to(self.device) if self.conditional else None  # (B,): the real digits, the fakes' too
        # (B, noise_dim); under torchrun drawn for the global batch and sliced (same RNG stream everywhere)
        z = distributed.randn_rows(len(x), self.G.noise_dim, device=self.device)
        with self.autocast():
            fake = self.g_net(z, y) if self.conditional else self.g_net(z)  # (B, 1, 28, 28)

        # Phase 1, discriminator: fake.detach() keeps this loss out of the generator's graph.
        use_r1 = g.r1 > 0 and self.step % g.r1_every == 0
        x_in = self._d_input(x).requires_grad_(use_r1)
        # Real and fake go through D as one batch of 2B: D has no batch statistics, so this is the same
        # function as two calls, in fewer and larger convolutions.
        with self.autocast():
            both, cls = self._scores(
                self.d_net,
                torch.cat([x_in, self._d_input(fake.detach()).to(x_in.dtype)]),
                torch.cat([y, y]) if self.conditional else None,
            )
        s_real, s_fake = both.float().split(len(x))  # (B,) each, losses in fp32
        d_loss = discriminator_loss(s_real, s_fake, g.real_label, loss)
        if cls is not None:  # D's class head learns the real images' digits ...
            d_loss = d_loss + self.aux * F.cross_entropy(cls[: len(x)].float(), y)
        r1 = r1_penalty(s_real, x_in) if use_r1 else None
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        (d_loss + 0.5 * g.r1 * g.r1_every * r1 if r1 is not None else d_loss).backward()
        opt_d.step()

        # Phase 2, generator: the updated D scores the same fakes; D's weights take no gradient.
        self.D.requires_grad_(False)
        try:
            with self.autocast():
                g_scores, g_cls = self._scores(
                    self.D.scores if self.conditional else self.D.logits, self._d_input(fake), y
                )
            g_loss = generator_loss(g_scores.float(), loss)
            if g_cls is not None:  # ... and G draws fakes that it reads as the digits asked for
                g_loss = g_loss + self.aux * F.cross_entropy(g_cls.float(), y)
            opt_g = self.optimizers["generator"]
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        finally:
            self.D.requires_grad_(True)
        if self.G_ema is not None:
            decay = ema_decay(g.g_ema, self.step)
            with torch.no_grad():
                for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                    pe.lerp_(p, 1.0 - decay)  # pe = decay * pe + (1 - decay) * p
        self.step += 1

        # One device sync for all the numbers.
        stats = [
            d_loss.detach(),
            g_loss.detach(),
            torch.sigmoid(s_real.detach()).mean(),
            torch.sigmoid(s_fake.detach()).mean(),
        ]
        vals = distributed.mean_over_ranks(
            torch.stack(stats + ([r1.detach()] if r1 is not None else []))
        ).tolist()
        out = {
            "loss": vals[0] + vals[1],
            "d_loss": vals[0],
            "g_loss": vals[1],
            "d_real": vals[2],
            "d_fake": vals[3],
        }
        if g.r1 > 0:  # the last computed penalty on lazy steps, so the epoch mean stays meaningful
            self._last_r1 = vals[4] if r1 is not None else self._last_r1
            out["r1"] = self._last_r1
        self._watch(out)
        return out

    def _watch(self, out: dict[str, float]) -> None:
        """Count pinned steps; past gan.pinned_steps in a row, stop (or flag) the run."""
        g = self.gcfg
        if max(out["d_loss"], out["g_loss"]) > g.pinned_loss:
            self.pinned += 1
        else:
            self.pinned = 0
        if self.pinned < g.pinned_steps:
            return
        which = "discriminator" if out["d_loss"] > g.pinned_loss else "generator"
        message = (
            f"{which} loss pinned above {g.pinned_loss:g} for {self.pinned} steps in a row (now "
            f"D {out['d_loss']:.4g}, G {out['g_loss']:.4g}, D(x) {out['d_real']:.3g}, "
            f"D(G(z)) {out['d_fake']:.3g}) at step {self.step}: the discriminator is saturated"
        )
        if g.stop_on_divergence:
            raise GANDivergedError(message + "; training stopped (try a lower lr or gan.loss=bce_logits)")
        if self.diverged_at is None:
            self.diverged_at = self.step - self.pinned + 1
            log.warning("%s; going on because gan.stop_on_divergence=false", message)

    def evaluate(self) -> dict[str, float]:
        """Mean D(x) on held-out images and D(G(z)) on as many fixed-noise fakes (empty when the
        test and validation images were merged into training)."""
        if self.val is None:
            return {}
        if self.conditional:
            return self._evaluate_conditional()
        n = len(self._val_z)
        x = to_float(self.val.images[:n], self.device)
        real = torch.cat([self.D(x[i : i + self.eval_batch_size]) for i in range(0, n, self.eval_batch_size)])
        fake = self.D(to_float(generate(self.sampler, self._val_z, self.eval_batch_size), self.device))
        return {"d_real": real.mean().item(), "d_fake": fake.mean().item()}

    def _evaluate_conditional(self) -> dict[str, float]:
        """Mean D(x, y) on held-out images and on as many fakes of their digits."""
        n = min(len(self.val), 1000)
        x, y = to_float(self.val.images[:n], self.device), self.val.labels[:n].to(self.device)
        fake = to_float(
            generate_digits(self.sampler, fixed_noise(n, self.G.noise_dim, 1, self.device), y), self.device
        )
        return {"d_real": self.D(x, y).mean().item(), "d_fake": self.D(fake, y).mean().item()}
