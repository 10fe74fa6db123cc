"""The study's VAE (v1 to v2.12): symmetric MLP encoder/decoder, N(0, I) prior."""

from __future__ import annotations

from lithovae.models.base import DataSpec, LatentModel
from lithovae.models.blocks import GaussianEncoder, mlp


class VAE(LatentModel):
    def __init__(self, data: DataSpec, latent_dim: int = 10, hidden: list[int] = (32, 16),
                 batchnorm: bool = True, dropout: float = 0.0):
        super().__init__(data)
        hidden = list(hidden)
        self.latent_dim = latent_dim
        self.encoder = GaussianEncoder(data.n_features, hidden, latent_dim,
                                       batchnorm=batchnorm, dropout=dropout)
        self.decoder = mlp(latent_dim, hidden[::-1], data.n_features,
                           batchnorm=batchnorm, dropout=dropout)
