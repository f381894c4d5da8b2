"""A VAE run's second stage trained again, after its first, on the first stage's frozen codes
(`training/variational.fit_code_prior`: Dai & Wipf's sequential two stages), then its prior samples scored as
`mnistlab eval` scores them: the experiment behind docs/results.md's "The VAE's second stage after the
first" (could a VAE started from the study's autoencoder train its second stage in fewer CPU seconds
than the default's joint training, and keep FID-MNIST <= 6.72?).

    PYTHONPATH=src python -m benchmarks.vae_second_stage RUN [--epochs 40] [--batch-size 256]
        [--lr 4e-3] [--schedule cosine] [--kl-warmup 0] [--width 512] [--seed 0] [--threads 1] [--json F]

The VAE task trains its second stage this way with `vae.code_prior_epochs` (with its own schedules:
`--schedule onecycle --kl-warmup 0.3` for the default preset's).

RUN is a VAE run folder (a one-stage run too: --width gives the new stage's width). --width 0 trains
the run's own second stage further instead of a fresh one. The run folder is only read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from mnistlab.data.datasets import load
from mnistlab.metrics.generation import score_samples
from mnistlab.models.code_samplers import encode
from mnistlab.models.vae import CodePrior
from mnistlab.tasks import load_run_config
from mnistlab.tasks import vae as vae_task
from mnistlab.training.reference import load_reference
from mnistlab.training.variational import fit_code_prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a VAE run folder")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--schedule", default="cosine", choices=("cosine", "onecycle", "constant"))
    ap.add_argument(
        "--kl-warmup", type=float, default=0.0, help="share of the steps the KL weight ramps over"
    )
    ap.add_argument("--width", type=int, default=512, help="a fresh second stage this wide; 0: the run's own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, exp = load_run_config(args.run)
    model = vae_task._load_model(args.run, exp)
    data = load(exp.data)
    t0 = time.process_time()
    moments = torch.from_numpy(encode(model.encoder.body, data.train.images))  # (N, 2d): mean, log-variance
    mu, logvar = moments.chunk(2, dim=1)
    torch.manual_seed(args.seed)  # the fresh stage's initial weights
    if args.width:
        model.code_prior = CodePrior(model.cfg.latent_dim, args.width)
    if model.code_prior is None:
        raise SystemExit(f"{args.run} has no second stage to train further: give --width")
    history = fit_code_prior(
        model.code_prior,
        mu,
        logvar.mul(0.5).exp(),
        args.epochs,
        args.batch_size,
        args.lr,
        args.seed,
        args.schedule,
        kl_warmup=args.kl_warmup,
    )
    seconds = time.process_time() - t0
    samples = vae_task.prior_samples(model, args.samples, exp.vae.sample_seed, "cpu")
    scores = score_samples(
        samples, load_reference(exp.data, "cpu"), data.test, data.train, seed=exp.vae.sample_seed
    )
    shares = scores.get("class_hist") or [float("nan")]
    which = f"fresh, width {args.width}" if args.width else "the run's own"
    print(
        f"{args.run}: second stage {which}, "
        f"{args.epochs} epochs at batch {args.batch_size}, lr {args.lr:g} ({args.schedule}, KL warm-up "
        f"{args.kl_warmup:g}): {seconds:.0f} CPU s; "
        f"prior FID-MNIST {scores['fid_mnist']:.2f}, precision {scores['precision']:.3f}, recall "
        f"{scores['recall']:.3f}, digits {min(shares):.1%} to {max(shares):.1%}"
    )
    if args.json:
        write_result(
            args.json,
            {
                "name": "vae_second_stage",
                **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "cpu_seconds": round(seconds, 1),
                "last_epoch": history[-1],
                "fid_mnist": scores["fid_mnist"],
                "precision": scores["precision"],
                "recall": scores["recall"],
            },
        )


if __name__ == "__main__":
    main()
