"""Command line: parse, build the config, call one function per subcommand. Nothing else lives here.

Exit codes: 0 done, 2 bad input (one-line message), 3 training stopped on a non-finite loss,
130 interrupted (the last epoch's checkpoint is kept; rerun with --resume).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from mnistlab.errors import ConfigError

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3

# Task -> (module, function) that trains it into a run folder: f(exp, out, resume, progress) -> summary.
# A trainer that also takes `on_epoch_end=None` (handed to `fit`) can be pruned by `mnistlab search --optuna`.
TRAINERS = {
    "ae": ("mnistlab.train.autoencoder", "train_autoencoder"),
    "dae": ("mnistlab.train.denoise", "train_dae"),
    "gan": ("mnistlab.train.gan_run", "train_gan"),
    "classifier": ("mnistlab.train.classifier", "train_classifier"),
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="default",
        help="preset name (quick, seed, default) or path to a .toml preset [default]",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set model.latent_dim=2 (repeatable)",
    )
    p.add_argument("--data-dir", help="folder with the four IDX files (gzip or raw) to use instead of MNIST")
    p.add_argument("--dataset", help="a known dataset name (mnist, fashion-mnist, kmnist) from the cache")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistlab", description="Train, evaluate and explore autoencoders and GANs on MNIST-like digits."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model into a run folder",
                           description="Train a model; the run folder gets config, metrics, checkpoints, figures, summary.")  # fmt: skip
    train.add_argument("task", choices=sorted(TRAINERS),
                       help="what to train: ae (convolutional autoencoder), dae (denoising autoencoder), "
                       "gan (the report's GAN), classifier (the reference classifier)")  # fmt: skip
    _add_config_args(train)
    train.add_argument("--out", type=Path, help="run folder [runs/<task>-<preset>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument("--baseline", type=Path, metavar="AE_RUN",
                       help="dae only: a plain autoencoder run to compare against on the same noisy test images")  # fmt: skip

    ev = sub.add_parser("eval", help="evaluate a trained run on the test set",
                        description="Recompute test metrics and figures of a run folder from its checkpoint.")  # fmt: skip
    ev.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab train`")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ev.add_argument("--baseline", type=Path, metavar="AE_RUN",
                    help="dae runs: a plain autoencoder run fed the same noisy test images, for comparison")  # fmt: skip
    ev.add_argument("--sigmas", metavar="S1,S2,...",
                    help="dae runs: test noise levels [the run's noise.eval_sigmas: 0.25,0.5,0.75,1]")  # fmt: skip

    probe = sub.add_parser("probe", help="train classifiers on a trained encoder (linear probe, fine-tuning)",
                           description="Frozen encoder + one linear layer (with kNN, logistic-regression, pixel "
                           "and PCA baselines); --finetune trains the whole encoder too; --labels-per-class "
                           "measures accuracy against the number of labels, pretrained against from scratch.")  # fmt: skip
    probe.add_argument("run_dir", type=Path, help="a run folder of `mnistlab train ae` or `train dae`")
    probe.add_argument("--finetune", action="store_true", help="also fine-tune encoder + head on all labels")
    probe.add_argument("--labels-per-class", metavar="N1,N2,...",
                       help="label efficiency: e.g. 10,100,1000,all (seeded, balanced labelled subsets)")  # fmt: skip
    probe.add_argument("--preset", default="default",
                       help="preset whose [probe.*] tables set the probe training (quick, seed, default or a .toml)")  # fmt: skip
    probe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a probe setting, e.g. --set linear.lr=0.01 or options.shift=2")  # fmt: skip
    probe.add_argument("--out", type=Path, help="output folder [RUN_DIR/probe]")
    probe.add_argument("--overwrite", action="store_true", help="replace an existing probe output folder")
    probe.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    probe.add_argument("--no-progress", action="store_true", help="no progress bars")

    _add_search_parser(sub)
    _add_generation_parsers(sub)
    _add_run_parsers(sub)

    srv = sub.add_parser("serve", help="a local web page to explore a trained run (draw, maps, samplers)",
                         description="Serve the explorer of a run folder (a `mnistlab run` study folder, or one ae, "
                         "dae or gan run): draw or upload a digit, latent maps, sliders, samplers, interpolation, "
                         "and the JSON API the page uses. Listens on 127.0.0.1 unless --host names another address.")  # fmt: skip
    srv.add_argument(
        "run_dir", type=Path, help="a run folder of `mnistlab run` or `mnistlab train ae|dae|gan`"
    )
    srv.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port) [8000]")
    srv.add_argument("--host", help="address to listen on; anything but loopback must be named here, and "
                     "anyone who can reach it can use the page [127.0.0.1]")  # fmt: skip
    srv.add_argument("--threads", type=int, default=1, help="torch threads for inference [1]")

    data = sub.add_parser(
        "data", help="inspect or download datasets", description="Inspect or download datasets."
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = dsub.add_parser("info", help="show where a dataset comes from and its sizes",
                           description="Load a dataset (verifying checksums) and print its sizes.")  # fmt: skip
    info.add_argument("--data-dir", help="a folder with the four IDX files")
    info.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    dl = dsub.add_parser("download", help="download a known dataset into the cache, verifying checksums",
                         description="Download a known dataset (mnist, fashion-mnist, kmnist) into the cache.")  # fmt: skip
    dl.add_argument("name", help="dataset name")
    dl.add_argument("--dest", type=Path, help="target folder [~/.cache/mnistlab/<name> or $MNISTLAB_CACHE]")
    return parser


def _add_generation_parsers(sub) -> None:
    """`score` (any .npy of digits) and `reference` (the classifier the scores are measured with)."""
    sc = sub.add_parser("score", help="score a .npy file of generated digits (FID-MNIST, precision, ...)",
                        description="Score uint8 images (N, 28, 28) in a .npy file against the test set: "
                        "FID-MNIST (reference-classifier features; not comparable with Inception FID), "
                        "precision/recall (k-NN manifolds), class coverage, nearest-training-image distance.")  # fmt: skip
    sc.add_argument("samples", type=Path, help="a .npy file holding uint8 images (N, 28, 28)")
    sc.add_argument("--data-dir", help="dataset folder (the real images and the reference's dataset)")
    sc.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    sc.add_argument("--k", type=int, default=3, help="neighbours for precision/recall [3]")
    sc.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    sc.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    sc.add_argument("--no-progress", action="store_true", help="no progress bars")
    ref = sub.add_parser("reference", help="show or export the reference classifier",
                         description="Show the reference classifier used for a dataset (training and "
                         "caching it first for a dataset other than MNIST), or export a classifier run's "
                         "weights as a reference file.")  # fmt: skip
    rsub = ref.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    ri = rsub.add_parser("info", help="name, file and test accuracy of the reference for a dataset")
    ri.add_argument("--data-dir", help="a folder with the four IDX files")
    ri.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    ri.add_argument("--no-progress", action="store_true", help="no progress bars")
    rx = rsub.add_parser("export", help="write a classifier run's weights as a reference .safetensors")
    rx.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab train classifier`")
    rx.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    lat = sub.add_parser("latent", help="latent maps, samplers, interpolation and their metrics for a run",
                         description="Encode the test set of an autoencoder run: PCA / t-SNE (/ UMAP) maps "
                         "with cluster quality, samples from each code sampler, interpolations, and "
                         "FID-MNIST / precision / recall / class coverage per sampler beside the floor "
                         "(test set vs train set). Writes figures/latent/ and summary.json['latent'].")  # fmt: skip
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
    sam = sub.add_parser("sample", help="draw N digits from a run into a .npy file and a PNG grid",
                         description="Draw N digits from a trained run (ae, dae: codes from a fitted sampler, "
                         "decoded; gan: noise from its prior, decoded) into OUT (.npy, uint8 (N, 28, 28)) and a PNG grid beside it.")  # fmt: skip
    sam.add_argument("run_dir", type=Path, help="a run folder that can generate (ae, dae, gan)")
    sam.add_argument("--sampler", help="ae/dae: gmm, gaussian or uniform [gmm]; gan: prior [prior]")
    sam.add_argument("--n", type=int, required=True, help="how many digits")
    sam.add_argument("--out", type=Path, required=True, help="the .npy file to write")
    sam.add_argument("--components", type=int, default=10, help="gmm components [10]")
    sam.add_argument("--seed", type=int, default=0)
    sam.add_argument("--score", action="store_true", help="also print the generation metrics of the digits")
    sam.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _add_run_parsers(sub) -> None:
    """`run` (the whole study into one folder, resumable) and `report` (its HTML/Markdown report)."""
    r = sub.add_parser("run", help="the whole study: AE (+ search), DAE, probes, latent, GAN, then the report",
                       description="Run every stage into one run folder (search/, ae/, ae/probe/, ae/latent/, "
                       "dae/, gan/, run.json) and write report.html and report.md. The same command again "
                       "skips finished stages and resumes an interrupted one from its checkpoint.")  # fmt: skip
    r.add_argument("--preset", default="quick", help="quick, seed, default or a .toml preset [quick]")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a stage's setting, e.g. --set ae.train.epochs=2, --set gan.gan.final_samples=500, "
                   "--set run.search=false, --set data.train_limit=5000 (every stage) (repeatable)")  # fmt: skip
    r.add_argument("--data-dir", help="folder with the four IDX files (gzip or raw) to use instead of MNIST")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    r.add_argument("--out", type=Path, help="run folder [runs/run-<preset>]")
    r.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep = sub.add_parser("report", help="write report.html and report.md of a `mnistlab run` folder",
                         description="Rebuild the self-contained HTML report (figures embedded) and the Markdown "
                         "report from a run folder's JSON and PNG files, without training.")  # fmt: skip
    rep.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab run`")


def cmd_run(args: argparse.Namespace) -> int:
    from mnistlab.pipeline import run_study

    out = args.out or Path("runs") / f"run-{Path(args.preset).stem}"
    state = run_study(out, args.preset, args.overrides, args.data_dir, args.device,
                      progress=not args.no_progress, report=not args.no_report)  # fmt: skip
    stages = {s["name"]: s["seconds"] for s in state["stages"]}
    report = str(out / "report.html") if not args.no_report else None
    print(
        json.dumps(
            {"run": str(out), "status": state["status"], "seconds": stages, "report": report}, indent=2
        )
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mnistlab.report.build import write_report

    paths = write_report(args.run_dir)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _add_search_parser(sub) -> None:
    s = sub.add_parser("search", help="grid or Optuna search over any config fields",
                       description="Train one run folder per trial and write results.csv/.md, val_curves.png and "
                       "best.toml (a preset). Without --grid and --optuna it runs the report's grid: "
                       "train.lr=1e-3,2e-2 x train.weight_decay=1e-4,5e-3 x model.latent_dim=2,10,100. "
                       "Re-running the same search skips finished trials and resumes interrupted ones.")  # fmt: skip
    s.add_argument("task", choices=sorted(TRAINERS), help="what to train in each trial")
    _add_config_args(s)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config field and its values, e.g. --grid train.lr=1e-3,2e-2 (repeatable)")  # fmt: skip
    s.add_argument("--objective", default="val_loss",
                   help="val_loss: best validation loss (minimised; any val_* metric works); probe_acc: "
                   "logistic regression on the frozen codes, fit on train, scored on validation (maximised)")  # fmt: skip
    s.add_argument("--out", type=Path, help="search folder [runs/search-<task>-<preset>]")
    s.add_argument(
        "--workers",
        type=int,
        help="local worker processes, one torch thread each unless train.threads is set "
        "[one per core, at most 4: measured faster than one worker with all the threads]",
    )
    o = s.add_argument_group("Optuna")
    o.add_argument("--optuna", action="store_true", help="TPE sampling with median pruning instead of a grid")
    o.add_argument("--trials", type=int, help="trials the study should hold in all [20]")
    o.add_argument("--space", type=Path, help="search space TOML [configs/spaces/<task>.toml]")
    o.add_argument("--storage", help="any SQLAlchemy RDB URL, e.g. postgresql+psycopg2://user@host/db "
                   "[sqlite file study.db in the search folder]")  # fmt: skip
    o.add_argument("--study-name", help="study name inside the storage [<task>-search]")
    o.add_argument("--seed", type=int, help="sampler seed for a repeatable study; local worker k uses seed+k. "
                   "Leave it out when several machines share a study [fresh per process]")  # fmt: skip
    o.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    o.add_argument("--heartbeat", type=int, default=60, help="seconds between worker heartbeats; a trial "
                   "silent for twice this is failed and retried [60]")  # fmt: skip


def cmd_search(args: argparse.Namespace) -> int:
    from mnistlab.errors import ConfigError
    from mnistlab.search import default_workers, run_grid
    from mnistlab.search_space import REPORT_GRID, default_space_path, load_space, parse_grid

    exp_overrides = _experiment_overrides(args)
    workers = default_workers() if args.workers is None else args.workers
    kind = "optuna" if args.optuna else "search"
    out = args.out or Path("runs") / f"{kind}-{args.task}-{Path(args.preset).stem}"
    if args.optuna:
        from mnistlab.optuna_search import StudySpec, run_optuna

        if args.grid:
            raise ConfigError("--grid and --optuna exclude each other; declare Optuna ranges in --space")
        space = load_space(args.space or default_space_path(args.task))
        n_trials = 20 if args.trials is None else args.trials
        spec = StudySpec(task=args.task, out=out, space=tuple(space), n_trials=n_trials, preset=args.preset,
                         overrides=tuple(exp_overrides), objective=args.objective, storage=args.storage or "",
                         study_name=args.study_name or "", seed=args.seed, prune=not args.no_prune,
                         heartbeat_s=args.heartbeat, progress=not args.no_progress)  # fmt: skip
        rows = run_optuna(spec, workers)
    else:
        if args.space or args.storage or args.study_name or args.trials is not None:
            raise ConfigError("--trials, --space, --storage and --study-name need --optuna")
        grid = parse_grid(args.grid) if args.grid else REPORT_GRID
        rows = run_grid(args.task, grid, out, args.preset, exp_overrides, args.objective, workers,
                        progress=not args.no_progress)  # fmt: skip
    print((out / "results.md").read_text(), end="")
    best = rows[0] if rows and rows[0].get(args.objective) is not None else None
    print(
        json.dumps(
            {"search": str(out), "best": best and best["trial"], "preset": best and str(out / "best.toml")}
        )
    )
    return 0


def _experiment_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    return overrides


def _experiment(args: argparse.Namespace, task: str):
    from mnistlab.config import load_experiment

    return load_experiment(task, args.preset, _experiment_overrides(args))


def cmd_train(args: argparse.Namespace) -> int:
    module, function = TRAINERS[args.task]
    trainer = getattr(importlib.import_module(module), function)
    exp = _experiment(args, args.task)
    out = args.out or Path("runs") / f"{args.task}-{Path(args.preset).stem}"
    extra = {}
    if args.baseline is not None:
        if args.task != "dae":
            raise ConfigError(
                f"--baseline compares a denoising autoencoder with a plain one; not for {args.task}"
            )
        extra["baseline"] = args.baseline
    from mnistlab import distributed

    # Under torchrun (WORLD_SIZE > 1): join the process group; rank 0 writes the run folder and prints.
    world = distributed.init(exp.train.device)
    if world.enabled:
        distributed.check_batch(exp.train.batch_size, world)  # before rank 0 creates the run folder
    summary = trainer(exp, out, resume=args.resume, progress=not args.no_progress, **extra)
    distributed.shutdown()  # only after success: a failed rank exits and torchrun stops the others
    if world.is_main:
        print(json.dumps({"run": str(out), "test": summary.get("test")}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mnistlab import rundir
    from mnistlab.config import load_run_config
    from mnistlab.data import load
    from mnistlab.train.autoencoder import evaluate_autoencoder, load_autoencoder
    from mnistlab.train.loop import resolve_device

    task, _ = load_run_config(args.run_dir)
    if task == "dae":
        from mnistlab.noise import parse_sigmas
        from mnistlab.train.denoise import eval_dae_run

        sigmas = parse_sigmas(args.sigmas) if args.sigmas else None
        result = eval_dae_run(args.run_dir, args.device, args.baseline, sigmas)
        print(
            json.dumps({"run": str(args.run_dir), "test": result["test"], "denoising": result["denoising"]})
        )
        return 0
    if args.baseline is not None or args.sigmas:
        raise ConfigError(f"{args.run_dir} holds a {task!r} run; --baseline and --sigmas apply to dae runs")
    exp, model = load_autoencoder(args.run_dir)
    device = resolve_device(args.device)
    result = evaluate_autoencoder(args.run_dir, model.to(device), load(exp.data), device)
    summary = {**rundir.read_summary(args.run_dir), **result}
    rundir.write_summary(args.run_dir, summary)
    print(json.dumps({"run": str(args.run_dir), "test": result["test"]}, indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mnistlab.data import DataConfig, download, load

    if args.data_command == "download":
        print(download(args.name, args.dest))
        return 0
    data = load(DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0))
    info = {"source": data.source, "train": len(data.train), "test": len(data.test),
            "train_class_counts": data.train.labels.bincount(minlength=10).tolist()}  # fmt: skip
    print(json.dumps(info, indent=2))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from mnistlab.train.probe import parse_labels_per_class
    from mnistlab.train.probe_run import run_probe

    labels = parse_labels_per_class(args.labels_per_class) if args.labels_per_class else ()
    summary = run_probe(args.run_dir, args.preset, args.overrides, out=args.out, finetune=args.finetune,
                        labels_per_class=labels, overwrite=args.overwrite, device=args.device,
                        progress=not args.no_progress)  # fmt: skip
    print(json.dumps({k: summary[k] for k in ("out", "linear_probe", "finetune", "baselines",
                                              "label_efficiency") if k in summary}, indent=2))  # fmt: skip
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mnistlab.data import DataConfig
    from mnistlab.fsio import write_json
    from mnistlab.generation import format_table, score_file
    from mnistlab.train.loop import resolve_device

    cfg = DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0)
    scores = score_file(args.samples, cfg, resolve_device(args.device), args.k, progress=not args.no_progress)
    print(format_table({args.samples.name[:16]: scores}))
    if args.json:
        write_json(args.json, scores)
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from mnistlab.data import DataConfig
    from mnistlab.reference import export_reference, load_reference

    if args.reference_command == "export":
        sha = export_reference(args.run_dir, args.out)
        print(json.dumps({"file": str(args.out), "sha256": sha}, indent=2))
        return 0
    cfg = DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0)
    ref = load_reference(cfg, progress=not args.no_progress)
    print(json.dumps({"name": ref.name, "file": ref.source, "test_accuracy": ref.test_accuracy}, indent=2))
    return 0


def cmd_latent(args: argparse.Namespace) -> int:
    from mnistlab.explore import LatentConfig, run_latent
    from mnistlab.train.loop import resolve_device

    def names(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    extra = {"maps": names(args.maps)} if args.maps else {}
    cfg = LatentConfig(samplers=names(args.samplers), n_samples=args.n, components=args.components,
                       seed=args.seed, score=not args.no_score, **extra)  # fmt: skip
    section = run_latent(
        args.run_dir, cfg, resolve_device(args.device), progress=not args.no_progress, out=args.out
    )
    print(json.dumps({"run": str(args.run_dir), "cluster_quality": section["cluster_quality"]}, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from mnistlab.sampling import sample_to_file
    from mnistlab.train.loop import resolve_device

    result = sample_to_file(args.run_dir, args.out, args.sampler, args.n, args.seed, args.components,
                            resolve_device(args.device))  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.score:
        from mnistlab.config import load_run_config
        from mnistlab.generation import format_table, score_file

        _, exp = load_run_config(args.run_dir)
        scores = score_file(args.out, exp.data, resolve_device(args.device), seed=args.seed)
        print(format_table({result["sampler"]: scores}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistlab.web.app import serve

    serve(args.run_dir, args.host or "127.0.0.1", args.port, explicit_host=args.host is not None,
          threads=args.threads)  # fmt: skip
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "data": cmd_data, "probe": cmd_probe, "search": cmd_search,
            "score": cmd_score, "reference": cmd_reference, "latent": cmd_latent, "sample": cmd_sample,
            "run": cmd_run, "report": cmd_report}  # fmt: skip
COMMANDS["serve"] = cmd_serve


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    from mnistlab.data import DataError
    from mnistlab.errors import ConfigError
    from mnistlab.rundir import cli_command
    from mnistlab.train.checkpoint import CheckpointError
    from mnistlab.train.loop import NonFiniteLossError

    try:
        with cli_command(argv):
            return COMMANDS[args.command](args)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"mnistlab: training diverged: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt:
        again = "rerun the same command to resume" if args.command == "run" else "rerun with --resume"
        print(f"mnistlab: interrupted; the last finished epoch is checkpointed, {again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
