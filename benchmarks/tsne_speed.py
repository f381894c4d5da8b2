"""t-SNE of the 10,000 test codes of an autoencoder run: scikit-learn's TSNE against openTSNE, in one
process, on the same codes, with the same thread count. Prints each method's time (wall and CPU,
the fastest of --repeats runs: CPU time is the steadier number on a shared machine), its ratio to
scikit-learn, and the quality of each map (leave-one-out 5-NN accuracy and silhouette on the digit
labels, as `mnistlab latent` reports them), so a faster setting that hurts the map shows up.

    PYTHONPATH=src nice -n 10 python -m benchmarks.tsne_speed [RUN_DIR] [--threads 1] [--repeats 1] [--n N]

Methods: sklearn (TSNE defaults: Barnes-Hut, PCA init, 250 + 750 iterations), opentsne-default
(openTSNE defaults: PCA init, Annoy neighbours, 250 + 500 iterations, FFT gradients at this size),
and openTSNE variants "EE+N[:neighbors]" (EE early-exaggeration + N normal iterations, FFT, PCA
init, exact neighbours unless named); the variant latent.TSNEConfig uses is marked "(mnistlab)".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.common import result
from mnistlab.data.datasets import DataConfig, load
from mnistlab.latent import maps as latent
from mnistlab.latent.run import load_encoder_run
from mnistlab.models import code_samplers
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder


def test_codes(run_dir: Path | None, n: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codes (10000, d) and labels of the full MNIST test set (whatever test_limit the run used), or of
    its first n images. Without a run, the codes of a seeded untrained encoder (latent 10): speed is
    what is measured then, the map scores mean little."""
    if run_dir is None:
        torch.manual_seed(0)
        encoder, data_cfg = ConvAutoencoder(AEConfig(latent_dim=10)).encoder, DataConfig(val_fraction=0.0)
    else:
        _, exp, model = load_encoder_run(run_dir)
        encoder = model.encoder
        data_cfg = DataConfig(dataset=exp.data.dataset, data_dir=exp.data.data_dir, val_fraction=0.0)
    test = load(dataclasses.replace(data_cfg, test_limit=n)).test
    return code_samplers.encode(encoder, test.images), test.labels.numpy()


def methods(seed: int, threads: int, variants: list[str]):
    """name -> function(codes) -> (N, 2). Variants "EE+N[:neighbors]" are openTSNE with PCA init, FFT
    gradients, EE early-exaggeration and N normal iterations, exact neighbour search unless another
    is named; the one equal to latent.TSNEConfig() is marked."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    def sk(codes):
        return SkTSNE(init="pca", random_state=seed, n_jobs=threads).fit_transform(codes)

    def ot_default(codes):
        return np.asarray(OpenTSNE(random_state=seed, n_jobs=threads).fit(codes))

    out = {"sklearn": sk, "opentsne-default": ot_default}
    ours = latent.TSNEConfig()
    for v in variants:
        iters, _, neighbors = v.partition(":")
        ee, n = (int(x) for x in iters.split("+"))
        cfg = latent.TSNEConfig(
            early_exaggeration_iter=ee,
            n_iter=n,
            negative_gradient_method="fft",
            neighbors=neighbors or "exact",
            n_jobs=threads,
        )
        mine = cfg == dataclasses.replace(ours, negative_gradient_method="fft", n_jobs=threads)
        out[f"opentsne-{v}" + (" (mnistlab)" if mine else "")] = lambda codes, cfg=cfg: latent.tsne_map(
            codes, seed, cfg
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, nargs="?", help="an ae or dae run folder [an untrained encoder]")
    p.add_argument("--n", type=int, default=0, help="only the first N test images [all 10,000]")
    p.add_argument("--threads", type=int, default=1, help="threads for every method (torch, BLAS, t-SNE) [1]")
    p.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest counts [1]")
    p.add_argument("--only", help="comma-separated subset of methods (name prefixes)")
    p.add_argument(
        "--variants",
        default="250+500,150+200,100+150",
        help="openTSNE variants EE+N[:neighbors] to time (exact neighbours unless named) [250+500,150+200,100+150]",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    codes, labels = test_codes(args.run_dir, args.n)
    codes = codes.astype(np.float64)
    source = args.run_dir or "an untrained encoder"
    print(f"{len(codes)} codes of dimension {codes.shape[1]} from {source}; {args.threads} thread(s)")
    results: dict = {"n": len(codes), "dim": int(codes.shape[1]), "threads": args.threads, "methods": {}}
    results["raw"] = latent.cluster_quality(codes, labels, 5, args.seed)
    todo = methods(args.seed, args.threads, args.variants.split(","))
    if args.only:
        todo = {k: v for k, v in todo.items() if k.startswith(tuple(args.only.split(",")))}
    with threadpool_limits(limits=args.threads):
        for _ in range(args.repeats):
            for name, fn in todo.items():
                t0, c0 = time.perf_counter(), time.process_time()
                xy = fn(codes)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                prev = results["methods"].get(name)
                if prev is None:
                    q = latent.cluster_quality(xy, labels, 5, args.seed)  # same seed: same map each repeat
                    prev = results["methods"][name] = {"seconds": seconds, "cpu_seconds": cpu, **q}
                prev["seconds"] = round(min(prev["seconds"], seconds), 2)
                prev["cpu_seconds"] = round(min(prev["cpu_seconds"], cpu), 2)
                print(f"  {name:<28} {seconds:7.1f} s wall {cpu:7.1f} s CPU", flush=True)
    base = results["methods"].get("sklearn")
    head = f"\n{'method':<28}{'wall s':>8}{'CPU s':>8}{'x sklearn (wall)':>18}{'x sklearn (CPU)':>17}"
    print(head + f"{'5-NN acc':>10}{'silhouette':>12}")
    for name, r in results["methods"].items():
        r["speedup_vs_sklearn"] = round(base["seconds"] / r["seconds"], 2) if base else None
        r["cpu_speedup_vs_sklearn"] = round(base["cpu_seconds"] / r["cpu_seconds"], 2) if base else None
        ratios = (
            f"{r['speedup_vs_sklearn']:>17.2f}x{r['cpu_speedup_vs_sklearn']:>16.2f}x"
            if base
            else f"{'-':>18}{'-':>17}"
        )
        print(
            f"{name:<28}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}{ratios}{r['knn_accuracy']:>10.4f}{r['silhouette']:>12.4f}"
        )
    raw = results["raw"]
    label = f"raw latent ({results['dim']}-D)"
    print(f"{label:<28}{'':>51}{raw['knn_accuracy']:>10.4f}{raw['silhouette']:>12.4f}")
    ours = next((r for name, r in results["methods"].items() if name.endswith("(mnistlab)")), None)
    if base and ours:  # the suite's columns (benchmarks.common.result): points per second, wall time
        n = results["n"]
        results |= result("tsne", baseline=n / base["seconds"], mnistlab=n / ours["seconds"], unit="points/s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
