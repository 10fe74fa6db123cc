"""Evaluate a trained model on one split (the test boreholes by default).

Clustering uses the latent means, never sampled z. Reconstruction R² is in
the scaled space, as in the study, over observed entries only.
"""

from __future__ import annotations

import numpy as np
import torch

from lithovae.evaluation.metrics import (active_dims, classification_scores, clustering_scores,
                                         imputation_r2, reconstruction_r2, silhouette)
from lithovae.masking import MaskStrategy
from lithovae.models.base import LatentModel, inference


FIGURE_OPTIONS = ("figures", "umap_sample", "umap_top_n", "log_boreholes")


def split_eval_options(eval_cfg: dict) -> tuple[dict, dict]:
    """The ``eval`` config as (evaluate() keyword arguments, figure options)."""
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


def evaluate(model: LatentModel, tensors: dict[str, torch.Tensor], feature_names: list[str],
             mask: MaskStrategy | None = None, k=(10, 12, 15, 20), n_init: int = 10,
             gmm: bool = True, silhouette_samples: int = 10000, max_fit_samples: int | None = None,
             seed: int = 0) -> tuple[dict, dict]:
    """Metrics dict (keys of the study) and the arrays behind them."""
    observed = tensors["observed"]
    out = model_outputs(model, tensors, observed)
    x = tensors["x"].numpy()
    target = model.class_target(tensors).numpy()
    y = tensors["y"].numpy()
    metrics: dict = {"n_test": int(len(x))}

    clusters = clustering_scores(out["mu"], y, ks=tuple(k), seed=seed, n_init=n_init, gmm=gmm,
                                 max_fit_samples=max_fit_samples)
    metrics.update(clusters.scores)
    metrics["silhouette"] = (silhouette(out["mu"], clusters.assignment, silhouette_samples, seed)
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
