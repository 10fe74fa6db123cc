"""The clusterer fitted at evaluation, saved as plain JSON, assigning new rows to its clusters.

k-means assigns the nearest centre; a Gaussian mixture the component of highest weighted
density (scikit-learn's ``predict``). Both in float64, on the latent means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from lithovae.errors import RunDirError


class FittedClusterer:
    """``params``: :func:`lithovae.evaluation.metrics.fitted_params` of one clustering."""

    def __init__(self, params: dict):
        self.params = params
        self.method, self.k = params["method"], int(params["k"])
        if self.method == "kmeans":
            self.centers = torch.as_tensor(np.asarray(params["centers"], dtype=np.float64))
            return
        if self.method != "gmm":
            raise RunDirError(f"clusterer: unknown method {self.method!r}")
        self.covariance = params.get("covariance", "full")
        self.weights = torch.as_tensor(np.asarray(params["weights"], dtype=np.float64))
        self.means = torch.as_tensor(np.asarray(params["means"], dtype=np.float64))
        covariances = torch.as_tensor(np.asarray(params["covariances"], dtype=np.float64))
        if self.covariance == "diag":
            covariances = torch.diag_embed(covariances)
        # sklearn's precision Cholesky factors: log N(x) = -d/2 log 2pi + log|P| - |(x - m) P|^2 / 2
        chol = torch.linalg.cholesky(covariances)
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
        return cls(json.loads(Path(path).read_text()))
