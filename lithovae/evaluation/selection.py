"""Clusterings chosen without the test labels.

``ari_best`` picks, among the (method, k) clusterings of the test latents, the one that agrees
best with the test lithologies: an oracle, kept for the study's best-k tables. The scores
here choose with the validation boreholes only:

- ``ari_selected``: the (method, k) whose clustering of the validation latents (fitted on them,
  as the test clusterings are fitted on the test rows) has the highest validation ARI; its score
  is the test clustering of that (method, k). ``val_ari_selected`` is the validation score that
  chose it: what a search may maximise.
- ``ari_inductive``: clusterers fitted on the training boreholes (the caller passes a seeded
  subsample of ``eval.train_fit_samples`` rows), the (method, k) whose predictions agree best with the validation
  lithologies, scored by its predictions of the test rows. It is the clusterer the predictor
  bundle saves: the number ``lithovae.predict`` delivers on new wells.

The same options fit both (k, restarts, GMM, backend, seed) and, with ``prefix="baseline_"``,
the raw features the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lithovae.evaluation.metrics import ClusteringResult, clustering_scores, labeled_ari


@dataclass
class HeldOut:
    """What :func:`held_out_clusterings` chose and scored; the assignments are of the test rows."""

    scores: dict
    selected: np.ndarray | None
    inductive: np.ndarray | None
    inductive_fitted: dict | None


@dataclass
class HeldOutFits:
    """The clusterings :func:`held_out_clusterings` fits without the test rows' clusterings: of the
    validation rows (``val``) and, fitted on the training rows, of every row (``inductive``)."""

    val: ClusteringResult
    inductive: ClusteringResult | None
    prefix: str
    n_train: int
    n_val: int


def held_out_fits(test_latent: np.ndarray, val_latent: np.ndarray, val_labels: np.ndarray,
                  train_latent: np.ndarray | None, *, ks, seed: int, n_init: int, gmm: bool,
                  max_fit_samples: int | None, backend: str, prefix: str = "") -> HeldOutFits:
    """The validation and training fits of :func:`held_out_clusterings`: they need no clustering of
    the test rows, which may meanwhile be computed elsewhere."""
    options = dict(ks=tuple(ks), seed=seed, n_init=n_init, gmm=gmm, backend=backend)
    val_labels = np.asarray(val_labels).reshape(-1)
    val = clustering_scores(val_latent, val_labels, max_fit_samples=max_fit_samples, **options)
    fits, n_train = None, 0
    if train_latent is not None:
        train_rows = np.asarray(train_latent)
        n_train = len(train_rows)
        stacked = np.concatenate([train_rows, val_latent, test_latent]).astype(np.float32, copy=False)
        labels = np.concatenate([np.full(n_train, -1), val_labels, np.full(len(test_latent), -1)])
        fits = clustering_scores(stacked, labels, max_fit_samples=None, fit_rows=np.arange(n_train), **options)
    return HeldOutFits(val, fits, prefix, n_train, len(val_latent))


def held_out_choices(test: ClusteringResult, test_labels: np.ndarray, fits: HeldOutFits) -> HeldOut:
    """What the validation rows choose among ``test`` (the test rows' clusterings, fitted) and
    among the training fits, scored on the test rows (:func:`held_out_clusterings`)."""
    prefix, val = fits.prefix, fits.val
    test_labels = np.asarray(test_labels).reshape(-1)
    method, k = val.scores["best_method"], val.scores["best_k"]
    name = f"{method}_k{k}"
    selected = test.assignments.get(name) if method else None
    scores = {f"{prefix}ari_selected": float(test.scores.get(f"{prefix}ari_{name}", np.nan)) if method else np.nan,
              f"{prefix}selected_method": method if selected is not None else None,
              f"{prefix}selected_k": k if selected is not None else None,
              f"{prefix}val_ari_selected": val.scores["ari_best"]}
    if selected is None:
        scores[f"{prefix}ari_selected"] = float("nan")
    inductive = fitted = None
    if fits.inductive is not None:
        method, k = fits.inductive.scores["best_method"], fits.inductive.scores["best_k"]
        if method:
            inductive = fits.inductive.assignments[f"{method}_k{k}"][fits.n_train + fits.n_val:]
            fitted = fits.inductive.best_fitted
        scores.update({f"{prefix}ari_inductive": labeled_ari(test_labels, inductive) if method else float("nan"),
                       f"{prefix}inductive_method": method, f"{prefix}inductive_k": k,
                       f"{prefix}val_ari_inductive": fits.inductive.scores["ari_best"]})
    return HeldOut(scores, selected, inductive, fitted)


def held_out_clusterings(test: ClusteringResult, test_latent: np.ndarray, test_labels: np.ndarray,
                         val_latent: np.ndarray, val_labels: np.ndarray,
                         train_latent: np.ndarray | None, *, ks, seed: int, n_init: int, gmm: bool,
                         max_fit_samples: int | None, backend: str, prefix: str = "") -> HeldOut:
    """``{prefix}ari_selected``, ``{prefix}selected_method``, ``{prefix}selected_k``,
    ``{prefix}val_ari_selected`` from the test clusterings ``test`` (already fitted) and the
    validation rows; with ``train_latent``, ``{prefix}ari_inductive``, ``{prefix}inductive_method``,
    ``{prefix}inductive_k``, ``{prefix}val_ari_inductive``. Undefined scores (no validation
    lithology to agree with, no fit) are NaN with a None method."""
    fits = held_out_fits(test_latent, val_latent, val_labels, train_latent, ks=ks, seed=seed, n_init=n_init,
                         gmm=gmm, max_fit_samples=max_fit_samples, backend=backend, prefix=prefix)
    return held_out_choices(test, test_labels, fits)
