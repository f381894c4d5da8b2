"""`mnistlab serve`: MNIST-style preprocessing, run-folder layouts, the JSON API through Starlette's
TestClient (including every bad-input path: always a 4xx with a one-line message, never a 500), a
real uvicorn on 127.0.0.1 under a few hundred requests, and the page in headless Chromium.

The tiny study folder (ae + probe + latent maps, dae, gan; trained for a few steps on MNIST slices) is
conftest.py's `serve_study`, built once for the session; single-run and missing-piece folders are made
from it by copying.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnistlab import cli, tasks
from mnistlab.core.errors import ConfigError
from mnistlab.models import code_samplers
from mnistlab.pretrained import shipped
from mnistlab.runs import folder as rundir
from mnistlab.web import preprocess
from mnistlab.web.app import bind, check_host, create_app
from mnistlab.web.errors import ApiError
from mnistlab.web.explorer import Explorer
from mnistlab.web.runs import Layout, find_runs, recorded_score, smoke_note
from tests.conftest import assert_one_line_error
from tests.serve_helpers import JSON_ROUTES, SEMI, browser_page, photo, png_bytes, running, stroke

TestClient = pytest.importorskip("starlette.testclient").TestClient

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "serve"  # gitignored


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------- preprocess


def test_preprocess_crops_scales_to_20_and_centres_the_mass():
    x = preprocess.preprocess_bytes(png_bytes(stroke()))
    assert x.shape == (28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    rows, cols = np.flatnonzero((x > 0.1).any(1)), np.flatnonzero((x > 0.1).any(0))
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20, 21)  # longer side ~ 20 px
    com = [float((x.sum(a) * np.arange(28)).sum() / x.sum()) for a in (1, 0)]
    assert all(abs(c - 14.0) <= 0.6 for c in com), com  # MNIST's centre, whole-pixel shifts


def test_preprocess_inverts_dark_ink_and_reads_transparent_backgrounds():
    light = preprocess.preprocess_bytes(png_bytes(stroke()))
    dark = preprocess.preprocess_bytes(png_bytes(stroke(dark_on_light=True)))
    assert np.abs(light - dark).max() < 1e-5
    rgba = np.zeros((200, 200, 4), np.uint8)  # black strokes on a transparent background
    rgba[..., 3] = stroke()
    assert np.abs(preprocess.preprocess_bytes(png_bytes(rgba, "RGBA")) - light).max() < 0.02


def test_mnist_digits_survive_preprocessing(explorer):
    """MNIST digits were made this way: upscaled test digits come back nearly as they were."""
    corr = []
    for digit in explorer.test_images[:20]:
        big = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC))
        back = preprocess.preprocess_bytes(png_bytes(big))
        corr.append(np.corrcoef(back.ravel(), digit.ravel() / 255.0)[0, 1])
    assert np.median(corr) > 0.9 and min(corr) > 0.7, np.round(corr, 2)


def _paper_kept(data: bytes) -> np.ndarray:
    """The preprocessing before the background was normalised: inverted when the border is light,
    then MNIST-style, the paper's grey kept as ink (what read a photo as the wrong digit)."""
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32) / 255.0
    if np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])) > 0.5:
        gray = 1.0 - gray
    return preprocess.mnist_style(gray)


def test_a_photo_of_a_digit_on_paper_is_read_as_that_digit(explorer, tmp_path):
    """Grey paper lit from one side, dark ink, sensor noise and JPEG: the background is estimated
    from the border and removed, so the digit comes out as MNIST draws it, and a classifier reads it
    as it reads the test digit itself, where the paper's grey box made it read something else. The
    reader is the shipped semi-supervised classifier (98% on the test set), not the serve study's
    seconds-long model."""
    reader = tasks.load_run(shipped.path("semi", root=tmp_path))
    clean = reader.classify(explorer.test_images[:16]).argmax(1).numpy()
    right = np.flatnonzero(clean == explorer.test_labels[:16])  # the test digits it reads right as they are
    assert len(right) >= 12
    images, labels = explorer.test_images[right], explorer.test_labels[right]
    new, old = [], []
    for i, digit in enumerate(images):
        data = photo(digit, seed=i)
        new.append(preprocess.preprocess_bytes(data))
        old.append(_paper_kept(data))
    new, old = np.stack(new), np.stack(old)  # (n, 28, 28) each, in [0, 1]
    corr = [np.corrcoef(x.ravel(), d.ravel())[0, 1] for x, d in zip(new, images, strict=True)]
    assert np.median(corr) > 0.9 and min(corr) > 0.7, np.round(corr, 2)  # as clean MNIST digits do
    assert (old.reshape(len(old), -1) > 0.1).mean() > 0.5  # before: the paper filled the frame
    read_new = reader.classify(torch.from_numpy(new)).argmax(1).numpy()
    read_old = reader.classify(torch.from_numpy(old)).argmax(1).numpy()
    assert np.array_equal(read_new, labels), (read_new, labels)
    assert (read_old != labels).mean() >= 0.5, (read_old, labels)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("faint", "too little contrast"),
        ("blank", "no digit"),
        ("around", "ink covers"),
        ("corner", "plain background"),
    ],
)
def test_an_upload_that_does_not_look_like_mnist_is_refused_with_the_reason(explorer, kind, words):
    digit = explorer.test_images[0]
    data = {
        "faint": lambda: photo(digit, ink=0.1),  # pencil too light for the page's grain
        "blank": lambda: png_bytes(np.full((60, 60), 180, np.uint8)),
        "around": lambda: photo(digit, frame="around"),  # the page on a dark table, all around
        "corner": lambda: photo(digit, frame="corner"),  # the table along two sides
    }[kind]()
    with pytest.raises(ApiError) as e:
        preprocess.preprocess_bytes(data)
    assert_one_line_error(e, words, status=422)


def test_a_drawing_that_touches_every_side_of_the_pad_is_accepted():
    """A big 0 drawn to the pad's edges is a digit, not a photo's surroundings."""
    yy, xx = np.mgrid[0:280, 0:280]
    r = np.hypot(yy - 139.5, xx - 139.5)
    ring = ((r > 122) & (r < 141)).astype(np.uint8) * 255  # touches all four sides
    x = preprocess.preprocess_bytes(png_bytes(ring))
    assert x.shape == (28, 28) and x.max() > 0.9 and (x > 0.5).mean() > 0.05


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 422, "empty"),
        (b"hello, this is not an image", 415, "not an image"),
        (png_bytes(np.zeros((5, 5), np.uint8)), 422, "5x5"),
        (png_bytes(np.zeros((10, 3000), np.uint8)), 422, "3000x10"),
        (png_bytes(np.zeros((60, 60), np.uint8)), 422, "no digit"),
        (png_bytes(stroke())[:200], 415, "damaged"),
        (b"\x89PNG" + b"\0" * (preprocess.MAX_UPLOAD_BYTES + 1), 413, "too large"),
    ],
)
def test_preprocess_refuses_bad_images(data, status, words):
    with pytest.raises(ApiError) as e:
        preprocess.preprocess_bytes(data)
    assert_one_line_error(e, words, status=status)


# ------------------------------------------------------------------------------------ run folders


def _copy_ae_only(study: Path, dest: Path) -> Path:
    """A single `mnistlab train ae` folder, without its probe and maps."""
    shutil.copytree(study / "ae", dest, ignore=shutil.ignore_patterns("probe", "latent", "tensorboard"))
    return dest


def test_layouts(serve_study, tmp_path):
    full = find_runs(serve_study)
    assert (full.encoder, full.denoiser, full.generators) == (
        serve_study / "ae",
        serve_study / "dae",
        {"gan": serve_study / "gan"},
    )
    assert not full.missing
    single = find_runs(serve_study / "ae")
    assert single.encoder == serve_study / "ae" and single.denoiser is None
    assert "single ae run" in single.missing["denoiser"]
    dae = find_runs(serve_study / "dae")
    assert dae.encoder == dae.denoiser == serve_study / "dae"
    with pytest.raises(ConfigError, match="holds no run"):
        find_runs(tmp_path)
    with pytest.raises(ConfigError, match="holds a 'probe' run"):
        find_runs(serve_study / "ae" / "probe")
    with pytest.raises(ConfigError, match="not a folder"):
        find_runs(tmp_path / "nope")


@pytest.fixture(scope="module")
def semi_run(tmp_path_factory) -> Path:
    """A seconds-long `mnistlab train semi` run: a classifier with an encoder and no decoder."""
    from mnistlab.tasks import load_experiment
    from mnistlab.training.semi import train_semi
    from tests.conftest import torch_threads

    out = tmp_path_factory.mktemp("serve-semi") / "semi"
    with torch_threads(1):
        train_semi(load_experiment("semi", "quick", SEMI), out, progress=False)
    return out


def test_a_classifier_without_a_decoder_is_served_for_what_it_has(semi_run):
    """A semi run (encoder + classifier): its codes are mapped and its own head predicts from them;
    what needs a decoder is unavailable with the reason, never a 500."""
    layout = find_runs(semi_run)
    assert layout.encoder == semi_run and "single semi run" in layout.missing["denoiser"]
    ex = Explorer(semi_run)
    run = tasks.load_run(semi_run)
    with TestClient(create_app(ex)) as c:
        info = c.get("/api/info").json()
        panels = info["panels"]
        assert panels["draw"]["available"] and panels["classify"]["available"] and panels["map"]["available"]
        for name in ("reconstruct", "sliders", "interpolate"):
            assert not panels[name]["available"] and "no decoder" in panels[name]["reason"], name
        assert info["maps"]["pca"] == {"available": True, "decodable": False, "axis": "PC"}
        assert "`mnistlab latent`" in info["maps"]["tsne"]["reason"]
        assert not info["samplers"]["gmm"]["available"] and "no decoder" in info["samplers"]["gmm"]["reason"]
        assert info["predictor"] == "the semi classifier itself" and info["start_index"] == 0
        assert info["probe_accuracy"] == rundir.read_summary(semi_run)["test"]["accuracy"]
        # The page predicts a test digit from its code: the run's own prediction.
        item = c.get("/api/test/3").json()
        probs = c.post("/api/classify", json={"code": item["code"]}).json()["probs"]
        want = run.classify(np.array([item["image"]], np.uint8))[0].numpy()
        assert np.abs(np.array(probs) - want).max() < 1e-3
        drawn = c.post("/api/classify", json={"png": base64.b64encode(png_bytes(stroke())).decode()})
        assert drawn.status_code == 200 and len(drawn.json()["probs"]) == 10
        click = c.post("/api/map/pca/click", json={"x": 0.0, "y": 0.0}).json()
        assert click["kind"] == "nearest"
        assert_one_line_error(c.post("/api/decode", json={"code": item["code"]}), "no decoder", status=409)
        r = c.post("/api/interpolate", json={"a": {"index": 1}, "b": {"index": 2}})
        assert_one_line_error(r, "no decoder", status=409)
        assert_one_line_error(c.post("/api/sample", json={"sampler": "gmm"}), "no decoder", status=409)
        out = c.post("/api/analyze", content=png_bytes(stroke())).json()
        assert "input" in out and "no decoder" in out["unavailable"]["reconstruct"]


def test_smoke_runs_are_named_and_default_runs_are_not(serve_study, tmp_path):
    """The banner's rule: a quick preset (run.json of a study, --preset of a command.txt), or a piece
    trained on fewer than 40,000 images."""
    note = smoke_note(serve_study, find_runs(serve_study))
    assert note is not None and "Smoke run" in note["text"] and "320 training images" in note["text"]
    assert {r["task"] for r in note["runs"]} == {"ae", "dae", "gan"}

    def run(name: str, n_train: int, command: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps({"n_train": n_train, "epochs": 40}))
        (folder / "command.txt").write_text(command)
        return folder

    full = run("full", 48_000, "mnistlab train ae --preset default --out runs/ae")
    assert smoke_note(full, Layout(full, None, {}, {})) is None
    quick = run("quick", 48_000, "mnistlab train ae --preset quick --set train.epochs=40")
    note = smoke_note(quick, Layout(quick, None, {}, {}))
    assert note["preset"] == "quick" and "'quick' preset" in note["text"]
    small = run("small", 5_000, "mnistlab train ae --preset=default")
    assert "5,000 training images" in smoke_note(small, Layout(small, None, {}, {}))["text"]
    (tmp_path / "run.json").write_text(json.dumps({"preset": "configs/quick.toml"}))
    assert smoke_note(tmp_path, Layout(full, None, {}, {}))["preset"] == "configs/quick.toml"


def test_recorded_scores_are_read_where_each_run_keeps_them(tmp_path):
    fid = {"fid_mnist": 4.29, "precision": 0.6, "recall": 0.8, "n_samples": 10_000, "note": "x"}
    layouts = {
        "gan": ({"test": fid}, ("gan", "prior"), "test"),
        "vae": ({"test": {"mse": 0.01}, "generation": {"prior": fid}}, ("vae", "prior"), "generation.prior"),
        "flow": ({"test": fid, "sampling": {"steps": 12}}, ("flow", "midpoint"), "test"),
        "ae": (
            {"latent": {"generation": {"rows": {"gmm": fid}}}},
            ("gmm", None),
            "latent.generation.rows.gmm",
        ),
    }
    for name, (summary, (sampler, default), where) in layouts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        score = recorded_score(tmp_path / name, sampler, default)
        assert score["fid_mnist"] == 4.29 and score["n_samples"] == 10_000 and "note" not in score, name
        assert score["where"] == f"{name}/summary.json: {where}", name
        assert score.get("steps") == (12 if name == "flow" else None)
    assert recorded_score(tmp_path / "ae", "uniform") is None  # not scored
    assert recorded_score(tmp_path / "missing", "gan", "prior") is None


def test_probe_head_reproduces_the_probes_test_accuracy(serve_study, explorer):
    """The head on raw codes (standardization recomputed and folded in) is the trained probe."""
    probs = explorer.classify(explorer.test_codes)
    acc = float((probs.argmax(1) == explorer.test_labels).mean())
    probe = json.loads((serve_study / "ae" / "probe" / "summary.json").read_text())
    reported = probe["linear_probe"]["test_acc"]
    assert abs(acc - reported) <= 1.0 / len(explorer.test_labels) + 1e-9, (acc, reported)


def test_saved_tsne_map_is_read_and_a_mismatched_one_is_refused(serve_study, tmp_path, explorer):
    assert set(explorer.maps) == {"pca", "tsne"}
    ae = _copy_ae_only(serve_study, tmp_path / "ae")
    (ae / "latent").mkdir()
    (ae / "latent" / "map_tsne.csv").write_text("index,label,tsne_1,tsne_2\n0,3,0.1,0.2\n")
    ex = Explorer(ae)
    assert "tsne" not in ex.maps and "does not match" in ex.missing["map:tsne"]
    assert ex.info()["maps"]["tsne"]["available"] is False


# ------------------------------------------------------------------------------------------- the API


def test_info_lists_every_panel(client, explorer):
    info = client.get("/api/info").json()
    assert all(p["available"] for p in info["panels"].values()), info["panels"]
    assert info["latent_dim"] == 10 and info["n_test"] == 150
    assert info["maps"]["pca"]["decodable"] and not info["maps"]["tsne"]["decodable"]
    here = {"uniform", "gaussian", "gmm", "gan"}  # the AE's code samplers and the study's GAN
    assert here <= set(info["samplers"]) and all(info["samplers"][k]["available"] for k in here)
    # generator tasks without a run in this folder (a conditional GAN, a plug-in) are listed, off
    assert not any(v["available"] for k, v in info["samplers"].items() if k not in here)
    assert all(lo < hi for lo, hi in zip(info["code_low"], info["code_high"]))


def test_analyze_a_drawing(client, explorer):
    r = client.post("/api/analyze?sigma=0.5&seed=3", content=png_bytes(stroke()))
    assert r.status_code == 200
    out = r.json()
    assert np.array(out["input"]).shape == (28, 28) and np.array(out["reconstruction"]).shape == (28, 28)
    assert (
        len(out["code"]) == 10
        and abs(sum(out["probs"]) - 1) < 1e-3
        and out["digit"] == int(np.argmax(out["probs"]))
    )
    assert set(out["positions"]) == {"pca", "tsne"} and out["unavailable"] == {}
    noisy, denoised = np.array(out["noisy"]), np.array(out["denoised"])
    assert noisy.shape == denoised.shape == (28, 28) and not np.array_equal(noisy, np.array(out["input"]))
    again = client.post("/api/analyze?sigma=0.5&seed=3", content=png_bytes(stroke())).json()
    assert again["noisy"] == out["noisy"]  # seeded noise


def test_encode_decode_classify_agree_with_the_models(client, explorer):
    image = explorer.test_images[5].tolist()
    enc = client.post("/api/encode", json={"image": image}).json()
    code = np.array(enc["code"], dtype=np.float32)
    np.testing.assert_allclose(code, explorer.test_codes[5], atol=1e-4)
    dec = client.post("/api/decode", json={"code": enc["code"]}).json()
    with torch.inference_mode():
        want = code_samplers.decode(explorer.ae.decoder, code[None])[0]
    assert np.abs(np.array(dec["image"]) - want.astype(int)).max() <= 1
    by_image = client.post("/api/classify", json={"image": image}).json()
    by_code = client.post("/api/classify", json={"code": enc["code"]}).json()
    assert by_image["digit"] == by_code["digit"] and np.allclose(
        by_image["probs"], by_code["probs"], atol=1e-3
    )
    png = base64.b64encode(png_bytes(stroke())).decode()
    assert client.post("/api/encode", json={"png": "data:image/png;base64," + png}).status_code == 200
    den = client.post("/api/denoise", json={"image": image, "sigma": 0.5, "seed": 1}).json()
    assert {"input", "noisy", "denoised"} <= set(den)


def test_samplers_are_seeded(client):
    for name in ("uniform", "gaussian", "gmm", "gan"):
        a = client.post("/api/sample", json={"sampler": name, "n": 6, "seed": 4}).json()
        assert np.array(a["images"]).shape == (6, 28, 28), name
        b = client.post("/api/sample", json={"sampler": name, "n": 6, "seed": 4}).json()
        c = client.post("/api/sample", json={"sampler": name, "n": 6, "seed": 5}).json()
        assert a["images"] == b["images"] and a["images"] != c["images"], name


def test_interpolation_ends_are_the_decoded_ends(client, explorer):
    out = client.post("/api/interpolate", json={"a": {"index": 2}, "b": {"index": 7}, "steps": 5}).json()
    assert np.array(out["images"]).shape == (5, 28, 28)
    np.testing.assert_allclose(out["codes"][0], explorer.test_codes[2], atol=1e-4)
    np.testing.assert_allclose(out["codes"][-1], explorer.test_codes[7], atol=1e-4)
    mixed = client.post(
        "/api/interpolate",
        json={"a": {"code": out["codes"][0]}, "b": {"image": explorer.test_images[7].tolist()}},
    )
    assert mixed.status_code == 200 and len(mixed.json()["images"]) == 10


def test_maps_hover_data_and_clicks(client, explorer):
    pca = client.get("/api/map/pca").json()
    assert len(pca["x"]) == len(pca["labels"]) == 150 and pca["decodable"]
    click = client.post("/api/map/pca/click", json={"x": pca["x"][3], "y": pca["y"][3]}).json()
    assert click["kind"] == "decoded" and np.array(click["image"]).shape == (28, 28)
    tsne = client.get("/api/map/tsne").json()
    near = client.post("/api/map/tsne/click", json={"x": tsne["x"][9] + 1e-3, "y": tsne["y"][9]}).json()
    assert near["kind"] == "nearest" and near["label"] == tsne["labels"][near["index"]]
    item = client.get(f"/api/test/{near['index']}").json()
    assert item["image"] == explorer.test_images[near["index"]].tolist()
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


BIG_JSON = '{"png": "' + "A" * (3 << 20) + '"}'
BAD = [
    ("post", "/api/decode", {"content": b"{not json"}, 400, "malformed JSON"),
    ("post", "/api/decode", {"json": [1, 2]}, 400, "must be an object"),
    ("post", "/api/decode", {"json": {}}, 400, "'code' must be a non-empty list"),
    ("post", "/api/decode", {"json": {"code": [0.0] * 4}}, 422, "has 10 numbers"),
    ("post", "/api/decode", {"json": {"code": [1e6] * 10}}, 422, "out of range"),
    ("post", "/api/decode", {"json": {"code": ["a"] * 10}}, 400, "numbers only"),
    ("post", "/api/decode", {"content": b'{"code": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}'}, 422, "non-finite"),
    ("post", "/api/sample", {"json": {"sampler": "vae"}}, 422, "unknown sampler"),
    ("post", "/api/sample", {"json": {}}, 422, "'sampler' must be a string"),
    ("post", "/api/sample", {"json": {"sampler": "gmm", "n": 0}}, 422, "'n' must be in 1..256"),
    ("post", "/api/sample", {"json": {"sampler": "gmm", "n": 257}}, 422, "'n' must be in 1..256"),
    ("post", "/api/sample", {"json": {"sampler": "gmm", "n": "5"}}, 400, "whole number"),
    ("post", "/api/sample", {"json": {"sampler": "gmm", "seed": -1}}, 422, "'seed'"),
    (
        "post",
        "/api/interpolate",
        {"json": {"a": {"index": 0}, "b": {"index": 1}, "steps": 1}},
        422,
        "'steps'",
    ),
    ("post", "/api/interpolate", {"json": {"a": {"index": 0}}}, 422, "'b' must be one of"),
    ("post", "/api/interpolate", {"json": {"a": {"index": 0}, "b": {"index": 10**6}}}, 404, "out of range"),
    ("post", "/api/interpolate", {"json": {"a": {"foo": 1}, "b": {"index": 1}}}, 422, "'a' must be one of"),
    ("post", "/api/encode", {"json": {"image": [[0] * 28] * 27}}, 422, "28 rows of 28"),
    ("post", "/api/encode", {"json": {"image": [[300] * 28] * 28}}, 422, "0..255"),
    ("post", "/api/encode", {"json": {"image": [[0] * 28] * 28, "png": "x"}}, 422, "exactly one"),
    ("post", "/api/encode", {"json": {"png": "***"}}, 400, "not valid base64"),
    ("post", "/api/encode", {"json": {"png": base64.b64encode(b"plain text").decode()}}, 415, "not an image"),
    ("post", "/api/encode", {"content": BIG_JSON.encode()}, 413, "too large"),
    ("post", "/api/classify", {"json": {"code": [0.0] * 3}}, 422, "has 10 numbers"),
    ("post", "/api/denoise", {"json": {"image": [[0] * 28] * 28, "sigma": 9}}, 422, "'sigma'"),
    ("post", "/api/analyze", {"content": b"GIF89a but not really"}, 415, "not an image"),
    ("post", "/api/analyze", {"content": b""}, 422, "empty upload"),
    ("post", "/api/analyze", {"content": b"\0" * (preprocess.MAX_UPLOAD_BYTES + 10)}, 413, "too large"),
    ("post", "/api/analyze?sigma=abc", {"content": png_bytes(stroke())}, 400, "?sigma"),
    ("post", "/api/analyze?sigma=5", {"content": png_bytes(stroke())}, 422, "'sigma'"),
    ("post", "/api/analyze", {"content": png_bytes(np.zeros((4, 4), np.uint8))}, 422, "4x4"),
    ("get", "/api/map/umap", {}, 404, "no map 'umap'"),
    ("post", "/api/map/umap/click", {"json": {"x": 0, "y": 0}}, 404, "no map"),
    ("post", "/api/map/pca/click", {"json": {"y": 0}}, 400, "'x' must be a finite number"),
    ("get", "/api/test/100000", {}, 404, "out of range"),
    ("get", "/api/decode", {}, 405, "GET is not allowed"),
    ("get", "/api/nothing", {}, 404, "no such page"),
]


@pytest.mark.parametrize("method, path, kwargs, status, words", BAD, ids=[f"{b[1]}-{b[4]}" for b in BAD])
def test_bad_input_is_a_4xx_with_one_line(client, method, path, kwargs, status, words):
    assert_one_line_error(getattr(client, method)(path, **kwargs), words, status=status)


FIELDS = ["code", "image", "png", "sampler", "n", "seed", "steps", "sigma", "a", "b", "x", "y", "index"]
NUMBERS = st.one_of(st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8), st.sampled_from(["gmm", "gan", "pca"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=30), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(JSON_ROUTES),
    body=st.one_of(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5), VALUES),
)
def test_random_json_never_makes_a_500(client, path, body):
    r = client.post(path, content=json.dumps(body).encode())
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert_one_line_error(r)


def test_deeply_nested_json_is_a_400(client):
    r = client.post("/api/decode", content=b"[" * 100_000 + b"]" * 100_000)
    assert_one_line_error(r, "malformed JSON", status=400)


def test_missing_pieces_are_409_and_named_on_the_page(serve_study, tmp_path):
    ae_only = Explorer(_copy_ae_only(serve_study, tmp_path / "ae"))
    with TestClient(create_app(ae_only)) as c:
        info = c.get("/api/info").json()
        assert (
            not info["panels"]["classify"]["available"]
            and "mnistlab probe" in info["panels"]["classify"]["reason"]
        )
        assert (
            not info["panels"]["denoise"]["available"]
            and "single ae run" in info["panels"]["denoise"]["reason"]
        )
        assert (
            "mnistlab latent" in info["maps"]["tsne"]["reason"] and not info["samplers"]["gan"]["available"]
        )
        image = {"image": [[0] * 28] * 28}
        for path, body in (
            ("/api/classify", image),
            ("/api/denoise", image),
            ("/api/sample", {"sampler": "gan"}),
        ):
            assert_one_line_error(c.post(path, json=body), "unavailable", status=409)
        out = c.post("/api/analyze", content=png_bytes(stroke())).json()
        assert "reconstruction" in out and set(out["unavailable"]) == {"classify", "denoise"}
    gan_only = Explorer(serve_study / "gan")
    with TestClient(create_app(gan_only)) as c:
        assert not c.get("/api/info").json()["panels"]["draw"]["available"]
        assert c.post("/api/sample", json={"sampler": "gan", "n": 2}).status_code == 200
        assert c.post("/api/decode", json={"code": [0.0] * 10}).status_code == 409
        assert c.get("/api/map/pca").status_code == 409
        assert c.post("/api/analyze", content=png_bytes(stroke())).json()["unavailable"].keys() == {
            "reconstruct",
            "denoise",
        }


# ---------------------------------------------------------------------------------- host and port


def test_only_loopback_unless_the_host_is_named(caplog):
    check_host("127.0.0.1", explicit=False)
    check_host("localhost", explicit=False)
    check_host("::1", explicit=False)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0"):
        check_host("0.0.0.0", explicit=False)
    with caplog.at_level("WARNING", logger="mnistlab"):
        check_host("0.0.0.0", explicit=True)
    assert "no authentication" in caplog.text


def test_a_busy_port_and_a_bad_folder_are_one_line_errors(tmp_path, capsys):
    sock = bind("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP  # so asyncio turns Nagle off (else +40 ms per keep-alive request)
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
    assert cli.main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert_one_line_error(capsys, "not a folder")
    assert (
        cli.main(["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 2
    )  # named host, empty folder
    assert_one_line_error(capsys, "holds no run")


# ------------------------------------------------------------------------- a real server on 127.0.0.1


def test_load_a_few_hundred_requests_without_an_error(server, explorer):
    httpx = pytest.importorskip("httpx2")
    drawing = png_bytes(stroke())
    code = explorer.test_codes[0].tolist()
    calls = [
        ("post", "/api/analyze?sigma=0.5", {"content": drawing}, 200),
        ("post", "/api/decode", {"json": {"code": code}}, 200),
        ("post", "/api/classify", {"json": {"code": code}}, 200),
        ("post", "/api/sample", {"json": {"sampler": "gmm", "n": 16}}, 200),
        ("post", "/api/sample", {"json": {"sampler": "gan", "n": 16}}, 200),
        ("post", "/api/interpolate", {"json": {"a": {"index": 1}, "b": {"index": 2}}}, 200),
        ("post", "/api/map/tsne/click", {"json": {"x": 0.0, "y": 0.0}}, 200),
        ("get", "/api/test/3", {}, 200),
        ("post", "/api/decode", {"json": {"code": [1e9] * 10}}, 422),  # bad input under load stays a 4xx
    ]

    def worker(k: int) -> list[tuple[int, int]]:
        seen = []
        with httpx.Client(base_url=server, timeout=30) as c:
            for i in range(50):
                method, path, kwargs, want = calls[(k + i) % len(calls)]
                seen.append((getattr(c, method)(path, **kwargs).status_code, want))
        return seen

    with ThreadPoolExecutor(6) as pool:
        results = [r for rs in pool.map(worker, range(6)) for r in rs]
    assert len(results) == 300
    assert all(got == want for got, want in results), [r for r in results if r[0] != r[1]][:5]
    with httpx.Client(base_url=server) as c:  # the loopback server refuses other Host names (DNS rebinding)
        assert c.get("/api/info", headers={"Host": "evil.example"}).status_code == 400


def wait_until(condition, timeout: float = 15.0) -> None:
    """Poll from Python: the page's CSP forbids the eval that page.wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.05)


def test_the_page_in_headless_chromium(server, tmp_path):
    with browser_page() as page:
        errors, foreign = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: foreign.append(r.url) if not r.url.startswith((server, "data:")) else None,
        )
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)

        # Draw a stroke with the mouse: a prediction and its probabilities appear.
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + 150, box["y"] + 50)
        page.mouse.down()
        for t in range(20):
            page.mouse.move(box["x"] + 145 - t, box["y"] + 50 + 10 * t)
        page.mouse.up()
        page.wait_for_selector("#prediction[data-digit]", timeout=15_000)
        assert page.inner_text("#prediction") in list("0123456789")
        assert page.locator("#probs .bar").count() == 10

        # A touch stroke goes through the same pointer events.
        page.click("#clear")
        count = int(page.get_attribute("body", "data-analyses"))
        for kind, (x, y) in (
            ("pointerdown", (60, 60)),
            ("pointermove", (120, 200)),
            ("pointerup", (120, 200)),
        ):
            page.dispatch_event(
                "#pad",
                kind,
                {
                    "pointerType": "touch",
                    "pointerId": 7,
                    "bubbles": True,
                    "clientX": box["x"] + x,
                    "clientY": box["y"] + y,
                },
            )
        wait_until(lambda: int(page.get_attribute("body", "data-analyses")) > count)

        # Click the map: a decoded point appears.
        page.locator("#map").hover(position={"x": 230, "y": 230})
        page.locator("#map").click(position={"x": 237, "y": 237})
        page.wait_for_selector("#pick[data-kind='decoded']", timeout=15_000)

        # Move a slider: the decoded digit is redrawn.
        page.click("#pick-to-sliders")
        page.wait_for_selector("#slider-digit[data-updates]", timeout=15_000)
        before = int(page.get_attribute("#slider-digit", "data-updates"))
        page.focus("#z0")
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        wait_until(lambda: int(page.get_attribute("#slider-digit", "data-updates")) > before)

        # Upload a PNG: analysed like a drawing.
        count = int(page.get_attribute("body", "data-analyses"))
        page.set_input_files(
            "#upload", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": png_bytes(stroke())}]
        )
        wait_until(lambda: int(page.get_attribute("body", "data-analyses")) > count)

        # Samplers filled; a new batch; an interpolation.
        assert page.locator("#sampler-gmm .grid canvas").count() == 16
        assert page.locator("#sampler-gan .grid canvas").count() == 16
        page.click("#new-batch")
        page.click("#random-ends")
        page.wait_for_selector("#strip canvas", timeout=15_000)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for path in (tmp_path / "explorer.png", ARTIFACTS / "explorer.png"):
            page.screenshot(path=str(path), full_page=True)
        assert (tmp_path / "explorer.png").stat().st_size > 10_000
        assert page.inner_text("#status") == ""
        assert errors == [] and foreign == [], (errors, foreign)

        # A file that is not an image: the page says why, in one line.
        page.set_input_files(
            "#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a png"}]
        )
        wait_until(lambda: "not an image" in page.inner_text("#status"))


def test_the_page_names_the_panels_a_gan_run_cannot_fill(serve_study):
    with running(create_app(Explorer(serve_study / "gan"))) as url, browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        notes = page.inner_text("#unavailable")
        assert "draw:" in notes and "single gan run" in notes
        assert "off" in page.get_attribute("#panel-draw", "class")
        assert "Unavailable" in page.inner_text("#panel-draw .unavailable-reason")
        assert "off" not in page.get_attribute("#panel-samplers", "class")
        page.wait_for_selector("#sampler-gan .grid canvas")
        assert page.locator("#sampler-gan .grid canvas").count() == 16
        assert "Unavailable" in page.inner_text("#sampler-gmm")
        assert errors == []


def test_a_digit_is_refused_by_samplers_that_are_not_conditional(client):
    for sampler in ("gan", "gmm"):
        r = client.post("/api/sample", json={"sampler": sampler, "n": 2, "digit": 3})
        assert_one_line_error(r, "not conditional", status=422)
    r = client.post("/api/sample", json={"sampler": "gan", "n": 2, "digit": 12})
    assert r.status_code == 422
    assert client.get("/api/info").json()["samplers"]["gan"]["conditional"] is False
