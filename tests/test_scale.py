"""Scaling out: DDP under Hydra (single run and multirun), parallel and cluster launchers, Optuna."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from lithovae.train import train
from tests.conftest import compose_train

BASE = ["data.scale=small", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.n_init=1",
        "eval.figures=false"]


def _train_cli(args: list[str], root: Path, data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", *args, *BASE, f"paths.root_dir={root}",
                           f"paths.data_dir={data_dir}"], capture_output=True, text=True, cwd=root,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _runs(root: Path):
    client = mlflow.MlflowClient(f"sqlite:///{root / 'outputs' / 'mlruns' / 'mlflow.db'}")
    return client, {e.name: client.search_runs([e.experiment_id]) for e in client.search_experiments()
                    if e.name != "Default"}


@pytest.fixture(scope="module")
def single_process_n_test(tmp_path_factory, shared_data_dir):
    tmp = tmp_path_factory.mktemp("single")
    return train(compose_train(["trainer.max_epochs=1", "logger=none", "eval.n_init=1"], tmp, shared_data_dir))["n_test"]


def _check_run_dir(run_dir: Path, n_test: int) -> None:
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]  # policy final: no best.ckpt
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"ari_best", "ari_kmeans_k12", "ari_gmm_k20", "silhouette", "r2_mean", "active_dims"} <= set(metrics)
    assert metrics["n_test"] == n_test  # the full test set, not one rank's shard


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_ddp_cpu_two_processes_one_run_one_checkpoint_full_test_set(tmp_path, shared_data_dir,
                                                                     single_process_n_test):
    _train_cli(["trainer=ddp_cpu", "trainer.devices=2"], tmp_path, shared_data_dir)
    _, experiments = _runs(tmp_path)
    assert list(experiments) == ["lithovae"] and len(experiments["lithovae"]) == 1
    run = experiments["lithovae"][0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/n_test"] == single_process_n_test
    assert run.data.params["trainer.strategy"] == "ddp_spawn"
    (run_dir,) = list((tmp_path / "outputs" / "runs" / "train").iterdir())
    _check_run_dir(run_dir, single_process_n_test)


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_ddp_cpu_multirun_two_jobs(tmp_path, shared_data_dir, single_process_n_test):
    _train_cli(["-m", "trainer=ddp_cpu", "trainer.devices=2", "model.latent_dim=4,6"], tmp_path, shared_data_dir)
    _, experiments = _runs(tmp_path)
    (name,) = experiments
    assert name.startswith("lithovae-20")
    runs = experiments[name]
    assert sorted(r.data.params["model.latent_dim"] for r in runs) == ["4", "6"]
    assert all(r.info.status == "FINISHED" for r in runs)
    (sweep,) = list((tmp_path / "outputs" / "multiruns" / "train").iterdir())
    for job in ("0", "1"):
        _check_run_dir(sweep / job, single_process_n_test)


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_joblib_multirun_over_four_mask_probs_is_one_sweep(tmp_path, shared_data_dir):
    _train_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "mask=random",
                "mask.prob=0.0,0.1,0.2,0.3"], tmp_path, shared_data_dir)
    _, experiments = _runs(tmp_path)
    (name,) = experiments
    runs = experiments[name]
    assert name.startswith("lithovae-20") and len(runs) == 4
    assert sorted(r.data.params["mask.prob"] for r in runs) == ["0.0", "0.1", "0.2", "0.3"]
    assert {r.data.tags["sweep_job"] for r in runs} == {"0", "1", "2", "3"}
    assert all(r.data.params["threads"] == "1" for r in runs)  # no oversubscription


@pytest.mark.parametrize("overrides, gpus, cpus", [
    ([], 0, 1), (["trainer=gpu", "threads=3"], 1, 3), (["trainer=ddp_cpu", "threads=2"], 0, 4),
])
def test_slurm_launcher_asks_for_what_the_run_uses(tmp_path, overrides, gpus, cpus):
    """GPUs only for a GPU trainer, CPUs from threads (times the ranks of DDP on CPU): composed
    without a cluster (lithovae.slurm's resolvers, as lithovae.train registers them)."""
    import lithovae.slurm  # noqa: F401 - registers the resolvers, as importing lithovae.train does
    from omegaconf import OmegaConf

    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", *overrides], tmp_path,
                        return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == lithovae.slurm.TARGET and launcher["partition"] == "gpu"
    assert (launcher["gpus_per_node"], launcher["cpus_per_task"]) == (gpus, cpus)
    assert launcher["mem_gb"] == 2 and launcher["timeout_min"] == 120 and launcher["max_num_timeout"] == 3


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_optuna_search_reports_failed_trials_and_goes_on(tmp_path, shared_data_dir):
    proc = _train_cli(["hparams_search=ari_optuna", "hydra.sweeper.n_trials=4", "mask.prob=choice(0.1,1.5)"],
                      tmp_path, shared_data_dir, timeout=600)
    assert "Failed experiment" in proc.stdout + proc.stderr
    (result,) = list((tmp_path / "outputs" / "multiruns" / "optuna").glob("*/optimization_results.yaml"))
    best = yaml.safe_load(result.read_text())
    assert best["best_params"]["mask.prob"] == 0.1
    assert 0 < best["best_value"] <= 1
