"""Evaluation metrics on numpy arrays: clustering, reconstruction, classification.

Every function is deterministic given its ``seed``. Where a score is undefined
(too few rows, constant targets, non-finite predictions, no labeled rows) it is
NaN, never a stand-in number.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    balanced_accuracy_score,
    r2_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture

__all__ = [
    "ClusteringResult",
    "clustering_scores",
    "silhouette",
    "reconstruction_r2",
    "imputation_r2",
    "classification_scores",
    "active_dims",
]

GMM_REG_COVAR = (1e-6, 1e-4, 1e-2)  # sklearn's default first, then stronger regularisation
log = logging.getLogger("lithovae")


@dataclass
class ClusteringResult:
    """Output of :func:`clustering_scores`.

    ``scores``: ``ari_kmeans_k{k}``, ``ari_gmm_k{k}`` (float), ``ari_best`` (float),
    ``best_k`` (int or None), ``best_method`` ("kmeans", "gmm" or None).
    ``assignment``: int cluster per input row (labeled or not) from the best run;
    None when no run could be scored.
    """

    scores: dict[str, float | int | str | None]
    assignment: np.ndarray | None


def _as_2d(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {array.shape}")
    return array


def seeded_subsample(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of ``size`` out of ``n`` (all rows if None or n <= size)."""
    if size is None or n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _fit_predict(method: str, k: int, fit_rows: np.ndarray, latent: np.ndarray, seed: int,
                 n_init: int, gmm_covariance: str) -> np.ndarray | None:
    """Cluster codes of every row, or None (with a one-line warning) when the fit fails.

    A Gaussian mixture on a collapsed latent (constant or duplicated dimensions) has singular
    covariances; it is refitted with a larger ``reg_covar`` before giving up.
    """
    if method == "kmeans":
        with warnings.catch_warnings():
            # fewer distinct points than k: sklearn warns and still returns k labels
            warnings.filterwarnings("ignore", message="Number of distinct clusters")
            return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(fit_rows).predict(latent)
    for reg_covar in GMM_REG_COVAR:
        try:
            model = GaussianMixture(n_components=k, covariance_type=gmm_covariance,
                                    reg_covar=reg_covar, random_state=seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Number of distinct clusters")
                model.fit(fit_rows)
            return model.predict(latent)
        except ValueError as exc:  # "ill-defined empirical covariance"
            reason = str(exc).splitlines()[0]
    log.warning("gmm k=%d: fit failed even with reg_covar=%g (%s); ari_gmm_k%d = null",
                k, GMM_REG_COVAR[-1], reason[:120], k)
    return None


def clustering_scores(latent, labels, ks: Sequence[int], seed: int = 0,
                      n_init: int = 10, gmm: bool = True, max_fit_samples: int | None = None,
                      gmm_covariance: str = "full", prefix: str = "") -> ClusteringResult:
    """Adjusted Rand index of k-means (and GMM) clusterings of ``latent`` against ``labels``.

    Clusterers are fitted on all rows (clustering uses no labels), or on a seeded
    subsample of ``max_fit_samples`` rows when set, and then predict every row;
    only rows with ``label >= 0`` are scored. KMeans uses ``n_init`` restarts;
    GaussianMixture uses ``covariance_type=gmm_covariance`` ("full", sklearn's
    default, or "diag") with one k-means-seeded initialisation, refitted with a
    larger ``reg_covar`` if the covariances are singular.
    Undefined scores are NaN (null in metrics.json), each with a one-line warning:
    a k larger than the number of fitted rows, fewer than two labeled classes (ARI
    has nothing to agree with), non-finite latents, or a fit that fails.
    The best run is the highest ARI; ties go to the first in (k, kmeans, gmm) order.
    ``prefix`` names the keys (``baseline_`` for the raw-feature baseline).
    """
    latent = _as_2d("latent", latent)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != latent.shape[0]:
        raise ValueError(f"latent has {latent.shape[0]} rows but labels has {labels.shape[0]}")
    if gmm_covariance not in ("full", "diag"):
        raise ValueError(f"gmm_covariance must be 'full' or 'diag', got {gmm_covariance!r}")
    if max_fit_samples is not None and max_fit_samples < 1:
        raise ValueError(f"max_fit_samples must be >= 1 or None, got {max_fit_samples!r}")

    fit_rows = latent[seeded_subsample(latent.shape[0], max_fit_samples, seed)]
    labeled = labels >= 0
    what = "raw features" if prefix else "latent means"
    skip = None
    if np.unique(labels[labeled]).size < 2:
        skip = f"{int(labeled.sum())} labeled rows in {np.unique(labels[labeled]).size} class(es): ARI is undefined"
    elif not np.isfinite(latent).all():
        skip = f"the {what} have non-finite values"
    if skip:
        log.warning("%sclustering: %s; %sari_* = null", prefix, skip, prefix)

    methods = ["kmeans", "gmm"] if gmm else ["kmeans"]
    scores: dict[str, float | int | str | None] = {}
    best = (np.nan, None, None, None)  # (ari, k, method, assignment)
    for k in ks:
        for method in methods:
            key = f"{prefix}ari_{method}_k{k}"
            scores[key] = float("nan")
            if skip:
                continue
            if k > fit_rows.shape[0]:
                log.warning("%s k=%d: only %d rows to cluster; %s = null", method, k, fit_rows.shape[0], key)
                continue
            assignment = _fit_predict(method, k, fit_rows, latent, seed, n_init, gmm_covariance)
            if assignment is None:
                continue
            ari = float(adjusted_rand_score(labels[labeled], assignment[labeled]))
            scores[key] = ari
            if np.isnan(best[0]) or ari > best[0]:
                best = (ari, k, method, assignment)
    scores[f"{prefix}ari_best"] = float(best[0])
    scores[f"{prefix}best_k"] = best[1]
    scores[f"{prefix}best_method"] = best[2]
    return ClusteringResult(scores=scores, assignment=best[3])


def silhouette(latent, assignment, sample_size: int | None = 10000, seed: int = 0) -> float:
    """sklearn silhouette score on a seeded subsample of ``sample_size`` rows (all rows if None).

    NaN when the (sub)sample has fewer than 2 clusters or every row is its own cluster.
    """
    latent = _as_2d("latent", latent)
    assignment = np.asarray(assignment).reshape(-1)
    if assignment.shape[0] != latent.shape[0]:
        raise ValueError(f"latent has {latent.shape[0]} rows but assignment has {assignment.shape[0]}")
    rows = seeded_subsample(latent.shape[0], sample_size, seed)
    latent, assignment = latent[rows], assignment[rows]
    n_clusters = np.unique(assignment).size
    if n_clusters < 2 or n_clusters >= latent.shape[0]:
        return float("nan")
    return float(silhouette_score(latent, assignment))


def _masked_r2(x_true, x_pred, mask, feature_names: Sequence[str], prefix: str) -> dict[str, float]:
    x_true = _as_2d("x_true", x_true)
    x_pred = _as_2d("x_pred", x_pred)
    mask = _as_2d("mask", mask).astype(bool)
    names = list(feature_names)
    if not (x_true.shape == x_pred.shape == mask.shape) or x_true.shape[1] != len(names):
        raise ValueError(f"shapes disagree: x_true {x_true.shape}, x_pred {x_pred.shape}, "
                         f"mask {mask.shape}, {len(names)} feature names")
    scores: dict[str, float] = {}
    for j, name in enumerate(names):
        rows = mask[:, j]
        y_true, y_pred = x_true[rows, j], x_pred[rows, j]
        if not np.isfinite(y_true).all():
            raise ValueError(f"x_true has non-finite values where {name} is marked present")
        # R^2 is undefined for < 2 rows or a constant target; a NaN/inf prediction has no score.
        if rows.sum() < 2 or np.ptp(y_true) == 0 or not np.isfinite(y_pred).all():
            scores[f"{prefix}_{name}"] = float("nan")
        else:
            scores[f"{prefix}_{name}"] = float(r2_score(y_true, y_pred))
    defined = [value for value in scores.values() if not np.isnan(value)]
    # The mean covers the features where R^2 is defined; NaN if none is.
    scores[f"{prefix}_mean"] = float(np.mean(defined)) if defined else float("nan")
    return scores


def reconstruction_r2(x_true, x_pred, observed, feature_names: Sequence[str]) -> dict[str, float]:
    """``r2_{feature}`` over observed rows of each feature (scaled space) and ``r2_mean``."""
    return _masked_r2(x_true, x_pred, observed, feature_names, "r2")


def imputation_r2(x_true, x_pred, hidden, feature_names: Sequence[str]) -> dict[str, float]:
    """``imputation_r2_{feature}`` over entries observed but hidden from the encoder, and
    ``imputation_r2_mean``."""
    return _masked_r2(x_true, x_pred, hidden, feature_names, "imputation_r2")


def classification_scores(logits, target, n_classes: int) -> dict[str, float]:
    """``auc_pooled``, ``balanced_accuracy``, ``accuracy`` over labeled rows (target >= 0).

    ``auc_pooled`` is the micro-averaged one-vs-rest ROC AUC: softmax probabilities
    against one-hot targets, pooled over all ``n_classes`` columns.
    ``balanced_accuracy`` (sklearn) averages recall over the classes present in target.
    All three are NaN with no labeled rows or non-finite logits.
    """
    logits = _as_2d("logits", logits)
    target = np.asarray(target).reshape(-1)
    if logits.shape != (target.shape[0], n_classes):
        raise ValueError(f"logits must be [N, n_classes] = [{target.shape[0]}, {n_classes}], "
                         f"got {logits.shape}")
    if target.size and target.max() >= n_classes:
        raise ValueError(f"target has class code {target.max()} >= n_classes {n_classes}")
    labeled = target >= 0
    nan = float("nan")
    # Non-finite logits make both the argmax and the probabilities meaningless.
    if not labeled.any() or not np.isfinite(logits[labeled]).all():
        return {"auc_pooled": nan, "balanced_accuracy": nan, "accuracy": nan}
    logits, target = logits[labeled].astype(np.float64), target[labeled]
    predicted = logits.argmax(axis=1)
    with warnings.catch_warnings():
        # With many classes, predictions often include classes absent from target.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(target, predicted))
    auc = nan
    if n_classes >= 2:  # one class gives no negatives to rank against
        probs = softmax(logits, axis=1)
        one_hot = np.zeros(probs.shape, dtype=np.int8)
        one_hot[np.arange(target.size), target] = 1
        auc = float(roc_auc_score(one_hot.ravel(), probs.ravel()))
    return {"auc_pooled": auc, "balanced_accuracy": balanced,
            "accuracy": float(np.mean(predicted == target))}


def active_dims(latent, threshold: float = 0.1) -> int:
    """Number of latent dimensions whose latent means vary across rows: std > threshold."""
    latent = _as_2d("latent", latent)
    return int((latent.std(axis=0) > threshold).sum())
