import math

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lithovae.schedules import CyclicalAnneal, FixedBeta, LinearAnneal


def test_fixed_beta_is_constant():
    schedule = FixedBeta(value=0.5)
    assert [schedule(e) for e in (0, 1, 100)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("epoch, expected", [
    (0, 1e-10),
    (50, 1e-10 + (0.75 - 1e-10) * 0.5),  # 0.37500000005
    (99, 1e-10 + (0.75 - 1e-10) * 0.99),  # 0.742500000001
    (100, 0.75),
    (150, 0.75),
])
def test_anneal_extreme_matches_seed_formula(epoch, expected):
    schedule = LinearAnneal(start=1e-10, end=0.75, epochs=100)
    assert schedule(epoch) == pytest.approx(expected, rel=1e-12, abs=0)


def test_anneal_extreme_hand_values():
    schedule = LinearAnneal(start=1e-10, end=0.75, epochs=100)
    assert schedule(50) == pytest.approx(0.37500000005, rel=1e-12)
    assert schedule(99) == pytest.approx(0.742500000001, rel=1e-12)


def test_v2_6_anneal_at_25():
    # 0.001 + 0.499 * 25/50 = 0.2505
    assert LinearAnneal(start=0.001, end=0.5, epochs=50)(25) == pytest.approx(0.2505, rel=1e-12)
    assert LinearAnneal(start=0.001, end=0.5, epochs=50)(49) == pytest.approx(0.001 + 0.499 * 0.98, rel=1e-12)
    assert LinearAnneal(start=0.001, end=0.5, epochs=50)(50) == 0.5


def test_hybrid_anneal():
    schedule = LinearAnneal(start=1e-6, end=0.5, epochs=30)
    assert schedule(0) == pytest.approx(1e-6, rel=1e-12)
    assert schedule(15) == pytest.approx(1e-6 + (0.5 - 1e-6) * 0.5, rel=1e-12)
    assert schedule(30) == 0.5


def test_linear_anneal_is_monotone_up_to_end():
    schedule = LinearAnneal(start=0.001, end=0.5, epochs=50)
    values = [schedule(e) for e in range(60)]
    assert all(a < b for a, b in zip(values[:50], values[1:51]))
    assert values[50:] == [0.5] * 10


@pytest.mark.parametrize("epoch, expected", [
    # period 10, ratio 0.5: ramp over epochs 0..4 (0, .2, .4, .6, .8 of the way), hold at 5..9
    (0, 0.0), (1, 0.2), (3, 0.6), (4, 0.8), (5, 1.0), (9, 1.0),
    (10, 0.0), (12, 0.4), (15, 1.0), (27, 1.0), (31, 0.2),
])
def test_cyclical_anneal_values(epoch, expected):
    schedule = CyclicalAnneal(start=0.0, end=1.0, period=10, ratio=0.5)
    assert schedule(epoch) == pytest.approx(expected, abs=1e-12)


def test_cyclical_anneal_with_offset_start_and_full_ratio():
    schedule = CyclicalAnneal(start=0.1, end=0.5, period=4, ratio=1.0)
    # ratio 1: the whole cycle is ramp, end is never reached inside a cycle
    assert [schedule(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.1])


@pytest.mark.parametrize("build, bad", [
    (lambda: FixedBeta(value=-0.1), "value"),
    (lambda: FixedBeta(value=float("nan")), "value"),
    (lambda: LinearAnneal(start=-1.0, end=0.5, epochs=10), "start"),
    (lambda: LinearAnneal(start=0.0, end="abc", epochs=10), "end"),
    (lambda: LinearAnneal(start=0.0, end=0.5, epochs=0), "epochs"),
    (lambda: LinearAnneal(start=0.0, end=0.5, epochs=2.5), "epochs"),
    (lambda: CyclicalAnneal(start=0.0, end=1.0, period=0, ratio=0.5), "period"),
    (lambda: CyclicalAnneal(start=0.0, end=1.0, period=10, ratio=0.0), "ratio"),
    (lambda: CyclicalAnneal(start=0.0, end=1.0, period=10, ratio=1.5), "ratio"),
])
def test_bad_arguments_name_the_argument(build, bad):
    with pytest.raises(ValueError, match=bad):
        build()


def test_negative_epoch_is_rejected():
    with pytest.raises(ValueError, match="epoch"):
        LinearAnneal(start=0.0, end=1.0, epochs=10)(-1)


def test_hydra_instantiation_from_yaml():
    cfg = OmegaConf.create(
        "_target_: lithovae.schedules.LinearAnneal\nstart: 1.0e-10\nend: 0.75\nepochs: 100\n")
    schedule = instantiate(cfg)
    assert isinstance(schedule, LinearAnneal)
    assert schedule(0) == pytest.approx(1e-10, rel=1e-12)
    assert schedule(100) == 0.75
    # YAML may deliver "1e-10" (no dot) as a string; it must still parse.
    cfg = OmegaConf.create({"_target_": "lithovae.schedules.FixedBeta", "value": "1e-10"})
    assert math.isclose(instantiate(cfg)(3), 1e-10)
