"""Own wells as a user has them (issue 22): unlabeled bins are normal, one dataset per set of
wells whichever route reads them, and reports that describe the data they are about.

Every test uses the generated North Sea-like wells of :mod:`tests.own_data` (five curves, ten
numeric lithology codes, a third of the bins unlabeled), never LILY-shaped columns, except the
one test that checks the LILY realism report stays as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lithovae.data.errors import BuildError
from lithovae.data.report import realism_report
from lithovae.evaluation.clusters import cluster_table, hierarchy_check, lithology_centroids
from lithovae.prediction.rows import imputed_counts
from tests.own_data import CURVES, north_sea_like
from tests.test_las import _predict, las_source, table_source

FEATURES = "data.features=[" + ",".join(CURVES) + "]"


def _quiet(*_a, **_k):
    pass


# --- unlabeled bins ----------------------------------------------------------------------------

# every way a label can be missing: pandas NA (a string column with gaps, as a LAS label curve
# becomes), None, NaN, empty and blank text
MISSING = pd.array(["30000", pd.NA, "65000", None, "30000", "", "  ", "65000"], dtype="string")


def test_cluster_tables_count_every_kind_of_missing_label_as_unlabeled():
    table = cluster_table([0, 0, 0, 0, 1, 1, 1, 1], MISSING)
    assert table["size"].tolist() == [4, 4] and table["n_labeled"].tolist() == [2, 2]
    assert table.loc[0, "top3"] == "30000 50.0%; 65000 50.0%" and table.loc[1, "top_lithology"] == "30000"
    as_object = cluster_table([0, 0, 1, 1, 1], np.array(["a", np.nan, None, "", "b"], dtype=object))
    assert as_object["n_labeled"].tolist() == [1, 1]


def test_centroids_and_the_hierarchy_check_leave_unlabeled_bins_out():
    mu = np.arange(16, dtype=float).reshape(8, 2)
    assert lithology_centroids(mu, MISSING).index.tolist() == ["30000", "65000"]
    ari, n = hierarchy_check(mu, MISSING, {"30000": "clastic", "65000": "clastic"}, n_clusters=2)
    assert n == 2 and np.isfinite(ari)


def test_blank_labels_in_a_table_are_unlabeled_bins(tmp_path):
    frame = pd.DataFrame({"WELL": ["A"] * 4, "DEPTH_MD": [0.0, 0.2, 0.4, 0.6],
                          "GR": [1.0, 2.0, 3.0, 4.0], "LITHOLOGY": ["sand", "", "  ", None]})
    frame.to_parquet(tmp_path / "t.parquet")  # Parquet keeps the empty strings a CSV reads as NaN
    path, _ = table_source(tmp_path / "t.parquet", borehole="WELL", depth="DEPTH_MD", label="LITHOLOGY",
                           features=["GR"]).prepare(tmp_path / "data", log=_quiet)
    assert pd.read_parquet(path)["principal"].isna().tolist() == [False, True, True, True]


@pytest.fixture(scope="module")
def las_run(tmp_path_factory):
    """One run trained on the LAS folder of the own wells (a third of the bins unlabeled) and
    logged to a local MLflow store, as a user runs it (training figures off for time: the
    prediction below draws its log figures from the same labels with gaps)."""
    root = tmp_path_factory.mktemp("own-run")
    data = north_sea_like(root / "wells", n_wells=6)
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", "data=las", f"data.path={data.las_dir}",
                           "data.label=LITH", FEATURES, "trainer.max_epochs=1", "logger=mlflow", "eval.figures=false",
                           "eval.n_init=1", "eval.bootstrap.resamples=100", "trainer.enable_progress_bar=false",
                           f"paths.root_dir={root}", f"paths.data_dir={root / 'data'}",
                           f"paths.mlflow_dir={root / 'mlruns'}"],
                          capture_output=True, text=True, cwd=root, timeout=300)
    return root, data, proc


@pytest.mark.slow
def test_a_las_folder_with_unlabeled_bins_trains_logs_to_mlflow_and_predicts(las_run):
    import mlflow

    root, data, proc = las_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in (root / "outputs").rglob("metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["n_test_labeled"] < metrics["n_test"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "predictor" / "clusters.csv").exists()
    clusters = pd.read_csv(run_dir / "predictor" / "clusters.csv")
    assert clusters["n_labeled"].sum() == metrics["n_test_labeled"] < clusters["size"].sum()
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/n_test_labeled"] == metrics["n_test_labeled"]
    # the same wells, labels and gaps included: predicted, scored on the labeled bins only
    summary, table = _predict(root, "data=las", f"data.path={data.las_dir}", "data.label=LITH", FEATURES)
    assert len(table) == summary["n_bins"] and 0 < summary["n_labeled"] < summary["n_bins"]
    assert "scores" in summary and len(summary["figures"]) == len(data.wells)
    assert sorted(table["borehole_id"].unique()) == sorted(data.wells)


# --- one dataset per set of wells --------------------------------------------------------------

def _both_routes(tmp_path, **options):
    data = north_sea_like(tmp_path / "wells", n_wells=6, samples=150)
    las, las_manifest = las_source(data.las_dir, label="LITH", features=list(CURVES), **options).prepare(
        tmp_path / "data", log=_quiet)
    table, table_manifest = table_source(data.table, borehole="WELL", depth="DEPTH_MD", label="LITHOLOGY",
                                         features=list(CURVES), **options).prepare(tmp_path / "data", log=_quiet)
    return data, pd.read_parquet(las), pd.read_parquet(table), las_manifest, table_manifest


def test_the_same_wells_as_a_table_and_as_las_files_give_the_same_bins_and_ids(tmp_path):
    data, las, table, las_manifest, table_manifest = _both_routes(tmp_path)
    assert sorted(las["borehole_id"].unique()) == sorted(table["borehole_id"].unique()) == sorted(data.wells)
    assert "15/9-F-1" in set(table["borehole_id"])  # the id as written, "/" kept
    assert las.groupby("borehole_id").size().to_dict() == table.groupby("borehole_id").size().to_dict()
    assert las_manifest["steps"]["bin_size"] == table_manifest["steps"]["bin_size"] == 0.2
    assert len(table) < len(data.frame)  # 0.1524 m samples into 0.2 m bins
    for column in ["borehole_id", "depth_m", "principal"]:
        assert las[column].astype(object).fillna("-").tolist() == table[column].astype(object).fillna("-").tolist()
    values = lambda frame: frame[list(CURVES)].to_numpy(np.float64)  # noqa: E731
    assert np.array_equal(np.isnan(values(las)), np.isnan(values(table)))
    np.testing.assert_allclose(values(las), values(table), rtol=1e-6, atol=1e-5, equal_nan=True)  # LAS: 5 decimals


def test_without_binning_both_routes_keep_every_sample_depth(tmp_path):
    data, las, table, *_ = _both_routes(tmp_path, bin_size=None)
    assert len(las) == len(table) == len(data.frame)
    assert las["depth_m"].tolist() == table["depth_m"].tolist()


@pytest.mark.parametrize("bad", [0, -0.2, "0.2", True, float("nan")])
def test_a_bad_table_bin_size_is_one_line_naming_it(tmp_path, bad):
    with pytest.raises(BuildError, match=r"^data.bin_size: must be a number > 0") as err:
        table_source(tmp_path / "t.csv", bin_size=bad)
    assert "\n" not in str(err.value)


def test_table_ids_are_read_as_las_headers_are(tmp_path):
    """A numeric id column with gaps reads as floats (3.0): its id is "3", as a LAS header's;
    blanks around an id are stripped, as lasio strips a header value."""
    frame = pd.DataFrame({"WELL": [3, 3, None, 4], "DEPTH_MD": [0.0, 0.2, 0.4, 0.0], "GR": [1.0, 2.0, 3.0, 4.0]})
    frame.to_csv(tmp_path / "ids.csv", index=False)
    path, _ = table_source(tmp_path / "ids.csv", borehole="WELL", depth="DEPTH_MD", label=None,
                           features=["GR"]).prepare(tmp_path / "data", log=_quiet)
    assert sorted(pd.read_parquet(path)["borehole_id"].unique()) == ["3", "4"]
    pd.DataFrame({"WELL": [" 15/9-F-1 "], "DEPTH_MD": [0.0], "GR": [1.0]}).to_csv(tmp_path / "b.csv", index=False)
    path, _ = table_source(tmp_path / "b.csv", borehole="WELL", depth="DEPTH_MD", label=None,
                           features=["GR"]).prepare(tmp_path / "data", log=_quiet)
    assert pd.read_parquet(path)["borehole_id"].tolist() == ["15/9-F-1"]


# --- reports that fit the data -----------------------------------------------------------------

def test_the_build_report_of_own_wells_compares_with_nothing_of_lily(tmp_path):
    _, las, *_ = _both_routes(tmp_path)
    text, figures = realism_report(las, "las-wells", synthetic=False, lily=False)
    assert "LILY" not in text.replace("nothing compared with LILY", "") and "study's VAEs" not in text
    assert "real" not in text and "expert groups" not in text
    assert all(set(q) == {"ours"} for q in figures["quartiles"].values())
    assert set(figures["quartiles"]) == set(CURVES)
    assert figures["bins_labeled"] == int(las["principal"].notna().sum()) < figures["bins"]
    assert figures["kmeans_k"] == las["principal"].nunique() == 10 and np.isfinite(figures["kmeans_ari"])


def test_the_realism_report_of_lily_data_keeps_the_real_lily_figures():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"borehole_id": np.repeat(["a", "b"], 20), "depth_m": np.tile(np.arange(20) * 0.2, 2),
                          "principal": rng.choice(["clay", "nannofossil ooze", "basalt"], 40),
                          "prefix": None, "suffix": None, "full_lithology": None,
                          "lithology_group": rng.choice(["Clay/Mud", "Mafic Igneous"], 40),
                          "GRA": rng.normal(1.6, 0.2, 40), "MS": rng.normal(20, 5, 40),
                          "NGR": rng.normal(20, 5, 40)})
    text, figures = realism_report(frame, "synthetic-small-seed0", synthetic=True)
    assert "vs real LILY physical3_20cm" in text and "the study's VAEs reach ~0.2-0.29" in text
    assert set(figures["quartiles"]["GRA"]) == {"ours", "real", "pct_off"} and "kmeans_ari_k12" in figures


def test_the_build_command_prints_the_own_data_report_for_a_las_folder(tmp_path):
    data = north_sea_like(tmp_path / "wells", n_wells=3, samples=120)
    proc = subprocess.run([sys.executable, "-m", "lithovae.data", "data=las", f"data.path={data.las_dir}",
                           "data.label=LITH", FEATURES, f"paths.data_dir={tmp_path / 'data'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== build report: las-las — own data" in proc.stdout and "study's VAEs" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith(".parquet")


def test_imputed_counts_say_bins_and_values_apart():
    table = pd.DataFrame({"GR_imputed": [True, False, False, True], "RHOB_imputed": [True, False, True, False]})
    assert imputed_counts(table, ["GR", "RHOB"]) == {"n_bins_imputed": 3, "n_values_imputed": 4}
