"""Seed 004's hybrid models (``generate_all_figures.py``): the VAE and the semi-supervised VAE
with the loss reduction as an option (``model.reduction``).

``"mean"`` -- 004's hybrid loss, every term averaged over its entries::

    recon  = MSE(recon, x, reduction='mean')                 # over the observed entries
    masked = MSE(recon[hidden], x[hidden], reduction='mean')  # over the entries hidden from the encoder
    kl     = -0.5 * mean(1 + logvar - mu^2 - exp(logvar))     # over batch x latent dims
    class  = alpha * CrossEntropy(logits, labels)             # mean over the labeled rows
    loss   = recon + masked_weight * masked + beta * kl + class

``"sum"`` -- the loss of every other model here (:meth:`LatentModel.loss`): reconstruction error
and KL summed over features and latent dims per sample, then averaged over the batch; this is
004's standard ``reduction='sum'`` loss (``models/unsup.pt``, ``models/semisup.pt``) divided by
the batch size, the same gradient direction (Adam is invariant to the constant factor, up to its
epsilon). The class term is the mean over labeled rows in both.

Entries never measured are never scored (as everywhere in this package): the means run over
the observed entries, which are all the entries on the complete 6-feature set the seeds used.
"""

from __future__ import annotations

from torch import Tensor

from lithovae.checks import check_options, one_of
from lithovae.models.base import DataSpec, ModelOutput
from lithovae.models.losses import masked_mse
from lithovae.models.semisup import SemiSupervisedVAE
from lithovae.models.vae import VAE

REDUCTIONS = ("mean", "sum")


class ReductionMixin:
    """The loss terms reduced as ``self.reduction`` names (see the module docstring)."""

    reduction: str
    OPTIONS = {"reduction": one_of(*REDUCTIONS)}  # checked by the config and the constructors

    def reconstruction_error(self, recon: Tensor, x: Tensor, mask: Tensor) -> Tensor:
        if self.reduction == "sum":
            return super().reconstruction_error(recon, x, mask)
        return masked_mse(recon, x, mask)

    def kl_term(self, out: ModelOutput) -> Tensor:
        if self.reduction == "sum":
            return super().kl_term(out)
        # the per-sample KL is summed over latent dims: / dims and the batch mean = the mean entry
        return self.prior_kl(out).mean() / out.mu.shape[-1]


class HybridVAE(ReductionMixin, VAE):
    """004's ``model_unsup_hybrid.pt`` architecture (the study's VAE) with ``reduction``."""

    # defaults: lithovae/conf/model/hybrid.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, reduction: str, **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.reduction = reduction


class HybridSemiSupervisedVAE(ReductionMixin, SemiSupervisedVAE):
    """004's ``model_semisup_hybrid.pt`` architecture (the semi-supervised VAE) with ``reduction``."""

    # defaults: lithovae/conf/model/hybrid_semisup.yaml (``semisup_kwargs``: model/semisup.yaml's)
    def __init__(self, data: DataSpec, *, reduction: str, **semisup_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **semisup_kwargs)
        self.reduction = reduction
