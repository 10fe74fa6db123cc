"""End-to-end training: every study preset for one epoch, MLflow, checkpoints, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from lithovae.train import run, train
from tests.conftest import CONF_DIR, compose_train

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
CLASSIFIERS = {"v2_14", "v2_14_1", "v2_14_2", "v2_14_100ep", "v2_15", "hybrid_semisup", "standard_semisup",
               "direct_classifier", "vae_classifier_v1_0", "vae_classifier_v1_1", "lithology_classifier_v2_6_7"}
IMPUTATION = {"v2_6_11", "v2_14_2", "v2_15", "hybrid_unsup", "hybrid_semisup"}
# two-stage models: one epoch of each stage
EXTRA = {"vae_classifier_v1_0": ["trainer.max_epochs=2", "model.vae_epochs=1"],
         "vae_classifier_v1_1": ["trainer.max_epochs=2", "model.vae_epochs=1"],
         "lithology_classifier_v2_6_7": ["trainer.max_epochs=2", "model.vae_epochs=1"]}


def test_every_preset_of_the_study_is_here():
    expected = {"v1", "v2", "v2_1", "v2_2", "v2_5", "v2_6", "v2_6_6", "v2_6_7", "v2_6_8", "v2_6_10",
                "v2_6_11", "v2_7", "v2_8", "v2_9", "v2_10", "v2_12", "v2_13", "v2_14", "v2_14_1",
                "v2_14_2", "v2_15", "v3", "hybrid_unsup", "hybrid_semisup", "direct_classifier",
                "vae_classifier_v1_0", "vae_classifier_v1_1", "standard_unsup", "standard_semisup",
                "lithology_classifier_v2_6_7", "v2_6_100ep", "v2_14_100ep"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_one_epoch_with_finite_losses_and_all_metric_keys(preset, tmp_path, shared_data_dir):
    cfg = compose_train([f"experiment={preset}", "trainer.max_epochs=1", "logger=none",
                         *EXTRA.get(preset, [])], tmp_path, shared_data_dir)
    metrics = train(cfg)
    assert metrics["preset"] == preset
    losses = metrics["final_losses"]
    assert "train/loss" in losses and "val/loss" in losses
    assert all(math.isfinite(v) for v in losses.values()), losses
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    features = ["GRA", "MS", "NGR"] if preset == "v1" else ["GRA", "MS", "NGR", "R", "G", "B"]
    keys = {"n_test", "ari_best", "silhouette", "r2_mean", "active_dims"}
    keys |= {f"{p}ari_{m}_k{k}" for p in ("", "baseline_") for m in ("kmeans", "gmm") for k in cfg.eval.k}
    keys |= {"baseline_ari_best", "ari_gain", "evaluated_epoch", "evaluated_global_step", "checkpoint_policy"}
    keys |= {f"r2_{f}" for f in features}
    if preset in CLASSIFIERS:
        keys |= {"auc_pooled", "balanced_accuracy"}
    if preset in IMPUTATION:
        keys |= {f"imputation_r2_{f}" for f in features}
    assert keys <= set(saved), keys - set(saved)
    assert saved["n_test"] > 0 and saved["dataset"] == "synthetic-small-seed0" and saved["synthetic"]
    assert 0 <= saved["active_dims"] <= 36
    assert -1 <= saved["ari_best"] <= 1
    assert saved["ari_gain"] == pytest.approx(saved["ari_selected"] - saved["baseline_ari_selected"])
    assert saved["evaluated_epoch"] == saved["epochs_trained"] - 1 and saved["checkpoint_policy"] == "final"
    if preset in CLASSIFIERS:
        assert 0 <= saved["auc_pooled"] <= 1
    _check_predictor_bundle(tmp_path / "run", saved, preset)


def _check_predictor_bundle(run_dir: Path, saved: dict, preset: str) -> None:
    """Every run saves what prediction needs; the bundle, loaded back, assigns the test bins to
    the clusters its ``ari_inductive`` scored: the clusterer fitted on the training boreholes
    (the bundle writer checks it on the test latents)."""
    bundle = run_dir / "predictor"
    if preset == "v2_6_10":  # RGB imputed by a regressor that is not saved: said, not written
        assert not bundle.exists() and "impute_rgb" in saved["predictor"]
        return
    meta = json.loads((bundle / "predictor.json").read_text())
    assert meta["clustering"]["method"] == saved["inductive_method"] and meta["clustering"]["k"] == saved["inductive_k"]
    assert meta["clustering"]["fitted_on"] == "training latent means" and meta["clustering"]["ari"] == saved["ari_inductive"]
    assert meta["clustering"]["agreement_with_scored_assignment"] >= 0.99
    assert meta["weights"]["evaluated_epoch"] == saved["evaluated_epoch"]
    quantiles = json.loads((bundle / "anomaly.json").read_text())["quantiles"]
    assert len(quantiles) == 1001
    if preset != "direct_classifier":  # no decoder: no reconstruction, no anomaly score
        assert all(math.isfinite(q) for q in quantiles) and quantiles == sorted(quantiles)


def _runs(tracking_dir: Path):
    client = mlflow.MlflowClient(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lithovae")
    return client, client.search_runs([exp.experiment_id])


def test_mlflow_run_has_params_tags_test_metrics_epoch_curves_and_artifacts(tmp_path, shared_data_dir):
    cfg = compose_train(["model=semisup", "beta=anneal_extreme", "trainer.max_epochs=2"],
                        tmp_path, shared_data_dir)
    metrics = train(cfg)
    client, runs = _runs(tmp_path / "outputs" / "mlruns")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("test/ari_kmeans_k12", "test/auc_pooled", "test/r2_mean", "test/ari_best"):
        assert run.data.metrics[key] == pytest.approx(metrics[key.split("/", 1)[1]])
    assert run.data.params["model._target_"] == "lithovae.models.semisup.SemiSupervisedVAE"
    assert run.data.params["beta.end"] == "0.75"
    assert run.data.tags["dataset"] == "synthetic-small-seed0"
    assert len(run.data.tags["dataset_checksum"]) == 16 and "git_commit" in run.data.tags
    history = client.get_metric_history(run.info.run_id, "train/kl")
    assert len(history) == 2
    assert {"train/recon", "train/class", "val/loss", "beta", "lr"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "scaler.json", "last.ckpt"} <= artifacts
    assert run.data.metrics["test/evaluated_epoch"] == 1 and run.data.tags["checkpoint_policy"] == "final"
    assert run.data.metrics["test/ari_gain"] == pytest.approx(metrics["ari_selected"] - metrics["baseline_ari_selected"])
    assert run.data.metrics["test/ari_gain_ci_low"] == pytest.approx(metrics["ari_gain_ci_low"])


def test_a_run_that_raises_is_marked_failed(tmp_path, shared_data_dir, monkeypatch):
    import lithovae.run as lifecycle

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(lifecycle, "score_model", broken)
    cfg = compose_train(["trainer.max_epochs=1"], tmp_path, shared_data_dir)
    with pytest.raises(RuntimeError, match="exploded"):
        train(cfg)
    _, runs = _runs(tmp_path / "outputs" / "mlruns")
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.parametrize("override, named", [
    ("model.latnet_dim=4", "latnet_dim"),
    ("experiment=no_such_preset", "no_such_preset"),
    ("model.latent_dim=abc", "model.latent_dim"),
])
def test_bad_overrides_fail_fast_naming_the_key(tmp_path, override, named):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", override, f"paths.root_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - started
    assert proc.returncode != 0
    assert named in proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"  # a bound against training, not a speed test
    assert not (tmp_path / "outputs" / "data").exists()  # nothing was built
    assert not list(tmp_path.rglob("*.ckpt"))


def test_an_unknown_log_borehole_fails_before_training(tmp_path, shared_data_dir, capsys):
    cfg = compose_train(["eval.log_boreholes=[U9999Z]", "logger=none"], tmp_path, shared_data_dir)
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    assert "eval.log_boreholes: 'U9999Z' is not a test borehole" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_reproduces_the_run_metrics_from_the_run_dir_alone(tmp_path, shared_data_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.evaluate import evaluate_run
    from tests.conftest import CONF_DIR

    cfg = compose_train(["model=semisup", "trainer.max_epochs=1", "logger=none"], tmp_path, shared_data_dir)
    seen = []  # an output step of the caller's own: after the built-in ones, metrics.json written
    trained = train(cfg, outputs=[lambda run: seen.append(((run.parts.run_dir / "metrics.json").exists(),
                                                           run.metrics))])
    assert seen == [(True, trained)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ecfg = compose(config_name="evaluate", overrides=[
            f"run_dir={tmp_path / 'run'}", f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}"])
    again = evaluate_run(ecfg)
    for key in ("n_test", "ari_best", "ari_kmeans_k12", "r2_mean", "auc_pooled", "active_dims"):
        assert again[key] == pytest.approx(trained[key]), key
    # every key of the run's own metrics.json, and the same values where they do not depend on
    # the process (the scores above; the run's record and the hierarchy check here)
    run_file = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(run_file) <= set(again), set(run_file) - set(again)
    assert {"hierarchy_ari", "hierarchy_ari_all", "epochs_trained", "final_losses", "train_time"} <= set(run_file)
    for key in ("hierarchy_ari", "hierarchy_ari_test", "hierarchy_ari_all", "hierarchy_n_lithologies_all",
                "checkpoint_policy", "epochs_trained", "n_train", "n_val", "n_train_labeled", "train_time",
                "train_entropy", "test_entropy", "latent_dim", "seed", "mlflow_run_id", "dataset", "synthetic"):
        assert again[key] == pytest.approx(run_file[key], nan_ok=True), key
    assert again["final_losses"] == pytest.approx(run_file["final_losses"])
    saved = json.loads((tmp_path / "run" / "evaluations" / "synthetic-small-seed0-test" / "metrics.json").read_text())
    assert saved["split"] == "test"
    assert saved["evaluated_checkpoint"] == "last.ckpt" and saved["evaluated_epoch"] == trained["evaluated_epoch"]
    assert saved["baseline_ari_best"] == pytest.approx(trained["baseline_ari_best"])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        explicit = compose(config_name="evaluate", overrides=[
            f"run_dir={tmp_path / 'run'}", f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}",
            "weights=last", "log_mlflow=false"])
    assert evaluate_run(explicit)["ari_best"] == pytest.approx(trained["ari_best"])


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_a_run_writes_every_figure_and_cluster_tables_and_logs_them(tmp_path, shared_data_dir):
    from PIL import Image

    cfg = compose_train(["model=semisup", "trainer.max_epochs=2", "eval.figures=true"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    figures = tmp_path / "run" / "figures"
    names = {p.stem.split("_")[0] if p.stem.startswith("borehole_log") else p.stem for p in figures.glob("*.png")}
    assert {"training_curves", "umap", "latent_qq", "latent_correlation", "contingency", "reconstruction",
            "roc", "borehole"} <= names
    for png in figures.glob("*.png"):
        with Image.open(png) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    clusters = pd.read_csv(tmp_path / "run" / "clusters.csv")
    assert {"size", "top_lithology", "purity", "entropy"} <= set(clusters.columns)
    assert clusters["size"].sum() == metrics["n_test"]
    assert "hierarchy_ari" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    client, runs = _runs(tmp_path / "outputs" / "mlruns")
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "figures")}
    assert "figures/umap.png" in logged and "figures/roc.png" in logged


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_a_group_classifier_draws_roc_curves_over_its_own_classes(tmp_path, shared_data_dir):
    cfg = compose_train(["experiment=direct_classifier", "trainer.max_epochs=1", "logger=none",
                         "eval.figures=true", "eval.umap_sample=300"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    assert metrics["auc_pooled"] > 0.5
    assert (tmp_path / "run" / "figures" / "roc.png").stat().st_size > 0


def test_chunked_training_takes_one_optimizer_step_per_mini_batch(tmp_path, shared_data_dir):
    cfg = compose_train(["trainer.max_epochs=1", "logger=none", "datamodule.batch_size=64"], tmp_path, shared_data_dir)
    train(cfg)
    import torch

    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    n_train = json.loads((tmp_path / "run" / "split.json").read_text())["stats"]["n_train"]
    assert state["global_step"] == -(-n_train // 64) - (1 if n_train % 64 == 1 else 0)
