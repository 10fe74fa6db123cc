"""Studies as Hydra multiruns: `python -m lithovae.train -m study=NAME` writes the summary,
the figure and an MLflow parent run whose children are the jobs' runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import math

import mlflow
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lithovae.data import reference
from lithovae.studies import FOLD_COLUMNS, fold_row, grid_table, history_table, write_summary
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
    assert {"masking_sweep", "beta_schedules", "alpha_grid", "latent_size", "history", "cv",
            "alpha_label_fraction", "beta_grid_v2_13", "beta_fixed_v2_5", "classifier_split"} <= set(STUDIES)


@pytest.mark.parametrize("study, expected", [
    ("alpha_label_fraction", {"experiment": "v2_14", "alpha.value": "0.01,0.1,0.5,1.0,2.0",
                              "datamodule.label_fraction": "0.1,0.4,1.0"}),
    ("beta_grid_v2_13", {"experiment": "v2_13", "beta.end": "0.5,0.75,1.0,1.5,2.0"}),
    ("beta_fixed_v2_5", {"experiment": "v2_5", "beta.value": "0.1,0.5,1.0,2.0"}),
    ("classifier_split", {"experiment": "lithology_classifier_v2_6_7,direct_classifier,vae_classifier_v1_0,"
                                        "vae_classifier_v1_1",
                          "datamodule.split": "random_boreholes,entropy_balanced"}),
])
def test_the_seeds_grids_are_swept_as_published(tmp_path, study, expected):
    cfg = compose_train([f"study={study}"], tmp_path, return_hydra_config=True)
    assert {k: str(v) for k, v in cfg.hydra.sweeper.params.items()} == expected
    assert cfg.study.published == "published_results.csv"


def test_the_v2_14_row_of_the_history_is_alpha_0_1s():
    # published_results.csv has v2.14's whole alpha grid; the preset is alpha 0.1 (0.2854)
    summary = pd.DataFrame({"run": ["v2_14", "v2_5"], "dataset": "synthetic-x", "ari_best": [0.3, 0.2],
                            "ari_kmeans_k12": [0.25, 0.2], "auc_pooled": [0.9, None], "r2_mean": [0.8, 0.7]})
    table = history_table(summary, reference.read("published_results.csv"))
    v2_14 = table[table["preset"] == "v2_14"].set_index("metric")
    assert list(v2_14.index) == ["ari_best", "auc_pooled", "r2_mean"]
    assert v2_14.loc["ari_best", "published"] == pytest.approx(0.2854)
    assert v2_14.loc["auc_pooled", "published"] == pytest.approx(0.917)
    v2_5 = table[table["preset"] == "v2_5"]  # beta 0.5's ARI, not the beta-1.0 point of the fixed-beta test
    assert v2_5["published"].tolist() == pytest.approx([0.241])


def test_grid_points_match_the_runs_coordinates():
    published = reference.read("published_results.csv")
    summary = pd.DataFrame({"run": ["0.01_1.0", "0.5_1.0", "0.5_0.4"], "preset": "v2_14", "dataset": "synthetic-x",
                            "alpha.value": [0.01, 0.5, 0.5], "datamodule.label_fraction": [1.0, 1.0, 0.4],
                            "ari_best": [0.1, 0.2, 0.3], "auc_pooled": [0.8, 0.85, 0.9], "r2_mean": 0.5})
    table = history_table(summary, published).set_index(["preset", "metric"])["published"]
    assert table[("0.01_1.0", "ari_best")] == pytest.approx(0.2476)
    assert table[("0.01_1.0", "auc_pooled")] == pytest.approx(0.89)
    assert table[("0.5_1.0", "ari_best")] == pytest.approx(0.2318)
    assert pd.isna(table[("0.5_0.4", "ari_best")])  # the seeds labeled every bin
    # the split of a classifier run decides which of 002's figures is beside it
    runs = pd.DataFrame({"run": ["a", "b"], "preset": "lithology_classifier_v2_6_7", "dataset": "x",
                         "datamodule.split": ["random_boreholes", "entropy_balanced"],
                         "accuracy": [0.3, 0.4], "balanced_accuracy": [0.05, 0.06]})
    table = history_table(runs, published).set_index(["preset", "metric"])["published"]
    assert table[("a", "accuracy")] == pytest.approx(0.33)
    assert table[("b", "accuracy")] == pytest.approx(0.4257)
    assert table[("b", "balanced_accuracy")] == pytest.approx(0.0526)


def test_the_fold_row_reproduces_the_seeds_entropy_differences():
    published = reference.read("published_v2_6_7_cv_folds.csv")
    first = published.iloc[0]
    entropy_all = first["train_entropy"] + first["train_entropy_diff"]  # the whole set's
    for _, fold in published.iterrows():
        m = {"n_train": fold["train_samples"], "n_test": fold["test_samples"], "train_entropy": fold["train_entropy"],
             "test_entropy": fold["test_entropy"], "latent_dim": 10, "active_dims": fold["effective_dim"],
             "best_k": fold["best_k"], "ari_best": fold["best_ari"], "silhouette": fold["best_sil"]}
        row = fold_row(int(fold["fold"]), m, {"entropy_all": entropy_all, "train_time": fold["train_time"]})
        assert list(row) == FOLD_COLUMNS
        for key in ("train_entropy_diff", "test_entropy_diff", "train_time", "collapsed_dims"):
            assert row[key] == pytest.approx(fold[key], abs=1e-4), key
        assert row["entropy_diff"] == pytest.approx(abs(fold["train_entropy"] - fold["test_entropy"]))
    assert math.isnan(fold_row(1, m)["train_time"])  # not recorded anywhere


def _fake_job(sweep_dir: Path, num: int, overrides: list[str], config: dict, metrics: dict, stats: dict) -> None:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    OmegaConf.save(OmegaConf.create(config), job / ".hydra" / "config.yaml")
    (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "split.json").write_text(json.dumps({"stats": stats}))


def test_a_two_axis_study_writes_the_grid_the_history_and_one_line_per_fraction(tmp_path):
    study = compose_train(["study=alpha_label_fraction"], tmp_path).study
    num = 0
    for alpha in (0.1, 1.0):
        for fraction in (0.4, 1.0):
            metrics = {"dataset": "synthetic-x", "synthetic": True, "preset": "v2_14",
                       "ari_best": alpha * fraction, "auc_pooled": 0.5 + fraction / 4, "balanced_accuracy": 0.1}
            _fake_job(tmp_path, num, ["experiment=v2_14", f"alpha.value={alpha}",
                                      f"datamodule.label_fraction={fraction}"],
                      {"alpha": {"value": alpha}, "datamodule": {"label_fraction": fraction, "split": "random_boreholes"}},
                      metrics, {"n_train_labeled": int(100 * fraction)})
            num += 1
    files, _ = write_summary(study, tmp_path)
    names = {f.name for f in files}
    assert {"summary.csv", "history.csv", "alpha_label_fraction_grid.csv", "alpha_label_fraction.png"} <= names
    grid = pd.read_csv(tmp_path / "alpha_label_fraction_grid.csv")
    assert list(grid["alpha.value"]) == [0.1, 1.0]
    assert grid["ari_best @ datamodule.label_fraction=0.4"].tolist() == pytest.approx([0.04, 0.4])
    history = pd.read_csv(tmp_path / "history.csv")
    beside = history[(history["metric"] == "ari_best") & history["published"].notna()]
    assert sorted(beside["published"]) == pytest.approx([0.2495, 0.2854])  # alpha 1.0 and 0.1, all labels
    assert (tmp_path / "alpha_label_fraction.png").stat().st_size > 10_000


def test_masking_sweep_is_the_studys_51_runs_of_50_epochs(tmp_path):
    sweep = compose_train(["study=masking_sweep"], tmp_path, return_hydra_config=True).hydra.sweeper.params
    probs = [float(p) for p in sweep["mask.prob"].split(",")]
    assert len(probs) == 51 and probs[0] == 0.0 and probs[-1] == 0.5
    assert int(sweep["trainer.max_epochs"]) == 50 and sweep["experiment"] == "v2_14_2"


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
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


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
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
    # the seeds' fold columns (published_v2_6_7_cv_folds.csv), plus entropy_diff = |train - test|
    published = set(reference.read("published_v2_6_7_cv_folds.csv").columns)
    assert published <= set(table.columns) and list(table.columns) == FOLD_COLUMNS
    assert (table["train_time"] > 0).all()
    assert table["entropy_diff"].tolist() == pytest.approx((table["train_entropy"] - table["test_entropy"]).abs().tolist())
    assert table[["train_entropy_diff", "test_entropy_diff"]].notna().all().all()
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


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
@pytest.mark.parametrize("alias", [["lithovae.cv", "datamodule.n_folds=2", "datamodule.fold=range(0,2)"],
                                   ["lithovae.study", "masking_sweep", "mask.prob=0.0,0.3"]])
def test_the_study_aliases_run_from_any_directory(alias, tmp_path, shared_data_dir):
    elsewhere = tmp_path / "elsewhere"  # not the repository: the configs come with the package
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", *alias, "data.scale=small", "trainer.max_epochs=1", "logger=none",
         f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}", "trainer.enable_progress_bar=false",
         *FAST_EVAL], capture_output=True, text=True, cwd=elsewhere, timeout=600,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = (tmp_path / "outputs" / "multiruns").rglob("summary.csv")
    assert len(pd.read_csv(summary)) == 2
