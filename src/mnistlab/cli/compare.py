"""`mnistlab compare RUN [RUN ...]`: finished runs of any tasks (or every finished stage of a `mnistlab
run` study folder) in one table, plus compare.md / .csv / .html with their key figures side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnistlab.cli.common import add_device, names


def add_parsers(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="one table of finished runs of any tasks (the models bench)",
        description="Measure finished run folders side by side: reconstruction (decoders), denoising "
        "gain (denoisers), frozen probe and k-NN (encoders), FID-MNIST, precision, recall, digit "
        "coverage and nearest-training-image distance per sampler (generators), parameters and "
        "training speed (every run). A study folder of `mnistlab run` stands for its finished "
        "stages. What a run's summary.json lacks is computed from its checkpoint and cached in "
        "RUN/compare.json, so the same compare again only reads files.",
    )
    c.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="run folders or `mnistlab run` study folders"
    )
    c.add_argument(
        "--out", help="folder for compare.md, compare.csv, compare.html [runs/compare-<UTC date-time>]"
    )
    c.add_argument(
        "--samples",
        type=int,
        default=10_000,
        help="samples scored per sampler of every generator, the same count for each (a run's own "
        "scores of another count are scored again) [10000]",
    )
    c.add_argument(
        "--samplers",
        metavar="NAME,...",
        help="samplers to score (e.g. prior,gmm,uniform) [every one but uniform]",
    )
    c.add_argument(
        "--probe-train", type=int, default=10_000, help="training images the frozen probe is fit on [10000]"
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the samples and the probe [0]")
    add_device(c, "cpu")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from mnistlab.bench import compare as bench
    from mnistlab.bench import table as bench_table
    from mnistlab.core.allocator import keep_freed_memory
    from mnistlab.core.errors import ConfigError
    from mnistlab.report import bench_page
    from mnistlab.runs import owner

    # Scoring allocates and frees the same large feature and distance tensors per batch: keeping freed
    # memory in the process saves most of their page faults (allocator.py; docs/history.md).
    keep_freed_memory()

    samplers = names(args.samplers) if args.samplers else None
    cfg = bench.BenchConfig(
        samples=args.samples,
        seed=args.seed,
        probe_train=args.probe_train,
        samplers=samplers,
        device=args.device,
    )
    if args.out is not None and not args.out.strip():  # it would be the current folder, unnamed
        raise ConfigError("--out is empty; name a folder for the pages (or leave --out out)")
    out = bench_page.check_out(Path(args.out) if args.out is not None else bench_page.default_out())
    entries, notes = bench.compare(args.runs, cfg, compute=True)  # bad runs refused before --out exists
    # new files, or mnistlab's; after the scoring, which each run caches (RUN/compare.json) for a rerun
    owner.claim_files(out / f"compare.{ext}" for ext in ("html", "md", "csv"))
    paths = bench_page.write(entries, notes, cfg, out)
    # The few headline columns (the whole table is in the files); arrows where the terminal has them.
    arrows = "↑↓".encode(sys.stdout.encoding or "ascii", "replace") != b"??"
    print(bench_table.terminal(bench_table.rows(entries), arrows))
    for note in [*notes, *bench_table.table_notes(entries)]:
        print(f"- {note}")
    print(f"the full table: {paths['markdown']}, {paths['csv']} and {paths['html']}")
    return 0
