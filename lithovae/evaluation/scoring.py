"""Evaluate a trained model on one split (the test boreholes by default).

Clustering uses the latent means, never sampled z. Reconstruction R² is in
the scaled space, as in the study, over observed entries only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from lithovae.evaluation.metrics import (active_dims, classification_scores, clustering_scores,
                                         imputation_r2, reconstruction_r2, silhouette)
from lithovae.files import atomic_write
from lithovae.masking import MaskStrategy
from lithovae.models.base import LatentModel, inference


FIGURE_OPTIONS = ("figures", "umap_sample", "umap_top_n", "log_boreholes")


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


def evaluate(model: LatentModel, tensors: dict[str, torch.Tensor], feature_names: list[str], *,
             k, n_init: int, gmm: bool, silhouette_samples: int, max_fit_samples: int | None,
             backend: str, seed: int, mask: MaskStrategy | None = None, baseline: bool = True,
             baseline_cache_dir: str | Path | None = None, clustering=None) -> tuple[dict, dict]:
    """Metrics dict (keys of the study) and the arrays behind them.

    The scoring options of the ``eval`` config (:func:`split_eval_options`) and ``seed``
    are required keywords: their defaults are written once, in
    ``lithovae/conf/eval/default.yaml`` and ``lithovae/conf/train.yaml``.

    With ``baseline``, the same clusterings of the scaled input features of the same rows
    (``baseline_ari_*``) and ``ari_gain = ari_best - baseline_ari_best``: does the latent
    space beat the raw features at all?
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
    metrics["silhouette"] = (silhouette(out["mu"], clusters.assignment, silhouette_samples, seed,
                                        backend=backend)
                             if clusters.assignment is not None else float("nan"))
    metrics.update(reconstruction_r2(x, out["recon"], observed.numpy(), feature_names))
    metrics["active_dims"] = active_dims(out["mu"])
    if out["logits"] is not None:
        n_classes = out["logits"].shape[1]
        metrics.update(classification_scores(out["logits"], target, n_classes))
    if mask is not None and mask.trains_imputation:
        gen = torch.Generator().manual_seed(seed)
        visible = mask(observed, gen)
        hidden = (observed & ~visible).numpy()
        masked = model_outputs(model, tensors, visible)
        metrics.update(imputation_r2(x, masked["recon"], hidden, feature_names))
    arrays = {"mu": out["mu"], "recon": out["recon"], "logits": out["logits"], "target": target,
              "assignment": clusters.assignment}
    return metrics, arrays


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
