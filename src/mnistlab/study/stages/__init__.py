"""The study's stages that train no task, one module each, registered in study/registry.py in this
order (a plug-in's stages come after them, by entry point)."""

from mnistlab.study.stages import search, probe, latent, labels  # noqa: F401, I001  (registration order)
