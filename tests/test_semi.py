"""The semi-supervised task: network and augmentation shapes, the labelled subset (deterministic, only
its labels reach training), a step, exact resume, save/load, one-line errors, the CLI, on tiny data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mnistlab import cli, tasks
from mnistlab.core.config import load_table
from mnistlab.core.errors import ConfigError
from mnistlab.data import augment
from mnistlab.data.augment import AugmentConfig
from mnistlab.data.datasets import DataConfig, Split, load
from mnistlab.latent.run import LatentConfig, run_latent
from mnistlab.models.semi import SemiNet, SemiNetConfig
from mnistlab.plots.content import RunFolder
from mnistlab.probe.config import ProbeExperiment
from mnistlab.probe.labels import run_code_labels
from mnistlab.report import key_results
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import load_experiment
from mnistlab.tasks import semi as semi_task
from mnistlab.training.loop import fit
from mnistlab.training.run_folder import seed_everything
from mnistlab.training.semi import (
    SemiConfig,
    SemiTask,
    draw_labelled,
    indices_sha256,
    recalibrate_bn,
    train_semi,
)
from tests.conftest import SEMI_TINY, assert_one_line_error, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
TINY = SEMI_TINY  # 400 MNIST training images (320 train / 80 val), 100 test, 2 epochs of 3 steps


def tiny_exp(*extra: str):
    return load_experiment("semi", "quick", [*TINY, *extra])


@pytest.mark.parametrize("hidden, code_dim", [(0, 32), (16, 16)])
def test_network_shapes_and_encoder_is_the_penultimate_layer(hidden, code_dim):
    net = SemiNet(SemiNetConfig(width=8, hidden=hidden)).eval()
    x = torch.rand(5, 1, 28, 28)
    assert net(x).shape == (5, 10)
    code = net.encoder(x)
    assert code.shape == (5, code_dim) and net.code_dim == code_dim
    torch.testing.assert_close(net.head(code), net(x))


def test_a_run_made_before_the_hidden_layer_loads_as_it_was_trained():
    # Its config.toml has no model.hidden: the dataclass default (global average pooling) applies,
    # while the presets ask for the hidden layer.
    assert SemiNetConfig().hidden == 0
    assert load_experiment("semi", "default").model.hidden > 0


def test_augmentations_keep_shape_range_and_are_seeded():
    x = torch.rand(16, 1, 28, 28)
    cfg = AugmentConfig()
    for fn in (augment.weak, augment.strong):
        a = fn(x, cfg, torch.Generator().manual_seed(1))
        b = fn(x, cfg, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b)
        assert a.min() >= 0 and a.max() <= 1 + 1e-6
        assert not torch.equal(a, fn(x, cfg, torch.Generator().manual_seed(2)))
        assert fn(x[:0], cfg).shape == (0, 1, 28, 28)  # an empty batch (no pseudo-label accepted)
    still = AugmentConfig(weak_shift=0)
    torch.testing.assert_close(augment.weak(x, still), x, atol=1e-5, rtol=0)


def test_labelled_subset_is_balanced_deterministic_and_hashed():
    labels = torch.arange(1000) % 10
    cfg = SemiConfig(labels_per_class=7, label_seed=3)
    idx = draw_labelled(labels, cfg)
    assert len(idx) == 70 and (np.diff(idx) > 0).all()
    assert np.bincount(labels.numpy()[idx], minlength=10).tolist() == [7] * 10
    assert np.array_equal(idx, draw_labelled(labels, cfg))
    other = draw_labelled(labels, dataclasses.replace(cfg, label_seed=4))
    assert not np.array_equal(idx, other)
    assert indices_sha256(idx) == indices_sha256(idx[::-1].copy()) != indices_sha256(other)
    assert len(draw_labelled(labels, SemiConfig(all_labels=True))) == 1000


@pytest.mark.parametrize(
    "item, match",
    [
        ("semi.labels_per_class=0", "semi.labels_per_class"),
        ("semi.labels_per_class=-5", "semi.labels_per_class"),
        ("semi.label_seed=-1", "semi.label_seed"),
        ("semi.label_seed=4294967296", "semi.label_seed"),
        ("semi.threshold=1.5", "semi.threshold"),
        ("semi.batch_labelled=5", "semi.batch_labelled"),
        ("augment.rotation=400", "augment.rotation"),
        ("model.width=0", "model.width"),
        ("semi.prior_epochs=-1", "semi.prior_epochs"),
        ("semi.prior_floor=1", "semi.prior_floor"),
        ("semi.weak_tail=1.5", "semi.weak_tail"),
    ],
)
def test_bad_settings_are_one_line_errors(item, match):
    with pytest.raises(ConfigError) as e:
        load_experiment("semi", "default", [item])
    assert_one_line_error(e, match)


def test_too_many_labels_or_a_missing_class_fail_before_training(tmp_path):
    exp = tiny_exp("semi.labels_per_class=1000")
    with pytest.raises(ConfigError) as e:
        train_semi(exp, tmp_path / "run", progress=False)
    assert_one_line_error(e, "more than class")
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    # A dataset without the digit 9: the synthetic blobs with every 9 relabelled 8.
    folder = write_dataset(tmp_path / "idx", n_train=200)
    data = load(DataConfig(data_dir=str(folder)))
    labels = data.train.labels.clone()
    labels[labels == 9] = 8
    with pytest.raises(ConfigError) as e:
        draw_labelled(labels, SemiConfig(labels_per_class=1))
    assert_one_line_error(e, "no image of class 9")


def _task(exp, train: Split, labelled, val: Split) -> SemiTask:
    seed_everything(exp.train.seed)
    return SemiTask(exp, train, labelled, val, CPU)


@pytest.mark.parametrize("prior", ["0", "1"])  # label propagation's prior reads the subset's labels only
def test_step_changes_weights_and_reads_no_label_beyond_the_subset(prior):
    # Every pseudo-label accepted at the start: both losses.
    exp = tiny_exp("semi.threshold_floor=0", f"semi.prior_epochs={prior}")
    data = load(exp.data)
    labelled = draw_labelled(data.train.labels, exp.semi)
    hidden = torch.ones(len(data.train), dtype=torch.bool)
    hidden[torch.as_tensor(labelled)] = False
    # The same images with every label outside the subset changed, and other validation labels.
    shuffled = data.train.labels.clone()
    shuffled[hidden] = (shuffled[hidden] + 1) % 10
    runs = []
    for train_labels, val_labels in (
        (data.train.labels, data.val.labels),
        (shuffled, data.val.labels.flip(0)),
    ):
        task = _task(
            exp, Split(data.train.images, train_labels), labelled, Split(data.val.images, val_labels)
        )
        assert len(task.labelled_labels) == len(labelled) == 30  # the only labels it holds
        before = [p.detach().clone() for p in task.model.parameters()]
        index = torch.arange(128)
        for _ in range(3):
            out = task.train_step(data.train.images[index], index)
        assert {"loss", "loss_labelled", "loss_unlabelled", "mask"} <= set(out) and out["mask"] > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters()))
        runs.append(task)
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b)
    assert int(runs[0].state.steps) == 3 and (runs[0].state.confident_class >= -1).all()


def test_the_prior_gives_the_first_pseudo_labels_and_fades_out():
    exp = tiny_exp("semi.prior_epochs=1", "semi.dist_align=false")
    data = load(exp.data)
    labelled = draw_labelled(data.train.labels, exp.semi)
    task = _task(exp, data.train, labelled, data.val)
    assert task.prior.shape == (len(data.train), 10) and task.prior_steps == 3  # 320 images, batches of 128
    # Label propagation from 30 labels beats chance by far on 320 MNIST images.
    assert (task.prior.argmax(1) == data.train.labels.long()).float().mean() > 0.5
    index = torch.arange(len(data.train))
    weak = task._views(data.train.images, strong=False)
    classes, _ = task._pseudo_labels(weak, index)
    assert torch.equal(classes, task.prior.argmax(1))  # step 0: the prior alone
    task.state.steps.fill_(3)  # faded out: the teacher alone
    classes, _ = task._pseudo_labels(weak, index)
    task.teacher.train()
    with torch.no_grad():
        assert torch.equal(classes, task.teacher(weak).argmax(1))


def test_the_prior_floor_keeps_the_prior_in_the_pseudo_labels_to_the_end():
    exp = tiny_exp("semi.prior_epochs=1", "semi.prior_floor=0.25", "semi.dist_align=false")
    data = load(exp.data)
    task = _task(exp, data.train, draw_labelled(data.train.labels, exp.semi), data.val)
    weights = []
    for step in (0, 1, 3, 30):  # prior_steps = 3: from 1 down to the floor, then the floor
        task.state.steps.fill_(step)
        weights.append(task._prior_weight())
    assert weights == pytest.approx([1.0, 0.75, 0.25, 0.25])
    index = torch.arange(len(data.train))
    weak = task._views(data.train.images, strong=False)
    classes, _ = task._pseudo_labels(weak, index)
    task.teacher.train()
    with torch.no_grad():
        teacher = task.teacher(weak).float().softmax(1)
    mixed = (0.75 * teacher.clamp_min(1e-8).log() + 0.25 * task.prior.clamp_min(1e-8).log()).argmax(1)
    assert torch.equal(classes, mixed) and not torch.equal(classes, teacher.argmax(1))
    # A floor without a fade: the prior is built and weighs the floor from the first step.
    alone = _task(
        tiny_exp("semi.prior_epochs=0", "semi.prior_floor=0.5"),
        data.train,
        draw_labelled(data.train.labels, exp.semi),
        data.val,
    )
    assert alone.prior is not None and alone._prior_weight() == 0.5
    assert (
        _task(
            tiny_exp("semi.prior_epochs=0"), data.train, draw_labelled(data.train.labels, exp.semi), data.val
        ).prior
        is None
    )


def test_labelled_images_in_the_unlabelled_stream_learn_their_own_label():
    # No pseudo-label can pass a threshold of 1 (softmax never reaches it exactly at the start), so
    # only the labelled subset's images of the unlabelled batch reach the unlabelled loss.
    exp = tiny_exp("semi.threshold=1", "semi.flex=false", "semi.dist_align=false")
    data = load(exp.data)
    labelled = draw_labelled(data.train.labels, exp.semi)
    index = torch.arange(len(data.train))
    masks = {}
    for known in (True, False):
        e = dataclasses.replace(exp, semi=dataclasses.replace(exp.semi, known_labels=known))
        task = _task(e, data.train, labelled, data.val)
        masks[known] = task.train_step(data.train.images, index)["mask"]
    assert masks[False] == 0
    assert masks[True] == pytest.approx(len(labelled) / len(data.train))


class CrashAt:
    """Raises KeyboardInterrupt at the n-th train step, as a killed process would stop."""

    def __init__(self, task, n):
        self.task, self.n, self.calls = task, n, 0
        self.modules, self.optimizers = task.modules, task.optimizers

    def train_step(self, images, index):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.task.train_step(images, index)

    def evaluate(self):
        return self.task.evaluate()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # The crash falls inside the prior's fade, and before the weak tail (steps 6-8 of 9): the resumed
    # run must find the tail from the restored step count.
    exp = tiny_exp("train.epochs=3", "semi.prior_epochs=2", "semi.weak_tail=0.4")
    data = load(exp.data)
    labelled = draw_labelled(data.train.labels, exp.semi)
    loop_split = Split(data.train.images, torch.arange(len(data.train)))

    full = _task(exp, data.train, labelled, data.val)
    fit(full, loop_split, exp.train, tmp_path / "full", progress=False)
    crashed = _task(exp, data.train, labelled, data.val)
    with pytest.raises(KeyboardInterrupt):
        fit(CrashAt(crashed, 5), loop_split, exp.train, tmp_path / "resumed", progress=False)  # epoch 2
    resumed = _task(exp, data.train, labelled, data.val)
    fit(resumed, loop_split, exp.train, tmp_path / "resumed", resume=True, progress=False)
    for name in ("model", "teacher", "state"):
        for k, v in full.modules[name].state_dict().items():
            assert torch.equal(v, resumed.modules[name].state_dict()[k]), (name, k)
    assert int(resumed.state.steps) == 9


def test_bn_recalibration_is_seeded_and_leaves_the_teacher_alone():
    net = SemiNet(SemiNetConfig(width=4))
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = recalibrate_bn(net, images, AugmentConfig(), 40, seed=1, device=CPU)
    b = recalibrate_bn(net, images, AugmentConfig(), 40, seed=1, device=CPU)
    assert not a.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(a.encoder[2].running_mean, b.encoder[2].running_mean)
    assert not torch.equal(a.encoder[2].running_mean, net.encoder[2].running_mean)


def test_train_load_and_evaluate_round_trip(tmp_path):
    exp = tiny_exp()
    summary = train_semi(exp, tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and summary["task"] == "semi"
    assert 0 <= summary["test"]["accuracy"] <= 1 and summary["steps"] == 2 * 3
    labelled = draw_labelled(load(exp.data).train.labels, exp.semi)
    assert summary["labels"]["indices_sha256"] == indices_sha256(labelled)
    assert summary["labels"]["n_labelled"] == 30 and summary["seeds"] == {"train": 0, "label": 0, "split": 0}
    run = tasks.load_run(tmp_path / "run")
    assert {"classifier", "encoder"} <= run.roles
    x = load(exp.data).test.images
    prob = run.classify(x)
    assert prob.shape == (100, 10)
    torch.testing.assert_close(prob.sum(1), torch.ones(100))
    acc = float((prob.argmax(1) == load(exp.data).test.labels).float().mean())
    assert abs(acc - summary["test"]["accuracy"]) < 1e-6
    d = run.model.code_dim
    assert d == exp.model.hidden == 128  # the presets' flattened code
    assert run.encode(x[:7]).shape == (7, d) and run.modules("encoder") is run.model.encoder
    assert run.fresh_encoder()(torch.rand(2, 1, 28, 28)).shape == (2, d)
    with pytest.raises(tasks.RoleError):
        run.decode(torch.zeros(1, d))
    again = tasks.get("semi").evaluate(tmp_path / "run", exp, CPU)
    assert again == summary["test"]
    tensors, _ = read_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.safetensors", summary["checkpoint_sha256"]
    )
    assert any(k.startswith("module/final/") for k in tensors)
    # The report section says what the run used: the quick preset's label propagation prior.
    state = {"stages": [{"name": "run", "status": "done"}]}
    sec = semi_task.report_section(RunFolder(tmp_path, state, {"run": frozenset({"classifier"})}), "run")
    assert not sec.missing and "label propagation" in sec.intro and "over 1 epoch)" in sec.intro


def test_latent_maps_a_semi_run_without_a_decoder(tmp_path):
    train_semi(tiny_exp(), tmp_path / "run", progress=False)
    section = run_latent(tmp_path / "run", LatentConfig(maps=("pca",), pairs=2, steps=3))
    figs = tmp_path / "run" / "figures" / "latent"
    assert (figs / "map_pca.png").is_file() and (figs / "map_pca.csv").is_file()
    assert section["decoder"] is False and set(section["cluster_quality"]) == {"raw", "pca"}
    assert "generation" not in section and not list(figs.glob("samples_*.png"))
    recorded = json.loads((tmp_path / "run" / "summary.json").read_text())["latent"]
    assert recorded["decoder"] is False and recorded["cluster_quality"] == section["cluster_quality"]


def test_registry_roles():
    assert "semi" in [s.name for s in tasks.with_role("classifier")]
    assert "semi" in [s.name for s in tasks.with_role("encoder")]


def test_cli_train_semi(tmp_path, capsys):
    args = ["train", "semi", "--preset", "quick", "--out", str(tmp_path / "run"), "--no-progress"]
    for item in TINY:
        args += ["--set", item]
    assert cli.main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "accuracy" in printed["test"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["task"] == "semi"
    bad = [
        "train",
        "semi",
        "--preset",
        "quick",
        "--out",
        str(tmp_path / "bad"),
        "--set",
        "semi.labels_per_class=0",
    ]
    assert cli.main(bad) == 2
    assert_one_line_error(capsys, "semi.labels_per_class")


def test_key_results_row_names_published_numbers_as_such():
    s = {
        "test": {"accuracy": 0.98512},
        "steps": 3024,
        "labels": {"labels_per_class": 10, "n_labelled": 100, "label_seed": 0},
        "published": [{"model": "VAT (Miyato et al. 2018)", "test_accuracy": 0.9864}],
    }
    row = key_results._labelled_subset_row("semi", s)
    assert row[0].startswith("semi: test accuracy from 100 labelled images (10 per class")
    assert row[1] == "98.51%" and "published, not measured here: VAT (Miyato et al. 2018) 98.64%" == row[2]


def test_labels_stage_shows_a_semi_run_as_its_own_point(tmp_path):
    train_semi(tiny_exp(), tmp_path / "semi", progress=False)
    probe = load_table("probe", "quick", ["linear.epochs=2", "linear.device=cpu"], ProbeExperiment)
    out = tmp_path / "label_efficiency"
    s = run_code_labels({"semi": tmp_path / "semi"}, probe, (3, None), out, progress=False)
    assert s["models"]["semi"]["latent_dim"] == 128  # its frozen code (the presets' hidden layer), probed
    point = s["trained_with_labels"]["semi"]
    assert point["labels_per_class"] == "3" and point["n_labelled"] == 30 and point["label_seed"] == 0
    assert (out / "figures" / "label_efficiency_by_model.png").is_file()


@pytest.mark.parametrize(
    "epochs, floor, says",
    [
        (3, 0.3, "(faded over 3 epochs to weight 0.3, kept to the end)"),
        (1, 0, "(faded out over 1 epoch)"),
        (0, 0.5, "(at weight 0.5 throughout)"),
        (0, 0, None),
    ],
)
def test_the_report_says_how_the_prior_guided_the_pseudo_labels(epochs, floor, says):
    text = semi_task._prior_text(epochs, floor)
    assert (says in text and "label propagation" in text) if says else text == ""


@pytest.mark.parametrize("known_weak", [False, True])
def test_known_weak_trains_the_labelled_images_on_their_weak_view(monkeypatch, known_weak):
    """With every label known, each unlabelled-stream image reaches the student as its strong view,
    or with semi.known_weak as its weak one (strong views are made recognisable here: all 0.5)."""
    monkeypatch.setattr(augment, "strong", lambda x, cfg, generator=None: torch.full_like(x, 0.5))
    exp = tiny_exp(
        "semi.all_labels=true", "semi.prior_epochs=0", f"semi.known_weak={str(known_weak).lower()}"
    )
    data = load(exp.data)
    task = _task(exp, data.train, draw_labelled(data.train.labels, exp.semi), data.val)
    seen = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda x: seen.append(x.detach().clone()) or forward(x))
    task.train_step(data.train.images[:40], torch.arange(40))
    unlabelled = seen[0][exp.semi.batch_labelled :]  # the labelled batch first, then the strong part
    assert len(unlabelled) == 40
    constant = (unlabelled == 0.5).flatten(1).all(1)
    assert (not constant.any()) if known_weak else constant.all()


@pytest.mark.parametrize("steps_taken, in_tail", [(0, False), (3, True)])
def test_weak_tail_trains_accepted_images_on_their_weak_view_at_the_end(monkeypatch, steps_taken, in_tail):
    """In the last `semi.weak_tail` share of the steps the unlabelled images reach the student as their
    weak views; before it as their strong ones (made recognisable here: all 0.5)."""
    monkeypatch.setattr(augment, "strong", lambda x, cfg, generator=None: torch.full_like(x, 0.5))
    exp = tiny_exp("semi.all_labels=true", "semi.prior_epochs=0", "semi.weak_tail=0.5")
    data = load(exp.data)
    task = _task(exp, data.train, draw_labelled(data.train.labels, exp.semi), data.val)
    task.total_steps = 4  # the tail: steps 2 and 3
    task.state.steps.fill_(steps_taken)
    seen = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda x: seen.append(x.detach().clone()) or forward(x))
    task.train_step(data.train.images[:40], torch.arange(40))
    unlabelled = seen[0][exp.semi.batch_labelled :]
    assert len(unlabelled) == 40
    constant = (unlabelled == 0.5).flatten(1).all(1)
    assert (not constant.any()) if in_tail else constant.all()


@pytest.mark.parametrize(
    "tail, says", [(0.3, "the last 30% of the steps on the weak views"), (0, None), ("x", None)]
)
def test_the_report_says_when_the_last_steps_trained_on_weak_views(tail, says):
    text = semi_task._weak_tail_text(tail)
    assert (says in text) if says else text == ""
