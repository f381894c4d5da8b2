"""The latent stage's part of the study report: maps of the encoder's codes, samplers, interpolations.
Sections are plots.content types; report/ assembles them."""

from __future__ import annotations

from typing import Any

from mnistlab.plots.content import RunFolder, Section, Table, num, score_table


def latent_section(run: RunFolder) -> Section:
    sec = Section("latent", "Latent space")
    sec.missing = run.not_run("latent", "latent-space map")
    if sec.missing:
        return sec
    s = run.json(f"{run.folder('latent')}/summary.json")
    q = s.get("cluster_quality", {})
    sec.intro = (
        f"The {num(s.get('n_test'))} test images encoded by the autoencoder; maps, samplers, interpolations."
    )
    sec.tables.append(
        Table(
            "Cluster quality of the digit labels: silhouette (-1..1) and leave-one-out "
            "5-NN accuracy, in the raw code and in each 2-D map",
            ["space", "silhouette ↑", "kNN accuracy ↑"],
            [[k, num(v.get("silhouette")), num(v.get("knn_accuracy"))] for k, v in _first(q, "raw")],
        )
    )
    gen = s.get("generation")
    if gen:
        names = ("test (floor)", "reconstruction", *s.get("config", {}).get("samplers", []))
        title = (
            f"Digits from each sampler ({num(gen.get('n_samples'))} each): FID-MNIST "
            f"(lower is better; {gen.get('fid_note', '')}), precision/recall and class coverage, "
            f"measured with {gen.get('reference')}"
        )
        columns = (
            "FID-MNIST",
            "precision",
            "recall",
            "KL(class | uniform)",
            "rarest digit",
            "commonest digit",
        )
        # The floor (test images scored against themselves) and the reconstructions are references: the
        # best value marked is a sampler's.
        references = ("test (floor)", "reconstruction")
        sec.tables.append(
            score_table(
                title, _first(gen.get("rows", {}), *names), columns, label="digits", unranked=references
            )
        )
    d = f"{run.folder('latent')}/"
    for m, axis in (("latent", "latent"), ("pca", "PC"), ("tsne", "t-SNE"), ("umap", "UMAP")):
        qm = q.get(m, {})
        sec.figures += run.figure(
            d + f"map_{m}.png",
            f"{axis} map of the test codes coloured by digit "
            f"(silhouette {num(qm.get('silhouette'))}, 5-NN accuracy {num(qm.get('knn_accuracy'))}). "
            f"x: {axis} 1; y: {axis} 2.",
        )
    for sampler in s.get("config", {}).get("samplers", []):
        sec.figures += run.figure(
            d + f"samples_{sampler}.png",
            f"Digits decoded from the {sampler} sampler's codes (image grid, no axes).",
        )
    sec.figures += run.figure(
        d + "interpolation.png",
        "Straight lines between the codes of two test digits, "
        "decoded (one row per pair, the real digits at both ends; image grid, no axes).",
    )
    sec.figures += run.figure(
        d + "generation_metrics.png",
        "Generation metrics per sampler beside the test-set floor. x: digits scored; y: each metric.",
    )
    return sec


def _first(table: dict[str, Any], *names: str) -> list[tuple[str, Any]]:
    """The items of `table` with `names` first, in that order (JSON files keep keys sorted)."""
    head = [(n, table[n]) for n in names if n in table]
    return head + [(k, v) for k, v in table.items() if k not in names]
