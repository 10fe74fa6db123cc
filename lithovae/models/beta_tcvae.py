"""β-TCVAE (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"): the VAE whose KL
is split into index-code mutual information, total correlation and dimension-wise KL, each with
its own weight, so correlated latents can be penalised on their own::

    E_x KL(q(z|x) || p(z)) = MI(x; z)                           mi:    E[log q(z|x) - log q(z)]
                           + KL(q(z) || prod_j q(z_j))          tc:    E[log q(z) - sum_j log q(z_j)]
                           + sum_j KL(q(z_j) || p(z_j))         dw_kl: E[sum_j log q(z_j) - log p(z)]

    loss = recon + beta * (KL + (mi_weight - 1) * mi + (tc_weight - 1) * tc + (dw_kl_weight - 1) * dw_kl)

``beta`` is the run's schedule (``beta=...``), as in every variant; ``KL`` is the closed-form KL
the plain VAE uses, so with the three weights 1 the loss is exactly the VAE's, and in expectation
the bracket is ``mi_weight * mi + tc_weight * tc + dw_kl_weight * dw_kl`` (the paper's alpha,
beta, gamma; its experiments keep alpha = gamma = 1, as lithovae/conf/model/beta_tcvae.yaml does).

q(z) is the aggregate posterior over the training set: its density at each sample is estimated
from the mini-batch by minibatch-stratified sampling (the paper's MSS, appendix C.2), which needs
the training-set size N (``DataSpec.n_train``). Not the paper's minibatch-weighted sampling: its
weights 1/(NM) sum to 1/N, not 1, which biases tc by up to (D - 1) log N.
The logged ``mi``, ``tc`` and ``dw_kl`` are the unweighted estimates; ``kl_reweighting`` is what
the weights add to ``beta * kl`` (0 with the weights 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lithovae.checks import check_options, non_negative
from lithovae.models.base import DataSpec, LossContext, ModelOutput
from lithovae.models.losses import LOG_2PI
from lithovae.models.vae import VAE

DECOMPOSITION = ("mi", "tc", "dw_kl")


def stratified_log_weights(batch_size: int, dataset_size: Tensor) -> Tensor:
    """log of the MSS importance weights [B, B]: row i weights the posteriors q(z_i | x_j) of the
    batch rows j. The row's own posterior 1/N, one other row (the next, cyclically) (N - M) / (N M),
    the other M - 1 rows 1/M, with M = B - 1: each row sums to 1 (Chen et al. 2018, appendix C.2).
    ``dataset_size`` N: a 0-d tensor (one per member of a stacked ensemble); N < B (a validation
    batch larger than the training set) is taken as N = B."""
    if batch_size == 1:
        return torch.zeros(1, 1, dtype=dataset_size.dtype, device=dataset_size.device)
    n, m = dataset_size.clamp(min=batch_size), batch_size - 1
    rows = torch.arange(batch_size, device=dataset_size.device)
    own = rows[:, None] == rows[None, :]
    stratum = rows[None, :] == ((rows + 1) % batch_size)[:, None]
    return torch.where(own, -n.log(), torch.where(stratum, (n - m).log() - (n * m).log(),
                                                  torch.full_like(own, -math.log(m), dtype=n.dtype)))


def kl_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: Tensor) -> dict[str, Tensor]:
    """Batch means of the mi, tc and dw_kl estimates (see the module docstring) at the samples
    ``z`` [B, D] of the posteriors N(mu, exp(logvar)) [B, D], q(z) over ``dataset_size`` rows.
    The three sum to the batch mean of ``log q(z|x) - log p(z)`` with p = N(0, I)."""
    # log q(z_i,d | x_j,d) for every sample i and posterior j: [B, B, D]
    log_q_dims = -0.5 * (LOG_2PI + logvar[None] + (z[:, None] - mu[None]).pow(2) * torch.exp(-logvar[None]))
    log_w = stratified_log_weights(z.shape[0], dataset_size.to(z))
    log_q_z_given_x = torch.diagonal(log_q_dims.sum(dim=2))  # each sample under its own posterior
    log_q_z = torch.logsumexp(log_w + log_q_dims.sum(dim=2), dim=1)
    log_q_marginals = torch.logsumexp(log_w[..., None] + log_q_dims, dim=1).sum(dim=1)
    log_p_z = -0.5 * (LOG_2PI + z.pow(2)).sum(dim=1)
    return {"mi": (log_q_z_given_x - log_q_z).mean(), "tc": (log_q_z - log_q_marginals).mean(),
            "dw_kl": (log_q_marginals - log_p_z).mean()}


class BetaTCVAE(VAE):
    ADDED_TERMS = (*DECOMPOSITION, "kl_reweighting")  # reported beside the base loss's terms
    OPTIONS = {f"{name}_weight": non_negative for name in DECOMPOSITION}

    # defaults: lithovae/conf/model/beta_tcvae.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, mi_weight: float, tc_weight: float, dw_kl_weight: float,
                 **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.weights = {"mi": float(mi_weight), "tc": float(tc_weight), "dw_kl": float(dw_kl_weight)}
        # a buffer, so each member of a stacked ensemble uses its own training set's size (and
        # the checkpoint keeps the size the model was trained with)
        self.register_buffer("dataset_size", torch.tensor(float(data.n_train)))

    def kl_decomposition(self, out: ModelOutput) -> dict[str, Tensor]:
        if self.data.n_train < 1:  # 0: the spec was not built by a data module
            raise ValueError("BetaTCVAE needs the training-set size: DataSpec.n_train is "
                             f"{self.data.n_train} (build the model from the data module's data_spec())")
        return kl_decomposition(out.z, out.mu, out.logvar, self.dataset_size)

    def loss(self, batch: dict[str, Tensor], out: ModelOutput, visible: Tensor,
             ctx: LossContext) -> dict[str, Tensor]:
        terms = super().loss(batch, out, visible, ctx)
        parts = self.kl_decomposition(out)
        reweighting = ctx.beta * sum((self.weights[name] - 1.0) * parts[name] for name in DECOMPOSITION)
        return {**terms, **parts, "kl_reweighting": reweighting, "loss": terms["loss"] + reweighting}
