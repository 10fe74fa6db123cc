"""Files read back are untrusted: a config or bundle builds only lithovae's own classes (nothing
nested, no Hydra directive, no resolver), a damaged checkpoint or bundle file is one line naming
it, and outputs get the mode of a plain ``open()``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from lithovae import untrusted
from lithovae.errors import CheckpointError, ConfigError, LithovaeError, RunDirError
from lithovae.files import atomic_write, fit_weights, load_checkpoint
from lithovae.prediction.clusterer import FittedClusterer
from lithovae.prediction.predictor import Predictor
from lithovae.tracking import global_uri
from lithovae.train import train
from lithovae.untrusted import check_config, load_config
from tests.conftest import compose_train

MODEL_NAME = "untrusted-test"


def plant_marker(marker: str, **_) -> None:
    """A foreign target: building it creates ``marker`` (what a payload would do)."""
    Path(marker).touch()


def payloads(tmp: Path) -> dict[str, dict]:
    """Nested ``_target_`` payloads (a ``model.dropout`` node): one truncates ``victim``, one
    creates ``marker``."""
    victim = tmp / "victim.txt"
    victim.write_text("precious\n")
    return {"truncate": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
            "marker": {"_target_": "os.makedirs", "name": str(tmp / "pwned")}}


def assert_untouched(tmp: Path) -> None:
    assert not (tmp / "pwned").exists()
    assert (tmp / "victim.txt").read_text() == "precious\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data_dir):
    """A 1-epoch run logged to a local MLflow store as a model, registered as MODEL_NAME."""
    root = tmp_path_factory.mktemp("trained")
    train(compose_train(["trainer.max_epochs=1", f"export.register_as={MODEL_NAME}"], root, shared_data_dir))
    store = root / "outputs" / "mlruns"
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (model_dir,) = (store / "artifacts").glob("*/models/*/artifacts")
    return {"root": root, "run_dir": root / "run", "store": store, "run_id": run.info.run_id,
            "model_bundle": model_dir / "artifacts" / "predictor", "data_dir": shared_data_dir}


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# -- the allow-list ------------------------------------------------------------------------------

def test_the_allowed_targets_are_the_packaged_options_and_a_new_yaml_extends_them(tmp_path, monkeypatch):
    allowed = untrusted.ALLOWED_TARGETS
    assert {"lithovae.models.vae.VAE", "lithovae.data.sources.TableSource", "pytorch_lightning.Trainer",
            "lithovae.tracking.no_logger", "lithovae.checkpointing.FinalWeights"} <= allowed
    assert not any(t.startswith(("optuna", "hydra_plugins", "lithovae.sweeps")) for t in allowed)  # Hydra's own
    conf = tmp_path / "conf"
    shutil.copytree(untrusted.CONF_DIR, conf)
    (conf / "model" / "mine.yaml").write_text("_target_: lithovae.models.vae.VAE\nlatent_dim: 3\n")
    (conf / "mask" / "other.yaml").write_text("_target_: tests.test_untrusted.plant_marker\n")
    monkeypatch.setattr(untrusted, "CONF_DIR", conf)
    untrusted.group_targets.cache_clear()
    try:
        assert "tests.test_untrusted.plant_marker" in untrusted.ALLOWED_TARGETS
        assert "tests.test_untrusted.plant_marker" not in untrusted.group_targets()["model"]
    finally:
        untrusted.group_targets.cache_clear()


PAYLOADS = {
    "nested foreign target": ({"model": {"_target_": "lithovae.models.vae.VAE",
                                         "dropout": {"_target_": "pandas.read_pickle", "filepath_or_buffer": "p"}}},
                              "model.dropout._target_: 'pandas.read_pickle' is refused"),
    "nested allowed target": ({"model": {"_target_": "lithovae.models.vae.VAE",
                                         "hidden": [{"_target_": "lithovae.masking.NoMask"}]}},
                              "model.hidden[0]._target_: 'lithovae.masking.NoMask' is refused"),
    "foreign top target": ({"model": {"_target_": "builtins.exec", "source": "x"}},
                           "model._target_: 'builtins.exec' is not one of lithovae's model options"),
    "another group's target": ({"model": {"_target_": "pytorch_lightning.Trainer"}},
                               "model._target_: 'pytorch_lightning.Trainer' is not one of lithovae's model"),
    "target outside a group": ({"eval": {"_target_": "lithovae.models.vae.VAE"}},
                               "eval._target_: 'lithovae.models.vae.VAE' is refused"),
    "partial": ({"mask": {"_target_": "lithovae.masking.NoMask", "_partial_": True}},
                "mask._partial_: the instantiate directive _partial_ is refused"),
    "args": ({"beta": {"_target_": "lithovae.schedules.FixedBeta", "_args_": [1]}}, "beta._args_:"),
    "recursive": ({"model": {"x": {"_recursive_": False}}}, "model.x._recursive_:"),
    "interpolation": ({"paths": {"root_dir": "${oc.env:HOME}"}}, "paths.root_dir: interpolation"),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_check_config_refuses_in_one_line_naming_the_file_and_key(name):
    node, expected = PAYLOADS[name]
    for form in (node, OmegaConf.create(node)):
        with pytest.raises(RunDirError) as error:
            check_config(form, "run/config.yaml", allow_interpolation=False)
        message = str(error.value)
        assert message.startswith(f"run/config.yaml: {expected}") and "\n" not in message, message


def test_the_train_config_allows_the_packaged_resolvers_only(tmp_path):
    cfg = compose_train([], tmp_path, return_hydra_config=True)  # hydra:, oc.env, oc.select
    check_config(cfg, "", allow_interpolation=True, error=ConfigError)
    with open_dict(cfg.model):  # a resolver that builds a node no check has seen
        cfg.model.note = "${oc.create:'{_target_: os.system}'}"
    with pytest.raises(ConfigError, match=r"^model.note: resolver 'oc.create' is refused"):
        check_config(cfg, "", allow_interpolation=True, error=ConfigError)


def test_a_foreign_logger_target_is_refused_before_it_is_built(tmp_path):
    """The logger is built before the config's validation: the target check comes first."""
    marker = tmp_path / "pwned"
    cfg = compose_train(["logger=none", "logger._target_=tests.test_untrusted.plant_marker",
                         f"+logger.marker={marker}"], tmp_path, tmp_path / "data")
    with pytest.raises(ConfigError, match=r"^logger._target_: 'tests.test_untrusted.plant_marker' is not one"):
        train(cfg)
    assert not marker.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("text, expected", [
    ("a: [1, 2\n", "not a readable YAML config"),
    ("- 1\n- 2\n", "not a config (a YAML mapping expected"),
    ("model:\n  _target_: lithovae.models.vae.VAE\n  dropout:\n    _target_: builtins.open\n",
     "model.dropout._target_: 'builtins.open' is refused"),
])
def test_load_config_names_the_file(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(RunDirError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {expected}") and "\n" not in str(error.value)


# -- planted payloads, end to end ----------------------------------------------------------------

# the first payload found, whichever the walk meets first
REFUSED = r"model\.(dropout|hidden\[0\])\._target_: '(builtins\.open|os\.makedirs)' is refused: only the top node"


def _plant_in_json(path: Path, tmp: Path) -> None:
    """Both payloads, nested in predictor.json's model node."""
    meta = json.loads(path.read_text())
    planted = payloads(tmp)
    meta["model"]["dropout"], meta["model"]["hidden"] = planted["truncate"], [planted["marker"]]
    path.write_text(json.dumps(meta))


def test_the_payloads_are_live_when_built(tmp_path):
    """Control: Hydra's instantiate really runs them."""
    from hydra.utils import instantiate

    for payload in payloads(tmp_path).values():
        result = instantiate(payload)
        if hasattr(result, "close"):
            result.close()
    assert (tmp_path / "pwned").exists() and (tmp_path / "victim.txt").read_text() == ""


def _predict(trained, tmp: Path, run: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lithovae.predict", f"run={run}", "data=table",
                           f"data.path={_bins_csv(tmp)}", f"paths.root_dir={tmp}",
                           f"paths.mlflow_dir={trained['store']}", f"out={tmp / 'out'}", "figures=false"],
                          capture_output=True, text=True, cwd=tmp, timeout=300)


def _bins_csv(tmp: Path) -> Path:
    csv = tmp / "bins.csv"
    csv.write_text("borehole_id,depth_m,GRA,MS,NGR,R,G,B\nW,1.0,1.5,10,20,50,50,50\n")
    return csv


def _resolve(trained, run: str):
    from lithovae.predict import resolve_predictor

    return resolve_predictor(run, None, str(trained["store"]))[0]


def test_predict_refuses_a_payload_planted_in_a_runs_predictor_json(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run)
    _plant_in_json(run / "predictor" / "predictor.json", tmp_path)
    line = _one_line(_predict(trained, tmp_path, str(run)))
    assert re.match(f"error: {re.escape(str(run / 'predictor' / 'predictor.json'))}: {REFUSED}", line), line
    assert_untouched(tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def tampered_model(trained, tmp_path):
    """The logged model's stored bundle (on the 'server') with the payloads planted; restored after."""
    meta = trained["model_bundle"] / "predictor.json"
    original = meta.read_bytes()
    _plant_in_json(meta, tmp_path)
    yield
    meta.write_bytes(original)


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
@pytest.mark.usefixtures("tampered_model")
def test_predict_and_pyfunc_refuse_a_payload_planted_in_a_logged_model(trained, tmp_path):
    uri = f"runs:/{trained['run_id']}/model"
    line = _one_line(_predict(trained, tmp_path, uri))
    assert re.match(f"error: {re.escape(uri)}/artifacts/predictor/predictor.json: {REFUSED}", line), line
    registered = f"models:/{MODEL_NAME}/1"
    with pytest.raises(RunDirError, match=f"^{re.escape(registered)}/artifacts/predictor/predictor.json: {REFUSED}"):
        _resolve(trained, registered)
    with global_uri(f"sqlite:///{trained['store'] / 'mlflow.db'}"), pytest.raises(Exception) as error:
        mlflow.pyfunc.load_model(registered)  # the model's own loader: LithovaeModel.load_context
    assert re.search(REFUSED, str(error.value)) and len(str(error.value).strip().splitlines()) == 1, str(error.value)
    assert_untouched(tmp_path)


def test_predict_reads_a_logged_model_without_running_its_code(trained, tmp_path):
    """The model's code file is never run: predict builds the Predictor from the bundle alone."""
    stored_code = next(trained["model_bundle"].parents[1].glob("*.py"))
    original = stored_code.read_bytes()
    stored_code.write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').close()\n" + original.decode())
    try:
        for run in (trained["run_id"], f"models:/{MODEL_NAME}/1"):
            predictor = _resolve(trained, run)
            assert len(predictor.predict(pd.read_csv(_bins_csv(tmp_path)))) == 1
    finally:
        stored_code.write_bytes(original)
    assert not (tmp_path / "pwned").exists()


def _evaluate(run_dir: Path, tmp: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lithovae.evaluate", f"run_dir={run_dir}", f"paths.root_dir={tmp}",
                           f"paths.data_dir={data_dir}", "log_mlflow=false", *overrides],
                          capture_output=True, text=True, cwd=tmp, timeout=300)


def _evaluate_here(run_dir: Path, tmp: Path, data_dir: Path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.evaluate import evaluate_run
    from tests.conftest import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"run_dir={run_dir}", f"paths.root_dir={tmp}",
                                                         f"paths.data_dir={data_dir}", "log_mlflow=false", *overrides])
    return evaluate_run(cfg)


@pytest.mark.parametrize("where", ["config.yaml", ".hydra/config.yaml"])
def test_evaluate_refuses_a_payload_planted_in_a_runs_config(trained, tmp_path, where):
    run = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run)
    cfg = OmegaConf.load(trained["run_dir"] / "config.yaml")
    cfg.model.dropout = payloads(tmp_path)["marker"]
    (run / where).parent.mkdir(exist_ok=True)
    OmegaConf.save(cfg, run / where)
    expected = (f"{run / where}: model.dropout._target_: 'os.makedirs' is refused: only the top node of a "
                "group (data, model, beta, mask, alpha, trainer, logger, checkpoint) builds an object")
    if where == "config.yaml":  # the command line: exit 2 and one line
        assert _one_line(_evaluate(run, tmp_path, trained["data_dir"])) == f"error: {expected}"
    else:
        with pytest.raises(RunDirError) as error:
            _evaluate_here(run, tmp_path, trained["data_dir"])
        assert str(error.value) == expected
    assert_untouched(tmp_path)
    assert not (run / "evaluations").exists()


# -- damaged checkpoints ---------------------------------------------------------------------------

def _garbled(source: Path, target: Path) -> Path:
    """A copy of ``source`` with bytes inside its largest tensor's data flipped (the zip stays valid)."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    # the member's data follows its local header (whose extra field, torch's alignment padding,
    # differs from the central directory's)
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    for i in range(start + 8, start + 24):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_a_checkpoint_with_garbled_tensor_bytes_is_refused_by_evaluate(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run, ignore=shutil.ignore_patterns("evaluations"))
    last = run / "checkpoints" / "last.ckpt"
    _garbled(trained["run_dir"] / "checkpoints" / "last.ckpt", last)
    torch.load(last, map_location="cpu", weights_only=True)  # torch itself reads it without a word
    line = _one_line(_evaluate(run, tmp_path, trained["data_dir"]))
    assert line.startswith(f"error: {last}: damaged checkpoint: its member ") and "fails the CRC check" in line
    assert not list(run.glob("evaluations/*/metrics.json"))


def test_non_finite_or_non_tensor_weights_are_a_damaged_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a.weight": torch.tensor([1.0, float("nan")])}, path)
    with pytest.raises(CheckpointError, match=r"damaged checkpoint: a.weight holds non-finite values"):
        load_checkpoint(path)
    torch.save({"epoch": 1, "state_dict": {"a.weight": "text"}}, path)
    with pytest.raises(CheckpointError, match=r"damaged checkpoint: state_dict 'a.weight' is a str"):
        load_checkpoint(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match=r"not a checkpoint \(it holds a list"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_one_line(trained, tmp_path):
    path = tmp_path / "last.ckpt"
    data = (trained["run_dir"] / "checkpoints" / "last.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: not a loadable checkpoint (damaged") and "\n" not in str(error.value)


def test_evaluate_weights_of_another_architecture_names_the_key_and_both_shapes(trained, tmp_path):
    state = load_checkpoint(trained["run_dir"] / "checkpoints" / "last.ckpt")
    key = next(k for k, v in state["state_dict"].items() if k.startswith("model.") and v.ndim == 2)
    other = tmp_path / "other.ckpt"
    shape = list(state["state_dict"][key].shape)
    state["state_dict"][key] = torch.zeros(shape[0] + 1, shape[1])
    torch.save(state, other)
    with pytest.raises(CheckpointError) as error:
        _evaluate_here(trained["run_dir"], tmp_path, trained["data_dir"], f"weights={other}")
    model = OmegaConf.load(trained["run_dir"] / "config.yaml").model._target_.rsplit(".", 1)[1]
    assert str(error.value) == (f"{other}: does not fit this model ({model}): {key.removeprefix('model.')} is "
                    f"{[shape[0] + 1, shape[1]]} in the file and {shape} in the model (another architecture or size)")


def test_fit_weights_names_a_missing_and_an_unexpected_key(tmp_path):
    model = torch.nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match=r"^f.pt: does not fit this model \(Linear\): it has no bias "
                                              r"\(the model's is \[3\]\)"):
        fit_weights(model, {"weight": torch.zeros(3, 2)}, "f.pt")
    with pytest.raises(CheckpointError, match=r"unexpected key extra"):
        fit_weights(model, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3), "extra": torch.zeros(1)}, "f.pt")
    fit_weights(model, {"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, "f.pt")
    assert bool((model.weight == 1).all())


# -- bundle files validated on load ---------------------------------------------------------------

def _edit(name: str, change):
    """Damage the bundle's JSON file ``name`` with ``change(value)``."""
    def edit(bundle: Path):
        value = json.loads((bundle / name).read_text())
        change(value)
        (bundle / name).write_text(json.dumps(value))
    return edit


def _set(name: str, key: str, value, node: str | None = None):
    """Set ``key`` (of the sub-object ``node``) of the bundle's JSON file ``name`` to ``value``."""
    return _edit(name, lambda d: (d[node] if node else d).__setitem__(key, value))


def _write(name: str, content: str | bytes):
    return lambda bundle: (bundle / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def _singular(d: dict) -> None:
    d["covariances"][0][0] = [0.0] * len(d["covariances"][0][0])


def _as_gmm_12(bundle: Path) -> None:
    """A valid 12-component GMM in the latent space of the bundle's model, in place of its own
    clusterer (the faults below damage a GMM of 12)."""
    from lithovae.evaluation.metrics import fitted_params
    from lithovae.prediction.clusterer import FittedClusterer

    meta = json.loads((bundle / "predictor.json").read_text())
    dim = Predictor(bundle).model.latent_dim
    means = np.random.default_rng(0).normal(size=(12, dim))
    params = fitted_params("gmm", 12, weights=np.full(12, 1 / 12), means=means,
                           covariances=np.stack([np.eye(dim)] * 12))
    (bundle / "clusterer.json").write_text(json.dumps(FittedClusterer(params).to_dict()))
    meta["clustering"].update(method="gmm", k=12)
    (bundle / "predictor.json").write_text(json.dumps(meta))
    table = pd.read_csv(bundle / "clusters.csv")
    table[table["cluster"] < 12].to_csv(bundle / "clusters.csv", index=False)
    assert Predictor(bundle).clusterer.k == 12


def _shrunk_weights(bundle: Path) -> None:
    state = torch.load(bundle / "weights.pt", weights_only=True)
    torch.save({k: torch.zeros(1) for k in state}, bundle / "weights.pt")


BUNDLE_FAULTS = {
    "garbled clusterer.json": (_write("clusterer.json", '{"method": "gmm", "k'), "clusterer.json: not valid JSON"),
    "k above the centres": (_set("clusterer.json", "k", 13), "clusterer.json: means: 12 rows, but k is 13"),
    "unknown method": (_set("clusterer.json", "method", "dbscan"), "clusterer.json: method: unknown 'dbscan'"),
    "singular covariance": (_edit("clusterer.json", _singular),
                            "clusterer.json: covariances: component 0 is not positive definite"),
    "garbled clusters.csv": (_write("clusters.csv", b"\xff\xfe\x00garbage"), "clusters.csv: not a readable CSV"),
    "clusters.csv without its columns": (_write("clusters.csv", "a,b\n1,2\n"), "clusters.csv: no column 'cluster'"),
    "a cluster id above k": (_write("clusters.csv", "cluster,top_lithology,purity,top3\n0,B,0.5,x\n99,B,0.5,x\n"),
                             "clusters.csv: column 'cluster': 99 in row 2 is not a distinct cluster id in [-1, 11]"),
    "garbled anomaly.json": (_write("anomaly.json", "[1, 2]"), "anomaly.json: a JSON object expected, got list"),
    "too few quantiles": (_edit("anomaly.json", lambda d: d.__setitem__("quantiles", d["quantiles"][:10])),
                          "anomaly.json: quantiles: must be a list of 1001 numbers, got 10 entries"),
    "decreasing quantiles": (_edit("anomaly.json", lambda d: d.__setitem__("quantiles", d["quantiles"][::-1])),
                             "anomaly.json: quantiles: must be non-decreasing"),
    "garbled label_encoding.json": (_write("label_encoding.json", '{"classes": 3}'),
                                    "label_encoding.json: classes: must be a non-empty list of strings"),
    "label_encoding.json of another run": (_edit("label_encoding.json", lambda d: d["classes"].append("Zz")),
                                           "predictor.json: data_spec: "),
    "scaler.json with a missing scale": (_edit("scaler.json", lambda d: d["scale"].pop()),
                                         "scaler.json: scale: must be a list of "),
    "context 1e9": (_set("predictor.json", "context", 10**9), "predictor.json: context: must be an integer in [0, "),
    "a one-element training range": (_set("predictor.json", "min", [0.0], "training_range"),
                                     "predictor.json: training_range.min: must be a list of 6 numbers, got 1 entries"),
    "no features": (_set("predictor.json", "features", []), "predictor.json: features: must be a non-empty list"),
    "a latent size that cannot fit": (_set("predictor.json", "latent_dim", 100000, "model"),
                                      "predictor.json: model.latent_dim: must be an integer in [1, "),
    "an unknown model key": (_set("predictor.json", "weights_only", False, "model"),
                             "predictor.json: model.weights_only: unknown key"),
    "a clustering k unlike the clusterer's": (_set("predictor.json", "k", 5, "clustering"),
                                             "predictor.json: clustering: gmm k=5, but clusterer.json holds gmm k=12"),
    "unknown eval option": (_set("predictor.json", "exec", 1, "eval"), "predictor.json: eval.exec: unknown key"),
    "weights.pt of another size": (_shrunk_weights, "weights.pt: does not fit this model"),
}
GMM_12 = ("k above", "singular", "a cluster id", "a clustering k")  # written for the run's 12-component GMM


@pytest.mark.parametrize("fault", list(BUNDLE_FAULTS))
def test_a_damaged_bundle_file_is_one_line_naming_it(trained, tmp_path, fault):
    bundle = tmp_path / "predictor"
    shutil.copytree(trained["run_dir"] / "predictor", bundle)
    if fault.startswith(GMM_12):
        _as_gmm_12(bundle)  # the run's own clusterer is whichever validation chose
    damage, expected = BUNDLE_FAULTS[fault]
    damage(bundle)
    with pytest.raises(RunDirError if "weights.pt" not in fault else CheckpointError) as error:
        Predictor(bundle)
    message = str(error.value)
    assert message.startswith(f"{bundle}/{expected}") and "\n" not in message, message


def test_the_real_bundle_loads_and_its_clusterer_matches_its_model(trained):
    predictor = Predictor(trained["run_dir"] / "predictor")
    assert predictor.clusterer.k == predictor.meta["clustering"]["k"]
    assert predictor.clusterer.dim == predictor.model.latent_dim
    assert np.isfinite(predictor.anomaly_quantiles).all() and (np.diff(predictor.anomaly_quantiles) >= 0).all()
    with pytest.raises(RunDirError, match=r"^clusterer: k: must be an integer in \[1, "):
        FittedClusterer({"method": "kmeans", "k": 0, "centers": []})


def test_evaluate_names_a_garbled_run_label_encoding(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run)
    (run / "label_encoding.json").write_text('{"classes": ["a"], "groups": ["g"], "x": 1}')
    with pytest.raises(RunDirError) as error:
        _evaluate_here(run, tmp_path, trained["data_dir"])
    assert str(error.value) == f"{run / 'label_encoding.json'}: x: unknown key (known: classes, groups)"


# -- output modes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path, mask):
    old = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = tmp_path / "atomic.txt"
        atomic_write(atomic, lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_runs_files_and_folders_all_have_the_mode_of_a_plain_open(trained):
    from lithovae.files import default_mode

    modes = {path.relative_to(trained["root"]): path.stat().st_mode & 0o777
             for path in trained["root"].rglob("*") if not path.is_symlink()}
    odd = {str(p): oct(m) for p, m in modes.items()
           if m != default_mode(directory=(trained["root"] / p).is_dir())}
    assert not odd, odd
