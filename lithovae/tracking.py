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


PARENT_RUN_FILE = "parent_run_id"  # in a study's sweep directory: the study's MLflow parent run


def sweep_experiment_name(base: str, sweep_dir: str | Path | None = None) -> str:
    """In a Hydra multirun every job goes to one experiment named after the sweep."""
    if sweep_dir is None:
        from lithovae.sweeps import in_multirun

        if not in_multirun():
            return base
        sweep_dir = _hydra_job().sweep.dir
    return f"{base}-sweep-{Path(sweep_dir).name}"


def default_run_name() -> str | None:
    """The job's overrides (e.g. ``model=semisup beta=anneal_extreme``), readable in the UI."""
    overrides = job_tags().get("overrides", "")
    kept = [o for o in overrides.split() if not o.startswith(("paths.", "hydra"))]
    return " ".join(kept)[:120] or None


def mlflow_logger(experiment_name: str = "lithovae", tracking_dir: str = "outputs/mlruns",
                  run_name: str | None = None, sweep_suffix: bool = True) -> MLFlowLogger:
    """An MLFlowLogger on the local store; in a multirun, in the sweep's experiment
    (``sweep_suffix=False``: ``experiment_name`` is already the full name)."""
    import mlflow

    from lithovae.files import file_lock

    if sweep_suffix:
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
        parent = Path(hc.sweep.dir) / PARENT_RUN_FILE
        if parent.exists():  # a study: the job is a child of the study's parent run
            tags["mlflow.parentRunId"] = parent.read_text().strip()
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
def log_test_metrics(logger, metrics: dict, prefix: str = "test/") -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    numeric = {f"{prefix}{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}  # NaN: undefined
    logger.log_metrics(numeric)


@rank_zero_only
def log_artifacts(logger, paths: list[Path], folder: str | None = None) -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    for p in paths:
        if p is not None and Path(p).exists():
            logger.experiment.log_artifact(logger.run_id, str(p), artifact_path=folder)


def run_id(logger) -> str | None:
    """The MLflow run id (rank 0 only; None without MLflow)."""
    return logger.run_id if isinstance(logger, MLFlowLogger) else None


@rank_zero_only
def set_tags(logger, tags: dict[str, str]) -> None:
    if isinstance(logger, MLFlowLogger):
        from mlflow.entities import RunTag

        logger.experiment.log_batch(logger.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


@rank_zero_only
def end_run(logger, status: str, tags: dict[str, str] | None = None) -> None:
    """Mark the run FINISHED, FAILED or KILLED (never left RUNNING), with the reason as tags."""
    if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
        if tags:
            set_tags(logger, tags)
        logger.experiment.set_terminated(logger.run_id, status)


def mark_superseded(logger, old_run_id: str | None, new_run_id: str | None) -> None:
    """A run that died without ending (SIGKILL, out of memory) stays RUNNING until resumed:
    the resumed run then marks it KILLED and names itself on it."""
    if not isinstance(logger, MLFlowLogger) or not old_run_id or old_run_id == new_run_id:
        return
    client = logger.experiment
    try:
        old = client.get_run(old_run_id)
    except Exception:  # noqa: BLE001 - another store, or a deleted run: nothing to mark
        return
    if old.info.status == "RUNNING":
        client.set_tag(old_run_id, "stop_reason", "process died; resumed as another run")
        client.set_terminated(old_run_id, "KILLED")
    client.set_tag(old_run_id, "resumed_by_run", str(new_run_id))


@contextlib.contextmanager
def tracked_run(logger, cfg: DictConfig, tags: dict[str, str]):
    """Start the run; end it FINISHED, KILLED (SIGTERM/SIGINT) or FAILED, with ``stop_reason``
    or ``error`` tags saying why (no-op without MLflow)."""
    from lithovae.cli import RunInterrupted, one_line

    start_run(logger, cfg, tags)
    try:
        yield logger
    except RunInterrupted as exc:
        end_run(logger, "KILLED", {"stop_reason": exc.signame, "error": str(exc)[:5000]})
        raise
    except BaseException as exc:
        end_run(logger, "FAILED", {"error": one_line(exc)[:5000]})
        raise
    end_run(logger, "FINISHED")
