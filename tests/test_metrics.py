import math

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    adjusted_rand_score,
    balanced_accuracy_score,
    r2_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture

from lithovae.evaluation import (
    active_dims,
    classification_scores,
    clustering_scores,
    imputation_r2,
    reconstruction_r2,
    silhouette,
)
from lithovae.evaluation.metrics import latent_abs_correlation

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]


@pytest.fixture(scope="module")
def blobs():
    latent, labels = make_blobs(n_samples=600, centers=12, n_features=5, cluster_std=2.5,
                                random_state=0)
    labels = labels.copy()
    labels[::7] = -1  # some unlabeled rows: clustered but not scored
    return latent, labels


def test_clustering_ari_matches_independent_sklearn_fits(blobs):
    latent, labels = blobs
    result = clustering_scores(latent, labels, ks=(10, 12), seed=3, n_init=4)
    scored = labels >= 0
    for k in (10, 12):
        km = KMeans(n_clusters=k, n_init=4, random_state=3).fit_predict(latent)
        gm = GaussianMixture(n_components=k, covariance_type="full", random_state=3).fit(latent)
        assert result.scores[f"ari_kmeans_k{k}"] == pytest.approx(
            adjusted_rand_score(labels[scored], km[scored]), abs=1e-12)
        assert result.scores[f"ari_gmm_k{k}"] == pytest.approx(
            adjusted_rand_score(labels[scored], gm.predict(latent)[scored]), abs=1e-12)
    aris = {key: v for key, v in result.scores.items() if key.startswith("ari_") and key != "ari_best"}
    assert len(aris) == 4
    assert result.scores["ari_best"] == max(aris.values())
    best_key = f"ari_{result.scores['best_method']}_k{result.scores['best_k']}"
    assert result.scores[best_key] == result.scores["ari_best"]
    # the returned assignment is the best run's, over every row
    assert result.assignment.shape == (latent.shape[0],)
    assert adjusted_rand_score(labels[scored], result.assignment[scored]) == pytest.approx(
        result.scores["ari_best"], abs=1e-12)


def test_clustering_is_deterministic_and_kmeans_only(blobs):
    latent, labels = blobs
    a = clustering_scores(latent, labels, ks=(12,), seed=0, n_init=3, gmm=False)
    b = clustering_scores(latent, labels, ks=(12,), seed=0, n_init=3, gmm=False)
    assert set(a.scores) == {"ari_kmeans_k12", "ari_best", "best_k", "best_method"}
    assert a.scores == b.scores
    assert np.array_equal(a.assignment, b.assignment)
    assert a.scores["best_method"] == "kmeans" and a.scores["best_k"] == 12


def test_clustering_subsampled_fit_predicts_all_rows(blobs):
    latent, labels = blobs
    result = clustering_scores(latent, labels, ks=(12,), seed=5, n_init=2, gmm=False,
                               max_fit_samples=200)
    rows = np.sort(np.random.default_rng(5).choice(latent.shape[0], 200, replace=False))
    expected = KMeans(n_clusters=12, n_init=2, random_state=5).fit(latent[rows]).predict(latent)
    scored = labels >= 0
    assert result.assignment.shape == (latent.shape[0],)
    assert result.scores["ari_kmeans_k12"] == pytest.approx(
        adjusted_rand_score(labels[scored], expected[scored]), abs=1e-12)


def test_clustering_without_labels_is_nan(blobs):
    latent, _ = blobs
    result = clustering_scores(latent, -np.ones(latent.shape[0], dtype=int), ks=(10,), n_init=1)
    assert math.isnan(result.scores["ari_kmeans_k10"]) and math.isnan(result.scores["ari_best"])
    assert result.scores["best_k"] is None and result.assignment is None


def test_clustering_diag_gmm_differs_from_full(blobs):
    latent, labels = blobs
    diag = clustering_scores(latent, labels, ks=(12,), n_init=1, gmm_covariance="diag")
    gm = GaussianMixture(12, covariance_type="diag", random_state=0).fit(latent)
    scored = labels >= 0
    assert diag.scores["ari_gmm_k12"] == pytest.approx(
        adjusted_rand_score(labels[scored], gm.predict(latent)[scored]), abs=1e-12)
    with pytest.raises(ValueError, match="gmm_covariance"):
        clustering_scores(latent, labels, ks=(12,), gmm_covariance="tied")


def test_silhouette_against_sklearn_and_nan(blobs):
    latent, labels = blobs
    assignment = KMeans(n_clusters=12, n_init=2, random_state=0).fit_predict(latent)
    assert silhouette(latent, assignment, sample_size=None) == pytest.approx(
        silhouette_score(latent, assignment), abs=1e-12)
    assert silhouette(latent, assignment, sample_size=10000) == pytest.approx(
        silhouette_score(latent, assignment), abs=1e-12)  # fewer rows than the sample: all rows
    sub = silhouette(latent, assignment, sample_size=200, seed=1)
    assert sub == silhouette(latent, assignment, sample_size=200, seed=1)
    rows = np.sort(np.random.default_rng(1).choice(latent.shape[0], 200, replace=False))
    assert sub == pytest.approx(silhouette_score(latent[rows], assignment[rows]), abs=1e-12)
    assert math.isnan(silhouette(latent, np.zeros(latent.shape[0], dtype=int)))


@pytest.fixture()
def recon_data():
    rng = np.random.default_rng(0)
    x_true = rng.normal(size=(200, 6))
    x_pred = x_true + rng.normal(scale=0.5, size=(200, 6))
    observed = rng.random((200, 6)) > 0.25
    return x_true, x_pred, observed


def test_reconstruction_r2_matches_r2_score_on_observed_rows(recon_data):
    x_true, x_pred, observed = recon_data
    scores = reconstruction_r2(x_true, x_pred, observed, FEATURES)
    expected = [r2_score(x_true[observed[:, j], j], x_pred[observed[:, j], j]) for j in range(6)]
    for j, name in enumerate(FEATURES):
        assert scores[f"r2_{name}"] == pytest.approx(expected[j], abs=1e-12)
    assert scores["r2_mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    # unobserved entries must not count: corrupting them changes nothing
    corrupted = np.where(observed, x_pred, 1e6)
    assert reconstruction_r2(x_true, corrupted, observed, FEATURES) == scores


def test_reconstruction_r2_nan_cases(recon_data):
    x_true, x_pred, observed = recon_data
    x_pred = x_pred.copy()
    observed = observed.copy()
    x_pred[:, 0] = np.nan  # no prediction for GRA
    observed[:, 1] = False
    observed[0, 1] = True  # a single MS row
    x_true = x_true.copy()
    x_true[:, 2] = 3.0  # constant NGR: R^2 undefined
    scores = reconstruction_r2(x_true, x_pred, observed, FEATURES)
    assert math.isnan(scores["r2_GRA"]) and math.isnan(scores["r2_MS"]) and math.isnan(scores["r2_NGR"])
    defined = [r2_score(x_true[observed[:, j], j], x_pred[observed[:, j], j]) for j in (3, 4, 5)]
    assert scores["r2_mean"] == pytest.approx(np.mean(defined), abs=1e-12)
    all_nan = reconstruction_r2(x_true, np.full_like(x_pred, np.nan), observed, FEATURES)
    assert all(math.isnan(v) for v in all_nan.values())


def test_imputation_r2_uses_hidden_entries(recon_data):
    x_true, x_pred, observed = recon_data
    hidden = observed & (np.random.default_rng(1).random(observed.shape) < 0.4)
    scores = imputation_r2(x_true, x_pred, hidden, FEATURES)
    for j, name in enumerate(FEATURES):
        assert scores[f"imputation_r2_{name}"] == pytest.approx(
            r2_score(x_true[hidden[:, j], j], x_pred[hidden[:, j], j]), abs=1e-12)
    assert "imputation_r2_mean" in scores
    with pytest.raises(ValueError, match="shapes"):
        imputation_r2(x_true, x_pred, hidden[:, :5], FEATURES)


def test_classification_scores_against_sklearn():
    rng = np.random.default_rng(0)
    n, n_classes = 400, 7
    target = rng.integers(0, 5, size=n)  # classes 5, 6 never occur but are predicted sometimes
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), target] += 1.5
    target[::9] = -1
    scores = classification_scores(logits, target, n_classes)
    labeled = target >= 0
    probs = softmax(logits[labeled], axis=1)
    one_hot = np.eye(n_classes)[target[labeled]]
    assert scores["auc_pooled"] == pytest.approx(
        roc_auc_score(one_hot, probs, average="micro"), abs=1e-12)
    predicted = logits[labeled].argmax(1)
    with pytest.warns(UserWarning):
        expected_bal = balanced_accuracy_score(target[labeled], predicted)
    assert scores["balanced_accuracy"] == pytest.approx(expected_bal, abs=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(predicted == target[labeled]), abs=1e-12)
    # balanced accuracy differs from accuracy on imbalanced data
    assert scores["balanced_accuracy"] != scores["accuracy"]


def test_classification_scores_perfect_and_nan():
    target = np.array([0, 1, 2, 1])
    logits = np.eye(3)[target] * 10
    scores = classification_scores(logits, target, 3)
    assert scores == {"auc_pooled": 1.0, "auc_macro": 1.0, "auc_micro": 1.0, "balanced_accuracy": 1.0,
                      "accuracy": 1.0, "n_classes_scored": 3, "n_classes_head": 3}
    counts = ("n_classes_scored", "n_classes_head")
    nan_scores = classification_scores(logits, -np.ones(4, dtype=int), 3)
    assert all(math.isnan(v) for k, v in nan_scores.items() if k not in counts)
    assert (nan_scores["n_classes_scored"], nan_scores["n_classes_head"]) == (0, 3)
    bad = logits.copy()
    bad[0, 0] = np.nan
    assert all(math.isnan(v) for k, v in classification_scores(bad, target, 3).items() if k not in counts)
    with pytest.raises(ValueError, match="n_classes"):
        classification_scores(logits, target, 4)


def test_active_dims():
    rng = np.random.default_rng(0)
    latent = np.column_stack([rng.normal(scale=s, size=1000) for s in (1.0, 0.5, 0.02, 0.01, 0.2)])
    assert active_dims(latent) == 3
    assert active_dims(latent, threshold=0.6) == 1


def test_latent_abs_correlation_over_the_active_dims():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=5000) for _ in range(3))
    independent = np.column_stack([a, b, c])
    assert latent_abs_correlation(independent) < 0.03
    # dims 0 and 1 correlated at r = 0.8, dim 2 independent: (0.8 + 0 + 0) / 3 pairs
    correlated = np.column_stack([a, 0.8 * a + 0.6 * b, c])
    assert latent_abs_correlation(correlated) == pytest.approx(0.8 / 3, abs=0.03)
    # a collapsed dim is left out however correlated its tiny wiggle is; one active dim is NaN
    collapsed = np.column_stack([a, 0.01 * a, c])
    assert latent_abs_correlation(collapsed) < 0.03
    assert math.isnan(latent_abs_correlation(np.column_stack([a, 0.01 * b])))
