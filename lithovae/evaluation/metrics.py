"""Evaluation metrics on numpy arrays: clustering, reconstruction, classification.

Every function is deterministic given its ``seed``. Where a score is undefined
(too few rows, constant targets, non-finite predictions, no labeled rows) it is
NaN, never a stand-in number.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
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

from lithovae.evaluation import batched
from lithovae.evaluation.batched import GMM_REG_COVAR, seeded_subsample
from lithovae.evaluation.batched import adjusted_rand as adjusted_rand_batch

__all__ = [
    "ClusteringResult",
    "fitted_params",
    "clustering_scores",
    "clustering_scores_many",
    "silhouette",
    "silhouettes",
    "reconstruction_r2",
    "reconstruction_errors",
    "group_reconstruction_errors",
    "group_coherence",
    "group_accuracy",
    "imputation_r2",
    "classification_scores",
    "active_dims",
    "latent_abs_correlation",
]

BACKENDS = ("torch", "sklearn")  # the eval config's ``backend``: who fits the clusterings
log = logging.getLogger("lithovae")


@dataclass
class ClusteringResult:
    """Output of :func:`clustering_scores`.

    ``scores``: ``ari_kmeans_k{k}``, ``ari_gmm_k{k}`` (float), ``ari_best`` (float),
    ``best_k`` (int or None), ``best_method`` ("kmeans", "gmm" or None).
    ``assignment``: int cluster per input row (labeled or not) from the best run;
    None when no run could be scored.
    ``assignments``: the int cluster per row of every run that was scored, keyed like its score
    without ``ari_`` (``kmeans_k10``, ``gmm_k12``; e.g. for a silhouette per k).
    ``fitted``: the fitted parameters of those runs, same keys (:func:`fitted_params`): what
    assigns new rows to the same clusters (``best_fitted``: of the best run).
    """

    scores: dict[str, float | int | str | None]
    assignment: np.ndarray | None
    assignments: dict[str, np.ndarray] = field(default_factory=dict)
    fitted: dict[str, dict] = field(default_factory=dict)

    @property
    def best_fitted(self) -> dict | None:
        method, k = self.scores.get("best_method"), self.scores.get("best_k")
        return self.fitted.get(f"{method}_k{k}") if method else None


def fitted_params(method: str, k: int, *, centers=None, weights=None, means=None, covariances=None,
                  covariance: str = "full") -> dict:
    """A fitted clusterer as plain float64 arrays: ``{"method": "kmeans", "k", "centers" [k, D]}``
    or ``{"method": "gmm", "k", "covariance", "weights" [k], "means" [k, D], "covariances"
    [k, D, D] (full) or [k, D] (diag)}``."""
    def array(a):
        return np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)

    if method == "kmeans":
        return {"method": method, "k": int(k), "centers": array(centers)}
    return {"method": method, "k": int(k), "covariance": covariance, "weights": array(weights),
            "means": array(means), "covariances": array(covariances)}


def _as_2d(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {array.shape}")
    return array


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _fit_predict(method: str, k: int, fit_rows: np.ndarray, latent: np.ndarray, seed: int,
                 n_init: int, gmm_covariance: str) -> tuple[np.ndarray, dict] | None:
    """Cluster codes of every row and the fitted parameters (:func:`fitted_params`), or None
    (with a one-line warning) when the fit fails.

    A Gaussian mixture on a collapsed latent (constant or duplicated dimensions) has singular
    covariances; it is refitted with a larger ``reg_covar`` before giving up.
    """
    if method == "kmeans":
        with warnings.catch_warnings():
            # fewer distinct points than k: sklearn warns and still returns k labels
            warnings.filterwarnings("ignore", message="Number of distinct clusters")
            model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(fit_rows)
            return model.predict(latent), fitted_params(method, k, centers=model.cluster_centers_)
    for reg_covar in GMM_REG_COVAR:
        try:
            model = GaussianMixture(n_components=k, covariance_type=gmm_covariance,
                                    reg_covar=reg_covar, random_state=seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Number of distinct clusters")
                model.fit(fit_rows)
            return model.predict(latent), fitted_params(
                method, k, weights=model.weights_, means=model.means_, covariances=model.covariances_,
                covariance=gmm_covariance)
        except ValueError as exc:  # "ill-defined empirical covariance"
            reason = str(exc).splitlines()[0]
    _gmm_failed(k, reason)
    return None


def _gmm_failed(k: int, reason: str, where: str = "") -> None:
    log.warning("%sgmm k=%d: fit failed even with reg_covar=%g (%s); ari_gmm_k%d = null",
                where, k, GMM_REG_COVAR[-1], reason[:120], k)


class _Member:
    """One latent to score: its checks (and their one-line warnings) before any fit."""

    def __init__(self, latent, labels: np.ndarray, ks: Sequence[int], max_fit_samples: int | None,
                 seed: int, prefix: str, where: str, fit_rows: np.ndarray | None = None):
        self.latent = _as_2d("latent", latent)
        if labels.shape[0] != self.latent.shape[0]:
            raise ValueError(f"latent has {self.latent.shape[0]} rows but labels has {labels.shape[0]}")
        self.labels, self.where, self.prefix = labels, where, prefix
        self.labeled = labels >= 0
        self.fit_index = (seeded_subsample(self.latent.shape[0], max_fit_samples, seed) if fit_rows is None
                          else np.asarray(fit_rows, dtype=np.int64))
        what = "raw features" if prefix else "latent means"
        self.skip = None
        classes = np.unique(labels[self.labeled]).size
        if classes < 2:
            self.skip = f"{int(self.labeled.sum())} labeled rows in {classes} class(es): ARI is undefined"
        elif not np.isfinite(self.latent).all():
            self.skip = f"the {what} have non-finite values"
        if self.skip:
            log.warning("%s%sclustering: %s; %sari_* = null", where, prefix, self.skip, prefix)

    def fits(self, ks: Sequence[int], methods: Sequence[str]) -> list[int]:
        """The ks that can be fitted (warning for each one with fewer rows than k)."""
        if self.skip:
            return []
        n_fit = len(self.fit_index)
        for k in ks:
            if k > n_fit:
                for method in methods:
                    log.warning("%s%s k=%d: only %d rows to cluster; %sari_%s_k%d = null",
                                self.where, method, k, n_fit, self.prefix, method, k)
        return [k for k in ks if k <= n_fit]

    def result(self, ks: Sequence[int], methods: Sequence[str], assignments: dict,
               aris: dict | None = None, fitted: dict | None = None) -> ClusteringResult:
        """Scores from ``assignments[(k, method)]`` (missing or None: null); ``aris`` the
        already computed ARIs of some of them; ``fitted[(k, method)]`` their parameters."""
        scores: dict[str, float | int | str | None] = {}
        kept: dict[str, np.ndarray] = {}
        params: dict[str, dict] = {}
        best = (np.nan, None, None, None)  # (ari, k, method, assignment)
        for k in ks:
            for method in methods:
                key = f"{self.prefix}ari_{method}_k{k}"
                scores[key] = float("nan")
                assignment = assignments.get((k, method))
                if assignment is None:
                    continue
                ari = (aris or {}).get((k, method))
                if ari is None:
                    ari = float(adjusted_rand_score(self.labels[self.labeled], assignment[self.labeled]))
                scores[key] = ari
                kept[f"{method}_k{k}"] = assignment
                if (fitted or {}).get((k, method)) is not None:
                    params[f"{method}_k{k}"] = fitted[(k, method)]
                if np.isnan(best[0]) or ari > best[0]:
                    best = (ari, k, method, assignment)
        scores[f"{self.prefix}ari_best"] = float(best[0])
        scores[f"{self.prefix}best_k"] = best[1]
        scores[f"{self.prefix}best_method"] = best[2]
        return ClusteringResult(scores=scores, assignment=best[3], assignments=kept, fitted=params)


def _check_options(gmm_covariance: str, max_fit_samples: int | None, backend: str) -> None:
    if gmm_covariance not in ("full", "diag"):
        raise ValueError(f"gmm_covariance must be 'full' or 'diag', got {gmm_covariance!r}")
    if max_fit_samples is not None and max_fit_samples < 1:
        raise ValueError(f"max_fit_samples must be >= 1 or None, got {max_fit_samples!r}")
    _check_backend(backend)


def clustering_scores(latent, labels, ks: Sequence[int], seed: int = 0,
                      n_init: int = 10, gmm: bool = True, max_fit_samples: int | None = None,
                      gmm_covariance: str = "full", prefix: str = "",
                      backend: str = "sklearn", fit_rows=None) -> ClusteringResult:
    """Adjusted Rand index of k-means (and GMM) clusterings of ``latent`` against ``labels``.

    Clusterers are fitted on all rows (clustering uses no labels), or on a seeded
    subsample of ``max_fit_samples`` rows when set, and then predict every row;
    only rows with ``label >= 0`` are scored. KMeans uses ``n_init`` restarts;
    GaussianMixture uses ``covariance_type=gmm_covariance`` ("full", sklearn's
    default, or "diag") with one k-means-seeded initialisation, refitted with a
    larger ``reg_covar`` if the covariances are singular.
    ``backend``: "sklearn" fits each (k, method) with scikit-learn; "torch" fits them all
    in one batched computation (:mod:`lithovae.evaluation.batched`, the same algorithms;
    the eval config's ``backend`` key chooses it for runs).
    Undefined scores are NaN (null in metrics.json), each with a one-line warning:
    a k larger than the number of fitted rows, fewer than two labeled classes (ARI
    has nothing to agree with), non-finite latents, or a fit that fails.
    The best run is the highest ARI; ties go to the first in (k, kmeans, gmm) order.
    ``prefix`` names the keys (``baseline_`` for the raw-feature baseline).
    ``fit_rows``: the rows to fit on instead (e.g. the training rows of a stack of parts; then
    ``max_fit_samples`` is not applied); every row is still predicted and labeled rows scored.
    """
    latent = _as_2d("latent", latent)
    return clustering_scores_many([latent], np.asarray(labels).reshape(-1), ks, seed=seed,
                                  n_init=n_init, gmm=gmm, max_fit_samples=max_fit_samples,
                                  gmm_covariance=gmm_covariance, prefix=prefix, backend=backend,
                                  fit_rows=fit_rows)[0]


def clustering_scores_many(latents, labels, ks: Sequence[int], *, seed: int, n_init: int,
                           gmm: bool, max_fit_samples: int | None, gmm_covariance: str = "full",
                           prefix: str = "", backend: str,
                           members_per_pass: int | None = None, fit_rows=None) -> list[ClusteringResult]:
    """:func:`clustering_scores` of several members (e.g. the models of a sweep) on the same rows.

    ``latents``: [M, N, D] (numpy or torch; a torch tensor stays on its device) or a list of
    [N, D_m] arrays or tensors; ``labels``: [N] shared, or [M, N] one row per member.
    With the torch backend, every k, restart and GMM of a member is one batched computation,
    and the members of the same width and device are batched ``members_per_pass`` at a time:
    by default all together on a GPU, one at a time on the CPU (where batching members only
    costs cache misses and the iterations of the slowest member: measured 1.5-2x slower).
    A member's results do not depend on the batch it is in. Warnings name the member
    (``member i:``) when there are several.
    """
    _check_options(gmm_covariance, max_fit_samples, backend)
    if isinstance(latents, (np.ndarray, torch.Tensor)):
        if latents.ndim != 3:
            raise ValueError(f"latents must be [M, N, D] or a list of [N, D], got shape {tuple(latents.shape)}")
        latents = list(latents)
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[0] != len(latents)):
        raise ValueError(f"labels must be [N] or [M, N] for {len(latents)} latents, got shape {labels.shape}")
    per_member = [labels] * len(latents) if labels.ndim == 1 else list(labels)
    several = len(latents) > 1
    methods = ["kmeans", "gmm"] if gmm else ["kmeans"]
    tensors = [z.detach() if isinstance(z, torch.Tensor) else None for z in latents]
    members = [_Member(z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else z,
                       np.asarray(y).reshape(-1), ks, max_fit_samples, seed, prefix,
                       f"member {i}: " if several else "", fit_rows)
               for i, (z, y) in enumerate(zip(latents, per_member))]
    if backend == "sklearn":
        results = []
        for member in members:
            fitted_on = member.latent[member.fit_index]
            fits = {(k, method): _fit_predict(method, k, fitted_on, member.latent, seed, n_init,
                                              gmm_covariance)
                    for k in member.fits(ks, methods) for method in methods}
            fits = {key: fit for key, fit in fits.items() if fit is not None}
            results.append(member.result(ks, methods, {key: fit[0] for key, fit in fits.items()},
                                         fitted={key: fit[1] for key, fit in fits.items()}))
        return results
    return _torch_scores(members, tensors, ks, methods, seed, n_init, gmm_covariance, members_per_pass)


def _torch_scores(members: list[_Member], tensors, ks, methods, seed: int, n_init: int,
                  gmm_covariance: str, members_per_pass: int | None) -> list[ClusteringResult]:
    """The torch backend: the members with the same rows, width, ks and device fitted together,
    ``members_per_pass`` at a time (None: all of them on a GPU, one at a time on the CPU)."""
    groups: dict[tuple, list[int]] = {}
    fitted_ks = [member.fits(ks, methods) for member in members]
    for i, member in enumerate(members):
        if fitted_ks[i]:
            device = tensors[i].device if tensors[i] is not None else torch.device("cpu")
            groups.setdefault((member.latent.shape, tuple(fitted_ks[i]), device), []).append(i)
    passes = []
    for (shape, fit_ks, device), indices in groups.items():
        size = members_per_pass or (len(indices) if device.type == "cuda" else 1)
        passes += [(shape, fit_ks, device, indices[s:s + size]) for s in range(0, len(indices), size)]
    assignments: list[dict] = [{} for _ in members]
    aris: list[dict] = [{} for _ in members]
    fitted: list[dict] = [{} for _ in members]
    for shape, fit_ks, device, indices in passes:
        x = torch.stack([(tensors[i] if tensors[i] is not None
                          else torch.as_tensor(np.ascontiguousarray(members[i].latent))).to(device)
                         for i in indices])
        fit_index = members[indices[0]].fit_index
        subsample = len(fit_index) < shape[0]
        fit = x[:, torch.as_tensor(fit_index, device=device)] if subsample else x
        km = batched.kmeans(fit, fit_ks, n_init=n_init, seed=seed, first_labels="gmm" in methods)
        runs = {"kmeans": batched.kmeans_predict(x, km) if subsample else km.labels}
        if "gmm" in methods:
            mixture = batched.gmm(fit, fit_ks, seed=seed, covariance=gmm_covariance,
                                  init_labels=km.first_labels, predict=x if subsample else None)
            runs["gmm"] = mixture.labels
        for j, i in enumerate(indices):
            member = members[i]
            rows = torch.as_tensor(np.flatnonzero(member.labeled), device=device)
            for method, labels in runs.items():
                scored = adjusted_rand_batch(member.labels[member.labeled], labels[j][:, rows])
                for g, k in enumerate(fit_ks):
                    if method == "gmm" and not bool(mixture.ok[j, g]):
                        _gmm_failed(k, "a covariance is not positive definite", member.where)
                        continue
                    assignments[i][(k, method)] = labels[j, g].cpu().numpy()
                    aris[i][(k, method)] = scored[g]
                    fitted[i][(k, method)] = (
                        fitted_params("kmeans", k, centers=km.centers[j, g, :k]) if method == "kmeans"
                        else fitted_params("gmm", k, weights=mixture.weights[j, g, :k],
                                           means=mixture.means[j, g, :k],
                                           covariances=mixture.covariances[j, g, :k],
                                           covariance=gmm_covariance))
    return [member.result(ks, methods, assignments[i], aris[i], fitted[i]) for i, member in enumerate(members)]


def silhouette(latent, assignment, sample_size: int | None = 10000, seed: int = 0,
               backend: str = "sklearn") -> float:
    """sklearn silhouette score on a seeded subsample of ``sample_size`` rows (all rows if None).

    ``backend`` "torch" computes the same score on the same rows in torch
    (:func:`lithovae.evaluation.batched.silhouette`).
    NaN when the (sub)sample has fewer than 2 clusters or every row is its own cluster.
    """
    _check_backend(backend)
    latent = _as_2d("latent", latent)
    assignment = np.asarray(assignment).reshape(-1)
    if assignment.shape[0] != latent.shape[0]:
        raise ValueError(f"latent has {latent.shape[0]} rows but assignment has {assignment.shape[0]}")
    if backend == "torch":
        return batched.silhouette(torch.as_tensor(np.ascontiguousarray(latent)),
                                  torch.as_tensor(np.ascontiguousarray(assignment)), sample_size, seed)
    rows = seeded_subsample(latent.shape[0], sample_size, seed)
    latent, assignment = latent[rows], assignment[rows]
    n_clusters = np.unique(assignment).size
    if n_clusters < 2 or n_clusters >= latent.shape[0]:
        return float("nan")
    return float(silhouette_score(latent, assignment))


def silhouettes(latent, assignments: dict, sample_size: int | None = 10000, seed: int = 0,
                backend: str = "sklearn") -> dict:
    """:func:`silhouette` of each clustering in ``assignments`` (name -> int cluster per row) on
    the same seeded subsample: the same scores as :func:`silhouette` one at a time, with the
    torch backend from distances computed once (:func:`lithovae.evaluation.batched.silhouettes`).
    Returns name -> score (NaN where undefined)."""
    _check_backend(backend)
    latent = _as_2d("latent", latent)
    names = list(assignments)
    if not names:
        return {}
    labels = np.stack([np.asarray(assignments[name]).reshape(-1) for name in names])
    if labels.shape[1] != latent.shape[0]:
        raise ValueError(f"latent has {latent.shape[0]} rows but assignments have {labels.shape[1]}")
    if backend == "torch":
        scores = batched.silhouettes(torch.as_tensor(np.ascontiguousarray(latent)),
                                     torch.as_tensor(np.ascontiguousarray(labels)), sample_size, seed)
        return dict(zip(names, scores))
    # sklearn computes the distances in chunks for each clustering: a shared [n, n] matrix
    # would be 800 MB at the default 10 000 rows
    return {name: silhouette(latent, assignment, sample_size, seed) for name, assignment in zip(names, labels)}


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


def _checked_masked(x_true, x_pred, mask, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x_true = _as_2d("x_true", x_true)
    x_pred = _as_2d("x_pred", x_pred)
    mask = _as_2d("mask", mask).astype(bool)
    if not (x_true.shape == x_pred.shape == mask.shape) or x_true.shape[1] != n_features:
        raise ValueError(f"shapes disagree: x_true {x_true.shape}, x_pred {x_pred.shape}, "
                         f"mask {mask.shape}, {n_features} features")
    return x_true.astype(np.float64), x_pred.astype(np.float64), mask


def _column_errors(x_true: np.ndarray, x_pred: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MAE and RMSE per column over the entries of ``mask``; NaN for a column with no entry or
    a non-finite prediction among them."""
    diff = np.where(mask, x_pred - x_true, 0.0)
    count = mask.sum(axis=0)
    finite = np.where(mask, np.isfinite(diff), True).all(axis=0) & (count > 0)
    diff = np.where(np.isfinite(diff), diff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.abs(diff).sum(axis=0) / count
        rmse = np.sqrt((diff ** 2).sum(axis=0) / count)
    return np.where(finite, mae, np.nan), np.where(finite, rmse, np.nan)


def reconstruction_errors(x_true, x_pred, observed, feature_names: Sequence[str], scaler=None) -> dict[str, float]:
    """``mae_{feature}`` and ``rmse_{feature}`` over the observed entries of each feature in the
    scaled space (the space of ``r2_*``), their means over features (``mae_mean``,
    ``rmse_mean``: the features where defined) and, with the run's ``scaler``, the same in
    original units (``mae_{feature}_orig``, ``rmse_{feature}_orig``: both arrays through
    ``scaler.inverse_transform``). NaN for a feature with no observed entry or a non-finite
    prediction."""
    names = list(feature_names)
    x_true, x_pred, mask = _checked_masked(x_true, x_pred, observed, len(names))
    if mask.any() and not np.isfinite(x_true[mask]).all():
        raise ValueError("x_true has non-finite values where a feature is marked present")
    mae, rmse = _column_errors(x_true, x_pred, mask)
    scores: dict[str, float] = {}
    for j, name in enumerate(names):
        scores[f"mae_{name}"], scores[f"rmse_{name}"] = float(mae[j]), float(rmse[j])
    for key, values in (("mae_mean", mae), ("rmse_mean", rmse)):
        defined = values[np.isfinite(values)]
        scores[key] = float(defined.mean()) if defined.size else float("nan")
    if scaler is not None:
        if list(scaler.feature_names) != names:
            raise ValueError(f"the scaler's features {list(scaler.feature_names)} are not {names}")
        with np.errstate(over="ignore", invalid="ignore"):
            mae, rmse = _column_errors(scaler.inverse_transform(np.where(mask, x_true, 0.0)),
                                       scaler.inverse_transform(np.where(np.isfinite(x_pred), x_pred, np.nan)),
                                       mask)
        for j, name in enumerate(names):
            scores[f"mae_{name}_orig"], scores[f"rmse_{name}_orig"] = float(mae[j]), float(rmse[j])
    return scores


def _group_rows(groups, group_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Group name -> row indices, for the group codes present (code >= 0), in code order.
    Names: ``group_names[code]``, or the code as text without names."""
    groups = np.asarray(groups).reshape(-1)
    codes = np.unique(groups[groups >= 0])
    if group_names is not None and codes.size and codes.max() >= len(group_names):
        raise ValueError(f"group code {codes.max()} has no name ({len(group_names)} names)")
    return {(str(group_names[c]) if group_names is not None else str(int(c))): np.flatnonzero(groups == c)
            for c in codes}


def group_reconstruction_errors(x_true, x_pred, observed, groups,
                                group_names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Reconstruction error per expert group (rows with ``groups`` code >= 0), pooled over the
    observed entries of the group's rows (scaled space): ``{"recon_mse_group": {name: mse},
    "recon_mae_group": {name: mae}, "n_group": {name: rows}}``. NaN for a group with no observed
    entry or a non-finite prediction."""
    x_true, x_pred, mask = _checked_masked(x_true, x_pred, observed, np.asarray(x_true).shape[1])
    groups = np.asarray(groups).reshape(-1)
    if groups.shape[0] != x_true.shape[0]:
        raise ValueError(f"x_true has {x_true.shape[0]} rows but groups has {groups.shape[0]}")
    out: dict[str, dict] = {"recon_mse_group": {}, "recon_mae_group": {}, "n_group": {}}
    for name, rows in _group_rows(groups, group_names).items():
        m = mask[rows]
        diff = (x_pred[rows] - x_true[rows])[m]
        ok = diff.size > 0 and np.isfinite(diff).all()
        out["recon_mse_group"][name] = float(np.mean(diff ** 2)) if ok else float("nan")
        out["recon_mae_group"][name] = float(np.mean(np.abs(diff))) if ok else float("nan")
        out["n_group"][name] = int(rows.size)
    return out


def group_coherence(latent, groups, group_names: Sequence[str] | None = None,
                    sample_size: int | None = 4000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per expert group: mean Euclidean distance between two of its rows (``intra``), mean
    distance from its rows to the rows of the other groups (``inter``) and ``ratio`` =
    intra / inter (below 1: the group is tighter than the latent space around it).

    On a seeded subsample of ``sample_size`` rows with a group (code >= 0) (all of them if None
    or fewer), so a few thousand rows at most: the distances are pairwise. NaN where undefined
    (a group with fewer than 2 sampled rows has no intra, a single group no inter). Groups
    with no sampled row are left out."""
    latent = _as_2d("latent", latent)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape[0] != latent.shape[0]:
        raise ValueError(f"latent has {latent.shape[0]} rows but groups has {groups.shape[0]}")
    labeled = np.flatnonzero(groups >= 0)
    rows = labeled[seeded_subsample(labeled.size, sample_size, seed)]
    z = torch.as_tensor(np.ascontiguousarray(latent[rows]), dtype=torch.float64)
    named = _group_rows(groups[rows], group_names)
    if not named:
        return {}
    onehot = torch.zeros(len(rows), len(named), dtype=torch.float64)
    for g, members in enumerate(named.values()):
        onehot[torch.as_tensor(members), g] = 1.0
    totals = torch.zeros(len(named), len(named), dtype=torch.float64)  # summed distances between groups
    step = max(1, (1 << 21) // max(1, len(rows)))
    for s in range(0, len(rows), step):
        totals += onehot[s:s + step].T @ (torch.cdist(z[s:s + step], z) @ onehot)
    n = onehot.sum(0)
    intra_pairs = n * (n - 1)
    inter_pairs = n * (len(rows) - n)
    diagonal = totals.diagonal()
    intra = torch.where(intra_pairs > 0, diagonal / intra_pairs.clamp_min(1), torch.nan)
    inter = torch.where(inter_pairs > 0, (totals.sum(1) - diagonal) / inter_pairs.clamp_min(1), torch.nan)
    out = {}
    for g, name in enumerate(named):
        a, b = float(intra[g]), float(inter[g])
        out[name] = {"intra": a, "inter": b, "ratio": a / b if b > 0 else float("nan")}
    return out


def group_accuracy(logits, target, groups, group_names: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy of the predicted class (argmax of ``logits``) against ``target`` within the
    rows of each expert group (``groups`` code >= 0) whose target is labeled (>= 0): a model of
    principal lithologies is scored on the principal class of each group's rows, a model of
    the groups on the group. NaN for a group with no labeled row or non-finite logits."""
    logits = _as_2d("logits", logits)
    target = np.asarray(target).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not (logits.shape[0] == target.shape[0] == groups.shape[0]):
        raise ValueError(f"logits {logits.shape}, target {target.shape} and groups {groups.shape} disagree")
    correct = logits.argmax(axis=1) == target
    finite = np.isfinite(logits).all(axis=1)
    out = {}
    for name, rows in _group_rows(groups, group_names).items():
        rows = rows[target[rows] >= 0]
        ok = rows.size > 0 and finite[rows].all()
        out[name] = float(correct[rows].mean()) if ok else float("nan")
    return out


def classification_scores(logits, target, n_classes: int) -> dict[str, float]:
    """Classifier scores over the labeled rows (target >= 0):

    - ``auc_macro`` / ``auc_micro``: one-vs-rest ROC AUC of the softmax probabilities (over all
      ``n_classes`` head columns) over the classes present in ``target``, averaged per class
      (macro) or pooled over those classes' columns (micro); NaN with fewer than two present
      (a class needs positives and negatives);
    - ``balanced_accuracy`` (sklearn): mean recall over the same present classes;
    - ``accuracy``;
    - ``n_classes_scored``: how many classes the scores above cover (present in ``target``);
      ``n_classes_head``: the head's width, ``n_classes``;
    - ``auc_pooled``: the study's definition, kept for comparison with the seeds: the
      micro-averaged one-vs-rest AUC pooled over *all* ``n_classes`` columns, absent classes
      included (their columns are all negatives, easy to rank low, so it reads higher than
      ``auc_micro`` when the head has classes the split lacks, e.g. LILY's 139).

    Scores are NaN with no labeled rows or non-finite logits.
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
    present = np.unique(target[labeled])
    counts = {"n_classes_scored": int(present.size), "n_classes_head": int(n_classes)}
    # Non-finite logits make both the argmax and the probabilities meaningless.
    if not labeled.any() or not np.isfinite(logits[labeled]).all():
        return {"auc_pooled": nan, "auc_macro": nan, "auc_micro": nan, "balanced_accuracy": nan,
                "accuracy": nan, **counts}
    logits, target = logits[labeled].astype(np.float64), target[labeled]
    predicted = logits.argmax(axis=1)
    with warnings.catch_warnings():
        # With many classes, predictions often include classes absent from target.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(target, predicted))
    auc = macro = micro = nan
    probs = softmax(logits, axis=1)
    one_hot = np.zeros(probs.shape, dtype=np.int8)
    one_hot[np.arange(target.size), target] = 1
    if n_classes >= 2:  # one class gives no negatives to rank against
        auc = float(roc_auc_score(one_hot.ravel(), probs.ravel()))
    if present.size >= 2:  # then every present class has positives and negatives
        macro = float(roc_auc_score(one_hot[:, present], probs[:, present], average="macro"))
        micro = float(roc_auc_score(one_hot[:, present], probs[:, present], average="micro"))
    return {"auc_pooled": auc, "auc_macro": macro, "auc_micro": micro, "balanced_accuracy": balanced,
            "accuracy": float(np.mean(predicted == target)), **counts}


def labeled_ari(labels, assignment) -> float:
    """ARI of ``assignment`` on the labeled rows (label >= 0); NaN with fewer than two labeled
    classes, as the ``ari_*`` of :func:`clustering_scores`."""
    labels, assignment = np.asarray(labels).reshape(-1), np.asarray(assignment).reshape(-1)
    labeled = labels >= 0
    if np.unique(labels[labeled]).size < 2:
        return float("nan")
    return float(adjusted_rand_score(labels[labeled], assignment[labeled]))


def active_dims(latent, threshold: float = 0.1) -> int:
    """Number of latent dimensions whose latent means vary across rows: std > threshold."""
    latent = _as_2d("latent", latent)
    return int((latent.std(axis=0) > threshold).sum())


def latent_abs_correlation(latent, threshold: float = 0.1) -> float:
    """Mean |Pearson r| over the pairs of active latent dimensions (:func:`active_dims`'
    ``threshold``) of the latent means, finite rows only: 0 for uncorrelated latents, 1 for
    latents that are linear functions of each other. Collapsed dimensions are left out: their
    means barely move, so their correlations are noise. NaN with fewer than two active dims."""
    latent = _as_2d("latent", latent).astype(np.float64)
    latent = latent[np.isfinite(latent).all(axis=1)]
    active = latent[:, latent.std(axis=0) > threshold] if len(latent) > 1 else latent[:, :0]
    if active.shape[1] < 2:
        return float("nan")
    corr = np.corrcoef(active, rowvar=False)
    return float(np.abs(corr[np.triu_indices_from(corr, k=1)]).mean())
