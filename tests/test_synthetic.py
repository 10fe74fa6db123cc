"""The synthetic LILY generator (small scale only: each test takes seconds)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lithovae.data import reference, synthetic
from lithovae.data.schema import INSTRUMENTS

# Columns before and after the measurements in the real LILY files (AVS_DataLITH.csv).
REAL_PREFIX = ["Exp", "Site", "Hole", "Core", "Type", "Sect", "A/W", "Offset (cm)",
               "Depth CSF-A (m)", "Depth CSF-B (m)"]
REAL_SUFFIX = ["Prefix", "Principal", "Suffix", "Full Lithology", "Simplified Lithology",
               "Lithology Type", "Degree of Consolidation", "Lithology Subtype",
               "Expanded Core Type", "Latitude (DD)", "Longitude (DD)", "Water Depth (mbsl)"]
REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/lily_sample/AVS_DataLITH.csv"
CRUST_GROUPS = {"Mafic Igneous", "Ultramafic"}


def _digests(raw: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(raw.iterdir())}


def _read(raw: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(raw / INSTRUMENTS[name].filename, keep_default_na=False,
                        dtype={"Exp": str, "Site": str, "Hole": str, "Sect": str})
    frame["hole_id"] = frame["Exp"] + "-" + frame["Site"] + "-" + frame["Hole"]
    frame["bin"] = np.floor(frame["Depth CSF-A (m)"] / 0.2 + 0.5).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    raw = tmp_path_factory.mktemp("small0")
    summary = synthetic.generate_raw(raw, scale="small", seed=0)
    return raw, summary


@pytest.fixture(scope="module")
def frames(small):
    raw, _ = small
    return {name: _read(raw, name) for name in INSTRUMENTS}


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    raw, _ = small
    synthetic.generate_raw(tmp_path / "again", scale="small", seed=0)
    synthetic.generate_raw(tmp_path / "other", scale="small", seed=1)
    first = _digests(raw)
    assert set(first) == {inst.filename for inst in INSTRUMENTS.values()}
    assert _digests(tmp_path / "again") == first
    other = _digests(tmp_path / "other")
    assert all(other[name] != digest for name, digest in first.items())


def test_summary_counts_what_was_written(small):
    raw, summary = small
    assert summary["scale"] == "small" and summary["seed"] == 0 and summary["synthetic"] is True
    scale = synthetic.SCALES["small"]
    assert summary["boreholes"] == scale.camera_holes + scale.no_camera_holes + scale.no_ngr_holes
    assert 15 <= summary["boreholes"] <= 25
    for filename, rows in summary["rows"].items():
        with open(raw / filename, "rb") as fh:
            assert sum(1 for _ in fh) - 1 == rows > 0


def test_unknown_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic scale"):
        synthetic.generate_raw(tmp_path, scale="huge")
    assert not any(tmp_path.iterdir())


def test_columns_match_the_real_schema(small):
    raw, _ = small
    if REAL_SAMPLE.exists():
        real = pd.read_csv(REAL_SAMPLE, nrows=0).columns.tolist()
        assert real[:10] == REAL_PREFIX and real[-12:] == REAL_SUFFIX
    for inst in INSTRUMENTS.values():
        header = pd.read_csv(raw / inst.filename, nrows=0).columns.tolist()
        assert header == REAL_PREFIX + list(inst.columns) + REAL_SUFFIX


def test_strings_quoted_numbers_not(small):
    raw, _ = small
    # as in the real sample, except Exp: synthetic expedition ids are strings ("S354")
    quoted = {"Exp", "Site", "Hole", "Type", "Sect", "A/W", "Water Depth (mbsl)", *REAL_SUFFIX[:9]}
    for inst in INSTRUMENTS.values():
        with open(raw / inst.filename) as fh:
            header = fh.readline().rstrip("\n").split(",")
            row = fh.readline().rstrip("\n").split(",")
        assert len(row) == len(header)
        for name, value in zip(header, row):
            name = name.strip('"')
            assert value.startswith('"') == (name in quoted), (inst.filename, name, value)


def test_location_columns_plausible(frames):
    for name, f in frames.items():
        assert f["Exp"].str.fullmatch(r"S\d{3}").all()  # obviously synthetic expeditions
        assert f["Site"].str.startswith("U").all()
        assert (f["Depth CSF-B (m)"] <= f["Depth CSF-A (m)"] + 1e-9).all()
        assert (f["Depth CSF-B (m)"] < f["Depth CSF-A (m)"]).any()  # expanded cores squeezed
        assert f["Offset (cm)"].between(0, 150).all()
        assert set(f["Sect"]) <= {str(i) for i in range(1, 9)}
        assert set(f["Type"]) <= {"H", "F", "X", "R"}
        assert f["A/W"].eq("A" if name == "RGB" else "W").all()
        # one position per hole: lat/lon/water depth constant within a hole
        assert (f.groupby("hole_id")[["Latitude (DD)", "Longitude (DD)", "Water Depth (mbsl)"]]
                .nunique() == 1).all().all()


def test_lithology_columns_consistent(frames):
    principals = set(reference.class_distribution()["Lithology"])
    f = frames["GRA"]
    assert set(f["Principal"]) <= principals
    assert f["Principal"].nunique() >= 40
    joined = [" ".join(p for p in parts if p)
              for parts in zip(f["Prefix"], f["Principal"], f["Suffix"])]
    assert (f["Full Lithology"] == joined).all()
    assert 0.4 < (f["Prefix"] == "").mean() < 0.9
    assert 0.5 < (f["Suffix"] == "").mean() < 0.95
    # a lithology is described the same way by every instrument at the same depth
    both = f.merge(frames["MS"], on=["hole_id", "Core", "Sect", "Offset (cm)"],
                   suffixes=("", "_ms"))
    assert len(both) > 0.9 * len(f)
    assert (both["Full Lithology"] == both["Full Lithology_ms"]).all()


@pytest.mark.parametrize("name, interval_cm",
                         [("GRA", 2.5), ("MS", 2.5), ("NGR", 10.0), ("RGB", 2.0)])
def test_sampling_intervals(frames, name, interval_cm):
    f = frames[name]
    step = f.groupby(["hole_id", "Core", "Sect"])["Offset (cm)"].diff().dropna()
    assert step.median() == pytest.approx(interval_cm)
    assert (step > 0).all()
    depth_step = f.groupby(["hole_id", "Core", "Sect"])["Depth CSF-A (m)"].diff().dropna()
    assert depth_step.median() == pytest.approx(interval_cm / 100, abs=0.0015)


def test_rows_per_bin_follow_intervals(frames):
    per_bin = {name: f.groupby(["hole_id", "bin"]).size().median() for name, f in frames.items()}
    assert per_bin["RGB"] > per_bin["GRA"] == per_bin["MS"] > per_bin["NGR"]


def test_missing_rgb_goes_with_oceanic_crust(frames):
    groups = reference.lithology_groups()
    gra = frames["GRA"]
    rgb_bins = set(zip(frames["RGB"]["hole_id"], frames["RGB"]["bin"]))
    has_rgb = np.array([key in rgb_bins for key in zip(gra["hole_id"], gra["bin"])])
    crust = gra["Principal"].map(groups).isin(CRUST_GROUPS).to_numpy()
    assert crust.sum() > 200
    assert has_rgb[crust].mean() < 0.6 * has_rgb[~crust].mean()
    # holes with no camera at all are richer in crust than holes with one
    no_camera = ~gra["hole_id"].isin(set(frames["RGB"]["hole_id"])).to_numpy()
    assert no_camera.any() and (~no_camera).any()
    assert crust[no_camera].mean() > 2 * crust[~no_camera].mean()


def test_missing_ngr_holes_and_gaps(frames):
    gra_holes, ngr_holes = set(frames["GRA"]["hole_id"]), set(frames["NGR"]["hole_id"])
    assert ngr_holes < gra_holes  # some holes lack NGR entirely
    gra_bins = set(zip(frames["GRA"]["hole_id"], frames["GRA"]["bin"]))
    ngr_bins = set(zip(frames["NGR"]["hole_id"], frames["NGR"]["bin"]))
    covered = len(gra_bins & ngr_bins) / len(gra_bins)
    assert 0.6 < covered < 0.97


def test_magnetic_and_gamma_signatures(frames):
    groups = reference.lithology_groups()
    ms, ngr = frames["MS"], frames["NGR"]
    ms_col, ngr_col = "Magnetic susceptibility (instr. units)", "NGR total counts (cps)"
    ms_group, ngr_group = ms["Principal"].map(groups), ngr["Principal"].map(groups)
    carbonate_ms = ms.loc[ms_group == "Carbonate", ms_col]
    # diamagnetic carbonates: small negative values, absent from clays
    assert (carbonate_ms < 0).mean() > 0.03
    assert carbonate_ms.min() > -20
    assert (ms.loc[ms_group == "Clay/Mud", ms_col] < 0).mean() < 0.02
    med_ms = ms.groupby(ms_group)[ms_col].median()
    med_ngr = ngr.groupby(ngr_group)[ngr_col].median()
    assert med_ms["Mafic Igneous"] > 100 * max(med_ms["Carbonate"], 1.0)
    assert med_ms["Mafic Igneous"] > 10 * med_ms["Clay/Mud"]
    assert med_ngr["Clay/Mud"] > 2 * med_ngr["Carbonate"]
    assert med_ngr["Mafic Igneous"] < 0.5 * med_ngr["Carbonate"]


def test_density_and_colour(frames):
    groups = reference.lithology_groups()
    gra, rgb = frames["GRA"], frames["RGB"]
    density = gra.groupby("Principal")["Bulk density (GRA)"].median()
    assert density["basalt"] > 2.3 > 1.8 > density["nannofossil ooze"] > 1.3
    values = rgb[["R", "G", "B"]].to_numpy()
    assert values.min() >= 0 and values.max() <= 255
    means = rgb[["R", "G", "B"]].mean()
    assert means["R"] > means["G"] > means["B"]  # slightly reddish
    light = rgb.groupby(rgb["Principal"].map(groups))["R"].median()
    assert light["Carbonate"] > 1.5 * light["Clay/Mud"]


def _fail_on_third_hole(monkeypatch):
    real, calls = synthetic._hole_tables, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_hole_tables", flaky)
    return calls


def test_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    calls = _fail_on_third_hole(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.generate_raw(tmp_path / "raw", scale="small", seed=0)
    assert calls["n"] == 3  # it failed midway, after writing two holes
    assert list((tmp_path / "raw").iterdir()) == []


def test_failure_keeps_previous_complete_files(small, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    synthetic.generate_raw(raw, scale="small", seed=1)
    before = _digests(raw)
    _fail_on_third_hole(monkeypatch)
    with pytest.raises(RuntimeError):
        synthetic.generate_raw(raw, scale="small", seed=0)
    assert _digests(raw) == before  # same names, same bytes: no temp file left, none replaced


def test_binning_the_generated_tables_is_binning_their_files(small, tmp_path):
    """data=synthetic bins the generator's tables as they come (no raw file written): the same
    dataset, bin for bin and value for value, as the LILY reader's of the files they make."""
    from lithovae.data.builder import BuildOptions, build_dataset, build_from_tables
    from tests.conftest import config_defaults

    raw, summary = small
    for build in ({}, {"keep_incomplete": True, "outlier_filter": False}):
        options = BuildOptions.from_config({**config_defaults()["data"]["build"], **build}, encoding="utf-8")
        from_files = build_dataset(raw, tmp_path / "files", options, name="s", log=lambda *_: None, force=True)
        in_memory = build_from_tables(synthetic.generate_tables("small", 0), "synthetic", tmp_path / "memory",
                                      options, name="s", log=lambda *_: None)
        expected, got = pd.read_parquet(from_files.path), pd.read_parquet(in_memory.path)
        assert len(got) > 1000
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert in_memory.manifest["steps"] == from_files.manifest["steps"]
    rows = {name: steps["rows_read"] for name, steps in in_memory.manifest["steps"]["instruments"].items()}
    assert rows == {name: summary["rows"][INSTRUMENTS[name].filename] for name in rows}
    assert not list(tmp_path.rglob("*.csv"))


def test_the_tables_are_read_as_the_csv_reader_reads_their_file():
    """What the CSV reader turns into missing values (empty strings, "NA", "nan") is missing in
    the tables binned from memory too, and the columns have the reader's types."""
    import pyarrow as pa

    from lithovae.data.builder import tables_as_read

    inst = INSTRUMENTS["GRA"]
    table = pa.table({"Exp": ["1", "2", "3"], "Site": ["U1", "NA", ""], "Hole": pa.array(["A", "B", None]),
                      "Core": [1, 2, 3], "Depth CSF-A (m)": pa.array([0.1, 0.2, 0.3], pa.float32()),
                      "Bulk density (GRA)": [1.5, float("nan"), 2.0], "Principal": ["clay", "null", "sand"],
                      "Prefix": ["", "", "silty"], "Suffix": ["nan", "", ""], "Full Lithology": ["a", "b", "c"]})
    read = tables_as_read(table, inst)
    assert read.column_names == ["Exp", "Site", "Hole", "Depth CSF-A (m)", "Bulk density (GRA)", "Principal",
                                 "Prefix", "Suffix", "Full Lithology"]
    assert read.column("Site").to_pylist() == ["U1", None, None]
    assert read.column("Principal").to_pylist() == ["clay", None, "sand"]
    assert read.column("Suffix").null_count == 3 and read.column("Prefix").to_pylist() == [None, None, "silty"]
    assert read.schema.field("Depth CSF-A (m)").type == pa.float64()
