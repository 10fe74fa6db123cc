"""Entropy-balanced cross-validation: one command, fold child runs under a parent."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lithovae.cv import run_cv
from tests.conftest import CONF_DIR, FAST_EVAL


def test_cv_runs_every_fold_on_disjoint_test_boreholes_and_logs_mean_and_std(tmp_path, shared_data_dir):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="cv", overrides=[
            "experiment=v2_6_7", "cv.folds=3", "trainer.max_epochs=1", "data.scale=small",
            f"paths.root_dir={tmp_path}", f"paths.run_dir={tmp_path / 'cv'}", f"paths.data_dir={shared_data_dir}",
            "trainer.enable_progress_bar=false", *FAST_EVAL])
    result = run_cv(cfg)
    table = result["folds"]
    assert list(table["fold"]) == [1, 2, 3]
    test_sets = [set(json.loads((tmp_path / "cv" / f"fold{k}" / "split.json").read_text())["boreholes"]["test"])
                 for k in range(3)]
    assert not (test_sets[0] & test_sets[1] or test_sets[0] & test_sets[2] or test_sets[1] & test_sets[2])
    frame = pd.read_parquet(next(shared_data_dir.rglob("synthetic-small-seed0_complete6_*.parquet")))
    assert set().union(*test_sets) == set(frame["borehole_id"])  # every borehole is tested once
    assert table["test_samples"].sum() == len(frame)
    assert result["summary"]["ari_best_mean"] == pytest.approx(table["best_ari"].mean())
    assert result["summary"]["ari_best_std"] == pytest.approx(table["best_ari"].std(ddof=0))

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lithovae-cv")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert parents[0].data.metrics["cv/ari_best_mean"] == pytest.approx(result["summary"]["ari_best_mean"])
    assert "cv/ari_best_std" in parents[0].data.metrics
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"cv_folds.csv", "cv_summary.json"}
