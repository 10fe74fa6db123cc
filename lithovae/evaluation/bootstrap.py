"""Bootstrap over test boreholes: each headline score recomputed on resamples of boreholes.

Boreholes are the unit: rows of one borehole are correlated (neighbouring depths, one site's
lithology mix), so resampling rows would understate the spread. Each resample draws the G test
boreholes with replacement; a resample is a vector of counts [G] (how often each borehole is
drawn). The fitted models and clusterings are kept: only the rows scored change.

Every statistic is computed from per-borehole sufficient statistics (contingency tables, sums,
class counts, pair counts) combined by one matrix product with the counts [B, G], so B = 1000
resamples cost little more than one. On counts of all ones each statistic equals its point
estimate (``lithovae.evaluation.metrics`` / sklearn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

__all__ = ["Resamples", "resample_boreholes", "ari", "r2_mean", "balanced_accuracy", "auc_pooled",
           "interval"]

MAX_UNDEFINED = 0.05  # interval() gives up when more resamples than this fraction are NaN


@dataclass(frozen=True)
class Resamples:
    """``counts`` [B, G] int: how often each of the G boreholes is drawn in each of B resamples;
    ``group`` [N] int in 0..G-1: the borehole of each row; ``level``: of the interval."""

    counts: np.ndarray
    group: np.ndarray
    level: float

    def __post_init__(self):
        counts, group = np.asarray(self.counts), np.asarray(self.group)
        object.__setattr__(self, "counts", counts)  # frozen: store arrays, whatever was passed
        object.__setattr__(self, "group", group)
        if counts.ndim != 2 or group.ndim != 1:
            raise ValueError(f"counts must be [B, G] and group [N], got {counts.shape} and {group.shape}")
        if group.size and (group.min() < 0 or group.max() >= counts.shape[1]):
            raise ValueError(f"group codes must lie in 0..{counts.shape[1] - 1}")
        _check_level(self.level)

    @property
    def weights(self) -> np.ndarray:
        """The counts as float64 [B, G]: BLAS products, exact for integer sums below 2**53."""
        return np.asarray(self.counts, dtype=np.float64)

    @property
    def boreholes(self) -> int:
        return self.counts.shape[1]


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _check_rows(r: Resamples, **arrays) -> None:
    for name, array in arrays.items():
        if array.shape[0] != r.group.shape[0]:
            raise ValueError(f"{name} has {array.shape[0]} rows but the resamples' group has {r.group.shape[0]}")


def _per_group(group: np.ndarray, codes: np.ndarray, width: int, boreholes: int,
               weights: np.ndarray | None = None) -> np.ndarray:
    """[G, width] sums of ``weights`` (1 without) per (borehole, code) pair."""
    flat = np.bincount(group * width + codes, weights=weights, minlength=boreholes * width)
    return flat.reshape(boreholes, width).astype(np.float64)


def resample_boreholes(borehole_ids, resamples: int, seed: int, level: float = 0.95) -> Resamples:
    """``resamples`` draws of the G distinct boreholes in ``borehole_ids`` [N] (any hashable
    dtype) with replacement, seeded (numpy ``default_rng(seed)``)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    _check_level(level)
    ids = np.asarray(borehole_ids)
    if ids.ndim != 1:
        raise ValueError(f"borehole_ids must be 1-D [N], got shape {ids.shape}")
    _, group = np.unique(ids, return_inverse=True)
    g = int(group.max()) + 1 if ids.size else 0
    drawn = np.random.default_rng(seed).integers(0, max(g, 1), (resamples, g))
    flat = (drawn + np.arange(resamples)[:, None] * g).reshape(-1)
    counts = np.bincount(flat, minlength=resamples * g).reshape(resamples, g)
    return Resamples(counts=counts, group=group.reshape(-1).astype(np.int64), level=float(level))


def _ari_from_tables(tables: np.ndarray, pairs_true: np.ndarray, pairs_pred: np.ndarray,
                     labels: int, clusters: int) -> np.ndarray:
    """sklearn's ARI (pair-confusion form) of each resample's contingency table [B, J] over the
    J (label, cluster) pairs present; NaN with < 2 labels in the resample."""
    n = tables.sum(1)
    squares = (tables ** 2).sum(1)
    rows = tables @ _onehot(pairs_true, labels)
    cols = tables @ _onehot(pairs_pred, clusters)
    tp = squares - n
    fp = (cols ** 2).sum(1) - squares
    fn = (rows ** 2).sum(1) - squares
    tn = n * n - fp - fn - squares
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    score = np.where((fn == 0) & (fp == 0), 1.0, score)  # sklearn's perfect-match case
    return np.where((rows > 0).sum(1) >= 2, score, np.nan)


def _onehot(codes: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((codes.size, width))
    out[np.arange(codes.size), codes] = 1.0
    return out


def ari(labels, assignments: dict[str, np.ndarray], r: Resamples) -> dict[str, np.ndarray]:
    """ARI [B] of each fixed assignment (name -> cluster per row [N]) on every resample.

    Scored over the rows with a label (>= 0) and a cluster (>= 0): a row left unclustered
    (assignment -1) is excluded like an unlabeled row, not counted as a cluster of its own.
    Each resample's contingency table is ``counts[b] @ C``, with C [G, J] the per-borehole
    counts of the J (label, cluster) pairs present. NaN for a resample with < 2 labels."""
    labels = np.asarray(labels).reshape(-1)
    _check_rows(r, labels=labels)
    out = {}
    for name, assignment in assignments.items():
        assignment = np.asarray(assignment).reshape(-1)
        _check_rows(r, **{f"assignment {name!r}": assignment})
        keep = (labels >= 0) & (assignment >= 0)
        _, true = np.unique(labels[keep], return_inverse=True)
        _, pred = np.unique(assignment[keep], return_inverse=True)
        n_true, n_pred = int(true.max(initial=-1)) + 1, int(pred.max(initial=-1)) + 1
        pairs, code = np.unique(true * n_pred + pred, return_inverse=True)
        table = _per_group(r.group[keep], code.reshape(-1), pairs.size, r.boreholes)
        out[name] = _ari_from_tables(r.weights @ table, pairs // max(n_pred, 1), pairs % max(n_pred, 1),
                                     n_true, n_pred)
    return out


def r2_mean(x, recon, observed, r: Resamples) -> np.ndarray:
    """[B]: ``reconstruction_r2(...)["r2_mean"]`` on every resample: per feature 1 - SSE/SST
    over observed entries, from per-borehole float64 sums; the mean over the features where
    R^2 is defined (>= 2 rows, a target that is not constant, finite predictions), NaN if none."""
    x, recon = np.asarray(x, dtype=np.float64), np.asarray(recon, dtype=np.float64)
    observed = np.asarray(observed).astype(bool)
    if x.ndim != 2 or not (x.shape == recon.shape == observed.shape):
        raise ValueError(f"x {x.shape}, recon {recon.shape} and observed {observed.shape} must be equal [N, F]")
    _check_rows(r, x=x)
    if not np.isfinite(x[observed]).all():
        raise ValueError("x has non-finite values where a feature is marked observed")
    features, g = x.shape[1], r.boreholes
    # centred on the feature mean so that SST = sum y^2 - (sum y)^2 / n loses no precision
    centre = np.where(observed, x, 0.0).sum(0) / np.maximum(observed.sum(0), 1)
    y = np.where(observed, x - centre, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # unobserved entries may be NaN or inf
        error = np.where(observed, recon - x, 0.0)
    bad = observed & ~np.isfinite(error)
    error = np.where(bad, 0.0, error)
    rows = np.broadcast_to(r.group[:, None] * features + np.arange(features), x.shape).reshape(-1)

    def sums(values):
        return np.bincount(rows, weights=values.reshape(-1), minlength=g * features).reshape(g, features)

    w = r.weights
    n, s1, s2, sse, nbad = (w @ sums(v) for v in (observed.astype(np.float64), y, y * y, error * error,
                                                  bad.astype(np.float64)))
    # exact constant-target test (as np.ptp == 0): min and max per borehole, then per resample
    low = np.full((g, features), np.inf)
    high = np.full((g, features), -np.inf)
    np.minimum.at(low, r.group, np.where(observed, x, np.inf))
    np.maximum.at(high, r.group, np.where(observed, x, -np.inf))
    drawn = (r.counts > 0)[:, :, None]
    spread = np.where(drawn, high, -np.inf).max(1) - np.where(drawn, low, np.inf).min(1)
    defined = (n >= 2) & (spread > 0) & (nbad == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - sse / (s2 - s1 * s1 / n)
    r2 = np.where(defined, r2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return r2.sum(1) / defined.sum(1)  # 0 / 0 = NaN where no feature is defined


def _classifier_inputs(logits, target, r: Resamples):
    logits = np.asarray(logits)
    target = np.asarray(target).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits must be [N, n_classes] with N = {target.shape[0]}, got {logits.shape}")
    _check_rows(r, logits=logits)
    if target.size and target.max() >= logits.shape[1]:
        raise ValueError(f"target has class code {target.max()} >= n_classes {logits.shape[1]}")
    labeled = target >= 0
    group = r.group[labeled]
    # a drawn borehole with a non-finite labeled logit leaves the resample without a score
    broken = np.bincount(group, weights=~np.isfinite(logits[labeled]).all(1), minlength=r.boreholes)
    undefined = (r.weights @ broken > 0) | (r.weights @ np.bincount(group, minlength=r.boreholes) == 0)
    return logits[labeled], target[labeled], group, undefined


def balanced_accuracy(logits, target, r: Resamples) -> np.ndarray:
    """[B]: mean recall over the classes present (target >= 0) in each resample, from
    per-borehole counts of rows and of correct argmax predictions per class (sklearn's
    ``balanced_accuracy_score``). NaN with no labeled rows or non-finite logits drawn."""
    logits, target, group, undefined = _classifier_inputs(logits, target, r)
    classes = logits.shape[1]
    rows = r.weights @ _per_group(group, target, classes, r.boreholes)
    correct = r.weights @ _per_group(group, target, classes, r.boreholes,
                                     weights=(logits.argmax(1) == target).astype(np.float64))
    present = rows > 0
    recall = np.where(present, correct / np.where(present, rows, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = recall.sum(1) / present.sum(1)
    return np.where(undefined, np.nan, score)


def auc_pooled(logits, target, r: Resamples) -> np.ndarray:
    """[B]: ``classification_scores(...)["auc_pooled"]`` on every resample: the ROC AUC of the
    softmax probabilities against one-hot targets pooled over all classes (each labeled row one
    positive element, n_classes - 1 negatives), as the borehole-weighted Mann-Whitney statistic
    sum_gh w_g w_h A[g, h] / (P(w) Nn(w)). A[g, h] counts (positive in g, negative in h) pairs
    ranked correctly, ties 1/2: one ``searchsorted`` of all positives into each borehole's
    sorted negatives. NaN with no labeled rows, non-finite logits drawn, or < 2 classes."""
    logits, target, group, undefined = _classifier_inputs(logits, target, r)
    classes, g = logits.shape[1], r.boreholes
    if classes < 2 or target.size == 0:
        return np.full(r.counts.shape[0], np.nan)
    finite = np.isfinite(logits).all(1)
    probs = softmax(np.where(finite[:, None], logits, 0.0).astype(np.float64), axis=1)
    rows = np.arange(target.size)
    positive = probs[rows, target]
    order = np.argsort(positive, kind="stable")  # sorted keys: searchsorted walks forward
    positive, positive_group = positive[order], group[order]
    negative = np.ones(probs.shape, dtype=bool)
    negative[rows, target] = False
    by_group = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[by_group], np.arange(g + 1))
    pairs = np.zeros((g, g))
    for h in range(g):  # one pass per borehole, not per row
        block = by_group[starts[h]:starts[h + 1]]
        if block.size == 0:
            continue
        scores = np.sort(probs[block][negative[block]])
        below = np.searchsorted(scores, positive, "left") + np.searchsorted(scores, positive, "right")
        pairs[:, h] = np.bincount(positive_group, weights=below, minlength=g) / 2.0
    w = r.weights
    positives = w @ np.bincount(group, minlength=g).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = ((w @ pairs) * w).sum(1) / (positives * positives * (classes - 1))
    return np.where(undefined, np.nan, score)


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval at ``level`` of the finite ``values``; (nan, nan) when more than 5%
    of them are NaN (the score is undefined on too many resamples to trust an interval) or
    none is finite."""
    _check_level(level)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or values.size - finite.size > MAX_UNDEFINED * values.size:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)
