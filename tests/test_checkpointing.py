"""Which weights a run scores, last.ckpt every epoch, exact resume, and evaluation that never
loses a finished training."""

from __future__ import annotations

import json
import math
import os
import signal

import mlflow
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lithovae.train import run, train
from tests.conftest import compose_train


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _history(run_dir):
    """Per-epoch logged values, from the history saved in last.ckpt."""
    return {row["epoch"]: row for row in _ckpt(run_dir / "checkpoints" / "last.ckpt")["history"]}


def test_final_policy_scores_the_last_epoch_and_last_ckpt_holds_it(tmp_path, shared_data_dir):
    cfg = compose_train(["experiment=v2_6_7", "trainer.max_epochs=4", "logger=none"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    last = _ckpt(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert saved["checkpoint_policy"] == "final" and saved["evaluated_checkpoint"] == "last.ckpt"
    assert saved["evaluated_epoch"] == 3 == last["epoch"]  # 0-based: the 4th and last epoch
    assert saved["evaluated_global_step"] == last["global_step"] > 0
    assert metrics["epochs_trained"] == 4


def test_last_ckpt_is_rewritten_after_every_epoch(tmp_path, shared_data_dir):
    seen = []

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            path = tmp_path / "run" / "checkpoints" / "last.ckpt"
            seen.append(_ckpt(path)["epoch"] if path.exists() else None)

    # beta rises, so val/loss rises: a last.ckpt tied to an improving monitor would go stale
    cfg = compose_train(["experiment=v2_6_7", "trainer.max_epochs=5", "logger=none"], tmp_path, shared_data_dir)
    train(cfg, callbacks=[Watch()])
    assert seen == [None, 0, 1, 2, 3]


def test_val_loss_policy_scores_the_epoch_of_lowest_validation_loss(tmp_path, shared_data_dir):
    cfg = compose_train(["experiment=v2_6_7", "trainer.max_epochs=6", "logger=none", "checkpoint=val_loss",
                         "beta=fixed", "beta.value=5.0"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    history = _history(tmp_path / "run")
    lowest = min(history, key=lambda e: history[e]["val/loss"])
    assert metrics["checkpoint_policy"] == "val_loss" and metrics["evaluated_checkpoint"] == "best.ckpt"
    assert metrics["evaluated_epoch"] == lowest == _ckpt(tmp_path / "run" / "checkpoints" / "best.ckpt")["epoch"]


def test_val_ari_policy_scores_every_n_epochs_and_keeps_the_highest(tmp_path, shared_data_dir):
    cfg = compose_train(["trainer.max_epochs=5", "logger=none", "checkpoint=val_ari",
                         "checkpoint.every_n_epochs=2"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    history = _history(tmp_path / "run")
    scored = {e: row["val/ari"] for e, row in history.items() if "val/ari" in row}
    assert set(scored) == {1, 3, 4}  # every 2nd epoch, and the last
    assert metrics["evaluated_epoch"] == max(scored, key=scored.get)


class _KillDuring(pl.Callback):
    """A signal to this process in the first batch of ``epoch`` (SIGTERM: SLURM preemption)."""

    def __init__(self, epoch: int, signum: int = signal.SIGTERM):
        self.epoch, self.signum = epoch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


def test_ctrl_c_stops_with_exit_130_and_keeps_the_last_complete_epoch(tmp_path, shared_data_dir):
    # a background job (CI) may start with SIGINT ignored, which the run respects: act as a terminal
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stopped:
            run(compose_train(["trainer.max_epochs=5", "logger=none"], tmp_path, shared_data_dir),
                callbacks=[_KillDuring(2, signal.SIGINT)])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    finally:
        signal.signal(signal.SIGINT, before)
    assert stopped.value.code == 130
    assert _ckpt(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 1


class _Epochs(pl.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def test_a_run_killed_partway_resumes_from_last_ckpt_and_matches_an_uninterrupted_run(tmp_path, shared_data_dir):
    # dropout, masking and beta annealing: every random stream and schedule must continue exactly
    common = ["experiment=v2_6_11", "trainer.max_epochs=12", "logger=none"]
    full = train(compose_train(common, tmp_path / "full", shared_data_dir))

    with pytest.raises(SystemExit) as stopped:
        run(compose_train(common, tmp_path / "killed", shared_data_dir), callbacks=[_KillDuring(6)])
    assert stopped.value.code == 128 + signal.SIGTERM
    last = tmp_path / "killed" / "run" / "checkpoints" / "last.ckpt"
    assert _ckpt(last)["epoch"] == 5  # epoch 6 was cut short: the last complete one is kept
    assert not (tmp_path / "killed" / "run" / "metrics.json").exists()

    epochs = _Epochs()
    resumed = train(compose_train([*common, f"ckpt_path={last}"], tmp_path / "resumed", shared_data_dir),
                    callbacks=[epochs])
    assert epochs.epochs == list(range(6, 12))
    assert resumed["evaluated_epoch"] == full["evaluated_epoch"] == 11
    for key in ("ari_best", "r2_mean", "baseline_ari_best", "imputation_r2_mean"):
        assert resumed[key] == full[key], key
    assert len(_history(tmp_path / "resumed" / "run")) == 12  # the curves cover the whole training


def test_sigterm_marks_the_mlflow_run_killed_and_a_resume_names_it(tmp_path, shared_data_dir):
    common = ["trainer.max_epochs=4"]
    with pytest.raises(SystemExit) as stopped:
        run(compose_train(common, tmp_path, shared_data_dir), callbacks=[_KillDuring(2)])
    assert stopped.value.code == 143
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lithovae")
    (killed,) = client.search_runs([exp.experiment_id])
    assert killed.info.status == "KILLED" and killed.data.tags["stop_reason"] == "SIGTERM"
    assert "resume with ckpt_path=" in killed.data.tags["error"]

    # a SIGKILLed run cannot end itself and stays RUNNING: the resume marks it KILLED
    client.update_run(killed.info.run_id, status="RUNNING")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    train(compose_train([*common, f"ckpt_path={last}", f"paths.run_dir={tmp_path / 'again'}"],
                        tmp_path, shared_data_dir))
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    (new,) = [r for r in runs.values() if r.info.run_id != killed.info.run_id]
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from_run"] == killed.info.run_id
    assert new.data.tags["resumed_after_epoch"] == "1"
    assert runs[killed.info.run_id].data.tags["resumed_by_run"] == new.info.run_id
    assert runs[killed.info.run_id].info.status == "KILLED"


def test_a_missing_ckpt_path_is_one_line_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run(compose_train([f"ckpt_path={tmp_path / 'nope.ckpt'}", "logger=none"], tmp_path))
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: ckpt_path: no checkpoint file at {tmp_path / 'nope.ckpt'}"
    assert not (tmp_path / "data").exists()


def test_a_degenerate_latent_still_ends_with_metrics_and_a_finished_run(tmp_path, shared_data_dir, monkeypatch):
    from lithovae.models.base import LatentModel

    def collapsed(self, x, visible):  # NaN latent means: nothing can be clustered or drawn
        return torch.full((x.shape[0], self.latent_dim), float("nan"))

    monkeypatch.setattr(LatentModel, "embed", collapsed)
    cfg = compose_train(["trainer.max_epochs=2", "eval.figures=true", "eval.umap_sample=300"],
                        tmp_path, shared_data_dir)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["ari_best"] is None and saved["ari_kmeans_k12"] is None and saved["ari_gain"] is None
    assert saved["ari_selected"] is None and saved["ari_inductive"] is None and saved["selected_method"] is None
    assert saved["baseline_ari_best"] is not None  # the raw features are still scored
    assert saved["evaluated_epoch"] == 1 and math.isnan(metrics["ari_best"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lithovae").experiment_id])
    assert run.info.status == "FINISHED"
    assert "last.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_baseline_is_the_same_clustering_of_the_scaled_input_features(tmp_path, shared_data_dir):
    from lithovae.evaluation.metrics import clustering_scores

    cfg = compose_train(["trainer.max_epochs=1", "logger=none"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    from omegaconf import OmegaConf

    from lithovae.data.datamodule import LithoDataModule

    dm = LithoDataModule(next((shared_data_dir).rglob("*.parquet")), seed=cfg.seed,
                         **OmegaConf.to_container(cfg.datamodule))
    dm.setup()
    test = dm.tensors["test"]
    direct = clustering_scores(test["x"].numpy(), test["y"].numpy(), ks=tuple(cfg.eval.k), seed=cfg.seed,
                               n_init=cfg.eval.n_init, gmm=cfg.eval.gmm,
                               max_fit_samples=cfg.eval.max_fit_samples, backend=cfg.eval.backend)
    assert metrics["baseline_ari_kmeans_k12"] == pytest.approx(direct.scores["ari_kmeans_k12"])
    assert metrics["baseline_ari_best"] == pytest.approx(direct.scores["ari_best"])
    assert metrics["ari_best_gain"] == pytest.approx(metrics["ari_best"] - metrics["baseline_ari_best"])
    assert np.isfinite(metrics["baseline_ari_best"])
    # the raw features' held-out selection: the (method, k) of the best validation clustering
    val = dm.tensors["val"]
    chosen = clustering_scores(val["x"].numpy(), val["y"].numpy(), ks=tuple(cfg.eval.k), seed=cfg.seed,
                               n_init=cfg.eval.n_init, gmm=cfg.eval.gmm,
                               max_fit_samples=cfg.eval.max_fit_samples, backend=cfg.eval.backend).scores
    assert (metrics["baseline_selected_method"], metrics["baseline_selected_k"]) == (chosen["best_method"],
                                                                                     chosen["best_k"])
    assert metrics["baseline_val_ari_selected"] == pytest.approx(chosen["ari_best"])
    name = f"ari_{chosen['best_method']}_k{chosen['best_k']}"
    assert metrics["baseline_ari_selected"] == pytest.approx(direct.scores[name])
    assert metrics["ari_gain"] == pytest.approx(metrics["ari_selected"] - metrics["baseline_ari_selected"])
