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
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from lithovae.data import reference
from lithovae.evaluation.comparisons import LEVEL
from lithovae.study_summary import (FOLD_COLUMNS, fold_row, grid_table, history_table, replicates_problem,
                              study_figure, write_summary)
from tests.conftest import CONF_DIR, FAST_EVAL, compose_train
from tests.test_comparisons import fake_job

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
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"summary.csv", "points.csv",
                                                                          "masking_sweep.png"}
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


# -- replicates, intervals and paired comparisons -------------------------------------------

INTERVALS = ("ari_selected", "baseline_ari_selected", "ari_gain", "r2_mean", "ari_best", "baseline_ari_best")


def _scored(seed: int, gain: float = 0.0, ci: float = 0.02) -> dict:
    """A run's metrics.json: the selected ARI moves with the seed (0.15, 0.16, ...), the raw
    features' stays at 0.16; each headline score with a bootstrap interval of +-``ci``."""
    ari = 0.15 + 0.01 * seed + gain
    m = {"dataset": "synthetic-x", "synthetic": True, "preset": "v2_6_7", "ari_selected": ari,
         "baseline_ari_selected": 0.16, "ari_gain": ari - 0.16, "ari_best": ari + 0.03,
         "baseline_ari_best": 0.19, "r2_mean": 0.8 + 0.002 * seed, "mlflow_run_id": f"run-{seed}-{gain}"}
    m.update({f"{k}_{side}": m[k] + sign * ci for k in INTERVALS for side, sign in (("ci_low", -1), ("ci_high", 1))})
    return m


def test_compose_replicates_is_a_multirun_over_range_of_replicates_seeds(tmp_path):
    cfg = compose_train(["study=replicates", "experiment=v2_6_7", "replicates=5"], tmp_path, return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # no -m needed
    assert cfg.hydra.sweeper.params.seed == "range(0,5)"
    assert replicates_problem(cfg) is None
    default = compose_train(["study=replicates"], tmp_path, return_hydra_config=True)
    assert default.hydra.sweeper.params.seed == "range(0,3)"


@pytest.mark.parametrize("replicates, params, task, needle", [
    (2, {"mask.prob": "0.0,0.3"}, ["study=masking_sweep", "replicates=2"], "only study=replicates sweeps it"),
    (5, {"seed": "range(0,${replicates})"}, ["study=replicates", "replicates=5", "seed=0,1"], "give one of them"),
    (0, {"seed": "range(0,${replicates})"}, ["study=replicates", "replicates=0"], "must be an integer >= 1"),
    (3, {"seed": "range(0,${replicates})"}, ["study=replicates", "seed=3,7"], None),  # seed replaces the preset's
    (None, {}, ["seed=1"], None),
])
def test_replicates_is_refused_where_it_would_be_ignored(replicates, params, task, needle):
    cfg = OmegaConf.create({"replicates": replicates, "hydra": {"sweeper": {"params": params},
                                                               "overrides": {"task": task}}})
    problem = replicates_problem(cfg)
    assert problem is None if needle is None else needle in problem


def test_replicates_give_mean_std_interval_and_the_paired_gains_verdict(tmp_path, capsys):
    study = compose_train(["study=replicates"], tmp_path).study
    for num, seed in enumerate((0, 1, 2)):
        fake_job(tmp_path / str(num), _scored(seed), seed, ["experiment=v2_6_7", f"seed={seed}"])
    files, metrics = write_summary(study, tmp_path)
    assert {f.name for f in files} == {"summary.csv", "points.csv", "replicates.png"}
    jobs = pd.read_csv(tmp_path / "summary.csv")
    assert jobs["run_id"].tolist() == ["run-0-0.0", "run-1-0.0", "run-2-0.0"] and jobs["seed"].tolist() == [0, 1, 2]
    assert jobs["label"].tolist() == ["seed=0", "seed=1", "seed=2"]
    (point,) = pd.read_csv(tmp_path / "points.csv").to_dict("records")
    ari = [0.15, 0.16, 0.17]
    low, high = stats.t.interval(LEVEL, df=2, loc=np.mean(ari), scale=stats.sem(ari))
    assert point["n_replicates"] == 3 and point["interval"] == "replicates" and point["point"] == "v2_6_7"
    assert (point["ari_selected_mean"], point["ari_selected_std"]) == pytest.approx((0.16, 0.01))
    assert (point["ari_selected_ci_low"], point["ari_selected_ci_high"]) == pytest.approx((low, high))
    assert point["ari_gain_verdict"] == "matches"  # -0.01, 0, +0.01 over the raw features
    assert metrics["ari_selected_mean"] == pytest.approx(0.16) and metrics["ari_selected_ci_low"] == pytest.approx(low)
    assert metrics["n_replicates"] == 3
    out = capsys.readouterr().out
    assert f"ari_selected 0.160 ± 0.010 [{low:.3f}, {high:.3f}] (n=3)" in out
    assert "verdict: the latent space matches the raw features (ari_gain -0.000 [-0.025, +0.025], 95% interval over 3 seeds)" in out


def _masking_sweep(tmp_path: Path, seeds=(0, 1)) -> None:
    num = 0
    for prob, gain in ((0.0, 0.0), (0.3, 0.05)):
        for seed in seeds:
            fake_job(tmp_path / str(num), _scored(seed, gain + 0.001 * seed * (prob > 0)), seed,
                     ["experiment=v2_14_2", f"mask.prob={prob}", f"seed={seed}"], config={"mask": {"prob": prob}})
            num += 1


def test_a_sweep_with_replicates_compares_each_point_with_its_reference(tmp_path, capsys):
    study = compose_train(["study=masking_sweep"], tmp_path).study
    _masking_sweep(tmp_path)
    write_summary(study, tmp_path)
    jobs = pd.read_csv(tmp_path / "summary.csv")
    assert jobs["run_id"].str.startswith("run-").all() and jobs["point"].tolist() == [0.0, 0.0, 0.3, 0.3]
    points = pd.read_csv(tmp_path / "points.csv").set_index("mask.prob")
    assert points["n_replicates"].tolist() == [2, 2]
    for m in ("ari_selected", "r2_mean", "baseline_ari_selected", "ari_gain"):
        assert {f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"} <= set(points.columns)
    masked = points.loc[0.3]
    assert masked["ari_selected_vs_ref_mean"] == pytest.approx(0.0505)  # (0.05 + 0.051) / 2, paired by seed
    assert masked["ari_selected_vs_ref_verdict"] == "beats" and masked["ari_selected_vs_ref_n"] == 2
    assert masked["r2_mean_vs_ref_verdict"] == "matches" and masked["r2_mean_vs_ref_mean"] == pytest.approx(0)
    assert math.isnan(points.loc[0.0, "ari_selected_vs_ref_mean"]) and points.loc[0.0, "reference"] == 0.0
    out = capsys.readouterr().out
    assert "verdict: mask.prob=0.3 beats mask.prob=0.0 (ari_selected difference +0.051" in out


def test_the_figure_draws_intervals_and_the_raw_features_band(tmp_path):
    study = compose_train(["study=masking_sweep"], tmp_path).study
    _masking_sweep(tmp_path)
    write_summary(study, tmp_path)
    points = pd.read_csv(tmp_path / "points.csv")
    spec = OmegaConf.to_container(study)
    fig = study_figure(spec, points, "synthetic-x", True)
    ax = fig.axes[len(spec["panels"])]  # extra: ari_selected
    assert ax.get_title() == "ari_selected"
    (bars,) = ax.containers  # the mean and its interval per point
    low, high = bars.lines[2][0].get_segments()[0][:, 1]  # the first point's bar
    assert (low, high) == pytest.approx((points["ari_selected_ci_low"][0], points["ari_selected_ci_high"][0]))
    band = [c for c in ax.collections if str(c.get_label()).startswith("raw features")]
    assert band and band[0].get_paths()[0].vertices[:, 1].min() == pytest.approx(
        points["baseline_ari_selected_ci_low"].min())
    assert not [c for c in fig.axes[0].collections if str(c.get_label()).startswith("raw features")]  # r2


def test_one_replicate_shows_the_runs_bootstrap_interval(tmp_path, capsys):
    study = compose_train(["study=masking_sweep"], tmp_path).study
    _masking_sweep(tmp_path, seeds=(0,))
    write_summary(study, tmp_path)
    points = pd.read_csv(tmp_path / "points.csv")
    assert (points["interval"] == "bootstrap").all() and (points["n_replicates"] == 1).all()
    assert points["ari_selected_ci_low"].tolist() == pytest.approx([0.13, 0.18])  # metrics.json's
    assert points["ari_selected_vs_ref_verdict"].tolist() == ["reference", "undefined"]  # one pair: no interval
    out = capsys.readouterr().out
    assert "ari_selected 0.150 [0.130, 0.170] (one replicate: bootstrap interval over test boreholes)" in out


def test_the_history_flags_published_values_outside_our_interval():
    points = pd.DataFrame({"point": ["v2_6_7", "v2_13"], "preset": ["v2_6_7", "v2_13"], "dataset": "synthetic-x",
                           "n_replicates": [3, 1], "beta.end": [None, 0.75],
                           "ari_best_mean": [0.15, 0.2], "ari_best_ci_low": [0.14, 0.15], "ari_best_ci_high": [0.16, 0.25]})
    table = history_table(points, reference.read("published_results.csv"))
    rows = table[table["metric"] == "ari_best"].set_index("preset")
    assert rows.loc["v2_6_7", "published"] == pytest.approx(0.196) and rows.loc["v2_6_7", "differs_from_published"]
    assert rows.loc["v2_13", "published"] == pytest.approx(0.187) and not rows.loc["v2_13", "differs_from_published"]
    assert rows.loc["v2_6_7", ["ours", "ours_ci_low", "ours_ci_high"]].tolist() == pytest.approx([0.15, 0.14, 0.16])
    assert rows.loc["v2_6_7", "published_std"] == pytest.approx(0.037)


def test_cv_prints_and_tables_the_selected_ari_the_baseline_and_the_gain_per_fold(tmp_path, capsys):
    study = compose_train(["study=cv"], tmp_path).study
    for fold in (0, 1):
        m = {**_scored(fold), "n_train": 100, "n_test": 30, "train_entropy": 2.0, "test_entropy": 1.9,
             "latent_dim": 10, "active_dims": 4, "best_k": 12, "silhouette": 0.2}
        fake_job(tmp_path / str(fold), m, 0, ["experiment=v2_6_7", f"datamodule.fold={fold}"], fold=fold)
    write_summary(study, tmp_path)
    table = pd.read_csv(tmp_path / "cv_folds.csv")
    assert table["fold"].tolist() == [1, 2] and table["ari_selected"].tolist() == pytest.approx([0.15, 0.16])
    assert table["baseline_ari_selected"].tolist() == pytest.approx([0.16, 0.16])
    assert table["ari_gain"].tolist() == pytest.approx([-0.01, 0.0])
    summary = json.loads((tmp_path / "cv_summary.json").read_text())
    assert summary["ari_gain_mean"] == pytest.approx(-0.005) and summary["baseline_ari_selected_std"] == 0
    out = capsys.readouterr().out
    assert ("mean ± std over 2 folds: ari_selected 0.155 ± 0.005, baseline_ari_selected 0.160 ± 0.000, "
            "ari_gain -0.005 ± 0.005") in out
    (point,) = pd.read_csv(tmp_path / "points.csv").to_dict("records")
    assert point["n_replicates"] == 2  # the folds are the point's replicates


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_study_replicates_runs_n_seeds_without_dash_m(tmp_path, shared_data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.train", "study=replicates", "replicates=2", "experiment=v2_6_7",
         "data.scale=small", "trainer.max_epochs=2", "logger=none", f"paths.root_dir={tmp_path}",
         f"paths.data_dir={shared_data_dir}", "trainer.enable_progress_bar=false", *FAST_EVAL],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    jobs = pd.read_csv(sweep_dir / "summary.csv")
    assert jobs["seed"].tolist() == [0, 1] and (jobs["status"] == "FINISHED").all()
    (point,) = pd.read_csv(sweep_dir / "points.csv").to_dict("records")
    assert point["n_replicates"] == 2 and point["interval"] == "replicates"
    assert "(n=2)" in proc.stdout


def test_the_history_study_puts_every_published_metric_beside_our_mean(tmp_path, capsys):
    study = compose_train(["study=history"], tmp_path).study
    num = 0
    for preset, gain in (("v2_6", 0.02), ("v2_6_7", 0.0)):
        for seed in (0, 1):
            m = {**_scored(seed, gain + 0.001 * seed * (gain > 0)), "preset": preset, "ari_kmeans_k12": 0.2 + 0.002 * seed}
            fake_job(tmp_path / str(num), m, seed, [f"experiment={preset}", f"seed={seed}"])
            num += 1
    write_summary(study, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv").set_index(["preset", "metric"])
    assert history.loc[("v2_6", "ari_k12"), "ours"] == pytest.approx(0.201)  # not a headline score: still beside
    assert history.loc[("v2_6", "ari_k12"), "published"] == pytest.approx(0.258)
    assert history.loc[("v2_6", "ari_k12"), "ours_ci_high"] < 0.258  # [0.188, 0.214]
    assert bool(history.loc[("v2_6", "ari_k12"), "differs_from_published"])
    points = pd.read_csv(tmp_path / "points.csv").set_index("point")
    assert points.loc["v2_6", "reference"] == "v2_6_7"
    assert points.loc["v2_6", "ari_selected_vs_ref_mean"] == pytest.approx(0.0205)
    assert points.loc["v2_6_7", "ari_selected_vs_ref_verdict"] == "reference"
    assert "verdict: experiment=v2_6 beats experiment=v2_6_7 (ari_selected difference +0.020" in capsys.readouterr().out
