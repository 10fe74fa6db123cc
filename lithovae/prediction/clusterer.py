"""The clusterer fitted at evaluation, saved as plain JSON, assigning new rows to its clusters.

k-means assigns the nearest centre; a Gaussian mixture the component of highest weighted
density (scikit-learn's ``predict``). Both in float64, on the latent means.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from lithovae.errors import RunDirError

# not at the top: lithovae.config loads Hydra, which loading a saved clusterer needs only for its
# maximum; read_json with it


class FittedClusterer:
    """``params``: :func:`lithovae.evaluation.metrics.fitted_params` of one clustering. Every
    parameter is checked (``where`` names the file in the one-line ``RunDirError``): a known
    method, ``k`` equal to the number of centres or components, finite arrays of matching
    shapes, positive weights and positive-definite covariances."""

    def __init__(self, params: dict, where: str = "clusterer"):
        from lithovae.config import MAX_CLUSTERS

        if not isinstance(params, dict):
            raise RunDirError(f"{where}: a JSON object expected, got {type(params).__name__}")
        self.params = params
        self.method, k = params.get("method"), params.get("k")
        if self.method not in ("kmeans", "gmm"):
            raise RunDirError(f"{where}: method: unknown {self.method!r} (kmeans or gmm)")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_CLUSTERS:
            raise RunDirError(f"{where}: k: must be an integer in [1, {MAX_CLUSTERS}], got {k!r}")
        self.k = k
        if self.method == "kmeans":
            self.centers = torch.as_tensor(_array(params, "centers", 2, where, k))
            self.dim = self.centers.shape[1]
            return
        self.covariance = params.get("covariance", "full")
        if self.covariance not in ("full", "diag"):
            raise RunDirError(f"{where}: covariance: unknown {self.covariance!r} (full or diag)")
        self.means = torch.as_tensor(_array(params, "means", 2, where, k))
        self.dim = d = self.means.shape[1]
        weights = _array(params, "weights", 1, where, k)
        if not (weights > 0).all():
            raise RunDirError(f"{where}: weights: every component weight must be > 0")
        self.weights = torch.as_tensor(weights)
        covariances = _array(params, "covariances", 3 if self.covariance == "full" else 2, where, k)
        if covariances.shape[1:] != ((d, d) if self.covariance == "full" else (d,)):
            raise RunDirError(f"{where}: covariances: shape {list(covariances.shape)} does not fit {k} "
                              f"components of dimension {d} ({self.covariance})")
        covariances = torch.as_tensor(covariances)
        if self.covariance == "diag":
            covariances = torch.diag_embed(covariances)
        # sklearn's precision Cholesky factors: log N(x) = -d/2 log 2pi + log|P| - |(x - m) P|^2 / 2
        chol, info = torch.linalg.cholesky_ex(covariances)
        if bool((info != 0).any()):
            raise RunDirError(f"{where}: covariances: component {int(torch.nonzero(info)[0, 0])} is not "
                              "positive definite")
        eye = torch.eye(chol.shape[-1], dtype=torch.float64).expand_as(chol)
        self.precision_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        log_det = self.precision_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        self.shift = torch.einsum("kd,kde->ke", self.means, self.precision_chol)
        self.constant = -0.5 * self.means.shape[1] * math.log(2 * math.pi) + log_det + self.weights.log()

    def predict(self, z, chunk: int = 4096) -> np.ndarray:
        """Cluster id (int64) of each row of ``z`` [N, D]; -1 for a row with a non-finite value."""
        z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
        out = torch.full((len(z),), -1, dtype=torch.int64)
        finite = torch.isfinite(z).all(1)
        rows = torch.nonzero(finite).squeeze(1)
        for part in rows.split(chunk):
            out[part] = self.scores(z[part]).argmax(1)
        return out.numpy()

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """[N, k]: minus squared distances (k-means) or weighted log densities (GMM)."""
        if self.method == "kmeans":
            return -torch.cdist(z, self.centers).square()
        k, d = self.means.shape
        # (z - m_k) P_k for every k as one product: [N, D] x [D, k*D]
        y = (z @ self.precision_chol.permute(1, 0, 2).reshape(d, k * d)).view(len(z), k, d) - self.shift
        return -0.5 * (y * y).sum(-1) + self.constant

    def to_dict(self) -> dict:
        """The parameters as JSON-ready lists (what :meth:`load` reads)."""
        return {key: np.asarray(value).tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
                for key, value in self.params.items()}

    @classmethod
    def load(cls, path: Path) -> "FittedClusterer":
        from lithovae.untrusted import read_json

        return cls(read_json(path), where=str(path))


def _array(params: dict, key: str, ndim: int, where: str, k: int) -> np.ndarray:
    """``params[key]`` as a finite float64 array of ``ndim`` dimensions, ``k`` long, none empty."""
    value = params.get(key)
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):  # ragged lists, strings
        array = None
    if array is None or array.ndim != ndim or 0 in array.shape:
        raise RunDirError(f"{where}: {key}: must be a {ndim}-D array of numbers, got {str(value)[:60]}")
    if len(array) != k:
        raise RunDirError(f"{where}: {key}: {len(array)} rows, but k is {k}")
    if not np.isfinite(array).all():
        raise RunDirError(f"{where}: {key}: holds non-finite values")
    return array
