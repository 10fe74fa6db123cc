"""Evaluation: clustering, reconstruction and classification metrics (numpy in, dict out)."""

from lithovae.evaluation.metrics import (
    ClusteringResult,
    active_dims,
    classification_scores,
    clustering_scores,
    imputation_r2,
    reconstruction_r2,
    silhouette,
)

__all__ = [
    "ClusteringResult",
    "active_dims",
    "classification_scores",
    "clustering_scores",
    "imputation_r2",
    "reconstruction_r2",
    "silhouette",
]
