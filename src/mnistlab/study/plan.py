"""Settings of `mnistlab run` that belong to no single task: which stages run and how (the [run] table
of a preset). The stages' own training settings stay in the preset's task tables ([ae.*], [dae.*],
[probe.*], [gan.*]), so `mnistlab run --preset P` trains exactly what `mnistlab train ae --preset P`
and the other commands would.

Registered as the config of the preset's [run] table (core.config.register_table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mnistlab.core.config import register_table
from mnistlab.core.errors import check, check_bool, check_int
from mnistlab.data.datasets import DataConfig

# The names of latent.maps.MAPS, kept here so that the plan imports no map library;
# tests/test_config_ranges.py checks that they agree. Checked here so that a typo fails before the autoencoder trains, not after.
LATENT_MAPS = ("pca", "tsne", "umap")


@dataclass(frozen=True)
class RunPlan:
    data: DataConfig = field(default_factory=DataConfig)  # the preset's [data] (each stage reads its own)
    # The stage list: the registered tasks the study trains, by name, in this order (a plug-in task
    # joins a study only when a preset or --set run.tasks=... names it).
    tasks: tuple[str, ...] = ("ae", "dae", "vae", "gan", "cgan", "flow", "semi")
    # Grid search of the autoencoder before the AE stage; the best trial becomes RUN/ae.
    search: bool = False
    search_grid: tuple[str, ...] = ()  # "key=v1,v2" items; empty = the report's 12-point grid
    search_objective: str = "val_loss"  # or probe_acc (see `mnistlab search --objective`)
    search_workers: int = 0  # local worker processes; 0 = one per core (at most 4)
    # Stages at once, each in a process of its own with the cores shared out as torch threads, each
    # started when the stages it reads have finished (stage_pool.py); 0 = one per core (at most 4);
    # 1 = one after another in this process.
    workers: int = 1
    # With workers > 1: stages started before the others whenever several could start, by name, in
    # this order (the rest in stage order); a long stage late in stage order put here starts sooner
    # instead of ending the study on its own. Unknown names are an error; names not in this run are
    # passed over.
    start_first: tuple[str, ...] = ()
    # Probes of the AE's encoder.
    finetune: bool = True
    labels_per_class: tuple[str, ...] = ("10", "100", "all")  # label efficiency; empty = skip it
    # Latent study of the AE.
    latent_samples: int = 0  # digits per sampler for the metrics; 0 = as many as test images
    latent_maps: tuple[str, ...] = ("pca", "tsne")
    latent_score: bool = True  # FID-MNIST / coverage of each sampler (needs the reference classifier)
    tsne_iter: int = 200  # t-SNE optimisation iterations after the early exaggeration phase
    tsne_early_iter: int = 150
    # Stage settings that only a study can give, applied before the command's own --set items, e.g.
    # "dae.init.from_baseline=true": the denoiser starts from the study's autoencoder, which a
    # standalone `mnistlab train dae` does not have.
    set: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("search", "finetune", "latent_score"):
            check_bool(getattr(self, name), f"run.{name}")
        cores = os.cpu_count() or 1  # every worker holds its own copy of torch and of the data
        why = f"at most 4 x this machine's {cores} cores; 0 = one per core"
        check_int(self.search_workers, "run.search_workers", 0, 4 * cores, why)
        check_int(self.workers, "run.workers", 0, 4 * cores, why)
        objective = self.search_objective
        ok = isinstance(objective, str) and (objective == "probe_acc" or objective.startswith("val_"))
        check(
            ok,
            f"run.search_objective must be val_loss (or another val_* metric) or probe_acc, not {objective!r}",
        )
        # Generated digits are decoded and scored in memory, as `mnistlab sample --n` allows.
        check_int(self.latent_samples, "run.latent_samples", 0, 1_000_000, "0 = as many as test images")
        check_int(self.tsne_iter, "run.tsne_iter", 1, 100_000)
        check_int(self.tsne_early_iter, "run.tsne_early_iter", 0, 100_000)
        for name in ("search_grid", "labels_per_class", "latent_maps", "set", "start_first"):
            items = getattr(self, name)
            ok = isinstance(items, tuple) and all(isinstance(i, str) for i in items)
            check(ok, f"run.{name} must be a list of strings")
        for item in self.search_grid:
            check("=" in item, f"run.search_grid item {item!r}: expected key=v1,v2,...")
        for item in self.set:
            head = item.partition(".")[0]
            check(
                "=" in item and head not in ("run", "data"),
                f"run.set item {item!r}: expected task.section.key=value (not run. or data.)",
            )
        for item in self.labels_per_class:
            text = item.strip()
            # isascii: str.isdigit accepts digits such as "²" that int() refuses; 7 digits bound int().
            number = text.isascii() and text.isdigit() and len(text) <= 7 and int(text) > 0
            check(
                text.lower() == "all" or number,
                f"run.labels_per_class item {item!r}: a positive whole number or 'all'",
            )
        for name in self.latent_maps:
            check(
                name in LATENT_MAPS,
                f"run.latent_maps: unknown map {name!r}; choose from {', '.join(LATENT_MAPS)}",
            )


register_table("run", RunPlan)
