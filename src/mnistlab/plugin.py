"""The public, stable surface for a third-party task or study stage: import from here, not from the
modules behind it (those may move; these names will not, within a major version).

A task is one `TaskSpec` named by an entry point of the group `mnistlab.tasks`; a study stage is one
`Stage` named by an entry point of the group `mnistlab.stages` (tests/plugin/ has an example of
each). What the rest of mnistlab reads of them:

- `TaskSpec.train(exp, out, resume=False, progress=True, **options) -> summary dict`, run through the
  generic loop (`fit_plain`, or `fit` with your own task object), whose task object's
  `train_step(images, labels)` returns a dict of floats with at least "loss" and whose
  `evaluate()` returns the validation metrics (logged as val_<name>; a search minimises one of them).
- The run folder's `summary.json` (written by `write_summary`): "task" (the task's name), "n_train",
  "test" (a dict of test numbers), and what `finished(result)` fills: "status" ("finished"),
  "epochs", "train_seconds", "train_images_per_s", "checkpoint_sha256" (checked on every load).
  `mnistlab compare`, the search and the report read these keys and ignore others.
- `TaskSpec.load(run_dir, exp, device) -> TrainedRun` with the methods of its roles. The generic runs
  below give them without copying: `AutoencoderRun` (encoder, decoder, a generator by fitted code
  samplers) for any model with `.encoder` and `.decoder` modules.
- `Stage(name, description, run, folder, inputs, reads=..., include=..., report=...)`: `run(ctx,
  resume)` writes into `ctx.out / folder(ctx)`; `ctx.encoders()` names the study's encoder stages;
  `report(run, name)` returns a `Section` of the report (tables of strings, figures by path).
A task joins `mnistlab run` only when a preset or `--set run.tasks=...` names it.
"""

from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataConfig, Split, load, to_float
from mnistlab.plots.content import Figure, RunFolder, Section, Table, num, pct
from mnistlab.runs.folder import load_weights, read_summary, write_summary
from mnistlab.study.context import StudyContext
from mnistlab.study.registry import Stage
from mnistlab.study.registry import register as register_stage
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, as_images, load_run, register
from mnistlab.tasks.ae import AutoencoderRun
from mnistlab.training.loop import TrainConfig, fit, make_optimizer
from mnistlab.training.run_folder import finished, fit_plain, prepare, start

__all__ = [
    "AutoencoderRun",
    "ConfigError",
    "DataConfig",
    "Figure",
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
    "finished",
    "fit",
    "fit_plain",
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
    "to_float",
    "write_summary",
]
