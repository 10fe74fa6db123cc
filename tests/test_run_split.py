"""``lithovae.evaluate`` scores a run on its own split: the boreholes of each part come by id
from the run's ``split.json``, whatever rows were added to or removed from the data since;
boreholes the run never saw are only ever in ``split=unseen``; the run's boreholes the data
lacks are named in one warning line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lithovae.data.splits import borehole_split
from lithovae.errors import DataError, RunDirError
from lithovae.evaluate import evaluate_run
from lithovae.train import train
from tests.conftest import CONF_DIR, FAST_EVAL
from tests.test_las import _well_log_csv

COLUMNS = ["data.borehole=WELL", "data.depth=DEPTH", "data.label=LITHOLOGY", "data.features=[GR,RHOB,NPHI]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 1-epoch run trained on a table of 20 wells (data=table)."""
    root = tmp_path_factory.mktemp("run-split")
    table = _well_log_csv(root / "logs.csv", n_wells=20)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "data=table", f"data.path={table}", *COLUMNS, f"paths.root_dir={root}",
            f"paths.run_dir={root / 'run'}", f"paths.data_dir={root / 'data'}", "trainer.max_epochs=1",
            "logger=none", "trainer.enable_progress_bar=false", *FAST_EVAL])
    metrics = train(cfg)
    split = json.loads((root / "run" / "split.json").read_text())["boreholes"]
    return {"root": root, "run_dir": root / "run", "table": table, "rows": pd.read_csv(table),
            "metrics": metrics, "split": split, "seed": cfg.seed}


def _evaluate(run: dict, tmp_path: Path, *overrides: str, run_dir: Path | None = None) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"run_dir={run_dir or run['run_dir']}", f"paths.root_dir={tmp_path}",
            f"paths.data_dir={tmp_path / 'data'}", "log_mlflow=false", *overrides])
    return evaluate_run(cfg)


def _on_table(run: dict, tmp_path: Path, frame: pd.DataFrame) -> list[str]:
    """data= overrides scoring ``frame`` written as a table of its own."""
    path = tmp_path / "logs.csv"
    frame.to_csv(path, index=False)
    return ["data=table", f"data.path={path}", *COLUMNS]


def _new_well(run: dict) -> pd.DataFrame:
    return pd.read_csv(_well_log_csv(Path(run["root"]) / "new.csv", n_wells=1, seed=7)).assign(WELL="NEW-1")


def test_a_well_appended_to_the_runs_table_is_never_scored_as_test(run, tmp_path, capsys):
    """The probe: one new well appended to the run's own table. Recomputing the split would now
    put other wells in test; the run's own test wells are scored, and the new one only alone."""
    table, pristine = run["table"], run["rows"]
    new = _new_well(run)
    grown = pd.concat([pristine, new], ignore_index=True)
    recomputed = borehole_split(grown["WELL"].astype(str), seed=run["seed"])
    assert sorted(recomputed["test"]) != sorted(run["split"]["test"])  # the case is a real one
    grown.to_csv(table, index=False)
    try:
        metrics = _evaluate(run, tmp_path, "split=test")
        unseen = _evaluate(run, tmp_path, "split=unseen")
    finally:
        pristine.to_csv(table, index=False)
    assert metrics["split_from"] == "split.json" and metrics["boreholes"] == run["split"]["test"]
    assert metrics["n_test"] == run["metrics"]["n_test"]
    assert unseen["boreholes"] == ["NEW-1"] and unseen["n_test"] == len(new)
    assert "warning" not in capsys.readouterr().out  # nothing of the run's is missing


def test_the_other_parts_and_all_are_the_runs_own(run, tmp_path):
    frame = pd.concat([run["rows"], _new_well(run)], ignore_index=True)
    data = _on_table(run, tmp_path, frame)
    for split, parts in (("val", ["val"]), ("all", ["train", "val", "test"])):
        metrics = _evaluate(run, tmp_path, f"split={split}", *data)
        expected = sorted(b for p in parts for b in run["split"][p])
        assert metrics["boreholes"] == expected and "NEW-1" not in metrics["boreholes"]
        assert metrics["n_test"] == int(frame["WELL"].isin(expected).sum())


def test_test_wells_missing_from_the_data_are_named_in_one_warning_line(run, tmp_path, capsys):
    gone = run["split"]["test"][0]
    frame = run["rows"][run["rows"]["WELL"] != gone]
    metrics = _evaluate(run, tmp_path, "split=test", *_on_table(run, tmp_path, frame))
    n_test = len(run["split"]["test"])
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warnings == [f"[lithovae.evaluate] warning: 1 of the run's {n_test} test boreholes are not "
                        f"in table-logs and are not scored: {gone}"]
    assert metrics["boreholes"] == run["split"]["test"][1:]
    assert metrics["n_test"] == run["metrics"]["n_test"] - int((run["rows"]["WELL"] == gone).sum())


def test_no_test_well_left_or_no_unseen_well_is_one_line(run, tmp_path):
    frame = run["rows"][~run["rows"]["WELL"].isin(run["split"]["test"])]
    with pytest.raises(DataError) as err:
        _evaluate(run, tmp_path, "split=test", *_on_table(run, tmp_path, frame))
    message = str(err.value)
    assert message.startswith(f"split=test: none of the run's {len(run['split']['test'])} test boreholes "
                              "is in table-logs (") and "split=unseen scores" in message
    with pytest.raises(DataError) as err:
        _evaluate(run, tmp_path, "split=unseen", *_on_table(run, tmp_path, run["rows"]))
    assert str(err.value) == ("split=unseen: every borehole of table-logs is in the run's train, val "
                              "or test part; none is unseen")
    assert "\n" not in message


@pytest.fixture
def copied_run(run, tmp_path) -> Path:
    shutil.copytree(run["run_dir"], tmp_path / "run", ignore=shutil.ignore_patterns("evaluations"))
    return tmp_path / "run"


@pytest.mark.parametrize("text, said", [
    ("{not json", "unreadable (JSONDecodeError: "),
    ('["train"]', "no 'boreholes' key"),
    ('{"boreholes": {"train": ["A"], "val": "B", "test": ["C"]}}',
     "'boreholes' must map train, val and test to lists of borehole ids"),
    ('{"boreholes": {"train": ["A"], "val": ["B"], "test": ["A"]}}', "borehole 'A' is in both"),
])
def test_a_damaged_split_json_is_one_line_naming_it(run, tmp_path, copied_run, text, said):
    (copied_run / "split.json").write_text(text)
    with pytest.raises(RunDirError) as err:
        _evaluate(run, tmp_path, run_dir=copied_run)
    message = str(err.value)
    assert message.startswith(f"{copied_run / 'split.json'}: {said}") and "\n" not in message


def test_a_run_without_split_json_is_said_and_scored_on_a_recomputed_split(run, tmp_path, copied_run, capsys):
    (copied_run / "split.json").unlink()
    metrics = _evaluate(run, tmp_path, run_dir=copied_run)
    out = capsys.readouterr().out
    assert f"[lithovae.evaluate] warning: {copied_run}: no split.json" in out
    assert metrics["split_from"] == "recomputed" and metrics["boreholes"] == run["split"]["test"]
    with pytest.raises(RunDirError, match="split=unseen needs it"):
        _evaluate(run, tmp_path, "split=unseen", run_dir=copied_run)


def test_predict_input_rows_without_a_borehole_id_are_dropped_counted_and_said(run, tmp_path, capsys):
    """Prediction input goes through the same source: such rows are dropped, counted in the
    summary's preparation steps and said in one line, never predicted as another well."""
    from lithovae.predict import predict

    frame = _new_well(run).drop(columns="LITHOLOGY")
    frame.loc[frame.index[:5], "WELL"] = None
    frame.loc[frame.index[5:8], "WELL"] = " "
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[
            f"run={run['run_dir']}", "data=table", f"data.path={path}", *COLUMNS, "figures=false",
            f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", f"out={tmp_path / 'pred'}"])
    summary = predict(cfg)
    assert summary["preparation"]["dropped_missing_borehole"] == 8
    assert summary["n_bins"] == len(frame) - 8 and summary["n_boreholes"] == 1
    assert "[lithovae.data] new.csv: 8 of 40 rows have no borehole id (column 'WELL' empty or NaN): " \
           "dropped" in capsys.readouterr().out
