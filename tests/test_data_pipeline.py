"""Scaler, splits, the in-memory data module, and the generic table source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lithovae.data.builder import BuildError
from lithovae.data.datamodule import LithoDataModule
from lithovae.data.scaler import DistributionAwareScaler
from lithovae.data.sources import TableSource
from lithovae.data.splits import (borehole_split, check_disjoint, entropy_balanced_folds,
                                  entropy_balanced_split, label_entropy)
from tests.conftest import config_defaults
from tests.lily_files import built_random_lily


def _source_yaml(option: str) -> dict:
    """The constructor keywords lithovae/conf/data/<option>.yaml gives (the sources have no defaults)."""
    return {k: v for k, v in config_defaults(f"data={option}")["data"].items() if k != "_target_"}


def table_source(path: str, **overrides) -> TableSource:
    """A TableSource with the defaults of conf/data/table.yaml, ``overrides`` on top."""
    return TableSource(**{**_source_yaml("table"), "path": path, **overrides})

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]


def test_scaler_applies_study_transforms_then_standardises_and_inverts():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(1.7, 0.2, 500), rng.lognormal(2, 1, 500) - 3,
                         rng.lognormal(3, 0.5, 500), rng.uniform(5, 250, (500, 3))])
    scaler = DistributionAwareScaler(FEATURES).fit(x)
    y = scaler.transform(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-4)
    signed = np.sign(x[:, 1]) * np.log1p(np.abs(x[:, 1]))
    np.testing.assert_allclose(y[:, 1], (signed - signed.mean()) / signed.std(), rtol=1e-4, atol=1e-5)
    logged = np.log1p(x[:, 3])
    np.testing.assert_allclose(y[:, 3], (logged - logged.mean()) / logged.std(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scaler.inverse_transform(y), x, rtol=1e-4, atol=1e-4)


def test_scaler_is_configurable_keeps_nan_and_round_trips_through_json(tmp_path):
    x = np.array([[1.0, np.nan], [2.0, 5.0], [3.0, 7.0]])
    scaler = DistributionAwareScaler(["GRA", "MS"], {"MS": "none"}).fit(x)
    y = scaler.transform(x)
    assert np.isnan(y[0, 1]) and not np.isnan(y[1:, 1]).any()
    np.testing.assert_allclose(y[1:, 1], [-1, 1], atol=1e-6)  # plain standardisation of MS
    scaler.save(tmp_path / "s.json")
    again = DistributionAwareScaler.load(tmp_path / "s.json")
    np.testing.assert_array_equal(again.transform(x), y)
    with pytest.raises(ValueError, match="cube"):
        DistributionAwareScaler(["GRA"], {"GRA": "cube"})


def test_borehole_split_is_seeded_disjoint_and_70_15_15():
    ids = [f"B{i:02d}" for i in range(40)]
    parts = borehole_split(np.repeat(ids, 3), seed=1)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [28, 6, 6]
    assert set(np.concatenate(list(parts.values()))) == set(ids)
    again = borehole_split(np.repeat(ids, 3), seed=1)
    assert all((parts[k] == again[k]).all() for k in parts)
    other = borehole_split(np.repeat(ids, 3), seed=2)
    assert not (parts["test"] == other["test"]).all()
    with pytest.raises(ValueError, match="in both"):
        check_disjoint({"train": np.array(["B01"]), "test": np.array(["B01"])})


def test_entropy_balanced_folds_match_a_hand_computed_allocation():
    # A: a x10, B: b x9, C: b x5, D: a x4. Largest first: A -> fold0, B -> fold1 (fold0 is
    # full). C fits either fold: joining fold0 gives H(10/15, 5/15) = 0.637, joining fold1
    # gives 0 (all b); the whole set's entropy is ln 2 = 0.693, so C goes to fold0 even
    # though fold1 is smaller. D then goes to the smaller fold1.
    boreholes = ["A"] * 10 + ["B"] * 9 + ["C"] * 5 + ["D"] * 4
    labels = ["a"] * 10 + ["b"] * 9 + ["b"] * 5 + ["a"] * 4
    folds = entropy_balanced_folds(boreholes, labels, n_folds=2, seed=0)
    assert [sorted(f) for f in folds] == [["A", "C"], ["B", "D"]]
    assert label_entropy(["a", "b"]) == pytest.approx(np.log(2))


def test_entropy_balanced_split_matches_a_hand_computed_allocation():
    # Seed 002's split, greedy best first. A: a x8, B: b x8, C: a x4, D: a + b x3, E: a x2 + b x2;
    # the whole set (15 a, 13 b) has entropy H(15/28) = 0.6906. Fractions 50/20/30%.
    # test (target 8.4 bins, at most 9.24, done at 7.56): E alone has ln 2 = 0.6931, the closest;
    # then only C or D fit (4 bins): E + C = (6 a, 2 b) has 0.562, E + D = (3 a, 5 b) 0.662: D.
    # val (target 5.6, at most 6.16): only C fits; then nothing does. train keeps A and B.
    boreholes = ["A"] * 8 + ["B"] * 8 + ["C"] * 4 + ["D"] * 4 + ["E"] * 4
    labels = ["a"] * 8 + ["b"] * 8 + ["a"] * 4 + ["a", "b", "b", "b"] + ["a", "a", "b", "b"]
    parts = entropy_balanced_split(boreholes, labels, (0.5, 0.2, 0.3), seed=0)
    assert {k: sorted(v) for k, v in parts.items()} == {"train": ["A", "B"], "val": ["C"], "test": ["D", "E"]}
    assert entropy_balanced_split(boreholes, labels, (0.5, 0.2, 0.3), seed=7)["test"].tolist() == ["E", "D"]
    # a part of fraction 0 still gets one borehole (the smallest), as with the random split
    empty = entropy_balanced_split(boreholes, labels, (1.0, 0.0, 0.0), seed=0)
    assert [len(empty[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    with pytest.raises(BuildError, match="at least 3 boreholes"):
        entropy_balanced_split(["A", "B"], ["a", "b"], (0.7, 0.15, 0.15))
    with pytest.raises(BuildError, match="summing to 1"):
        entropy_balanced_split(boreholes, labels, (0.7, 0.2, 0.2))


def test_entropy_balanced_split_keeps_the_fractions_and_balances_the_entropy():
    rng = np.random.default_rng(0)
    ids = [f"B{i:02d}" for i in range(60)]
    boreholes = np.repeat(ids, rng.integers(20, 200, len(ids)))
    # boreholes of skewed lithology mixes: a random cut leaves parts of unequal diversity
    labels = np.concatenate([rng.choice(list("abcdef"), size=(boreholes == b).sum(),
                                        p=rng.dirichlet(np.full(6, 0.3))) for b in ids])
    parts = entropy_balanced_split(boreholes, labels, (0.7, 0.15, 0.15), seed=0)
    check_disjoint(parts)
    assert set(np.concatenate(list(parts.values()))) == set(ids)
    share = {k: np.isin(boreholes, v).mean() for k, v in parts.items()}
    assert share["train"] == pytest.approx(0.7, abs=0.05) and share["test"] == pytest.approx(0.15, abs=0.05)
    whole = label_entropy(labels)
    gaps = {k: abs(label_entropy(labels[np.isin(boreholes, v)]) - whole) for k, v in parts.items()}
    random_parts = borehole_split(boreholes, (0.7, 0.15, 0.15), seed=0)
    random_gaps = {k: abs(label_entropy(labels[np.isin(boreholes, v)]) - whole) for k, v in random_parts.items()}
    assert max(gaps.values()) < 0.05 and max(gaps.values()) < max(random_gaps.values())


@pytest.fixture(scope="module")
def defaults() -> dict:
    """The train config's defaults (lithovae/conf/train.yaml, conf/data/synthetic.yaml)."""
    return config_defaults()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, defaults):
    return built_random_lily(tmp_path_factory.mktemp("dm"), defaults["data"]["build"], n_boreholes=12,
                             bins_per_borehole=30, seed=3)


@pytest.fixture(scope="module")
def datamodule(defaults):
    """``datamodule(path, **overrides)``: a LithoDataModule with the config's seed and
    ``datamodule`` options, ``overrides`` on top."""
    def make(path, **overrides) -> LithoDataModule:
        return LithoDataModule(path, **{"seed": defaults["seed"], **defaults["datamodule"], **overrides})
    return make


def test_datamodule_batches_are_whole_tensors_indexed_at_once(small_dataset, datamodule):
    dm = datamodule(small_dataset, batch_size=64, steps_per_batch=1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "observed", "y", "y_group", "index", "borehole", "depth"}
    assert batch["x"].shape == (64, 6) and batch["x"].dtype == torch.float32
    assert batch["observed"].dtype == torch.bool and batch["y"].dtype == torch.int64
    # the batch is exactly the split's rows at the batch's indices
    train = dm.tensors["train"]
    assert torch.equal(batch["x"], train["x"][batch["index"]])
    # a second epoch reshuffles (seeded), evaluation loaders do not
    first, second = [torch.cat([b["index"] for b in dm.train_dataloader()]) for _ in range(2)]
    assert sorted(first.tolist()) == list(range(len(train["x"])))
    assert not torch.equal(first, second)
    test_idx = torch.cat([b["index"] for b in dm.test_dataloader()])
    assert torch.equal(test_idx, torch.arange(len(test_idx)))
    # chunks of several mini-batches: one Lightning step, batch_size rows per optimizer step
    chunked = datamodule(small_dataset, batch_size=64, steps_per_batch=3)
    chunked.setup()
    assert len(next(iter(chunked.train_dataloader()))["x"]) == 192


def test_datamodule_fits_the_scaler_on_train_boreholes_only(small_dataset, datamodule):
    dm = datamodule(small_dataset)
    dm.setup()
    frame = pd.read_parquet(small_dataset)
    train = frame[frame["borehole_id"].isin(dm.split_boreholes["train"])]
    expected = DistributionAwareScaler(FEATURES).fit(train[FEATURES].to_numpy())
    np.testing.assert_allclose(dm.scaler.mean_, expected.mean_)
    assert not np.allclose(dm.scaler.mean_, DistributionAwareScaler(FEATURES).fit(frame[FEATURES].to_numpy()).mean_)
    check_disjoint({k: np.array(v) for k, v in dm.split_boreholes.items()})
    spec = dm.data_spec()
    assert spec.n_features == 6 and spec.n_classes >= 139 and spec.n_groups >= 14
    assert sum(spec.class_counts) == dm.stats["n_train"]


def test_datamodule_context_and_engineered_features(small_dataset, datamodule):
    dm = datamodule(small_dataset, context=1, engineered=True)
    dm.setup()
    assert len(dm.feature_names) == 12 * 3
    assert "GRA_above1" in dm.feature_names and "lightness" in dm.feature_names
    # the first bin of each borehole has no bin above: that neighbour is unobserved
    col = dm.feature_names.index("GRA_above1")
    first_rows = torch.tensor(dm.frames["train"].groupby("borehole_id").head(1).index.to_list())
    assert not dm.tensors["train"]["observed"][first_rows, col].any()


def test_cv_fold_datamodule_uses_the_fold_as_test(small_dataset, datamodule, defaults):
    frame = pd.read_parquet(small_dataset)
    folds = entropy_balanced_folds(frame["borehole_id"], frame["principal"], 3, seed=defaults["seed"])
    dm = datamodule(small_dataset, n_folds=3, fold=1)
    dm.setup()
    assert sorted(dm.split_boreholes["test"]) == sorted(folds[1])


def test_the_split_option_chooses_the_entropy_balanced_split(small_dataset, datamodule, defaults):
    assert defaults["datamodule"]["split"] == "random_boreholes"
    frame = pd.read_parquet(small_dataset)
    dm = datamodule(small_dataset, split="entropy_balanced")
    dm.setup()
    expected = entropy_balanced_split(frame["borehole_id"], frame["principal"].fillna("<unlabeled>"),
                                      defaults["datamodule"]["fractions"], defaults["seed"])
    assert dm.split_boreholes == {k: sorted(map(str, v)) for k, v in expected.items()}
    random = datamodule(small_dataset)
    random.setup()
    assert random.split_boreholes != dm.split_boreholes
    assert dm.stats["entropy_all"] == pytest.approx(label_entropy(frame["principal"].dropna()))


@pytest.mark.parametrize("n_folds, fold, message", [
    (3, None, "datamodule.fold: .* got n_folds=3, fold=None"),
    (3, 3, "datamodule.fold: .* got n_folds=3, fold=3"),
    (1, 0, "datamodule.n_folds: must be null or an integer >= 2, got 1"),  # as the config check says
])
def test_a_fold_outside_n_folds_is_named(small_dataset, datamodule, n_folds, fold, message):
    with pytest.raises(BuildError, match=message):
        datamodule(small_dataset, n_folds=n_folds, fold=fold)


def test_tables_of_the_same_name_in_two_folders_do_not_share_a_cache(tmp_path):
    paths = []
    for folder, density in (("a", 1.5), ("b", 2.5)):
        (tmp_path / folder).mkdir()
        frame = pd.DataFrame({"borehole_id": ["H1", "H1"], "depth_m": [0.0, 0.2], "principal": ["clay"] * 2,
                              "GRA": [density] * 2})
        frame.to_csv(tmp_path / folder / "mine.csv", index=False)
        source = table_source(str(tmp_path / folder / "mine.csv"), features={"GRA": "GRA"})
        paths.append(source.prepare(tmp_path / "data", log=lambda *_: None)[0])
    assert paths[0] != paths[1]
    assert [pd.read_parquet(p)["GRA"].iloc[0] for p in paths] == [1.5, 2.5]


def test_table_source_reads_csv_and_parquet_with_chosen_columns(tmp_path):
    frame = pd.DataFrame({"hole": ["H1"] * 3 + ["H2"] * 2, "z": [0.0, 0.2, 0.4, 0.0, 0.2],
                          "rock": ["clay", "clay", "basalt", None, "silt"],
                          "dens": [1.6, 1.7, 2.8, 1.9, None], "sus": [10, 12, 900, 5, None]})
    frame.to_csv(tmp_path / "mine.csv", index=False)
    frame.to_parquet(tmp_path / "mine.parquet")
    for name in ("mine.csv", "mine.parquet"):
        source = table_source(str(tmp_path / name), borehole="hole", depth="z", label="rock",
                              features={"GRA": "dens", "MS": "sus"}, transforms={"MS": "signed_log"})
        path, manifest = source.prepare(tmp_path / "data")
        data = pd.read_parquet(path)
        assert list(data.columns) == ["borehole_id", "depth_m", "principal", "prefix", "suffix",
                                      "full_lithology", "lithology_group", "GRA", "MS"]
        assert len(data) == 4 and manifest["steps"]["dropped_no_feature"] == 1
        assert data["lithology_group"].isna().all()  # own data: no group unless given, none of LILY's


@pytest.mark.parametrize("content, expected", [
    ("borehole_id,depth_m,principal,dens\nH1,0.0,clay,1.6\n", "missing column 'GRA'"),
    ("", "empty file"),
    ("borehole_id,depth_m,principal,GRA\nH1,abc,clay,1.6\n", "column 'depth_m': non-numeric value 'abc'"),
])
def test_table_source_bad_input_names_file_and_column(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(BuildError) as err:
        table_source(str(path), features={"GRA": "GRA"}).prepare(tmp_path / "data")
    assert expected in str(err.value) and str(path) in str(err.value)
    assert not list((tmp_path / "data").rglob("*.parquet")) if (tmp_path / "data").exists() else True


def test_a_final_training_batch_of_one_row_is_skipped_not_fed_to_batchnorm():
    from lithovae.data.datamodule import ShuffledBatchSampler

    sampler = ShuffledBatchSampler(9, 4, torch.Generator().manual_seed(0))
    sizes = [len(b) for b in sampler]
    assert sizes == [4, 4] and len(sampler) == 2
    evaluation = ShuffledBatchSampler(9, 4, shuffle=False)
    assert [len(b) for b in evaluation] == [4, 4, 1]  # evaluation sees every row
