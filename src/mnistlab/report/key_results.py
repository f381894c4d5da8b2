"""The report's first screen: the headline measure of each stage beside the original report's own
number, and, for a smoke-sized run, a banner saying what the preset is. Read from the run folder by
role (the encoder stage, the denoiser, each generator), like every other section."""

from __future__ import annotations

from typing import Any

from mnistlab.report.content import RunFolder, Section, Table, num, pct
from mnistlab.training.denoise import OWN  # the denoiser's column in its summary's table

# The original study's own numbers (its written report), labelled as such wherever they appear.
ORIGINAL_PROBE, ORIGINAL_SUPERVISED = 0.8941, 0.9912
# Wall time of `mnistlab run --preset default` on a 2-core CPU, measured for its first five stages
# (issue "whole default study", 2026-11-28): what the banner quotes for the full study.
DEFAULT_MINUTES = 26


def _epochs(n: Any) -> str:
    return "-" if n is None else f"{num(n)} epoch{'' if n == 1 else 's'}"


def _share_range(hist: list[float]) -> str:
    return f"{pct(min(hist))} to {pct(max(hist))}" if hist else "-"


def key_results_section(run: RunFolder, roles: dict[str, frozenset[str]]) -> Section:
    sec = Section("key", "Key results")
    st = run.state
    enc = run.encoder
    ae = run.json(f"{enc}/summary.json") if enc else {}
    limit = run.json(f"{enc}/summary.json").get("n_train") if enc else None
    if str(st.get("preset", "")).endswith("quick") or (limit and limit < 40_000):
        sec.banner = (
            f"Preset {st.get('preset')!r} is a smoke run ({num(limit)} training images, a few epochs): its numbers "
            f"show that every stage works, not what the models reach. The full study is `mnistlab run --preset "
            f"default` (about {DEFAULT_MINUTES} minutes on a 2-core CPU for its first five stages); its measured "
            "results are in docs/results.md."
        )
    rows: list[list[str]] = []
    if ae.get("test"):
        t = ae["test"]
        rows.append([f"{enc}: test reconstruction", f"MSE {num(t.get('mse'))}, PSNR {num(t.get('psnr'))} dB", "-",
                     f"{_epochs(ae.get('epochs'))}, {num(ae.get('n_train'))} images"])  # fmt: skip
    probe = run.json(f"{run.folder('probe')}/summary.json") if run.done("probe") else {}
    lp, ft = probe.get("linear_probe") or {}, probe.get("finetune") or {}
    if lp:
        rows.append(["frozen encoder + linear layer, test accuracy", pct(lp.get("test_acc")), pct(ORIGINAL_PROBE),
                     f"{_epochs(lp.get('epochs'))} on the {num(probe.get('latent_dim'))}-d code"])  # fmt: skip
    if ft:
        rows.append(["fine-tuned encoder, test accuracy", pct(ft.get("test_acc")),
                     f"{pct(ORIGINAL_SUPERVISED)} (its supervised CNN)", _epochs(ft.get("epochs"))])  # fmt: skip
    for name in run.trained:
        r = roles.get(name, frozenset())
        s = run.json(f"{name}/summary.json") if run.done(name) else {}
        if not s:
            continue
        if "denoiser" in r:
            row = _denoiser_row(name, s)
            if row:
                rows.append(row)
        if "generator" in r:
            rows += _generator_rows(name, s)
    if not rows:
        sec.missing = "No stage has finished yet, so there is no result to show."
    sec.tables.append(Table("The headline of each stage (details in the sections below)",
                            ["measure", "this run (measured)", "original report (its own numbers)", "trained"],
                            rows))  # fmt: skip
    return sec


def _denoiser_row(name: str, s: dict[str, Any]) -> list[str] | None:
    table = s.get("denoising") or []
    if not table:
        return None
    row = max(table, key=lambda r: r.get("sigma", 0))  # the report's sigma 1 is the largest default level
    own = row.get(OWN, {})
    noisy = row.get("noisy", {})
    return [f"{name}: PSNR at noise sigma {num(row.get('sigma'))}",
            f"{num(own.get('psnr'))} dB (noisy input {num(noisy.get('psnr'))} dB)", "- (shown as pictures)",
            _epochs(s.get("epochs"))]  # fmt: skip


def _generator_rows(name: str, s: dict[str, Any]) -> list[list[str]]:
    rows = []
    test = s.get("test") if isinstance(s.get("test"), dict) and "fid_mnist" in s.get("test", {}) else None
    if test:
        rows.append([f"{name}: FID-MNIST of its samples (lower is better)", num(test.get("fid_mnist")), "- (not measured)",
                     _epochs(s.get("epochs"))])  # fmt: skip
        rows.append([f"{name}: digit shares of its samples", _share_range(test.get("class_hist") or []),
                     "digits 0, 2, 5, 6, 8 poorly generated (by eye)", ""])  # fmt: skip
    prior = (s.get("generation") or {}).get("prior")
    if prior:
        rows.append([f"{name}: FID-MNIST of prior samples", num(prior.get("fid_mnist")), "- (no VAE in the report)",
                     _epochs(s.get("epochs"))])  # fmt: skip
    return rows
