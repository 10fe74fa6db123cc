"""A run's MLflow model serves from its own directory alone: a fresh virtual environment gets
only the model's ``requirements.txt`` (registry packages; lithovae's code travels inside the
model), and that environment's ``mlflow models serve`` answers like the model in process.

The commands are the README's (download, venv, install; the server it starts as the README does).
Slow: the environment comes from the package registry and is removed at the end. The test prints
how long each step took. On the busy 2-core machine it took 5.5 min: building the environment
149 s, removing it 135 s, the server 11 s to answer /ping."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from lithovae.train import train
from tests.conftest import compose_train
from tests.test_readme import README
from tests.test_tracking_server import MLFLOW, background_server

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]


def _serving(venv: Path, model_dir: Path, log_path: Path, wait_s: float = 300):
    """``<venv>/bin/mlflow models serve`` of ``model_dir`` on 127.0.0.1, in its own process group,
    with nothing of this environment: MLflow starts ``uvicorn`` by name, the venv's comes first."""
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": f"{venv / 'bin'}{os.pathsep}{os.defpath}",
           "LANG": "C.UTF-8", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return background_server(["models", "serve", "-m", str(model_dir), "--env-manager", "local", "-w", "1"],
                             "/ping", log_path, env=env, wait_s=wait_s, mlflow=venv / "bin" / "mlflow")


def _as_json(frame: pd.DataFrame) -> list[dict]:
    """``frame``'s rows as JSON carries them (every float in full: repr round-trips)."""
    return json.loads(json.dumps(frame.astype(object).where(frame.notna(), None).to_dict(orient="records")))


def _invoke(base: str, frame: pd.DataFrame) -> pd.DataFrame:
    rows = _as_json(frame)
    payload = {"dataframe_split": {"columns": list(frame.columns), "data": [list(r.values()) for r in rows]}}
    req = urllib.request.Request(f"{base}/invocations", data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return pd.DataFrame(json.loads(resp.read())["predictions"])


def _readme_serving_commands() -> list[str]:
    """The README's "serving on another machine" block: download, venv, install, serve."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "mlflow artifacts download" in b)
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert len(commands) == 4 and "models serve" in commands[3], commands
    return commands


def _readme_request_file() -> str:
    """The file the README's first request posts (``curl ... -d @FILE``)."""
    (path,) = re.findall(r"curl -s 127\.0\.0\.1:5002/invocations .*? -d @(\S+)", README)
    return path


def _run(command: str, cwd: Path, env: dict, timeout: int) -> None:
    out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{command}: {out.stderr[-3000:]}"


@pytest.mark.slow  # minutes: a training, a virtual environment from the registry, a server
@pytest.mark.timeout(1800)
def test_a_fresh_venv_with_only_the_models_requirements_serves_it_like_predict(tmp_path, shared_data_dir):
    timings = {}
    started = time.monotonic()
    cfg = compose_train(["experiment=v2_14_2", "trainer.max_epochs=2"], tmp_path, shared_data_dir)
    metrics = train(cfg)
    timings["training"] = time.monotonic() - started

    # the README's serving commands as written, from the folder the run's outputs are in: the model
    # downloaded, a fresh venv built from its requirements.txt alone (its server is started below)
    download, make_venv, install, serve = _readme_serving_commands()
    step = time.monotonic()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    shell = {**clean, "PATH": f"{MLFLOW.parent}{os.pathsep}{clean.get('PATH', '')}",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    _run(download.replace("<run id>", metrics["mlflow_run_id"]), tmp_path, shell, 300)
    serve_words = shlex.split(serve)
    model_dir = tmp_path / serve_words[serve_words.index("-m") + 1]
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert not any(line.lower().startswith("lithovae") for line in requirements)
    timings["download"] = time.monotonic() - step

    venv = tmp_path / "serve-env"
    try:
        step = time.monotonic()
        _run(make_venv, tmp_path, clean, 300)
        _run(install, tmp_path, clean, 1500)
        timings["venv from requirements.txt"] = time.monotonic() - step
        # lithovae comes from the model (code/lithovae), not from the environment
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import lithovae"], capture_output=True,
                               text=True, env=clean, cwd=tmp_path)
        assert "No module named 'lithovae'" in probe.stderr

        # test bins of the run, one value missing (imputed, flagged), and the model's own example
        dataset = pd.read_parquet(metrics["dataset_path"]) if "dataset_path" in metrics else \
            pd.read_parquet(next(Path(shared_data_dir).rglob("synthetic-small-seed0*.parquet")))
        test = json.loads((tmp_path / "run" / "split.json").read_text())["boreholes"]["test"][:2]
        bins = dataset[dataset["borehole_id"].isin(test)][["borehole_id", "depth_m", *FEATURES]].reset_index(drop=True)
        bins.loc[3, "MS"] = np.nan
        path = list(sys.path)
        in_process = mlflow.pyfunc.load_model(str(model_dir))
        sys.path[:] = path  # loading put the model's code/ first
        example = in_process.input_example
        step = time.monotonic()
        with _serving(venv, model_dir, tmp_path / "serve.log") as base:
            timings["server up"] = time.monotonic() - step
            answers = [_invoke(base, frame) for frame in (bins, example)]
        for frame, answer in zip((bins, example), answers):
            expected = pd.DataFrame(_as_json(in_process.predict(frame)))
            # float32 latents from another process agree to ~1e-6 (threads sum in another order)
            pd.testing.assert_frame_equal(answer, expected, check_exact=False, rtol=1e-5, atol=1e-6)
        assert answers[0].loc[3, "MS_imputed"] and not answers[0].loc[2, "MS_imputed"]
        # the README's request: the model's own serving example, posted as a file
        assert (tmp_path / _readme_request_file()).is_file()
    finally:
        step = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # 1.6 GB
        timings["removing the venv"] = time.monotonic() - step
        timings["in all"] = time.monotonic() - started
        print("serve-anywhere timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
