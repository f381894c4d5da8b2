"""Every config field has a type and a range, checked when the frozen config is built: any value either
builds a config or raises a one-line ConfigError, never another exception (or a segfault, or a
51 GB allocation) later. Hypothesis draws values of each field's type and values at and just outside
each range; explicit tests replay the failures seen from the command line."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistlab import cli
from mnistlab.core.errors import SEED_MAX, ConfigError
from mnistlab.core.fsio import read_toml
from mnistlab.data.datasets import DataConfig
from mnistlab.data.noise import NoiseConfig
from mnistlab.latent import maps as latent
from mnistlab.latent.sample import SampleRequest
from mnistlab.metrics.collapse import CollapseConfig
from mnistlab.models.autoencoder import AEConfig
from mnistlab.models.classifier import ClassifierConfig
from mnistlab.models.gan import GANConfig
from mnistlab.probe.config import ProbeOptions
from mnistlab.study.plan import LATENT_MAPS, RunPlan
from mnistlab.training.gan import GANTrainConfig
from mnistlab.training.loop import TrainConfig
from tests.conftest import assert_one_line_error

CONFIGS = [
    TrainConfig,
    AEConfig,
    GANConfig,
    ClassifierConfig,
    GANTrainConfig,
    CollapseConfig,
    NoiseConfig,
    DataConfig,
    ProbeOptions,
    RunPlan,
    SampleRequest,
]


def default(cls: type):
    return SampleRequest("gmm", 10) if cls is SampleRequest else cls()


def build(cls: type, **changes):
    return dataclasses.replace(default(cls), **changes)


def fields_of(cls: type) -> dict[str, typing.Any]:
    """name -> type of the fields that hold values (nested configs are tested as their own class)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name] for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])
    }


# Edges of the ranges in the code and the numbers next to them, so that draws land just outside.
CORES = os.cpu_count() or 1
EDGES = [
    0,
    1,
    2,
    8,
    9,
    10,
    32,
    100,
    256,
    512,
    1000,
    4096,
    65_536,
    100_000,
    10**6,
    10**7,
    10**9,
    2**31 - 1,
    SEED_MAX,
    4 * CORES,
    10**8,
    2**63,
    10**400,
]
EDGE_INTS = sorted({s * (e + d) for e in EDGES for d in (-1, 0, 1) for s in (1, -1)})
EDGE_FLOATS = [0.0, -0.0, 5e-324, 0.5, 1.0, 10.0, 28.0, 100.0, 1e4, 1e6, 1e308, math.inf, -math.inf, math.nan]
EDGE_FLOATS += [math.nextafter(x, d) for x in EDGE_FLOATS[:10] for d in (-math.inf, math.inf)]
WRONG = st.sampled_from(["3", "", None, 1.5, True, [1], (), {"a": 1}, b"\xff"])

INTS = st.one_of(st.integers(), st.sampled_from(EDGE_INTS))
FLOATS = st.one_of(st.floats(), st.sampled_from(EDGE_FLOATS), st.integers(-(10**30), 10**30))
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "adam",
            "cosine",
            "cpu",
            "bf16",
            "bce_logits",
            "pca",
            "umap",
            "all",
            "10",
            "²",
            "val_loss",
            "probe_acc",
            "mnist",
            "a\0b",
            "train.lr=1,2",
        ]
    ),
)
SCALARS = {int: INTS, float: FLOATS, bool: st.booleans(), str: TEXT}


def values_for(typ: typing.Any) -> st.SearchStrategy:
    """Values of the field's type (nine in ten) or of another type."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is tuple:
        right = st.lists(SCALARS[args[0]], max_size=5).map(tuple)
    elif type(None) in args:  # int | None
        right = st.one_of(st.none(), SCALARS[next(a for a in args if a is not type(None))])
    else:
        right = SCALARS[typ]
    return st.one_of(right, right, right, right, right, right, right, right, right, WRONG)


@st.composite
def configs_and_changes(draw):
    cls = draw(st.sampled_from(CONFIGS))
    fields = fields_of(cls)
    names = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=4, unique=True))
    return cls, {name: draw(values_for(fields[name])) for name in names}


@settings(max_examples=600, deadline=None)
@given(configs_and_changes())
def test_any_value_builds_or_is_a_one_line_config_error(case):
    cls, changes = case
    try:
        build(cls, **changes)
    except ConfigError as e:
        assert_one_line_error(e)


def _numeric_fields() -> list[tuple[type, str]]:
    return [(cls, name) for cls in CONFIGS for name, typ in fields_of(cls).items() if typ in (int, float)]


RANGE = re.compile(r"must be in ([\[(])(\S+), (\S+?)([\])])")


@pytest.mark.parametrize(("cls", "name"), _numeric_fields(), ids=lambda x: getattr(x, "__name__", x))
def test_each_range_is_stated_and_enforced_just_outside_its_ends(cls, name):
    """The message states the range; the values just outside it fail, the ends inside it pass."""
    with pytest.raises(ConfigError) as far:
        build(cls, **{name: -(10**30)})  # below every range
    assert_one_line_error(far.value)
    match = RANGE.search(str(far.value))
    assert match, f"{cls.__name__}.{name}: no range in {str(far.value)!r}"
    is_int = fields_of(cls)[name] is int
    low, high = (int(x) if is_int else float(x) for x in match.group(2, 3))
    low_open, high_open = match.group(1) == "(", match.group(4) == ")"
    if is_int:
        outside, inside = [low - 1, high + 1], [low, high]
    else:
        below, above = math.nextafter(low, -math.inf), math.nextafter(high, math.inf)
        outside = [low if low_open else below, high if high_open else above, math.nan, math.inf]
        inside = [
            math.nextafter(low, math.inf) if low_open else low,
            math.nextafter(high, -math.inf) if high_open else high,
        ]
    for value in outside:
        with pytest.raises(ConfigError) as e:
            build(cls, **{name: value})
        assert_one_line_error(e.value)
    for value in inside:
        try:
            build(cls, **{name: value})
        except ConfigError as e:  # another field's rule may object (d_loss_floor < d_loss_ceiling)
            assert not re.search(rf"\b{re.escape(name)} must be in", str(e)), f"{value} is in range: {e}"


def test_the_defaults_build():
    for cls in CONFIGS:
        default(cls)


def test_run_plan_knows_the_latent_maps():
    assert set(LATENT_MAPS) == set(latent.MAPS)


# ------------------------------------------------------------------------- the failures seen


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"threads": 100_000}, f"train.threads must be in [0, {4 * CORES}] (at most 4 x this machine's"),
        ({"lr": 1e308}, "train.lr must be in (0, 10]"),
        ({"lr": math.nan}, "train.lr must be finite"),
        ({"seed": -1}, "train.seed must be in [0, 4294967295]"),
        ({"seed": 2**32}, "train.seed must be in [0, 4294967295]"),
        ({"epochs": 0}, "train.epochs must be in [1,"),
        ({"batch_size": 65_537}, "train.batch_size must be in [1, 65536] (a batch's activations"),
        ({"eval_batch_size": 10**9}, "train.eval_batch_size must be in [1, 65536]"),
    ],
)
def test_train_config_failures_seen(changes, expected):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**changes)
    assert str(e.value).startswith(expected), str(e.value)


def test_model_sizes_are_bounded_with_the_reason():
    with pytest.raises(ConfigError, match=r"model.latent_dim must be in \[1, 4096\] \(the weights grow"):
        AEConfig(latent_dim=100_000_000)
    with pytest.raises(ConfigError, match=r"model.hidden must be in \[1, 4096\]"):
        AEConfig(hidden=10**6)
    with pytest.raises(ConfigError, match=r"model.noise_dim must be in \[1, 4096\]"):
        GANConfig(noise_dim=10**8)
    with pytest.raises(ConfigError, match=r"gan.collapse.max_samples must be in \[2, 10000\]"):
        CollapseConfig(max_samples=10**6)
    assert AEConfig(latent_dim=4096, hidden=4096).latent_dim == 4096


def test_sample_request_seed():
    with pytest.raises(ConfigError, match=r"--seed must be in \[0, 4294967295\]"):
        SampleRequest("gmm", 10, seed=-1)
    assert SampleRequest("gmm", 10, seed=SEED_MAX).seed == SEED_MAX


def test_read_toml_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("# réglages\n[ae.train]\nlr = 1e-3\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        read_toml(path)
    assert "UTF-8" in assert_one_line_error(e, str(path))
    path.write_bytes("# réglages\n[ae.train]\nlr = 1e-3\n".encode())
    assert read_toml(path) == {"ae": {"train": {"lr": 1e-3}}}


# From the command line: exit code 2 and one line on stderr, before anything is trained (each of these
# commands would otherwise start training, segfault or allocate; none of them gets that far).
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "ae", "--set", "train.threads=100000"], "train.threads must be in [0,"),
        (["train", "ae", "--set", "model.latent_dim=100000000"], "model.latent_dim must be in [1, 4096]"),
        (["train", "ae", "--set", "train.lr=1e308"], "train.lr must be in (0, 10]"),
        (["train", "gan", "--set", "train.seed=-1"], "train.seed must be in [0, 4294967295]"),
        (["train", "classifier", "--set", "train.epochs=0"], "train.epochs must be in [1,"),
        (["train", "dae", "--set", "noise.sigma=inf"], "noise.sigma must be finite"),
    ],
)
def test_cli_rejects_the_failures_seen(tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    assert cli.main([*args, "--preset", "quick", "--out", str(out), "--no-progress"]) == 2
    assert_one_line_error(capsys, expected)
    assert not out.exists()  # refused before the run folder was made


def test_cli_sample_rejects_a_negative_seed_before_loading_the_run(tmp_path, capsys):
    args = [
        "sample",
        str(tmp_path / "no-such-run"),
        "--n",
        "4",
        "--out",
        str(tmp_path / "s.npy"),
        "--seed",
        "-1",
    ]
    assert cli.main(args) == 2
    assert_one_line_error(capsys, "--seed must be in [0, 4294967295]")


def test_cli_names_a_preset_that_is_not_utf8(tmp_path, capsys):
    preset = tmp_path / "latin1.toml"
    preset.write_bytes(b"# r\xe9glages\n")
    assert cli.main(["train", "ae", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    assert "UTF-8" in assert_one_line_error(capsys, str(preset))
