"""Evaluation of degenerate latents: undefined scores are NaN (null in metrics.json) with a
one-line warning naming the method and k, never a traceback that loses the run."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from lithovae.evaluation.metrics import clustering_scores, reconstruction_r2
from lithovae.results import to_json


@pytest.fixture
def labelled():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    latent = rng.normal(size=(300, 3)) + y[:, None]
    return latent, y


def test_constant_latent_dimensions_still_give_scores(labelled):
    latent, y = labelled
    latent = np.column_stack([latent, np.zeros(len(y)), np.full(len(y), 3.0)])
    scores = clustering_scores(latent, y, ks=(4,), n_init=1).scores
    assert math.isfinite(scores["ari_kmeans_k4"]) and math.isfinite(scores["ari_gmm_k4"])


def test_a_failing_gaussian_mixture_is_refitted_with_more_regularisation(labelled, monkeypatch):
    latent, y = labelled
    tried = []
    fit = GaussianMixture.fit

    def fails_unless_regularised(self, X, y=None):
        tried.append(self.reg_covar)
        if self.reg_covar < 1e-2:
            raise ValueError("Fitting the mixture model failed because some components have "
                             "ill-defined empirical covariance (for instance caused by singleton "
                             "or collapsed samples).\nTry to decrease the number of components.")
        return fit(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", fails_unless_regularised)
    scores = clustering_scores(latent, y, ks=(4,), n_init=1).scores
    assert tried == [1e-6, 1e-4, 1e-2]
    assert math.isfinite(scores["ari_gmm_k4"])


def test_a_gaussian_mixture_that_never_fits_is_null_with_one_warning(labelled, monkeypatch, caplog):
    latent, y = labelled

    def always_fails(self, X, y=None):
        raise ValueError("Fitting the mixture model failed because some components have "
                         "ill-defined empirical covariance.\nsecond line")

    monkeypatch.setattr(GaussianMixture, "fit", always_fails)
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        scores = clustering_scores(latent, y, ks=(4, 6), n_init=1).scores
    assert math.isnan(scores["ari_gmm_k4"]) and math.isnan(scores["ari_gmm_k6"])
    assert math.isfinite(scores["ari_kmeans_k4"]) and scores["best_method"] == "kmeans"
    lines = [r.getMessage() for r in caplog.records]
    assert any("gmm k=4" in m and "ari_gmm_k4 = null" in m for m in lines)
    assert all("\n" not in m for m in lines)


def test_fewer_rows_than_k_is_null(labelled, caplog):
    latent, y = labelled
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        scores = clustering_scores(latent[:8], y[:8], ks=(4, 12), n_init=1).scores
    assert math.isnan(scores["ari_kmeans_k12"]) and math.isfinite(scores["ari_kmeans_k4"])
    assert any("kmeans k=12" in r.getMessage() for r in caplog.records)


def test_a_single_class_makes_ari_null_not_zero(labelled, caplog):
    latent, _ = labelled
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        result = clustering_scores(latent, np.zeros(len(latent), dtype=int), ks=(4,), n_init=1)
    assert math.isnan(result.scores["ari_best"]) and math.isnan(result.scores["ari_kmeans_k4"])
    assert result.assignment is None
    assert any("1 class" in r.getMessage() and "ARI is undefined" in r.getMessage() for r in caplog.records)


def test_non_finite_latents_are_not_clustered(labelled, caplog):
    latent, y = labelled
    latent = latent.copy()
    latent[5, 1] = np.inf
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        scores = clustering_scores(latent, y, ks=(4,), n_init=1).scores
    assert math.isnan(scores["ari_best"])
    assert any("non-finite" in r.getMessage() for r in caplog.records)


def test_nan_reconstructions_have_no_r2():
    x = np.random.default_rng(1).normal(size=(50, 2))
    recon = x.copy()
    recon[3, 0] = np.nan
    scores = reconstruction_r2(x, recon, np.ones_like(x, dtype=bool), ["A", "B"])
    assert math.isnan(scores["r2_A"]) and scores["r2_B"] == pytest.approx(1.0)


def test_metrics_json_writes_nan_and_inf_as_null():
    text = to_json({"a": float("nan"), "b": float("inf"), "c": [1.0, -float("inf")], "d": np.float32(2.5)})
    assert text.replace(" ", "").replace("\n", "") == '{"a":null,"b":null,"c":[1.0,null],"d":2.5}'
