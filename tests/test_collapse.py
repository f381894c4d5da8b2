"""The collapse detector: fires on a constant generator, on one dominating class and on a stuck
discriminator; stays quiet on real MNIST images with their labels."""

from __future__ import annotations

import pytest
import torch

from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataConfig, load
from mnistlab.metrics.collapse import CollapseConfig, detect_collapse, mean_pairwise_distance


@pytest.fixture(scope="module")
def real():
    data = load(DataConfig(train_limit=1200, test_limit=1, val_fraction=0.0))
    return data.train


def healthy_history(n=4):
    return [{"epoch": e, "train_d_loss": 1.1, "train_g_loss": 0.9} for e in range(1, n + 1)]


def test_quiet_on_real_images(real):
    samples, ref = real.images[:600], real.images[600:1200]
    report = detect_collapse(samples, healthy_history(), real.labels[:600], ref)
    assert not report.collapsed, report.warnings
    assert 0.9 < report.stats["diversity_ratio"] < 1.1
    assert report.stats["max_class_share"] < 0.15


def test_fires_on_a_constant_generator(real):
    one = real.images[:1].expand(500, 28, 28).clone()  # the same image every time
    report = detect_collapse(one, healthy_history(), torch.full((500,), 7), real.images[:500])
    assert report.collapsed
    text = " ".join(report.warnings)
    assert "samples alike" in text and "class 7" in text
    assert report.stats["diversity"] == 0.0


def test_constant_generator_without_real_images_or_classes():
    grey = torch.full((50, 1, 28, 28), 0.5)  # float images in [0, 1] are accepted too
    report = detect_collapse(grey)
    assert report.collapsed and report.warnings[0].startswith("samples alike")


def test_one_class_dominating(real):
    classes = torch.cat([torch.full((97,), 1), torch.tensor([0, 2, 3])])  # the course GAN's 97% ones
    report = detect_collapse(real.images[:100], classes=classes)
    assert [w for w in report.warnings if "97% of samples are class 1" in w]


@pytest.mark.parametrize("d_loss,words", [(0.001, "stuck near zero"), (100.0, "pinned at 100"), (1.0, None)])
def test_discriminator_loss_stuck(real, d_loss, words):
    history = healthy_history(2) + [{"epoch": e, "train_d_loss": d_loss} for e in (3, 4)]
    report = detect_collapse(real.images[:200], history, cfg=CollapseConfig(window=2))
    if words is None:
        assert not report.collapsed
    else:
        assert any(words in w for w in report.warnings)


def test_one_bad_epoch_is_not_stuck(real):
    history = healthy_history(3) + [{"epoch": 4, "train_d_loss": 0.001}]
    assert not detect_collapse(real.images[:200], history, cfg=CollapseConfig(window=2)).collapsed


def test_pairwise_distance_and_config_checks():
    x = torch.zeros(2, 28, 28, dtype=torch.uint8)
    x[1] = 255  # two images differing by 1.0 at each of 784 pixels: distance 28
    assert mean_pairwise_distance(x) == pytest.approx(28.0)
    assert mean_pairwise_distance(x[:1]) == 0.0
    with pytest.raises(ConfigError, match="max_class_share"):
        CollapseConfig(max_class_share=0)
    assert detect_collapse(x[:0]).to_dict() == {"collapsed": False, "warnings": [], "stats": {}}


def _classes(shares: list[float], n: int = 1000) -> torch.Tensor:
    counts = [round(s * n) for s in shares]
    return torch.cat([torch.full((c,), d) for d, c in enumerate(counts)])


def test_uneven_digits_warn_where_the_dominance_check_did_not(real):
    # The GAN: one digit at 35.2%, four under 5%, no class above the old 40% threshold.
    shares = [0.352, 0.02, 0.03, 0.04, 0.045, 0.12, 0.10, 0.10, 0.093, 0.10]
    report = detect_collapse(real.images[:200], classes=_classes(shares))
    text = " ".join(report.warnings)
    assert "35% of samples are class 0" in text
    assert "4 under 5% of samples: 1 (2.0%), 2 (3.0%), 3 (4.0%), 4 (4.5%)" in text
    assert report.stats["min_class_share"] == pytest.approx(0.02)


def test_rare_digit_check_needs_enough_samples(real):
    # 100 samples: a digit at 4% is within chance of its 10% share, so no rare-class warning.
    shares = [0.04, 0.11, 0.11, 0.11, 0.11, 0.11, 0.11, 0.1, 0.1, 0.1]
    small = detect_collapse(real.images[:100], classes=_classes(shares, 100))
    assert not [w for w in small.warnings if "rarely" in w]
    large = detect_collapse(real.images[:100], classes=_classes(shares, 1000))
    assert [w for w in large.warnings if "rarely generated: 1 under 5%" in w]
