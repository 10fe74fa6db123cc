"""The β-TCVAE's KL decomposition: its estimator against known answers, its loss against the VAE's.

What every variant must do (build, loss terms, gradients, embeddings) is tested for it in
tests/test_models.py, which finds it by its YAML.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.func import stack_module_state, vmap

from lithovae.ensemble.stacked import ForwardAndLoss
from lithovae.models.base import LossContext
from lithovae.models.beta_tcvae import BetaTCVAE, kl_decomposition, stratified_log_weights
from lithovae.models.losses import gaussian_kl, log_normal_diag
from lithovae.models.vae import VAE
from tests.test_models import SPEC, make_batch, visible_of, yaml_kwargs

N_DATASET = 100_000  # the order of the LILY training set


def population(n: int, rho: float, posterior_var: float, seed: int, dims: int = 3):
    """Posteriors N(mu_i, posterior_var I) whose means are N(0, C), C the identity but for a
    correlation ``rho`` between dims 0 and 1, and one sample z_i of each. The aggregate posterior
    is N(0, C + posterior_var I): its total correlation is -log(1 - r^2) / 2 with
    r = rho / (1 + posterior_var), its dimension-wise KL sum_d KL(N(0, 1 + v) || N(0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    cov = torch.eye(dims, dtype=torch.float64)
    cov[0, 1] = cov[1, 0] = rho
    mu = torch.randn(n, dims, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    logvar = torch.full_like(mu, math.log(posterior_var))
    z = mu + torch.randn(n, dims, generator=gen, dtype=torch.float64) * math.sqrt(posterior_var)
    return z, mu, logvar


@pytest.mark.parametrize("batch, dataset", [(2, 10), (5, 100), (512, N_DATASET), (8, 3)])
def test_the_stratified_weights_of_each_row_sum_to_one(batch, dataset):
    log_w = stratified_log_weights(batch, torch.tensor(float(dataset), dtype=torch.float64))
    assert torch.allclose(log_w.logsumexp(dim=1), torch.zeros(batch, dtype=torch.float64), atol=1e-12)
    n = max(dataset, batch)  # a batch larger than the training set: N taken as B
    assert torch.allclose(log_w.diagonal().exp(), torch.full((batch,), 1 / n, dtype=torch.float64))
    if batch > 2:  # M - 1 rows at 1/M, one at (N - M) / (N M)
        m = batch - 1
        row = sorted(log_w[0].exp().tolist())
        assert row[:2] == pytest.approx(sorted([1 / n, (n - m) / (n * m)]))
        assert row[2:] == pytest.approx([1 / m] * (batch - 2))
    assert torch.equal(stratified_log_weights(1, torch.tensor(5.0)), torch.zeros(1, 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_total_correlation_is_near_zero_for_independent_latents_and_the_gaussian_value_for_correlated(seed):
    var = 0.25
    independent = kl_decomposition(*population(512, 0.0, var, seed), torch.tensor(float(N_DATASET)))
    correlated = kl_decomposition(*population(512, 0.9, var, seed), torch.tensor(float(N_DATASET)))
    r = 0.9 / (1 + var)
    assert abs(independent["tc"]) < 0.06
    assert correlated["tc"] == pytest.approx(-0.5 * math.log(1 - r**2), abs=0.08)  # 0.365
    dw_kl = 3 * 0.5 * (var - math.log(1 + var))  # sum_d KL(N(0, 1.25) || N(0, 1)) = 0.040
    assert independent["dw_kl"] == pytest.approx(dw_kl, abs=0.06)


def test_the_three_parts_sum_to_the_single_sample_kl_and_average_to_the_closed_form_one():
    z, mu, logvar = population(256, 0.6, 0.5, seed=3)
    parts = kl_decomposition(z, mu, logvar, torch.tensor(float(N_DATASET)))
    log_p = -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(dim=1)
    single_sample = (log_normal_diag(z, mu, logvar) - log_p).mean()
    assert sum(parts.values()) == pytest.approx(single_sample.item(), abs=1e-9)
    # over many draws of z the estimate is unbiased for KL(q(z|x) || p(z)), the VAE's closed form
    gen = torch.Generator().manual_seed(4)
    draws = [sum(kl_decomposition(mu + torch.randn(mu.shape, generator=gen, dtype=mu.dtype) * (0.5 * logvar).exp(),
                                  mu, logvar, torch.tensor(float(N_DATASET))).values()).item() for _ in range(200)]
    assert sum(draws) / len(draws) == pytest.approx(gaussian_kl(mu, logvar).mean().item(), abs=0.02)


def _pair(**weights):
    """A VAE and a β-TCVAE with the same weights (seed), and a batch; both in eval mode (z = mu)."""
    torch.manual_seed(0)
    vae = VAE(SPEC, **yaml_kwargs("vae")).eval()
    tcvae = BetaTCVAE(SPEC, **yaml_kwargs("beta_tcvae", **weights)).eval()
    tcvae.load_state_dict({**vae.state_dict(), "dataset_size": tcvae.dataset_size})
    batch = make_batch()
    return vae, tcvae, batch, visible_of(batch)


def test_with_weights_one_the_loss_is_the_vaes_and_the_tc_weight_adds_beta_times_its_excess():
    ctx = LossContext(beta=0.5, masked_weight=0.5)
    vae, tcvae, batch, visible = _pair(mi_weight=1.0, tc_weight=1.0, dw_kl_weight=1.0)
    plain = vae.loss(batch, vae(batch["x"], visible), visible, ctx)
    terms = tcvae.loss(batch, tcvae(batch["x"], visible), visible, ctx)
    assert terms["kl_reweighting"] == 0 and torch.equal(terms["loss"], plain["loss"])
    assert {k: terms[k] for k in plain} == plain
    vae, tcvae, batch, visible = _pair(mi_weight=2.0, tc_weight=6.0, dw_kl_weight=0.5)
    terms = tcvae.loss(batch, tcvae(batch["x"], visible), visible, ctx)
    expected = 0.5 * (1.0 * terms["mi"] + 5.0 * terms["tc"] - 0.5 * terms["dw_kl"])
    assert torch.allclose(terms["kl_reweighting"], expected)
    assert torch.allclose(terms["loss"], plain["loss"] + expected)


def test_each_member_of_a_stacked_ensemble_uses_its_own_training_set_size():
    ctx = LossContext(beta=1.0)
    torch.manual_seed(0)
    members = [BetaTCVAE(SPEC, **yaml_kwargs("beta_tcvae")).eval() for _ in range(2)]
    members[1].dataset_size.fill_(7.0)  # a smaller training set: other weights, another tc
    batch = make_batch()
    params, buffers = stack_module_state(members)
    # as the stacked loop computes a member's loss: on a weightless copy, the member's own in place
    step = ForwardAndLoss(copy.deepcopy(members[0]).to("meta"))

    def member_loss(p, b):
        return step.call(p, b, batch, batch["observed"], ctx)["tc"]

    stacked = vmap(member_loss)(params, buffers)
    separate = [m.loss(batch, m(batch["x"], batch["observed"]), batch["observed"], ctx)["tc"] for m in members]
    assert torch.allclose(stacked, torch.stack(separate), atol=1e-5)
    assert not torch.allclose(separate[0], separate[1])


def test_the_training_set_size_and_the_weights_are_checked():
    model = BetaTCVAE(type(SPEC)(6, SPEC.feature_names, 139, 14), **yaml_kwargs("beta_tcvae"))
    batch = make_batch()
    with pytest.raises(ValueError, match=r"needs the training-set size: DataSpec.n_train is 0"):
        model.loss(batch, model(batch["x"], batch["observed"]), batch["observed"], LossContext())
    with pytest.raises(ValueError, match=r"^tc_weight: must be .*-1"):
        BetaTCVAE(SPEC, **yaml_kwargs("beta_tcvae", tc_weight=-1.0))
