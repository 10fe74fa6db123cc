"""Your own feature columns and well logs in LAS files (``data=table``, ``data=las``).

The LAS files are written by the tests with lasio. Covered: a folder of wells becoming the
dataset contract (aliases, NULL values, binning, numeric lithology codes, the borehole id
from the WELL header or the file name); ``data.features`` as a list or a mapping replacing the
six LILY features, from Python and from the command line; ``data.transforms`` on any feature
and the error for a transform of a feature that is not a feature; every bad LAS input as a
one-line error naming the file with nothing written; and training end to end on a LAS folder
and on a CSV of well-log columns.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import lasio
import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from lithovae.data.errors import BuildError
from lithovae.data.las import LasSource
from lithovae.data.schema import DATASET_KEY_COLUMNS
from lithovae.data.sources import LilySource, TableSource
from tests.conftest import config_defaults

NULL = -999.25


def _quiet(*_a, **_k):
    pass


def _yaml(option: str) -> dict:
    """The constructor keywords lithovae/conf/data/<option>.yaml gives."""
    return {k: v for k, v in config_defaults(f"data={option}")["data"].items() if k != "_target_"}


def las_source(path, **overrides) -> LasSource:
    """A LasSource with the defaults of conf/data/las.yaml, ``overrides`` on top."""
    return LasSource(**{**_yaml("las"), "path": str(path), **overrides})


def table_source(path, **overrides) -> TableSource:
    return TableSource(**{**_yaml("table"), "path": str(path), **overrides})


def write_las(path: Path, curves: dict[str, np.ndarray], well: str | None = "W-1", unit: str = "M",
              null: float | None = NULL) -> Path:
    """A LAS 2.0 file: the first of ``curves`` is the index (depth) curve."""
    las = lasio.LASFile()
    if well is not None:
        las.well["WELL"].value = well
    if null is not None:
        las.well["NULL"].value = null
    for i, (name, values) in enumerate(curves.items()):
        las.append_curve(name, np.asarray(values), unit=unit if i == 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    las.write(str(path), version=2.0)
    return path


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _nothing_written(data_dir: Path) -> bool:
    return not data_dir.exists() or not list(data_dir.rglob("*.parquet"))


# --- a folder of wells becomes the dataset contract --------------------------------------------

def test_a_folder_of_wells_becomes_the_binned_dataset_contract(tmp_path):
    depth = np.array([10.0, 10.1, 10.2, 10.3])
    write_las(tmp_path / "wells" / "a.las", {"DEPT": depth, "GR": [1.0, 2.0, 3.0, NULL],
                                             "RHOB": [2.0, 2.1, 2.2, 2.3], "LITH": [1.0, 2.0, 2.0, 3.0]},
              well="Alpha-1")
    write_las(tmp_path / "wells" / "b.las", {"DEPTH": depth, "gr": [5.0, 6.0, 7.0, 8.0],  # lower case
                                             "DEN": [2.5, 2.5, 2.5, 2.5], "LITH": [4.0, 4.0, NULL, 4.0]},
              well=None)  # no WELL header: the file name is the borehole
    (tmp_path / "wells" / "notes.txt").write_text("not a well")  # ignored: not .las
    source = las_source(tmp_path / "wells", label="LITH", features={"GR": "GR", "RHOB": "RHOB|DEN"})
    path, manifest = source.prepare(tmp_path / "data", log=_quiet)
    data = pd.read_parquet(path)
    assert list(data.columns) == DATASET_KEY_COLUMNS + ["GR", "RHOB"]
    a = data[data["borehole_id"] == "Alpha-1"].set_index("depth_m")
    # bins of 0.2: 10.0 -> 10.0, 10.1 and 10.2 -> 10.2 (edges to the deeper bin), 10.3 -> 10.4
    assert list(a.index) == [10.0, 10.2, 10.4]
    assert a["GR"].tolist()[:2] == [1.0, 2.5] and np.isnan(a.loc[10.4, "GR"])  # NULL is missing
    assert a["RHOB"].tolist() == pytest.approx([2.0, 2.15, 2.3])
    # numeric lithology codes are the labels "1", "2", ...
    assert a["principal"].tolist() == ["1", "2", "3"]
    b = data[data["borehole_id"] == "b"]
    assert b["GR"].tolist() == [5.0, 6.5, 8.0] and b["principal"].tolist() == ["4", "4", "4"]
    inputs = manifest["inputs"]
    assert inputs["a.las"]["curves"] == {"GR": "GR", "RHOB": "RHOB"}
    assert inputs["b.las"]["curves"] == {"GR": "GR", "RHOB": "DEN"}
    assert inputs["b.las"]["depth_curve"] == "DEPTH" and inputs["b.las"]["borehole_id"] == "b"
    assert manifest["steps"]["files"] == 2 and manifest["steps"]["depth_unit"] == "m"
    assert manifest["features"] == ["GR", "RHOB"] and manifest["name"] == "las-wells"


def test_one_file_text_labels_no_binning_and_the_list_form(tmp_path):
    path = write_las(tmp_path / "w.las", {"DEPT": [100.0, 100.5, 100.5, 101.0], "GR": [1.0, 2.0, 4.0, 5.0],
                                          "NPHI": [0.1, 0.2, 0.2, 0.3],
                                          "LITH": np.array(["sand", "shale", "shale", "sand"], dtype=object)},
                     unit="FT")
    out, manifest = las_source(path, label="LITH", features=["GR", "NPHI"], bin_size=None).prepare(
        tmp_path / "data", log=_quiet)
    data = pd.read_parquet(out)
    assert data["depth_m"].tolist() == [100.0, 100.5, 101.0]  # in the file's unit (feet), kept
    assert data["GR"].tolist() == [1.0, 3.0, 5.0]  # the two rows at 100.5 averaged
    assert data["principal"].tolist() == ["sand", "shale", "sand"]
    assert manifest["steps"]["depth_unit"] == "ft" and manifest["steps"]["duplicate_rows_averaged"] == 2


def test_the_borehole_header_can_be_another_or_none(tmp_path):
    las = lasio.LASFile()
    las.well["WELL"].value = "name"
    las.well["UWI"].value = "uwi-7"
    las.append_curve("DEPT", np.array([0.0, 0.2]), unit="M")
    las.append_curve("GR", np.array([1.0, 2.0]))
    las.write(str(tmp_path / "f.las"), version=2.0)
    ids = [pd.read_parquet(las_source(tmp_path / "f.las", features=["GR"], borehole=b).prepare(
        tmp_path / "data", log=_quiet)[0])["borehole_id"].iloc[0] for b in ("WELL", "UWI", None)]
    assert ids == ["name", "uwi-7", "f"]


# --- data.features and data.transforms -----------------------------------------------------

def _well_log_csv(path: Path, n_wells: int = 3, n: int = 40, seed: int = 0) -> Path:
    """The new user's table: WELL, DEPTH, GR, RHOB, NPHI, DTC, RDEP, LITHOLOGY."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_wells):
        lith = np.where((np.arange(n) // 10) % 2 == 0, "sandstone", "shale")
        sand = lith == "sandstone"
        rows.append(pd.DataFrame({
            "WELL": f"15/9-{w + 1}", "DEPTH": 1000 + np.arange(n) * 0.5,
            "GR": np.where(sand, 40, 110) + rng.normal(0, 5, n),
            "RHOB": np.where(sand, 2.3, 2.5) + rng.normal(0, 0.03, n),
            "NPHI": np.where(sand, 0.15, 0.35) + rng.normal(0, 0.02, n),
            "DTC": np.where(sand, 80, 100) + rng.normal(0, 3, n),
            "RDEP": np.exp(np.where(sand, 3.0, 0.5) + rng.normal(0, 0.3, n)),
            "LITHOLOGY": lith}))
    pd.concat(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("features, expected", [
    (["GR", "RHOB", "RDEP"], {"GR": "GR", "RHOB": "RHOB", "RDEP": "RDEP"}),
    ({"gamma": "GR", "density": "RHOB"}, {"gamma": "GR", "density": "RHOB"}),
])
def test_table_features_as_a_list_or_a_mapping_replace_the_lily_six(tmp_path, features, expected):
    csv = _well_log_csv(tmp_path / "logs.csv")
    source = table_source(csv, borehole="WELL", depth="DEPTH", label="LITHOLOGY", features=features)
    assert source.features == expected
    out, _ = source.prepare(tmp_path / "data", log=_quiet)
    data = pd.read_parquet(out)
    assert list(data.columns) == DATASET_KEY_COLUMNS + list(expected)
    assert data[list(expected)].notna().all().all() and set(data["principal"]) == {"sandstone", "shale"}


def test_features_null_is_the_lily_six_and_a_bad_list_is_named():
    assert list(table_source("x.csv").features) == ["GRA", "MS", "NGR", "R", "G", "B"]
    assert list(las_source("x.las").features) == ["GRA", "MS", "NGR", "R", "G", "B"]
    for bad, named in [([], "data.features: empty"), (["GR", "GR"], "['GR'] listed twice"),
                       ({"GR": None}, "data.features.GR: no source column"),
                       (["principal"], "'principal' is a column of the dataset contract")]:
        with pytest.raises(BuildError) as err:
            table_source("x.csv", features=bad)
        assert named in _one_line(err)


@pytest.mark.parametrize("option, extra", [
    ("table", ["data.path=logs.csv"]),
    ("las", ["data.path=wells"]),
])
@pytest.mark.parametrize("features, expected", [
    ("data.features={GR: GR, RHOB: RHOB}", ["GR", "RHOB"]),
    ("data.features=[GR,RHOB,NPHI]", ["GR", "RHOB", "NPHI"]),
])
def test_the_command_line_sets_features_and_transforms_without_hydra_tricks(option, extra, features,
                                                                             expected):
    """The new user's overrides: no ~, no +, no 'Key not in struct'; nothing merged with the six."""
    cfg = config_defaults(f"data={option}", *extra, features, "data.transforms={RHOB: log1p}")
    source = instantiate(cfg["data"], _convert_="all")
    assert list(source.features) == expected and source.transforms == {"RHOB": "log1p"}


def test_a_transform_on_a_non_lily_feature_reaches_the_scaler(tmp_path):
    from lithovae.data.datamodule import LithoDataModule

    csv = _well_log_csv(tmp_path / "logs.csv", n_wells=6)
    source = table_source(csv, borehole="WELL", depth="DEPTH", label="LITHOLOGY",
                          features=["GR", "RDEP"], transforms={"RDEP": "log1p"})
    path, _ = source.prepare(tmp_path / "data", log=_quiet)
    accepted = inspect.signature(LithoDataModule).parameters
    options = {k: v for k, v in config_defaults()["datamodule"].items() if k in accepted}
    dm = LithoDataModule(path, seed=0, transforms=source.transforms, **options)
    dm.setup()
    assert dm.scaler.transforms == {"GR": "none", "RDEP": "log1p"}
    raw = pd.read_parquet(path)["RDEP"].to_numpy(np.float64)
    assert dm.scaler._forward(raw[:, None].repeat(2, 1))[:, 1] == pytest.approx(np.log1p(raw))


@pytest.mark.parametrize("make", [
    lambda tmp: table_source(tmp / "x.csv", features=["GR", "RHOB"], transforms={"RDEP": "log1p"}),
    lambda tmp: las_source(tmp / "x.las", features={"GR": "GR", "RHOB": "RHOB|DEN"},
                           transforms={"GR": "none", "RDEP": "log1p"}),
])
def test_a_transform_of_a_feature_not_in_features_names_both_lists(tmp_path, make):
    with pytest.raises(BuildError) as err:
        make(tmp_path)
    message = _one_line(err)
    assert message.startswith("data.transforms: ") and "['RDEP']" in message
    assert "data.features ['GR', 'RHOB']" in message


def test_a_lily_transform_outside_the_feature_set_is_named():
    build = {**_yaml("lily")["build"], "feature_set": "physical3"}
    with pytest.raises(BuildError) as err:
        LilySource(**{**_yaml("lily"), "raw_dir": "raw", "build": build, "transforms": {"R": "log1p"}})
    assert "data.build.feature_set=physical3 ['GRA', 'MS', 'NGR']" in _one_line(err)


def test_rgb_imputation_on_other_features_is_named():
    from lithovae.data.features import impute_rgb

    with pytest.raises(BuildError) as err:
        impute_rgb(np.zeros((4, 2)), ["GR", "RHOB"], np.ones(4, bool))
    assert _one_line(err).startswith("datamodule.impute_rgb: needs the features ['GRA', 'MS', 'NGR', 'R', 'G', 'B']")


# --- bad LAS input: one line naming the file, nothing written ----------------------------------

def _good(path: Path, **curves) -> Path:
    base = {"DEPT": [0.0, 0.2, 0.4], "GR": [1.0, 2.0, 3.0], "RHOB": [2.0, 2.1, 2.2]}
    return write_las(path, {**base, **curves})


def _raw_las(path: Path, curves: str, rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("~Version\nVERS. 2.0 : CWLS LAS 2.0\nWRAP. NO : one line per step\n"
                    "~Well\nNULL. -999.25 : NULL VALUE\nWELL. W : WELL\n"
                    f"~Curve Information\n{curves}~ASCII\n{rows}")
    return path


# a LAS 3.0 file: comma-delimited, ~Log_Definition / ~Log_Data sections (lasio reads it partly)
LAS3 = """~Version
VERS.                3.0 : CWLS LOG ASCII STANDARD -VERSION 3.0
WRAP.                 NO : ONE LINE PER DEPTH STEP
DLM .              COMMA : DELIMITING CHARACTER BETWEEN DATA COLUMNS
~Well
NULL.            -999.25 : NULL VALUE
WELL.                 W3 : WELL
~Log_Definition
DEPT.M                   : DEPTH {F}
GR  .API                 : GAMMA {F}
RHOB.K/M3                : DENSITY {F}
LITH.                    : LITHOLOGY {S}
~Log_Data | Log_Definition
0.0, 1.0, 2000, "fine sand"
0.2, 2.0, 2100, "coarse sand"
0.4, 3.0, 2200, shale
"""

BAD_LAS = {
    "missing_curve": (lambda d: _good(d / "w" / "a.las") and write_las(
        d / "w" / "b.las", {"DEPT": [0.0, 0.2], "GR": [1.0, 2.0], "NPHI": [0.1, 0.2]}),
        "b.las: no curve for feature 'RHOB' (tried RHOB|DEN; curves: DEPT, GR, NPHI)"),
    "missing_label_curve": (lambda d: _good(d / "w" / "a.las"),
                            "a.las: no label curve (data.label: tried LITH; curves: DEPT, GR, RHOB)"),
    "non_numeric_depth": (lambda d: _raw_las(d / "w" / "a.las", "DEPT.M :\nGR.API :\nRHOB.G/C3 :\n",
                                             "0.0 1.0 2.0\nabc 2.0 2.1\n"),
                          "a.las: depth curve 'DEPT': non-numeric value 'abc' in data row 2"),
    "non_numeric_curve": (lambda d: _raw_las(d / "w" / "a.las", "DEPT.M :\nGR.API :\nRHOB.G/C3 :\n",
                                             "0.0 1.0 2.0\n0.2 high 2.1\n"),
                          "a.las: curve 'GR': non-numeric value 'high' in data row 2"),
    "empty_well": (lambda d: _good(d / "w" / "a.las") and write_las(
        d / "w" / "b.las", {"DEPT": [0.0, 0.2], "GR": [NULL, NULL], "RHOB": [NULL, NULL]}),
        "b.las: empty well: none of its 2 rows has a depth and a value of GR, RHOB"),
    "no_data_rows": (lambda d: _raw_las(d / "w" / "a.las", "DEPT.M :\nGR.API :\nRHOB.G/C3 :\n", ""),
                     "a.las: empty well: no data rows"),
    "no_depth_curve": (lambda d: _raw_las(d / "w" / "a.las", "TIME.S :\nGR.API :\nRHOB.G/C3 :\n",
                                          "0 1.0 2.0\n1 2.0 2.1\n"),
                       "a.las: no depth/index curve (tried DEPT|DEPTH|MD|TDEP; curves: TIME, GR, RHOB)"),
    "no_las_files": (lambda d: (d / "w").mkdir() or (d / "w" / "a.csv").write_text("x\n1\n"),
                     "w: no .las files in this folder"),
    "not_a_las_file": (lambda d: _good(d / "w" / "a.las") and (d / "w" / "b.las").write_text("hello\nworld\n"),
                       "b.las: not a readable LAS file (KeyError: 'No ~ sections found"),
    "binary_file": (lambda d: (d / "w").mkdir() or (d / "w" / "a.las").write_bytes(b"\x89PNG\r\n\x1a\n\x00"),
                    "a.las: not utf-8 text"),
    "empty_file": (lambda d: (d / "w").mkdir() or (d / "w" / "a.las").write_text(""), "a.las: empty file"),
    "mixed_units": (lambda d: _good(d / "w" / "a.las") and write_las(
        d / "w" / "b.las", {"DEPT": [0.0, 1.0], "GR": [1.0, 2.0], "RHOB": [2.0, 2.0]}, unit="FT"),
        "w: wells in different depth units (m in a.las, ft in b.las)"),
    # a file without a depth unit may be in feet as well as in metres: not one unit
    "unit_and_unitless": (lambda d: _good(d / "w" / "a.las") and [
        _raw_las(d / "w" / f"{n}.las", "DEPT. :\nGR.API :\nRHOB.G/C3 :\n", "0.0 1.0 2.0\n0.2 2.0 2.1\n")
        for n in "bc"], "w: depth unit m in a.las but none in b.las and 1 more"),
    "las_version_3": (lambda d: _good(d / "w" / "a.las") and (d / "w" / "b.las").write_text(LAS3),
                      "b.las: LAS version 3.0 is not supported (lithovae reads LAS 1.2 and 2.0)"),
}


@pytest.mark.parametrize("case", list(BAD_LAS))
def test_bad_las_input_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, case):
    make, expected = BAD_LAS[case]
    make(tmp_path)
    label = "LITH" if case == "missing_label_curve" else None
    with pytest.raises(BuildError) as err:
        las_source(tmp_path / "w", label=label, features={"GR": "GR", "RHOB": "RHOB|DEN"}).prepare(
            tmp_path / "data", log=_quiet)
    message = _one_line(err)
    assert message.startswith(str(tmp_path / "w")) and expected in message, message
    assert _nothing_written(tmp_path / "data")


def test_a_missing_path_and_a_bad_bin_size_are_named(tmp_path):
    with pytest.raises(BuildError, match="nowhere: no such file or folder"):
        las_source(tmp_path / "nowhere").prepare(tmp_path / "data")
    with pytest.raises(BuildError, match=r"^data.bin_size: must be a number > 0"):
        las_source("x.las", bin_size=0)
    with pytest.raises(BuildError, match=r"^data.path: set it to a LAS file"):
        las_source("???")


@pytest.mark.parametrize("case, expected", [
    ("missing_curve", "no curve for feature 'RHOB' (tried RHOB|DEN; curves: DEPT, GR, RHOX)"),
    ("non_numeric_depth", "depth curve 'DEPT': non-numeric value 'abc' in data row 2"),  # lasio logs it too
])
def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path, case, expected):
    if case == "missing_curve":
        path = write_las(tmp_path / "w" / "a.las", {"DEPT": [0.0, 0.2], "GR": [1.0, 2.0], "RHOX": [2.0, 2.1]})
    else:
        path = _raw_las(tmp_path / "w" / "a.las", "DEPT.M :\nGR.API :\nRHOB.G/C3 :\n", "0.0 1.0 2.0\nabc 2.0 2.1\n")
    proc = subprocess.run([sys.executable, "-m", "lithovae.data", "data=las", f"data.path={tmp_path / 'w'}",
                           "data.features={GR: GR, RHOB: RHOB|DEN}", f"paths.root_dir={tmp_path}",
                           "report=false"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {path}: {expected}", proc.stderr
    assert not proc.stdout.strip(), proc.stdout
    assert _nothing_written(tmp_path / "outputs")


# --- end to end: train on a LAS folder and on a CSV of well logs -------------------------------

def _las_folder(root: Path, n_wells: int = 20, n: int = 150, seed: int = 0) -> Path:
    """20 wells, so the 70/15/15 borehole split puts at least 3 in each part."""
    rng = np.random.default_rng(seed)
    for w in range(n_wells):
        lith = np.where((np.arange(n) // 25) % 2 == 0, 1.0, 2.0)
        sand = lith == 1.0
        gr = np.where(sand, 40, 110) + rng.normal(0, 5, n)
        gr[rng.random(n) < 0.05] = NULL
        write_las(root / f"well_{w:02d}.las", {
            "DEPT": 500 + np.arange(n) * 0.5, "GR": gr,
            "RHOB" if w % 2 else "DEN": np.where(sand, 2.3, 2.5) + rng.normal(0, 0.03, n),
            "NPHI": np.where(sand, 0.15, 0.35) + rng.normal(0, 0.02, n), "LITH": lith},
            well=f"W-{w:02d}")
    return root


def _train(tmp_path: Path, *overrides: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", *overrides, "trainer.max_epochs=1",
                           "logger=none", "eval.figures=false", "eval.n_init=1",
                           "trainer.enable_progress_bar=false", f"paths.root_dir={tmp_path}",
                           f"paths.data_dir={tmp_path / 'data'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = list((tmp_path / "outputs").rglob("metrics.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def _predict(tmp_path: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    """``lithovae.predict`` with the run that :func:`_train` left, in process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.predict import predict
    from tests.conftest import CONF_DIR

    (run_dir,) = [p.parent for p in (tmp_path / "outputs").rglob("metrics.json")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[
            f"run={run_dir}", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
            f"out={tmp_path / 'predicted'}", *overrides])
    summary = predict(cfg)
    return summary, pd.read_parquet(summary["table"])


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_training_on_a_folder_of_las_wells_ends_with_metrics_and_predicts_new_wells(tmp_path):
    folder = _las_folder(tmp_path / "wells")
    features = "data.features={GR: GR, RHOB: RHOB|DEN, NPHI: NPHI}"
    metrics = _train(tmp_path, "data=las", f"data.path={folder}", features, "data.label=LITH")
    assert metrics["dataset"] == "las-wells" and metrics["synthetic"] is False
    assert metrics["n_test"] > 0 and {"r2_GR", "r2_RHOB", "r2_NPHI"} <= set(metrics)
    new = _las_folder(tmp_path / "new-wells", n_wells=3, seed=1)  # unlabeled: data.label stays null
    summary, table = _predict(tmp_path, "data=las", f"data.path={new}", features)
    assert len(table) == summary["n_bins"] == 3 * 150 and table["borehole_id"].nunique() == 3
    assert {"GR", "RHOB", "NPHI", "GR_imputed", "z_0", "cluster", "anomaly_percentile"} <= set(table.columns)
    missing_gr = table["GR_imputed"].to_numpy()
    assert missing_gr.any() and np.isfinite(table.loc[missing_gr, "GR"]).all()  # filled by the decoder
    assert len(summary["figures"]) == 3 and "scores" not in summary


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_training_on_a_csv_of_well_log_columns_ends_with_metrics_and_predicts(tmp_path):
    csv = _well_log_csv(tmp_path / "logs.csv", n_wells=20)
    columns = ["data.borehole=WELL", "data.depth=DEPTH", "data.label=LITHOLOGY",
               "data.features=[GR,RHOB,NPHI,DTC,RDEP]", "data.transforms={RDEP: log1p}"]
    metrics = _train(tmp_path, "data=table", f"data.path={csv}", *columns)
    assert metrics["dataset"] == "table-logs" and metrics["n_test"] > 0
    assert {"r2_GR", "r2_DTC", "r2_RDEP"} <= set(metrics)
    new = _well_log_csv(tmp_path / "new.csv", n_wells=2, seed=3)
    summary, table = _predict(tmp_path, "data=table", f"data.path={new}", *columns, "figures=false")
    assert len(table) == 2 * 40 and summary["n_labeled"] == 80
    assert -1 <= summary["scores"]["ari_saved_clusterer"] <= 1 and "ari_best" in summary["scores"]


# --- header details: an empty WELL, a repeated mnemonic --------------------------------------

def test_an_empty_well_header_is_the_file_name_never_a_missing_borehole(tmp_path):
    """Rows of a LAS file always have a borehole id: with WELL empty it is the file name, so two
    such files stay two boreholes (never merged, never dropped)."""
    for name in ("a", "b"):
        _raw_las(tmp_path / "w" / f"{name}.las", "DEPT.M :\nGR.API :\n", "0.0 1.0\n0.2 2.0\n")
        text = (tmp_path / "w" / f"{name}.las").read_text().replace("WELL. W : WELL", "WELL.   : WELL")
        (tmp_path / "w" / f"{name}.las").write_text(text)
    path, manifest = las_source(tmp_path / "w", features=["GR"]).prepare(tmp_path / "data", log=_quiet)
    data = pd.read_parquet(path)
    assert sorted(data["borehole_id"].unique()) == ["a", "b"] and len(data) == 4
    assert manifest["steps"]["dropped_missing_borehole"] == 0
    assert "boreholes_from_several_files" not in manifest["steps"]


def test_a_repeated_mnemonic_is_said_in_one_line_and_recorded_in_the_manifest(tmp_path):
    _raw_las(tmp_path / "w" / "a.las", "DEPT.M :\nGR.API :\nGR.API :\nRHOB.G/C3 :\n",
             "0.0 1.0 5.0 2.0\n0.2 2.0 6.0 2.1\n")
    _good(tmp_path / "w" / "b.las")
    lines = []
    path, manifest = las_source(tmp_path / "w", features=["GR", "RHOB"]).prepare(
        tmp_path / "data", log=lines.append)
    said = [line for line in lines if "GR" in line and "appears" in line]
    assert said == ["[lithovae.data] a.las: curve GR appears 2 times (read as GR:1, GR:2): GR means GR:1; "
                    "name GR:2 in data.features to use another"], lines
    assert manifest["steps"]["repeated_mnemonics"] == {"a.las": ["GR"]}
    assert manifest["inputs"]["a.las"]["repeated_mnemonics"] == {"GR": ["GR:1", "GR:2"]}
    assert "repeated_mnemonics" not in manifest["inputs"]["b.las"]
    data = pd.read_parquet(path)
    assert data.loc[data["borehole_id"] == "W", "GR"].tolist() == [1.0, 2.0]  # the first GR
    # the second is named by lasio's name for it
    other, _ = las_source(tmp_path / "w" / "a.las", features={"GR": "GR:2"}).prepare(
        tmp_path / "data", log=_quiet)
    assert pd.read_parquet(other)["GR"].tolist() == [5.0, 6.0]
