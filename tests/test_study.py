"""Studies: one command writes a summary CSV and a figure and logs them to MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from lithovae.study import StudyError, history_table, load_spec, main, run_study
from lithovae.data import reference
from tests.conftest import FAST_EVAL

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name", ["masking_sweep", "beta_schedules", "alpha_grid", "latent_size", "history"])
def test_every_study_spec_is_valid(name):
    spec = load_spec(EXPERIMENTS / f"{name}.yaml")
    assert spec["name"] == name


def test_masking_sweep_spec_is_the_studys_51_runs_of_50_epochs():
    spec = load_spec(EXPERIMENTS / "masking_sweep.yaml")
    probs = spec["grid"]["mask.prob"]
    assert len(probs) == 51 and probs[0] == 0.0 and probs[-1] == 0.5
    assert "trainer.max_epochs=50" in spec["base"]


def test_fast_masking_sweep_writes_summary_figure_and_mlflow_runs(tmp_path, shared_data_dir):
    result = run_study(EXPERIMENTS / "masking_sweep.yaml",
                       ["data.scale=small", "trainer.max_epochs=1", f"paths.root_dir={tmp_path}",
                        f"paths.data_dir={shared_data_dir}", "trainer.enable_progress_bar=false", *FAST_EVAL],
                       grid_override=["mask.prob=0.0,0.3"])
    summary = pd.read_csv(result["dir"] / "summary.csv")
    assert list(summary["mask.prob"]) == [0.0, 0.3]
    assert {"r2_GRA", "r2_B", "ari_best", "dataset"} <= set(summary.columns)
    assert (summary["dataset"] == "synthetic-small-seed0").all()
    figure = result["dir"] / "masking_sweep.png"
    assert figure.stat().st_size > 10_000
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study-masking_sweep")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3  # two training runs and the summary
    summary_run = [r for r in runs if r.info.run_name == "masking_sweep-summary"][0]
    assert {a.path for a in client.list_artifacts(summary_run.info.run_id)} == {"summary.csv", "masking_sweep.png"}
    assert all("test/r2_GRA" in r.data.metrics for r in runs if r is not summary_run)


def test_history_table_puts_published_values_beside_ours():
    summary = pd.DataFrame({"run": ["v2_6_7", "v2_14", "hybrid_unsup"], "dataset": "synthetic-x",
                            "ari_best": [0.2, 0.3, 0.1], "r2_mean": [0.9, 0.8, 0.7], "auc_pooled": [None, 0.9, None],
                            "active_dims": [4, 5, 6]})
    table = history_table(summary, reference.read("published_results.csv"))
    row = table[(table["preset"] == "v2_6_7") & (table["metric"] == "ari_best")].iloc[0]
    assert row["published"] == pytest.approx(0.196) and row["ours"] == pytest.approx(0.2)
    assert row["dataset"] == "synthetic-x"
    assert (table[table["preset"] == "hybrid_unsup"]["published"].isna()).all()


def test_bad_spec_fails_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: []\ngird: {a: [1]}\n")
    with pytest.raises(SystemExit) as err:
        main([str(bad)])
    assert err.value.code == 2
    assert "unknown key 'gird'" in capsys.readouterr().err
    with pytest.raises(StudyError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
