"""hydra/launcher=ensemble: a sweep trained as one stacked computation, one run per job.

Equivalence (see lithovae/ensemble/__init__.py): with the sampling noise switched off, a member
ends with its separate run's weights up to float rounding; with it on, a member's metrics agree
with its separate run's within the spread two separate runs with other noise draws show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from lithovae.ensemble.launcher import group_key
from lithovae.ensemble.stacked import Member, StackedAdam, StackedTraining, unstackable
from lithovae.files import load_checkpoint
from lithovae.models.base import LatentModel
from lithovae.errors import ConfigError
from lithovae.run import build_run, resume_state, score_run
from lithovae.train import train
from tests.conftest import FAST_EVAL, compose_train

# a member's metrics against its separate run's, noise on (v2_14_2, 3 epochs, small data, the six
# jobs of the test below). Measured: two separate runs that differ only in the noise draws differ by
# up to 0.012 (r2_mean), 0.035 (ari_best), 0.010 (auc_pooled); member against separate run by up to
# 0.021, 0.045, 0.013. The tolerance is about twice the noise-only spread.
TOLERANCE = {"r2_mean": 0.03, "ari_best": 0.06, "auc_pooled": 0.03}


def _member_jobs(tmp: Path, data: Path, jobs: list[list[str]], prefix: str) -> tuple[StackedTraining, list]:
    datamodules: dict = {}
    parts = [build_run(compose_train(ov + [f"paths.run_dir={tmp / f'{prefix}{i}'}"], tmp, data), None, datamodules)
             for i, ov in enumerate(jobs)]
    members = [Member(f"#{i}", p.plan, p.dm, p.policy, p.ckpt_dir, int(p.cfg.trainer.max_epochs),
                      int(p.cfg.early_stopping.patience) if p.cfg.early_stopping.enabled else None)
               for i, p in enumerate(parts)]
    training = StackedTraining(members, torch.device("cpu"), progress=lambda line: None)
    training.probe()
    training.fit()
    return training, parts


DETERMINISTIC = ["experiment=v2_14_2", "model.classifier_dropout=0.0", "trainer.max_epochs=3", "logger=none",
                 "lr_scheduler.reduce_on_plateau=true", "lr_scheduler.patience=0", "lr_scheduler.factor=0.5"]


def test_without_sampling_noise_each_member_ends_with_its_separate_runs_weights(tmp_path, shared_data_dir, monkeypatch):
    """Members that differ in mask probability, learning rate and seed (so in data split and
    number of steps): same initial weights, batch order, mask draws, Adam, BatchNorm statistics,
    plateau schedule and validation loss as separate Lightning runs, to float rounding."""
    monkeypatch.setattr(LatentModel, "reparameterize", staticmethod(lambda mu, logvar: mu))
    jobs = [[*DETERMINISTIC, "mask.prob=0.0", "seed=0", "optimizer.lr=0.001"],
            [*DETERMINISTIC, "mask.prob=0.3", "seed=0", "optimizer.lr=0.004"],
            [*DETERMINISTIC, "mask.prob=0.2", "seed=1", "optimizer.lr=0.001", "beta=fixed_0.5"]]
    separate = []
    for i, ov in enumerate(jobs):
        train(compose_train(ov + [f"paths.run_dir={tmp_path / f'sep{i}'}"], tmp_path, shared_data_dir))
        separate.append(load_checkpoint(tmp_path / f"sep{i}" / "checkpoints" / "last.ckpt"))
    training, parts = _member_jobs(tmp_path, shared_data_dir, jobs, "ens")
    assert len({len(p.dm.tensors["train"]["x"]) for p in parts}) == 2  # seed 1 splits other boreholes
    for i, alone in enumerate(separate):
        member = load_checkpoint(parts[i].ckpt_dir / "last.ckpt")
        assert (member["epoch"], member["global_step"]) == (alone["epoch"], alone["global_step"])
        assert member["state_dict"].keys() == alone["state_dict"].keys()
        gap = max(float((member["state_dict"][k].double() - alone["state_dict"][k].double()).abs().max())
                  for k in alone["state_dict"])
        assert gap < 1e-3, f"member {i}: weights differ by {gap}"
        for mine, theirs in zip(member["history"], alone["history"]):
            assert mine["lr"] == theirs["lr"]
            assert mine["val/loss"] == pytest.approx(theirs["val/loss"], rel=1e-4)
            assert mine["train/loss"] == pytest.approx(theirs["train/loss"], rel=1e-4)


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_with_sampling_noise_member_metrics_agree_with_separate_runs_over_seeds(tmp_path, shared_data_dir):
    """The stated tolerance (TOLERANCE), over three seeds and two mask probabilities."""
    jobs = [["experiment=v2_14_2", "trainer.max_epochs=3", "logger=none", f"seed={seed}", f"mask.prob={prob}"]
            for seed in (0, 1, 2) for prob in (0.1, 0.3)]
    training, parts = _member_jobs(tmp_path, shared_data_dir, jobs, "ens")
    for i, ov in enumerate(jobs):
        alone = train(compose_train(ov + [f"paths.run_dir={tmp_path / f'sep{i}'}"], tmp_path, shared_data_dir))
        member = score_run(parts[i], epochs_trained=training.members[i].epochs_trained,
                           final_losses=training.members[i].final_losses)
        for key, tol in TOLERANCE.items():
            assert abs(member[key] - alone[key]) <= tol, f"{ov}: {key} {member[key]:.4f} vs {alone[key]:.4f}"


def test_stacked_adam_is_torch_adam_per_member_and_leaves_inactive_members_alone():
    torch.manual_seed(0)
    weights = torch.randn(3, 4, 5)
    lrs, decays = [1e-3, 5e-3, 2e-2], [0.0, 0.1, 0.0]
    stacked = weights.clone().requires_grad_(True)
    adam = StackedAdam([stacked], torch.tensor(lrs), torch.tensor(decays))
    alone = [weights[m].clone().requires_grad_(True) for m in range(3)]
    opts = [torch.optim.Adam([alone[m]], lr=lrs[m], weight_decay=decays[m]) for m in range(3)]
    grads = [torch.randn(3, 4, 5) for _ in range(4)]
    for step, g in enumerate(grads):
        active = torch.tensor([True, step % 2 == 0, True])
        stacked.grad = g.clone()
        adam.step(None if step == 0 else active)
        for m in range(3):
            if step == 0 or active[m]:
                alone[m].grad = g[m].clone()
                opts[m].step()
    for m in range(3):
        torch.testing.assert_close(stacked[m].detach(), alone[m].detach(), rtol=1e-5, atol=1e-7)


def test_jobs_group_by_architecture_and_data_not_by_training_plan(tmp_path):
    def key(*overrides):
        return group_key(compose_train(["experiment=v2_14_2", *overrides], tmp_path))

    base = key()
    assert base is not None
    for varied in (["mask.prob=0.1"], ["seed=3"], ["optimizer.lr=0.01"], ["alpha.value=0.5"],
                   ["beta=fixed_0.5"], ["trainer.max_epochs=7"], ["checkpoint=val_recon"], ["early_stopping.enabled=true"]):
        assert key(*varied) == base, varied
    for apart in (["model.latent_dim=4"], ["model.hidden=[16,8]"], ["datamodule.batch_size=256"], ["data.scale=default"]):
        assert key(*apart) not in (base, None), apart
    assert key("checkpoint=val_ari") == base          # the same policy object as a single run's
    assert key("experiment=v2_7") is None             # VaDE's per-epoch k-means initialisation
    assert key("ckpt_path=/some/last.ckpt") is None   # resuming is the trainer's


def test_what_cannot_be_stacked_says_why(tmp_path):
    def why(*overrides):
        return unstackable(compose_train(["experiment=v2_14_2", *overrides], tmp_path))

    assert why() is None and why("checkpoint=val_ari") is None and why("alpha=adaptive") is None
    assert why("experiment=v2_7").startswith("model: VaDE changes the model object at each epoch start")
    assert why("ckpt_path=/some/last.ckpt").startswith("ckpt_path: a resumed run continues the optimizer state")
    assert why("trainer.devices=2").startswith("trainer: a stacked group trains on one device")


def _multirun(args: list[str], tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lithovae.train", "-m", "hydra/launcher=ensemble", *args, "data.scale=small",
         f"paths.root_dir={tmp_path}", f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false", *FAST_EVAL],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_an_ensemble_sweep_leaves_a_run_per_job_and_a_bad_member_fails_alone(tmp_path, shared_data_dir):
    from lithovae.evaluate import load_run_model

    proc = _multirun(["experiment=v2_14_2", "trainer.max_epochs=3", "mask.prob=0.0,0.1,0.2,0.3,1.5",
                      "hydra.launcher.max_group_size=3"], tmp_path, shared_data_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the failed job fails the sweep, at its end
    assert "stacked group(s) of [3, 2]" in proc.stdout
    assert "mask.prob" in proc.stderr and "1 sweep job(s) failed (#4)" in proc.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    assert (sweep_dir / "4" / "FAILED").exists()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() if e.name != "Default" for r in client.search_runs([e.experiment_id])]
    by_job = {int(r.data.tags["sweep_job"]): r for r in runs}
    assert sorted(by_job) == [0, 1, 2, 3, 4]
    assert by_job[4].info.status == "FAILED" and "mask.prob" in by_job[4].data.tags["error"]
    spec = None
    for job in range(4):
        run = by_job[job]
        assert run.info.status == "FINISHED"
        assert run.data.tags["launcher"] == "ensemble"
        assert {"test/ari_best", "test/baseline_ari_best", "test/r2_mean", "test/evaluated_epoch",
                "train/loss", "val/loss", "beta", "lr"} <= set(run.data.metrics)
        assert run.data.params["mask.prob"] == str([0.0, 0.1, 0.2, 0.3][job])
        assert "last.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3
        run_dir = sweep_dir / str(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert (metrics["evaluated_epoch"], metrics["checkpoint_policy"]) == (2, "final")
        assert metrics["ari_best"] == pytest.approx(run.data.metrics["test/ari_best"])
        if spec is None:
            spec = _spec(run_dir, shared_data_dir)
        model, scored = load_run_model(run_dir, spec)
        if job == 0:  # weights only: evaluated, never resumed
            with pytest.raises(ConfigError, match="ensemble launcher"):
                resume_state(run_dir / "checkpoints" / "last.ckpt")
        assert scored["evaluated_epoch"] == 2 and np.isfinite(
            model.embed(torch.zeros(4, spec.n_features), torch.ones(4, spec.n_features)).numpy()).all()


def _spec(run_dir: Path, data_dir: Path):
    """The DataSpec lithovae.evaluate builds for the run's model."""
    from lithovae.data.datamodule import LabelEncoding, LithoDataModule
    from lithovae.data.scaler import DistributionAwareScaler
    from tests.conftest import config_defaults

    (dataset,) = sorted(data_dir.glob("synthetic-small-seed0/*.parquet"))
    d = config_defaults("data.scale=small")
    dm = LithoDataModule(dataset, seed=0, **d["datamodule"],
                         scaler=DistributionAwareScaler.load(run_dir / "scaler.json"),
                         encoding=LabelEncoding(**json.loads((run_dir / "label_encoding.json").read_text())))
    dm.setup()
    return dm.data_spec()


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_jobs_that_cannot_be_grouped_run_one_after_another(tmp_path, shared_data_dir):
    proc = _multirun(["experiment=v2_14_2", "trainer.max_epochs=1", "model.latent_dim=4,6"], tmp_path, shared_data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 stacked group(s) of [], 2 job(s) one after another" in proc.stdout
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    for job, dim in ((0, 4), (1, 6)):
        assert json.loads((sweep_dir / str(job) / "metrics.json").read_text())["latent_dim"] == dim


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
@pytest.mark.parametrize("study, sweep", [("beta_schedules", "beta=fixed_0.5,anneal,cyclical"),
                                          ("alpha_grid", "alpha.value=0.1,1.0")])
def test_studies_run_through_the_ensemble_launcher_with_their_summaries(tmp_path, shared_data_dir, study, sweep):
    import pandas as pd

    proc = _multirun([f"study={study}", "trainer.max_epochs=1", sweep], tmp_path, shared_data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 stacked group(s)" in proc.stdout
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == len(sweep.split("=")[1].split(",")) and summary["ari_best"].notna().all()
    assert list(sweep_dir.glob(f"{study}*.png"))


def test_val_ari_members_train_stacked_and_score_the_epoch_their_separate_runs_pick(
        tmp_path, shared_data_dir, monkeypatch):
    """checkpoint=val_ari in a stacked group: each member measures its validation ARI with the
    single run's own policy object and scores the same epoch (best.ckpt) as its separate run."""
    monkeypatch.setattr(LatentModel, "reparameterize", staticmethod(lambda mu, logvar: mu))
    common = [*DETERMINISTIC, "checkpoint=val_ari", "checkpoint.every_n_epochs=1", "checkpoint.n_init=1",
              "trainer.max_epochs=4"]
    jobs = [[*common, "seed=0", "optimizer.lr=0.001", "mask.prob=0.2"],
            [*common, "seed=1", "optimizer.lr=0.004"]]
    separate = [train(compose_train(ov + [f"paths.run_dir={tmp_path / f'sep{i}'}"], tmp_path, shared_data_dir))
                for i, ov in enumerate(jobs)]
    training, parts = _member_jobs(tmp_path, shared_data_dir, jobs, "ens")
    for i, alone in enumerate(separate):
        assert alone["checkpoint_policy"] == "val_ari" and alone["evaluated_checkpoint"] == "best.ckpt"
        alone_history = _history_of(tmp_path / f"sep{i}")
        member_history = _history_of(parts[i].run_dir)
        assert [e for e in member_history if "val/ari" in member_history[e]] == [0, 1, 2, 3]
        for epoch, row in alone_history.items():
            assert member_history[epoch]["val/ari"] == pytest.approx(row["val/ari"], abs=1e-3), (i, epoch)
        member = score_run(parts[i], epochs_trained=training.members[i].epochs_trained,
                           final_losses=training.members[i].final_losses)
        best = max(alone_history, key=lambda e: alone_history[e]["val/ari"])
        assert (member["checkpoint_policy"], member["evaluated_checkpoint"]) == ("val_ari", "best.ckpt")
        assert member["evaluated_epoch"] == alone["evaluated_epoch"] == best, i
        assert training.members[i].policy.best_epoch == best


def _history_of(run_dir: Path) -> dict[int, dict]:
    return {row["epoch"]: row for row in load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["history"]}


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_a_val_ari_sweep_trains_stacked_and_each_member_scores_its_best_validation_ari_epoch(tmp_path, shared_data_dir):
    proc = _multirun(["experiment=v2_14_2", "trainer.max_epochs=3", "checkpoint=val_ari", "checkpoint.every_n_epochs=1",
                      "checkpoint.n_init=1", "mask.prob=0.0,0.2", "logger=none"], tmp_path, shared_data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 stacked group(s) of [2], 0 job(s) one after another" in proc.stdout
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns" / "train").iterdir()
    for job in (0, 1):
        history = _history_of(sweep_dir / str(job))
        scored = {e: row["val/ari"] for e, row in history.items()}
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert (metrics["checkpoint_policy"], metrics["evaluated_checkpoint"]) == ("val_ari", "best.ckpt")
        assert metrics["evaluated_epoch"] == max(scored, key=scored.get)
