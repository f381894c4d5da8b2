"""Settings of `mnistlab probe`: how the linear probe and the fine-tuned encoder are trained.

Registered as the config of the preset's [probe] table (core.config.register_table) when this package
is imported. Presets hold it as [probe.linear], [probe.finetune]
and [probe.options]; the data settings always come from the probed run, so the probe sees the same
train / validation / test split as the encoder did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistlab.core.config import register_table
from mnistlab.core.errors import SEED_MAX, check, check_bool, check_float, check_int, check_seed
from mnistlab.data.datasets import DataConfig
from mnistlab.training.loop import TrainConfig


@dataclass(frozen=True)
class ProbeOptions:
    standardize: bool = True  # z-score features with training statistics before the linear probe, kNN
    # and logistic regression (an affine map a linear layer could absorb: it eases optimisation only)
    encoder_lr_scale: float = 0.1  # fine-tuning: encoder lr = finetune.lr * this (the head gets finetune.lr)
    scratch_lr_scale: float = 1.0  # the same network from scratch: its encoder lr = finetune.lr * this
    shift: int = 0  # fine-tuning / scratch: random translations of up to this many pixels (0 = none)
    min_epoch_images: int = 10_000  # a small labelled subset is repeated so an epoch holds this many
    knn_k: int = 5  # neighbours of the kNN baseline
    logreg_c: float = 1.0  # inverse L2 strength of the logistic-regression baseline (scikit-learn's C)
    label_seed: int = 0  # seeds the balanced labelled subsets of --labels-per-class
    label_subsets: int = 1  # subsets drawn per labels count (seeds label_seed, label_seed + 1, ...): a
    # row reports their mean and range, since 100 images are a noisy sample of a digit's variety

    def __post_init__(self):
        check_bool(self.standardize, "options.standardize")
        # The scaled rates are finetune.lr (at most 10) times these; a factor of 100 is already extreme.
        check_float(self.encoder_lr_scale, "options.encoder_lr_scale", 0, 100, why="0 = a frozen encoder")
        check_float(self.scratch_lr_scale, "options.scratch_lr_scale", 0, 100, low_open=True)
        check_int(self.shift, "options.shift", 0, 8, "pixels of a 28x28 image")
        check_int(self.min_epoch_images, "options.min_epoch_images", 0, 10_000_000)
        check_int(self.knn_k, "options.knn_k", 1, 1000)
        check_float(self.logreg_c, "options.logreg_c", 0, 1e6, low_open=True)
        check_seed(self.label_seed, "options.label_seed")
        # Each subset is a probe trained anew; subset i is drawn with seed label_seed + i.
        check_int(self.label_subsets, "options.label_subsets", 1, 100)
        check(
            self.label_seed + self.label_subsets - 1 <= SEED_MAX,
            f"options.label_seed + label_subsets - 1 must be <= {SEED_MAX} (subset i uses label_seed + i)",
        )


@dataclass(frozen=True)
class ProbeExperiment:
    data: DataConfig = field(default_factory=DataConfig)  # replaced by the probed run's data settings
    linear: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=30, batch_size=256, lr=5e-2, schedule="cosine")
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=15, batch_size=128, lr=3e-3, optimizer="adamw", schedule="onecycle"
        )
    )
    options: ProbeOptions = field(default_factory=ProbeOptions)


register_table("probe", ProbeExperiment)
