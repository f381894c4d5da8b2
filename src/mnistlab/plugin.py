"""The public, stable surface for a third-party task or study stage: import from here, not from the
modules behind it (those may move; these names will not, within a major version).

The contract in one place, with the summary.json layout, the train_step contract, the `report`
callable and the help's `mnistlab.task_info` entry: docs/plugins.md (in the source tree; tests/plugin/
is a complete example: a linear autoencoder, a noise-to-image generator and a k-NN probe stage). In
short:

- A task is one `TaskSpec` named by an entry point of the group `mnistlab.tasks`; a study stage one
  `Stage` named by an entry point of the group `mnistlab.stages`. A plug-in that fails to import is
  a one-line error naming it when a command asks for it; the built-ins go on working.
- `TaskSpec.train(exp, out, resume=False, progress=True, **options) -> summary dict`, through the
  generic loop (`fit_plain`, or `fit`), whose task object's `train_step(images, labels)` gets uint8
  images (B, 28, 28) and labels (B,) and returns a dict of floats with at least "loss", and whose
  `evaluate()` returns the validation metrics (logged as val_<name>; declare their names in
  `TaskSpec.val_metrics` so that a search refuses an objective the task never logs before training).
- summary.json (`write_summary`): "task", "status", "checkpoint_sha256" and the other fields that
  `finished(result)` fills, "n_train", and "test", a dict whose keys depend on the roles.
- `TaskSpec.load(run_dir, exp, device) -> TrainedRun` with the methods of its roles. The generic runs
  give them without copying: `AutoencoderRun` (encoder, decoder, a generator by fitted code samplers)
  for any model with `.encoder` and `.decoder` modules; `GeneratorRun` (a generator from N(0, I)
  noise) for any network mapping (B, latent_dim) noise to (B, 1, 28, 28) images, with
  `finish_generator` (test scores for the summary), `evaluate_generator` (a TaskSpec `evaluate`:
  `mnistlab eval`) and `generator_section` (a TaskSpec `report`).
- `TaskSpec.report` and `Stage.report` are called as `report(run, name)`: `run` a `RunFolder` (the
  study folder), `name` the stage's name (a task stage's is the task's); they return a `Section`.
- `Stage(name, description, run, folder, inputs, reads=..., include=..., report=...)`: `run(ctx,
  resume)` writes into `ctx.out / folder(ctx)`; `ctx.encoders()` names the study's encoder stages.
- `task_fields(name, info)`: the TaskSpec fields of a `mnistlab.task_info` mapping, so that the help
  and the registry read one source.
A task joins `mnistlab run` only when a preset or `--set run.tasks=...` names it.
"""

from mnistlab.core.errors import ConfigError
from mnistlab.core.task_catalog import TaskEntry
from mnistlab.data.datasets import DataConfig, Split, load, to_float
from mnistlab.plots.content import Figure, RunFolder, Section, Table, num, pct
from mnistlab.runs.folder import load_weights, read_summary, write_summary
from mnistlab.study.context import StudyContext
from mnistlab.study.registry import Stage
from mnistlab.study.registry import register as register_stage
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, as_images, load_run, register
from mnistlab.tasks.ae import AutoencoderRun
from mnistlab.tasks.generator_run import (
    GeneratorRun,
    evaluate_generator,
    finish_generator,
    generator_section,
)
from mnistlab.training.loop import TrainConfig, fit, make_optimizer
from mnistlab.training.run_folder import finished, fit_plain, prepare, start

__all__ = [
    "AutoencoderRun",
    "ConfigError",
    "DataConfig",
    "Figure",
    "GeneratorRun",
    "RoleError",
    "RunFolder",
    "Section",
    "Split",
    "Stage",
    "StudyContext",
    "Table",
    "TaskSpec",
    "TrainConfig",
    "TrainedRun",
    "as_images",
    "evaluate_generator",
    "finish_generator",
    "finished",
    "fit",
    "fit_plain",
    "generator_section",
    "load",
    "load_run",
    "load_weights",
    "make_optimizer",
    "num",
    "pct",
    "prepare",
    "read_summary",
    "register",
    "register_stage",
    "start",
    "task_fields",
    "to_float",
    "write_summary",
]


def task_fields(name: str, info: dict) -> dict:
    """The TaskSpec keyword arguments (name, description, roles, order, options, conditional,
    sample_options, val_metrics) of task `name`'s `mnistlab.task_info` mapping, checked: a field that
    does not exist or a value of the wrong kind is a ValueError naming it. Help-only fields
    (samplers, eval_baseline) are left out."""
    return TaskEntry.from_info(name, info).spec_fields()
