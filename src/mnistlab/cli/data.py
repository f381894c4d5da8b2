"""`mnistlab data` and `mnistlab reference`: datasets and the reference classifier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parsers(sub) -> None:
    data = sub.add_parser(
        "data", help="inspect or download datasets", description="Inspect or download datasets."
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = dsub.add_parser(
        "info",
        help="show where a dataset comes from and its sizes",
        description="Load a dataset (verifying checksums) and print its sizes.",
    )
    info.add_argument("--data-dir", help="a folder with the four IDX files")
    info.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    info.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    dl = dsub.add_parser(
        "download",
        help="download a known dataset into the cache, verifying checksums",
        description="Download a known dataset (mnist, fashion-mnist, kmnist) into the cache.",
    )
    dl.add_argument("name", help="dataset name")
    dl.add_argument("--dest", type=Path, help="target folder [~/.cache/mnistlab/<name> or $MNISTLAB_CACHE]")
    data.set_defaults(func=cmd_data)
    ref = sub.add_parser(
        "reference",
        help="show or export the reference classifier",
        description="Show the reference classifier used for a dataset (training and "
        "caching it first for a dataset other than MNIST), or export a classifier run's "
        "weights as a reference file.",
    )
    rsub = ref.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    ri = rsub.add_parser("info", help="name, file and test accuracy of the reference for a dataset")
    ri.add_argument("--data-dir", help="a folder with the four IDX files")
    ri.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    ri.add_argument("--no-progress", action="store_true", help="no progress bars")
    ri.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    rx = rsub.add_parser("export", help="write a classifier run's weights as a reference .safetensors")
    rx.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab train classifier`")
    rx.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    ref.set_defaults(func=cmd_reference)


def cmd_data(args: argparse.Namespace) -> int:
    from mnistlab.data.datasets import DataConfig, download, load

    if args.data_command == "download":
        print(download(args.name, args.dest))
        return 0
    data = load(DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0))
    info = {
        "source": data.source,
        "train": len(data.train),
        "test": len(data.test),
        "train_class_counts": data.train.labels.bincount(minlength=10).tolist(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        counts = "  ".join(f"{c}: {n:,}" for c, n in enumerate(info["train_class_counts"]))
        print(
            f"source  {info['source']}\ntrain   {info['train']:,} images\ntest    {info['test']:,} images\n"
            f"train images per class  {counts}"
        )
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from mnistlab.data.datasets import DataConfig
    from mnistlab.training.reference import export_reference, load_reference

    if args.reference_command == "export":
        from mnistlab.runs import owner

        owner.claim_files([args.out])  # a new file, or one mnistlab wrote
        sha = export_reference(args.run_dir, args.out)
        print(json.dumps({"file": str(args.out), "sha256": sha}, indent=2))
        return 0
    cfg = DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0)
    ref = load_reference(cfg, progress=not args.no_progress)
    info = {"name": ref.name, "file": ref.source, "test_accuracy": ref.test_accuracy}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        acc = "-" if ref.test_accuracy is None else f"{100 * ref.test_accuracy:.2f}%"
        print(f"name           {ref.name}\nfile           {ref.source}\ntest accuracy  {acc}")
    return 0
