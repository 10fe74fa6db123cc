"""Evaluate a trained model on one split (the test boreholes by default).

Clustering uses the latent means, never sampled z. Reconstruction R², MAE and RMSE are in
the scaled space, as in the study, over observed entries only (MAE and RMSE also in
original units through the run's scaler). The seeds' diagnostics per expert lithology group
(reconstruction error, latent coherence, classifier accuracy) are nested dicts keyed by group
name; :func:`diagnostic_tables` lays them out as the run's CSV tables.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

from lithovae.evaluation.metrics import (active_dims, classification_scores, clustering_scores,
                                         group_accuracy, group_coherence,
                                         group_reconstruction_errors, imputation_r2,
                                         reconstruction_errors, reconstruction_r2, silhouettes)
from lithovae.files import atomic_write
from lithovae.masking import MaskStrategy
from lithovae.models.base import LatentModel, inference


FIGURE_OPTIONS = ("figures", "umap_sample", "umap_top_n", "log_boreholes")
COHERENCE_SAMPLES = 4000  # rows for the pairwise latent distances of group_coherence


def split_eval_options(eval_cfg: dict) -> tuple[dict, dict]:
    """The ``eval`` config as (evaluate() keyword arguments, figure options): every key that is
    not a figure option (k, n_init, gmm, silhouette_samples, max_fit_samples, backend) is a
    scoring option."""
    scores = {k: v for k, v in eval_cfg.items() if k not in FIGURE_OPTIONS}
    figures = {k: v for k, v in eval_cfg.items() if k in FIGURE_OPTIONS}
    return scores, figures


def model_outputs(model: LatentModel, tensors: dict[str, torch.Tensor], visible: torch.Tensor,
                  chunk: int = 8192) -> dict[str, np.ndarray]:
    """Latent means, reconstructions from them, and class logits (if any) for every row."""
    device = next(model.parameters()).device
    mus, recons, logits = [], [], []
    with inference(model):
        for x, v in zip(tensors["x"].split(chunk), visible.split(chunk)):
            mu = model.embed(x.to(device), v.to(device))
            mus.append(mu.cpu())
            recons.append(model.decode(mu).cpu())
            lg = model.classify(mu)
            if lg is not None:
                logits.append(lg.cpu())
    return {"mu": torch.cat(mus).numpy(), "recon": torch.cat(recons).numpy(),
            "logits": torch.cat(logits).numpy() if logits else None}


def latent_means(model: LatentModel, x: torch.Tensor, visible: torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """Latent means only (no decoding), e.g. of a whole dataset."""
    device = next(model.parameters()).device
    with inference(model):
        return torch.cat([model.embed(a.to(device), v.to(device)).cpu()
                          for a, v in zip(x.split(chunk), visible.split(chunk))]).numpy()


def prior_assignment(model: LatentModel, mu: np.ndarray, chunk: int = 8192) -> np.ndarray | None:
    """The model's own clustering: the argmax of its mixture prior's responsibilities
    (``log_responsibilities``, VaDE's gamma(c|z)) at the latent means; None for a model
    without one (a VampPrior is a mixture too, but of posteriors with no responsibilities)."""
    responsibilities = getattr(model, "log_responsibilities", None)
    if not callable(responsibilities):
        return None
    device = next(model.parameters()).device
    with inference(model):
        return torch.cat([responsibilities(z.to(device)).argmax(1).cpu()
                          for z in torch.as_tensor(mu).split(chunk)]).numpy()


def _labeled_ari(labels: np.ndarray, assignment: np.ndarray) -> float:
    """ARI on the labeled rows (label >= 0); NaN with fewer than two labeled classes, as the
    ``ari_*`` of :func:`clustering_scores`."""
    labeled = labels >= 0
    if np.unique(labels[labeled]).size < 2:
        return float("nan")
    return float(adjusted_rand_score(labels[labeled], assignment[labeled]))


def _silhouettes(mu: np.ndarray, clusters, ks, samples: int, seed: int, backend: str) -> dict:
    """``silhouette_kmeans_k{k}`` for every k, and ``silhouette`` of the best clustering (the
    same score as before: same rows, same formula), with the distances computed once."""
    nan = float("nan")
    wanted = {f"kmeans_k{k}": clusters.assignments.get(f"kmeans_k{k}") for k in ks}
    wanted = {name: a for name, a in wanted.items() if a is not None}
    best = f"{clusters.scores.get('best_method')}_k{clusters.scores.get('best_k')}"
    if clusters.assignment is not None and best not in wanted:
        best = "best"  # a GMM (or a clustering given without its assignments)
        wanted[best] = clusters.assignment
    scores = silhouettes(mu, wanted, samples, seed, backend=backend)
    out = {f"silhouette_kmeans_k{k}": scores.get(f"kmeans_k{k}", nan) for k in ks}
    out["silhouette"] = scores[best] if clusters.assignment is not None else nan
    return out


def evaluate(model: LatentModel, tensors: dict[str, torch.Tensor], feature_names: list[str], *,
             k, n_init: int, gmm: bool, silhouette_samples: int, max_fit_samples: int | None,
             backend: str, seed: int, mask: MaskStrategy | None = None, baseline: bool = True,
             baseline_cache_dir: str | Path | None = None, clustering=None, scaler=None,
             group_names: list[str] | None = None) -> tuple[dict, dict]:
    """Metrics dict (keys of the study) and the arrays behind them.

    The scoring options of the ``eval`` config (:func:`split_eval_options`) and ``seed``
    are required keywords: their defaults are written once, in
    ``lithovae/conf/eval/default.yaml`` and ``lithovae/conf/train.yaml``.

    With ``baseline``, the same clusterings of the scaled input features of the same rows
    (``baseline_ari_*``) and ``ari_gain = ari_best - baseline_ari_best``: does the latent
    space beat the raw features at all?

    Also: ``silhouette_kmeans_k{k}`` per k (``silhouette``: of the best clustering);
    ``mae_*``/``rmse_*`` per feature (scaled; ``*_orig`` in original units with the run's
    ``scaler``); with ``tensors["y_group"]`` (expert group codes; ``group_names`` names them,
    else the codes are the keys) ``recon_mse_group``, ``recon_mae_group``, ``n_group``,
    ``group_coherence`` ({group: {intra, inter, ratio}}, on a seeded sample of
    ``COHERENCE_SAMPLES`` rows), ``group_coherence_ratio_mean`` and, for a classifier,
    ``accuracy_group``; for a model with a mixture prior (VaDE), ``ari_prior`` of its own
    clustering (``ari_vade`` for VaDE) against the principal lithologies.
    """
    observed = tensors["observed"]
    out = model_outputs(model, tensors, observed)
    x = tensors["x"].numpy()
    target = model.class_target(tensors).numpy()
    y = tensors["y"].numpy()
    metrics: dict = {"n_test": int(len(x))}

    clusters = clustering if clustering is not None else clustering_scores(
        out["mu"], y, ks=tuple(k), seed=seed, n_init=n_init, gmm=gmm,
        max_fit_samples=max_fit_samples, backend=backend)
    metrics.update(clusters.scores)
    if baseline:
        metrics.update(raw_feature_baseline(x, y, k=k, n_init=n_init, gmm=gmm,
                                            max_fit_samples=max_fit_samples, backend=backend,
                                            seed=seed, cache_dir=baseline_cache_dir))
        metrics["ari_gain"] = metrics["ari_best"] - metrics["baseline_ari_best"]
    metrics.update(_silhouettes(out["mu"], clusters, k, silhouette_samples, seed, backend))
    metrics.update(reconstruction_r2(x, out["recon"], observed.numpy(), feature_names))
    metrics.update(reconstruction_errors(x, out["recon"], observed.numpy(), feature_names, scaler))
    metrics["active_dims"] = active_dims(out["mu"])
    if out["logits"] is not None:
        n_classes = out["logits"].shape[1]
        metrics.update(classification_scores(out["logits"], target, n_classes))
    own = prior_assignment(model, out["mu"])
    if own is not None:
        # non-finite latent means have no responsibilities: no score, as for the clusterings
        metrics["ari_prior"] = _labeled_ari(y, own) if np.isfinite(out["mu"]).all() else float("nan")
        metrics["prior_clusters_used"] = int(np.unique(own).size)
        from lithovae.models.vade import VaDE

        if isinstance(model, VaDE):
            metrics["ari_vade"] = metrics["ari_prior"]
            metrics["vade_mixture_fitted"] = bool(model.gmm_initialised)
    if "y_group" in tensors:
        groups = tensors["y_group"].numpy()
        metrics.update(group_reconstruction_errors(x, out["recon"], observed.numpy(), groups, group_names))
        coherence = group_coherence(out["mu"], groups, group_names, COHERENCE_SAMPLES, seed)
        ratios = [c["ratio"] for c in coherence.values() if np.isfinite(c["ratio"])]
        metrics["group_coherence"] = coherence
        metrics["group_coherence_ratio_mean"] = float(np.mean(ratios)) if ratios else float("nan")
        if out["logits"] is not None:
            metrics["accuracy_group"] = group_accuracy(out["logits"], target, groups, group_names)
    if mask is not None and mask.trains_imputation:
        gen = torch.Generator().manual_seed(seed)
        visible = mask(observed, gen)
        hidden = (observed & ~visible).numpy()
        masked = model_outputs(model, tensors, visible)
        metrics.update(imputation_r2(x, masked["recon"], hidden, feature_names))
    arrays = {"mu": out["mu"], "recon": out["recon"], "logits": out["logits"], "target": target,
              "assignment": clusters.assignment, "prior_assignment": own, "clustering": clusters}
    return metrics, arrays


FEATURE_COLUMNS = ["feature", "r2", "mae", "rmse", "mae_orig", "rmse_orig"]
GROUP_COLUMNS = ["group", "n", "recon_mse", "recon_mae", "intra", "inter", "ratio", "accuracy"]


def diagnostic_tables(metrics: dict, feature_names: list[str]) -> dict[str, pd.DataFrame]:
    """The diagnostics of :func:`evaluate` as the run's tables: ``feature_errors`` (one row
    per feature: r2, mae, rmse in scaled units, mae_orig, rmse_orig in original units) and
    ``group_diagnostics`` (one row per expert group of the scored rows, most rows first: n,
    recon_mse, recon_mae, latent intra/inter distance and their ratio, classifier accuracy).
    Missing values (no scaler, no classifier, undefined) are NaN."""
    nan = float("nan")
    features = pd.DataFrame([{"feature": f, "r2": metrics.get(f"r2_{f}", nan),
                              "mae": metrics.get(f"mae_{f}", nan), "rmse": metrics.get(f"rmse_{f}", nan),
                              "mae_orig": metrics.get(f"mae_{f}_orig", nan),
                              "rmse_orig": metrics.get(f"rmse_{f}_orig", nan)} for f in feature_names],
                            columns=FEATURE_COLUMNS)
    counts = metrics.get("n_group") or {}
    coherence = metrics.get("group_coherence") or {}
    rows = []
    for group in sorted(counts, key=lambda g: (-counts[g], g)):
        c = coherence.get(group, {})
        rows.append({"group": group, "n": counts[group],
                     "recon_mse": metrics.get("recon_mse_group", {}).get(group, nan),
                     "recon_mae": metrics.get("recon_mae_group", {}).get(group, nan),
                     "intra": c.get("intra", nan), "inter": c.get("inter", nan), "ratio": c.get("ratio", nan),
                     "accuracy": (metrics.get("accuracy_group") or {}).get(group, nan)})
    return {"feature_errors": features, "group_diagnostics": pd.DataFrame(rows, columns=GROUP_COLUMNS)}


def raw_feature_baseline(x: np.ndarray, y: np.ndarray, *, k, n_init: int, gmm: bool,
                         max_fit_samples: int | None, backend: str, seed: int,
                         cache_dir: str | Path | None = None) -> dict:
    """``baseline_ari_*``: :func:`clustering_scores` on the scaled input features (unobserved
    entries at the scaled mean, 0), with the model's ks, initialisations and seed.

    Every run of a sweep scores the same test rows, so the result is cached in ``cache_dir``
    under a digest of the rows, labels and options (the backend included: its fits differ).
    """
    options = {"k": list(k), "n_init": n_init, "gmm": gmm, "max_fit_samples": max_fit_samples,
               "backend": backend, "seed": seed, "version": 1}
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()
                            + json.dumps(options, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "baselines" / f"{digest}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        return {key: (float("nan") if value is None else value)
                for key, value in json.loads(path.read_text()).items()}
    scores = clustering_scores(x, y, ks=tuple(k), seed=seed, n_init=n_init, gmm=gmm,
                               max_fit_samples=max_fit_samples, prefix="baseline_",
                               backend=backend).scores
    if path is not None:
        from lithovae.results import to_json

        atomic_write(path, lambda tmp: Path(tmp).write_text(to_json(scores)))
    return scores
