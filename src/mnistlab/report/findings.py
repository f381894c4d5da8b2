"""The report's opening: what the study found, in three to five sentences made from the run folder's own
numbers (never typed in here), and how to read each measure once (which way is better, what it means).

`findings` takes the summaries key_results reads (one per finished task stage, by name) and the probe
stage's summary; a stage that has not finished gives no sentence."""

from __future__ import annotations

from typing import Any

from mnistlab.metrics.collapse import CollapseConfig
from mnistlab.plots.content import num, pct
from mnistlab.training.denoise import OWN  # the denoiser's column in its summary's table

# A digit under this share of a generator's samples is named as rarely generated (the collapse
# detector's threshold: half of a digit's 10% in MNIST).
RARE_SHARE = CollapseConfig().min_class_share

# How to read the numbers: each measure once, with the way that is better.
READING = (
    "Test MSE (lower is better) and PSNR in dB (higher is better; +3 dB is half the squared error): how "
    "close a reconstruction is to the test digit, pixel by pixel. SSIM (0 to 1, higher is better): how "
    "alike their local structure is.",
    "Accuracy (higher is better): the share of the 10,000 test digits a classifier labels right. A frozen "
    "probe trains one linear layer on the encoder's code; fine-tuning also trains the encoder.",
    "FID-MNIST (lower is better; 0: the same feature statistics as real test digits): the distance between "
    "generated and real digits in the reference classifier's features. It grows as the sample count "
    "shrinks, so compare FIDs of equal counts only; it is not comparable with the Inception FID of papers.",
    "Precision (higher is better): the share of samples that look like real digits (they lie among real "
    "ones). Recall (higher is better): the share of the real digits' variety the samples cover. High "
    "precision with low recall: a few kinds of digit, drawn well.",
    "KL(class | uniform) (lower is better; 0: ten equal shares): how far the mix of digits the samples are "
    "read as is from 10% each; rarest and commonest digit give the same as two shares (10% each is even). "
    f"A digit under {RARE_SHARE:.0%} counts as rarely generated.",
    "Diversity / real's (near 1 is best): the samples' mean distance to each other over real digits'; well "
    "below 1, the samples look alike (mode collapse). Nearest training image (L2): near 0, the samples "
    "copy training digits; no side is better.",
    "Arrows in a table's header say the same: ↑ higher is better, ↓ lower is better; the best value of "
    "such a column is in bold.",
)


def findings(summaries: dict[str, dict[str, Any]], probe: dict[str, Any], enc: str | None) -> list[str]:
    """At most five sentences of what the run found, each number read from `summaries` (stage name ->
    summary.json) and `probe` (the probe stage's summary); [] when nothing has finished."""
    ae = summaries.get(enc or "") or {}
    out = [s for s in (_encoder(ae, enc, probe.get("latent_dim")), _classifier(probe)) if s]
    out += [s for name, summary in summaries.items() if (s := _denoiser(name, summary))]
    out += _generators(summaries)
    return out[:5]


def _encoder(ae: dict[str, Any], name: str | None, latent_dim: Any) -> str:
    test = ae.get("test") or {}
    if test.get("psnr") is None:
        return ""
    code = f"a code of {num(latent_dim)} numbers" if latent_dim else "its code"
    return (
        f"The autoencoder ({name}) rebuilds test digits from {code} at a PSNR of {num(test['psnr'])} dB "
        f"(test MSE {num(test.get('mse'))}, SSIM {num(test.get('ssim'))})."
    )


def _classifier(probe: dict[str, Any]) -> str:
    lp, ft = probe.get("linear_probe") or {}, probe.get("finetune") or {}
    if lp.get("test_acc") is None:
        return ""
    text = f"One linear layer on its frozen code labels {pct(lp['test_acc'])} of the test digits right"
    if ft.get("test_acc") is not None:
        text += f", and fine-tuning the encoder with it reaches {pct(ft['test_acc'])}"
    return text + "."


def _denoiser(name: str, s: dict[str, Any]) -> str:
    table = [r for r in s.get("denoising") or [] if isinstance(r, dict) and OWN in r]
    if not table:
        return ""
    row = max(table, key=lambda r: r.get("sigma", 0))  # the hardest noise level it was tested at
    own, noisy = row[OWN].get("psnr"), (row.get("noisy") or {}).get("psnr")
    if not all(isinstance(v, int | float) for v in (own, noisy)):
        return ""
    return (
        f"The denoiser ({name}) lifts noisy test digits (noise sigma {num(row.get('sigma'))}) from a PSNR of "
        f"{noisy:.1f} dB to {own:.1f} dB, a gain of {own - noisy:.1f} dB."  # dB: tenths say enough
    )


def _scores(s: dict[str, Any]) -> dict[str, Any] | None:
    """A generator's headline scores: its final samples' ("test"), else its prior samples'."""
    test = s.get("test")
    if isinstance(test, dict) and test.get("fid_mnist") is not None:
        return test
    prior = (s.get("generation") or {}).get("prior")
    return prior if isinstance(prior, dict) and prior.get("fid_mnist") is not None else None


def _generators(summaries: dict[str, dict[str, Any]]) -> list[str]:
    scored = {name: sc for name, s in summaries.items() if (sc := _scores(s))}
    if not scored:
        return []
    ranked = sorted(scored.items(), key=lambda kv: kv[1]["fid_mnist"])
    counts = {sc.get("n_samples") for sc in scored.values()}
    listed = ", ".join(f"{name} {num(sc['fid_mnist'])}" for name, sc in ranked)
    if len(scored) == 1:
        name, sc = ranked[0]
        first = (
            f"The generator {name} scores a FID-MNIST of {num(sc['fid_mnist'])} on {num(sc.get('n_samples'))} "
            f"samples (lower is better), precision {num(sc.get('precision'))} and recall {num(sc.get('recall'))}."
        )
    elif len(counts) == 1:
        name, sc = ranked[0]
        first = (
            f"Of the generators, {name} draws the most MNIST-like digits: FID-MNIST (lower is better, "
            f"{num(sc.get('n_samples'))} samples each) {listed}."
        )
    else:
        listed = ", ".join(
            f"{name} {num(sc['fid_mnist'])} ({num(sc.get('n_samples'))} samples)" for name, sc in ranked
        )
        first = (
            f"The generators' FID-MNIST (lower is better): {listed}; scored on different sample counts, "
            "they are not ranked here."
        )
    return [first, _coverage(scored)]


def _coverage(scored: dict[str, dict[str, Any]]) -> str:
    """The most uneven generator's digit mix (the lowest rarest-digit share), or that all are even."""
    hists = {n: sc["class_hist"] for n, sc in scored.items() if sc.get("class_hist")}
    if not hists:
        return ""
    name, hist = min(hists.items(), key=lambda kv: min(kv[1]))
    rare = [d for d, h in enumerate(hist) if h < RARE_SHARE]
    low, high = hist.index(min(hist)), hist.index(max(hist))
    span = f"from {pct(hist[low])} (digit {low}) to {pct(hist[high])} (digit {high})"
    if not rare:
        who = "every generator draws" if len(hists) > 1 else f"{name} draws"
        return f"Digit coverage is even: {who} each digit at {pct(RARE_SHARE)} or more; {name}'s shares run {span}."
    return (
        f"The most uneven generator, {name}, draws {len(rare)} digit{'s' if len(rare) > 1 else ''} "
        f"({', '.join(map(str, rare))}) under {pct(RARE_SHARE)} of its samples each, where 10% would be even; "
        f"its shares run {span}."
    )
