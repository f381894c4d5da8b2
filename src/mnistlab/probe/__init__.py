"""Classifiers on any run with an encoder: the linear probe, fine-tuning, label efficiency."""

from mnistlab.probe import config  # noqa: F401  (registers the [probe] table)
