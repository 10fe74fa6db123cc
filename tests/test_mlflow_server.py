"""The MLflow UI's server, started on 127.0.0.1, serves a study's runs and metrics over REST."""

from __future__ import annotations

import pytest

from tests.test_study import _multirun
from tests.test_tracking_server import _mlflow_server, _post


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_mlflow_server_finds_a_studys_runs_with_metrics(tmp_path, shared_data_dir):
    _multirun(["study=alpha_grid", "trainer.max_epochs=1", "alpha.value=0.1,1.0"], tmp_path, shared_data_dir)
    store = tmp_path / "outputs" / "mlruns" / "mlflow.db"
    with _mlflow_server(f"sqlite:///{store}", tmp_path / "served-artifacts") as base:
        exp = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        ids = {e["name"]: e["experiment_id"] for e in exp["experiments"]}
        (name,) = [n for n in ids if n.startswith("alpha_grid-20")]  # <study>-<time>
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
            # the preset, what the sweep changed and the dataset; never a random word pair
            assert run["info"]["run_name"] == f"{params['preset']} alpha.value={params['alpha.value']} · synthetic-small-seed0"
            (dataset,) = run["inputs"]["dataset_inputs"]
            assert dataset["dataset"]["name"] == "synthetic-small-seed0"
            assert dataset["dataset"]["digest"] == tags["dataset_checksum"]
            assert "synthetic-small-seed0" in dataset["dataset"]["source"]


def test_a_run_without_a_preset_is_named_after_its_model_and_overrides():
    from lithovae.tracking import default_run_name

    assert default_run_name("lithovae.models.semisup.SemiSupervisedVAE") == "SemiSupervisedVAE"
    assert default_run_name(None) is None
    assert default_run_name("lithovae.models.vae.VAE", "v2_6_7") == "v2_6_7"  # the preset names it


def test_experiments_are_model_training_experiments_when_created_and_when_found(tmp_path):
    import mlflow

    from lithovae import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    new = tracking.ensure_experiment(uri, "made-here")
    old = client.create_experiment("made-before")  # an experiment from before the tag
    tracking.ensure_experiment(uri, "made-before")
    for experiment_id in (new, old):
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
