"""Loss functions against hand computation (explicit loops over plain floats)."""

from __future__ import annotations

import math

import pytest
import torch

from lithovae.models.base import DataSpec
from lithovae.models.heads import class_weights, resolve_target
from lithovae.models.losses import (
    class_loss,
    gaussian_kl,
    gmm_log_responsibilities,
    info_nce,
    log_mixture_diag,
    log_normal_diag,
    masked_sse,
    mixture_prior_kl,
    vade_kl,
)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# -- hand computations ----------------------------------------------------------------------

def hand_log_normal(z, mu, var):
    return sum(-0.5 * math.log(2 * math.pi * v) - (zi - m) ** 2 / (2 * v)
               for zi, m, v in zip(z, mu, var))


def hand_log_softmax(row):
    top = max(row)
    log_norm = top + math.log(sum(math.exp(r - top) for r in row))
    return [r - log_norm for r in row]


def hand_cross_entropy(logit_row, label):
    return -hand_log_softmax(logit_row)[label]


# -- gaussian_kl ----------------------------------------------------------------------------

def test_gaussian_kl_matches_univariate_closed_form():
    mu, logvar = [[0.5, -1.0], [0.0, 2.0]], [[0.0, math.log(2.0)], [-1.0, 0.3]]
    # KL(N(m, v) || N(0, 1)) = 0.5 * (v + m^2 - 1 - log v), summed over dims
    expected = [sum(0.5 * (math.exp(lv) + m * m - 1 - lv) for m, lv in zip(mr, lr))
                for mr, lr in zip(mu, logvar)]
    assert gaussian_kl(t(mu), t(logvar)).tolist() == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.125 + 1.0 - 0.5 * math.log(2.0))


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).tolist() == [0.0, 0.0, 0.0]
    assert float(gaussian_kl(torch.full((1, 4), 0.1), torch.zeros(1, 4))) > 0


# -- masked_sse -----------------------------------------------------------------------------

def test_masked_sse_sums_only_masked_entries():
    recon = t([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    x = t([[1.5, 0.0, 100.0], [1.0, -2.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    expected = [(1.0 - 1.5) ** 2 + (2.0 - 0.0) ** 2, (0.0 + 2.0) ** 2 + (0.0 - 3.0) ** 2]
    assert masked_sse(recon, x, mask).tolist() == pytest.approx(expected)


def test_masked_sse_float_weights_and_nan_targets_outside_mask():
    recon = t([[1.0, 2.0, 3.0]]).requires_grad_()
    x = t([[0.0, float("nan"), 1.0]])
    weight = t([[0.5, 0.0, 2.0]])
    value = masked_sse(recon, x, weight)
    assert value.tolist() == pytest.approx([0.5 * 1.0 + 2.0 * 4.0])
    value.sum().backward()
    # d/d recon of w * (recon - x)^2 = 2 w (recon - x); 0 where unmasked, never NaN
    assert recon.grad[0].tolist() == pytest.approx([1.0, 0.0, 8.0])


# -- class_loss -----------------------------------------------------------------------------

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]]


def test_class_loss_averages_over_labeled_rows_only():
    target = [0, -1, 1, -1]
    expected = (hand_cross_entropy(LOGITS[0], 0) + hand_cross_entropy(LOGITS[2], 1)) / 2
    value = class_loss(t(LOGITS), torch.tensor(target), 1.0)
    assert float(value) == pytest.approx(expected, rel=1e-12)
    # alpha scales the term
    assert float(class_loss(t(LOGITS), torch.tensor(target), 0.1)) == pytest.approx(0.1 * expected)


def test_class_loss_unlabeled_rows_do_not_matter():
    target = torch.tensor([0, -1, 1, -1])
    changed = t(LOGITS)
    changed[1] = t([50.0, -50.0, 3.0])
    assert float(class_loss(changed, target, 1.0)) == pytest.approx(float(class_loss(t(LOGITS), target, 1.0)))


def test_class_loss_all_unlabeled_is_exactly_zero_with_grad_path():
    logits = t(LOGITS).requires_grad_()
    value = class_loss(logits, torch.full((4,), -1), 0.5)
    assert value.item() == 0.0
    assert value.requires_grad
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_class_loss_per_sample_alpha_and_class_weights():
    target = [2, 0, 1, -1]
    alpha = [0.5, 2.0, 1.0, 7.0]
    weight = [3.0, 0.25, 1.0]
    expected = sum(alpha[i] * weight[target[i]] * hand_cross_entropy(LOGITS[i], target[i])
                   for i in range(3)) / 3
    value = class_loss(t(LOGITS), torch.tensor(target), t(alpha), weight=t(weight))
    assert float(value) == pytest.approx(expected, rel=1e-12)
    # per-sample alpha alone
    expected_alpha = sum(alpha[i] * hand_cross_entropy(LOGITS[i], target[i]) for i in range(3)) / 3
    assert float(class_loss(t(LOGITS), torch.tensor(target), t(alpha))) == pytest.approx(expected_alpha)


# -- class weights --------------------------------------------------------------------------

def spec(class_counts=(), group_counts=()):
    return DataSpec(6, ("GRA", "MS", "NGR", "R", "G", "B"), len(class_counts) or 3,
                    len(group_counts) or 4, tuple(class_counts), tuple(group_counts))


def test_balanced_weights_are_inverse_frequency_with_mean_one_over_present_classes():
    target = resolve_target(spec(group_counts=(10, 0, 40, 50)), "group")
    weights = class_weights(target, "balanced").tolist()
    raw = [1 / 10, 1 / 40, 1 / 50]
    mean = sum(raw) / 3
    assert weights == pytest.approx([raw[0] / mean, 0.0, raw[1] / mean, raw[2] / mean])
    assert sum(w for w in weights if w) / 3 == pytest.approx(1.0)


def test_inverse_frequency_weights_are_v1_0s_one_over_count_plus_one():
    target = resolve_target(spec(class_counts=(9, 0, 99)), "principal")
    assert class_weights(target, "inverse_frequency").tolist() == pytest.approx([0.1, 1.0, 0.01])
    assert class_weights(target, "none") is None


def test_class_weights_need_counts():
    with pytest.raises(ValueError, match="count"):
        class_weights(resolve_target(spec(), "group"), "balanced")


# -- info_nce -------------------------------------------------------------------------------

def hand_info_nce(z, labels, temperature):
    unit = [[v / math.sqrt(sum(c * c for c in row)) for v in row] for row in z]
    n = len(z)
    sim = [[sum(a * b for a, b in zip(unit[i], unit[j])) / temperature for j in range(n)]
           for i in range(n)]
    per_anchor = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and labels[j] == labels[i] and labels[i] >= 0]
        if not positives:
            continue
        denominator = sum(math.exp(sim[i][a]) for a in range(n) if a != i)
        per_anchor.append(-sum(math.log(math.exp(sim[i][p]) / denominator) for p in positives)
                          / len(positives))
    return sum(per_anchor) / len(per_anchor)


def test_info_nce_matches_hand_computation():
    z = [[1.0, 0.0], [2.0, 0.2], [0.0, 1.0], [-0.3, 3.0], [-1.0, -1.0]]
    labels = [0, 0, 1, 1, 2]  # row 4 has no positive: skipped as anchor, still a negative
    expected = hand_info_nce(z, labels, 0.5)
    assert float(info_nce(t(z), torch.tensor(labels), 0.5)) == pytest.approx(expected, rel=1e-10)
    # a different temperature gives a different value (the temperature is used)
    assert float(info_nce(t(z), torch.tensor(labels), 0.1)) == pytest.approx(
        hand_info_nce(z, labels, 0.1), rel=1e-10)


def test_info_nce_rows_with_negative_labels_are_never_positives():
    z = [[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0], [-1.0, 0.1]]
    labels = [-1, -1, 0, 0, 1]  # -1: unlabeled, a negative for others but no pair with each other
    expected = hand_info_nce(z, labels, 0.5)
    assert float(info_nce(t(z), torch.tensor(labels), 0.5)) == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(hand_info_nce(z, [5, 5, 0, 0, 1], 0.5))


def test_info_nce_is_scale_invariant_and_rewards_clustered_positives():
    labels = torch.tensor([0, 0, 1, 1])
    apart = t([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, -0.1]])
    mixed = t([[1.0, 0.0], [-1.0, 0.1], [1.0, 0.1], [-1.0, -0.1]])
    assert float(info_nce(apart * 5, labels, 0.5)) == pytest.approx(float(info_nce(apart, labels, 0.5)))
    assert float(info_nce(apart, labels, 0.5)) < float(info_nce(mixed, labels, 0.5))


def test_info_nce_without_positives_is_zero_with_grad_path():
    z = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).requires_grad_()
    value = info_nce(z, torch.tensor([0, 1, 2]), 0.5)
    assert value.item() == 0.0
    value.backward()
    assert z.grad is not None and torch.count_nonzero(z.grad) == 0


# -- Gaussian densities ---------------------------------------------------------------------

def test_log_normal_diag_matches_hand_density():
    z, mu, logvar = [0.3, -1.2, 2.0], [0.0, -1.0, 1.0], [0.0, math.log(0.5), math.log(3.0)]
    expected = hand_log_normal(z, mu, [math.exp(lv) for lv in logvar])
    assert float(log_normal_diag(t(z), t(mu), t(logvar))) == pytest.approx(expected, rel=1e-12)


def test_log_mixture_diag_matches_hand_density():
    z = [[0.5, -0.5]]
    means, var = [[0.0, 0.0], [1.0, -1.0]], [[1.0, 2.0], [0.5, 0.5]]
    w = [0.3, 0.7]
    expected = math.log(sum(w[k] * math.exp(hand_log_normal(z[0], means[k], var[k])) for k in range(2)))
    value = log_mixture_diag(t(z), t(w).log(), t(means), t(var).log())
    assert float(value) == pytest.approx(expected, rel=1e-12)


# -- VaDE ----------------------------------------------------------------------------------

# q(z|x) for two samples in 2-D; a 3-component mixture prior
VADE_MU = [[0.2, -0.4], [1.5, 0.5]]
VADE_VAR = [[0.5, 1.5], [0.2, 0.1]]
VADE_Z = [[0.1, -0.2], [1.2, 0.9]]
VADE_PI = [0.2, 0.5, 0.3]
VADE_MEANS = [[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]]
VADE_VARS = [[1.0, 0.5], [0.3, 2.0], [1.5, 1.0]]


def hand_responsibilities(z):
    joint = [VADE_PI[c] * math.exp(hand_log_normal(z, VADE_MEANS[c], VADE_VARS[c])) for c in range(3)]
    return [j / sum(joint) for j in joint]


def hand_vade_kl(mu, var, gamma):
    # E_q[log q(z|x)] = -0.5 * sum_j (log 2 pi + log var_j + 1)
    e_log_q_z = -0.5 * sum(math.log(2 * math.pi) + math.log(v) + 1 for v in var)
    # E_q[log p(z|c)] = -0.5 * sum_j (log 2 pi + log s2_cj + (var_j + (mu_j - m_cj)^2) / s2_cj)
    e_log_p_z = sum(
        gamma[c] * -0.5 * sum(math.log(2 * math.pi) + math.log(s2) + (v + (m - mc) ** 2) / s2
                              for m, v, mc, s2 in zip(mu, var, VADE_MEANS[c], VADE_VARS[c]))
        for c in range(3))
    e_log_q_c = sum(g * math.log(g) for g in gamma)
    e_log_p_c = sum(g * math.log(p) for g, p in zip(gamma, VADE_PI))
    return e_log_q_z + e_log_q_c - e_log_p_z - e_log_p_c


def test_gmm_responsibilities_match_bayes_rule():
    log_gamma = gmm_log_responsibilities(t(VADE_Z), t(VADE_PI).log(), t(VADE_MEANS), t(VADE_VARS).log())
    for b in range(2):
        assert log_gamma[b].exp().tolist() == pytest.approx(hand_responsibilities(VADE_Z[b]), rel=1e-10)


def test_vade_kl_matches_hand_computation():
    log_gamma = gmm_log_responsibilities(t(VADE_Z), t(VADE_PI).log(), t(VADE_MEANS), t(VADE_VARS).log())
    value = vade_kl(t(VADE_MU), t(VADE_VAR).log(), log_gamma, t(VADE_PI).log(),
                    t(VADE_MEANS), t(VADE_VARS).log())
    expected = [hand_vade_kl(VADE_MU[b], VADE_VAR[b], hand_responsibilities(VADE_Z[b])) for b in range(2)]
    assert value.tolist() == pytest.approx(expected, rel=1e-10)


def test_vade_kl_matches_monte_carlo_for_fixed_responsibilities():
    gamma = [0.1, 0.6, 0.3]
    mu, var = VADE_MU[0], VADE_VAR[0]
    gen = torch.Generator().manual_seed(0)
    z = t(mu) + torch.randn(400_000, 2, generator=gen, dtype=torch.float64) * t(var).sqrt()
    log_q = log_normal_diag(z, t(mu), t(var).log())
    log_p = torch.stack([log_normal_diag(z, t(VADE_MEANS[c]), t(VADE_VARS[c]).log()) for c in range(3)], 1)
    mc = float((log_q - (t(gamma) * log_p).sum(1)).mean()) + sum(
        g * (math.log(g) - math.log(p)) for g, p in zip(gamma, VADE_PI))
    value = vade_kl(t([mu]), t([var]).log(), t([gamma]).log(), t(VADE_PI).log(),
                    t(VADE_MEANS), t(VADE_VARS).log())
    assert float(value) == pytest.approx(mc, abs=0.01)


# -- VampPrior ------------------------------------------------------------------------------

def test_mixture_prior_kl_matches_hand_single_sample_estimate():
    z, mu, var = [[0.4, -0.1]], [[0.5, 0.0]], [[0.3, 0.8]]
    means, vars_ = [[0.0, 0.0], [1.0, -1.0], [0.5, 0.5]], [[1.0, 1.0], [0.2, 0.4], [2.0, 0.5]]
    log_q = hand_log_normal(z[0], mu[0], var[0])
    log_p = math.log(sum(math.exp(hand_log_normal(z[0], means[k], vars_[k])) / 3 for k in range(3)))
    value = mixture_prior_kl(t(z), t(mu), t(var).log(), torch.full((3,), -math.log(3), dtype=torch.float64),
                             t(means), t(vars_).log())
    assert float(value) == pytest.approx(log_q - log_p, rel=1e-12)


# -- the hybrid models' loss reduction (seed 004) ----------------------------------------------

# a tiny batch: 3 rows, 2 features, 2 latent dims, 3 classes; every entry observed, as in 004
H_X = [[0.5, -1.0], [2.0, 0.0], [-0.5, 1.5]]
H_RECON = [[0.0, -0.5], [1.0, 1.0], [0.5, 1.0]]
H_VISIBLE = [[1, 0], [1, 1], [0, 1]]  # entries (0, 1) and (2, 0) hidden from the encoder
H_MU = [[0.3, -0.2], [1.0, 0.5], [-0.4, 0.0]]
H_LOGVAR = [[0.0, -1.0], [0.5, 0.2], [-0.3, 0.1]]
H_LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]]
H_Y = [0, 2, 1]
H_BETA, H_ALPHA, H_MASKED = 0.3, 0.5, 0.5


def _hybrid_terms(reduction: str, observed=None):
    from lithovae.models.base import LossContext, ModelOutput
    from lithovae.models.hybrid import HybridSemiSupervisedVAE

    model = HybridSemiSupervisedVAE(
        DataSpec(2, ("GRA", "R"), 3, 2), reduction=reduction, classifier_hidden=[4],
        classifier_dropout=0.0, target="principal", latent_dim=2, hidden=[4], batchnorm=False,
        dropout=0.0).double()
    observed = torch.ones(3, 2, dtype=torch.bool) if observed is None else observed
    batch = {"x": t(H_X), "observed": observed, "y": torch.tensor(H_Y), "y_group": torch.tensor(H_Y)}
    out = ModelOutput(mu=t(H_MU), logvar=t(H_LOGVAR), z=t(H_MU), recon=t(H_RECON), logits=t(H_LOGITS))
    ctx = LossContext(beta=H_BETA, alpha=H_ALPHA, masked_weight=H_MASKED)
    return {k: float(v) for k, v in model.loss(batch, out, torch.tensor(H_VISIBLE, dtype=torch.bool), ctx).items()}


def test_hybrid_mean_reduction_is_seed_004s_loss():
    # 004 (generate_all_figures.py): recon_loss = MSE(recon, x, 'mean'); masked_loss =
    # MSE(recon[mask], x[mask], 'mean'); kl = -0.5 * mean(1 + logvar - mu^2 - exp(logvar));
    # loss = recon + 0.5 * masked + beta * kl (+ 0.5 * CrossEntropy(logits, labels), mean)
    entries = [(i, j) for i in range(3) for j in range(2)]
    recon = sum((H_RECON[i][j] - H_X[i][j]) ** 2 for i, j in entries) / 6
    hidden = [(i, j) for i, j in entries if not H_VISIBLE[i][j]]
    masked = sum((H_RECON[i][j] - H_X[i][j]) ** 2 for i, j in hidden) / len(hidden)
    kl = -0.5 * sum(1 + H_LOGVAR[i][j] - H_MU[i][j] ** 2 - math.exp(H_LOGVAR[i][j]) for i, j in entries) / 6
    ce = sum(hand_cross_entropy(H_LOGITS[i], H_Y[i]) for i in range(3)) / 3
    terms = _hybrid_terms("mean")
    assert terms["recon"] == pytest.approx(recon, rel=1e-12)
    assert terms["masked_recon"] == pytest.approx(masked, rel=1e-12)
    assert terms["kl"] == pytest.approx(kl, rel=1e-12)
    assert terms["class"] == pytest.approx(H_ALPHA * ce, rel=1e-12)
    assert terms["loss"] == pytest.approx(recon + H_MASKED * masked + H_BETA * kl + H_ALPHA * ce, rel=1e-12)


def test_hybrid_sum_reduction_is_the_per_sample_sum_averaged_over_the_batch():
    # 004's standard loss (reduction='sum' over the batch) divided by the batch size
    recon = sum((H_RECON[i][j] - H_X[i][j]) ** 2 for i in range(3) for j in range(2)) / 3
    masked = sum((H_RECON[i][j] - H_X[i][j]) ** 2 for i in range(3) for j in range(2) if not H_VISIBLE[i][j]) / 3
    kl = -0.5 * sum(1 + H_LOGVAR[i][j] - H_MU[i][j] ** 2 - math.exp(H_LOGVAR[i][j])
                    for i in range(3) for j in range(2)) / 3
    ce = sum(hand_cross_entropy(H_LOGITS[i], H_Y[i]) for i in range(3)) / 3
    terms = _hybrid_terms("sum")
    assert [terms[k] for k in ("recon", "masked_recon", "kl", "class")] == pytest.approx(
        [recon, masked, kl, H_ALPHA * ce], rel=1e-12)
    assert terms["loss"] == pytest.approx(recon + H_MASKED * masked + H_BETA * kl + H_ALPHA * ce, rel=1e-12)


def test_hybrid_mean_reduction_scores_observed_entries_only():
    # an entry never measured is left out of the mean (not counted as a zero error)
    observed = torch.tensor([[True, True], [True, False], [True, True]])
    entries = [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]
    recon = sum((H_RECON[i][j] - H_X[i][j]) ** 2 for i, j in entries) / 5
    assert _hybrid_terms("mean", observed)["recon"] == pytest.approx(recon, rel=1e-12)


def test_masked_mse_of_an_empty_mask_is_zero_with_grad_path():
    from lithovae.models.losses import masked_mse

    recon = t([[1.0, 2.0]]).requires_grad_()
    value = masked_mse(recon, t([[0.0, float("nan")]]), torch.zeros(1, 2, dtype=torch.bool))
    assert value.item() == 0.0 and value.requires_grad
    assert masked_mse(recon, t([[0.0, 5.0]]), t([[1.0, 3.0]])).item() == pytest.approx((1.0 + 3 * 9.0) / 4)


def test_hybrid_reduction_must_be_mean_or_sum():
    from lithovae.models.hybrid import HybridVAE

    with pytest.raises(ValueError, match="reduction: must be one of"):
        HybridVAE(DataSpec(2, ("GRA", "R"), 3, 2), reduction="total", latent_dim=2, hidden=[4],
                  batchnorm=False, dropout=0.0)
