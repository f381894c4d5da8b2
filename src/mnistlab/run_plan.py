"""Settings of `mnistlab run` that belong to no single task: which stages run and how (the [run] table
of a preset). The stages' own training settings stay in the preset's task tables ([ae.*], [dae.*],
[probe.*], [gan.*]), so `mnistlab run --preset P` trains exactly what `mnistlab train ae --preset P`
and the other commands would.

A leaf module (no imports from the training code) so that `config.TASKS` can register it as the task
"run" without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistlab.data import DataConfig
from mnistlab.errors import check


@dataclass(frozen=True)
class RunPlan:
    data: DataConfig = field(default_factory=DataConfig)  # the preset's [data] (each stage reads its own)
    # Grid search of the autoencoder before the AE stage; the best trial becomes RUN/ae.
    search: bool = False
    search_grid: tuple[str, ...] = ()  # "key=v1,v2" items; empty = the report's 12-point grid
    search_objective: str = "val_loss"  # or probe_acc (see `mnistlab search --objective`)
    search_workers: int = 0  # local worker processes; 0 = one per core (at most 4)
    # Probes of the AE's encoder.
    finetune: bool = True
    labels_per_class: tuple[str, ...] = ("10", "100", "all")  # label efficiency; empty = skip it
    # Latent study of the AE.
    latent_samples: int = 0  # digits per sampler for the metrics; 0 = as many as test images
    latent_maps: tuple[str, ...] = ("pca", "tsne")
    latent_score: bool = True  # FID-MNIST / coverage of each sampler (needs the reference classifier)
    tsne_iter: int = 200  # t-SNE optimisation iterations after the early exaggeration phase
    tsne_early_iter: int = 150

    def __post_init__(self):
        check(self.search_workers >= 0, f"run.search_workers must be >= 0, got {self.search_workers}")
        check(self.latent_samples >= 0, f"run.latent_samples must be >= 0, got {self.latent_samples}")
        check(
            self.tsne_iter > 0 and self.tsne_early_iter >= 0, "run.tsne_iter > 0 and run.tsne_early_iter >= 0"
        )
        for item in self.search_grid:
            check("=" in item, f"run.search_grid item {item!r}: expected key=v1,v2,...")
        for item in self.labels_per_class:
            ok = item.strip().lower() == "all" or (item.strip().isdigit() and int(item) > 0)
            check(ok, f"run.labels_per_class item {item!r}: a positive whole number or 'all'")
