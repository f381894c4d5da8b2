"""The flow-matching task (`flow`): the network's shapes, the solvers' step counts and guidance on fields
whose answers are known, a training step that moves the weights, exact resume, sampling through the
registry, the CLI and the Python API with one-line errors for bad settings, and its report section."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from mnistlab import cli, tasks
from mnistlab.core.errors import ConfigError
from mnistlab.latent import sample as sampling
from mnistlab.models.flow import (
    NULL,
    FlowConfig,
    FlowUNet,
    check_sampling,
    flow_loss,
    solve,
    to_uint8,
    to_unit,
    training_times,
)
from mnistlab.plots.content import RunFolder
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import flow
from mnistlab.web.app import create_app
from mnistlab.web.explorer import Explorer
from tests.conftest import assert_one_line_error
from tests.serve_helpers import browser_page, running

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 60 MNIST training images (48 after the validation split), batch 16: 3 steps an epoch; little scored.
TINY = [
    "data.train_limit=60",
    "data.test_limit=40",
    "train.batch_size=16",
    "train.epochs=2",
    "train.device=cpu",
    "train.eval_batch_size=32",
    "model.channels=8,16",
    "model.emb_dim=16",
    "flow.val_images=16",
    "flow.final_samples=40",
    "flow.digit_samples=4",
    "flow.curve_samples=20",
    "flow.curve_steps=1,2",
    "flow.steps=3",
    "flow.grid_size=2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "run"
    summary = flow.train(tasks.load_experiment("flow", "quick", TINY), out, progress=False)
    return out, summary


class ConstantField(torch.nn.Module):
    """v(x, t, y) = y + 1 everywhere (NULL gives 11): the exact solution from x0 is x0 + y + 1."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        return (y.float() + 1).view(-1, 1, 1, 1).expand_as(x).clone()


def test_the_network_maps_images_to_velocities_of_their_shape():
    net = FlowUNet(FlowConfig(channels=(8, 16), emb_dim=16)).eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([0, 9, NULL])
    v = net(x, t, y)
    assert v.shape == (3, 1, 28, 28)
    assert torch.count_nonzero(v) == 0  # the last convolution starts at zero: a zero field at first


def test_the_loss_is_the_straight_paths_velocity_error():
    x0, x1 = torch.randn(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    exact = lambda xt, t, y: x1 - x0  # noqa: E731 (the true velocity of every point of the path)
    assert flow_loss(exact, x1, torch.zeros(4, dtype=torch.long), x0, torch.rand(4)) == 0
    zero = lambda xt, t, y: torch.zeros_like(xt)  # noqa: E731
    assert torch.isclose(
        flow_loss(zero, x1, torch.zeros(4, dtype=torch.long), x0, torch.rand(4)), ((x1 - x0) ** 2).mean()
    )


@pytest.mark.parametrize(
    ("solver", "steps", "calls"),
    [
        ("euler", 5, 5),
        ("midpoint", 6, 6),
        ("midpoint", 5, 5),
        ("midpoint", 1, 1),
        ("heun", 5, 5),
        ("heun", 4, 4),
        ("euler", 1, 1),
    ],
)
def test_each_solver_integrates_a_constant_field_within_its_evaluations(solver, steps, calls):
    field = ConstantField()
    x0, y = torch.randn(2, 1, 28, 28), torch.tensor([2, 7])
    x = solve(field, x0, y, solver, steps)
    assert field.calls == calls <= steps
    assert torch.allclose(x, x0 + (y.float() + 1).view(-1, 1, 1, 1), atol=1e-5)


def test_guidance_mixes_the_labelled_and_the_unlabelled_field():
    field, x0 = ConstantField(), torch.zeros(2, 1, 28, 28)
    x = solve(field, x0, torch.tensor([2, NULL]), "euler", 1, guidance=3.0)
    # labelled: v_null + 3 (v_2 - v_null) = 11 + 3 (3 - 11) = -13; a NULL label is not guided (11)
    assert torch.allclose(x[0], torch.full((1, 28, 28), -13.0)) and torch.allclose(
        x[1], torch.full((1, 28, 28), 11.0)
    )
    assert field.calls == 1  # the two fields in one batch


def test_images_map_to_the_unit_range_and_back():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    x = to_unit(images)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_uint8(x), images)


@pytest.mark.parametrize(
    ("solver", "steps", "guidance", "match"),
    [
        ("euler", 0, 1.0, "--steps must be in [1, 1000]"),
        ("euler", 1001, 1.0, "--steps must be in [1, 1000]"),
        ("euler", 4, float("nan"), "--guidance must be a finite number"),
        ("euler", 4, float("inf"), "--guidance must be a finite number"),
        ("rk4", 4, 1.0, "unknown solver 'rk4'"),
    ],
)
def test_bad_sampling_settings_are_one_line_errors(solver, steps, guidance, match):
    with pytest.raises(ConfigError) as err:
        check_sampling(solver, steps, guidance)
    assert_one_line_error(err, match)


def test_a_training_step_moves_the_weights_and_the_average_follows():
    exp = tasks.load_experiment("flow", "quick", TINY)
    task = flow.FlowTask(exp, torch.device("cpu"), None)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    images, labels = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8), torch.arange(16) % 10
    out = task.train_step(images, labels)
    after = task.model.state_dict()
    assert set(out) == {"loss"} and out["loss"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    avg = task.ema.state_dict()
    assert any(not torch.equal(before[k], avg[k]) for k in before if k != "label_prior")
    assert task.step == 1


def test_a_trained_run_records_its_scores_and_draws_its_figures(tiny_run):
    out, s = tiny_run
    assert s["status"] == "finished" and s["task"] == "flow" and s["epochs"] == 2
    assert s["sampling"]["steps"] == 3 and s["n_samples_scored"] == 40
    assert {"fid_mnist", "precision", "recall"} <= set(s["test"])
    assert [r["digit"] for r in s["per_digit"]] == list(range(10))
    assert [p["steps"] for p in s["fid_by_steps"]["points"]] == [1, 2]
    for name in (
        "grids_by_steps",
        "fid_by_steps",
        "samples_final",
        "epoch_grids",
        "loss_curves",
        "class_histogram",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["checkpoint_sha256"] == s["checkpoint_sha256"]


def test_the_label_prior_is_the_training_sets_digit_frequencies(tiny_run):
    run = tasks.load_run(tiny_run[0])
    prior = run.generator().net.label_prior
    data = tasks.load_experiment("flow", "quick", TINY).data
    labels = flow.load(data).train.labels
    assert torch.allclose(prior, torch.bincount(labels, minlength=10).double().float() / len(labels))


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch):
    exp = tasks.load_experiment("flow", "quick", [*TINY, "flow.final_samples=0", "flow.curve_samples=0"])
    flow.train(exp, tmp_path / "full", progress=False)
    original = flow.GridWatch.__call__

    def crash_in_epoch_2(self, epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # before epoch 2's checkpoint: the run holds epoch 1
        original(self, epoch, row)

    monkeypatch.setattr(flow.GridWatch, "__call__", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        flow.train(exp, tmp_path / "cut", progress=False)
    monkeypatch.setattr(flow.GridWatch, "__call__", original)
    torch.manual_seed(123)  # another RNG state: the step's own stream must not depend on it
    flow.train(exp, tmp_path / "cut", resume=True, progress=False)
    full, cut = (
        read_checkpoint(tmp_path / p / "checkpoints" / "last.safetensors")[0] for p in ("full", "cut")
    )
    assert full.keys() == cut.keys() and any("ema" in k for k in full)
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_the_api_samples_a_digit_in_the_steps_asked_and_repeats_by_seed(tiny_run):
    run = tasks.load_run(tiny_run[0])
    a = run.generate(6, digit=4, seed=1, steps=2, guidance=1.5)
    assert a.shape == (6, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, run.generate(6, digit=4, seed=1, steps=2, guidance=1.5))
    assert not torch.equal(a, run.generate(6, digit=4, seed=1, steps=3, guidance=1.5))
    strip = run.trajectory(digit=4, steps=3)
    assert strip.shape == (3, 28, 28)  # the noise, then the state after each of midpoint's 2 steps
    with pytest.raises(ConfigError) as err:
        run.generate(2, steps=0)
    assert_one_line_error(err, "--steps")


def test_a_run_trained_without_labels_cannot_be_asked_for_a_digit(tmp_path):
    exp = tasks.load_experiment(
        "flow",
        "quick",
        [*TINY, "model.conditional=false", "train.epochs=1", "flow.final_samples=0", "flow.curve_samples=0"],
    )
    flow.train(exp, tmp_path / "u", progress=False)
    run = tasks.load_run(tmp_path / "u")
    assert run.generate(3, steps=2).shape == (3, 28, 28)
    with pytest.raises(ConfigError) as err:
        run.generate(3, digit=2, steps=2)
    assert_one_line_error(err, "trained without labels")


def test_sample_writes_the_steps_and_guidance_it_used(tiny_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert (
        cli.main(
            [
                "sample",
                str(tiny_run[0]),
                "--n",
                "12",
                "--out",
                str(out),
                "--steps",
                "2",
                "--guidance",
                "2",
                "--digit",
                "5",
            ]
        )
        == 0
    )
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 2 and record["guidance"] == 2.0 and record["digit"] == 5
    for args, match in (
        (["--steps", "0"], "--steps must be in [1, 1000]"),
        (["--steps", "1001"], "--steps must be in [1, 1000]"),
        (["--guidance", "nan"], "--guidance must be finite"),
        (["--sampler", "rk4"], "unknown solver 'rk4'"),
    ):
        capsys.readouterr()
        assert (
            cli.main(["sample", str(tiny_run[0]), "--n", "4", "--out", str(tmp_path / "x.npy"), *args]) != 0
        )
        assert_one_line_error(capsys, match)


def test_steps_are_refused_for_a_generator_without_a_solver(tiny_run, tmp_path, monkeypatch):
    class NoSteps:
        samplers = ("prior",)

        def sample(self, request):  # pragma: no cover - refused before sampling
            raise AssertionError

    monkeypatch.setattr(flow.FlowRun, "generator", lambda self: NoSteps())
    with pytest.raises(ConfigError) as err:
        sampling.sample_to_file(tiny_run[0], tmp_path / "n.npy", None, 4, steps=3)
    assert_one_line_error(err, "takes no --steps")


def test_training_times_lie_in_the_open_interval_and_logit_normal_favours_the_middle():
    n = 20_000
    uniform = training_times(n, "uniform", torch.Generator().manual_seed(0))
    logit = training_times(n, "logit_normal", torch.Generator().manual_seed(0))
    for t in (uniform, logit):
        assert t.shape == (n,) and bool(((t > 0) & (t < 1)).all())

    def middle(t: torch.Tensor) -> float:
        return float(((t > 0.25) & (t < 0.75)).double().mean())

    assert abs(middle(uniform) - 0.5) < 0.02
    assert middle(logit) > 0.65  # sigmoid(N(0, 1)) lies in (0.25, 0.75) with probability 0.73
    assert abs(float(logit.mean()) - 0.5) < 0.01  # symmetric about the middle of the path
    # Same seed, same draws: resume stays bit for bit.
    again = training_times(n, "logit_normal", torch.Generator().manual_seed(0))
    assert torch.equal(logit, again)


def test_bad_flow_configs_are_one_line_errors():
    for override, match in (
        ("flow.steps=0", "--steps must be in [1, 1000]"),
        ("flow.p_uncond=1.5", "flow.p_uncond"),
        ("flow.solver=rk4", "unknown solver"),
        ("model.channels=8", "model.channels must be two integers"),
        ("flow.curve_steps=0,2", "flow.curve_steps"),
        ("flow.time_sampling=beta", "flow.time_sampling must be one of uniform, logit_normal"),
    ):
        with pytest.raises(ConfigError) as err:
            tasks.load_experiment("flow", "quick", [override])
        assert_one_line_error(err, match)


def test_the_report_section_shows_scores_steps_and_figures(tiny_run):
    out = tiny_run[0]
    state = {"stages": [{"name": out.name, "status": "done"}]}
    sec = flow.report_section(RunFolder(out.parent, state, {out.name: frozenset({"generator"})}), out.name)
    assert not sec.missing
    titles = " ".join(t.caption for t in sec.tables)
    assert (
        "scored against the test set" in titles
        and "reads as it" in titles
        and "Steps against quality" in titles
    )
    assert {f.rel.rsplit("/", 1)[1] for f in sec.figures} >= {"grids_by_steps.png", "fid_by_steps.png"}
    assert flow.report_section(RunFolder(out.parent, {"stages": []}), out.name).missing


def test_eval_redraws_the_same_samples_and_scores(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    before = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**before, "per_digit": []}))
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0
    after = json.loads((run / "summary.json").read_text())
    assert after["per_digit"] == before["per_digit"]
    assert after["test"]["fid_mnist"] == pytest.approx(before["test"]["fid_mnist"])
    assert after["fid_by_steps"] == before["fid_by_steps"]


def test_the_explorer_draws_with_the_steps_asked_and_shows_one_digits_path(tiny_run):
    with TestClient(create_app(Explorer(tiny_run[0]))) as client:
        panel = client.get("/api/info").json()["samplers"]["flow"]
        assert panel["available"] and panel["conditional"] and panel["trajectory"]
        assert panel["steps"] == {"default": 3, "max": 50}
        body = {"sampler": "flow", "n": 4, "seed": 2, "digit": 7, "steps": 2}
        out = client.post("/api/sample", json=body).json()
        assert np.array(out["images"]).shape == (4, 28, 28)
        assert client.post("/api/sample", json=body).json()["images"] == out["images"]  # seeded
        png = client.get("/api/sample.npy", params={k: str(v) for k, v in body.items()})
        assert png.status_code == 200
        path = client.post(
            "/api/trajectory", json={"sampler": "flow", "seed": 2, "digit": 7, "steps": 5}
        ).json()
        assert np.array(path["images"]).shape == (4, 28, 28)  # noise + 3 midpoint steps of 5 evaluations
        for bad, match in (({**body, "steps": 0}, "steps"), ({**body, "steps": 51}, "steps")):
            r = client.post("/api/sample", json=bad)
            assert_one_line_error(r, match, status=422)
        r = client.post("/api/trajectory", json={"sampler": "gmm", "seed": 0})
        assert_one_line_error(r, "unknown generator", status=422)


def test_the_explorer_page_has_a_steps_slider_and_the_path_strip(tiny_run):
    with running(create_app(Explorer(tiny_run[0]))) as url, browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("#path-flow canvas", timeout=30_000)
        strip = page.locator("#path-flow canvas")
        assert strip.count() == 3  # the noise and midpoint's 2 steps of the run's 3 evaluations
        page.locator("#steps-flow").fill("6")
        page.locator("#steps-flow").dispatch_event("change")
        page.wait_for_selector("#path-flow canvas:nth-child(4)", timeout=30_000)
        assert strip.count() == 4 and page.inner_text("#steps-shown-flow") == "6 steps"
        assert not errors
