"""`mnistlab probe`, `latent`, `sample`, `score` and `serve`: the commands that use a trained run's
roles (its encoder, decoder or generator), chosen through the task registry; their help lists
the tasks with each role from the light catalogue (cli.task_help)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnistlab.cli import task_help
from mnistlab.cli.common import names


def add_parsers(sub) -> None:
    encoders, generators = task_help.with_role("encoder"), task_help.with_role("generator")
    probe = sub.add_parser(
        "probe",
        help="train classifiers on a trained encoder (linear probe, fine-tuning)",
        description="Frozen encoder + one linear layer (with kNN, logistic-regression, pixel "
        "and PCA baselines); --finetune trains the whole encoder too; --labels-per-class "
        "measures accuracy against the number of labels, pretrained against from scratch.",
    )
    probe.add_argument("run_dir", type=Path, help=f"a run folder of a task with an encoder ({encoders})")
    probe.add_argument("--finetune", action="store_true", help="also fine-tune encoder + head on all labels")
    probe.add_argument(
        "--labels-per-class",
        metavar="N1,N2,...",
        help="label efficiency: e.g. 10,100,1000,all (seeded, balanced labelled subsets)",
    )
    probe.add_argument(
        "--preset",
        default="default",
        help="preset whose [probe.*] tables set the probe training (quick, seed, default or a .toml)",
    )
    probe.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a probe setting, e.g. --set linear.lr=0.01 or options.shift=2",
    )
    probe.add_argument("--out", type=Path, help="output folder [RUN_DIR/probe]")
    probe.add_argument(
        "--overwrite", "--force", action="store_true", help="replace the probe in the output folder"
    )
    probe.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    probe.add_argument("--no-progress", action="store_true", help="no progress bars")

    probe.set_defaults(func=cmd_probe)
    sc = sub.add_parser(
        "score",
        help="score a .npy file of generated digits (FID-MNIST, precision, ...)",
        description="Score uint8 images (N, 28, 28) in a .npy file against the test set: "
        "FID-MNIST (reference-classifier features; not comparable with Inception FID), "
        "precision/recall (k-NN manifolds), class coverage, nearest-training-image distance.",
    )
    sc.add_argument("samples", type=Path, help="a .npy file holding uint8 images (N, 28, 28)")
    sc.add_argument("--data-dir", help="dataset folder (the real images and the reference's dataset)")
    sc.add_argument("--dataset", help="a known dataset name [the one the samples' run used, else mnist]")
    sc.add_argument("--k", type=int, default=3, help="neighbours for precision/recall [3]")
    sc.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    sc.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    sc.add_argument("--no-progress", action="store_true", help="no progress bars")
    sc.set_defaults(func=cmd_score)
    lat = sub.add_parser(
        "latent",
        help="latent maps, samplers, interpolation and their metrics for a run",
        description="Encode the test set of an autoencoder run: PCA / t-SNE (/ UMAP) maps "
        "with cluster quality, samples from each code sampler, interpolations, and "
        "FID-MNIST / precision / recall / class coverage per sampler beside the floor "
        "(test set vs train set). Writes figures/latent/ and summary.json['latent'].",
    )
    lat.add_argument("run_dir", type=Path, help="an ae or dae run folder")
    lat.add_argument("--maps", help="comma-separated maps: pca,tsne,umap [pca,tsne (+umap if installed)]")
    lat.add_argument(
        "--samplers", default="uniform,gaussian,gmm", help="comma-separated [uniform,gaussian,gmm]"
    )
    lat.add_argument(
        "--n", type=int, default=0, help="digits per sampler for the metrics [0 = test-set size]"
    )
    lat.add_argument("--components", type=int, default=10, help="gmm components [10]")
    lat.add_argument("--seed", type=int, default=0)
    lat.add_argument(
        "--out", type=Path, help="folder for the figures, CSVs and summary.json [RUN_DIR/figures/latent]"
    )
    lat.add_argument("--no-score", action="store_true", help="skip the generation metrics")
    lat.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    lat.add_argument("--no-progress", action="store_true", help="no progress bars")
    sam = sub.add_parser(
        "sample",
        help="draw N digits from a run into a .npy file and a PNG grid",
        description="Draw N digits from a trained run (autoencoders: codes from a fitted sampler, "
        "decoded; GANs and the VAE: noise from their prior, decoded) into OUT (.npy, uint8 (N, 28, "
        "28)) and a PNG grid beside it, with a record of the run, data, sampler and seed (OUT.json).",
    )
    sam.add_argument("run_dir", type=Path, help=f"a run folder of a task that generates ({generators})")
    sam.add_argument(
        "--sampler",
        help=f"the generator's sampler, by task (plug-ins included): {task_help.samplers()}",
    )
    sam.add_argument("--n", type=int, required=True, help="how many digits")
    sam.add_argument(
        "--digit",
        type=_digit,
        metavar="D|all",
        help="conditional generators only: draw this digit (0-9), or 'all' for equal shares",
    )
    sam.add_argument("--out", type=Path, required=True, help="the .npy file to write")
    sam.add_argument("--components", type=int, default=10, help="gmm components [10]")
    sam.add_argument(
        "--steps",
        type=int,
        help=f"generators that solve an ODE ({task_help.taking_sample_option('steps')}): network evaluations per sample, "
        "1-1000 [the run's default]",
    )
    sam.add_argument(
        "--guidance",
        type=float,
        help=f"generators with classifier-free guidance ({task_help.taking_sample_option('guidance')}): 1 = none, larger "
        "pulls samples toward the digit asked for [the run's default]",
    )
    sam.add_argument("--seed", type=int, default=0)
    sam.add_argument("--score", action="store_true", help="also print the generation metrics of the digits")
    sam.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    lat.set_defaults(func=cmd_latent)
    sam.set_defaults(func=cmd_sample)
    srv = sub.add_parser(
        "serve",
        help="a local web page to explore a trained run (draw, maps, samplers)",
        description="Serve the explorer of a run folder (a `mnistlab run` study folder, or one ae, "
        "dae or gan run): draw or upload a digit, latent maps, sliders, samplers, interpolation, "
        "and the JSON API the page uses. Listens on 127.0.0.1 unless --host names another address.",
    )
    srv.add_argument(
        "run_dir",
        type=Path,
        nargs="?",
        help="a run folder of `mnistlab run` or of `mnistlab train` "
        "[the trained runs shipped with mnistlab: see `mnistlab pretrained list`]",
    )
    srv.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port) [8000]")
    srv.add_argument(
        "--host",
        help="address to listen on; anything but loopback must be named here, and "
        "anyone who can reach it can use the page [127.0.0.1]",
    )
    srv.add_argument("--threads", type=int, default=1, help="torch threads for inference [1]")

    srv.set_defaults(func=cmd_serve)


def cmd_probe(args: argparse.Namespace) -> int:
    from mnistlab.probe.fit import parse_labels_per_class
    from mnistlab.probe.run import run_probe

    labels = parse_labels_per_class(args.labels_per_class) if args.labels_per_class else ()
    summary = run_probe(
        args.run_dir,
        args.preset,
        args.overrides,
        out=args.out,
        finetune=args.finetune,
        labels_per_class=labels,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.no_progress,
    )
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("out", "linear_probe", "finetune", "baselines", "label_efficiency")
                if k in summary
            },
            indent=2,
        )
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mnistlab.bench.table import READING, small_sample_caution
    from mnistlab.core.fsio import write_json
    from mnistlab.data.datasets import DataConfig
    from mnistlab.latent.sample import provenance_path, score_file
    from mnistlab.metrics.generation import format_table
    from mnistlab.runs import owner
    from mnistlab.runs.records import check_provenance
    from mnistlab.training.loop import resolve_device

    _check_image_count(args.samples, MAX_SCORED_IMAGES)
    given = DataConfig(dataset=args.dataset or "mnist", data_dir=args.data_dir or "", val_fraction=0.0)
    cfg, note, digit = given, "", None
    record = provenance_path(args.samples)
    if record.exists():  # written by `mnistlab sample`: score against the data the run trained on
        from mnistlab.core.fsio import read_json_file

        made_by = check_provenance(read_json_file(record), record)  # a FIFO or a wrong type: one line
        data, digit = made_by.get("data") or {}, made_by.get("digit")  # one digit: scored against its class
        made = DataConfig(
            dataset=data.get("dataset", "mnist"), data_dir=data.get("data_dir", ""), val_fraction=0.0
        )
        if args.dataset is None and args.data_dir is None:
            cfg = made
        elif (made.dataset, made.data_dir) != (given.dataset, given.data_dir):
            note = (
                f"note: {args.samples.name} was drawn from a run trained on {made.data_dir or made.dataset}; "
                f"scoring it against {given.data_dir or given.dataset} as asked"
            )
    if note:
        print(note, file=sys.stderr)
    scores = score_file(
        args.samples,
        cfg,
        resolve_device(args.device),
        args.k,
        progress=not args.no_progress,
        digit=digit if isinstance(digit, int) else None,
    )
    digits = (cfg.dataset == "mnist") and not cfg.data_dir
    print(format_table({args.samples.name[:16]: scores}, "digits" if digits else "classes"))
    print(READING)
    caution = small_sample_caution(scores.get("n_samples"))
    if caution:
        print(caution, file=sys.stderr)
    if args.json:
        owner.claim_files([args.json])  # a new file, or one mnistlab wrote
        write_json(args.json, scores)
    return 0


# Images `mnistlab score` takes: its features, distances and precision/recall neighbours grow with N
# (k-NN over N x N), and 100,000 is ten times the 10,000 a FID is usually measured on.
MAX_SCORED_IMAGES = 100_000


def _check_image_count(path: Path, limit: int) -> None:
    """Refuse a .npy of more than `limit` images from its header alone, before anything is read or
    allocated. A file whose header does not parse is left to the loader, which names what is wrong."""
    import numpy as np

    from mnistlab.core.errors import ConfigError

    if not Path(path).is_file():  # (a FIFO would block open(); the loader refuses what is no file)
        return
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            shape = read_header[np.lib.format.read_magic(f)](f)[0]
    except (OSError, ValueError, SyntaxError, TypeError, EOFError, KeyError):
        return
    if isinstance(shape, tuple) and shape and isinstance(shape[0], int) and shape[0] > limit:
        raise ConfigError(
            f"{path}: {shape[0]:,} images; mnistlab score takes at most {limit:,} (score a subset)"
        )


def cmd_latent(args: argparse.Namespace) -> int:
    from mnistlab.latent.run import LatentConfig, run_latent
    from mnistlab.training.loop import resolve_device

    extra = {"maps": names(args.maps)} if args.maps else {}
    cfg = LatentConfig(
        samplers=names(args.samplers),
        n_samples=args.n,
        components=args.components,
        seed=args.seed,
        score=not args.no_score,
        **extra,
    )
    section = run_latent(
        args.run_dir, cfg, resolve_device(args.device), progress=not args.no_progress, out=args.out
    )
    print(json.dumps({"run": str(args.run_dir), "cluster_quality": section["cluster_quality"]}, indent=2))
    return 0


def _digit(text: str) -> str:
    """--digit: a digit 0-9 or 'all', checked by argparse before any work."""
    if text == "all" or (len(text) == 1 and text.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give a digit 0-9 or 'all'")


def cmd_sample(args: argparse.Namespace) -> int:
    from mnistlab.latent.sample import sample_to_file
    from mnistlab.runs import owner
    from mnistlab.training.loop import resolve_device

    digit = None if args.digit in (None, "all") else int(args.digit)
    if args.out.suffix == ".npy":  # (another name is refused by sample_to_file)
        owner.claim_files([args.out.with_suffix(s) for s in (".npy", ".png", ".json")])  # new or mnistlab's
    result = sample_to_file(
        args.run_dir,
        args.out,
        args.sampler,
        args.n,
        args.seed,
        args.components,
        resolve_device(args.device),
        digit=digit,
        every_digit=args.digit == "all",
        steps=args.steps,
        guidance=args.guidance,
    )
    print(json.dumps(result, indent=2))
    if args.score:
        from mnistlab.latent.sample import score_file
        from mnistlab.metrics.generation import format_table
        from mnistlab.tasks import load_run_config

        _, exp = load_run_config(args.run_dir)
        scores = score_file(args.out, exp.data, resolve_device(args.device), seed=args.seed, digit=digit)
        print(format_table({result["sampler"]: scores}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistlab.core.errors import check_threads
    from mnistlab.web.app import serve

    check_threads(args.threads, "--threads")  # before anything is copied or loaded
    run_dir = args.run_dir
    if run_dir is None:
        from mnistlab.pretrained import shipped as pretrained

        run_dir = pretrained.bundle_path()
    serve(
        run_dir,
        args.host or "127.0.0.1",
        args.port,
        explicit_host=args.host is not None,
        threads=args.threads,
    )
    return 0
