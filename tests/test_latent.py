"""Latent maps, cluster quality, samplers and interpolation (pure functions), then `mnistlab latent`
and `mnistlab sample` on tiny autoencoder runs, including every bad-input path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.latent import maps as latent
from mnistlab.latent.run import LatentConfig, run_latent
from mnistlab.models import code_samplers
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.tasks import load_experiment
from mnistlab.training.autoencoder import train_autoencoder
from tests.conftest import assert_one_line_error

TINY = ["data.train_limit=400", "data.test_limit=150", "train.epochs=1", "train.batch_size=64"]
FAST_TSNE = latent.TSNEConfig(early_exaggeration_iter=50, n_iter=50)  # tiny sets need few iterations


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ae"
    train_autoencoder(load_experiment("ae", "quick", TINY), out, progress=False)
    return out


@pytest.fixture(scope="module")
def ae2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ae2"
    train_autoencoder(load_experiment("ae", "quick", [*TINY, "model.latent_dim=2"]), out, progress=False)
    return out


def _blobs(n_per=30, dim=4, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(10, dim))
    labels = np.repeat(np.arange(10), n_per)
    return (centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))).astype(np.float32), labels


# ------------------------------------------------------------------------------ pure functions


def test_encode_decode_shapes_and_modes():
    model = ConvAutoencoder(AEConfig(latent_dim=3)).train()
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    codes = code_samplers.encode(model.encoder, images, batch_size=3)
    assert codes.shape == (7, 3) and codes.dtype == np.float32
    out = code_samplers.decode(model.decoder, codes, batch_size=4)
    assert out.shape == (7, 28, 28) and out.dtype == np.uint8
    assert model.training  # the mode is restored


def test_cluster_quality_separated_versus_shuffled():
    points, labels = _blobs()
    good = latent.cluster_quality(points, labels, k=5)
    assert good["silhouette"] > 0.9 and good["knn_accuracy"] == 1.0
    bad = latent.cluster_quality(points, np.random.default_rng(1).permutation(labels), k=5)
    assert bad["silhouette"] < 0.05 and bad["knn_accuracy"] < 0.3


@pytest.mark.parametrize("name", ["pca", "tsne"])
def test_maps_keep_clusters(name):
    points, labels = _blobs(n_per=12, dim=6)
    xy = latent.tsne_map(points, 0, FAST_TSNE) if name == "tsne" else latent.pca_map(points, 0)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    assert latent.cluster_quality(xy, labels, k=3)["knn_accuracy"] > 0.9


def test_umap_without_the_extra_is_a_clear_error():
    if latent.umap_available():
        pytest.skip("umap-learn is installed here")
    assert "umap" not in latent.default_maps()
    with pytest.raises(ConfigError, match=r"mnistlab\[umap\]"):
        latent.umap_map(np.zeros((20, 3)))


def test_samplers_fit_the_codes():
    rng = np.random.default_rng(0)
    codes = rng.normal(loc=[1.0, -2.0, 5.0], scale=[1.0, 0.5, 2.0], size=(3000, 3)).astype(np.float32)
    u = code_samplers.fit_sampler("uniform", codes).sample(2000, np.random.default_rng(1))
    assert (u >= codes.min(0)).all() and (u <= codes.max(0)).all()
    g = code_samplers.fit_sampler("gaussian", codes).sample(4000, np.random.default_rng(1))
    np.testing.assert_allclose(g.mean(0), codes.mean(0), atol=0.1)
    np.testing.assert_allclose(g.std(0), codes.std(0), rtol=0.1)
    two = np.concatenate([codes[:1500] - 20, codes[1500:] + 20])
    gmm = code_samplers.fit_sampler("gmm", two, components=2)
    s1, s2 = gmm.sample(500, np.random.default_rng(3)), gmm.sample(500, np.random.default_rng(3))
    np.testing.assert_array_equal(s1, s2)  # seeded
    assert 0.35 < (s1[:, 0] > 0).mean() < 0.65  # both modes, not sorted by component
    assert (np.abs(s1[:, 0]) > 10).mean() > 0.95


def test_sampler_errors():
    with pytest.raises(ConfigError, match="unknown sampler 'normal'; choose one of uniform, gaussian, gmm"):
        code_samplers.fit_sampler("normal", np.zeros((10, 2)))
    with pytest.raises(ConfigError, match="at least 2 codes"):
        code_samplers.fit_sampler("gaussian", np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="components"):
        code_samplers.fit_sampler("gmm", np.zeros((10, 2)), components=0)


def test_interpolation_pairs_and_grid():
    line = latent.interpolate(np.zeros(3, np.float32), np.ones(3, np.float32), 5)
    np.testing.assert_allclose(line[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
    labels = np.array([0, 0, 1, 1, 2])
    pairs = latent.pick_pairs(labels, 6, seed=0)
    assert len(pairs) == 6 and all(labels[i] != labels[j] for i, j in pairs)
    assert latent.pick_pairs(np.zeros(5, int), 3) == []
    grid = latent.manifold_grid(np.random.default_rng(0).normal(size=(100, 2)), size=4)
    assert grid.shape == (16, 2) and grid[0, 1] > grid[-1, 1] and grid[0, 0] < grid[3, 0]
    with pytest.raises(ConfigError, match="2-D latent"):
        latent.manifold_grid(np.zeros((10, 3)))


# ------------------------------------------------------------------------------------ commands


def test_run_latent_writes_maps_samples_and_evidence(ae_run, capsys):
    cfg = LatentConfig(maps=("pca", "tsne"), n_samples=120, pairs=3, steps=5, tsne=FAST_TSNE)
    section = run_latent(ae_run, cfg)
    figs = ae_run / "figures" / "latent"
    for name in (
        "map_pca.png",
        "map_tsne.png",
        "map_pca.csv",
        "samples_gmm.png",
        "interpolation.png",
        "generation_metrics.png",
    ):
        assert (figs / name).is_file(), name
    rows = (figs / "map_tsne.csv").read_text().splitlines()
    assert rows[0] == "index,label,tsne_1,tsne_2" and len(rows) == 151
    quality = section["cluster_quality"]
    assert set(quality) == {"raw", "pca", "tsne"} and 0 <= quality["tsne"]["knn_accuracy"] <= 1
    gen = json.loads((ae_run / "summary.json").read_text())["latent"]["generation"]
    assert gen["reference"].startswith("reference-mnist-") and "Inception" in gen["fid_note"]
    assert set(gen["rows"]) == {"test (floor)", "reconstruction", "uniform", "gaussian", "gmm"}
    assert gen["rows"]["gmm"]["n_samples"] == 120
    assert 0 <= gen["rows"]["reconstruction"]["label_accuracy"] <= 1
    # One epoch on 320 images: the floor must still beat the report's uniform sampler.
    assert gen["rows"]["test (floor)"]["fid_mnist"] < gen["rows"]["uniform"]["fid_mnist"]
    assert "FID-MNIST" in capsys.readouterr().out


def test_run_latent_on_a_2d_latent_plots_it_directly(ae2_run):
    section = run_latent(ae2_run, LatentConfig(maps=("pca",), pairs=2, steps=3, score=False))
    figs = ae2_run / "figures" / "latent"
    assert (figs / "manifold.png").is_file() and (figs / "map_latent.png").is_file()
    assert set(section["cluster_quality"]) == {"raw", "latent", "pca"}
    assert "generation" not in section


def test_latent_config_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown map 'mds'"):
        LatentConfig(maps=("mds",))
    with pytest.raises(ConfigError, match="unknown sampler"):
        LatentConfig(samplers=("normal",))


def _fake_run(tmp_path, task):
    run = tmp_path / f"{task}-run"
    run.mkdir()
    (run / "config.toml").write_text(f'task = "{task}"\n')
    return run


def test_cli_latent_errors(tmp_path, capsys):
    assert cli.main(["latent", str(_fake_run(tmp_path, "classifier"))]) == 2
    assert_one_line_error(capsys, "has no encoder")
    assert cli.main(["latent", str(tmp_path / "nothing")]) == 2
    assert_one_line_error(capsys, "not a run folder")
    assert cli.main(["latent", str(_fake_run(tmp_path, "ae")), "--no-score"]) == 2
    assert_one_line_error(capsys, "has no checkpoint")


def test_cli_sample_writes_npy_and_png(ae_run, tmp_path, capsys):
    out = tmp_path / "s" / "gauss.npy"
    argv = ["sample", str(ae_run), "--sampler", "gaussian", "--n", "30", "--out", str(out), "--score"]
    assert cli.main(argv) == 0
    images = np.load(out)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert out.with_suffix(".png").is_file()
    printed = capsys.readouterr().out
    assert '"sampler": "gaussian"' in printed and "FID-MNIST" in printed
    assert cli.main([*argv[:-1]]) == 0  # same seed, same digits
    np.testing.assert_array_equal(np.load(out), images)
    assert cli.main(["sample", str(ae_run), "--n", "5", "--out", str(tmp_path / "d.npy")]) == 0
    assert '"sampler": "gmm"' in capsys.readouterr().out  # the default sampler


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--sampler", "normal", "--n", "5"],
            "unknown sampler 'normal' for a code-sampling run; choose one of gmm",
        ),
        (["--n", "0"], "--n must be"),
        (["--n", "-3"], "--n must be"),
        (["--n", "5", "--components", "0"], "--components must be"),
    ],
)
def test_cli_sample_bad_arguments(ae_run, tmp_path, capsys, extra, message):
    assert cli.main(["sample", str(ae_run), "--out", str(tmp_path / "x.npy"), *extra]) == 2
    assert_one_line_error(capsys, message)
    assert not (tmp_path / "x.npy").exists()


def test_cli_sample_bad_output_and_runs(ae_run, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for out, message in [
        (tmp_path / "a-file" / "x.npy", "cannot create"),
        (tmp_path / "x.png", "expected a .npy"),
    ]:
        assert cli.main(["sample", str(ae_run), "--n", "5", "--out", str(out)]) == 2
        assert_one_line_error(capsys, message)
    run = _fake_run(tmp_path, "classifier")
    assert cli.main(["sample", str(run), "--n", "5", "--out", str(tmp_path / "y.npy")]) == 2
    assert_one_line_error(capsys, "has no generator")


def test_sample_records_where_its_digits_came_from_and_score_uses_it(ae_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "d.npy"
    assert cli.main(["sample", str(ae_run), "--n", "20", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["run"] == str(ae_run) and record["sampler"] == "gmm" and record["seed"] == 0
    assert record["data"]["train_limit"] > 0  # the run's own data config
    seen = {}

    def fake_score_file(path, cfg, device, k, progress=True, digit=None):
        seen["cfg"], seen["digit"] = cfg, digit
        return {"fid_mnist": 1.0, "class_hist": [0.1] * 10}

    monkeypatch.setattr("mnistlab.latent.sample.score_file", fake_score_file)
    capsys.readouterr()
    assert cli.main(["score", str(out)]) == 0
    assert seen["cfg"].dataset == record["data"]["dataset"] and "digits 0-9" in capsys.readouterr().out
    assert seen["digit"] is None  # drawn without --digit: scored against every test image
    record["digit"] = 3
    out.with_suffix(".json").write_text(json.dumps(record))
    assert cli.main(["score", str(out)]) == 0 and seen["digit"] == 3  # one digit: that digit's images
    assert cli.main(["score", str(out), "--dataset", "fashion-mnist"]) == 0
    assert "was drawn from a run trained on mnist" in capsys.readouterr().err


def test_sample_on_a_study_folder_names_its_generators(tmp_path, capsys):
    study = tmp_path / "study"
    (study / "gan").mkdir(parents=True)
    (study / "run.json").write_text('{"stages": []}')
    (study / "gan" / "config.toml").write_text('task = "gan"\n')
    assert cli.main(["sample", str(study), "--n", "5", "--out", str(tmp_path / "x.npy")]) == 2
    assert str(study / "gan") in assert_one_line_error(capsys, "study folder")


def test_search_objective_is_checked_before_any_work(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["search", "ae", "--objective", "val loss"])
    assert e.value.code == 2 and "use val_loss" in capsys.readouterr().err


def test_digit_is_refused_for_a_generator_that_is_not_conditional(ae_run, tmp_path, capsys):
    for digit in ("7", "all"):
        assert (
            cli.main(["sample", str(ae_run), "--n", "5", "--digit", digit, "--out", str(tmp_path / "x.npy")])
            == 2
        )
        assert_one_line_error(capsys, "cannot be asked for a digit")
    with pytest.raises(SystemExit):
        cli.main(["sample", str(ae_run), "--n", "5", "--digit", "12", "--out", str(tmp_path / "x.npy")])
