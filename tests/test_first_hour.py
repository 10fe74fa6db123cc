"""A newcomer's first hour: a quiet log with a line per few epochs and per phase after training,
the MLflow run and how to open it, runs named by what they are, an experiment that says which
metrics answer which question, and no raw synthetic CSVs written to disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from lithovae import tracking
from lithovae.console import EpochLines, progress_callback
from lithovae.data.sources import SyntheticSource
from lithovae.train import train
from tests.conftest import compose_train, config_defaults

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(**build) -> SyntheticSource:
    data = config_defaults("data.scale=small")["data"]
    return SyntheticSource(scale="small", seed=0, build={**data["build"], **build}, transforms=None)


def test_the_synthetic_dataset_is_built_without_writing_raw_files(tmp_path):
    lines = []
    (tmp_path / "synthetic-small-seed0" / "raw").mkdir(parents=True)  # left by an earlier version
    path, _ = _synthetic().prepare(tmp_path, log=lines.append)
    root = tmp_path / "synthetic-small-seed0"
    assert path.exists() and not (root / "raw").exists()
    assert not list(tmp_path.rglob("*.csv")), "raw CSV files left behind"
    assert any("no raw files written" in line for line in lines)
    lines.clear()  # reused
    assert _synthetic().prepare(tmp_path, log=lines.append)[0] == path
    assert lines == [f"[lithovae.data] up to date: {path}"]
    # other build options: generated again and built, still without files
    other, _ = _synthetic(keep_incomplete=True).prepare(tmp_path, log=lines.append)
    assert other != path and other.exists() and not list(tmp_path.rglob("*.csv"))


def test_a_damaged_synthetic_dataset_is_rebuilt_from_a_fresh_generation(tmp_path):
    path, _ = _synthetic().prepare(tmp_path, log=lambda *_: None)
    path.write_bytes(path.read_bytes()[:100])
    lines = []
    again, _ = _synthetic().prepare(tmp_path, log=lines.append)
    assert again == path and any("damaged cached dataset" in line for line in lines)
    assert any("generating synthetic LILY" in line for line in lines)


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    from pytorch_lightning.callbacks import TQDMProgressBar

    assert isinstance(progress_callback(100, terminal=True), TQDMProgressBar)
    lines = progress_callback(100, terminal=False)
    assert isinstance(lines, EpochLines) and lines.every == 10
    assert progress_callback(3, terminal=False).every == 1


def test_a_run_prints_a_few_epoch_lines_its_phases_and_where_its_mlflow_run_is(tmp_path, shared_data_dir, capsys):
    cfg = compose_train(["trainer.max_epochs=20", "trainer.enable_progress_bar=true", "experiment=v2_6_7"],
                        tmp_path, shared_data_dir)
    metrics = train(cfg)
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{e}/20" for e in range(2, 21, 2)]
    assert all("train/loss" in line and "val/loss" in line and "beta" in line for line in epochs)
    phases = [line for line in out if line.startswith("after training: ")]
    for phase in ("scoring the test boreholes", "predictor bundle", "metrics to files and MLflow", "MLflow model"):
        assert any(line.startswith(f"after training: {phase} ") and line.endswith(" in all)") for line in phases), phase
    run_line = next(line for line in out if line.startswith("MLflow run: "))
    assert metrics["mlflow_run_id"] in run_line and "experiment 'lithovae'" in run_line
    assert any(line.startswith("to see it: python -m lithovae.ui --store sqlite:") for line in out)
    run = mlflow.MlflowClient(tracking.resolve_tracking_uri(None, cfg.paths.mlflow_dir)).get_run(metrics["mlflow_run_id"])
    assert run.info.run_name.startswith("v2_6_7") and run.info.run_name.endswith(" · synthetic-small-seed0")
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("**SYNTHETIC data: not a real-data result.** Test boreholes: ari_selected ")
    assert "raw features" in description and "scored weights:" in description
    experiment = mlflow.MlflowClient(tracking.resolve_tracking_uri(None, cfg.paths.mlflow_dir)).get_experiment(
        run.info.experiment_id)
    for metric in ("test/ari_gain", "test/ari_selected", "test/baseline_ari_selected", "test/r2_mean", "val_ari_selected"):
        assert metric in experiment.tags["mlflow.note.content"], metric


def test_lightning_and_mlflow_noise_is_silenced(caplog):
    """No device lines, litlogger advert or Lightning-internal deprecation in a run's output."""
    import logging
    import warnings

    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    from lithovae.console import quiet_third_party

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_third_party()
        with caplog.at_level(logging.INFO):
            rank_zero_info("GPU available: False, used: False")
            logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
            logging.getLogger("lithovae").info("kept")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning)
        warnings.warn("something else", DeprecationWarning)
    assert [r.getMessage() for r in caplog.records] == ["kept"]
    assert [str(w.message) for w in shown] == ["something else"]


def test_a_sweep_names_its_experiment_once_and_its_runs_by_what_differs(tmp_path):
    assert tracking.sweep_experiment_name("masking_sweep", tmp_path / "2026-12-07_04-12-00") == \
        "masking_sweep-2026-12-07_04-12-00"


@pytest.mark.parametrize("store, expected", [
    ("sqlite:///outputs/mlruns/mlflow.db", "make ui, then open http://127.0.0.1:5000/#/experiments/"),
    ("http://127.0.0.1:5001", "open http://127.0.0.1:5001/#/experiments/")])
def test_the_end_of_a_run_says_how_to_open_it(store, expected, monkeypatch):
    class Client:
        tracking_uri = store

        def get_experiment(self, _):
            return type("E", (), {"name": "lithovae"})

    from pytorch_lightning.loggers import MLFlowLogger

    logger = MLFlowLogger.__new__(MLFlowLogger)
    monkeypatch.setattr(MLFlowLogger, "experiment", property(lambda self: Client()))
    monkeypatch.setattr(MLFlowLogger, "run_id", property(lambda self: "abc"))
    monkeypatch.setattr(MLFlowLogger, "experiment_id", property(lambda self: "7"))
    monkeypatch.chdir(ROOT)
    first, second = tracking.where_to_look(logger)
    assert first.startswith("MLflow run: abc in experiment 'lithovae'")
    assert second == f"to see it: {expected}7/runs/abc"


SMALL = "data.scale=small trainer.max_epochs=2 eval.n_init=1 eval.figures=false eval.train_fit_samples=1000"


def _shell(command: str, cwd: Path, timeout: int = 900) -> str:
    """``command`` as a README reader types it: a fresh bash that activates the venv first."""
    out = subprocess.run(["bash", "-c", f"source {ROOT}/.venv/bin/activate && {command}"], cwd=cwd,
                         capture_output=True, text=True, timeout=timeout,
                         env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
    assert out.returncode == 0, f"{command}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _readme(prefix: str) -> str:
    from tests.test_readme import readme_commands

    return next(c.split("#")[0].strip() for c in readme_commands() if c.startswith(prefix))


@pytest.mark.slow
def test_the_readme_main_path_runs_as_written_from_any_directory(tmp_path):
    """Train, predict with the README's command, and the cv and study aliases, at small scale."""
    import pandas as pd

    log = _shell(f"python -m lithovae.train {SMALL} > train.log 2>&1; cat train.log", tmp_path)
    assert len(log.splitlines()) < 100 and "MLflow run: " in log
    run = next(line.split(": ", 1)[1] for line in log.splitlines() if line.startswith("run dir: "))
    data = next((tmp_path / "outputs" / "data").rglob("*.parquet"))
    pd.read_parquet(data).head(200).to_csv(tmp_path / "new_bins.csv", index=False)
    command = _readme("python -m lithovae.predict run=outputs/runs/train/<run> data=table data.path=new_bins.csv")
    _shell(command.replace("outputs/runs/train/<run>", run), tmp_path)
    predicted = next((tmp_path / "outputs" / "predictions").rglob("predictions.parquet"))
    assert len(pd.read_parquet(predicted)) == 200
    study = _readme("python -m lithovae.study masking_sweep")
    assert "data.scale=small" in study
    out = _shell(f"{study} eval.n_init=1 eval.figures=false eval.train_fit_samples=1000", tmp_path)
    assert "masking_sweep" in out
    cv = _readme("python -m lithovae.cv")
    _shell(f"{cv} {SMALL} datamodule.n_folds=2 'datamodule.fold=range(0,2)'", tmp_path)
    summaries = list((tmp_path / "outputs" / "multiruns").rglob("summary.csv"))
    assert len(summaries) == 2, summaries


def test_the_ui_without_runs_is_one_line(tmp_path, capsys):
    from lithovae import ui

    with pytest.raises(SystemExit) as stop:
        ui.main(["--store", f"sqlite:///{tmp_path}/none/mlflow.db"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/none/mlflow.db: no MLflow runs yet (run `make train` first)\n"
    assert not (tmp_path / "none").exists()
