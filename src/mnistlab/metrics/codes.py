"""Measures of an encoder's codes as arrays: how well a linear classifier reads the digit from them."""

from __future__ import annotations

import numpy as np

from mnistlab.core.errors import ConfigError


def probe_accuracy(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    val_codes: np.ndarray,
    val_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Accuracy on (val_codes, val_labels) of a logistic regression fit on standardised train codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(train_codes) == 0 or len(val_codes) == 0:
        raise ConfigError("probe_acc needs non-empty train and validation splits (data.val_fraction > 0)")
    if len(np.unique(train_labels)) < 2:
        raise ConfigError("probe_acc needs at least two classes among the training images")
    # float64: a collapsed code (weight decay can shrink it to subnormal floats) has a standardising
    # scale that is 0 in float32, and dividing by it would give NaN.
    train_codes, val_codes = np.asarray(train_codes, np.float64), np.asarray(val_codes, np.float64)
    if not (np.isfinite(train_codes).all() and np.isfinite(val_codes).all()):
        raise ConfigError("probe_acc: the encoder's codes are not finite (inf or NaN)")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    clf.fit(train_codes, train_labels)
    return float((clf.predict(val_codes) == val_labels).mean())
