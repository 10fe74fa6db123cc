"""Clusterings chosen without the test labels (lithovae.evaluation.selection): the choice and the
search objective never move when the test labels do; the bundle saves the inductive clusterer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from lithovae.evaluation.metrics import clustering_scores
from lithovae.evaluation.scoring import score_model
from lithovae.evaluation.selection import held_out_clusterings
from lithovae.models.vae import VAE
from lithovae.spec import DataSpec

KS = (3, 4, 6)
OPTIONS = dict(seed=0, n_init=2, gmm=True, max_fit_samples=None, backend="torch")


def _part(n: int, seed: int, dim: int = 3, classes: int = 4):
    """Rows of a seeded mixture: latent-like points and their lithology (some unlabeled)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (classes, dim))
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(0, 1.2, (n, dim))).astype(np.float32)
    y[rng.random(n) < 0.1] = -1
    return x, y


def _choose(test_y):
    (test_x, _), (val_x, val_y), (train_x, _) = _part(600, 1), _part(500, 2), _part(800, 3)
    test = clustering_scores(test_x, test_y, ks=KS, **OPTIONS)
    return test, held_out_clusterings(test, test_x, test_y, val_x, val_y, train_x, ks=KS, **OPTIONS)


def test_permuting_the_test_labels_never_changes_the_selection():
    _, y = _part(600, 1)
    labeled = np.flatnonzero(y >= 0)
    _, reference = _choose(y)
    chosen = {k: v for k, v in reference.scores.items() if k.startswith(("selected", "val_", "inductive"))}
    assert chosen["selected_method"] is not None and chosen["inductive_method"] is not None
    moved = False
    for seed in range(5):
        permuted = y.copy()
        permuted[labeled] = np.random.default_rng(seed).permutation(y[labeled])
        test, other = _choose(permuted)
        assert {k: other.scores[k] for k in chosen} == chosen
        assert np.array_equal(other.selected, reference.selected)
        assert np.array_equal(other.inductive, reference.inductive)
        # the test scores do follow the labels: a choice that read them would move too
        name = f"ari_{chosen['selected_method']}_k{chosen['selected_k']}"
        assert other.scores["ari_selected"] == test.scores[name]
        moved |= test.scores["best_k"] != reference.scores["selected_k"] or \
            test.scores["best_method"] != reference.scores["selected_method"]
    assert moved  # the test-label oracle chose otherwise at least once


def test_the_selection_is_the_best_validation_clustering_and_the_inductive_one_is_fitted_on_train():
    (test_x, test_y), (val_x, val_y), (train_x, _) = _part(600, 1), _part(500, 2), _part(800, 3)
    test = clustering_scores(test_x, test_y, ks=KS, **OPTIONS)
    held = held_out_clusterings(test, test_x, test_y, val_x, val_y, train_x, ks=KS, **OPTIONS)
    val = clustering_scores(val_x, val_y, ks=KS, **OPTIONS).scores
    assert (held.scores["selected_method"], held.scores["selected_k"]) == (val["best_method"], val["best_k"])
    assert held.scores["val_ari_selected"] == val["ari_best"]
    name = f"{val['best_method']}_k{val['best_k']}"
    assert np.array_equal(held.selected, test.assignments[name])
    # the saved clusterer's parameters assign the test rows as scored
    from lithovae.prediction.clusterer import FittedClusterer

    clusterer = FittedClusterer(held.inductive_fitted)
    assert np.array_equal(clusterer.predict(test_x), held.inductive)
    labeled = test_y >= 0
    assert held.scores["ari_inductive"] == pytest.approx(
        adjusted_rand_score(test_y[labeled], held.inductive[labeled]))
    assert (clusterer.method, clusterer.k) == (held.scores["inductive_method"], held.scores["inductive_k"])


def test_no_validation_lithology_leaves_the_selection_undefined(caplog):
    (test_x, test_y), (val_x, val_y) = _part(300, 1), _part(200, 2)
    test = clustering_scores(test_x, test_y, ks=KS, **OPTIONS)
    held = held_out_clusterings(test, test_x, test_y, val_x, np.full_like(val_y, -1), None, ks=KS, **OPTIONS)
    assert np.isnan(held.scores["ari_selected"]) and held.scores["selected_method"] is None
    assert held.selected is None and "ari_inductive" not in held.scores
    assert "ARI is undefined" in caplog.text


SPEC = DataSpec(n_features=3, feature_names=("A", "B", "C"), n_classes=4, n_groups=1,
                class_counts=(1, 1, 1, 1), group_counts=(4,))


def _tensors(x, y):
    return {"x": torch.from_numpy(x), "observed": torch.ones(x.shape, dtype=torch.bool), "y": torch.from_numpy(y)}


def test_the_search_objective_never_sees_the_test_labels(tmp_path):
    """hparams_search=ari_optuna maximises its optimized_metric: a score that permuting the test
    labels leaves unchanged, while the test scores change."""
    from tests.conftest import compose_train

    cfg = compose_train(["hparams_search=ari_optuna"], tmp_path)
    objective = cfg.optimized_metric
    torch.manual_seed(0)
    model = VAE(SPEC, latent_dim=2, hidden=[8], batchnorm=False, dropout=0.0)
    (test_x, test_y), (val_x, val_y), (train_x, train_y) = _part(400, 1), _part(300, 2), _part(500, 3)
    held_out = {"val": _tensors(val_x, val_y), "train": _tensors(train_x, train_y)}
    options = dict(k=list(KS), n_init=2, gmm=True, silhouette_samples=200, max_fit_samples=None,
                   train_fit_samples=None, bootstrap={"resamples": 0, "level": 0.95}, backend="torch", seed=0)
    first, _ = score_model(model, _tensors(test_x, test_y), list(SPEC.feature_names), held_out=held_out, **options)
    permuted = test_y.copy()
    labeled = np.flatnonzero(test_y >= 0)
    permuted[labeled] = np.random.default_rng(0).permutation(test_y[labeled])
    second, _ = score_model(model, _tensors(test_x, permuted), list(SPEC.feature_names), held_out=held_out, **options)
    assert objective in first and np.isfinite(first[objective])
    assert second[objective] == first[objective]
    assert second["ari_best"] != first["ari_best"]  # the test scores did see the permutation


def test_a_damaged_baseline_cache_is_recomputed_and_rewritten(tmp_path):
    from lithovae.evaluation.scoring import raw_feature_baseline

    (test_x, test_y), (val_x, val_y), (train_x, _) = _part(300, 1), _part(200, 2), _part(300, 3)
    parts = {"val_x": val_x, "val_y": val_y, "train_x": train_x}
    options = dict(k=list(KS), parts=parts, cache_dir=tmp_path, **OPTIONS)
    scores, assignments = raw_feature_baseline(test_x, test_y, **options)
    (cached,) = (tmp_path / "baselines").glob("*.json")
    assert set(assignments) == {"ari_selected", "ari_inductive"}
    again, same = raw_feature_baseline(test_x, test_y, **options)  # read back
    assert again.keys() == scores.keys() and all(np.array_equal(same[n], assignments[n]) for n in same)
    for damage in ('{"scores": {"baseline_ari_best": {"_target_": "os.system"}}, "assignments": {}}',
                   '{"scores": {}, "assignments": {"ari_selected": [1, 2]}}', "not json"):
        cached.write_text(damage)
        rebuilt, fresh = raw_feature_baseline(test_x, test_y, **options)
        assert rebuilt["baseline_ari_selected"] == scores["baseline_ari_selected"]
        assert np.array_equal(fresh["ari_selected"], assignments["ari_selected"])
        assert "_target_" not in cached.read_text() and len(cached.read_text()) > 100


def _same_baseline(a, b) -> bool:
    (scores_a, assigned_a), (scores_b, assigned_b) = a, b
    same = {k: v for k, v in scores_a.items() if v == v} == {k: v for k, v in scores_b.items() if v == v}
    return same and assigned_a.keys() == assigned_b.keys() and all(
        np.array_equal(assigned_a[n], assigned_b[n]) for n in assigned_a)


@pytest.mark.slow  # a spawned process imports torch: seconds
def test_the_baseline_computed_in_another_process_is_the_same(tmp_path, monkeypatch):
    from lithovae.evaluation import background, scoring

    (test_x, test_y), (val_x, val_y), (train_x, _) = _part(300, 1), _part(200, 2), _part(300, 3)
    parts = {"val_x": val_x, "val_y": val_y, "train_x": train_x}
    options = dict(k=list(KS), **OPTIONS)
    here = scoring.raw_feature_baseline(test_x, test_y, parts=parts, cache_dir=None, **options)
    monkeypatch.setattr(scoring, "BACKGROUND_BASELINE_ROWS", 0)  # this small set in a process too
    started = scoring._start_baseline(test_x, test_y, parts, tmp_path, options)
    assert isinstance(started, background.Background) and started.process is not None
    assert _same_baseline(started.result(), here)
    assert started.process is None  # ended once its result came back
    # read back from the cache that process wrote: nothing to start
    assert isinstance(scoring._start_baseline(test_x, test_y, parts, tmp_path, options), background.Here)


def _fails(value):
    raise ValueError(f"bad value {value}")


@pytest.mark.slow
def test_a_function_that_fails_in_its_process_is_computed_here():
    from lithovae.evaluation.background import Background

    with pytest.raises(ValueError, match="bad value 3"):  # the real error, raised here
        Background(_fails, 3).result()
