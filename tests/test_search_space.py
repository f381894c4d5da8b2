"""Grid syntax, trial naming, search-space TOML and the probe: pure functions, no training."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.metrics.codes import probe_accuracy
from mnistlab.search.grid import objective_of
from mnistlab.search.space import (
    REPORT_GRID,
    default_space_path,
    grid_points,
    load_space,
    overrides_of,
    parse_grid,
    parse_space,
    suggest,
    trial_name,
)
from tests.conftest import assert_one_line_error


def test_parse_grid_and_points_in_order():
    grid = parse_grid(["train.lr=1e-3, 2e-2", "model.latent_dim=2,10,100"])
    assert grid == {"train.lr": ["1e-3", "2e-2"], "model.latent_dim": ["2", "10", "100"]}
    points = grid_points(grid)
    assert len(points) == 6
    assert points[0] == {"train.lr": "1e-3", "model.latent_dim": "2"}
    assert points[1] == {"train.lr": "1e-3", "model.latent_dim": "10"}  # last key varies fastest
    assert overrides_of(points[-1]) == ["train.lr=2e-2", "model.latent_dim=100"]


def test_report_grid_has_twelve_points():
    assert len(grid_points(REPORT_GRID)) == 12


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("train.lr", "expected section.key=v1,v2"),
        ("lr=1e-3,2e-2", "not a dotted config key"),
        ("train.lr=1e-3,,2e-2", "empty value"),
        ("train.lr=", "empty value"),
        ("train.lr=1e-3,1e-3", "repeated"),
    ],
)
def test_bad_grid_items_give_one_line_errors(item, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_grid([item])
    assert_one_line_error(info)


def test_grid_key_given_twice_is_an_error():
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["train.lr=1e-3", "train.lr=2e-2"])


def test_cli_bad_grid_exits_2_with_one_line(capsys, tmp_path):
    code = cli.main(
        ["search", "ae", "--grid", "train.lr:1e-3", "--out", str(tmp_path / "s"), "--no-progress"]
    )
    assert code == cli.EXIT_BAD_INPUT
    assert assert_one_line_error(capsys).startswith("mnistlab: error: --grid 'train.lr:1e-3'")
    assert not (tmp_path / "s").exists()  # nothing trained or written


def test_cli_unknown_grid_key_is_caught_before_training(capsys, tmp_path):
    code = cli.main(["search", "ae", "--grid", "train.learning_rate=1e-3", "--out", str(tmp_path / "s")])
    assert code == cli.EXIT_BAD_INPUT
    assert_one_line_error(capsys, "unknown key 'train.learning_rate'")
    assert not (tmp_path / "s").exists()


def test_trial_names_are_deterministic_readable_and_distinct():
    a = trial_name({"train.lr": "1e-3", "train.weight_decay": "1e-4", "model.latent_dim": "2"})
    assert a == "lr=1e-3_weight_decay=1e-4_latent_dim=2"
    assert a == trial_name({"train.lr": "1e-3", "train.weight_decay": "1e-4", "model.latent_dim": "2"})
    # Same leaf under two sections: the dotted key disambiguates.
    assert trial_name({"train.seed": 1, "data.seed": 2}) == "train.seed=1_data.seed=2"
    # Unsafe characters are replaced, and a hash keeps cleaned names apart.
    b, c = trial_name({"data.data_dir": "/x/y"}), trial_name({"data.data_dir": "/x-y"})
    assert "/" not in b and b != c


def test_default_space_loads_and_suggests_with_fixed_trial():
    space = load_space(default_space_path("ae"))
    keys = [p.key for p in space]
    assert {"train.lr", "train.weight_decay", "model.latent_dim"} <= set(keys)
    fixed = optuna.trial.FixedTrial(
        {"train.lr": 1e-3, "train.weight_decay": 1e-4, "model.latent_dim": 10, "model.dropout": 0.0}
    )
    point = suggest(fixed, space)
    assert point["train.lr"] == 1e-3 and point["model.latent_dim"] == 10


def test_space_types_parse():
    space = parse_space(
        {
            "train": {
                "lr": {"type": "log-float", "low": 1e-4, "high": 1e-1},
                "epochs": {"type": "int", "low": 1, "high": 5},
            },
            "model": {"latent_dim": {"type": "categorical", "choices": [2, 10]}},
        }
    )
    by_key = {p.key: p for p in space}
    assert by_key["train.lr"].kind == "float" and by_key["train.lr"].log
    assert by_key["train.epochs"].kind == "int"
    assert by_key["model.latent_dim"].choices == (2, 10)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"type": "float", "low": 1.0, "high": 0.5}, "must be below high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
        ({"type": "uniform", "low": 0.0, "high": 1.0}, "type must be"),
        ({"type": "float", "low": 0.0, "hi": 1.0}, "unknown field"),
        ({"type": "int", "low": 1.5, "high": 3}, "must be an integer"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
    ],
)
def test_bad_space_entries_are_refused(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_space({"train": {"lr": spec}}, "space.toml")


def test_empty_space_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="declares no parameters"):
        parse_space({})
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train.lr\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_space(bad)


def test_objectives():
    assert objective_of("val_loss").direction == "minimize" and objective_of("val_loss").per_epoch
    assert objective_of("probe_acc").direction == "maximize" and not objective_of("probe_acc").per_epoch
    # What the classifier and semi tasks log is an accuracy: higher is better, so it is maximised.
    assert objective_of("val_accuracy").direction == "maximize" and objective_of("val_accuracy").per_epoch
    assert objective_of("val_noisy_mse").direction == "minimize"
    assert objective_of("val_accuracy").better(0.99, 0.98) and objective_of("val_loss").better(0.1, 0.2)
    with pytest.raises(ConfigError, match="--objective"):
        objective_of("accuracy")


def test_probe_accuracy_separates_separable_codes_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    centers = rng.normal(0, 5, (10, 4))
    codes = centers[labels] + rng.normal(0, 0.5, (600, 4))
    acc = probe_accuracy(codes[:400], labels[:400], codes[400:], labels[400:])
    assert acc > 0.95
    noise = rng.normal(0, 1, (600, 4))
    assert probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]) < 0.3


def test_probe_accuracy_survives_a_collapsed_code():
    # A trial whose weight decay shrank its code to subnormal floats (seen in the report's grid: lr 1e-3,
    # weight decay 5e-3, latent 100): the standardising scale (~1e-46) is 0 in float32, and the probe
    # crashed on the resulting NaNs. Now it is computed in float64 and gives a number.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    codes = np.zeros((600, 3), np.float32)
    codes[:, 0] = 3e-14
    codes[::7, 1] = np.float32(1.4e-45)  # the smallest subnormal float32: variance ~2e-91
    acc = probe_accuracy(codes[:400], labels[:400], codes[400:], labels[400:])
    assert 0.0 <= acc < 0.3  # no information: near chance


def test_probe_accuracy_refuses_empty_validation():
    with pytest.raises(ConfigError, match="non-empty"):
        probe_accuracy(np.zeros((5, 2)), np.arange(5), np.zeros((0, 2)), np.zeros(0))
