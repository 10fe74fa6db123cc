"""One log figure of the user's own curves (lithovae.evaluation.well_log), for training runs and
lithovae.predict: a track per feature of the run with its unit, a log axis for log-scaled
features, the colour strip only with R, G and B, depth with its unit, cluster colours apart
from lithology colours, clusters labelled by their top lithology.

On the generated North Sea-like wells (tests/own_data.py), never LILY-shaped columns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from lithovae.data.errors import BuildError
from lithovae.evaluation import figures
from lithovae.evaluation.well_log import (axis_scales, cluster_colours, cluster_labels, dataset_units,
                                          manifest_beside, palette, prediction_log, read_metadata, run_log,
                                          saved_scales)
from tests.own_data import CURVES, NAMES, UNITS, north_sea_like
from tests.test_las import las_source, table_source, write_las

FEATURES = list(CURVES)


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A few own wells as a LAS folder, prepared once: (data, dataset frame, manifest)."""
    root = tmp_path_factory.mktemp("own_log")
    data = north_sea_like(root, n_wells=4, samples=120)
    path, manifest = las_source(data.las_dir, label="LITH", features=FEATURES).prepare(root / "data", log=_quiet)
    return data, pd.read_parquet(path), manifest


# --- what the data say: units, axis scales, cluster labels ---------------------------------------

def test_las_headers_give_the_units_and_the_depth_unit(own):
    _, _, manifest = own
    assert manifest["units"] == {c: UNITS[c] for c in CURVES}  # as the headers write them
    assert manifest["depth_unit"] == "m"
    assert dataset_units(manifest) == ({c: UNITS[c] for c in CURVES}, "m")


def test_lily_builds_get_the_instrument_units_and_unknown_manifests_none():
    units, depth = dataset_units({"builder_version": 3, "features": ["GRA", "MS", "NGR", "R", "G", "B"]})
    assert units == {"GRA": "g/cm³", "MS": "instr. units", "NGR": "cps"} and depth == "m"
    assert dataset_units(None) == ({}, None)
    assert dataset_units({"units": {"GR": "", "RHOB": 3}, "depth_unit": ""}) == ({}, None)  # nothing made up
    assert manifest_beside("/nonexistent/x.parquet") is None


def test_las_files_disagreeing_on_a_unit_show_none(tmp_path):
    depth = np.arange(10.0, 11.0, 0.2)
    for name, unit in (("a", "OHMM"), ("b", "ohmm"), ("c", "KOHM.M")):
        path = write_las(tmp_path / "w" / f"{name}.las", {"DEPT": depth, "RDEP": depth * 0 + 5.0}, well=name)
        text = path.read_text().replace("RDEP.", f"RDEP.{unit}", 1)
        path.write_text(text)
    said = []
    _, manifest = las_source(tmp_path / "w", features=["RDEP"]).prepare(tmp_path / "data", log=said.append)
    assert manifest["units"] == {}
    assert [s for s in said if "RDEP in different units (OHMM in a.las, KOHM.M in c.las)" in s]
    _, manifest = las_source(tmp_path / "w" / "a.las", features=["RDEP"]).prepare(tmp_path / "data", log=_quiet)
    assert manifest["units"] == {"RDEP": "OHMM"}


def test_table_units_come_from_data_units(own, tmp_path):
    data, _, _ = own
    keywords = {"borehole": "WELL", "depth": "DEPTH_MD", "label": "LITHOLOGY", "features": FEATURES}
    _, manifest = table_source(data.table, **keywords, units={"RDEP": "ohm.m", "DEPTH_MD": "m"}).prepare(
        tmp_path, log=_quiet)
    assert manifest["units"] == {"RDEP": "ohm.m"} and manifest["depth_unit"] == "m"
    _, manifest = table_source(data.table, **keywords).prepare(tmp_path, log=_quiet)
    assert manifest["units"] == {} and manifest["depth_unit"] is None  # unknown: none shown


@pytest.mark.parametrize("units, says", [
    (["GR", "gAPI"], "data.units: must be a mapping"),
    ({"CALI": "in"}, "data.units.CALI: not a feature of data.features"),
    ({"GR": 3}, "data.units.GR: must be a unit as text"),
    ({"GR": " "}, "data.units.GR: must be a unit as text"),
])
def test_a_bad_data_units_is_one_line_naming_it(own, units, says):
    data, _, _ = own
    with pytest.raises(BuildError) as err:
        table_source(data.table, borehole="WELL", depth="DEPTH_MD", label="LITHOLOGY", features=FEATURES,
                     units=units)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_axis_scales_follow_the_transform_else_the_data(own):
    _, frame, _ = own
    values = frame[FEATURES]
    # no transform given: resistivity (positive, > 2 decades) on a log axis, the rest linear
    assert axis_scales(values) == {"GR": "linear", "RHOB": "linear", "NPHI": "linear", "DTC": "linear",
                                   "RDEP": "log"}
    assert axis_scales(values, {"DTC": "log1p"})["DTC"] == "log"  # a log transform: a log axis
    signed = pd.DataFrame({"MS": [-5.0, 0.0, 30.0, 900.0], "K": [1.0, 2.0, 3.0, 4.0]})
    assert axis_scales(signed, {"MS": "signed_log", "K": "signed_log"}) == {"MS": "symlog", "K": "log"}
    narrow = pd.DataFrame({"R": [5.0, 50.0, 400.0], "Z": [np.nan] * 3})  # 1.9 decades; all missing
    assert axis_scales(narrow) == {"R": "linear", "Z": "linear"}


def test_a_bundles_saved_scales_are_used_only_when_whole():
    assert saved_scales({"GR": "linear", "RDEP": "log", "X": 1}, ["GR", "RDEP"]) == {"GR": "linear", "RDEP": "log"}
    assert saved_scales({"GR": "linear"}, ["GR", "RDEP"]) is None  # an older or edited bundle
    assert saved_scales({"GR": "linear", "RDEP": "cubic"}, ["GR", "RDEP"]) is None
    assert saved_scales(None, ["GR"]) is None


def test_clusters_are_labelled_by_their_top_lithology_over_labeled_bins():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    lithology = ["Shale", None, "Shale", "Chalk", "Coal", np.nan, "", pd.NA]
    # a tie goes to the alphabetically first name; a cluster without labeled bins is its id
    assert cluster_labels(clusters, lithology) == {0: "0: Shale", 1: "1: Chalk", 2: "2"}


def test_the_palette_has_colours_a_person_can_tell_apart():
    from itertools import combinations

    from lithovae.evaluation.style import DISTINCT, OTHER_COLOUR, lab

    colours = palette(len(DISTINCT) + 5)
    named, beyond = colours[:len(DISTINCT)], colours[len(DISTINCT):]
    lab_of = [lab(c[:3]) for c in named]
    # CIE76 distance: about 2.3 is a just-noticeable difference; 25 is a different colour
    assert min(np.linalg.norm(a - b) for a, b in combinations(lab_of, 2)) > 25
    assert min(np.linalg.norm(a - lab(OTHER_COLOUR)) for a in lab_of) > 30  # none reads as "other"
    for lightness, a, b in lab_of:  # none pale: light colours are saturated, or the colour is dark
        assert lightness <= 75 and (np.hypot(a, b) >= 25 or lightness < 30)
    assert all(c == to_rgba(OTHER_COLOUR) for c in beyond)  # the tail beyond the palette is grey


def test_cluster_colours_are_fixed_by_the_id_and_distinct():
    assert cluster_colours([3])[0] == cluster_colours([0, 3])[1]  # fixed by the id
    assert len({tuple(c) for c in cluster_colours(range(20))}) == 20


# --- the figure ------------------------------------------------------------------------------

def test_own_log_has_a_track_per_feature_with_units_and_resistivity_on_a_log_axis(own, tmp_path):
    _, frame, manifest = own
    frame = frame.assign(principal=frame["principal"].map(lambda c: NAMES.get(int(c)) if pd.notna(c) else None))
    units, depth_unit = dataset_units(manifest)
    assignment = np.arange(len(frame)) % 4
    well = frame["borehole_id"].iloc[0]
    path = figures.write_all({"frame": frame, "x_raw": frame[FEATURES].to_numpy(), "feature_names": FEATURES,
                              "assignment": assignment, "units": units, "depth_unit": depth_unit,
                              "borehole_ids": [well]}, tmp_path)[f"borehole_log_{well}"]
    meta = read_metadata(path)
    assert meta["tracks"] == [{"feature": f, "unit": UNITS[f], "scale": "log" if f == "RDEP" else "linear"}
                              for f in FEATURES]
    assert meta["depth_unit"] == "m" and meta["borehole"] == well
    assert meta["strips"] == ["lithology", "cluster"]  # no colour strip without R, G, B
    assert set(meta["lithologies"]) <= set(NAMES.values())
    expected = cluster_labels(assignment, frame["principal"])  # over all the bins, not one well
    assert meta["clusters"] == {str(c): label for c, label in expected.items()}
    assert all(":" in label for label in meta["clusters"].values())


def test_without_units_no_unit_is_shown(own, tmp_path):
    _, frame, _ = own
    well = frame["borehole_id"].iloc[0]
    meta = read_metadata(run_log(frame, frame[FEATURES].to_numpy(), FEATURES, None, well, tmp_path / "l.png"))
    assert [t["unit"] for t in meta["tracks"]] == [None] * len(FEATURES)
    assert meta["depth_unit"] is None and meta["strips"] == ["lithology"]


def test_a_prediction_log_is_the_same_figure(own, tmp_path):
    _, frame, _ = own
    table = frame[["borehole_id", "depth_m", *FEATURES]].copy()
    for f in FEATURES:
        table[f"{f}_imputed"] = table[f].isna()
        table[f"{f}_out_of_range"] = False
    table["cluster"] = np.arange(len(table)) % 3 - (np.arange(len(table)) % 50 == 0)  # some -1: no cluster
    table["cluster_top_lithology"] = np.where(table["cluster"] == 1, "Shale", None)
    table["predicted_lithology"] = "Chalk"
    table["anomaly_percentile"] = 50.0
    well = table["borehole_id"].iloc[-1]
    meta = read_metadata(prediction_log(table, FEATURES, well, tmp_path / "p.png", frame["principal"],
                                        units={"RDEP": "OHMM"}, depth_unit="ft"))
    assert [t["feature"] for t in meta["tracks"]] == FEATURES
    assert [t["scale"] for t in meta["tracks"]] == ["linear"] * 4 + ["log"]
    assert meta["tracks"][-1]["unit"] == "OHMM" and meta["depth_unit"] == "ft"
    assert meta["strips"] == ["lithology", "predicted", "cluster"]
    assert meta["clusters"] == {"0": "0", "1": "1: Shale", "2": "2"}


# --- end to end: a training run on a LAS folder, and its prediction ----------------------------

@pytest.mark.slow
def test_a_las_run_and_its_prediction_draw_the_users_curves(own, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.predict import predict
    from lithovae.train import train
    from tests.conftest import CONF_DIR

    data, _, _ = own
    names = tmp_path / "names.csv"
    pd.DataFrame({"code": list(NAMES), "name": list(NAMES.values())}).to_csv(names, index=False)
    las = ["data=las", f"data.path={data.las_dir}", "data.label=LITH", f"data.label_names={names}",
           "data.features=[GR,RHOB,NPHI,DTC,RDEP]"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.run_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
            "trainer.enable_progress_bar=false", "trainer.max_epochs=1", "logger=none", "eval.n_init=1",
            "eval.k=[4]", "eval.bootstrap.resamples=100", "eval.silhouette_samples=500", "eval.figures=true",
            "model.latent_dim=2", *las])  # a 2-D latent: no UMAP fit (its JIT is half a minute)
    train(cfg)
    expected = [{"feature": f, "unit": UNITS[f], "scale": "log" if f == "RDEP" else "linear"} for f in FEATURES]
    (log,) = (tmp_path / "run" / "figures").glob("borehole_log_*.png")
    meta = read_metadata(log)
    assert meta["tracks"] == expected and meta["depth_unit"] == "m"
    assert "colour" not in meta["strips"] and set(meta["lithologies"]) <= set(NAMES.values())
    assert all(label.split(": ", 1)[-1] in NAMES.values() for label in meta["clusters"].values() if ":" in label)

    # the run's axes travel in its bundle: a prediction draws them, whatever its own bins span
    bundle = tmp_path / "run" / "predictor" / "predictor.json"
    meta = json.loads(bundle.read_text())
    assert meta["axis_scales"] == {t["feature"]: t["scale"] for t in expected}
    bundle.write_text(json.dumps({**meta, "axis_scales": {**meta["axis_scales"], "DTC": "log"}}))
    expected[FEATURES.index("DTC")]["scale"] = "log"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[
            f"run={tmp_path / 'run'}", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
            f"out={tmp_path / 'pred'}", *las, f"data.path={sorted(data.las_dir.glob('*.las'))[0]}"])  # one well
    summary = predict(cfg)
    assert len(summary["figures"]) == 1
    meta = read_metadata(summary["figures"][0])
    assert meta["tracks"] == expected and meta["depth_unit"] == "m"
    assert meta["strips"] == ["lithology", "predicted", "cluster"] or meta["strips"] == ["lithology", "cluster"]
