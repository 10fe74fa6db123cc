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

from lithovae.models.base import DataSpec, LossContext, ModelOutput
from lithovae.models.losses import class_loss, masked_mse
from lithovae.models.semisup import SemiSupervisedVAE
from lithovae.models.vae import VAE

REDUCTIONS = ("mean", "sum")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return reduction


class ReductionMixin:
    """``loss`` in the form ``self.reduction`` names (see the module docstring)."""

    reduction: str

    def loss(self, batch: dict[str, Tensor], out: ModelOutput, visible: Tensor,
             ctx: LossContext) -> dict[str, Tensor]:
        if self.reduction == "sum":
            return super().loss(batch, out, visible, ctx)
        observed = batch["observed"].to(out.recon.dtype)
        terms: dict[str, Tensor] = {}
        terms["recon"] = masked_mse(out.recon, batch["x"], observed)
        # the per-sample KL is summed over latent dims: / dims and the batch mean = the mean entry
        terms["kl"] = self.prior_kl(out).mean() / out.mu.shape[-1]
        total = terms["recon"] + ctx.beta * terms["kl"]
        if isinstance(ctx.masked_weight, Tensor) or ctx.masked_weight:
            hidden = observed * (1.0 - visible.to(out.recon.dtype))
            terms["masked_recon"] = masked_mse(out.recon, batch["x"], hidden)
            total = total + ctx.masked_weight * terms["masked_recon"]
        if out.logits is not None:
            terms["class"] = class_loss(out.logits, self.class_target(batch), ctx.alpha)
            total = total + terms["class"]
        for name, value in self.extra_losses(batch, out, ctx).items():
            terms[name] = value
            total = total + value
        terms["loss"] = total
        return terms


class HybridVAE(ReductionMixin, VAE):
    """004's ``model_unsup_hybrid.pt`` architecture (the study's VAE) with ``reduction``."""

    # defaults: lithovae/conf/model/hybrid.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, reduction: str, **vae_kwargs):
        super().__init__(data, **vae_kwargs)
        self.reduction = check_reduction(reduction)


class HybridSemiSupervisedVAE(ReductionMixin, SemiSupervisedVAE):
    """004's ``model_semisup_hybrid.pt`` architecture (the semi-supervised VAE) with ``reduction``."""

    # defaults: lithovae/conf/model/hybrid_semisup.yaml (``semisup_kwargs``: model/semisup.yaml's)
    def __init__(self, data: DataSpec, *, reduction: str, **semisup_kwargs):
        super().__init__(data, **semisup_kwargs)
        self.reduction = check_reduction(reduction)
