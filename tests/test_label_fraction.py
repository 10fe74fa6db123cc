"""Partial labels (datamodule.label_fraction, label_unit): only a share of the TRAINING bins keep
their labels, drawn by seed; validation and test keep every label; class counts see labeled rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lithovae.alpha import AdaptiveAlpha
from lithovae.config import ConfigError, validate
from lithovae.data.builder import BuildError
from lithovae.data.datamodule import LithoDataModule
from tests.conftest import compose_train, config_defaults
from tests.lily_files import built_random_lily


@pytest.fixture(scope="module")
def defaults() -> dict:
    return config_defaults()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, defaults):
    """40 boreholes of 25 bins: a 0.4 share of the training boreholes is close to 0.4 of its bins."""
    return built_random_lily(tmp_path_factory.mktemp("labels"), defaults["data"]["build"], n_boreholes=40,
                             bins_per_borehole=25, seed=5)


def make(dataset, defaults, **overrides) -> LithoDataModule:
    dm = LithoDataModule(dataset, **{"seed": defaults["seed"], **defaults["datamodule"], **overrides})
    dm.setup()
    return dm


def labeled(dm, split="train") -> np.ndarray:
    return (dm.tensors[split]["y"] >= 0).numpy()


def test_the_default_keeps_every_label(dataset, defaults):
    assert defaults["datamodule"]["label_fraction"] == 1.0
    assert defaults["datamodule"]["label_unit"] == "borehole"
    dm = make(dataset, defaults)
    assert labeled(dm).all() and dm.stats["n_train_labeled"] == dm.stats["n_train"]


@pytest.mark.parametrize("unit", ["borehole", "bin"])
def test_a_fraction_of_0_4_labels_about_40_percent_of_the_training_bins(dataset, defaults, unit):
    full = make(dataset, defaults)
    dm = make(dataset, defaults, label_fraction=0.4, label_unit=unit)
    n_train = dm.stats["n_train"]
    keep = labeled(dm)
    assert dm.stats["n_train_labeled"] == int(keep.sum())
    share = keep.sum() / n_train
    # bins: exactly round(0.4 n); boreholes: within half a borehole (25 bins) of 0.4 n
    tolerance = 1 / n_train if unit == "bin" else 12.5 / n_train
    assert share == pytest.approx(0.4, abs=tolerance)
    # the unlabeled rows lose both codes; the labeled keep theirs
    train, train_full = dm.tensors["train"], full.tensors["train"]
    assert (train["y_group"][~torch.from_numpy(keep)] == -1).all()
    assert torch.equal(train["y"][keep], train_full["y"][keep])
    assert torch.equal(train["y_group"][keep], train_full["y_group"][keep])
    assert torch.equal(train["x"], train_full["x"])  # the features are untouched
    # validation and test keep every label (they are scored)
    for split in ("val", "test"):
        for key in ("y", "y_group"):
            assert torch.equal(dm.tensors[split][key], full.tensors[split][key])
    if unit == "borehole":  # whole boreholes: labeled or not
        per_borehole = pd.Series(keep).groupby(dm.frames["train"]["borehole_id"].to_numpy()).nunique()
        assert (per_borehole == 1).all()
    else:
        assert pd.Series(keep).groupby(dm.frames["train"]["borehole_id"].to_numpy()).nunique().max() == 2


@pytest.mark.parametrize("unit", ["borehole", "bin"])
def test_the_labeled_rows_are_fixed_by_the_seed_and_nested_across_fractions(dataset, defaults, unit):
    first = labeled(make(dataset, defaults, label_fraction=0.4, label_unit=unit))
    again = labeled(make(dataset, defaults, label_fraction=0.4, label_unit=unit))
    assert np.array_equal(first, again)
    fewer = labeled(make(dataset, defaults, label_fraction=0.1, label_unit=unit))
    assert fewer.sum() < first.sum() and not (fewer & ~first).any()  # 0.1's labels are among 0.4's
    other = make(dataset, defaults, seed=1, label_fraction=0.4, label_unit=unit)
    full_other = make(dataset, defaults, seed=1)
    assert other.stats["n_train_labeled"] < full_other.stats["n_train"]
    if other.split_boreholes["train"] == make(dataset, defaults).split_boreholes["train"]:
        assert not np.array_equal(labeled(other), first)


def test_class_counts_and_adaptive_alpha_see_only_the_labeled_rows(dataset, defaults):
    dm = make(dataset, defaults, label_fraction=0.4, label_unit="bin")
    spec = dm.data_spec()
    y, y_group = dm.tensors["train"]["y"], dm.tensors["train"]["y_group"]
    assert sum(spec.class_counts) == dm.stats["n_train_labeled"] < dm.stats["n_train"]
    assert list(spec.class_counts) == torch.bincount(y[y >= 0], minlength=spec.n_classes).tolist()
    assert list(spec.group_counts) == torch.bincount(y_group[y_group >= 0], minlength=spec.n_groups).tolist()
    # adaptive alpha is bound to these counts: an unlabeled row weighs 0
    alpha = AdaptiveAlpha(base=0.1).bind(spec.class_counts)
    weights = alpha(y)
    assert (weights[y < 0] == 0).all() and (weights[y >= 0] > 0).all()


@pytest.mark.parametrize("options, message", [
    ({"label_fraction": 0.0}, "datamodule.label_fraction"),
    ({"label_fraction": 1.5}, "datamodule.label_fraction"),
    ({"label_unit": "core"}, "datamodule.label_unit"),
    ({"split": "lucky"}, "datamodule.split"),
])
def test_the_data_module_names_a_bad_option(dataset, defaults, options, message):
    with pytest.raises(BuildError, match=message):
        LithoDataModule(dataset, **{"seed": 0, **defaults["datamodule"], **options})


@pytest.mark.parametrize("override, key", [
    ("datamodule.label_fraction=0", "datamodule.label_fraction"),
    ("datamodule.label_fraction=1.01", "datamodule.label_fraction"),
    ("datamodule.label_fraction=-0.4", "datamodule.label_fraction"),
    ("datamodule.label_unit=core", "datamodule.label_unit"),
    ("datamodule.split=lucky", "datamodule.split"),
    ("model=hybrid model.reduction=total", "model.reduction"),
])
def test_the_config_check_names_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"^{key}: must be"):
        validate(compose_train(override.split(), tmp_path))


@pytest.mark.parametrize("overrides", [
    ["datamodule.label_fraction=1.0", "datamodule.label_unit=bin"],
    ["datamodule.label_fraction=0.001", "datamodule.split=entropy_balanced"],
    ["model=hybrid", "model.reduction=sum"],
])
def test_boundary_values_pass_the_config_check(tmp_path, overrides):
    validate(compose_train(overrides, tmp_path))


def test_a_training_run_with_40_percent_labels_logs_the_labeled_count(tmp_path, shared_data_dir):
    from lithovae.train import train

    cfg = compose_train(["experiment=v2_14", "trainer.max_epochs=1", "logger=none",
                         "datamodule.label_fraction=0.4", "datamodule.label_unit=bin"], tmp_path, shared_data_dir)
    train(cfg)
    stats = json.loads((tmp_path / "run" / "split.json").read_text())["stats"]
    assert stats["n_train_labeled"] == pytest.approx(0.4 * stats["n_train"], abs=1)
    assert stats["train_time"] > 0  # the fit's wall time (Lightning's setup to teardown)
