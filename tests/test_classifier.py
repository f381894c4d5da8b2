"""The reference classifier's model, augmentation and training through the one loop, on tiny slices."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.models import build_model
from mnistlab.models.classifier import ClassifierConfig, DigitCNN
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import load_experiment
from mnistlab.training.classifier import ClassifierTask, load_classifier, random_shift, train_classifier
from mnistlab.training.reference import export_reference
from tests.conftest import assert_one_line_error

TINY = ["data.train_limit=300", "data.test_limit=100", "train.epochs=1", "train.batch_size=64"]


@pytest.mark.parametrize("channels", [(8,), (8, 16, 16), (4, 4, 4, 4)])
def test_shapes(channels):
    model = DigitCNN(ClassifierConfig(channels=channels, feature_dim=12)).eval()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.logits.shape == (5, 10)
    assert out.features.shape == (5, 12)
    assert (out.features >= 0).all()  # after the ReLU
    torch.testing.assert_close(model.features(torch.zeros(2, 1, 28, 28)).shape, torch.Size([2, 12]))


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="channels"):
        ClassifierConfig(channels=())
    with pytest.raises(ConfigError, match="feature_dim"):
        ClassifierConfig(feature_dim=0)
    with pytest.raises(ConfigError, match="max_shift"):
        load_experiment("classifier", "quick", ["augment.max_shift=20"])


def test_random_shift_moves_each_image_within_bounds():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # one bright pixel in the middle
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape
    assert torch.equal(y.sum((1, 2, 3)), torch.ones(64))  # the pixel never leaves the image
    rows, cols = y[:, 0].nonzero()[:, 1], y[:, 0].nonzero()[:, 2]
    assert rows.sub(14).abs().max() <= 2 and cols.sub(14).abs().max() <= 2
    assert len({(r.item(), c.item()) for r, c in zip(rows, cols)}) > 10  # shifts differ per image
    assert random_shift(x, 0) is x


def test_train_step_changes_weights_and_reports_accuracy():
    exp = load_experiment("classifier", "quick", TINY)
    model = build_model("digit_cnn", exp.model)
    from mnistlab.data.datasets import Split

    val = Split(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64))
    task = ClassifierTask(model, exp.train, exp.augment, val, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    out = task.train_step(images, torch.randint(0, 10, (16,)))
    assert set(out) == {"loss", "accuracy"} and 0 <= out["accuracy"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert set(task.evaluate()) == {"loss", "accuracy"}


def test_training_is_seeded_and_reproducible(tmp_path):
    exp = load_experiment("classifier", "quick", TINY)
    a = train_classifier(exp, tmp_path / "a", progress=False)
    b = train_classifier(exp, tmp_path / "b", progress=False)
    assert a["test"] == b["test"] and 0 <= a["test"]["accuracy"] <= 1
    # The checkpoint's SHA-256 is not compared: safetensors writes its metadata keys in a random
    # order. Every tensor (weights, optimizer, RNG) must match bit for bit, and the JSON state too.
    ta, sa = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.safetensors")
    tb, sb = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert sa == sb and ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].numpy().tobytes() == tb[key].numpy().tobytes(), key
    # The exported reference file has one metadata key, so its bytes (and SHA-256) are reproducible.
    assert export_reference(tmp_path / "a", tmp_path / "a.st") == export_reference(
        tmp_path / "b", tmp_path / "b.st"
    )
    _, model = load_classifier(tmp_path / "a")
    assert not model.training
    assert (tmp_path / "a" / "figures" / "accuracy.png").is_file()


def test_load_classifier_refuses_an_autoencoder_run(tmp_path):
    (tmp_path / "config.toml").write_text('task = "ae"\n')
    with pytest.raises(ConfigError, match="not a classifier"):
        load_classifier(tmp_path)


def test_cli_train_classifier(tmp_path, capsys):
    args = ["train", "classifier", "--preset", "quick", "--out", str(tmp_path / "run"), "--no-progress"]
    for item in TINY:
        args += ["--set", item]
    assert cli.main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["test"]) == {"loss", "accuracy"}
    assert cli.main([*args[:-2], "--set", "train.epochs=2"]) == 2  # the folder already holds a run
    assert_one_line_error(capsys, "already holds a run")
