"""MLflow tracking through Lightning's MLFlowLogger: one store for every run.

Where runs go (:func:`resolve_tracking_uri`): ``logger.tracking_uri`` if set (an MLflow
server ``http(s)://host:port`` or a database URI such as ``sqlite:///...`` or
``postgresql+psycopg://user@host/db``); else the ``MLFLOW_TRACKING_URI`` environment
variable; else the local store under ``paths.mlflow_dir``: a SQLite database plus an artifact
folder (MLflow 3 no longer accepts a plain folder as a tracking store). Against a server the
artifacts go wherever the server says (``mlflow-artifacts:`` when it serves them); only the
local store gets an artifact folder chosen here. Credentials come from MLflow's own
environment variables (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN), never from a URI in a
config that is saved with the run. Everything here runs on rank 0 only:
``MLFlowLogger.run_id`` exists only there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from lithovae.cli import RunInterrupted, one_line
from lithovae.errors import ConfigError
from lithovae.files import file_lock
from lithovae.sweeps import in_multirun
from lithovae.uri import ENV_URI, redacted  # noqa: F401 - re-exported

# mlflow (and sqlalchemy, for a database store) are imported inside the functions that talk to
# the store: they take seconds to import, and a run with logger=none never needs them

PARAM_VALUE_LIMIT = 500  # well inside MLflow's limit; the full config is an artifact
PROBE_TIMEOUT_S = 10  # one try, no retries: an unreachable server fails before training starts
EXPERIMENT_ATTEMPTS = 6  # creating the experiment: parallel jobs race for it, a server may blink
SERVER_SCHEMES = ("http", "https")
FINAL_ERRORS = ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_PARAMETER_VALUE", "BAD_REQUEST")
DRIVER_HINT = "for PostgreSQL, pip install -e '.[postgres]' (psycopg 3) and use postgresql+psycopg://"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description on an experiment's or a run's page
DEFAULT_UI_STORE, DEFAULT_UI_URL = "outputs/mlruns/mlflow.db", "http://127.0.0.1:5000"  # `make ui`
EXPERIMENT_DESCRIPTION = """\
lithovae runs: VAEs on borehole logs, scored on held-out **test boreholes**.

Which metric answers which question (show them in the runs table: *Columns* → *Metrics*, tick them):

- **Does the latent space sort lithology better than the raw logs?** `test/ari_gain` with
  `test/ari_gain_ci_low` / `test/ari_gain_ci_high`: an interval that holds 0 means no difference.
- **How well do clusters of the latent means match lithology?** `test/ari_selected` (clustering
  chosen on validation boreholes), beside `test/baseline_ari_selected` (the same on the raw features);
  `test/ari_inductive`: the saved clusterer, fitted on training boreholes.
- **How well does the model reconstruct the logs?** `test/r2_mean`.
- **Classifier variants:** `test/balanced_accuracy`, `test/auc_macro`.
- **What a sweep optimises:** `val_ari_selected` (validation boreholes only, never test labels).

Each run's description repeats its end-of-run table: the scored weights (epoch, checkpoint policy)
and every score beside the raw features' with its bootstrap interval. Runs on synthetic data are
tagged `synthetic=True` and named after their dataset (`synthetic-…`): they are not real-data results.
"""
DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def local_store_uri(tracking_dir: str | Path) -> str:
    """The local store's URI: ``sqlite:///<tracking_dir>/mlflow.db`` (the folder is created)."""
    path = Path(tracking_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


tracking_uri = local_store_uri  # the former name


def resolve_tracking_uri(tracking_uri: str | None = None, tracking_dir: str | Path | None = None) -> str:
    """Where runs go: ``tracking_uri`` if set, else ``$MLFLOW_TRACKING_URI`` if set, else the
    local store under ``tracking_dir`` (default ``outputs/mlruns``). Only the last one touches
    the local disk."""
    if tracking_uri:
        return str(tracking_uri).strip()
    if os.environ.get(ENV_URI, "").strip():
        return os.environ[ENV_URI].strip()
    return local_store_uri(tracking_dir if tracking_dir is not None else "outputs/mlruns")


def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.lower()


FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"  # MLflow's own switch for its folder store


def check_uri(uri: str, key: str = "logger.tracking_uri", saved: bool = True) -> None:
    """A tracking URI (``key`` names where it came from). ``saved``: it is in the config, which
    is saved with every run and logged as its params, so it must hold no password."""
    if "://" not in uri and not uri.startswith("databricks"):
        raise ConfigError(f"{key}: '{uri}' is not a tracking URI: give an MLflow server "
                          "(http://host:port), or a database (sqlite:///path/mlflow.db, "
                          "postgresql+psycopg://user@host/db); a local folder is logger.tracking_dir")
    if _scheme(uri) == "file" and os.environ.get(FILE_STORE_OPT_IN, "").strip().lower() not in ("true", "1"):
        folder = urlsplit(uri).path or "<folder>"
        raise ConfigError(f"{key}: '{uri}' is a folder store, which MLflow 3 no longer writes: use "
                          f"logger.tracking_dir={folder} (a SQLite store there) or sqlite:///{folder.rstrip('/')}"
                          f"/mlflow.db; `mlflow migrate-filestore` converts an existing one")
    if saved and urlsplit(uri).password is not None:
        raise ConfigError(f"{key}: '{redacted(uri)}' holds a password, which would be saved in the run's "
                          "config: drop it from the URI and set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
                          "(or MLFLOW_TRACKING_TOKEN; PGPASSWORD or ~/.pgpass for PostgreSQL) instead")


def resolved_store(tracking_uri: str | None = None, tracking_dir: str | Path | None = None,
                   key: str = "logger.tracking_uri") -> tuple[str, str]:
    """The URI runs will go to (:func:`resolve_tracking_uri`), checked and found reachable, and
    where it came from (``key``, ``MLFLOW_TRACKING_URI`` or the local store): a
    :class:`ConfigError` naming the URI otherwise, in seconds."""
    if tracking_uri:
        source = key
    elif os.environ.get(ENV_URI, "").strip():
        source = ENV_URI
    else:
        source = f"{key} (unset: the local store)"
    uri = resolve_tracking_uri(tracking_uri, tracking_dir)
    check_uri(uri, source, saved=source == key)
    check_reachable(uri, source)
    return uri, source


def check_remote_store(tracking_uri: str | None = None, key: str = "logger.tracking_uri") -> None:
    """Check ``tracking_uri`` or ``$MLFLOW_TRACKING_URI`` as :func:`resolved_store` does; a no-op
    when runs go to the local store (a multirun checks this before its first job)."""
    if tracking_uri or os.environ.get(ENV_URI, "").strip():
        resolved_store(tracking_uri, None, key)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store, or in memory)."""
    if _scheme(uri) != "sqlite":
        return None
    path = uri.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


_reachable: set[str] = set()


def check_reachable(uri: str, key: str = "logger.tracking_uri") -> None:
    """Fail fast, in one line naming the URI, when the tracking server or database cannot be
    reached: one try with a short timeout, instead of MLflow's minutes of retries. A local
    store (sqlite) needs no check; a URI is checked once per process."""
    if uri in _reachable:
        return
    scheme = _scheme(uri)
    if scheme in SERVER_SCHEMES:
        _probe_server(uri, key)
    elif scheme.split("+")[0] in DATABASE_PORTS:
        _probe_database(uri, key)
    _reachable.add(uri)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0)
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return f"no answer within {PROBE_TIMEOUT_S} s"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


def _probe_server(uri: str, key: str) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = redacted(uri)
    endpoint = "/api/2.0/mlflow/experiments/search"
    try:
        response = http_request(get_default_host_creds(uri), endpoint, "GET", max_retries=0, backoff_factor=0,
                                timeout=PROBE_TIMEOUT_S, params={"max_results": 1}, raise_on_status=False)
    except Exception as exc:  # noqa: BLE001 - refused, timed out, DNS, TLS: all one line
        raise ConfigError(f"{key}: MLflow tracking server {shown} is unreachable ({_reason(exc)}): "
                          "start it (make server) or fix the URI") from None
    status = response.status_code
    if status in (401, 403):
        raise ConfigError(f"{key}: MLflow tracking server {shown} refused the credentials (HTTP {status}): set "
                          "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    if status != 200:
        raise ConfigError(f"{key}: {shown} does not answer as an MLflow tracking server "
                          f"(HTTP {status} on {endpoint})")


def _probe_database(uri: str, key: str) -> None:
    from sqlalchemy.engine import make_url

    shown = redacted(uri)
    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        raise ConfigError(f"{key}: no database driver for {shown} ({exc}): {DRIVER_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - a malformed URL or an unknown dialect
        raise ConfigError(f"{key}: '{shown}' is not a database URI SQLAlchemy knows ({_reason(exc)})") from None
    if not url.host or url.host.startswith("/"):
        return  # a Unix socket: nothing to probe over TCP
    port = url.port or DATABASE_PORTS[url.get_backend_name()]
    try:
        socket.create_connection((url.host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"{key}: database {shown} is unreachable ({_reason(exc)})") from None


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None,
                      key: str = "logger.tracking_uri") -> str:
    """The id of experiment ``name``, created if missing. Race-free across machines: parallel
    jobs that both miss it both create it, the loser's RESOURCE_ALREADY_EXISTS sends it back to
    read the winner's; transient failures are retried. ``artifact_location`` None: wherever the
    server (or MLflow's default for the store) says."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    error = None
    for attempt in range(EXPERIMENT_ATTEMPTS):
        if attempt:
            time.sleep(min(0.25 * 2 ** attempt, 4.0))
        try:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                # MLflow 3's UI opens an untyped experiment on its GenAI overview; these hold runs
                return client.create_experiment(name, artifact_location=artifact_location,
                                                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING,
                                                      NOTE_TAG: EXPERIMENT_DESCRIPTION})
        except MlflowException as exc:
            if exc.error_code in FINAL_ERRORS:
                raise ConfigError(f"{key}: experiment '{name}' on {redacted(uri)}: {exc.error_code}: "
                                  f"{_reason(exc)}") from None
            error = exc  # RESOURCE_ALREADY_EXISTS (another job won the race): read it again
            continue
        except ImportError as exc:
            raise ConfigError(f"{key}: no database driver for {redacted(uri)} ({exc}): {DRIVER_HINT}") from None
        if experiment.lifecycle_stage != "active":
            raise ConfigError(f"{key}: experiment '{name}' is deleted on {redacted(uri)}: restore it "
                              f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                              "or choose another logger.experiment_name")
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:  # made before the tag
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        if NOTE_TAG not in experiment.tags:  # made before descriptions; one a user wrote is kept
            client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, EXPERIMENT_DESCRIPTION)
        return experiment.experiment_id
    raise ConfigError(f"{key}: cannot create or read experiment '{name}' on {redacted(uri)} after "
                      f"{EXPERIMENT_ATTEMPTS} tries: {_reason(error)}")


def _hydra_job():
    """The running Hydra job's config, or None outside a Hydra app (tests, library use)."""
    return HydraConfig.get() if HydraConfig.initialized() else None


PARENT_RUN_FILE = "parent_run_id"  # in a study's sweep directory: the study's MLflow parent run


def sweep_experiment_name(base: str, sweep_dir: str | Path | None = None) -> str:
    """In a Hydra multirun every job goes to one experiment named after the sweep."""
    if sweep_dir is None:
        if not in_multirun():
            return base
        sweep_dir = _hydra_job().sweep.dir
    return f"{base}-{Path(sweep_dir).name}"


# command-line overrides that say where a run goes, not what it is
NOT_IN_RUN_NAME = ("paths.", "hydra", "logger.", "experiment=", "study=", "replicates=")


def default_run_name(model: str | None = None, preset: str | None = None) -> str | None:
    """The preset (else the model's class) and what this run's command line or sweep changed,
    e.g. ``v2_14_2 mask.prob=0.3`` or ``SemiSupervisedVAE beta=anneal_extreme``: sweep children
    differ by name, and it is never MLflow's random word pair. :func:`name_with_dataset` adds the
    dataset once it is known."""
    overrides = job_tags().get("overrides", "")
    kept = [o for o in overrides.split() if not o.startswith(NOT_IN_RUN_NAME)]
    swept = _swept_keys()
    if swept is not None:  # a sweep's job: only what tells it from the others
        kept = [o for o in kept if o.split("=", 1)[0].lstrip("+~") in swept]
    base = preset or (str(model).rsplit(".", 1)[-1] if model else None)
    name = " ".join([base] * bool(base) + kept)[:200]
    return name or None


def _swept_keys() -> set[str] | None:
    """The keys a multirun sweeps (a study's ``hydra.sweeper.params`` and the command line's
    ``key=a,b``, read from the sweep's ``multirun.yaml`` as plain YAML), or None outside one."""
    hc = _hydra_job()
    if hc is None or hc.job.get("num") is None:
        return None
    keys = set((hc.sweeper.get("params") or {}).keys())
    try:
        saved = yaml.safe_load((Path(hc.sweep.dir) / "multirun.yaml").read_text())
        given = [str(o) for o in saved["hydra"]["overrides"]["task"]]
        keys |= {o.get_key_element() for o in OverridesParser.create().parse_overrides(given)
                 if o.is_sweep_override()}
    except Exception:  # noqa: BLE001 - no readable multirun.yaml (another launcher): the params only
        pass
    return {k.lstrip("+~") for k in keys}


def name_with_dataset(logger, dataset: str) -> None:
    """Append `` · <dataset>`` to the run's name (the dataset is known only once it is built)."""
    if not isinstance(logger, MLFlowLogger) or logger.run_id is None:
        return
    name = logger.experiment.get_run(logger.run_id).info.run_name or ""
    if not name.endswith(f" · {dataset}"):
        set_tags(logger, {"mlflow.runName": f"{name} · {dataset}".strip(" ·")[:250]})


def describe_run(logger, text: str) -> None:
    """The run's description (the run page's top): the end-of-run table, the headline scores."""
    set_tags(logger, {NOTE_TAG: text[:4900]})


def where_to_look(logger) -> list[str]:
    """The end of a run's output: its MLflow run, its experiment and how to open it in the UI."""
    if not isinstance(logger, MLFlowLogger) or logger.run_id is None:
        return []
    uri, run, experiment = logger.experiment.tracking_uri, logger.run_id, logger.experiment_id
    name = logger.experiment.get_experiment(experiment).name
    page = f"#/experiments/{experiment}/runs/{run}"  # the run's page
    if _scheme(uri) in ("http", "https"):
        how = f"open {uri.rstrip('/')}/{page}"
    elif sqlite_path(uri) == (Path(DEFAULT_UI_STORE).resolve()):
        how = f"make ui, then open {DEFAULT_UI_URL}/{page}"
    else:
        how = f"python -m lithovae.ui --store {redacted(uri)}, then open {DEFAULT_UI_URL}/{page}"
    return [f"MLflow run: {run} in experiment '{name}' ({redacted(uri)})", f"to see it: {how}"]


class RunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, except that the end of ``trainer.fit`` does not end the MLflow
    run: evaluation comes after it, and the run may say FINISHED only once its test metrics,
    metrics.json and predictor bundle are written. :func:`tracked_run` ends it (FINISHED,
    FAILED or KILLED); a process killed before that leaves it RUNNING, which is the truth."""

    def finalize(self, status: str = "success") -> None:
        return None  # no checkpoint scan either: the run logs the checkpoint it scores itself


def mlflow_logger(experiment_name: str = "lithovae", tracking_dir: str = "outputs/mlruns",
                  run_name: str | None = None, sweep_suffix: bool = True, tracking_uri: str | None = None,
                  uri_key: str = "logger.tracking_uri", model: str | None = None,
                  preset: str | None = None) -> RunLogger:
    """An MLFlowLogger on ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the local store
    under ``tracking_dir``; in a multirun, in the sweep's experiment (``sweep_suffix=False``:
    ``experiment_name`` is already the full name). The store is probed first: unreachable, it is
    a :class:`ConfigError` naming the URI (``uri_key`` names the config key), before any training."""
    if sweep_suffix:
        experiment_name = sweep_experiment_name(experiment_name)
    run_name = run_name or default_run_name(model, preset)
    uri, source = resolved_store(tracking_uri, tracking_dir, uri_key)
    artifacts, lock = None, contextlib.nullcontext()  # a server: its artifact store
    database = sqlite_path(uri)
    if database is not None:  # a local store: artifacts beside the database; parallel jobs
        # (joblib sweeps) would race to create the database itself
        artifacts = str(database.parent / "artifacts" / experiment_name)
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(database.parent / ".lock")
    with lock:
        ensure_experiment(uri, experiment_name, artifacts, source)
    logger = RunLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri,
                       artifact_location=artifacts)
    with global_uri(uri):  # Lightning sets MLflow's process-wide URI as it starts the run: not beyond it
        logger.experiment
    return logger


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


NOT_TEST_METRICS = ("final_losses",)  # dicts of metrics.json logged as train/val metrics already


def _metric_part(name) -> str:
    """A key as a part of an MLflow metric name: characters MLflow refuses become ``_``, and
    a part that would read as a path step (``.``, ``..``, empty) is ``_``."""
    return "/".join(p if p not in ("", ".", "..") else "_"
                    for p in re.sub(r"[^/\w.\- ]", "_", str(name)).split("/"))


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric scalars of ``metrics`` (not bools, not NaN: undefined), nested dicts
    flattened as ``key/subkey`` (e.g. ``recon_mse_group/Clay/Mud``)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            if k not in NOT_TEST_METRICS or prefix:
                out.update(flat_metrics(v, f"{prefix}{_metric_part(k)}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            out[f"{prefix}{_metric_part(k)}"] = float(v)
    return out


@rank_zero_only
def log_test_metrics(logger, metrics: dict, prefix: str = "test/") -> None:
    if not isinstance(logger, MLFlowLogger):
        return
    logger.log_metrics({f"{prefix}{k}": v for k, v in flat_metrics(metrics).items()})


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


@contextlib.contextmanager
def global_uri(uri: str):
    """MLflow's process-wide tracking URI set to ``uri`` for the block (what its fluent API,
    model logging and loading read), then restored exactly, with public API only: a URI set
    before is mirrored in ``MLFLOW_TRACKING_URI`` (``mlflow.set_tracking_uri`` sets both), so
    unsetting the URI and putting the variable back restores what ``get_tracking_uri`` said."""
    import mlflow

    variable = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # unset: the variable, put back below, speaks again
        if variable is None:
            os.environ.pop(ENV_URI, None)
        else:
            os.environ[ENV_URI] = variable


def log_dataset(logger, name: str, digest: str, source: str, context: str = "training") -> None:
    """The run's dataset as an MLflow dataset input (name, digest, source): the UI's Dataset column."""
    if not isinstance(logger, MLFlowLogger) or logger.run_id is None:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest, source_type="local",
                      source=json.dumps({"uri": str(source)}))
    logger.experiment.log_inputs(logger.run_id, datasets=[
        DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])
