"""`mnistlab run`: the study's stages (one registry), their plan, pool, state and input fingerprints."""

from mnistlab.study import plan  # noqa: F401  (registers the [run] table)
