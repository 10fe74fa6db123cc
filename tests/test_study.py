"""Studies as Hydra multiruns: `python -m lithovae.train -m study=NAME` writes the summary,
the figure and an MLflow parent run whose children are the jobs' runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from lithovae.data import reference
from lithovae.studies import history_table
from tests.conftest import CONF_DIR, FAST_EVAL, compose_train

STUDIES = sorted(p.stem for p in (Path(CONF_DIR) / "study").glob("*.yaml"))


def _multirun(args: list[str], tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.train", "-m", *args, "data.scale=small", f"paths.root_dir={tmp_path}",
         f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false", *FAST_EVAL],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _runs(tmp_path: Path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() if e.name != "Default" for r in client.search_runs([e.experiment_id])]
    return client, runs


def test_the_studies_of_the_seeds_are_all_here():
    assert {"masking_sweep", "beta_schedules", "alpha_grid", "latent_size", "history", "cv"} <= set(STUDIES)


def test_masking_sweep_is_the_studys_51_runs_of_50_epochs(tmp_path):
    sweep = compose_train(["study=masking_sweep"], tmp_path, return_hydra_config=True).hydra.sweeper.params
    probs = [float(p) for p in sweep["mask.prob"].split(",")]
    assert len(probs) == 51 and probs[0] == 0.0 and probs[-1] == 0.5
    assert int(sweep["trainer.max_epochs"]) == 50 and sweep["experiment"] == "v2_14_2"


def test_masking_sweep_with_joblib_writes_summary_figure_and_a_parent_run(tmp_path, shared_data_dir):
    proc = _multirun(["study=masking_sweep", "trainer.max_epochs=1", "hydra/launcher=joblib", "mask.prob=0.0,0.3"],
                     tmp_path, shared_data_dir)
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary["mask.prob"]) == [0.0, 0.3] and (summary["status"] == "FINISHED").all()
    assert {"r2_GRA", "r2_B", "ari_best", "baseline_ari_best", "evaluated_epoch", "dataset"} <= set(summary.columns)
    assert (summary["dataset"] == "synthetic-small-seed0").all()
    assert (sweep_dir / "masking_sweep.png").stat().st_size > 10_000
    assert str(sweep_dir / "summary.csv") in proc.stdout
    client, runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.info.run_name == "masking_sweep-summary"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2 and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"summary.csv", "masking_sweep.png"}
    assert all("test/r2_GRA" in r.data.metrics for r in children)


def test_cv_study_runs_folds_on_disjoint_boreholes_and_a_parent_with_mean_and_std(tmp_path, shared_data_dir):
    _multirun(["study=cv", "experiment=v2_6_7", "trainer.max_epochs=1", "datamodule.n_folds=3",
               "datamodule.fold=range(0,3)", "eval.gmm=false"], tmp_path, shared_data_dir)
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    table = pd.read_csv(sweep_dir / "cv_folds.csv")
    assert list(table["fold"]) == [1, 2, 3]
    test_sets = [set(json.loads((sweep_dir / str(k) / "split.json").read_text())["boreholes"]["test"])
                 for k in range(3)]
    assert not (test_sets[0] & test_sets[1] or test_sets[0] & test_sets[2] or test_sets[1] & test_sets[2])
    frame = pd.read_parquet(next(shared_data_dir.rglob("synthetic-small-seed0_complete6_*.parquet")))
    assert set().union(*test_sets) == set(frame["borehole_id"])  # every borehole is tested once
    assert table["test_samples"].sum() == len(frame)
    client, runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.info.run_name == "cv-summary"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3
    assert parent.data.metrics["cv/ari_best_mean"] == pytest.approx(table["best_ari"].mean())
    assert parent.data.metrics["cv/ari_best_std"] == pytest.approx(table["best_ari"].std(ddof=0))
    assert {"cv_folds.csv", "cv_summary.json", "summary.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_history_table_puts_published_values_beside_ours():
    summary = pd.DataFrame({"run": ["v2_6_7", "v2_14", "hybrid_unsup"], "dataset": "synthetic-x",
                            "ari_best": [0.2, 0.3, 0.1], "r2_mean": [0.9, 0.8, 0.7], "auc_pooled": [None, 0.9, None],
                            "active_dims": [4, 5, 6]})
    table = history_table(summary, reference.read("published_results.csv"))
    row = table[(table["preset"] == "v2_6_7") & (table["metric"] == "ari_best")].iloc[0]
    assert row["published"] == pytest.approx(0.196) and row["ours"] == pytest.approx(0.2)
    assert row["dataset"] == "synthetic-x"
    assert (table[table["preset"] == "hybrid_unsup"]["published"].isna()).all()
