"""Loss terms as pure functions of tensors.

Per-sample terms return ``[B]`` so callers choose the reduction; batch terms
return a scalar. Nothing here holds parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim: [B]."""
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def masked_sse(recon: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Sum over features of ``mask * (recon - x)^2``: [B].

    ``mask`` is bool or a float weight. Entries outside the mask contribute
    nothing and pass no gradient, even if ``x`` holds NaN there.
    """
    mask = mask.to(recon.dtype)
    # where() before squaring keeps NaN targets out of both the value and the gradient
    diff = torch.where(mask != 0, recon - x, torch.zeros_like(recon))
    return (mask * diff.pow(2)).sum(dim=-1)


def masked_mse(recon: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(recon - x)^2`` over the entries of ``mask``: scalar (``MSE(recon[mask],
    x[mask], reduction='mean')``; a float mask gives the weighted mean). An empty mask gives
    exactly 0, still attached to the graph, rather than NaN."""
    mask = mask.to(recon.dtype)
    return masked_sse(recon, x, mask).sum() / mask.sum().clamp(min=torch.finfo(recon.dtype).tiny)


def class_loss(logits: Tensor, target: Tensor, alpha: float | Tensor,
               weight: Tensor | None = None) -> Tensor:
    """Weighted cross-entropy over labeled rows (``target >= 0``): scalar.

    Normalisation: ``sum_i alpha_i * weight[y_i] * CE_i / n_labeled`` -- the sum
    runs over labeled rows and is divided by their count, not by the sum of the
    weights (unlike ``F.cross_entropy(weight=...)``), so alpha and the class
    weights scale the term rather than cancel out. Unlabeled rows add nothing;
    a batch without labels gives exactly 0, still attached to the graph.
    """
    labeled = target >= 0
    safe_target = target.clamp(min=0)
    ce = F.cross_entropy(logits, safe_target, reduction="none")
    row_weight = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
    row_weight = row_weight.expand_as(ce) * labeled.to(logits.dtype)
    if weight is not None:
        row_weight = row_weight * weight.to(logits)[safe_target]
    ce = torch.where(labeled, ce, torch.zeros_like(ce))
    return (row_weight * ce).sum() / labeled.sum().clamp(min=1)


def info_nce(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised-contrastive InfoNCE (Khosla et al. 2020) on L2-normalised ``z``: scalar.

    For anchor ``i`` with positives ``P(i)`` (other rows with the same label):
    ``-1/|P(i)| * sum_{p in P(i)} log(exp(s_ip / T) / sum_{a != i} exp(s_ia / T))``
    with cosine similarity ``s``; every other row is in the denominator, so rows
    with a different label act as negatives. Anchors without a positive, and rows
    with a negative label, are skipped as anchors; the result is the mean over the
    remaining anchors (0, attached to the graph, if there are none).
    """
    n = z.shape[0]
    zero = z.sum() * 0.0
    if n < 2:
        return zero
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    log_denominator = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1)
    log_prob = sim - log_denominator[:, None]
    positive = (labels[:, None] == labels[None, :]) & ~self_mask & (labels >= 0)[:, None]
    n_positive = positive.sum(dim=1)
    anchors = n_positive > 0
    # masked sums rather than boolean indexing: no host sync on the number of anchors
    mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(dim=1) / n_positive.clamp(min=1)
    return -(mean_log_prob_pos * anchors).sum() / anchors.sum().clamp(min=1)


def log_normal_diag(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim (inputs broadcast)."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar), dim=-1)


def component_log_densities(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log N(z_b; means_k, diag(exp(logvars_k))) for z [B, D], means/logvars [K, D]: [B, K]."""
    return log_normal_diag(z[:, None, :], means[None, :, :], logvars[None, :, :])


def log_mixture_diag(z: Tensor, log_weights: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log sum_k w_k N(z; means_k, diag(exp(logvars_k))): [B]. ``log_weights`` [K] are log w_k."""
    return torch.logsumexp(log_weights + component_log_densities(z, means, logvars), dim=1)


def gmm_log_responsibilities(z: Tensor, log_pi: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log gamma(c|z) = log softmax_c(log pi_c + log N(z; mu_c, sigma_c^2)): [B, K]."""
    return torch.log_softmax(log_pi + component_log_densities(z, means, logvars), dim=1)


def vade_kl(mu: Tensor, logvar: Tensor, log_gamma: Tensor, log_pi: Tensor,
            means: Tensor, logvars: Tensor) -> Tensor:
    """The VaDE regulariser (Jiang et al. 2017, eq. 17 without the reconstruction): [B].

    ``E_{q(z|x) q(c|x)}[log q(z|x) + log q(c|x) - log p(z|c) - log p(c)]`` with
    q(z|x) = N(mu, exp(logvar)), q(c|x) = gamma (given as ``log_gamma`` [B, K]),
    p(c) = pi (``log_pi`` [K]) and p(z|c) = N(means_c, exp(logvars_c)), in closed form::

        0.5 * sum_c gamma_c sum_j [logvars_cj + (exp(logvar_j) + (mu_j - means_cj)^2) / exp(logvars_cj)]
        + sum_c gamma_c (log gamma_c - log pi_c) - 0.5 * sum_j (1 + logvar_j)

    (the log 2*pi terms cancel).
    """
    gamma = log_gamma.exp()
    var = logvar.exp()[:, None, :]
    cross = logvars[None] + (var + (mu[:, None, :] - means[None]).pow(2)) * torch.exp(-logvars[None])
    expected_log_p_z = 0.5 * torch.sum(gamma * cross.sum(dim=-1), dim=1)
    categorical_kl = torch.sum(gamma * (log_gamma - log_pi), dim=1)
    entropy_term = 0.5 * torch.sum(1.0 + logvar, dim=-1)
    return expected_log_p_z + categorical_kl - entropy_term


def mixture_prior_kl(z: Tensor, mu: Tensor, logvar: Tensor, log_weights: Tensor,
                     means: Tensor, logvars: Tensor) -> Tensor:
    """Single-sample Monte-Carlo KL(q(z|x) || p(z)) at ``z`` for a Gaussian-mixture p: [B].

    ``log q(z|x) - log sum_k w_k N(z; means_k, exp(logvars_k))`` (the VampPrior term).
    """
    return log_normal_diag(z, mu, logvar) - log_mixture_diag(z, log_weights, means, logvars)
