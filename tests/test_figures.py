"""Every figure is written as a readable PNG; the numbers behind the figures are right.

UMAP's first fit in a process pays a numba JIT compile (about 4 s here); only the
UMAP tests fit it, on a few hundred rows.
"""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lithovae.evaluation import figures
from lithovae.evaluation.style import read_figure_metadata

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]
LITHOLOGIES = ["clay", "nannofossil ooze", "gabbro", "basalt", "silty clay", "diatom ooze",
               "sand", "chalk"]
N = 300


def assert_png(path, min_px: int = 100) -> tuple[int, int]:
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: fails on a truncated file
        width, height = image.size
    assert width > min_px and height > min_px
    return width, height


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, len(LITHOLOGIES), N)
    names = np.array(LITHOLOGIES, dtype=object)[codes]
    names[rng.random(N) < 0.05] = None
    mu = rng.normal(size=(N, 6)) + 3.0 * np.eye(len(LITHOLOGIES), 6)[codes]
    x = rng.normal(size=(N, len(FEATURES)))
    observed = rng.random(x.shape) > 0.1
    logits = rng.normal(size=(N, len(LITHOLOGIES)))
    logits[np.arange(N), codes] += 1.5
    target = np.where(pd.isna(names), -1, codes)
    # two boreholes of 150 bins, 0.2 m apart, with a gap and a stretch without RGB
    depth = np.r_[np.arange(150), np.arange(150)] * 0.2
    depth[100:150] += 5.0
    frame = pd.DataFrame({"borehole_id": ["U1500A"] * 150 + ["U1501C"] * 150, "depth_m": depth,
                          "principal": names})
    x_raw = np.column_stack([rng.normal(1.6, 0.2, N), rng.lognormal(3, 1, N),
                             rng.normal(30, 5, N), rng.uniform(0, 255, (N, 3))])
    x_raw[40:70, 3:] = np.nan
    x_raw[10:15, 0] = np.nan
    epochs = np.repeat(np.arange(8), 2)
    is_train = np.tile([True, False], 8)
    history = pd.DataFrame({
        "epoch": epochs,
        "step": np.arange(16) * 10,
        "train/loss": np.where(is_train, 3.0 / (epochs + 1), np.nan),
        "val/loss": np.where(~is_train, 3.2 / (epochs + 1), np.nan),
        "train/recon": np.where(is_train, 2.0 / (epochs + 1), np.nan),
        "val/recon": np.where(~is_train, 2.1 / (epochs + 1), np.nan),
        "train/kl": np.where(is_train, 0.5, np.nan),
        "train/class": np.where(is_train, 1.0, np.nan),
        "beta": np.logspace(-10, np.log10(0.75), 8)[epochs],
        "lr": 1e-3,
    })
    return {"mu": mu, "principal": names, "assignment": rng.integers(0, 5, N), "x": x,
            "recon": x + 0.3 * rng.normal(size=x.shape), "observed": observed, "logits": logits,
            "target": target, "class_names": LITHOLOGIES, "frame": frame, "x_raw": x_raw,
            "feature_names": FEATURES, "history": history}


@pytest.fixture(scope="module")
def written(run, tmp_path_factory):
    """Every figure of the run, each written once by write_all."""
    out = tmp_path_factory.mktemp("figures")
    return out, figures.write_all(run, out, synthetic=True)


def test_write_all_writes_every_figure(written):
    out, paths = written
    assert set(paths) == {"training_curves", "umap", "latent_qq", "latent_correlation",
                          "contingency", "reconstruction", "roc", "borehole_log_U1500A"}
    for path in paths.values():
        assert path.parent == out
        assert_png(path)


def test_write_all_skips_figures_without_inputs(run, tmp_path):
    partial = {k: run[k] for k in ("history", "principal", "assignment", "class_names")}
    paths = figures.write_all(partial, tmp_path)  # no mu, no logits, no frame
    assert set(paths) == {"training_curves", "contingency"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contingency.png", "training_curves.png"]


def test_write_all_honours_the_umap_sample_and_the_chosen_boreholes(run, tmp_path, monkeypatch):
    embedded = []
    real_embed = figures._embed_2d
    monkeypatch.setattr(figures, "_embed_2d", lambda mu, seed: embedded.append(len(mu)) or real_embed(mu, seed))
    keep = {k: run[k] for k in ("mu", "principal", "frame", "x_raw", "feature_names")}
    paths = figures.write_all({**keep, "borehole_ids": ["U1500A", "U1501C"]}, tmp_path, umap_sample=120)
    assert embedded == [120]
    assert {"borehole_log_U1500A", "borehole_log_U1501C"} <= set(paths)
    assert_png(paths["borehole_log_U1501C"])


def test_umap_latent(written):
    width, height = assert_png(written[1]["umap"])
    assert width > height  # two panels side by side


def test_umap_embedding_is_seeded(run):
    first, labels, method = figures._embed_2d(run["mu"][:200], seed=1)
    again, _, _ = figures._embed_2d(run["mu"][:200], seed=1)
    assert method == "UMAP" and labels == ("UMAP 1", "UMAP 2")
    assert first.shape == (200, 2)
    np.testing.assert_array_equal(first, again)


def test_umap_latent_plots_a_2d_latent_directly(run, tmp_path, monkeypatch):
    import umap

    def no_umap(*args, **kwargs):
        raise AssertionError("UMAP must not run on a 2-D latent")

    monkeypatch.setattr(umap, "UMAP", no_umap)
    coords, labels, method = figures._embed_2d(run["mu"][:, :2], seed=0)
    np.testing.assert_array_equal(coords, run["mu"][:, :2])
    assert method == "latent"
    width, height = assert_png(figures.umap_latent(run["mu"][:, :2], run["principal"], None,
                                                   tmp_path / "u2.png"))
    assert width < 1.5 * height  # one panel without an assignment


def test_every_figure_of_synthetic_data_says_so(written, run, tmp_path):
    for name, path in written[1].items():
        meta = read_figure_metadata(path)
        assert meta["synthetic"] and meta["shows_synthetic"], name
    real = read_figure_metadata(figures.latent_correlation(run["mu"], tmp_path / "c.png"))
    assert not real["synthetic"] and not real["shows_synthetic"]


def test_a_study_figure_of_synthetic_data_says_so(tmp_path):
    from lithovae.study_summary import plot_study

    points = pd.DataFrame({"point": ["a", "b"], "ari_selected_mean": [0.2, 0.3]})
    for synthetic in (True, False):
        meta = read_figure_metadata(plot_study({"name": "s", "panels": ["ari_selected"]}, points,
                                               tmp_path / f"{synthetic}.png", "some-data", synthetic))
        assert meta["synthetic"] is synthetic and meta["shows_synthetic"] is synthetic


def test_training_curves_show_beta_beside_every_loss(written, run, tmp_path):
    beside = read_figure_metadata(written[1]["training_curves"])["beside_losses"]
    assert beside == {term: "β" for term in ("loss", "recon", "kl", "class")}
    # alpha beside them too where it varies over the epochs, not where it is constant
    varying = run["history"].assign(alpha=run["history"]["epoch"] / 10)
    beside = read_figure_metadata(figures.training_curves(varying, tmp_path / "a.png"))["beside_losses"]
    assert set(beside.values()) == {"β, α"}
    constant = run["history"].assign(alpha=0.1)
    beside = read_figure_metadata(figures.training_curves(constant, tmp_path / "c.png"))["beside_losses"]
    assert set(beside.values()) == {"β"}


def test_training_curves(written, tmp_path):
    assert_png(written[1]["training_curves"])
    history = pd.DataFrame({"train/loss": [3.0, 2.0, 1.5]})  # no epoch column, nothing else
    assert_png(figures.training_curves(history, tmp_path / "curves.png"))


def test_reconstruction_scatter(written, run, tmp_path):
    assert_png(written[1]["reconstruction"])
    x, recon = run["x"][:, :2], run["recon"][:, :2]
    observed = run["observed"][:, :2].copy()
    observed[:, 1] = False  # a feature never observed gets an empty panel, not an error
    assert_png(figures.reconstruction_scatter(x, x + 0.1, observed, ["GRA", "MS"],
                                              tmp_path / "recon.png"))
    assert_png(figures.reconstruction_scatter(x, recon, None, ["GRA", "MS"], tmp_path / "r2.png"))


def test_roc_curves(written, run, tmp_path):
    assert_png(written[1]["roc"])
    one_class = np.zeros(N, dtype=int)  # no negatives: no per-class curve, still a figure
    assert_png(figures.roc_curves(run["logits"], one_class, LITHOLOGIES, tmp_path / "roc1.png"))
    with pytest.raises(ValueError, match="logits"):
        figures.roc_curves(run["logits"][:, :3], run["target"], LITHOLOGIES, tmp_path / "bad.png")


def test_latent_qq_and_correlation(written, run, tmp_path):
    assert_png(written[1]["latent_qq"])
    assert_png(written[1]["latent_correlation"])
    mu = run["mu"][:, :3].copy()
    mu[:, 2] = 1.0  # a collapsed dimension: no test, blank correlation
    assert_png(figures.latent_qq(mu, tmp_path / "qq.png"))
    assert_png(figures.latent_correlation(mu, tmp_path / "corr.png"))


def test_latent_normality_is_seeded_and_discriminates():
    rng = np.random.default_rng(1)
    mu = np.column_stack([rng.normal(size=6000), rng.exponential(size=6000), np.full(6000, 2.0)])
    table = figures.latent_normality(mu, sample=5000, seed=0)
    assert list(table["n"]) == [5000, 5000, 5000]
    assert table.loc[0, "pvalue"] > 0.01
    assert table.loc[1, "pvalue"] < 1e-10
    assert np.isnan(table.loc[2, "pvalue"])
    pd.testing.assert_frame_equal(table, figures.latent_normality(mu, sample=5000, seed=0))
    other_seed = figures.latent_normality(mu, sample=5000, seed=1)
    assert other_seed.loc[0, "statistic"] != table.loc[0, "statistic"]
    # with no more rows than the sample, every row is tested
    small = figures.latent_normality(mu[:300], sample=5000)
    assert list(small["n"]) == [300, 300, 300]


def test_contingency_heatmap(written, run, tmp_path):
    assert_png(written[1]["contingency"])
    assert_png(figures.contingency_heatmap(run["assignment"], run["principal"],
                                           tmp_path / "contingency.png", top_n=3))


def test_rgb_colours_blank_for_nan():
    rgba = figures.rgb_colours([[255, 0, 0], [np.nan, 10, 10], [0, 0, 510]])
    np.testing.assert_allclose(rgba[0], [1, 0, 0, 1])
    np.testing.assert_allclose(rgba[1], [0, 0, 0, 0])
    np.testing.assert_allclose(rgba[2], [0, 0, 1, 1])  # clipped to the 0-255 range


def test_lily_log_draws_gra_ms_ngr_tracks_with_units_and_the_rgb_strip(written, run, tmp_path):
    from lithovae.data.scaler import STUDY_TRANSFORMS
    from lithovae.evaluation.well_log import axis_scales, dataset_units, read_metadata

    meta = read_metadata(written[1]["borehole_log_U1500A"])  # write_all without units: none shown
    assert [(t["feature"], t["unit"]) for t in meta["tracks"]] == [("GRA", None), ("MS", None), ("NGR", None)]
    units, depth_unit = dataset_units({"builder_version": 1})  # a LILY (or synthetic LILY) build
    path = figures.borehole_log(run["frame"], run["x_raw"], FEATURES, run["assignment"], "U1501C",
                                tmp_path / "lily.png", units=units, depth_unit=depth_unit,
                                scales=axis_scales(pd.DataFrame(run["x_raw"], columns=FEATURES), STUDY_TRANSFORMS))
    meta = read_metadata(assert_png(path) and path)
    # the study's transforms: MS and NGR signed_log (log axes: positive here), GRA none
    assert meta["tracks"] == [{"feature": "GRA", "unit": "g/cm³", "scale": "linear"},
                              {"feature": "MS", "unit": "instr. units", "scale": "log"},
                              {"feature": "NGR", "unit": "cps", "scale": "log"}]
    assert meta["strips"] == ["colour", "lithology", "cluster"] and meta["depth_unit"] == "m"
    assert set(meta["lithologies"]) <= set(LITHOLOGIES)


def test_borehole_log_handles_nan_rgb(written, run, tmp_path):
    assert np.isnan(run["x_raw"][40:70, 3:]).all()  # U1500A has bins without RGB
    assert_png(written[1]["borehole_log_U1500A"])
    all_nan = run["x_raw"].copy()
    all_nan[:, 3:] = np.nan
    all_nan[:, 0] = np.nan
    assert_png(figures.borehole_log(run["frame"], all_nan, FEATURES, None, "U1501C",
                                    tmp_path / "log.png"))
    with pytest.raises(ValueError, match="no rows"):
        figures.borehole_log(run["frame"], run["x_raw"], FEATURES, None, "nope", tmp_path / "x.png")
