import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lithovae.masking import BlockMask, NoMask, RandomMask, RealMask
from tests.conftest import config_defaults

FEATURES = ("GRA", "MS", "NGR", "R", "G", "B")


def _yaml(option: str) -> dict:
    """The constructor keywords conf/mask/<option>.yaml gives (the constructors have no defaults)."""
    return {k: v for k, v in config_defaults(f"mask={option}")["mask"].items() if k != "_target_"}


RANDOM, BLOCK = _yaml("random"), _yaml("block")


def random_mask(prob: float, **overrides) -> RandomMask:
    return RandomMask(**{**RANDOM, "prob": prob, **overrides})


def block_mask(prob: float, **overrides) -> BlockMask:
    return BlockMask(**{**BLOCK, "prob": prob, **overrides})


def _observed(rows: int = 20000, missing_rate: float = 0.2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, len(FEATURES), generator=g) >= missing_rate


def test_no_mask_and_real_mask_return_observed():
    observed = _observed(100)
    for strategy in (NoMask().bind(FEATURES), RealMask().bind(FEATURES)):
        visible = strategy(observed)
        assert torch.equal(visible, observed)
        assert visible.data_ptr() != observed.data_ptr()  # a copy the caller may modify
        assert not strategy.trains_imputation
        assert strategy.masked_weight == 0.0


def test_random_mask_rate_near_prob_and_subset_of_observed():
    observed = _observed()
    strategy = random_mask(0.3).bind(FEATURES)
    visible = strategy(observed, torch.Generator().manual_seed(0))
    assert visible.dtype == torch.bool and visible.shape == observed.shape
    assert not (visible & ~observed).any()  # never exposes unobserved entries
    hidden_rate = (observed & ~visible).sum().item() / observed.sum().item()
    # n ~ 96k observed entries: std of the rate ~ 0.0015, so 0.01 is > 6 sigma
    assert abs(hidden_rate - 0.3) < 0.01
    # independence across features: each column hidden at about the same rate
    per_column = (observed & ~visible).sum(0).float() / observed.sum(0).float()
    assert torch.all((per_column - 0.3).abs() < 0.02)


def test_random_mask_properties_and_determinism():
    observed = _observed(500)
    strategy = random_mask(0.1, masked_weight=0.5)
    assert strategy.trains_imputation and strategy.masked_weight == 0.5
    first = strategy(observed, torch.Generator().manual_seed(7))
    again = strategy(observed, torch.Generator().manual_seed(7))
    other = strategy(observed, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    zero = random_mask(0.0)
    assert not zero.trains_imputation
    assert torch.equal(zero(observed), observed)


def test_block_mask_hides_rgb_together_at_rate():
    observed = torch.ones(20000, len(FEATURES), dtype=torch.bool)
    strategy = block_mask(0.4).bind(FEATURES)
    visible = strategy(observed, torch.Generator().manual_seed(3))
    rgb = visible[:, 3:]
    # R, G, B are either all visible or all hidden in each row
    assert torch.all(rgb.all(1) | ~rgb.any(1))
    assert visible[:, :3].all()  # physical features are never block-masked
    rate = (~rgb.any(1)).float().mean().item()
    assert abs(rate - 0.4) < 0.015  # std ~ 0.0035
    assert strategy.trains_imputation


def test_block_mask_respects_observed_and_custom_features():
    observed = _observed(5000, missing_rate=0.3)
    strategy = block_mask(1.0, features=["MS", "NGR"], masked_weight=0.5).bind(FEATURES)
    visible = strategy(observed, torch.Generator().manual_seed(0))
    assert not (visible & ~observed).any()
    assert not visible[:, 1:3].any()  # prob 1: always hidden
    assert torch.equal(visible[:, [0, 3, 4, 5]], observed[:, [0, 3, 4, 5]])


def test_block_mask_binding_errors():
    with pytest.raises(ValueError, match="XRF"):
        block_mask(0.5, features=["R", "XRF"]).bind(FEATURES)
    with pytest.raises(RuntimeError, match="bind"):
        block_mask(0.5)(_observed(10))
    with pytest.raises(ValueError, match="features"):
        block_mask(0.5).bind(FEATURES)(torch.ones(4, 5, dtype=torch.bool))


@pytest.mark.parametrize("build, bad", [
    (lambda: random_mask(1.0), "prob"),
    (lambda: random_mask(-0.1), "prob"),
    (lambda: random_mask(0.3, masked_weight=-1), "masked_weight"),
    (lambda: block_mask(1.5), "prob"),
    (lambda: block_mask(0.5, features=[]), "features"),
    (lambda: block_mask(0.5, features="RGB"), "features"),
])
def test_bad_arguments(build, bad):
    with pytest.raises(ValueError, match=bad):
        build()


def test_non_bool_observed_is_rejected():
    with pytest.raises(ValueError, match="observed"):
        random_mask(0.3)(torch.ones(4, 6))


def test_hydra_instantiation_block_mask():
    cfg = OmegaConf.create({"_target_": "lithovae.masking.BlockMask", "prob": 0.5,
                            "features": ["R", "G", "B"], "masked_weight": 0.5})
    strategy = instantiate(cfg).bind(FEATURES)
    assert strategy.features == ("R", "G", "B")
    visible = strategy(torch.ones(100, 6, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert visible[:, :3].all()
