"""lithovae.predict and the run's MLflow model: a trained run applied to new bins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lithovae.errors import LithovaeError
from lithovae.predict import predict
from lithovae.tracking import global_uri
from lithovae.train import train
from tests.conftest import CONF_DIR, compose_train
from tests.test_tracking_server import MLFLOW, _env, background_server

MODEL_NAME = "lithology-test"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data_dir):
    """v2_14_2 (semi-supervised, masked) trained 2 epochs, logged and registered in a local store."""
    root = tmp_path_factory.mktemp("trained")
    environment = os.environ.get("MLFLOW_TRACKING_URI")
    cfg = compose_train(["experiment=v2_14_2", "trainer.max_epochs=2", f"export.register_as={MODEL_NAME}"],
                        root, shared_data_dir)
    path = list(sys.path)
    metrics = train(cfg)
    # training (Lightning's logger, the model's logging) left no tracking URI behind for the next run,
    # nor the logged model's code/ (where MLflow checked the input example) on sys.path
    assert os.environ.get("MLFLOW_TRACKING_URI") == environment
    assert sys.path == path
    dataset = Path(metrics["dataset_path"]) if "dataset_path" in metrics else \
        next(Path(shared_data_dir).rglob("synthetic-small-seed0*.parquet"))
    store = root / "outputs" / "mlruns"
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])  # the only one
    split = json.loads((root / "run" / "split.json").read_text())["boreholes"]
    return {"root": root, "run_dir": root / "run", "metrics": metrics, "dataset": dataset, "store": store,
            "run_id": run.info.run_id, "test_boreholes": split["test"], "data_dir": shared_data_dir}


def _bins(trained, boreholes=None, labels: bool = False) -> pd.DataFrame:
    frame = pd.read_parquet(trained["dataset"])
    if boreholes is not None:
        frame = frame[frame["borehole_id"].isin(boreholes)].reset_index(drop=True)
    columns = ["borehole_id", "depth_m", "GRA", "MS", "NGR", "R", "G", "B"] + ["principal"] * labels
    return frame[columns]


def _predict_cfg(trained, tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="predict", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
            f"paths.mlflow_dir={trained['store']}", *overrides])


def _run_predict(trained, tmp_path: Path, csv: Path, *overrides: str, run: str | None = None):
    cfg = _predict_cfg(trained, tmp_path, f"run={run or trained['run_dir']}", "data=table",
                       f"data.path={csv}", *overrides)
    return predict(cfg)


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_predict_writes_one_row_per_bin_and_a_log_per_borehole(trained, tmp_path):
    bins = _bins(trained)
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)  # no label column
    summary = _run_predict(trained, tmp_path, csv, "out=" + str(tmp_path / "pred"))
    table = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert len(table) == len(bins) == summary["n_bins"]
    expected = {"borehole_id", "depth_m", "cluster", "cluster_top_lithology", "cluster_purity",
                "predicted_lithology", "lithology_top1", "probability_top3", "recon_error", "anomaly_score",
                "anomaly_percentile", "GRA_imputed", "B_out_of_range", "n_out_of_range"}
    assert expected | {f"z_{j}" for j in range(10)} <= set(table.columns)
    meta = json.loads((trained["run_dir"] / "predictor" / "predictor.json").read_text())
    assert table["cluster"].between(0, meta["clustering"]["k"] - 1).all()
    assert table["anomaly_percentile"].between(0, 100).all() and np.isfinite(table["anomaly_score"]).all()
    probabilities = table[["probability_top1", "probability_top2", "probability_top3"]].to_numpy()
    assert (np.diff(probabilities, axis=1) <= 0).all() and (probabilities.sum(1) <= 1 + 1e-9).all()
    assert (table["predicted_lithology"] == table["lithology_top1"]).all()
    figures = sorted((tmp_path / "pred" / "figures").glob("*.png"))
    assert len(figures) == bins["borehole_id"].nunique() == summary["n_boreholes"]
    assert "scores" not in summary and summary["weights"]["evaluated_epoch"] == 1


def test_the_saved_clusterer_reproduces_the_runs_score_on_its_test_boreholes(trained, tmp_path):
    """Predicting the run's own labeled test boreholes gives back the run's ``ari_inductive``:
    the same weights, scaler, clusterer (fitted on the training boreholes) and bins (what
    evaluate also prints, refitted, beside it)."""
    csv = tmp_path / "test.csv"
    _bins(trained, trained["test_boreholes"], labels=True).to_csv(csv, index=False)
    summary = _run_predict(trained, tmp_path, csv, "figures=false", "format=csv")
    scores = summary["scores"]
    assert scores["ari_saved_clusterer"] == pytest.approx(trained["metrics"]["ari_inductive"], abs=1e-9)
    assert scores["ari_best"] == pytest.approx(trained["metrics"]["ari_best"], abs=1e-6)
    assert scores["baseline_ari_best"] == pytest.approx(trained["metrics"]["baseline_ari_best"], abs=1e-6)
    assert Path(summary["table"]).suffix == ".csv" and Path(summary["table"]).exists()


def test_the_mlflow_model_returns_the_table_of_predict(trained, tmp_path):
    bins = _bins(trained, trained["test_boreholes"])
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)
    summary = _run_predict(trained, tmp_path, csv, "figures=false")
    expected = pd.read_parquet(summary["table"])
    for uri in (f"runs:/{trained['run_id']}/model", f"models:/{MODEL_NAME}/1"):
        with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"):
            model = mlflow.pyfunc.load_model(uri)
        got = model.predict(bins)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)
    # and lithovae.predict takes the run id and the registered model as well as the run dir
    for run in (trained["run_id"], f"models:/{MODEL_NAME}/1"):
        again = _run_predict(trained, tmp_path, csv, "figures=false", f"out={tmp_path / run[-6:]}", run=run)
        pd.testing.assert_frame_equal(pd.read_parquet(again["table"]), expected)


def test_the_logged_model_has_a_signature_naming_the_features_and_is_registered(trained):
    client = mlflow.MlflowClient(f"sqlite:///{trained['store'] / 'mlflow.db'}")
    with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"):
        info = mlflow.models.get_model_info(f"runs:/{trained['run_id']}/model")
    assert info.signature.inputs.input_names() == ["borehole_id", "depth_m", "GRA", "MS", "NGR", "R", "G", "B"]
    assert "cluster" in info.signature.outputs.input_names()
    (version,) = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert version.run_id == trained["run_id"]
    # the run lists the model as its output: the UI's Models column
    assert client.get_run(trained["run_id"]).outputs.model_outputs[0].model_id == info.model_id


def test_the_logged_model_carries_test_bins_as_example_its_code_and_registry_requirements(trained, tmp_path):
    with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{trained['run_id']}/model", dst_path=str(tmp_path)))
    example = model.input_example
    features = ["GRA", "MS", "NGR", "R", "G", "B"]
    assert list(example.columns) == ["borehole_id", "depth_m", *features] and 1 <= len(example) <= 5
    (borehole,) = set(example["borehole_id"])
    assert borehole in trained["test_boreholes"]
    # real bins: the dataset's values at those depths (to the 6 significant digits kept)
    data = _bins(trained, [borehole]).set_index("depth_m")
    for _, row in example.iterrows():
        (depth,) = [d for d in data.index if abs(d - row["depth_m"]) < 1e-9]
        np.testing.assert_allclose(row[features].to_numpy(float), data.loc[depth, features].to_numpy(float),
                                   rtol=1e-5)
    assert len(model.predict(example)) == len(example)
    # lithovae's code inside the model; requirements the registry has, at the versions constraints.txt pins
    assert (local / "code" / "lithovae" / "prediction" / "model_code.py").is_file()
    pins = {name.lower(): version for name, _, version in (
        line.partition("==") for line in (Path(CONF_DIR).parents[1] / "constraints.txt").read_text().split())}
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and not any(line.lower().startswith("lithovae") for line in requirements)
    for line in requirements:
        name, _, version = line.partition("==")
        assert pins.get(name.lower()) == version, line
    conda = (local / "conda.yaml").read_text()
    assert all(f"  - {line}\n" in conda for line in requirements)
    assert "-r requirements.txt" in (local / "python_env.yaml").read_text()
    # what requirements.txt leaves out is not needed: the model loads and predicts without it
    blocked = ("pytorch_lightning", "lightning", "lightning_fabric", "umap", "matplotlib")
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}:\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import mlflow.pyfunc\n"
            f"model = mlflow.pyfunc.load_model({str(local)!r})\n"
            "print(len(model.predict(model.input_example)))\n"
            "assert not any(m.split('.')[0] in ('pytorch_lightning', 'umap', 'matplotlib') for m in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == str(len(example)), out.stderr[-2000:]


def test_logging_the_model_does_not_map_every_installed_file_to_its_package(trained, monkeypatch, tmp_path):
    """MLflow checks a model's requirements against the environment by mapping every installed
    file to its package (~1.8 s of a run's end); the requirements are read from this environment,
    so lithovae's logging skips that check and the model it logs is the same."""
    from types import SimpleNamespace

    from mlflow.utils import requirements_utils

    from lithovae.prediction.mlflow_model import log_model

    calls = []
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # not computed yet
    scan = requirements_utils.importlib_metadata.packages_distributions
    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions",
                        lambda: calls.append(1) or scan())
    client = mlflow.MlflowClient(f"sqlite:///{trained['store'] / 'mlflow.db'}")
    run = client.create_run(client.get_run(trained["run_id"]).info.experiment_id)
    info = log_model(SimpleNamespace(experiment=client, run_id=run.info.run_id), trained["run_dir"] / "predictor")
    assert calls == []
    with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"):
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path)))
        original = Path(mlflow.artifacts.download_artifacts(f"runs:/{trained['run_id']}/model",
                                                            dst_path=str(tmp_path / "original")))
    assert (local / "requirements.txt").read_text() == (original / "requirements.txt").read_text()
    # the check is skipped while the model is logged only
    from mlflow.utils import environment
    for module in (environment, mlflow.pyfunc):
        assert module.warn_dependency_requirement_mismatches is requirements_utils.warn_dependency_requirement_mismatches


def _served(model_uri: str, tracking_uri: str, log_path: Path):
    """`mlflow models serve` of ``model_uri`` on 127.0.0.1, in this environment (no conda or
    virtualenv); yields its URL once /ping answers."""
    # the scoring server is uvicorn, started by name: this environment's comes first
    env = {**_env(), "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return background_server(["models", "serve", "-m", model_uri, "--env-manager", "local", "-w", "1"], "/ping",
                             log_path, env, wait_s=180)


def test_a_served_registered_model_answers_invocations_like_predict(trained, tmp_path):
    bins = _bins(trained, trained["test_boreholes"][:2])
    bins.loc[3, "MS"] = np.nan  # a missing value: imputed, flagged
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)
    expected = pd.read_parquet(_run_predict(trained, tmp_path, csv, "figures=false")["table"])
    # JSON carries 15 significant digits (the CSV all 17): float32 latents agree to ~1e-7
    payload = {"dataframe_split": json.loads(bins.to_json(orient="split", index=False, double_precision=15))}
    with _served(f"models:/{MODEL_NAME}/1", f"sqlite:///{trained['store'] / 'mlflow.db'}",
                 tmp_path / "serve.log") as base:
        req = urllib.request.Request(f"{base}/invocations", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = pd.DataFrame(json.loads(resp.read())["predictions"])
    assert len(answer) == len(bins)
    assert (answer["cluster"].to_numpy() == expected["cluster"].to_numpy()).all()
    for column in [f"z_{j}" for j in range(10)] + ["anomaly_score", "anomaly_percentile", "MS"]:
        np.testing.assert_allclose(answer[column].to_numpy(float), expected[column].to_numpy(float),
                                   rtol=1e-5, atol=1e-6)
    assert bool(answer.loc[3, "MS_imputed"]) and not bool(answer.loc[2, "MS_imputed"])
    assert (answer["predicted_lithology"] == expected["predicted_lithology"]).all()


# -- bad input: one line naming what is wrong, nothing written ---------------------------------------

def _fails(trained, tmp_path, csv, *overrides, run=None) -> str:
    with pytest.raises(LithovaeError) as info:
        _run_predict(trained, tmp_path, csv, f"out={tmp_path / 'out'}", *overrides, run=run)
    assert not (tmp_path / "out").exists()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_missing_feature_column_names_it(trained, tmp_path):
    csv = tmp_path / "bins.csv"
    _bins(trained).drop(columns=["MS"]).to_csv(csv, index=False)
    assert "missing column 'MS'" in _fails(trained, tmp_path, csv)


def test_other_features_than_the_runs_name_both_lists(trained, tmp_path):
    csv = tmp_path / "bins.csv"
    _bins(trained).to_csv(csv, index=False)
    message = _fails(trained, tmp_path, csv, "data.features=[GRA,MS,NGR]")
    assert "['GRA', 'MS', 'NGR']" in message and "['GRA', 'MS', 'NGR', 'R', 'G', 'B']" in message


def test_a_non_numeric_depth_names_the_column_and_row(trained, tmp_path):
    bins = _bins(trained).astype({"depth_m": object})
    bins.loc[5, "depth_m"] = "deep"
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)
    message = _fails(trained, tmp_path, csv)
    assert "'depth_m'" in message and "'deep'" in message


def test_an_empty_file_and_a_well_without_values_are_errors(trained, tmp_path):
    csv = tmp_path / "empty.csv"
    _bins(trained).head(0).to_csv(csv, index=False)
    assert "no data rows" in _fails(trained, tmp_path, csv)
    bins = _bins(trained).head(20)
    bins.loc[:, ["GRA", "MS", "NGR", "R", "G", "B"]] = np.nan
    bins.to_csv(csv, index=False)
    assert "no finite value" in _fails(trained, tmp_path, csv)


def test_values_far_outside_the_training_range_are_flagged_not_fatal(trained, tmp_path):
    bins = _bins(trained, trained["test_boreholes"][:1]).reset_index(drop=True)
    bins.loc[0, "GRA"] = 50.0  # g/cm3: no rock
    bins.loc[1, "NGR"] = -1e6
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)
    summary = _run_predict(trained, tmp_path, csv, "figures=false")
    table = pd.read_parquet(summary["table"])
    assert bool(table.loc[0, "GRA_out_of_range"]) and bool(table.loc[1, "NGR_out_of_range"])
    assert summary["n_values_out_of_range"] >= 2 and len(table) == len(bins)
    assert table.loc[0, "anomaly_percentile"] == 100.0  # and it is the most anomalous bin there is


def test_a_las_file_without_a_depth_curve_is_named(trained, tmp_path):
    las = tmp_path / "wells" / "a.las"
    las.parent.mkdir()
    las.write_text("~Version\nVERS. 2.0 : CWLS LAS 2.0\nWRAP. NO : one line per step\n~Well\n"
                   "NULL. -999.25 : NULL VALUE\nWELL. W : WELL\n~Curve Information\nTIME.S :\nGRA.G/C3 :\n"
                   "MS.SI :\nNGR.CPS :\nR. :\nG. :\nB. :\n~ASCII\n0 1.5 10 20 50 50 50\n1 1.6 11 21 51 51 51\n")
    with pytest.raises(LithovaeError, match="a.las: no depth/index curve"):
        predict(_predict_cfg(trained, tmp_path, f"run={trained['run_dir']}", "data=las",
                             f"data.path={las.parent}", f"out={tmp_path / 'out'}"))
    assert not (tmp_path / "out").exists()


def test_runs_that_cannot_predict_say_why(trained, tmp_path):
    import shutil

    csv = tmp_path / "bins.csv"
    _bins(trained).head(50).to_csv(csv, index=False)
    old = tmp_path / "old-run"
    shutil.copytree(trained["run_dir"], old, ignore=shutil.ignore_patterns("predictor"))
    assert "has no predictor/" in _fails(trained, tmp_path, csv, run=str(old))
    newer = tmp_path / "newer-run"
    shutil.copytree(trained["run_dir"], newer)
    meta = json.loads((newer / "predictor" / "predictor.json").read_text())
    (newer / "predictor" / "predictor.json").write_text(json.dumps({**meta, "format": 99}))
    assert "format 99" in _fails(trained, tmp_path, csv, run=str(newer))
    assert "not a lithovae run directory" in _fails(trained, tmp_path, csv, run=str(tmp_path))
    assert "neither a run directory" in _fails(trained, tmp_path, csv, run="no-such-run")


def test_the_command_line_exits_2_with_one_line(trained, tmp_path):
    csv = tmp_path / "bins.csv"
    _bins(trained).drop(columns=["NGR"]).to_csv(csv, index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.predict", f"run={trained['run_dir']}", "data=table", f"data.path={csv}",
         f"paths.root_dir={tmp_path}", f"out={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {csv}: missing column 'NGR'"
    assert not (tmp_path / "out").exists()


def test_logging_a_model_leaves_mlflows_global_tracking_uri_as_it_was(monkeypatch, tmp_path):
    """Model logging and loading set MLflow's process-wide URI (and MLFLOW_TRACKING_URI) for a
    moment: afterwards both are as before, so a later run in the process logs where it should."""
    inner = f"sqlite:///{tmp_path / 'inner.db'}"
    with global_uri(inner):
        assert mlflow.get_tracking_uri() == inner and os.environ["MLFLOW_TRACKING_URI"] == inner
    assert "MLFLOW_TRACKING_URI" not in os.environ
    outer = f"sqlite:///{tmp_path / 'outer.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", outer)
    with global_uri(inner):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == outer and mlflow.get_tracking_uri() == outer
