"""The LILY builder on the real sample file and on small hand-written files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lithovae.data.builder import BuildError, BuildOptions, bin_index, build_dataset
from lithovae.data.schema import DATASET_KEY_COLUMNS, INSTRUMENTS
from tests.conftest import config_defaults
from tests.lily_files import lily_frame, random_lily, write_lily

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lily_sample" / "AVS_DataLITH.csv"
AVS_COLUMN = "Vane shear strength (kN/m^2)"


def _quiet(*_a, **_k):
    pass


def _options(**overrides) -> BuildOptions:
    """The ``data.build`` defaults of lithovae/conf/data/synthetic.yaml, ``overrides`` on top."""
    return BuildOptions(**{**config_defaults()["data"]["build"], "encoding": "utf-8", **overrides})


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    if not SAMPLE.exists():
        pytest.skip(f"real LILY sample not found at {SAMPLE}")
    return pd.read_csv(SAMPLE, dtype={"Exp": str, "Site": str, "Hole": str})


def _real_rows_as_instruments(sample: pd.DataFrame, raw_dir: Path) -> Path:
    """The real sample's rows (real ids, depths, lithologies, quoting) under each
    instrument's measurement column, so the whole builder runs on real-format data."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    text = SAMPLE.read_text()
    header, body = text.split("\n", 1)
    for inst in INSTRUMENTS.values():
        cols = list(inst.columns)
        new_header = header.replace(f'"{AVS_COLUMN}"', ",".join(f'"{c}"' for c in cols))
        if len(cols) > 1:  # RGB: repeat the value into R, G, B
            frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
            pos = frame.columns.get_loc(AVS_COLUMN)
            for extra in cols[1:][::-1]:
                frame.insert(pos + 1, extra, frame[AVS_COLUMN])
            frame = frame.rename(columns={AVS_COLUMN: cols[0]})
            frame.to_csv(raw_dir / inst.filename, index=False)
        else:
            (raw_dir / inst.filename).write_text(new_header + "\n" + body)
    return raw_dir


def test_real_sample_builds_with_real_ids_bins_and_modal_lithology(sample, tmp_path):
    raw = _real_rows_as_instruments(sample, tmp_path / "raw")
    opts = _options(outlier_filter=False)  # vane shear values are not densities
    result = build_dataset(raw, tmp_path / "out", opts, log=_quiet)
    data = pd.read_parquet(result.path)
    assert list(data.columns[:7]) == DATASET_KEY_COLUMNS
    expected_ids = set(sample["Exp"] + "-" + sample["Site"] + "-" + sample["Hole"])
    assert set(data["borehole_id"]) == expected_ids
    assert "334-U1378-B" in set(data["borehole_id"])
    # independent recomputation of the bins and their means for one borehole
    one = sample[(sample["Exp"] == "334") & (sample["Site"] == "U1378") & (sample["Hole"] == "B")]
    one = one.dropna(subset=[AVS_COLUMN])
    bins = np.floor(np.round(one["Depth CSF-A (m)"] / 0.2, 9) + 0.5) * 0.2
    expected = one.groupby(bins.round(6))[AVS_COLUMN].mean()
    got = data[data["borehole_id"] == "334-U1378-B"].set_index("depth_m")["GRA"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.sort_index().index, expected.sort_index().index)
    # every bin's principal is one of the principals described in that bin
    assert data["principal"].isin(set(sample["Principal"].dropna())).all()
    assert result.manifest["rows"] == len(data)
    assert result.manifest["steps"]["instruments"]["GRA"]["rows_read"] == len(sample)


def test_duplicate_depths_average_and_votes_pick_the_mode(tmp_path):
    rows = [{"depth": 1.0, "GRA": 1.5, "MS": 1, "NGR": 10, "principal": "clay"},
            {"depth": 1.0, "GRA": 1.7, "MS": 3, "NGR": 20, "principal": "clay"},
            {"depth": 1.05, "GRA": 1.9, "MS": 5, "NGR": 30, "principal": "silty clay"}]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, rows) for n in ("GRA", "MS", "NGR")})
    result = build_dataset(raw, tmp_path / "out", _options(feature_set="physical3"), log=_quiet)
    data = pd.read_parquet(result.path)
    assert len(data) == 1
    row = data.iloc[0]
    assert row["depth_m"] == pytest.approx(1.0)
    assert row["GRA"] == pytest.approx(1.7, rel=1e-6)
    assert row["MS"] == pytest.approx(3.0)
    assert row["principal"] == "clay"  # 2 votes against 1 per instrument


def test_bin_edges_go_to_the_deeper_bin():
    depths = np.array([0.1, 0.3, 0.29999, 0.5, 0.7, 10.1, 0.0])
    np.testing.assert_array_equal(bin_index(depths, 0.2), [1, 2, 1, 3, 4, 51, 0])


def test_expedition_codes_with_letters_and_negative_ms_are_kept(tmp_path):
    rows = [{"exp": "368X", "site": "U1503", "hole": "A", "depth": d, "GRA": 1.6, "MS": -4.5,
             "NGR": 5.0, "R": 90, "G": 85, "B": 80, "principal": "nannofossil ooze"} for d in (0.0, 0.2)]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, rows) for n in INSTRUMENTS})
    data = pd.read_parquet(build_dataset(raw, tmp_path / "out", _options(), log=_quiet).path)
    assert set(data["borehole_id"]) == {"368X-U1503-A"}
    assert (data["MS"] == -4.5).all()
    assert (data["lithology_group"] == "Carbonate").all()


def test_nan_measurements_and_outliers_are_dropped_and_counted(tmp_path):
    rows = [{"depth": 0.0, "GRA": 1.6, "MS": 1, "NGR": 1, "R": 1, "G": 1, "B": 1},
            {"depth": 0.2, "GRA": "", "MS": 1, "NGR": 1, "R": 1, "G": 1, "B": 1},
            {"depth": 0.4, "GRA": 9.0, "MS": 1, "NGR": 1, "R": 300, "G": 1, "B": 1},
            {"depth": 0.6, "GRA": 1.7, "MS": 1, "NGR": 1, "R": 1, "G": 1, "B": 1}]
    raw = write_lily(tmp_path / "raw", {n: lily_frame(n, rows) for n in INSTRUMENTS})
    result = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    steps = result.manifest["steps"]["instruments"]
    assert steps["GRA"]["dropped_nan_measurement"] == 1
    assert steps["GRA"]["dropped_outlier"] == 1
    assert steps["RGB"]["dropped_outlier"] == 1
    data = pd.read_parquet(result.path)
    assert sorted(data["depth_m"]) == [0.0, 0.6]  # never zero-filled
    assert not (data[["GRA", "MS", "NGR", "R", "G", "B"]] == 0).any().any()


def test_keep_incomplete_and_fuzzy_tolerance(tmp_path):
    gra = [{"depth": d, "GRA": 1.6, "principal": "clay"} for d in (0.0, 0.2, 0.4, 0.6)]
    ms = [{"depth": d, "MS": 2.0, "principal": "clay"} for d in (0.0, 0.2, 0.4, 0.6)]
    ngr = [{"depth": d, "NGR": 7.0, "principal": "clay"} for d in (0.0, 0.4)]  # gaps at 0.2, 0.6
    raw = write_lily(tmp_path / "raw", {"GRA": lily_frame("GRA", gra), "MS": lily_frame("MS", ms),
                                        "NGR": lily_frame("NGR", ngr)})
    strict = build_dataset(raw, tmp_path / "a", _options(feature_set="physical3"), log=_quiet)
    assert strict.manifest["rows"] == 2
    fuzzy = build_dataset(raw, tmp_path / "b", _options(feature_set="physical3", depth_tolerance=0.2),
                          log=_quiet)
    assert fuzzy.manifest["rows"] == 4
    assert fuzzy.manifest["steps"]["join"]["fuzzy_filled_NGR"] == 2
    loose = build_dataset(raw, tmp_path / "c", _options(feature_set="physical3", keep_incomplete=True,
                                                            require=["GRA"]), log=_quiet)
    data = pd.read_parquet(loose.path)
    assert len(data) == 4 and data["NGR"].isna().sum() == 2
    assert loose.manifest["steps"]["bins_incomplete"] == 2


def test_rebuilds_only_when_inputs_or_options_change(tmp_path):
    raw = random_lily(tmp_path / "raw", n_boreholes=3, bins_per_borehole=10)
    first = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    assert first.rebuilt
    again = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    assert not again.rebuilt and again.path == first.path
    other = build_dataset(raw, tmp_path / "out", _options(bin_size=0.4), log=_quiet)
    assert other.rebuilt and other.path != first.path
    with open(raw / "MS_DataLITH.csv", "a") as fh:  # a changed input
        fh.write(lily_frame("MS", [{"depth": 50.0, "MS": 3.0}]).to_csv(header=False, index=False))
    assert build_dataset(raw, tmp_path / "out", _options(), log=_quiet).rebuilt


def test_a_touched_input_with_the_same_content_is_hashed_once_and_reused(tmp_path, monkeypatch):
    import os

    import lithovae.data.builder as builder

    raw = random_lily(tmp_path / "raw", n_boreholes=3, bins_per_borehole=10)
    first = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    ms = raw / "MS_DataLITH.csv"
    os.utime(ms, ns=(ms.stat().st_atime_ns, ms.stat().st_mtime_ns + 10**9))  # a copy or a checkout
    hashed = []
    real_digest = builder.file_digest
    monkeypatch.setattr(builder, "file_digest", lambda p: hashed.append(Path(p).name) or real_digest(p))
    assert not build_dataset(raw, tmp_path / "out", _options(), log=_quiet).rebuilt
    assert not build_dataset(raw, tmp_path / "out", _options(), log=_quiet).rebuilt
    assert hashed == ["MS_DataLITH.csv"]  # the manifest now holds the new mtime
    assert json.loads(first.manifest_path.read_text())["inputs"]["MS_DataLITH.csv"]["mtime_ns"] == ms.stat().st_mtime_ns


@pytest.mark.parametrize("override, named", [
    ("+data.build.bin_sise=0.3", "data.build.bin_sise: unknown key"),
    ("data.build.bin_size=abc", "data.build.bin_size: must be a number"),
    ("+data.build.gra_range=[1]", "data.build.gra_range must be two numbers"),
    ("+data.transforms.MS=cube_root", "data.transforms.MS: transform 'cube_root' unknown"),
])
def test_bad_data_options_fail_in_one_line_naming_the_key(tmp_path, override, named):
    proc = subprocess.run([sys.executable, "-m", "lithovae.data", "data=synthetic", "data.scale=small",
                           override, f"paths.root_dir={tmp_path}", "report=true"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and named in proc.stderr


@pytest.mark.parametrize("breakage, expected", [
    ("missing_column", "missing required column 'Bulk density (GRA)'"),
    ("non_numeric_depth", "column 'Depth CSF-A (m)'"),
    ("empty_file", "empty file"),
])
def test_bad_input_fails_naming_file_and_column_leaving_nothing(tmp_path, breakage, expected):
    raw = random_lily(tmp_path / "raw", n_boreholes=3, bins_per_borehole=10)
    gra = raw / "GRA_DataLITH.csv"
    if breakage == "missing_column":
        pd.read_csv(gra).drop(columns=["Bulk density (GRA)"]).to_csv(gra, index=False)
    elif breakage == "non_numeric_depth":
        frame = pd.read_csv(gra, dtype=str)
        frame.loc[5, "Depth CSF-A (m)"] = "12,5m"
        frame.to_csv(gra, index=False)
    else:
        gra.write_text("")
    out = tmp_path / "out"
    with pytest.raises(BuildError) as err:
        build_dataset(raw, out, _options(), log=_quiet)
    message = str(err.value)
    assert str(gra) in message and expected in message and "\n" not in message
    assert not out.exists() or not any(out.iterdir())

    # the command line: one line on stderr, exit code 2, no dataset written
    proc = subprocess.run([sys.executable, "-m", "lithovae.data", "data=lily", f"data.raw_dir={raw}",
                           f"paths.root_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and expected in proc.stderr
    assert not list((tmp_path / "outputs").rglob("*.parquet"))


def test_manifest_records_steps_and_input_checksums(tmp_path):
    raw = random_lily(tmp_path / "raw", n_boreholes=4, bins_per_borehole=12)
    result = build_dataset(raw, tmp_path / "out", _options(), log=_quiet)
    manifest = json.loads(result.manifest_path.read_text())
    assert set(manifest["inputs"]) == {i.filename for i in INSTRUMENTS.values()}
    assert all(len(v["sha256"]) == 64 for v in manifest["inputs"].values())
    assert manifest["boreholes"] == 4
    data = pd.read_parquet(result.path)
    assert manifest["lithologies"] == data["principal"].nunique() >= 2
    assert sum(manifest["principal_counts"].values()) == manifest["rows"] == len(data)
    assert manifest["steps"]["join"]["bins_joined"] == manifest["rows"]
