"""Faults of lithovae.predict and of the served model: an output never replaces an input, an
existing output is replaced only when asked, an output that cannot be written is one line
before any work, a full disk leaves nothing half-written; figure names never collide; the
served model answers valid JSON, says why a bin has no cluster, answers a bad request with
one line and no stack trace, and predicts large requests in bounded chunks."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from lithovae.errors import ConfigError
from lithovae.evaluation import figures
from lithovae.outputs import refuse_inputs
from lithovae.predict import predict
from lithovae.prediction import rows
from lithovae.prediction.predictor import Predictor
from lithovae.tracking import global_uri
from tests.test_predict import MODEL_NAME, _bins, _predict_cfg, _run_predict, _served, trained  # noqa: F401

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]


def _csv(trained, tmp_path: Path, name: str = "bins.csv", boreholes=None) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    _bins(trained, boreholes).to_csv(path, index=False)
    return path


def _refused(trained, tmp_path, csv, *overrides, run=None) -> str:
    """predict refuses with one ``out:`` line, before the bins are prepared."""
    with pytest.raises(ConfigError) as info:
        _run_predict(trained, tmp_path, csv, "figures=false", *overrides, run=run)
    message = str(info.value)
    assert message.startswith("out: ") and "\n" not in message, message
    assert not (tmp_path / "data").exists()  # paths.data_dir: nothing prepared, no work done
    return message


# -- outputs never destroy inputs ---------------------------------------------------------------

def test_out_equal_to_the_input_is_refused_and_the_input_stays_byte_identical(trained, tmp_path):
    csv = _csv(trained, tmp_path)
    before = csv.read_bytes()
    assert "is data.path" in _refused(trained, tmp_path, csv, f"out={csv}")
    (tmp_path / "link.csv").symlink_to(csv)  # the same file under another name
    os.link(csv, tmp_path / "hard.csv")
    for other in ("link.csv", "hard.csv"):
        assert "is data.path" in _refused(trained, tmp_path, csv, f"out={tmp_path / other}")
    assert csv.read_bytes() == before


def test_the_command_line_refuses_out_equal_to_its_input_with_exit_2(trained, tmp_path):
    csv = _csv(trained, tmp_path)
    before = csv.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "lithovae.predict", f"run={trained['run_dir']}", "data=table", f"data.path={csv}",
         f"paths.root_dir={tmp_path}", f"out={csv}", "figures=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: out: {csv} is data.path") and "Traceback" not in proc.stderr
    assert csv.read_bytes() == before


def test_outputs_inside_the_run_the_bundle_or_the_prepared_data_are_refused(trained, tmp_path):
    csv = _csv(trained, tmp_path)
    run_dir = trained["run_dir"]
    saved = {p: p.read_bytes() for p in (run_dir / "predictor").iterdir()}
    assert "lies inside the predictor bundle" in _refused(
        trained, tmp_path, csv, f"out={run_dir / 'predictor' / 'clusters.csv'}")
    assert "lies inside the run directory" in _refused(trained, tmp_path, csv, f"out={run_dir / 'predictions'}")
    # the bundle given as run=, an output into it
    assert "lies inside the predictor bundle" in _refused(
        trained, tmp_path, csv, f"out={run_dir / 'predictor' / 'p.parquet'}", run=str(run_dir / "predictor"))
    assert "paths.data_dir" in _refused(trained, tmp_path, csv, f"out={tmp_path / 'data' / 'p.parquet'}")
    assert {p: p.read_bytes() for p in (run_dir / "predictor").iterdir()} == saved


def test_an_output_inside_a_data_path_folder_is_refused(trained, tmp_path):
    wells = tmp_path / "wells"
    wells.mkdir()
    (wells / "a.las").write_text("~Version\n")  # never read: refused before the data is
    with pytest.raises(ConfigError, match=r"^out: .*pred\.csv lies inside data\.path "):
        predict(_predict_cfg(trained, tmp_path, f"run={trained['run_dir']}", "data=las", f"data.path={wells}",
                             f"out={wells / 'pred.csv'}"))
    assert sorted(p.name for p in wells.iterdir()) == ["a.las"]


def test_refuse_inputs_knows_files_folders_and_folders_holding_inputs(tmp_path):
    data = tmp_path / "in" / "bins.csv"
    data.parent.mkdir()
    data.write_text("x\n")
    inputs = [("data.path", data, None), ("the cache", tmp_path / "cache", True)]  # a folder not made yet
    refuse_inputs([tmp_path / "out.csv"], [tmp_path / "figures"], inputs)  # elsewhere: fine
    with pytest.raises(ConfigError, match="holds data.path"):
        refuse_inputs([], [tmp_path / "in"], inputs)  # figures written into the input's folder
    with pytest.raises(ConfigError, match="lies inside the cache"):
        refuse_inputs([tmp_path / "cache" / "x" / "p.csv"], [], inputs)


# -- existing, read-only and wrong-kind outputs -------------------------------------------------

def test_an_existing_output_is_replaced_only_with_overwrite(trained, tmp_path):
    csv = _csv(trained, tmp_path, boreholes=trained["test_boreholes"][:1])
    out = tmp_path / "pred.csv"
    _run_predict(trained, tmp_path, csv, "figures=false", f"out={out}")
    first = out.read_bytes()
    out.write_text("an older table\n")
    with pytest.raises(ConfigError, match=r"^out: .*pred\.csv already exists: set overwrite=true to replace it$"):
        _run_predict(trained, tmp_path, csv, "figures=false", f"out={out}")
    assert out.read_text() == "an older table\n"
    out.unlink()  # the summary alone is an output too
    with pytest.raises(ConfigError, match=r"^out: .*summary\.json already exists: set overwrite=true"):
        _run_predict(trained, tmp_path, csv, "figures=false", f"out={out}")
    out.write_text("an older table\n")
    _run_predict(trained, tmp_path, csv, "figures=false", f"out={out}", "overwrite=true")
    assert out.read_bytes() == first


def test_unwritable_or_wrong_kind_outputs_are_one_line_before_any_work(trained, tmp_path):
    csv = _csv(trained, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only: refused even for root
    try:
        assert "locked is read-only" in _refused(trained, tmp_path, csv, f"out={locked / 'pred.csv'}")
        assert "locked is read-only: cannot make" in _refused(trained, tmp_path, csv, f"out={locked / 'sub'}")
    finally:
        locked.chmod(stat.S_IRWXU)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "afile is a file, not a folder" in _refused(trained, tmp_path, csv, f"out={afile / 'pred.csv'}")
    assert "afile is a file, not a folder" in _refused(trained, tmp_path, csv, f"out={afile}")
    (tmp_path / "adir.csv").mkdir()
    assert "adir.csv is a folder, not a file" in _refused(trained, tmp_path, csv, f"out={tmp_path / 'adir.csv'}")
    frozen = tmp_path / "frozen.csv"
    frozen.write_text("old\n")
    frozen.chmod(stat.S_IRUSR)
    assert "frozen.csv is read-only" in _refused(trained, tmp_path, csv, f"out={frozen}", "overwrite=true")
    assert frozen.read_text() == "old\n"


def test_a_full_disk_while_writing_the_table_leaves_nothing(trained, tmp_path, monkeypatch):
    csv = _csv(trained, tmp_path, boreholes=trained["test_boreholes"][:1])
    real = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        if not Path(path).name.startswith(".predictions.parquet."):  # the prepared dataset is written
            return real(self, path, *args, **kwargs)
        Path(path).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    with pytest.raises(ConfigError) as info:
        _run_predict(trained, tmp_path, csv, "figures=false", f"out={tmp_path / 'pred'}")
    table = tmp_path / "pred" / "predictions.parquet"
    assert str(info.value) == f"out: cannot write {table}: No space left on device (ENOSPC); nothing written"
    assert not (tmp_path / "pred").exists()  # no table, no temporary file, no summary, no empty folder


def test_a_full_disk_while_writing_the_summary_removes_the_table(trained, tmp_path, monkeypatch):
    csv = _csv(trained, tmp_path, boreholes=trained["test_boreholes"][:1])
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name.startswith(".summary.json."):
            real(self, text[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "pred.csv"
    with pytest.raises(ConfigError, match=r"^out: cannot write .*pred_files/summary\.json: No space left on device "
                                          r"\(ENOSPC\); nothing written$"):
        _run_predict(trained, tmp_path, csv, f"out={out}")  # with figures: they go too
    assert not out.exists() and not (tmp_path / "pred_files").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bins.csv", "data"]


# -- figure names ---------------------------------------------------------------------------------

def test_figure_names_never_collide():
    ids = ["A/B", "A_B", "A B", "a_b", "U1437A", "U1437a", ".", "", "..", "x" * 300]
    names = figures._unique_names(ids)
    assert len({n.lower() for n in names.values()}) == len(ids)
    assert names["A_B"] == "A_B" and names["U1437A"] == "U1437A"  # plain ids keep their name
    assert names["A/B"].startswith("A_B-") and all(0 < len(n) < 120 and not n.startswith(".") for n in names.values())
    assert figures._safe_name("A/B") == figures._safe_name("A/B") != figures._safe_name("A_B")


def test_training_borehole_logs_of_a_b_and_a_underscore_b_are_two_files(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "borehole_log", lambda frame, x_raw, names, assignment, bh, path, **style:
                        Path(path).write_text(str(bh)) and Path(path))
    frame = pd.DataFrame({"borehole_id": ["A/B", "A_B"], "depth_m": [0.0, 0.0], "principal": ["a", "b"]})
    written = figures.write_all({"frame": frame, "x_raw": np.zeros((2, 1)), "feature_names": ["GRA"],
                                 "borehole_ids": ["A/B", "A_B"]}, tmp_path)
    assert sorted(p.read_text() for p in tmp_path.glob("borehole_log_*.png")) == ["A/B", "A_B"]
    assert len(set(written.values())) == 2


def test_predicted_logs_of_a_b_and_a_underscore_b_are_two_files(trained, tmp_path):
    bins = _bins(trained, trained["test_boreholes"][:2]).groupby("borehole_id").head(20)
    first, second = bins["borehole_id"].unique()
    bins["borehole_id"] = bins["borehole_id"].map({first: "A/B", second: "A_B"})
    csv = tmp_path / "bins.csv"
    bins.to_csv(csv, index=False)
    summary = _run_predict(trained, tmp_path, csv, f"out={tmp_path / 'pred'}")
    assert len(set(summary["figures"])) == 2 == len(list((tmp_path / "pred" / "figures").glob("*.png")))


# -- the model: in process ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(trained):
    with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"):
        return mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")


def _odd_bins(trained) -> pd.DataFrame:
    """Six bins: a null borehole id (row 1), a null depth (2), no feature at all (3), a value
    beyond ±1e12 (4: unusable, as inf is; JSON has no inf)."""
    bins = _bins(trained, trained["test_boreholes"][:1]).head(6).reset_index(drop=True)
    bins["borehole_id"] = bins["borehole_id"].astype(object)
    bins.loc[1, "borehole_id"] = None
    bins.loc[2, "depth_m"] = np.nan
    bins.loc[3, FEATURES] = np.nan
    bins.loc[4, "GRA"] = 1e15
    return bins


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def _check_odd_answer(answer: list[dict]) -> None:
    assert len(answer) == 6
    assert answer[1]["borehole_id"] is None and answer[2]["depth_m"] is None
    assert answer[3]["cluster"] == -1 and answer[3]["no_cluster_reason"] == "no observed feature"
    assert answer[3]["predicted_lithology"] is None and answer[3]["cluster_top_lithology"] is None
    assert answer[3]["n_observed"] == 0
    for i in (0, 1, 2, 4):
        assert answer[i]["cluster"] >= 0 and answer[i]["no_cluster_reason"] is None
    assert answer[4]["GRA_out_of_range"] is True


def test_the_model_answers_nulls_as_json_null_and_empty_bins_without_a_cluster(model, trained):
    table = model.predict(_odd_bins(trained))
    stream = io.StringIO()
    scoring_server.predictions_to_json(table, stream)  # what the scoring server sends
    _check_odd_answer(_strict_json(stream.getvalue())["predictions"])


def _invoke(model, payload) -> tuple[int, str]:
    """The scoring server's answer to ``payload`` (its /invocations handler, in process)."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    try:
        answer = scoring_server.invocations(body, "application/json", model, model.metadata.get_input_schema())
        return answer.status, answer.response
    except MlflowException as exc:  # what the server's handler turns into the response
        return exc.get_http_status_code(), exc.serialize_as_json()


def _split(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def _check_bad_request(status: int, body: str) -> str:
    assert status == 400, body
    answer = _strict_json(body)
    assert "Traceback" not in body and not answer.get("stack_trace")
    assert "\n" not in answer["message"] and len(answer["message"]) < 300, answer["message"]
    return answer["message"]


def test_empty_or_malformed_requests_are_one_line_400s(model, trained):
    bins = _bins(trained, trained["test_boreholes"][:1]).head(50)
    assert "no bins to predict" in _check_bad_request(*_invoke(model, _split(bins.head(0))))
    assert "no bins to predict" in _check_bad_request(*_invoke(model, {"dataframe_records": []}))
    assert "missing column 'MS'" in _check_bad_request(*_invoke(model, _split(bins.drop(columns=["MS"]))))
    typed = bins.astype({"GRA": object})
    typed.loc[3, "GRA"] = "dense"
    assert "GRA" in _check_bad_request(*_invoke(model, _split(typed)))
    status, body = _invoke(model, _split(_odd_bins(trained)))
    assert status == 200
    _check_odd_answer(_strict_json(body)["predictions"])


def test_large_inputs_are_predicted_in_chunks_like_one_pass(trained, monkeypatch):
    predictor = Predictor(trained["run_dir"] / "predictor")
    bins = _bins(trained, trained["test_boreholes"][:3]).sample(frac=1.0, random_state=0)  # boreholes interleaved
    whole = rows.mark_unclustered(predictor, predictor.predict(bins))
    chunks = []
    real = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, frame, **kw: chunks.append(frame) or real(self, frame, **kw))
    chunked = rows.predict_rows(predictor, bins, rows=50)
    pd.testing.assert_frame_equal(chunked, whole)
    assert max(map(len, chunks)) == 50 and sum(map(len, chunks)) == len(bins)
    # with context, whole boreholes per chunk, in the input's order again
    chunks.clear()
    per_borehole = bins["borehole_id"].value_counts()

    class WithContext:  # chunked as a context run is (the network is this run's)
        context = 1

        def __getattr__(self, name):
            return getattr(predictor, name)

    limit = int(per_borehole.max()) + 5  # the longest borehole fits; not all three do
    chunked = rows.predict_rows(WithContext(), bins, rows=limit)
    pd.testing.assert_frame_equal(chunked, whole)
    assert len(chunks) > 1 and all(len(chunk) <= limit for chunk in chunks)
    for chunk in chunks:  # whole boreholes
        assert (chunk["borehole_id"].value_counts() == per_borehole[chunk["borehole_id"].unique()]).all()


def test_chunks_at_borehole_boundaries_hold_whole_boreholes():
    ids = np.array(list("abacbbdcaaae"), dtype=object)
    chunks = list(rows._chunks(ids, 3, by_borehole=True))
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(ids)))
    for positions in chunks:
        held = set(ids[positions])
        assert all(set(np.flatnonzero(ids == b)) <= set(positions) for b in held)  # whole boreholes
        assert len(positions) <= 3 or len(held) == 1  # longer only for one long borehole
    assert [len(c) for c in rows._chunks(ids, 5, by_borehole=False)] == [5, 5, 2]


def test_predict_output_has_the_no_cluster_reason_column(trained, tmp_path):
    csv = _csv(trained, tmp_path, boreholes=trained["test_boreholes"][:1])
    summary = _run_predict(trained, tmp_path, csv, "figures=false", "format=csv")
    table = pd.read_csv(summary["table"])
    assert rows.REASON in table.columns and table[rows.REASON].isna().all() and (table["cluster"] >= 0).all()
    assert summary["n_bins_unclustered"] == 0


# -- the model: served ---------------------------------------------------------------------------

@pytest.mark.slow
def test_the_served_model_answers_json_and_one_line_400s(trained, tmp_path):
    bins = _bins(trained, trained["test_boreholes"][:1]).head(20)

    def post(payload) -> tuple[int, str]:
        req = urllib.request.Request(f"{base}/invocations", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    with _served(f"models:/{MODEL_NAME}/1", f"sqlite:///{trained['store'] / 'mlflow.db'}",
                 tmp_path / "serve.log") as base:
        status, body = post(_split(_odd_bins(trained)))
        assert status == 200, body
        _check_odd_answer(_strict_json(body)["predictions"])
        assert "no bins to predict" in _check_bad_request(*post({"dataframe_split": {"columns": list(bins.columns),
                                                                                     "data": []}}))
        assert "missing column 'NGR'" in _check_bad_request(*post(_split(bins.drop(columns=["NGR"]))))
        typed = bins.astype({"MS": object})
        typed.loc[2, "MS"] = "high"
        assert "MS" in _check_bad_request(*post(_split(typed)))


# -- evaluate: its metrics.json replaces no input ---------------------------------------------------

def _evaluate(run_dir: Path, tmp_path: Path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.evaluate import evaluate_run
    from tests.conftest import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"run_dir={run_dir}", f"paths.data_dir={tmp_path / 'data'}",
                                                          "log_mlflow=false", *overrides])
    return evaluate_run(cfg)


def test_evaluate_never_writes_its_metrics_over_its_data(trained, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run_dir, ignore=shutil.ignore_patterns("evaluations"))
    # a table named metrics.json exactly where evaluate writes the metrics of that table
    table = run_dir / "evaluations" / "table-metrics-test" / "metrics.json"
    table.parent.mkdir(parents=True)
    _bins(trained, labels=True).to_csv(table, index=False)
    before = table.read_bytes()
    with pytest.raises(ConfigError, match=r"^run_dir: .*metrics\.json is data\.path .*evaluate writes there"):
        _evaluate(run_dir, tmp_path, "data=table", f"data.path={table}")
    assert table.read_bytes() == before and not (tmp_path / "data").exists()
    # an evaluations/ that leads out of the run
    shutil.rmtree(run_dir / "evaluations")
    (tmp_path / "elsewhere").mkdir()
    (run_dir / "evaluations").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"^run_dir: .* leads out of the run directory"):
        _evaluate(run_dir, tmp_path)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_the_served_model_gives_a_requests_memory_back_once_idle(monkeypatch):
    import time

    from lithovae.prediction import mlflow_model

    trims = []
    monkeypatch.setattr(mlflow_model, "_trim", lambda: trims.append(time.monotonic()))
    trimmer = mlflow_model._Trimmer()
    trimmer.AFTER_S, trimmer.POLL_S = (0.05, 0.1), 0.02
    trimmer.answered()
    deadline = time.monotonic() + 5
    while len(trims) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert len(trims) == 2  # once per step after the last answer, then no more until the next


def test_an_internal_error_is_a_one_line_500_with_the_traceback_only_in_the_log(model, trained, monkeypatch, caplog):
    def broken(self, frame, **kwargs):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(Predictor, "predict", broken)
    status, body = _invoke(model, _split(_bins(trained).head(5)))
    assert status == 500 and "Traceback" not in body and not _strict_json(body).get("stack_trace")
    assert _strict_json(body)["message"] == "internal error: RuntimeError: a bug"
    assert "Traceback" in caplog.text  # kept for whoever runs the server
