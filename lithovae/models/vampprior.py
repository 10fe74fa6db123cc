"""v2.10 VampPrior (Tomczak & Welling 2018): p(z) = mean_k q(z | u_k) over learnable pseudo-inputs.

The pseudo-inputs live in the scaled feature space (standardised, so unbounded):
they start from N(0, 1) and are never clamped to [0, 1] as for images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lithovae.checks import MAX_CLUSTERS, between, check_options, random_seed
from lithovae.models.base import DataSpec, ModelOutput
from lithovae.models.losses import mixture_prior_kl
from lithovae.models.vae import VAE


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def batchnorm_eval(module: nn.Module, norms: Sequence[_BatchNorm] | None = None):
    """Run ``module``'s BatchNorm layers (``norms``, found in ``module`` if not given) on
    their running statistics, leaving them untouched."""
    if norms is None:
        norms = batchnorm_layers(module)
    modes = [m.training for m in norms]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(norms, modes):
            m.train(mode)


class VampPriorVAE(VAE):
    OPTIONS = {"n_pseudo_inputs": between(1, MAX_CLUSTERS), "seed": random_seed}

    # defaults: lithovae/conf/model/vampprior.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, n_pseudo_inputs: int, seed: int, **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        generator = torch.Generator().manual_seed(seed)
        self.pseudo_inputs = nn.Parameter(
            torch.randn(n_pseudo_inputs, data.n_features, generator=generator))
        # found once: the encoder's layers do not change after construction
        self._encoder_norms = tuple(batchnorm_layers(self.encoder))

    def prior_components(self) -> tuple[Tensor, Tensor]:
        """Posterior (mu, logvar) of each pseudo-input, all features visible: [K, D] each.

        BatchNorm uses running statistics here so the prior is the same function of
        the pseudo-inputs in training and evaluation, and the pseudo-inputs do not
        leak into the statistics of the data.
        """
        with batchnorm_eval(self.encoder, self._encoder_norms):
            return self.encode(self.pseudo_inputs, torch.ones_like(self.pseudo_inputs))

    def prior_kl(self, out: ModelOutput) -> Tensor:
        means, logvars = self.prior_components()
        n = means.shape[0]
        log_weights = torch.full((n,), -math.log(n), dtype=means.dtype, device=means.device)
        return mixture_prior_kl(out.z, out.mu, out.logvar, log_weights, means, logvars)
