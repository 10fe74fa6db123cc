"""Own data decide their classes and groups; classifier metrics cover the classes that exist.

On the generated North Sea-like wells (:mod:`tests.own_data`, ten numeric lithology codes):
the classes of a run are the labels present (named by ``data.label_names``), every head has
that many outputs, predictions name only them, ``auc_macro``/``auc_micro``/``balanced_accuracy``
are over the classes present and say how many; groups exist only from ``data.groups`` (or a
``data.group`` column): without them a group-target preset exits 2 naming ``data.groups`` and
the group diagnostics are skipped. LILY (synthetic) keeps the study's 139 classes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from lithovae.data import reference
from lithovae.data.datamodule import LabelEncoding, LithoDataModule
from lithovae.data.errors import BuildError
from lithovae.evaluation.metrics import classification_scores
from tests.conftest import CONF_DIR, FAST_EVAL, compose_train, config_defaults
from tests.own_data import CODES, GROUPS, NAMES, north_sea_like
from tests.test_las import las_source, table_source

FEATURES = "data.features=[GR,RHOB,NPHI,DTC,RDEP]"
TABLE = ["data=table", "data.borehole=WELL", "data.depth=DEPTH_MD", "data.label=LITHOLOGY", FEATURES]
SMALL = ["trainer.max_epochs=1", "logger=none", "eval.bootstrap.resamples=100", "eval.k=[4]"]
CLASSES = sorted(NAMES.values())  # named codes: names alphabetically


def _quiet(*_a, **_k):
    pass


def _table_keywords() -> dict:
    return {"borehole": "WELL", "depth": "DEPTH_MD", "label": "LITHOLOGY",
            "features": ["GR", "RHOB", "NPHI", "DTC", "RDEP"]}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    data = north_sea_like(root, n_wells=12, samples=200)
    names = root / "names.csv"
    pd.DataFrame({"code": list(NAMES), "name": list(NAMES.values())}).to_csv(names, index=False)
    groups = root / "groups.yaml"
    groups.write_text(yaml.safe_dump(GROUPS))
    return data, names, groups


# --- reading: names for codes, groups only where given ------------------------------------------

def test_label_names_name_the_codes_and_groups_come_only_from_the_mapping(own, tmp_path):
    data, names, groups = own
    lines = []
    partial = {k: v for k, v in NAMES.items() if k != CODES[-1]}  # one code left unnamed
    path, manifest = table_source(data.table, **_table_keywords(), label_names=partial,
                                  groups=str(groups)).prepare(tmp_path / "d", log=lines.append)
    frame = pd.read_parquet(path)
    labels = set(frame["principal"].dropna())
    assert labels == set(partial.values()) | {str(CODES[-1])}  # the unnamed code stays its code
    assert [line for line in lines if "no name" in line] == [
        f"[lithovae.data] logs.csv: 1 of 10 label codes have no name in data.label_names, kept as codes: {CODES[-1]}"]
    named = frame.dropna(subset=["principal"])
    expected = named["principal"].map(GROUPS).astype(object)  # the unnamed code: in no group
    assert named["lithology_group"].astype(object).fillna("-").tolist() == expected.fillna("-").tolist()
    assert manifest["label_vocabulary"] == "data" and manifest["options"]["label_names"]["30000"] == "Sandstone"


def test_own_data_without_groups_get_no_lily_group(own, tmp_path):
    data, names, _ = own
    path, _ = table_source(data.table, **_table_keywords(), label_names=str(names)).prepare(
        tmp_path / "t", log=_quiet)
    assert pd.read_parquet(path)["lithology_group"].isna().all()  # no "Other", no "Sand"
    path, _ = las_source(data.las_dir, label="LITH", features=["GR", "RHOB", "NPHI", "DTC", "RDEP"],
                         groups={"30000": "clastic"}).prepare(tmp_path / "l", log=_quiet)
    frame = pd.read_parquet(path)
    assert set(frame["lithology_group"].dropna()) == {"clastic"}  # codes as keys, before naming
    assert frame.loc[frame["principal"] != "30000", "lithology_group"].isna().all()


@pytest.mark.parametrize("option, value, says", [
    ("label_names", "missing.csv", "data.label_names: no such file"),
    ("label_names", "names.txt", "unknown file type '.txt'"),
    ("label_names", "three.csv", "need a header and two columns"),
    ("label_names", "twice.csv", "'30000' given twice"),
    ("label_names", "list.yaml", "must hold a mapping"),
    ("label_names", "bad.json", "unreadable (JSONDecodeError"),
    ("label_names", {30000: ""}, "data.label_names: entry 30000"),
    ("label_names", [1, 2], "data.label_names: give a mapping"),
    ("groups", {}, "data.groups: empty mapping"),
], ids=["missing-file", "unknown-type", "csv-columns", "code-twice", "not-a-mapping", "unparsable", "empty-name",
        "not-mapping-or-file", "empty-groups"])
def test_a_bad_label_names_or_groups_is_one_line_naming_it(own, tmp_path, option, value, says):
    data, _, _ = own
    (tmp_path / "names.txt").write_text("30000,Sandstone\n")
    (tmp_path / "three.csv").write_text("code,name,extra\n30000,Sandstone,x\n")
    (tmp_path / "twice.csv").write_text("code,name\n30000,Sandstone\n30000.0,Shale\n")
    (tmp_path / "list.yaml").write_text("- Sandstone\n")
    (tmp_path / "bad.json").write_text("{30000: ")
    if isinstance(value, str):
        value = str(tmp_path / value)
    with pytest.raises(BuildError) as err:
        table_source(data.table, **_table_keywords(), **{option: value})
    assert says in str(err.value) and "\n" not in str(err.value)
    if isinstance(value, str):
        assert value in str(err.value)  # names the file


def test_groups_given_twice_is_one_line(own):
    data, _, groups = own
    with pytest.raises(BuildError, match=r"^data.groups: give the groups once, as data.group \(the column 'WELL'\)"):
        table_source(data.table, **{**_table_keywords(), "group": "WELL"}, groups=str(groups))


def test_own_classes_are_the_labels_present_in_a_documented_order():
    enc = LabelEncoding.for_own_data(pd.Series(["10", "9", None, "Shale", "70000", "9", "Chalk"]),
                                     pd.Series([None] * 7))
    assert enc.classes == ["9", "10", "70000", "Chalk", "Shale"] and enc.groups == []


def test_lily_synthetic_keeps_the_study_139_classes_first(shared_data_dir, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train([], tmp_path, shared_data_dir)
    path, _ = instantiate(cfg.data, _convert_="all").prepare(shared_data_dir, log=_quiet)
    d = config_defaults()
    dm = LithoDataModule(path, seed=0, **d["datamodule"])
    dm.setup()
    study = list(reference.class_distribution()["Lithology"])
    assert len(study) == 139 and dm.encoding.classes[:139] == study
    assert dm.encoding.groups[:14] == reference.group_names()
    assert dm.hierarchy == reference.lithology_groups()


# --- metrics over the classes that exist -------------------------------------------------------

def test_auc_and_balanced_accuracy_are_over_the_classes_present():
    rng = np.random.default_rng(0)
    n, present, head = 600, 10, 139
    target = rng.integers(0, present, n)
    logits = np.full((n, head), -8.0)  # absent classes: confidently never
    logits[:, :present] = rng.normal(size=(n, present))
    logits[np.arange(n), target] += 1.0
    target[::7] = -1
    scores = classification_scores(logits, target, head)
    rows = target >= 0
    probs, one_hot = softmax(logits[rows], axis=1), np.eye(head)[target[rows]]
    assert scores["auc_macro"] == pytest.approx(np.mean([roc_auc_score(one_hot[:, c], probs[:, c])
                                                         for c in range(present)]), abs=1e-12)
    assert scores["auc_micro"] == pytest.approx(roc_auc_score(one_hot[:, :present].ravel(),
                                                              probs[:, :present].ravel()), abs=1e-12)
    assert (scores["n_classes_scored"], scores["n_classes_head"]) == (present, head)
    # the study's pooled AUC counts the 129 absent columns as easy negatives: higher
    assert scores["auc_pooled"] > scores["auc_micro"] + 0.05
    one = classification_scores(logits[:5], np.zeros(5, dtype=int), head)
    assert math.isnan(one["auc_macro"]) and one["n_classes_scored"] == 1


# --- trained runs on the own data ---------------------------------------------------------------

def _compose(tmp_path, overrides: list[str]):
    """The train config on the own table (conftest's compose_train sets data.scale, a key of
    synthetic data only)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.run_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
            "trainer.enable_progress_bar=false", *FAST_EVAL, *TABLE, *SMALL, *overrides])


def _train(tmp_path, overrides: list[str]):
    from lithovae.train import train

    cfg = _compose(tmp_path, overrides)
    metrics = train(cfg)
    return metrics, tmp_path / "run"


@pytest.fixture(scope="module")
def semisup_run(own, tmp_path_factory):
    data, names, _ = own
    tmp = tmp_path_factory.mktemp("semisup")
    metrics, run_dir = _train(tmp, ["model=semisup", f"data.path={data.table}", f"data.label_names={names}"])
    return metrics, run_dir, tmp


def test_own_data_classes_heads_predictions_and_metrics(own, semisup_run, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lithovae.predict import predict

    data, names, _ = own
    metrics, run_dir, tmp = semisup_run
    encoding = json.loads((run_dir / "label_encoding.json").read_text())
    assert encoding == {"classes": CLASSES, "groups": []}
    for state in (torch.load(run_dir / "predictor" / "weights.pt", weights_only=True),
                  torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]):
        heads = [v for k, v in state.items() if "classifier" in k and k.endswith("weight")]
        assert heads and heads[-1].shape[0] == 10  # the head's last layer: one output per class of the data
    assert metrics["n_classes_head"] == 10 and 2 <= metrics["n_classes_scored"] <= 10
    assert all(math.isfinite(metrics[k]) for k in ("auc_macro", "auc_micro", "balanced_accuracy"))
    # groups do not exist here: the group diagnostics are skipped, not made up
    assert not {"recon_mse_group", "group_coherence", "accuracy_group", "hierarchy_ari"} & set(metrics)
    assert not (run_dir / "group_diagnostics.csv").exists()
    clusters = pd.read_csv(run_dir / "clusters.csv")
    assert set(clusters["top_lithology"].dropna()) <= set(CLASSES)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[
            f"run={run_dir}", f"paths.root_dir={tmp}", f"paths.data_dir={tmp / 'data'}", f"out={tmp / 'pred'}",
            "figures=false", *TABLE, f"data.path={data.table}", f"data.label_names={names}"])
    table = pd.read_parquet(predict(cfg)["table"])
    assert set(table["predicted_lithology"]) <= set(CLASSES)
    assert set(table["lithology_top2"]) <= set(CLASSES)
    # without data.label_names, the codes of the new wells are named as the run named them
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[
            f"run={run_dir}", f"paths.root_dir={tmp}", f"paths.data_dir={tmp / 'data'}", f"out={tmp / 'pred2'}",
            "figures=false", *TABLE, f"data.path={data.table}"])
    summary = predict(cfg)
    assert summary["n_labeled"] > 0 and summary["scores"]["n_labeled_known_lithology"] == summary["n_labeled"]


def test_a_group_preset_on_own_data_without_groups_exits_2_naming_data_groups(own, tmp_path, capsys):
    from lithovae.train import run

    data, names, _ = own
    cfg = _compose(tmp_path, ["experiment=direct_classifier", f"data.path={data.table}",
                              f"data.label_names={names}"])
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    assert exit_.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: data.groups: this model predicts lithology groups")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_a_group_preset_with_data_groups_trains_and_reports_its_groups(own, tmp_path):
    data, names, groups = own
    metrics, run_dir = _train(tmp_path, ["experiment=direct_classifier", f"data.path={data.table}",
                                         f"data.label_names={names}", f"data.groups={groups}"])
    own_groups = sorted(set(GROUPS.values()))
    encoding = json.loads((run_dir / "label_encoding.json").read_text())
    assert encoding == {"classes": CLASSES, "groups": own_groups}
    assert metrics["n_classes_head"] == len(own_groups)
    assert set(metrics["accuracy_group"]) <= set(own_groups) and set(metrics["n_group"]) <= set(own_groups)
    table = pd.read_csv(run_dir / "group_diagnostics.csv")
    assert set(table["group"]) <= set(own_groups) and len(table) >= 2
