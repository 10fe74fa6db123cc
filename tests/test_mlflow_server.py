"""The MLflow UI's server, started on 127.0.0.1, serves a study's runs and metrics over REST."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_study import _multirun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_mlflow_server_finds_a_studys_runs_with_metrics(tmp_path, shared_data_dir):
    _multirun(["study=alpha_grid", "trainer.max_epochs=1", "alpha.value=0.1,1.0"], tmp_path, shared_data_dir)
    store = tmp_path / "outputs" / "mlruns" / "mlflow.db"
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{store}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                pytest.fail("mlflow server did not come up on 127.0.0.1")
            time.sleep(0.5)
        exp = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        ids = {e["name"]: e["experiment_id"] for e in exp["experiments"]}
        (name,) = [n for n in ids if n.startswith("alpha_grid-sweep-")]
        # the UI opens a model-training experiment on its runs, not on the GenAI overview
        (experiment,) = [e for e in exp["experiments"] if e["name"] == name]
        assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
        runs = _post(f"{base}/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [ids[name]], "filter": "metrics.`test/ari_best` > -1"})
        found = runs["runs"]
        assert len(found) == 2
        for run in found:
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert {"test/ari_best", "test/auc_pooled", "test/r2_mean"} <= set(metrics)
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert params["alpha.value"] in ("0.1", "1.0")
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert run["info"]["run_name"] == params["preset"]  # the preset, never a random word pair
            (dataset,) = run["inputs"]["dataset_inputs"]
            assert dataset["dataset"]["name"] == "synthetic-small-seed0"
            assert dataset["dataset"]["digest"] == tags["dataset_checksum"]
            assert "synthetic-small-seed0" in dataset["dataset"]["source"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_run_without_a_preset_is_named_after_its_model_and_overrides():
    from lithovae.tracking import default_run_name

    assert default_run_name("lithovae.models.semisup.SemiSupervisedVAE") == "SemiSupervisedVAE"
    assert default_run_name(None) is None
