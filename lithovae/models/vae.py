"""The study's VAE (v1 to v2.12): symmetric MLP encoder/decoder, N(0, I) prior."""

from __future__ import annotations

from lithovae.checks import MAX_LATENT_DIM, MAX_WIDTH, below_one, between, check_options, each
from lithovae.models.base import DataSpec, LatentModel
from lithovae.models.blocks import GaussianEncoder, mlp


class VAE(LatentModel):
    # the options' ranges, checked by the config and here (lithovae.checks; maxima: memory)
    OPTIONS = {"latent_dim": between(1, MAX_LATENT_DIM), "hidden": each(between(1, MAX_WIDTH)),
               "dropout": below_one}

    # the hyperparameters are required keywords: their defaults are in lithovae/conf/model/vae.yaml
    def __init__(self, data: DataSpec, *, latent_dim: int, hidden: list[int], batchnorm: bool,
                 dropout: float):
        check_options(type(self), locals())
        super().__init__(data)
        hidden = list(hidden)
        self.latent_dim = latent_dim
        self.encoder = GaussianEncoder(data.n_features, hidden, latent_dim,
                                       batchnorm=batchnorm, dropout=dropout)
        self.decoder = mlp(latent_dim, hidden[::-1], data.n_features,
                           batchnorm=batchnorm, dropout=dropout)
