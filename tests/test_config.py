"""Presets, typed overrides and run configs."""

from __future__ import annotations

import pytest

from mnistlab.core.config import preset_path, presets_dir, save_experiment
from mnistlab.core.errors import ConfigError
from mnistlab.tasks import load_experiment, load_run_config
from tests.conftest import assert_one_line_error


def test_seed_preset_is_the_report():
    exp = load_experiment("ae", "seed")
    assert (exp.train.lr, exp.train.weight_decay, exp.model.latent_dim) == (1e-3, 1e-4, 10)
    assert (exp.train.epochs, exp.train.batch_size, exp.train.optimizer) == (20, 256, "adam")
    assert exp.model.dropout > 0 and exp.data.val_fraction == 0.2


@pytest.mark.parametrize("preset", ["seed", "default", "quick"])
def test_every_preset_loads(preset):
    assert load_experiment("ae", preset).model.latent_dim == 10


def test_overrides_are_typed():
    exp = load_experiment("ae", "quick", ["model.latent_dim=2", "train.lr=2e-2", "data.data_dir=/x"])
    assert exp.model.latent_dim == 2 and exp.train.lr == 0.02 and exp.data.data_dir == "/x"
    assert isinstance(load_experiment("ae", "quick", ["train.lr=1"]).train.lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latnt_dim=3", "unknown key 'model.latnt_dim'"),
        ("modl.latent_dim=3", "unknown key 'modl'"),
        ("train.lr=fast", "'fast' is not a valid float"),
        ("model.latent_dim=2.5", "not a valid int"),
        ("train.batch_size=0", r"train.batch_size must be in \[1, 65536\]"),
        ("train.schedule=linear", "train.schedule must be"),
        ("train.lr", "expected section.key=value"),
        ("model=3", "model is a table"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_experiment("ae", "quick", [override])
    assert_one_line_error(e)


def test_bad_preset_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ae.train]\nlr = 'x'\n")
    with pytest.raises(ConfigError, match="ae.train.lr|train.lr"):
        load_experiment("ae", str(bad))
    bad.write_text("[aee.train]\nlr = 1.0\n")
    with pytest.raises(ConfigError, match="unknown table"):
        load_experiment("ae", str(bad))
    bad.write_text("[ae.train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_experiment("ae", str(bad))
    with pytest.raises(ConfigError, match="unknown preset"):
        load_experiment("ae", "fastest")


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()  # e.g. `mnistlab run --preset quick --out quick`, run twice
    assert preset_path("quick") == presets_dir() / "quick.toml"
    assert load_experiment("ae", "quick").model.latent_dim == 10
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="preset mine is a folder"):
        preset_path("mine")


def test_run_config_round_trips_and_is_a_preset(tmp_path):
    exp = load_experiment("ae", "seed", ["model.latent_dim=2"])
    save_experiment(tmp_path / "config.toml", exp, "ae")
    task, again = load_run_config(tmp_path)
    assert task == "ae" and again == exp
    assert load_experiment("ae", str(tmp_path / "config.toml")) == exp
