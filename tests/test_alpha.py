import math

import pytest
import torch

from lithovae.alpha import AdaptiveAlpha, FixedAlpha, NoAlpha


def test_no_and_fixed_alpha():
    target = torch.tensor([0, 1, -1])
    assert NoAlpha().bind([5, 5])(target) == 0.0
    assert FixedAlpha(value=0.1).bind([5, 5])(target) == 0.1


def test_adaptive_alpha_by_hand():
    # counts 90, 10, 0 -> freq 0.9, 0.1, 0
    strategy = AdaptiveAlpha(base=0.1).bind([90, 10, 0])
    target = torch.tensor([0, 1, -1, 2, 1])
    weights = strategy(target)
    expected = [0.1 / math.sqrt(0.9), 0.1 / math.sqrt(0.1), 0.0, 0.0, 0.1 / math.sqrt(0.1)]
    assert weights.shape == (5,) and weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(weights).all()
    # rarer class weighs more: 0.316 vs 0.105
    assert weights[1] > weights[0]


def test_adaptive_alpha_uniform_counts():
    # 4 equal classes: freq 0.25 -> base / 0.5 = 2 * base
    weights = AdaptiveAlpha(base=0.5).bind([3, 3, 3, 3])(torch.tensor([0, 3]))
    assert weights.tolist() == pytest.approx([1.0, 1.0])


def test_adaptive_alpha_errors():
    with pytest.raises(RuntimeError, match="bind"):
        AdaptiveAlpha(base=0.1)(torch.tensor([0]))
    with pytest.raises(ValueError, match="class code"):
        AdaptiveAlpha(base=0.1).bind([1, 1])(torch.tensor([2]))
    with pytest.raises(ValueError, match="sum to 0"):
        AdaptiveAlpha(base=0.1).bind([0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        AdaptiveAlpha(base=0.1).bind([1, -1])
    with pytest.raises(ValueError, match="base"):
        AdaptiveAlpha(base=-0.1)
    with pytest.raises(ValueError, match="value"):
        FixedAlpha(value=float("inf"))


def test_bind_does_not_mutate_the_configured_strategy():
    configured = AdaptiveAlpha(base=0.1)
    bound = configured.bind([1, 3])
    assert bound is not configured
    with pytest.raises(RuntimeError):
        configured(torch.tensor([0]))
