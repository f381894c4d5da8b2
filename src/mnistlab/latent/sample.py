"""`mnistlab sample` and `mnistlab score`: draw N digits from a trained run, whatever its task, into a
.npy and a PNG grid; score a .npy of digits against the dataset's test set (`score_file`).

The run's task must have the `generator` role (the registry says which do); its TrainedRun gives a
generator that names the samplers it accepts (the first is the default) and turns a SampleRequest
into uint8 images (n, 28, 28): autoencoder runs sample codes and decode them, GANs draw noise. A
conditional task's generator also takes the digit to draw.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mnistlab import tasks
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import write_json
from mnistlab.data.datasets import load
from mnistlab.metrics.generation import check_writable, load_samples, save_samples, score_samples
from mnistlab.models.code_samplers import SampleRequest, check_sampler
from mnistlab.plots.latent import image_grid
from mnistlab.training.reference import load_reference

__all__ = ["Generator", "SampleRequest", "check_sampler", "load_generator", "sample_to_file"]

log = logging.getLogger("mnistlab")


class Generator(Protocol):
    samplers: tuple[str, ...]

    def sample(self, request: SampleRequest) -> np.ndarray: ...  # uint8 (n, 28, 28)


def load_generator(run_dir: Path, device: torch.device) -> tuple[str, Generator]:
    """(task, generator) of a run folder; a run whose task cannot generate is a one-line error."""
    run = tasks.load_run(run_dir, device, role="generator")
    return run.task, run.generator()


def sample_to_file(
    run_dir: Path,
    out: Path,
    sampler: str | None,
    n: int,
    seed: int = 0,
    components: int = 10,
    device: torch.device | None = None,
    digit: int | None = None,
    every_digit: bool = False,
    steps: int | None = None,
    guidance: float | None = None,
) -> dict[str, Any]:
    """Draw n digits from run `run_dir` with `sampler` (None = the generator's default) and write
    `out` (.npy uint8 (n, 28, 28)) plus a PNG grid of the first 100 beside it (same stem). `steps` and
    `guidance` go to generators that name them in their `options` (an ODE solver's); None = the run's."""
    options = {"steps": steps, "guidance": guidance}
    request = SampleRequest(sampler or "", n, seed, components, digit, **options)  # checks before any work
    out = check_writable(out, ".npy")
    _refuse_study_folder(Path(run_dir))
    run = tasks.load_run(run_dir, device or torch.device("cpu"), role="generator")
    if (digit is not None or every_digit) and not run.spec.conditional:
        conditional = ", ".join(s.name for s in tasks.with_role("generator") if s.conditional) or "none"
        raise ConfigError(
            f"{run_dir} holds a {run.task} run, whose generator cannot be asked for a digit; "
            f"--digit needs a conditional task ({conditional})"
        )
    task, gen = run.task, run.generator()
    for name, value in options.items():
        if value is not None and name not in getattr(gen, "options", ()):
            takes = ", ".join(s.name for s in tasks.with_role("generator") if _takes(s, name)) or "none"
            raise ConfigError(
                f"a {task} run's generator takes no --{name} (tasks whose generators do: {takes})"
            )
    request = SampleRequest(sampler or gen.samplers[0], n, seed, components, digit, **options)
    images = gen.sample(request)
    if images.dtype != np.uint8 or images.shape != (n, 28, 28):
        raise RuntimeError(
            f"the {task} generator returned {images.dtype} {images.shape}, not uint8 ({n}, 28, 28)"
        )
    save_samples(out, images)
    png = image_grid(
        images[:100],
        out.with_suffix(".png"),
        f"{task} run {Path(run_dir).name}: {request.sampler} sampler"
        + ("" if digit is None else f", digit {digit}")
        + f", {min(n, 100)} of {n}",
    )
    record = {
        "run": str(run_dir),
        "task": task,
        "sampler": request.sampler,
        "n": n,
        "seed": seed,
        "digit": digit,
        **{k: v for k, v in options.items() if v is not None},
        "data": dataclasses.asdict(run.exp.data),
        "out": str(out),
        "png": str(png),
    }
    write_json(provenance_path(out), record)  # what `mnistlab score` reads to score against the same data
    log.info("wrote %d samples to %s and %s", n, out, png)
    return record


def _takes(spec: tasks.TaskSpec, option: str) -> bool:
    """Whether task `spec`'s generators take sampling option `option` (TaskSpec.sample_options)."""
    return option in spec.sample_options


def provenance_path(samples: Path) -> Path:
    """The JSON beside a .npy of samples recording where they came from (run, data, sampler, seed)."""
    return Path(samples).with_suffix(".json")


def _refuse_study_folder(run_dir: Path) -> None:
    """A `mnistlab run` study folder holds several runs: name the ones that can generate."""
    if (run_dir / "config.toml").is_file() or not (run_dir / "run.json").is_file():
        return
    names = [s.name for s in tasks.with_role("generator") if (run_dir / s.name / "config.toml").is_file()]
    if not names:
        raise ConfigError(f"{run_dir} is a study folder with no finished run that can generate")
    options = ", ".join(str(run_dir / n) for n in names)
    raise ConfigError(f"{run_dir} is a study folder of several runs; name the one to sample from: {options}")


def score_file(
    path: Path,
    data_cfg,
    device: Any = "cpu",
    k: int = 3,
    seed: int = 0,
    progress: bool = True,
    digit: int | None = None,
) -> dict:
    """score_samples for a .npy file, against the test and train splits of `data_cfg`, measured with
    that dataset's reference. The file is validated before anything expensive runs. With `digit`
    (samples drawn for one class), FID-MNIST and precision/recall compare with that class's test
    images only, and "share_as_digit" is the share the reference reads as that class."""
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    images = load_samples(path)
    data = load(data_cfg)
    real = data.test if digit is None else data.test.take(data.test.labels == digit)
    ref = load_reference(data_cfg, device, progress=progress)
    scores = score_samples(images, ref, real, data.train, k=k, seed=seed)
    scores["samples"] = str(path)
    if digit is not None:
        scores.update(digit=digit, share_as_digit=scores["class_hist"][digit])
    return scores
