"""Runs logged to a team's MLflow tracking server (`logger.tracking_uri` or MLFLOW_TRACKING_URI):
a single training and a joblib sweep against `mlflow server --serve-artifacts`, found over REST
with their test metrics and a checkpoint downloaded through the server; nothing in a local
mlruns folder. An unreachable server is one `error:` line in seconds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lithovae import tracking
from lithovae.errors import ConfigError
from tests.conftest import FAST_EVAL

REPO = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).parent / "mlflow"
UNREACHABLE = "http://127.0.0.1:1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without a tracking URI of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != tracking.ENV_URI}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@contextlib.contextmanager
def background_server(args: list[str], ready_path: str, log_path: Path, env: dict[str, str] | None = None,
                      wait_s: float = 120, mlflow: Path = MLFLOW):
    """``mlflow <args> --host 127.0.0.1 --port P`` in its own process group (``mlflow``: which
    environment's); yields its URL once ``ready_path`` answers 200, and stops it (and the workers
    it started) afterwards."""
    port = _free_port()
    log = open(log_path, "w")
    server = subprocess.Popen([str(mlflow), *args, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env or _env(), start_new_session=True,
                              cwd=log_path.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + wait_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}{ready_path}", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow {args[0]} did not come up: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _mlflow_server(backend_uri: str, artifacts: Path):
    """`mlflow server` on 127.0.0.1 with served artifacts; yields its URL once /health answers."""
    return background_server(["server", "--workers", "1", "--backend-store-uri", backend_uri, "--serve-artifacts",
                              "--artifacts-destination", str(artifacts)], "/health",
                             artifacts.parent / f"mlflow-server-{artifacts.name}.log")


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _get(url: str, **params) -> bytes:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}" if params else url, timeout=30) as resp:
        return resp.read()


def _train(args: list[str], root: Path, data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.train", *args, "data.scale=small", "trainer.max_epochs=1",
         f"paths.root_dir={root}", f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false", *FAST_EVAL],
        capture_output=True, text=True, cwd=root, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _server_runs(base: str, experiment: str) -> list[dict]:
    found = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 1000})["experiments"]
    ids = [e["experiment_id"] for e in found if e["name"] == experiment]
    assert ids, f"no experiment {experiment!r} on the server: {[e['name'] for e in found]}"
    return _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": ids, "max_results": 100})["runs"]


def _check_run_on_server(base: str, run: dict, artifacts: Path, run_dir: Path) -> None:
    """FINISHED, test metrics logged, artifacts on the server's store, the checkpoint downloaded
    through the server byte for byte the one in the run dir."""
    info = run["info"]
    assert info["status"] == "FINISHED"
    metrics = {m["key"] for m in run["data"].get("metrics", [])}
    assert {"test/ari_best", "test/r2_mean", "test/baseline_ari_best"} <= metrics
    assert info["artifact_uri"].startswith("mlflow-artifacts:"), info["artifact_uri"]
    listed = json.loads(_get(f"{base}/api/2.0/mlflow/artifacts/list", run_id=info["run_id"]))["files"]
    (ckpt,) = [f["path"] for f in listed if f["path"].endswith(".ckpt")]
    assert {"metrics.json", "config.yaml"} <= {f["path"] for f in listed}
    remote = info["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/")
    data = _get(f"{base}/api/2.0/mlflow-artifacts/artifacts/{remote}/{ckpt}")
    assert data == (run_dir / "checkpoints" / ckpt).read_bytes()
    assert list(artifacts.rglob(f"{info['run_id']}/artifacts/{ckpt}")), "not in the server's artifact store"


def _no_local_store(root: Path) -> None:
    assert not (root / "outputs" / "mlruns").exists()
    assert not [p for p in root.rglob("*") if p.name in ("mlruns", "mlartifacts", "mlflow.db")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tracking server on a SQLite database with served artifacts: (url, artifact store)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with _mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts") as base:
        yield base, tmp / "artifacts"


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_a_training_and_a_joblib_sweep_log_to_the_server(server, tmp_path, shared_data_dir):
    base, artifacts = server
    single = tmp_path / "single"
    single.mkdir()
    _train([f"logger.tracking_uri={base}", "eval.figures=false"], single, shared_data_dir,
           _env(MLFLOW_TRACKING_URI=UNREACHABLE))  # the config's URI wins over the environment
    (run,) = _server_runs(base, "lithovae")
    (run_dir,) = (single / "outputs" / "runs" / "train").iterdir()
    _check_run_on_server(base, run, artifacts, run_dir)
    assert "tracking_uri" not in run["info"]["run_name"]
    # re-scoring the run logs to the same server
    proc = subprocess.run([sys.executable, "-m", "lithovae.evaluate", f"run_dir={run_dir}", f"tracking_uri={base}",
                           f"paths.root_dir={single}", f"paths.data_dir={shared_data_dir}"],
                          capture_output=True, text=True, cwd=single, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (evaluation,) = _server_runs(base, "lithovae-evaluate")
    assert evaluation["info"]["status"] == "FINISHED" and evaluation["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    assert "test/ari_best" in {m["key"] for m in evaluation["data"]["metrics"]}
    listed = json.loads(_get(f"{base}/api/2.0/mlflow/artifacts/list", run_id=evaluation["info"]["run_id"]))["files"]
    assert [f["path"] for f in listed] == ["metrics.json"]
    _no_local_store(single)

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _train(["-m", "hydra/launcher=joblib", "mask=random", "mask.prob=0.1,0.2", "eval.figures=false"],
           sweep, shared_data_dir, _env(MLFLOW_TRACKING_URI=base))
    (sweep_dir,) = (sweep / "outputs" / "multiruns" / "train").iterdir()
    runs = _server_runs(base, f"lithovae-{sweep_dir.name}")
    assert len(runs) == 2
    probs = set()
    for run in runs:
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        probs.add(params["mask.prob"])
        job = {t["key"]: t["value"] for t in run["data"]["tags"]}["sweep_job"]
        _check_run_on_server(base, run, artifacts, sweep_dir / job)
    assert probs == {"0.1", "0.2"}
    _no_local_store(sweep)


def test_experiment_creation_survives_losing_the_race(server, monkeypatch):
    """Another job created the experiment between our look-up and our create: the server's
    RESOURCE_ALREADY_EXISTS sends us back to read it; racing threads all get one id."""
    import mlflow

    base, _ = server
    existing = mlflow.MlflowClient(base).create_experiment("raced")
    real = mlflow.MlflowClient.get_experiment_by_name
    missed = []

    def stale_first(self, name):
        if not missed:
            missed.append(name)
            return None  # what a job saw just before another created it
        return real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", stale_first)
    assert tracking.ensure_experiment(base, "raced") == existing and missed == ["raced"]
    monkeypatch.undo()

    ids, errors = [], []

    def create():
        try:
            ids.append(tracking.ensure_experiment(base, "parallel"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(ids) == 4 and len(set(ids)) == 1


@pytest.mark.parametrize("how", ["config", "environment, multirun"])
def test_an_unreachable_server_is_one_line_in_seconds(tmp_path, how):
    if how == "config":
        args, env = [f"logger.tracking_uri={UNREACHABLE}"], _env()
    else:  # checked once, before the first job
        args, env = ["-m", "hydra/launcher=joblib", "mask=random", "mask.prob=0.1,0.2"], _env(MLFLOW_TRACKING_URI=UNREACHABLE)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", *args, "data.scale=small", f"paths.root_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0 and elapsed < 30, (proc.returncode, elapsed)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and UNREACHABLE in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "outputs" / "data").exists()  # failed before any work


def test_evaluate_checks_the_server_before_evaluating(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lithovae.evaluate", f"run_dir={tmp_path / 'missing'}",
                           f"tracking_uri={UNREACHABLE}", f"paths.root_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=_env())
    assert proc.returncode == 2 and time.monotonic() - start < 30
    assert proc.stderr.strip().startswith("error: tracking_uri: ") and UNREACHABLE in proc.stderr


def test_tracking_uri_wins_over_the_environment_which_wins_over_tracking_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    local = f"sqlite:///{(tmp_path / 'store').resolve() / 'mlflow.db'}"
    assert tracking.resolve_tracking_uri(None, tmp_path / "store") == local
    monkeypatch.setenv(tracking.ENV_URI, "http://env-server:5000")
    assert tracking.resolve_tracking_uri(None, tmp_path / "store") == "http://env-server:5000"
    assert tracking.resolve_tracking_uri("http://config-server:5000", tmp_path / "store") == "http://config-server:5000"
    monkeypatch.setenv(tracking.ENV_URI, "")
    assert tracking.resolve_tracking_uri(None, tmp_path / "store") == local
    # the config's URI is what the logger is built from
    assert tracking.resolve_tracking_uri("postgresql+psycopg://me@db/mlflow") == "postgresql+psycopg://me@db/mlflow"


def test_a_uri_in_the_config_holds_no_password_and_is_a_uri():
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD") as err:
        tracking.check_uri("https://me:s3cret@mlflow.example.org")
    assert "s3cret" not in str(err.value)
    tracking.check_uri("https://me:s3cret@mlflow.example.org", saved=False)  # from the environment
    with pytest.raises(ConfigError, match="logger.tracking_dir"):
        tracking.check_uri("outputs/mlruns")
    for uri in ("http://127.0.0.1:5001", "sqlite:///x/mlflow.db", "postgresql+psycopg://me@db/mlflow"):
        tracking.check_uri(uri)


def test_an_unreachable_database_is_one_line_in_seconds():
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
        tracking.check_reachable(f"postgresql+psycopg://me@127.0.0.1:{port}/mlflow")
    assert time.monotonic() - start < 30


# ---- a PostgreSQL-backed server (slow; only where PostgreSQL can be started here) ----

def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


@contextlib.contextmanager
def _postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth); yields its port. As root it
    runs as the `postgres` user (initdb refuses root)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL not found (no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin)")
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and no runuser to run PostgreSQL as the `postgres` user")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="lithovae-pg-"))  # not under pytest's root-only tmp dirs
    if as_user:
        os.chown(home, user.pw_uid, user.pw_gid)
    port = _free_port()
    data = home / "data"

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)

    try:
        init = pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "lithovae", "--auth=trust", "-E", "UTF8")
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        start = pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"), "-w", "-t", "60",
                   "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
        try:
            yield port
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_a_postgresql_backed_server_keeps_a_training(tmp_path, shared_data_dir):
    with _postgres() as port:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=lithovae dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        store = f"postgresql+psycopg://lithovae@127.0.0.1:{port}/mlflow"
        tracking.check_reachable(store)  # the probe finds a live database
        with _mlflow_server(store, tmp_path / "artifacts") as base:
            root = tmp_path / "client"
            root.mkdir()
            _train([f"logger.tracking_uri={base}", "eval.figures=false"], root, shared_data_dir, _env())
            (run,) = _server_runs(base, "lithovae")
            (run_dir,) = (root / "outputs" / "runs" / "train").iterdir()
            _check_run_on_server(base, run, tmp_path / "artifacts", run_dir)
            _no_local_store(root)
        with psycopg.connect(f"host=127.0.0.1 port={port} user=lithovae dbname=mlflow") as conn:
            (count,) = conn.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'").fetchone()
        assert count == 1  # the run is in PostgreSQL, not in a file beside the server
