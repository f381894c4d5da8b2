"""The semi-supervised task's training (task "semi"): FixMatch-style consistency on the CPU.

Each step takes a class-balanced labelled batch (weak view, cross-entropy) and a batch of unlabelled
training images: the teacher (an exponential moving average of the student's weights, mean teacher)
labels their weak view, and the student learns that label on their strong view wherever the teacher
is confident enough (on the weak view itself in the last `semi.weak_tail` share of the steps).
Builds on FixMatch (Sohn et al. 2020), FlexMatch's class-wise thresholds (Zhang et al. 2021; here
with a floor), distribution alignment (Berthelot et al. 2020, ReMixMatch), mean teacher (Tarvainen &
Valpola 2017). docs/semi.md has the method, the tries and the numbers.

What the loop sees: its "training split" is every training image with its *index* in place of a
label, so the unlabelled batches carry no class at all; the task object holds the labels of the
labelled subset only (drawn by `draw_labelled` from `semi.labels_per_class` and `semi.label_seed`).
No validation or test label is used in training; the schedule is fixed and the last model is the
result (Oliver et al. 2018): the validation accuracy logged per epoch is a monitor, never a choice.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import ConfigError, check, check_bool, check_float, check_int, check_seed
from mnistlab.data import augment
from mnistlab.data.augment import AugmentConfig
from mnistlab.data.datasets import DataConfig, Split, to_float
from mnistlab.models.semi import SemiNet, SemiNetConfig
from mnistlab.plots.figures import plot_curves
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import save_checkpoint
from mnistlab.training import label_propagation, run_folder
from mnistlab.training.loop import TrainConfig, steps_per_epoch

N_CLASSES = 10
MAX_PER_CLASS = 1_000_000


@dataclass(frozen=True)
class SemiConfig:
    """Which labels the run may read, and the consistency recipe."""

    labels_per_class: int = 10  # labelled training images per class (the rest are used without label)
    all_labels: bool = False  # every training image labelled (labels_per_class is then not read)
    label_seed: int = 0  # draws the labelled subset (numpy default_rng)
    batch_labelled: int = 64  # labelled images per step, class-balanced; train.batch_size = unlabelled
    threshold: float = 0.95  # confidence a pseudo-label needs (FixMatch's tau; FlexMatch scales it)
    threshold_floor: float = 0.7  # FlexMatch's class thresholds never go below this
    flex: bool = True  # FlexMatch class-wise thresholds (false: the fixed threshold)
    dist_align: bool = True  # teacher probabilities divided by their running mean (to a uniform prior)
    da_momentum: float = 0.99
    lambda_u: float = 1.0  # weight of the unlabelled loss
    known_labels: bool = True  # a labelled image met in the unlabelled stream learns its own label
    known_weak: bool = False  # ... from its weak view instead of its strong one
    # The last `weak_tail` share of the steps: every accepted image learns its (pseudo-)label from its
    # weak view, the views the evaluated model is tested on, instead of its strong one (0: never).
    weak_tail: float = 0.0
    prior_epochs: float = 0.0  # label propagation's prior on the pseudo-labels, faded out over these epochs
    prior_floor: float = 0.0  # ... down to this weight, kept to the end (0: gone after prior_epochs)
    ema: float = 0.99  # decay of the teacher's weights (the evaluated model)
    momentum: float = 0.9  # SGD with Nesterov momentum, lr and weight decay from [train]
    bn_images: int = 10_000  # BatchNorm statistics re-estimated on this many weak views at the end
    val_images: int = 2_000  # validation images whose accuracy is logged per epoch (a monitor; 0 = none)

    def __post_init__(self):
        check_int(self.labels_per_class, "semi.labels_per_class", 1, MAX_PER_CLASS)
        check_bool(self.all_labels, "semi.all_labels")
        check_seed(self.label_seed, "semi.label_seed")
        check_int(self.batch_labelled, "semi.batch_labelled", N_CLASSES, 65_536, "at least one per class")
        check_float(self.threshold, "semi.threshold", 0, 1)
        check_float(self.threshold_floor, "semi.threshold_floor", 0, 1)
        check_bool(self.flex, "semi.flex")
        check_bool(self.dist_align, "semi.dist_align")
        check_float(self.da_momentum, "semi.da_momentum", 0, 1, high_open=True)
        check_float(self.lambda_u, "semi.lambda_u", 0, 100)
        check_bool(self.known_labels, "semi.known_labels")
        check_bool(self.known_weak, "semi.known_weak")
        check_float(self.weak_tail, "semi.weak_tail", 0, 1)
        check_float(self.prior_epochs, "semi.prior_epochs", 0, 10_000)
        check_float(self.prior_floor, "semi.prior_floor", 0, 1, high_open=True)
        check_float(self.ema, "semi.ema", 0, 1, high_open=True)
        check_float(self.momentum, "semi.momentum", 0, 1, high_open=True)
        check_int(self.bn_images, "semi.bn_images", 0, 10_000_000, "0 = keep the teacher's statistics")
        check_int(self.val_images, "semi.val_images", 0, 10_000_000, "0 = no monitor")


# Published semi-supervised MNIST test accuracies at 100 labels (10 per class), as their papers report
# them (not measured here): the summary.json of a 10-per-class run carries them, named as published
# numbers, so that the report shows them beside the measured one.
PUBLISHED_100_LABELS = (
    ("Ladder network (Rasmus et al. 2015)", 0.9894),
    ("Improved GAN (Salimans et al. 2016)", 0.9907),
    ("VAT (Miyato et al. 2018)", 0.9864),
    ("M1+M2 (Kingma et al. 2014)", 0.9667),
)


# The default recipe (docs/semi.md): 19 epochs of 48,000 unlabelled images in batches of 448 = 2,052
# SGD steps (about the default autoencoder's CPU time on the same host, `benchmarks/semi_speed.py`),
# 3% warm-up then cosine (onecycle), weight decay on the weights only.
DEFAULT_TRAIN = {
    "epochs": 19,
    "batch_size": 448,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup": 0.03,
}


@dataclass(frozen=True)
class SemiExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: SemiNetConfig = field(default_factory=SemiNetConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**DEFAULT_TRAIN))
    semi: SemiConfig = field(default_factory=SemiConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# ----------------------------------------------------------------------------- the labelled subset


def draw_labelled(labels: torch.Tensor, cfg: SemiConfig) -> np.ndarray:
    """Sorted indices (into the training split) of the labelled subset: `labels_per_class` images of
    each class drawn without replacement by `label_seed`, or every index with `all_labels`. A class
    missing from the split, or holding fewer images than asked, is a one-line ConfigError."""
    y = np.asarray(labels)
    counts = np.bincount(y[(y >= 0) & (y < N_CLASSES)], minlength=N_CLASSES)[:N_CLASSES]
    missing = [c for c in range(N_CLASSES) if counts[c] == 0]
    if missing or y.min(initial=0) < 0 or y.max(initial=0) >= N_CLASSES:
        what = f"no image of class {', '.join(map(str, missing))}" if missing else "labels outside 0-9"
        raise ConfigError(f"semi needs every digit 0-9 in the training split: it has {what}")
    if cfg.all_labels:
        return np.arange(len(y))
    smallest = int(counts.min())
    check(
        cfg.labels_per_class <= smallest,
        f"semi.labels_per_class={cfg.labels_per_class} is more than class {int(counts.argmin())} holds "
        f"({smallest} training images); at most {smallest}, or semi.all_labels=true",
    )
    rng = np.random.default_rng(cfg.label_seed)
    picked = [rng.choice(np.flatnonzero(y == c), cfg.labels_per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picked))


def indices_sha256(indices: np.ndarray) -> str:
    """SHA-256 of the sorted indices as little-endian int64: names the labelled subset in summary.json."""
    return hashlib.sha256(np.sort(np.asarray(indices)).astype("<i8").tobytes()).hexdigest()


# ----------------------------------------------------------------------------- the loop's task


class SemiState(nn.Module):
    """What the recipe remembers between steps, as buffers so the loop's checkpoint holds them and a
    resumed run continues exactly: each unlabelled image's latest confident class (-1 = none yet,
    FlexMatch's learning effect), the running mean of the teacher's class probabilities (distribution
    alignment) and the number of steps taken (the teacher's decay ramp)."""

    def __init__(self, n_images: int):
        super().__init__()
        self.register_buffer("confident_class", torch.full((n_images,), -1, dtype=torch.long))
        self.register_buffer("mean_prob", torch.full((N_CLASSES,), 1.0 / N_CLASSES))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Weight decay on conv and linear weights only (FixMatch's practice): not on BN scales or biases.
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class SemiTask:
    """What the training loop needs: modules (student, teacher, state), the optimizer, a step, the
    validation monitor. `train_step(images, index)` gets unlabelled images and their indices."""

    def __init__(self, exp: SemiExperiment, train: Split, labelled: np.ndarray, val: Split, device):
        self.cfg, self.aug, self.device = exp.semi, exp.augment, device
        self.channels_last = device.type == "cpu" or exp.train.channels_last  # measured faster on CPU
        self.model = SemiNet(exp.model).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher = copy.deepcopy(self.model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.state = SemiState(len(train)).to(device)
        self.modules = {"model": self.model, "teacher": self.teacher, "state": self.state}
        opt = torch.optim.SGD(
            _param_groups(self.model, exp.train.weight_decay),
            lr=exp.train.lr,
            momentum=self.cfg.momentum,
            nesterov=True,
        )
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]  # the loop's schedule scales this
        self.optimizers = {"model": opt}
        idx = torch.as_tensor(labelled, dtype=torch.long)
        self.labelled_images = train.images[idx]  # (L, 28, 28) uint8
        self.labelled_labels = train.labels[idx].long()  # (L,): the only labels the task holds
        self.by_class = [torch.nonzero(self.labelled_labels == c)[:, 0] for c in range(N_CLASSES)]
        # (N,) the label of each training image of the labelled subset, -1 elsewhere: indexed by the
        # unlabelled batch's indices, so a labelled image there learns its label, not a pseudo-label.
        self.known = torch.full((len(train),), -1, dtype=torch.long)
        if self.cfg.known_labels:
            self.known[idx] = self.labelled_labels
        self.known = self.known.to(device)
        self.val = val.take(slice(0, min(self.cfg.val_images, len(val))))
        # (N, 10) label propagation's class probabilities of every training image, from the labelled
        # subset alone; faded out over the first `prior_epochs` epochs of steps.
        self.prior_steps = self.cfg.prior_epochs * steps_per_epoch(len(train), exp.train.batch_size)
        self.total_steps = exp.train.epochs * steps_per_epoch(len(train), exp.train.batch_size)
        self.prior = None
        if self.prior_steps > 0 or self.cfg.prior_floor > 0:
            codes = label_propagation.pca_codes(train.images)
            self.prior = label_propagation.propagate(codes, idx, self.labelled_labels).to(device)
        self.eval_batch_size = exp.train.eval_batch_size

    def _views(self, x_u8: torch.Tensor, strong: bool) -> torch.Tensor:
        x = to_float(x_u8, self.device)  # (B, 1, 28, 28) in [0, 1]
        x = (augment.strong if strong else augment.weak)(x, self.aug)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _labelled_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_labelled positions: the same number from each class, the remainder from all, drawn
        with replacement (from torch's global RNG, which the loop checkpoints)."""
        per_class, extra = divmod(self.cfg.batch_labelled, N_CLASSES)
        picks = [pos[torch.randint(len(pos), (per_class,))] for pos in self.by_class]
        picks.append(torch.randint(len(self.labelled_labels), (extra,)))
        pos = torch.cat(picks)
        return self.labelled_images[pos], self.labelled_labels[pos].to(self.device)

    @torch.no_grad()
    def _pseudo_labels(self, x_weak: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(classes (B,), accepted (B,) bool) from the teacher on the weak views."""
        cfg, st = self.cfg, self.state
        # The teacher normalises with the weak batch's own statistics (train mode): its running
        # statistics then follow weak images only, which the evaluated model sees at test time.
        self.teacher.train()
        prob = self.teacher(x_weak).float().softmax(1)  # (B, 10)
        if cfg.dist_align:
            st.mean_prob.mul_(cfg.da_momentum).add_(prob.mean(0), alpha=1 - cfg.da_momentum)
            prob = prob / st.mean_prob
            prob = prob / prob.sum(1, keepdim=True)
        fade = self._prior_weight()
        if fade > 0:  # a product of the teacher and the prior, the prior's weight falling from 1
            logp = (1 - fade) * prob.clamp_min(1e-8).log() + fade * self.prior[index].clamp_min(1e-8).log()
            prob = logp.softmax(1)
        conf, cls = prob.max(1)
        if not cfg.flex:
            return cls, conf >= cfg.threshold
        # FlexMatch: a class's threshold grows with its share of confident images (beta in [0, 1],
        # against the most learned class or the not-yet-confident images), mapped by b / (2 - b).
        known = st.confident_class[st.confident_class >= 0]
        learned = torch.bincount(known, minlength=N_CLASSES).float()
        unused = float((st.confident_class < 0).sum())
        beta = learned / max(float(learned.max()), unused, 1.0)
        thresholds = (cfg.threshold * beta / (2 - beta)).clamp_min(cfg.threshold_floor)
        over = conf > cfg.threshold
        st.confident_class[index[over]] = cls[over]
        return cls, conf >= thresholds[cls]

    def _in_weak_tail(self) -> bool:
        return int(self.state.steps) >= (1 - self.cfg.weak_tail) * self.total_steps

    def _prior_weight(self) -> float:
        """The prior's exponent in the pseudo-label: 1 at the start, falling linearly over prior_epochs
        to prior_floor and kept there; 0 without a prior."""
        if self.prior is None:
            return 0.0
        floor = self.cfg.prior_floor
        left = max(0.0, 1.0 - float(self.state.steps) / self.prior_steps) if self.prior_steps > 0 else 0.0
        return floor + (1 - floor) * left

    def train_step(self, images: torch.Tensor, index: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        index = index.to(self.device)
        x_l_u8, y_l = self._labelled_batch()
        x_l = self._views(x_l_u8, strong=False)  # (L, 1, 28, 28)
        x_weak = self._views(images, strong=False)  # (B, 1, 28, 28)
        pseudo, accepted = self._pseudo_labels(x_weak, index)
        known = self.known[index]  # (B,)
        pseudo = torch.where(known >= 0, known, pseudo)
        accepted = accepted | (known >= 0)
        # Only the accepted images' strong views are forwarded: the same loss as masking them after
        # the forward pass (FixMatch divides by the whole unlabelled batch), for less work.
        if self._in_weak_tail():  # the teacher's own views (their layout kept), no strong view drawn
            x_s = x_weak[accepted]  # (K, 1, 28, 28)
        else:
            x_s = self._views(images[accepted.to(images.device)], strong=True)  # (K, 1, 28, 28)
            if cfg.known_weak:  # the labelled images among them learn from their weak view
                own = (known >= 0)[accepted]  # (K,)
                x_s[own] = x_weak[accepted][own].to(x_s.dtype)
        self.model.train()
        logits = self.model(torch.cat([x_l, x_s])).float()  # (L + K, 10)
        loss_l = F.cross_entropy(logits[: len(y_l)], y_l)
        k = len(x_s)
        if k:
            loss_u = F.cross_entropy(logits[len(y_l) :], pseudo[accepted], reduction="sum") / len(images)
        else:
            loss_u = logits.sum() * 0.0
        loss = loss_l + cfg.lambda_u * loss_u
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self._update_teacher()
        return {
            "loss": loss.item(),
            "loss_labelled": loss_l.item(),
            "loss_unlabelled": loss_u.item(),
            "mask": k / len(images),  # share of unlabelled images whose pseudo-label was used
        }

    @torch.no_grad()
    def _update_teacher(self) -> None:
        # Mean teacher's ramp: a young student is copied more closely, (1 + t) / (10 + t) < ema.
        t = int(self.state.steps)
        decay = min(self.cfg.ema, (1 + t) / (10 + t))
        for pt, ps in zip(self.teacher.parameters(), self.model.parameters()):
            pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)
        self.state.steps += 1

    def evaluate(self) -> dict[str, float]:
        """The teacher's accuracy on the first `semi.val_images` validation images: a monitor only."""
        if len(self.val) == 0:
            return {}
        return {"accuracy": accuracy(self.teacher, self.val, self.device, self.eval_batch_size)}


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, 10) of uint8 images (N, 28, 28), in eval mode (restored afterwards)."""
    was = model.training
    model.eval()
    try:
        out = [
            model(to_float(images[i : i + batch_size], device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, N_CLASSES)


def accuracy(model: nn.Module, split: Split, device, batch_size: int = 1000) -> float:
    logits = predict(model, split.images, device, batch_size)
    return float((logits.argmax(1) == split.labels.long()).float().mean()) if len(split) else float("nan")


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images: torch.Tensor,
    cfg: AugmentConfig,
    n: int,
    seed: int,
    device,
    batch_size: int = 500,
) -> nn.Module:
    """A copy of `model` whose BatchNorm statistics are the plain average over `n` weak views of
    `images` (uint8), drawn from a generator of its own: the same result on a resumed run."""
    out = copy.deepcopy(model)
    bns = [m for m in out.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if n == 0 or not bns:
        return out.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:n]
    out.train()
    for i in range(0, len(idx), batch_size):
        out(augment.weak(to_float(images[idx[i : i + batch_size]], device), cfg, g))
    for m in bns:
        m.momentum = 0.1  # torch's default, as before
    return out.eval()


def evaluate_split(model: nn.Module, split: Split, device, batch_size: int = 1000) -> dict[str, float]:
    logits = predict(model, split.images, device, batch_size)
    y = split.labels.long()
    if len(split) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "errors": 0}
    return {
        "accuracy": round(float((logits.argmax(1) == y).float().mean()), 6),
        "loss": round(float(F.cross_entropy(logits, y)), 6),
        "errors": int((logits.argmax(1) != y).sum()),
    }


# ----------------------------------------------------------------------------- the run


def check_experiment(exp: SemiExperiment, train: Split) -> np.ndarray:
    """The labelled subset's indices; every one-line error about the labels, before any training."""
    return draw_labelled(train.labels, exp.semi)


def train_semi(exp: SemiExperiment, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train the `semi` task into run folder `out`; the final model (module "final": the teacher with
    re-estimated BatchNorm statistics) is evaluated once on the test set."""
    data, device = run_folder.start(exp)
    labelled = check_experiment(exp, data.train)  # a bad label setting fails before the folder exists
    n = len(data.train)
    # The loop's split: images with their index where a label would be (no class reaches the step).
    loop_split = Split(data.train.images, torch.arange(n))
    cpu0 = time.process_time()  # the label propagation prior (built with the task) counts as training
    task = SemiTask(exp, data.train, labelled, data.val, device)
    run_dir = run_folder.prepare(out, exp, "semi", resume)
    result = run_folder.fit_plain(task, loop_split, exp, run_dir, "semi", resume, progress)
    if result is None:
        return {}
    final = recalibrate_bn(
        task.teacher, data.train.images, exp.augment, exp.semi.bn_images, exp.train.seed + 1, device
    )
    cpu_seconds = time.process_time() - cpu0
    step = int(result.history[-1]["step"]) if result.history else 0
    sha = save_checkpoint(
        rundir.checkpoint_path(run_dir),
        {**task.modules, "final": final},
        task.optimizers,
        exp.train.epochs,
        step,
    )
    test = evaluate_split(final, data.test, device, exp.train.eval_batch_size)
    val = evaluate_split(final, data.val, device, exp.train.eval_batch_size)
    history = rundir.read_history(run_dir)
    figures = Path(run_dir) / "figures"
    plot_curves(
        history,
        ("train_loss", "train_loss_labelled", "train_loss_unlabelled"),
        figures / "loss_curves.png",
        "Semi-supervised: training losses",
        log_y=True,
    )
    plot_curves(
        history,
        ("train_mask", "val_accuracy"),
        figures / "accuracy.png",
        "Share of pseudo-labels used; teacher's validation accuracy (monitor)",
        ylabel="fraction",
    )
    summary = {
        "task": "semi",
        "test": test,
        "val": val,  # reported, never used to choose anything (fixed schedule, last model)
        "labels": {
            "labels_per_class": None if exp.semi.all_labels else exp.semi.labels_per_class,
            "n_labelled": len(labelled),
            "label_seed": exp.semi.label_seed,
            "indices_sha256": indices_sha256(labelled),
            "indices_of": "the training split (data.split_seed, data.val_fraction)",
        },
        "published": (
            [
                {"model": name, "test_accuracy": acc, "source": "published, not measured here"}
                for name, acc in PUBLISHED_100_LABELS
            ]
            if not exp.semi.all_labels and exp.semi.labels_per_class == 10
            else []
        ),
        "seeds": {"train": exp.train.seed, "label": exp.semi.label_seed, "split": exp.data.split_seed},
        "steps": step,
        "train_cpu_seconds": round(cpu_seconds, 1),
        "threads": torch.get_num_threads(),
        "data": data.source,
        "n_train": n,
        "n_val": len(data.val),
        "n_test": len(data.test),
        **run_folder.finished(result),
        "checkpoint_sha256": sha,
        "device": str(device),
    }
    rundir.write_summary(run_dir, summary)
    return summary


def load_final(run_dir: Path, exp: SemiExperiment) -> SemiNet:
    """The run's final model (eval mode)."""
    model = SemiNet(exp.model)
    rundir.load_weights(run_dir, model, name="final")
    return model.eval()
