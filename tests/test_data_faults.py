"""Bad data inputs: non-finite and absurd values, empty feature columns, duplicate depths
and non-UTF-8 files. Each is either counted in the manifest or a one-line error naming
the file and the column or option, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lithovae.data.builder import BuildError, BuildOptions, build_dataset
from lithovae.data.sources import LilySource, TableSource
from lithovae.data.schema import INSTRUMENTS
from tests.conftest import config_defaults
from tests.lily_files import lily_frame, random_lily, write_lily


def _source_yaml(option: str) -> dict:
    """The constructor keywords lithovae/conf/data/<option>.yaml gives (the sources have no defaults)."""
    return {k: v for k, v in config_defaults(f"data={option}")["data"].items() if k != "_target_"}


def table_source(path: str, **overrides) -> TableSource:
    """A TableSource with the defaults of conf/data/table.yaml, ``overrides`` on top."""
    return TableSource(**{**_source_yaml("table"), "path": path, **overrides})


def lily_source(raw_dir: str, **overrides) -> LilySource:
    """A LilySource with the defaults of conf/data/lily.yaml, ``overrides`` on top."""
    return LilySource(**{**_source_yaml("lily"), "raw_dir": raw_dir, **overrides})


def _quiet(*_a, **_k):
    pass


def _options(**overrides) -> BuildOptions:
    """The ``data.build`` defaults of lithovae/conf/data/synthetic.yaml, ``overrides`` on top."""
    return BuildOptions(**{**config_defaults()["data"]["build"], "encoding": "utf-8", **overrides})


def _table(path: Path, rows: list[tuple], columns=("borehole_id", "depth_m", "principal", "GRA", "MS"),
           encoding: str = "utf-8") -> Path:
    """A small CSV written as text, so 'inf', '-inf' and '1e30' reach the reader verbatim."""
    lines = [",".join(columns)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _no_dataset_written(data_dir: Path) -> bool:
    return not data_dir.exists() or not list(data_dir.rglob("*.parquet"))


# --- 1. non-finite and absurd values are outliers: dropped and counted ---------------------

def test_table_inf_and_absurd_values_are_dropped_and_counted_per_column(tmp_path):
    path = _table(tmp_path / "mine.csv", [
        ("H1", 0.0, "clay", 1.6, 10),
        ("H1", 0.2, "clay", "inf", 12),     # GRA inf: missing, the row keeps MS
        ("H1", 0.4, "clay", 1.7, "-inf"),
        ("H1", 0.6, "clay", 1e30, 1e30),   # nothing usable left: row dropped (counted)
        ("H2", 0.0, "silt", 1.8, -1e13),
        ("H2", 0.2, "silt", 1.9, 5),
    ])
    out, manifest = table_source(str(path), features={"GRA": "GRA", "MS": "MS"}).prepare(
        tmp_path / "data", log=_quiet)
    data = pd.read_parquet(out)
    values = data[["GRA", "MS"]].to_numpy(dtype=np.float64)
    assert not np.isinf(values).any() and np.nanmax(np.abs(values)) < 1e3
    steps = manifest["steps"]
    assert steps["dropped_nonfinite"] == {"GRA": 1, "MS": 1}
    assert steps["dropped_beyond_max_abs"] == {"GRA": 1, "MS": 2}
    assert steps["dropped_no_feature"] == 1 and len(data) == 5
    assert steps["missing_per_feature"] == {"GRA": 1, "MS": 2}
    assert manifest["options"]["max_abs_value"] == 1e12
    on_disk = json.loads(out.with_suffix(".manifest.json").read_text())
    assert on_disk["steps"]["dropped_nonfinite"] == {"GRA": 1, "MS": 1}


@pytest.mark.parametrize("outlier_filter", [True, False])
def test_lily_inf_and_absurd_values_are_dropped_and_counted(tmp_path, outlier_filter):
    rows = [{"depth": 0.0, "GRA": 1.6, "MS": 1, "NGR": 1},
            {"depth": 0.2, "GRA": "inf", "MS": "-inf", "NGR": 1e30},
            {"depth": 0.4, "GRA": 1.7, "MS": 1e30, "NGR": "inf"},
            {"depth": 0.6, "GRA": 1.8, "MS": 2, "NGR": 3}]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, rows) for n in ("GRA", "MS", "NGR")})
    opts = _options(feature_set="physical3", outlier_filter=outlier_filter)
    result = build_dataset(raw, tmp_path / "out", opts, log=_quiet)
    steps = result.manifest["steps"]["instruments"]
    assert steps["GRA"]["dropped_nonfinite"] == 1 and steps["GRA"]["dropped_beyond_max_abs"] == 0
    assert steps["MS"]["dropped_nonfinite"] == 1 and steps["MS"]["dropped_beyond_max_abs"] == 1
    assert steps["NGR"]["dropped_nonfinite"] == 1 and steps["NGR"]["dropped_beyond_max_abs"] == 1
    assert steps["GRA"]["dropped_outlier"] == 0  # inf is counted once, as non-finite
    data = pd.read_parquet(result.path)
    assert sorted(data["depth_m"]) == [0.0, 0.6]
    assert np.isfinite(data[["GRA", "MS", "NGR"]].to_numpy(dtype=np.float64)).all()


# --- 2. a feature column with no finite value is a one-line error ----------------------------

@pytest.mark.parametrize("fill", ["", "NaN", "inf", "1e30"])
def test_table_feature_column_without_a_finite_value_names_file_and_column(tmp_path, fill):
    path = _table(tmp_path / "mine.csv", [("H1", 0.0, "clay", 1.6, fill), ("H1", 0.2, "clay", 1.7, fill)])
    with pytest.raises(BuildError) as err:
        table_source(str(path), features={"GRA": "GRA", "MS": "MS"}).prepare(tmp_path / "data", log=_quiet)
    message = str(err.value)
    assert message == (f"{path}: column 'MS' has no finite value in 2 rows "
                       "(all empty, NaN, inf or beyond ±1e+12)")
    assert _no_dataset_written(tmp_path / "data")


def test_lily_measurement_column_without_a_finite_value_names_file_and_column(tmp_path):
    rows = [{"depth": d, "GRA": 1.6, "MS": 1, "NGR": 1, "R": 90, "G": 80, "B": ""} for d in (0.0, 0.2)]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, rows) for n in INSTRUMENTS})
    with pytest.raises(BuildError) as err:
        build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    message = str(err.value)
    assert message.startswith(f"{raw / 'RGB_DataLITH.csv'}: column 'B' has no finite value in 2 rows")
    assert "\n" not in message
    assert _no_dataset_written(tmp_path / "out")


# --- 3. duplicate (borehole, depth) rows are averaged into one bin and counted ---------------

def test_table_duplicate_depths_are_averaged_into_one_bin_and_counted(tmp_path):
    path = _table(tmp_path / "mine.csv", [
        ("H1", 0.0, "clay", 1.6, 10),
        ("H1", 0.2, "silt", 1.5, 10),
        ("H1", 0.2, "clay", 1.7, None),   # MS missing here: the mean is over the rows that have it
        ("H1", 0.2, "clay", 1.9, 20),
        ("H1", 0.4, "clay", 1.8, 30),
        ("H2", 0.2, "basalt", 2.8, 900),  # same depth, other borehole: not a duplicate
    ])
    groups = {"clay": "Clay/Mud", "silt": "Silt", "basalt": "Mafic"}  # own data: groups only when given
    out, manifest = table_source(str(path), features={"GRA": "GRA", "MS": "MS"}, groups=groups).prepare(
        tmp_path / "data", log=_quiet)
    data = pd.read_parquet(out)
    assert not data.duplicated(["borehole_id", "depth_m"]).any()
    assert len(data) == 4
    bin_ = data[(data["borehole_id"] == "H1") & (data["depth_m"] == 0.2)].iloc[0]
    assert bin_["GRA"] == pytest.approx((1.5 + 1.7 + 1.9) / 3, rel=1e-6)
    assert bin_["MS"] == pytest.approx(15.0)
    assert bin_["principal"] == "clay" and bin_["lithology_group"] == "Clay/Mud"  # 2 votes to 1
    assert manifest["steps"]["duplicate_rows_averaged"] == 3
    assert manifest["steps"]["duplicate_bins"] == 1
    assert list(data["depth_m"][data["borehole_id"] == "H1"]) == [0.0, 0.2, 0.4]


# --- 4. a file that is not UTF-8: data.encoding ------------------------------------------------

def test_table_latin1_file_needs_data_encoding_and_reads_with_it(tmp_path):
    rows = [("H1", 0.0, "Argile à silex", 1.6, 10), ("H1", 0.2, "Argile à silex", 1.7, 11)]
    path = _table(tmp_path / "mine.csv", rows, encoding="latin-1")
    with pytest.raises(BuildError) as err:
        table_source(str(path), features={"GRA": "GRA", "MS": "MS"}).prepare(tmp_path / "data", log=_quiet)
    assert str(err.value) == (f"{path}: not utf-8 text (line 2, byte 0xe0); if it is Latin-1 set "
                              "data.encoding=latin-1 (or data.encoding=<its encoding>, e.g. cp1252)")
    assert _no_dataset_written(tmp_path / "data")

    out, manifest = table_source(str(path), features={"GRA": "GRA", "MS": "MS"},
                                 encoding="latin-1").prepare(tmp_path / "data", log=_quiet)
    assert set(pd.read_parquet(out)["principal"]) == {"Argile à silex"}
    assert manifest["options"]["encoding"] == "iso8859-1"
    # the option is part of the output's name: another encoding never reuses this file
    utf8 = _table(tmp_path / "mine.csv", [("H1", 0.0, "clay", 1.6, 10)])
    other, _ = table_source(str(utf8), features={"GRA": "GRA", "MS": "MS"}).prepare(
        tmp_path / "data", log=_quiet)
    assert other != out and other.parent == out.parent


def test_table_latin1_header_needs_data_encoding(tmp_path):
    columns = ("borehole_id", "depth_m", "lithologie", "densité")
    path = _table(tmp_path / "mine.csv", [("H1", 0.0, "argile", 1.6)], columns, encoding="latin-1")
    with pytest.raises(BuildError) as err:
        table_source(str(path), label="lithologie", features={"GRA": "densité"}).prepare(tmp_path / "data")
    assert str(err.value).startswith(f"{path}: not utf-8 text (line 1, byte 0xe9); if it is Latin-1 set "
                                     "data.encoding=latin-1")
    out, _ = table_source(str(path), label="lithologie", features={"GRA": "densité"},
                          encoding="latin-1").prepare(tmp_path / "data", log=_quiet)
    assert pd.read_parquet(out)["GRA"].tolist() == [pytest.approx(1.6)]


def test_unknown_encoding_is_named():
    with pytest.raises(BuildError, match=r"^data.encoding: unknown text encoding 'utf-42'"):
        table_source("x.csv", encoding="utf-42")
    with pytest.raises(BuildError, match=r"^data.features: empty; list the columns"):
        table_source("x.csv", features={})
    with pytest.raises(BuildError, match=r"^data.encoding: unknown text encoding 'utf-42'"):
        lily_source("raw", encoding="utf-42")


def test_lily_latin1_files_need_data_encoding_and_it_is_in_the_cache_key(tmp_path):
    rows = [{"depth": d, "GRA": 1.6, "MS": 1, "NGR": 1, "principal": "Argile à silex"} for d in (0.0, 0.2)]
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("GRA", "MS", "NGR"):
        lily_frame(name, rows).to_csv(raw / INSTRUMENTS[name].filename, index=False, encoding="latin-1")
    build = {**config_defaults("data=lily")["data"]["build"], "feature_set": "physical3"}
    with pytest.raises(BuildError) as err:
        lily_source(str(raw), build=build).prepare(tmp_path / "data", log=_quiet)
    message = str(err.value)
    assert message.startswith(f"{raw / 'GRA_DataLITH.csv'}: not utf-8 text (line 2, byte 0xe0)")
    assert "data.encoding=latin-1" in message and "\n" not in message
    assert _no_dataset_written(tmp_path / "data")

    path, _ = lily_source(str(raw), build=build, encoding="latin-1").prepare(tmp_path / "data", log=_quiet)
    assert set(pd.read_parquet(path)["principal"]) == {"Argile à silex"}
    # ASCII files read the same in both encodings, but the option still keys the output
    clay = [dict(r, principal="clay") for r in rows]
    ascii_raw = write_lily(tmp_path / "ascii", {n: lily_frame(n, clay) for n in ("GRA", "MS", "NGR")})
    a = build_dataset(ascii_raw, tmp_path / "out", _options(**build, encoding="latin-1"), log=_quiet)
    b = build_dataset(ascii_raw, tmp_path / "out", _options(**build), log=_quiet)
    assert b.rebuilt and a.path != b.path


# --- the command line: one line, exit code 2, nothing written ---------------------------------

@pytest.mark.parametrize("case", ["all_nan_column", "latin1"])
def test_command_line_prints_one_error_line_and_exits_2(tmp_path, case):
    columns = ("borehole_id", "depth_m", "principal", "GRA", "MS", "NGR", "R", "G", "B")  # the default
    if case == "all_nan_column":
        rows = [("H1", 0.0, "clay", 1.6, None, 5, 90, 80, 70), ("H1", 0.2, "clay", 1.7, "NaN", 6, 91, 81, 71)]
        path = _table(tmp_path / "mine.csv", rows, columns)
        expected = f"error: {path}: column 'MS' has no finite value in 2 rows"
    else:
        rows = [("H1", 0.0, "Argile à silex", 1.6, 1, 5, 90, 80, 70)]
        path = _table(tmp_path / "mine.csv", rows, columns, encoding="latin-1")
        expected = (f"error: {path}: not utf-8 text (line 2, byte 0xe0); "
                    "if it is Latin-1 set data.encoding=latin-1")
    proc = subprocess.run([sys.executable, "-m", "lithovae.data", "data=table", f"data.path={path}",
                           f"paths.root_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _no_dataset_written(tmp_path / "outputs")


# --- 5. rows without a borehole id: dropped, counted and said, never merged into a borehole -------

@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_rows_without_a_borehole_id_are_dropped_counted_and_said(tmp_path, kind):
    """The probe's table: 300 rows, 100 of them without an id (empty, NaN, blank) at the depths
    of H1. They were averaged away into H1's bins or a borehole of their own; now each is
    dropped, counted in the manifest and named in one printed line, and H1 is untouched."""
    depths = np.round(np.arange(100) * 0.2, 6)
    frame = pd.concat([
        pd.DataFrame({"borehole_id": "H1", "depth_m": depths, "principal": "clay", "GRA": 1.6, "MS": 10.0}),
        pd.DataFrame({"borehole_id": "H2", "depth_m": depths, "principal": "silt", "GRA": 1.9, "MS": 20.0}),
        pd.DataFrame({"borehole_id": np.array(["", None, "  ", np.nan] * 25, dtype=object),
                      "depth_m": depths, "principal": "basalt", "GRA": 2.8, "MS": 900.0}),
    ], ignore_index=True)
    path = tmp_path / f"mine.{kind}"
    frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path, index=False)
    lines = []
    out, manifest = table_source(str(path), features={"GRA": "GRA", "MS": "MS"}).prepare(
        tmp_path / "data", log=lines.append)
    data = pd.read_parquet(out)
    assert sorted(data["borehole_id"].unique()) == ["H1", "H2"] and len(data) == 200
    assert (data.loc[data["borehole_id"] == "H1", "MS"] == 10.0).all()  # nothing averaged in
    assert manifest["steps"]["dropped_missing_borehole"] == 100
    assert manifest["steps"]["duplicate_rows_averaged"] == 0 and manifest["rows"] == 200
    assert lines == [f"[lithovae.data] mine.{kind}: 100 of 300 rows have no borehole id "
                     "(column 'borehole_id' empty or NaN): dropped"]


def test_a_table_without_any_borehole_id_is_one_line(tmp_path):
    path = _table(tmp_path / "mine.csv", [(None, 0.0, "clay", 1.6, 10), ("", 0.2, "clay", 1.7, 11)])
    with pytest.raises(BuildError) as err:
        table_source(str(path), features={"GRA": "GRA", "MS": "MS"}).prepare(tmp_path / "data", log=_quiet)
    assert str(err.value) == f"{path}: column 'borehole_id' (the borehole id) is empty in all 2 rows"
    assert _no_dataset_written(tmp_path / "data")


def test_a_dataset_with_rows_without_a_borehole_id_is_one_line_not_a_type_error(tmp_path):
    """A dataset written before such rows were dropped (or by hand): the split would sort ids
    mixed with NaN (a TypeError in splits.py); it is one line naming the file instead."""
    from lithovae.data.datamodule import LithoDataModule

    rows = [(b, d, "clay", 1.6 + d) for b in ("H1", "H2", "H3", None) for d in (0.0, 0.2)]
    frame = pd.DataFrame(rows, columns=["borehole_id", "depth_m", "principal", "GRA"])
    for column in ("prefix", "suffix", "full_lithology", "lithology_group"):
        frame[column] = None
    path = tmp_path / "old.parquet"
    frame.to_parquet(path, index=False)
    datamodule = config_defaults()["datamodule"]
    dm = LithoDataModule(path, seed=0, **datamodule)
    with pytest.raises(BuildError) as err:
        dm.setup()
    assert str(err.value) == (f"{path}: 2 of 8 rows have no borehole_id; rebuild the dataset "
                              "from its source")


# --- 6. a damaged cached dataset or manifest is detected on use and rebuilt -------------------

def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _garble(path: Path):
    """Bytes changed in the middle, same size: the footer still reads."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def _edit_manifest(change):
    def edit(path: Path):
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps(change(manifest)))
    return edit


DAMAGE = {
    "truncated_parquet": ("parquet", _truncate, "damaged cached dataset (unreadable Parquet: ArrowInvalid)"),
    "garbled_parquet": ("parquet", _garble, "damaged cached dataset (its SHA-256 differs from its manifest's)"),
    "manifest_not_json": ("manifest", lambda p: p.write_text('{"inputs": {'), "damaged manifest (not JSON: "),
    "manifest_a_list": ("manifest", lambda p: p.write_text("[1, 2]"),
                        "damaged manifest (a JSON list, not an object)"),
    "manifest_inputs_a_list": ("manifest", _edit_manifest(lambda m: {**m, "inputs": list(m["inputs"])}),
                               "damaged manifest (no 'inputs' object)"),
    "manifest_input_sizes_text": ("manifest", _edit_manifest(lambda m: {**m, "inputs": {
        k: {**v, "size": str(v["size"])} for k, v in m["inputs"].items()}}),
        "damaged manifest (inputs.GRA_DataLITH.csv: not {size, mtime_ns, sha256})"),
    "manifest_other_rows": ("manifest", _edit_manifest(lambda m: {**m, "rows": m["rows"] + 1}),
                            "damaged cached dataset ("),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cache_is_detected_on_use_and_rebuilt_with_one_line(tmp_path, case):
    target, damage, said = DAMAGE[case]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, [
        {"depth": d, "hole": h, "GRA": 1.6 + d, "MS": 1, "NGR": 1, "R": 90, "G": 80, "B": 70}
        for h in "ABC" for d in np.arange(40) * 0.2]) for n in INSTRUMENTS})
    first = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    expected = pd.read_parquet(first.path)
    damage(first.path if target == "parquet" else first.manifest_path)
    lines = []
    again = build_dataset(raw, tmp_path / "out", _options(), log=lines.append)
    what = first.path if target == "parquet" or case == "manifest_other_rows" else first.manifest_path
    assert again.rebuilt and lines[0].startswith(f"[lithovae.data] {what}: {said}"), lines
    assert lines[0].endswith("; rebuilding") and not any("damaged" in line for line in lines[1:])
    pd.testing.assert_frame_equal(pd.read_parquet(again.path), expected)
    assert json.loads(again.manifest_path.read_text())["rows"] == len(expected)
    lines.clear()
    assert not build_dataset(raw, tmp_path / "out", _options(), log=lines.append).rebuilt
    assert lines == [f"[lithovae.data] up to date: {first.path}"]


def test_a_manifest_from_before_outputs_were_recorded_is_reused_and_records_it(tmp_path):
    raw = random_lily(tmp_path / "raw", n_boreholes=3, bins_per_borehole=10)
    first = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    old = json.loads(first.manifest_path.read_text())
    recorded = old.pop("output")
    first.manifest_path.write_text(json.dumps(old))
    assert not build_dataset(raw, tmp_path / "out", _options(), log=_quiet).rebuilt
    assert json.loads(first.manifest_path.read_text())["output"] == recorded
