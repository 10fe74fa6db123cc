"""hydra/launcher=slurm on a real single-node SLURM cluster started on this machine from the OS
packages (scripts/slurm-local.sh): sweeps, a study, preemption that requeues and resumes, and
the faults that stop a sweep before any job starts. Every test here is slow; without root or the
packages they skip, saying what is missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from tests.conftest import FAST_EVAL

pytestmark = pytest.mark.slow  # over 20 s each: `make test-slow`, which CI runs too

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
COMMON = ["data.scale=small", "trainer.enable_progress_bar=false", *FAST_EVAL]
EPOCHS = 5
STUDY = ["-m", "hydra/launcher=slurm", "study=masking_sweep", f"trainer.max_epochs={EPOCHS}", *COMMON]


def _free_port_pair() -> int:
    """A port P with P and P + 1 free (slurmctld, slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no two free ports in a row")


@pytest.fixture(scope="session")
def slurm_env():
    """The environment of a running local cluster (SLURM_CONF set), started once per session in a
    state dir of its own and stopped (by its own PIDs) at the end; skips where it cannot start."""
    missing = subprocess.run([str(SCRIPT), "missing"], capture_output=True, text=True, timeout=30)
    if missing.returncode != 0:
        pytest.skip(missing.stdout.strip() or missing.stderr.strip())
    state = Path(tempfile.mkdtemp(prefix="lithovae-slurm-", dir="/tmp"))  # short: munge's socket path
    script_env = {**os.environ, "LITHOVAE_SLURM_DIR": str(state), "LITHOVAE_SLURM_PORT": str(_free_port_pair())}
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, env=script_env, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "PYTHONPATH": str(ROOT)}
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, env=script_env, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        shutil.rmtree(state, ignore_errors=True)


def _train(args: list[str], root: Path, data_dir: Path, env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lithovae.train", *args, f"paths.root_dir={root}",
                             f"paths.data_dir={data_dir}"], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _finish(proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _sweep_dir(root: Path) -> Path:
    (sweep,) = (root / "outputs" / "multiruns" / "train").iterdir()
    return sweep


def _job_runs(root: Path) -> dict[str, list]:
    """The sweep jobs' MLflow runs (the study's parent aside), by sweep job number."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'outputs' / 'mlruns' / 'mlflow.db'}")
    runs: dict[str, list] = {}
    for e in client.search_experiments():
        for run in client.search_runs([e.experiment_id]):
            if "sweep_job" in run.data.tags:
                runs.setdefault(run.data.tags["sweep_job"], []).append(run)
    return runs


def _slurm_job(sweep: Path, num: int) -> str:
    """The SLURM id of sweep job ``num`` (``<array>_<num>``, or a plain id for a one-job sweep)."""
    names = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    return next(n for n in names if n.endswith(f"_{num}")) if any("_" in n for n in names) else names[0]


def _wait_for_epoch(ckpt: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                if torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"] >= epoch:
                    return
            except Exception:  # noqa: BLE001 - read while being replaced: try again
                pass
        time.sleep(0.2)
    raise AssertionError(f"{ckpt} never held epoch {epoch}: {proc.poll()=}")


def _start_requeued_now(job: str, env: dict, timeout: float = 120) -> None:
    """SLURM holds a requeued job about 2 minutes before it may start again (its BeginTime):
    once it is pending, let it start at once, to keep the test short."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                               env=env).stdout.strip()
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=env)
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job} was not requeued")


@pytest.fixture(scope="module")
def study_sweep(tmp_path_factory, shared_data_dir, slurm_env):
    """study=masking_sweep over three mask probabilities, through the SLURM launcher with its
    defaults (the CPU trainer: no GPU override), uninterrupted."""
    root = tmp_path_factory.mktemp("study")
    code, out, err = _finish(_train([*STUDY, "mask.prob=0.0,0.1,0.2"], root, shared_data_dir, slurm_env))
    assert code == 0, err[-3000:]
    return root, out, err


def test_a_three_job_study_runs_on_the_cluster_with_its_summary_and_figure(study_sweep):
    root, out, err = study_sweep
    sweep = _sweep_dir(root)
    runs = _job_runs(root)
    assert sorted(runs) == ["0", "1", "2"]
    assert all(len(r) == 1 and r[0].info.status == "FINISHED" for r in runs.values())
    for job in ("0", "1", "2"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["epochs_trained"] == EPOCHS and metrics["mlflow_run_id"] == runs[job][0].info.run_id
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 3 and set(summary["status"]) == {"FINISHED"}
    assert (sweep / "masking_sweep.png").stat().st_size > 0
    # the CPU default asks SLURM for no GPU, one CPU per job (threads=1), and SIGTERM before its time limit
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--gpus-per-node" not in script and "--cpus-per-task=1\n" in script and "--signal=TERM@120" in script
    assert "Bypassing sacct" not in err and "[slurm] 3 job(s) submitted" in err


def test_a_preempted_job_requeues_itself_and_resumes_to_the_uninterrupted_metrics(
        tmp_path, shared_data_dir, slurm_env, study_sweep):
    proc = _train([*STUDY, "mask.prob=0.0,0.1"], tmp_path, shared_data_dir, slurm_env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "outputs" / "multiruns").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        sweep = _sweep_dir(tmp_path)
        last = sweep / "1" / "checkpoints" / "last.ckpt"
        _wait_for_epoch(last, 2, proc)  # its third epoch done
        job = _slurm_job(sweep, 1)
        subprocess.run(["scancel", "--signal=TERM", job], check=True, env=slurm_env)
        _start_requeued_now(job, slurm_env)
        code, _, err = _finish(proc)
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    log = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert f"requeued (1 of 3): it resumes from {last}" in log and f"resuming from its own {last}" in log
    # one run dir, the uninterrupted run's metrics
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]
    resumed = json.loads((sweep / "1" / "metrics.json").read_text())
    reference = json.loads((_sweep_dir(study_sweep[0]) / "1" / "metrics.json").read_text())
    assert resumed["epochs_trained"] == EPOCHS
    assert (resumed["ari_best"], resumed["r2_mean"]) == (reference["ari_best"], reference["r2_mean"])
    # MLflow: the chain, as a manual resume leaves it
    runs = _job_runs(tmp_path)
    killed, finished = sorted(runs["1"], key=lambda r: r.info.start_time)
    assert killed.info.status == "KILLED" and killed.data.tags["stop_reason"] == "SIGTERM"
    assert finished.info.status == "FINISHED" and killed.data.tags["resumed_by_run"] == finished.info.run_id
    assert finished.data.tags["resumed_from_run"] == killed.info.run_id
    assert finished.data.tags["resumed_from_checkpoint"] == str(last)
    assert int(finished.data.tags["resumed_after_epoch"]) >= 2
    # every job's summary row, the resumed one with its final run
    summary = pd.read_csv(sweep / "summary.csv").set_index("job")
    assert list(summary["status"]) == ["FINISHED", "FINISHED"]
    assert summary.loc[1, "run_id"] == finished.info.run_id


def test_failed_jobs_fail_alone_and_the_sweep_lists_them(tmp_path, shared_data_dir, slurm_env):
    """Job #1 fails on its node (a GPU trainer on a CPU node); job #0 is stopped with no requeue
    left (max_num_timeout=0). Neither hangs the sweep, which ends listing both, exit 2."""
    proc = _train(["-m", "hydra/launcher=slurm", "hydra.launcher.max_num_timeout=0", "hydra.launcher.gpus_per_node=0",
                   "trainer.max_epochs=100", "trainer.accelerator=cpu,gpu", *COMMON], tmp_path, shared_data_dir,
                  slurm_env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "outputs" / "multiruns").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        sweep = _sweep_dir(tmp_path)
        _wait_for_epoch(sweep / "0" / "checkpoints" / "last.ckpt", 0, proc)
        job = _slurm_job(sweep, 0)
        subprocess.run(["scancel", "--signal=TERM", job], check=True, env=slurm_env)
        code, _, err = _finish(proc, timeout=300)
    finally:
        proc.kill()
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "Traceback" not in err
    assert errors[0].startswith(f"error: sweep job #0 (SLURM job {job}) failed: ended ")
    assert "not requeued: it has been requeued 0 time(s), hydra.launcher.max_num_timeout=0" in \
        (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert errors[1].startswith("error: sweep job #1") and "No supported gpu backend found" in errors[1]
    assert errors[2].startswith("error: 2 sweep job(s) failed (#0, #1)")
    runs = _job_runs(tmp_path)
    assert runs["0"][0].info.status == "KILLED" and runs["0"][0].data.tags["stop_reason"] == "SIGTERM"
    assert runs["1"][0].info.status == "FAILED" and runs["1"][0].data.tags["error"].startswith(
        "InstantiationException: Error in call to target 'pytorch_lightning.trainer.trainer.Trainer'")
    assert (sweep / "0" / "FAILED").exists() and (sweep / "1" / "FAILED").exists()


@pytest.mark.parametrize("override, line", [
    ("hydra.launcher.partition=nope", "error: hydra.launcher.partition: no partition 'nope' on this cluster "
                                      "(partitions: debug)"),
    ("hydra.launcher.mem_gb=100000", "error: hydra.launcher.mem_gb=100000: SLURM refused the job: "),
    ("trainer=gpu", "error: hydra.launcher.gpus_per_node=1, hydra.launcher.gres=None: SLURM refused the job: "
                    "Invalid generic resource (gres) specification"),
])
def test_a_setting_the_cluster_refuses_is_one_line_before_any_job(tmp_path, slurm_env, override, line):
    before = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True, text=True,
                            env=slurm_env).stdout
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", "-m", "hydra/launcher=slurm", override,
                           *COMMON, f"paths.root_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path,
                          env=slurm_env, timeout=120)
    assert proc.returncode == 2
    (error,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert error.startswith(line)
    assert not (tmp_path / "outputs" / "multiruns").exists()  # nothing written, nothing submitted
    assert subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True, text=True,
                          env=slurm_env).stdout == before


def test_no_slurm_commands_is_one_line_naming_them(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", "-m", "hydra/launcher=slurm", *COMMON,
                           f"paths.root_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: hydra/launcher=slurm: sbatch, squeue, sinfo, scontrol not found on PATH: "
                                   "run the sweep where SLURM's commands are (a login node), or try it on this "
                                   "machine: scripts/slurm-local.sh start")
    assert not (tmp_path / "outputs" / "multiruns").exists()
