"""MLflow tracking through Lightning's MLFlowLogger: one store for every run.

The store is a SQLite database plus an artifact folder under ``paths.mlflow_dir``
(MLflow 3 no longer accepts a plain folder as a tracking store). Everything here
runs on rank 0 only: ``MLFlowLogger.run_id`` exists only there.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

PARAM_VALUE_LIMIT = 500  # well inside MLflow's limit; the full config is an artifact


def tracking_uri(tracking_dir: str | Path) -> str:
    path = Path(tracking_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _hydra_job():
    """The running Hydra job's config, or None outside a Hydra app (tests, library use)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_experiment_name(base: str) -> str:
    """In a Hydra multirun every job goes to one experiment named after the sweep."""
    from hydra.types import RunMode

    hc = _hydra_job()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return base
    return f"{base}-sweep-{Path(hc.sweep.dir).name}"


def default_run_name() -> str | None:
    """The job's overrides (e.g. ``model=semisup beta=anneal_extreme``), readable in the UI."""
    overrides = job_tags().get("overrides", "")
    kept = [o for o in overrides.split() if not o.startswith(("paths.", "hydra"))]
    return " ".join(kept)[:120] or None


def mlflow_logger(experiment_name: str = "lithovae", tracking_dir: str = "outputs/mlruns",
                  run_name: str | None = None) -> MLFlowLogger:
    import mlflow

    from lithovae.files import file_lock

    experiment_name = sweep_experiment_name(experiment_name)
    run_name = run_name or default_run_name()
    uri = tracking_uri(tracking_dir)
    artifacts = str((Path(tracking_dir) / "artifacts" / experiment_name).resolve())
    # parallel jobs (joblib sweeps) would race to create the database and the experiment
    with file_lock(Path(tracking_dir) / ".lock"):
        client = mlflow.MlflowClient(uri)
        if client.get_experiment_by_name(experiment_name) is None:
            client.create_experiment(experiment_name, artifact_location=artifacts)
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri,
                        artifact_location=artifacts)


def no_logger() -> None:
    return None


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """Resolved config as flat ``a.b.c: value`` params within MLflow's length limits."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = str(value)
            flat[name[:250]] = text if len(text) <= PARAM_VALUE_LIMIT else text[:PARAM_VALUE_LIMIT - 3] + "..."
    return flat


def job_tags() -> dict[str, str]:
    """The Hydra job's overrides and, in a sweep, its number: what tells sweep runs apart."""
    hc = _hydra_job()
    if hc is None:
        return {}
    tags = {"overrides": " ".join(hc.overrides.task)[:5000]}
    if hc.job.get("num") is not None:
        tags["sweep_job"] = str(hc.job.num)
    return tags


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@rank_zero_only
def start_run(logger, cfg: DictConfig, tags: dict[str, str]) -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    params = flatten({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
                      if k not in ("hydra",)})
    client, run_id = logger.experiment, logger.run_id
    items = list(params.items())
    from mlflow.entities import Param, RunTag

    for i in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@rank_zero_only
def log_test_metrics(logger, metrics: dict) -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    numeric = {f"test/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}  # NaN: undefined
    logger.log_metrics(numeric)


@rank_zero_only
def log_artifacts(logger, paths: list[Path], folder: str | None = None) -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    for p in paths:
        if p is not None and Path(p).exists():
            logger.experiment.log_artifact(logger.run_id, str(p), artifact_path=folder)


@rank_zero_only
def end_run(logger, failed: bool) -> None:
    """Mark the run FINISHED or FAILED (never left RUNNING)."""
    if isinstance(logger, MLFlowLogger) and logger._initialized:
        logger.experiment.set_terminated(logger.run_id, "FAILED" if failed else "FINISHED")


@contextlib.contextmanager
def tracked_run(logger, cfg: DictConfig, tags: dict[str, str]):
    """Start the run; end it FINISHED, or FAILED if the block raises (no-op without MLflow)."""
    failed = True
    try:
        start_run(logger, cfg, tags)
        yield logger
        failed = False
    finally:
        end_run(logger, failed)
