"""A run's state tells the truth and a stopped run is never lost: what scores and resumes a run
is on disk before training, the MLflow run is FINISHED only once it is scored, a run killed in
any phase is scored by `evaluate` and completed by a resume; resume faults, a full disk and a
run that fails at start are one line."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lithovae.checkpointing import LAST
from lithovae.run import RUN_FILES
from lithovae.train import run, train
from tests.conftest import CONF_DIR, FAST_EVAL, compose_train

SETUP = ["trainer.max_epochs=2", "logger=none"]


class _SeenAtStart(pl.Callback):
    """The run folder's files when training starts, and the epochs trained."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.files, self.epochs = run_dir, None, []

    def on_train_start(self, trainer, pl_module):
        self.files = sorted(p.name for p in self.run_dir.iterdir())

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, shared_data_dir):
    """A trained run (2 epochs), as a stopped one is: its checkpoints and saved files."""
    tmp = tmp_path_factory.mktemp("stopped")
    seen = _SeenAtStart(tmp / "run")
    metrics = train(compose_train(SETUP, tmp, shared_data_dir), callbacks=[seen])
    return {"run_dir": tmp / "run", "last": tmp / "run" / "checkpoints" / LAST, "seen": seen, "metrics": metrics}


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _runs(root: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'outputs' / 'mlruns' / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_what_scores_and_resumes_a_run_is_on_disk_before_training_starts(stopped):
    assert set(RUN_FILES) <= set(stopped["seen"].files)
    assert "metrics.json" not in stopped["seen"].files  # written after scoring


def test_a_resume_with_another_architecture_is_one_line_naming_the_key(stopped, tmp_path, shared_data_dir, capsys):
    ckpt = f"ckpt_path={stopped['last']}"
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train([*SETUP, ckpt, "model.latent_dim=12"], tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    (line,) = _errors(capsys)
    assert line == (f"error: ckpt_path: {stopped['last']} cannot resume with this config ({stopped['run_dir']}"
                    "/config.yaml differs): model.latent_dim: the stopped run used 10, this run 12")
    assert not (tmp_path / "run").exists()  # refused before any work

    # the checkpoint alone, without its run's config: its weights are compared with the model's
    bare = tmp_path / "elsewhere" / "last.ckpt"
    bare.parent.mkdir()
    shutil.copy(stopped["last"], bare)
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train([*SETUP, f"ckpt_path={bare}", "model.latent_dim=12"], tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    (line,) = _errors(capsys)
    assert line.startswith(f"error: ckpt_path: {bare} does not fit this run's model: model.")
    assert "in the file and [12, 16] in the model" in line or "in the file and [16, 12] in the model" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_resume_with_max_epochs_below_the_checkpoint_is_one_line(stopped, tmp_path, shared_data_dir, capsys):
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train(["trainer.max_epochs=1", "logger=none", f"ckpt_path={stopped['last']}"],
                          tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    assert _errors(capsys) == [f"error: trainer.max_epochs: 1 is below the 2 epochs {stopped['last']} already "
                               "holds (epoch 1, 0-based): resume with trainer.max_epochs >= 2"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("saved", ["config.yaml", ".hydra/config.yaml"])
def test_a_planted_target_in_the_stopped_runs_config_is_refused_by_the_resume(
        saved, stopped, tmp_path, shared_data_dir, capsys):
    marker = tmp_path / "marker"
    copy = tmp_path / "copied_run"
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(stopped["last"], copy / "checkpoints" / LAST)
    config = yaml.safe_load((stopped["run_dir"] / "config.yaml").read_text())
    config["model"]["dropout"] = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    (copy / saved).parent.mkdir(exist_ok=True)
    (copy / saved).write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train([*SETUP, f"ckpt_path={copy / 'checkpoints' / LAST}"], tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    (line,) = _errors(capsys)
    assert line.startswith(f"error: {copy / saved}: model.dropout._target_: 'builtins.open' is refused")
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("policy", ["final", "val_loss", "val_recon", "val_ari"])
def test_a_resume_of_a_run_killed_while_scoring_scores_at_once_what_the_run_would_have(
        policy, tmp_path, shared_data_dir):
    common = [*SETUP, f"checkpoint={policy}", *(["checkpoint.every_n_epochs=1"] if policy == "val_ari" else [])]
    first = train(compose_train(common, tmp_path, shared_data_dir))
    (tmp_path / "run" / "metrics.json").unlink()  # killed while scoring: trained, never scored
    scored = _evaluate(tmp_path / "run", shared_data_dir)  # the weights its policy scores
    for key in ("evaluated_checkpoint", "evaluated_epoch", "ari_best", "r2_mean"):
        assert scored[key] == first[key], key
    seen = _SeenAtStart(tmp_path / "resumed")
    resumed = train(compose_train([*common, f"ckpt_path={tmp_path / 'run' / 'checkpoints' / LAST}",
                                   f"paths.run_dir={tmp_path / 'resumed'}"], tmp_path, shared_data_dir),
                    callbacks=[seen])
    assert seen.epochs == [] and seen.files is None  # nothing left to train
    for key in ("evaluated_checkpoint", "evaluated_epoch", "evaluated_global_step", "epochs_trained", "ari_best",
                "r2_mean"):
        assert resumed[key] == first[key], key
    assert resumed["final_losses"] == pytest.approx(first["final_losses"])
    assert (tmp_path / "resumed" / "metrics.json").exists()


def test_a_resume_of_an_early_stopped_run_scores_at_once(tmp_path, shared_data_dir):
    # a rising beta makes the validation loss rise: patience 1 stops within a few epochs
    common = ["trainer.max_epochs=30", "logger=none", "early_stopping.enabled=true", "early_stopping.patience=1"]
    first = train(compose_train(common, tmp_path, shared_data_dir))
    assert first["epochs_trained"] < 30
    seen = _SeenAtStart(tmp_path / "resumed")
    resumed = train(compose_train([*common, f"ckpt_path={tmp_path / 'run' / 'checkpoints' / LAST}",
                                   f"paths.run_dir={tmp_path / 'resumed'}"], tmp_path, shared_data_dir),
                    callbacks=[seen])
    assert seen.epochs == [] and resumed["evaluated_epoch"] == first["evaluated_epoch"]
    assert resumed["epochs_trained"] == first["epochs_trained"]


def _fills_the_disk(self, filepath, weights_only=False, storage_options=None):
    Path(filepath).write_bytes(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, "No space left on device", str(filepath))


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_a_failed_run_and_nothing_half_written(
        tmp_path, shared_data_dir, capsys, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "save_checkpoint", _fills_the_disk)
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train(["trainer.max_epochs=1"], tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert _errors(capsys) == [f"error: {ckpt_dir / LAST}: No space left on device (ENOSPC)"]
    assert list(ckpt_dir.iterdir()) == []  # neither a temporary file nor a half checkpoint
    (failed,) = _runs(tmp_path)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"] == f"{ckpt_dir / LAST}: No space left on device (ENOSPC)"


def test_a_read_only_folder_while_writing_metrics_is_one_line_and_a_failed_run(
        tmp_path, shared_data_dir, capsys, monkeypatch):
    write_text = Path.write_text

    def read_only(self, *args, **kwargs):
        if self.name.startswith(".metrics.json."):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train(["trainer.max_epochs=1", "export.mlflow_model=false"], tmp_path, shared_data_dir))
    assert stopped_run.value.code == 2
    run_dir = tmp_path / "run"
    assert _errors(capsys) == [f"error: {run_dir / 'metrics.json'}: Read-only file system (EROFS)"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".") or p.name == "metrics.json"]
    (failed,) = _runs(tmp_path)
    assert failed.info.status == "FAILED"


@pytest.mark.parametrize("code, name, reason", [(errno.ENOSPC, "ENOSPC", "No space left on device"),
                                                (errno.EDQUOT, "EDQUOT", "Disk quota exceeded"),
                                                (errno.EROFS, "EROFS", "Read-only file system"),
                                                (errno.EACCES, "EACCES", "Permission denied")])
def test_file_system_faults_are_one_line_naming_the_file_written(code, name, reason):
    from lithovae.cli import user_error

    # the temporary names of atomic_write and save_atomically name the file being written
    for written, named in [("/r/.metrics.json.k2j_x9a1.tmp", "/r/metrics.json"), ("/r/.last.ckpt.tmp", "/r/last.ckpt"),
                           ("/r/clusters.csv", "/r/clusters.csv")]:
        assert user_error(OSError(code, reason, written)) == f"{named}: {reason} ({name})"
    assert user_error(OSError(errno.EIO, "Input/output error", "/r/x")) is None  # not the user's: a traceback


def test_a_file_tracking_uri_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped_run:
        run(compose_train(["logger.tracking_uri=file:///nowhere/mlruns"], tmp_path))
    assert stopped_run.value.code == 2
    (line,) = _errors(capsys)
    assert line.startswith("error: logger.tracking_uri: 'file:///nowhere/mlruns' is a folder store, which MLflow 3 "
                           "no longer writes: use logger.tracking_dir=/nowhere/mlruns")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


# a training whose evaluation starts (the marker file says so) and then takes its time: the
# process is stopped while scoring, whatever the machine's speed
STALLED_SCORING = """
import pathlib, runpy, sys, time
import lithovae.run as lifecycle
marker = pathlib.Path(sys.argv.pop(1))
def stalled(*args, **kwargs):
    marker.touch()
    time.sleep(300)
lifecycle.score_model = stalled
runpy.run_module("lithovae.train", run_name="__main__", alter_sys=True)  # python -m lithovae.train
"""


def _stopped_while_scoring(tmp_path: Path, data_dir: Path, signum: int) -> subprocess.Popen:
    script, marker = tmp_path / "stalled.py", tmp_path / "scoring"
    script.write_text(STALLED_SCORING)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker), "data.scale=small", "trainer.enable_progress_bar=false",
         *FAST_EVAL, "trainer.max_epochs=2", "export.mlflow_model=false", f"paths.root_dir={tmp_path}",
         f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 180
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1][-3000:]
    (running,) = _runs(tmp_path)
    assert running.info.status == "RUNNING"  # trained, not scored: not FINISHED
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc, err


def _evaluate(run_dir: Path, data_dir: Path) -> dict:
    from lithovae.evaluate import evaluate_run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"run_dir={run_dir}", f"paths.data_dir={data_dir}",
                                                          "log_mlflow=false"])
    return evaluate_run(cfg)


def _resume(tmp_path: Path, data_dir: Path, *extra: str) -> dict:
    return train(compose_train(["trainer.max_epochs=2", "export.mlflow_model=false", *extra,
                                f"ckpt_path={tmp_path / 'run' / 'checkpoints' / LAST}",
                                f"paths.run_dir={tmp_path / 'resumed'}"], tmp_path, data_dir))


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_sigkill_while_scoring_leaves_a_run_not_finished_that_evaluate_scores_and_a_resume_completes(
        tmp_path, shared_data_dir):
    proc, _ = _stopped_while_scoring(tmp_path, shared_data_dir, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = _runs(tmp_path)
    assert killed.info.status == "RUNNING"  # it cannot say more; never FINISHED
    assert not (tmp_path / "run" / "metrics.json").exists()

    scored = _evaluate(tmp_path / "run", shared_data_dir)
    assert scored["evaluated_checkpoint"] == LAST and scored["evaluated_epoch"] == 1

    resumed = _resume(tmp_path, shared_data_dir)
    assert resumed["evaluated_epoch"] == 1 and resumed["ari_best"] == pytest.approx(scored["ari_best"])
    assert (tmp_path / "resumed" / "metrics.json").exists()
    runs = {r.info.run_id: r for r in _runs(tmp_path)}
    (new,) = [r for r in runs.values() if r.info.run_id != killed.info.run_id]
    assert new.info.status == "FINISHED" and "test/ari_best" in new.data.metrics
    assert runs[killed.info.run_id].info.status == "KILLED"  # the resume says what became of it
    assert runs[killed.info.run_id].data.tags["resumed_by_run"] == new.info.run_id


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
def test_sigterm_while_scoring_exits_143_with_a_killed_run_and_a_usable_folder(tmp_path, shared_data_dir):
    proc, err = _stopped_while_scoring(tmp_path, shared_data_dir, signal.SIGTERM)
    assert proc.returncode == 143
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: interrupted by SIGTERM; stopped while scoring") and "Traceback" not in err
    (killed,) = _runs(tmp_path)
    assert killed.info.status == "KILLED" and killed.data.tags["stop_reason"] == "SIGTERM"
    assert f"python -m lithovae.evaluate run_dir={tmp_path / 'run'}" in killed.data.tags["error"]

    scored = _evaluate(tmp_path / "run", shared_data_dir)
    assert scored["evaluated_epoch"] == 1
    resumed = _resume(tmp_path, shared_data_dir, "logger=none")
    assert resumed["ari_best"] == pytest.approx(scored["ari_best"])
    assert torch.load(tmp_path / "resumed" / "checkpoints" / LAST, weights_only=True)["epoch"] == 1


def test_a_contrastive_run_resumes_though_its_pseudo_label_buffer_starts_empty(tmp_path, shared_data_dir):
    # the buffer is empty in a fresh model and filled in training: any length fits it on resume
    first = ["model=contrastive", "logger=none"]
    train(compose_train([*first, "trainer.max_epochs=1"], tmp_path / "a", shared_data_dir))
    last = tmp_path / "a" / "run" / "checkpoints" / LAST
    assert torch.load(last, weights_only=True)["state_dict"]["model.pseudo_labels"].numel() > 0
    metrics = train(compose_train([*first, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "b",
                                  shared_data_dir))
    assert metrics["evaluated_epoch"] == 1 and metrics["epochs_trained"] == 2
