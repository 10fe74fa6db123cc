"""The seeds' diagnostics in every run's metrics: MAE/RMSE per feature (scaled and original
units), reconstruction error, latent coherence and classifier accuracy per expert group,
silhouette per k, VaDE's own clustering (``ari_vade``), and the flattened MLflow names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, silhouette_score

from lithovae.data import reference
from lithovae.data.scaler import DistributionAwareScaler
from lithovae.evaluation.batched import seeded_subsample
from lithovae.evaluation.metrics import (clustering_scores, group_accuracy, group_coherence,
                                         group_reconstruction_errors, reconstruction_errors,
                                         silhouette, silhouettes)
from lithovae.evaluation.scoring import diagnostic_tables, prior_assignment, score_model
from lithovae.models.vade import VaDE
from lithovae.models.vae import VAE
from lithovae.spec import DataSpec
from lithovae.study_summary import history_table
from lithovae.tracking import flat_metrics

NAN = float("nan")


# -- MAE / RMSE per feature ----------------------------------------------------------------------

def _scaler(transforms: dict[str, str], mean, scale) -> DistributionAwareScaler:
    scaler = DistributionAwareScaler(list(transforms), transforms)
    scaler.mean_, scaler.scale_ = np.asarray(mean, float), np.asarray(scale, float)
    return scaler


def test_mae_rmse_by_hand_over_observed_entries_only():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    pred = np.array([[1.0, 1.0], [2.0, 5.0], [1.0, 1e6]])  # errors A: 1, 0, -3; B: 0, 2, (hidden)
    observed = np.array([[True, True], [True, True], [True, False]])
    scores = reconstruction_errors(x, pred, observed, ["A", "B"])
    assert scores["mae_A"] == pytest.approx(4 / 3)
    assert scores["rmse_A"] == pytest.approx(math.sqrt(10 / 3))
    assert scores["mae_B"] == pytest.approx(1.0)  # the 1e6 of an unobserved entry is not scored
    assert scores["rmse_B"] == pytest.approx(math.sqrt(2.0))
    assert scores["mae_mean"] == pytest.approx((4 / 3 + 1) / 2)
    assert "mae_A_orig" not in scores  # no scaler, no original units


def test_original_units_go_through_the_scalers_inverse():
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, 1.0]])
    pred = np.array([[0.5, 0.0], [1.0, 1.0], [-1.0, 1.0]])
    observed = np.ones_like(x, dtype=bool)
    # A: standardised only (scale 2): errors x2; B: log1p then standardised (mean 1, scale 0.5)
    scaler = _scaler({"A": "none", "B": "log1p"}, mean=[10.0, 1.0], scale=[2.0, 0.5])
    scores = reconstruction_errors(x, pred, observed, ["A", "B"], scaler)
    assert scores["mae_A"] == pytest.approx(0.5 / 3)
    assert scores["mae_A_orig"] == pytest.approx(2 * 0.5 / 3)
    assert scores["rmse_A_orig"] == pytest.approx(2 * math.sqrt(0.25 / 3))
    orig = lambda v: np.expm1(v * 0.5 + 1.0)  # noqa: E731 - the inverse of B's transform
    errors_b = np.abs(orig(pred[:, 1]) - orig(x[:, 1]))
    assert scores["mae_B_orig"] == pytest.approx(errors_b.mean())
    assert scores["rmse_B_orig"] == pytest.approx(math.sqrt((errors_b ** 2).mean()))


def test_a_non_finite_prediction_or_no_observed_entry_is_nan():
    x = np.zeros((3, 2))
    pred = np.array([[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0]])
    observed = np.array([[True, False], [True, False], [True, False]])
    scores = reconstruction_errors(x, pred, observed, ["A", "B"], _scaler({"A": "none", "B": "none"}, [0, 0], [1, 1]))
    assert all(math.isnan(scores[k]) for k in ("mae_A", "rmse_A", "mae_B", "mae_A_orig", "mae_B_orig", "mae_mean"))


# -- per expert group ----------------------------------------------------------------------------

def test_reconstruction_error_per_group_by_hand():
    x = np.zeros((4, 2))
    pred = np.array([[1.0, 1.0], [3.0, 9.0], [2.0, 0.0], [5.0, 5.0]])
    observed = np.array([[True, True], [True, False], [True, True], [True, True]])
    groups = np.array([0, 0, 1, -1])  # the last row has no group: not scored
    out = group_reconstruction_errors(x, pred, observed, groups, ["Clay/Mud", "Sand"])
    assert out["recon_mse_group"] == pytest.approx({"Clay/Mud": (1 + 1 + 9) / 3, "Sand": 4 / 2})
    assert out["recon_mae_group"] == pytest.approx({"Clay/Mud": 5 / 3, "Sand": 1.0})
    assert out["n_group"] == {"Clay/Mud": 2, "Sand": 1}
    assert set(group_reconstruction_errors(x, pred, observed, groups)["n_group"]) == {"0", "1"}


def test_group_coherence_on_two_obvious_groups():
    latent = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [50.0, 50.0]])
    groups = np.array([0, 0, 1, 1, -1])  # the unlabeled far row is left out
    out = group_coherence(latent, groups, ["A", "B"], sample_size=None)
    inter = (10 + 10 + 2 * math.sqrt(101)) / 4
    for name in ("A", "B"):
        assert out[name]["intra"] == pytest.approx(1.0, abs=1e-9)
        assert out[name]["inter"] == pytest.approx(inter, abs=1e-9)
        assert out[name]["ratio"] == pytest.approx(1.0 / inter, abs=1e-9)


def test_group_coherence_subsample_is_seeded_and_a_lone_row_has_no_intra():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(500, 3))
    groups = rng.integers(0, 3, 500)
    a = group_coherence(latent, groups, sample_size=100, seed=1)
    assert a == group_coherence(latent, groups, sample_size=100, seed=1)
    lone = group_coherence(latent[:3], np.array([0, 0, 1]))
    assert math.isnan(lone["1"]["intra"]) and math.isnan(lone["1"]["ratio"])
    assert math.isfinite(lone["0"]["intra"])


def test_group_accuracy_by_hand():
    logits = np.eye(3)[[0, 1, 2, 2, 0, 1]] * 5.0  # predictions 0 1 2 2 0 1
    target = np.array([0, 1, 1, 2, -1, 0])
    groups = np.array([0, 0, 1, 1, 1, 2])
    out = group_accuracy(logits, target, groups, ["G0", "G1", "G2"])
    assert out == pytest.approx({"G0": 1.0, "G1": 0.5, "G2": 0.0})  # the unlabeled row is not scored


# -- silhouette per k ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_silhouettes_share_rows_and_equal_one_at_a_time(backend):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 3)) + np.repeat(np.arange(4), 100)[:, None] * 3
    assignments = {"a": np.repeat(np.arange(4), 100), "b": rng.integers(0, 3, 400),
                   "one": np.zeros(400, dtype=int)}
    scores = silhouettes(latent, assignments, 150, 2, backend=backend)
    rows = seeded_subsample(400, 150, 2)
    for name in ("a", "b"):
        assert scores[name] == pytest.approx(silhouette(latent, assignments[name], 150, 2, backend=backend), abs=1e-12)
        assert scores[name] == pytest.approx(silhouette_score(latent[rows], assignments[name][rows]), abs=1e-10)
    assert math.isnan(scores["one"])


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_clustering_keeps_every_assignment(backend):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(200, 2)) + np.repeat(np.arange(4), 50)[:, None] * 4
    labels = np.repeat(np.arange(4), 50)
    result = clustering_scores(latent, labels, ks=(3, 4), n_init=2, backend=backend)
    assert set(result.assignments) == {"kmeans_k3", "kmeans_k4", "gmm_k3", "gmm_k4"}
    for name, assignment in result.assignments.items():
        assert result.scores[f"ari_{name}"] == pytest.approx(adjusted_rand_score(labels, assignment))
    best = f"{result.scores['best_method']}_k{result.scores['best_k']}"
    assert np.array_equal(result.assignments[best], result.assignment)


# -- score_model() end to end on toy models ----------------------------------------------------

SPEC = DataSpec(n_features=2, feature_names=("A", "B"), n_classes=3, n_groups=2,
                class_counts=(10, 10, 10), group_counts=(20, 10))
EVAL = dict(k=[2, 3], n_init=1, gmm=True, silhouette_samples=500, max_fit_samples=None,
            train_fit_samples=None, bootstrap={"resamples": 0, "level": 0.95}, backend="torch", seed=0,
            baseline=False)


def _toy_vade() -> VaDE:
    """A 2-component VaDE on a 2-D latent whose means are the inputs: components at (-5, -5)
    and (5, 5), so its own clustering is the sign of the input."""
    model = VaDE(SPEC, n_components=2, seed=0, init_epoch=0, latent_dim=2, hidden=[8],
                 batchnorm=False, dropout=0.0)
    with torch.no_grad():
        model.pi_logits.zero_()
        model.means.copy_(torch.tensor([[-5.0, -5.0], [5.0, 5.0]]))
        model.logvars.zero_()
    model.embed = lambda x, visible: x  # the latent means are the inputs
    return model


def _toy_tensors(n: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    side = torch.arange(n) % 2
    x = (side[:, None].float() * 10 - 5) + torch.randn(n, 2, generator=gen) * 0.5
    y = side.clone()
    y[:10] = 2  # some rows described otherwise: ARI below 1
    y[10:14] = -1  # unlabeled
    return {"x": x, "observed": torch.ones(n, 2, dtype=torch.bool), "y": y,
            "y_group": (torch.arange(n) % 3 == 0).long()}


def test_ari_vade_scores_the_mixtures_own_clustering():
    model, tensors = _toy_vade(), _toy_tensors()
    own = prior_assignment(model, tensors["x"].numpy())
    side = (torch.arange(len(own)) % 2).numpy()
    assert adjusted_rand_score(side, own) == 1.0  # the argmax of the known responsibilities
    metrics, arrays = score_model(model, tensors, ["A", "B"], group_names=["G0", "G1"], **EVAL)
    y = tensors["y"].numpy()
    expected = adjusted_rand_score(y[y >= 0], side[y >= 0])
    assert metrics["ari_vade"] == pytest.approx(expected) and metrics["ari_prior"] == metrics["ari_vade"]
    assert expected < 1.0
    assert metrics["prior_clusters_used"] == 2 and metrics["vade_mixture_fitted"] is False
    assert np.array_equal(arrays["prior_assignment"], own)


def test_evaluate_writes_every_diagnostic_and_a_plain_vae_has_no_prior_ari():
    torch.manual_seed(0)
    model = VAE(SPEC, latent_dim=2, hidden=[8], batchnorm=False, dropout=0.0)
    tensors = _toy_tensors()
    scaler = _scaler({"A": "none", "B": "log1p"}, [1.0, 2.0], [2.0, 0.5])
    metrics, _ = score_model(model, tensors, ["A", "B"], scaler=scaler, group_names=["G0", "G1"], **EVAL)
    assert "ari_vade" not in metrics and "ari_prior" not in metrics
    for f in ("A", "B"):
        assert {f"mae_{f}", f"rmse_{f}", f"mae_{f}_orig", f"rmse_{f}_orig", f"r2_{f}"} <= set(metrics)
    assert {"silhouette_kmeans_k2", "silhouette_kmeans_k3"} <= set(metrics)
    best = metrics["best_method"], metrics["best_k"]
    if best[0] == "kmeans":  # the best clustering's silhouette is that k's
        assert metrics["silhouette"] == metrics[f"silhouette_kmeans_k{best[1]}"]
    assert set(metrics["recon_mse_group"]) == set(metrics["group_coherence"]) == {"G0", "G1"}
    assert math.isfinite(metrics["group_coherence_ratio_mean"])
    assert "accuracy_group" not in metrics  # no classifier
    tables = diagnostic_tables(metrics, ["A", "B"])
    assert list(tables["feature_errors"]["feature"]) == ["A", "B"]
    groups = tables["group_diagnostics"]
    assert list(groups["group"]) == ["G0", "G1"] and groups["n"].sum() == len(tensors["x"])
    assert groups["accuracy"].isna().all()


def test_silhouette_per_k_is_that_of_each_kmeans_clustering():
    torch.manual_seed(0)
    model = VAE(SPEC, latent_dim=2, hidden=[8], batchnorm=False, dropout=0.0)
    tensors = _toy_tensors()
    metrics, arrays = score_model(model, tensors, ["A", "B"], **EVAL)
    clusters = clustering_scores(arrays["mu"], tensors["y"].numpy(), ks=(2, 3), seed=0, n_init=1,
                                 backend="torch")
    for k in (2, 3):
        expected = silhouette(arrays["mu"], clusters.assignments[f"kmeans_k{k}"], 500, 0, backend="torch")
        assert metrics[f"silhouette_kmeans_k{k}"] == pytest.approx(expected, abs=1e-12)


# -- history study and MLflow names ------------------------------------------------------------

def test_history_compares_the_published_silhouette_at_k10_with_ours_at_k10():
    summary = pd.DataFrame({"run": ["v2_6"], "dataset": "synthetic-x", "silhouette": [0.9],
                            "silhouette_kmeans_k10": [0.3], "ari_kmeans_k10": [0.2]})
    table = history_table(summary, reference.read("published_results.csv"))
    row = table[table["metric"] == "silhouette_k10"].iloc[0]
    assert row["ours"] == pytest.approx(0.3) and row["published"] == pytest.approx(0.428)


def test_nested_metrics_are_flattened_for_mlflow():
    flat = flat_metrics({"ari_best": 0.2, "best_method": "gmm", "synthetic": True, "x": NAN,
                         "recon_mse_group": {"Clay/Mud": 0.5, "Other (x)": 1.0},
                         "group_coherence": {"Sand": {"intra": 1.0, "ratio": NAN}},
                         "final_losses": {"val/loss": 3.0}})
    assert flat == {"ari_best": 0.2, "recon_mse_group/Clay/Mud": 0.5, "recon_mse_group/Other _x_": 1.0,
                    "group_coherence/Sand/intra": 1.0}
