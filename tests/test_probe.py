"""Encoder probes: labelled subsets, the probe's pieces, a whole `mnistlab probe` on a tiny run (the
frozen probe leaves the encoder alone, fine-tuning changes it), and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab import cli, tasks
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataConfig, Split
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig
from mnistlab.models.encoder_classifier import LinearHead
from mnistlab.probe.fit import (
    ProbeTask,
    balanced_subset,
    features_to,
    fold_standardization,
    parse_labels_per_class,
    random_shift,
    repeat_to,
    standardize,
)
from mnistlab.probe.run import run_probe
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import file_sha256, module_state, read_checkpoint
from mnistlab.runs.folder import checkpoint_path
from mnistlab.tasks import load_experiment
from mnistlab.training.autoencoder import AEExperiment, train_autoencoder
from mnistlab.training.loop import TrainConfig
from tests.conftest import assert_one_line_error
from tests.tiny_idx import write_blocks

CPU = torch.device("cpu")
# Tiny probe settings on top of the quick preset: a few seconds in all.
TINY = [
    "linear.epochs=4",
    "linear.batch_size=32",
    "finetune.epochs=2",
    "finetune.batch_size=32",
    "options.min_epoch_images=0",
    "linear.eval_batch_size=64",
    "finetune.eval_batch_size=64",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A two-epoch autoencoder run on 200 synthetic images (15 training images per class)."""
    root = tmp_path_factory.mktemp("probe")
    exp = AEExperiment(
        data=DataConfig(data_dir=str(write_blocks(root / "idx")), val_fraction=0.25),
        model=AEConfig(latent_dim=4),
        train=TrainConfig(epochs=2, batch_size=32, lr=3e-3, device="cpu", eval_batch_size=64),
    )
    train_autoencoder(exp, root / "ae", progress=False)
    return root / "ae"


def test_labels_per_class_parsing():
    assert parse_labels_per_class("10, 100,all") == (10, 100, None)
    for bad in ("0", "ten", "10,,all", "-5"):
        with pytest.raises(ConfigError, match="--labels-per-class") as e:
            parse_labels_per_class(bad)
        assert_one_line_error(e)


def test_balanced_subsets_are_seeded_balanced_and_nested():
    labels = torch.arange(300) % 10
    small, large = balanced_subset(labels, 3, seed=1), balanced_subset(labels, 10, seed=1)
    assert torch.bincount(labels[small], minlength=10).tolist() == [3] * 10
    assert torch.bincount(labels[large], minlength=10).tolist() == [10] * 10
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, balanced_subset(labels, 3, seed=1))
    assert not torch.equal(small, balanced_subset(labels, 3, seed=2))
    with pytest.raises(ConfigError, match="at most 30 per class"):
        balanced_subset(labels, 31, seed=1)


def test_repeat_to_fills_an_epoch():
    split = Split(torch.zeros(7, 3), torch.arange(7))
    assert len(repeat_to(split, 20)) == 21 and len(repeat_to(split, 5)) == 7
    assert torch.bincount(repeat_to(split, 20).labels).tolist() == [3] * 7


def test_random_shift_moves_images_without_changing_them():
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # a block well inside the frame
    y = random_shift(x, 2)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(y, x)
    assert torch.equal(random_shift(x, 0), x)


def test_folded_standardization_equals_the_probe_on_standardized_codes():
    torch.manual_seed(0)
    z = torch.randn(50, 4) * 10 + 3
    zs, _ = standardize(z, z)
    head = LinearHead(4)
    folded = fold_standardization(head, z.mean(0, keepdim=True), z.std(0, keepdim=True))
    assert torch.allclose(folded(z), head(zs), atol=1e-4)


def test_probe_task_step_trains_only_what_it_is_given():
    head = LinearHead(4)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    val = Split(torch.randn(20, 4), torch.arange(20) % 10)
    task = ProbeTask(head, opt, val, CPU, features_to)
    before = head.linear.weight.clone()
    out = task.train_step(torch.randn(8, 4), torch.arange(8))
    assert set(out) == {"loss", "acc"} and 0 <= out["acc"] <= 1
    assert not torch.equal(before, head.linear.weight)
    assert set(task.evaluate()) == {"loss", "acc"}


def test_presets_hold_probe_settings():
    for preset in ("seed", "default", "quick"):
        exp = load_experiment("probe", preset)
        assert exp.linear.epochs > 0 and exp.finetune.epochs > 0
    assert not load_experiment("probe", "seed").options.standardize  # the report's raw codes
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment("probe", "quick", ["options.nope=1"])


def test_probe_run_frozen_then_finetuned_with_label_efficiency(ae_run, tmp_path):
    sha = file_sha256(checkpoint_path(ae_run))
    ae = tasks.load_run(ae_run).model
    encoder_before = {k: v.clone() for k, v in ae.encoder.state_dict().items()}
    out = tmp_path / "probe"
    summary = run_probe(
        ae_run, "quick", TINY, out=out, finetune=True, labels_per_class=(2, None), progress=False
    )

    # The probed run is untouched: same checkpoint bytes, same encoder.
    assert file_sha256(checkpoint_path(ae_run)) == sha
    ae_after = tasks.load_run(ae_run).model
    for k, v in ae_after.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k])
    # The frozen probe's checkpoint holds only the head; the fine-tuned one holds a changed encoder.
    linear_tensors, _ = read_checkpoint(out / "linear" / "checkpoints" / "last.safetensors")
    assert set(module_state(linear_tensors, "model")) == {"linear.weight", "linear.bias"}
    ft_tensors, _ = read_checkpoint(out / "finetune" / "checkpoints" / "last.safetensors")
    ft_state = module_state(ft_tensors, "model")
    changed = [k for k, v in encoder_before.items() if not torch.equal(ft_state[f"encoder.{k}"], v)]
    assert changed and len(changed) == len(encoder_before)

    assert summary["run_task"] == "ae" and summary["latent_dim"] == 4
    assert 0 <= summary["linear_probe"]["test_acc"] <= 1 and summary["finetune"]["epochs"] == 2
    methods = [(b["method"], b["features"]) for b in summary["baselines"]]
    assert methods == [
        ("linear probe", "encoder code (4-d)"),
        ("kNN (k=5)", "encoder code (4-d)"),
        ("logistic regression", "encoder code (4-d)"),
        ("linear probe", "pixels (784-d)"),
        ("linear probe", "PCA (4-d)"),
    ]
    rows = summary["label_efficiency"]
    assert [(r["labels_per_class"], r["n_labelled"]) for r in rows] == [("2", 20), ("all", 150)]
    assert rows[1]["finetune"] == summary["finetune"]["test_acc"]  # reused, not trained twice
    assert set(rows[0]) >= {"probe", "finetune", "scratch"}
    # The fine-tuned network's curve is drawn: validated every epoch; the label-efficiency networks
    # report their last epoch only, so they are validated after it alone.
    assert all("val_acc" in r for r in rundir.read_history(out / "finetune"))
    for net in ("labels/2/finetune", "labels/2/scratch", "labels/all/scratch"):
        assert ["val_acc" in r for r in rundir.read_history(out / net)] == [False, True], net
    assert rows[0]["scratch"] > 0 and summary["finetune"]["val_acc"] is not None
    for name in (
        "linear_loss",
        "linear_accuracy",
        "linear_confusion",
        "finetune_confusion",
        "label_efficiency",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["label_efficiency"] == rows
    assert (out / "command.txt").read_text().startswith("python: ")  # not the CLI: says so
    assert load_experiment("probe", str(out / "config.toml")).data.data_dir.endswith("idx")


def test_label_efficiency_averages_several_labelled_subsets(ae_run, tmp_path):
    out = tmp_path / "probe"
    summary = run_probe(
        ae_run,
        "quick",
        [*TINY, "options.label_subsets=2", "options.label_seed=3"],
        out=out,
        labels_per_class=(2, None),
        progress=False,
    )
    few, every = summary["label_efficiency"]
    assert [s["label_seed"] for s in few["subsets"]] == [3, 4]
    assert "subsets" not in every  # every label is one subset, whatever the seed
    for key in ("probe", "finetune", "scratch", "finetune_minus_scratch"):
        mean = sum(s[key] for s in few["subsets"]) / 2
        assert few[key] == pytest.approx(mean, abs=1e-5)
    for seed in (3, 4):  # each subset's classifiers keep their own folders
        for name in ("probe", "finetune", "scratch"):
            assert (out / "labels" / "2" / f"seed{seed}" / name / "metrics.jsonl").is_file()
    assert (out / "figures" / "label_efficiency.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="label_subsets"):
        run_probe(ae_run, "quick", [*TINY, "options.label_subsets=0"], out=tmp_path / "bad", progress=False)


def test_probe_cli_and_its_one_line_errors(ae_run, tmp_path, capsys):
    out = tmp_path / "p"
    args = [
        "-q",
        "probe",
        str(ae_run),
        "--preset",
        "quick",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    args += [a for s in TINY for a in ("--set", s)]
    assert cli.main(args) == 0
    assert "linear_probe" in json.loads(capsys.readouterr().out)
    assert (out / "command.txt").read_text().startswith(f"mnistlab -q probe {ae_run} --preset quick")

    no_ckpt = tmp_path / "untrained"
    no_ckpt.mkdir()
    (no_ckpt / "config.toml").write_text((ae_run / "config.toml").read_text())
    bad = {
        "exists": args,  # the output folder already holds a probe and --overwrite is missing
        "too many labels": args + ["--overwrite", "--labels-per-class", "10,16"],  # 15 per class exist
        "not a run": ["-q", "probe", str(tmp_path / "nowhere")],
        "no encoder": ["-q", "probe", str(out)],  # a probe folder is a run folder without an encoder
        "no checkpoint": ["-q", "probe", str(no_ckpt), "--out", str(tmp_path / "q")],
        "bad count": ["-q", "probe", str(ae_run), "--labels-per-class", "ten"],
    }
    for why, argv in bad.items():
        assert cli.main(argv) == 2, why
        assert assert_one_line_error(capsys).startswith("mnistlab: error:"), why
    assert cli.main(args + ["--overwrite"]) == 0


def test_scratch_network_is_the_autoencoders_encoder_plus_a_head():
    model = build_model("encoder_classifier", AEConfig(latent_dim=6))
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model.head.linear.in_features == 6


def test_probe_reads_a_denoising_autoencoder_run(ae_run, tmp_path):
    from mnistlab.data.noise import NoiseConfig
    from mnistlab.tasks import load_run_config
    from mnistlab.training.denoise import DAEExperiment, train_dae

    _, ae_exp = load_run_config(ae_run)
    exp = DAEExperiment(
        data=ae_exp.data, model=ae_exp.model, train=ae_exp.train, noise=NoiseConfig(sigma=0.5)
    )
    train_dae(exp, tmp_path / "dae", progress=False)
    summary = run_probe(tmp_path / "dae", "quick", TINY, progress=False)
    assert summary["run_task"] == "dae" and summary["out"] == str(tmp_path / "dae" / "probe")
    assert (tmp_path / "dae" / "probe" / "figures" / "linear_confusion.png").exists()


def test_on_the_cpu_a_probe_network_trains_channels_last_and_steps_as_in_nchw():
    """channels_last (1.15x per step alone) is a speed choice only: the step's gradients are the NCHW
    step's to float rounding."""
    from mnistlab.data.datasets import to_float
    from mnistlab.models.encoder_classifier import encoder_classifier
    from mnistlab.probe.fit import ProbeTask
    from mnistlab.training.loop import make_optimizer

    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8), torch.arange(32) % 10
    nets = [encoder_classifier(AEConfig(latent_dim=4)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    cfg = TrainConfig(lr=3e-3, optimizer="adamw")
    fast = ProbeTask(
        nets[0],
        make_optimizer(nets[0].parameters(), cfg),
        Split(images, labels),
        torch.device("cpu"),
        to_float,
    )
    assert nets[0].encoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nets[1].encoder.net[0].weight.is_contiguous()
    fast.train_step(images, labels)  # the gradients stay on the weights after the step
    torch.nn.functional.cross_entropy(nets[1](to_float(images)), labels).backward()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name
