"""A stopped or failed job says so: exit code, one `error:` line, and its MLflow run's status."""

from __future__ import annotations

import pytest
import os
import signal
import subprocess
import sys
import time

import mlflow
import torch

from tests.conftest import FAST_EVAL

COMMON = ["data.scale=small", "trainer.enable_progress_bar=false", *FAST_EVAL]


def _runs(root):
    client = mlflow.MlflowClient(f"sqlite:///{root / 'outputs' / 'mlruns' / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_sigterm_during_training_exits_143_with_one_line_and_a_killed_run(tmp_path, shared_data_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lithovae.train", *COMMON, "trainer.max_epochs=100000",
         f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}", f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env())
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted by SIGTERM" in errors[0] and "ckpt_path=" in errors[0]
    assert "Traceback" not in err
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] >= 0  # intact and current
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "SIGTERM"


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_a_multirun_with_one_bad_value_leaves_a_failed_run_beside_the_finished_ones(tmp_path, shared_data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.train", "-m", *COMMON, "trainer.max_epochs=1", "mask=random",
         "mask.prob=0.1,1.5,0.2", f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == "error: mask.prob: must be in [0, 1], got 1.5"
    assert "1 sweep job(s) failed (#1)" in errors[-1] and "Traceback" not in proc.stderr
    runs = {r.data.tags["overrides"].split("mask.prob=")[1].split()[0]: r for r in _runs(tmp_path)}
    assert {k: r.info.status for k, r in runs.items()} == {"0.1": "FINISHED", "1.5": "FAILED", "0.2": "FINISHED"}
    assert runs["1.5"].data.tags["error"] == "mask.prob: must be in [0, 1], got 1.5"


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_a_single_run_with_a_bad_value_leaves_a_failed_run_with_its_overrides_and_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.train", "trainer.max_epochs=-1", f"paths.root_dir={tmp_path}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: trainer.max_epochs: must be an integer >= 1, got -1"
    # the folder Hydra made says why it holds nothing but .hydra/
    assert {p.name for p in (tmp_path / "run").iterdir()} - {"train.log"} == {".hydra", "FAILED"}
    assert (tmp_path / "run" / "FAILED").read_text() == \
        "exit code 2: error: trainer.max_epochs: must be an integer >= 1, got -1\n"
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "trainer.max_epochs: must be an integer >= 1, got -1"
    assert "trainer.max_epochs=-1" in run.data.tags["overrides"]
    assert not (tmp_path / "outputs" / "data").exists()  # failed before any work
