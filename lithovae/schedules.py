"""KL-weight (beta) schedules: callables ``schedule(epoch) -> beta``.

Built by Hydra from YAML, e.g.::

    beta:
      _target_: lithovae.schedules.LinearAnneal
      start: 1.0e-10
      end: 0.75
      epochs: 100

Epochs are 0-based: the first training epoch is epoch 0. The parameters are required
keywords: their defaults are in ``lithovae/conf/beta/*.yaml``.
"""

from __future__ import annotations

from lithovae.checks import integer_at_least, non_negative_number

__all__ = ["BetaSchedule", "FixedBeta", "LinearAnneal", "CyclicalAnneal"]


class BetaSchedule:
    """Base class: ``schedule(epoch) -> beta``."""

    def __call__(self, epoch: int) -> float:
        return self.value_at(integer_at_least("epoch", epoch, 0))

    def value_at(self, epoch: int) -> float:
        raise NotImplementedError


class FixedBeta(BetaSchedule):
    """The same beta every epoch (v2.5: 0.5; the standard VAE: 1.0)."""

    def __init__(self, *, value: float):
        self.value = non_negative_number("value", value)

    def value_at(self, epoch: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"FixedBeta(value={self.value!r})"


class LinearAnneal(BetaSchedule):
    """``start + (end - start) * epoch / epochs`` for ``epoch < epochs``, then ``end``.

    The seeds' schedules: v2.6 (0.001 -> 0.5 over 50), v2.6.7 "anneal_extreme"
    (1e-10 -> 0.75 over 100), hybrid (1e-6 -> 0.5 over 30).
    """

    def __init__(self, *, start: float, end: float, epochs: int):
        self.start = non_negative_number("start", start)
        self.end = non_negative_number("end", end)
        self.epochs = integer_at_least("epochs", epochs, 1)

    def value_at(self, epoch: int) -> float:
        if epoch >= self.epochs:
            return self.end
        return self.start + (self.end - self.start) * (epoch / self.epochs)

    def __repr__(self) -> str:
        return f"LinearAnneal(start={self.start!r}, end={self.end!r}, epochs={self.epochs!r})"


class CyclicalAnneal(BetaSchedule):
    """Cyclical annealing (Fu et al. 2019), per epoch.

    Each cycle lasts ``period`` epochs; within it beta rises linearly from
    ``start`` to ``end`` over the first ``ratio * period`` epochs, then holds
    ``end`` until the next cycle restarts at ``start``.
    """

    def __init__(self, *, start: float, end: float, period: int, ratio: float):
        self.start = non_negative_number("start", start)
        self.end = non_negative_number("end", end)
        self.period = integer_at_least("period", period, 1)
        ratio_value = non_negative_number("ratio", ratio)
        if not 0 < ratio_value <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.ratio = ratio_value

    def value_at(self, epoch: int) -> float:
        position = (epoch % self.period) / self.period  # in [0, 1)
        progress = min(position / self.ratio, 1.0)
        return self.start + (self.end - self.start) * progress

    def __repr__(self) -> str:
        return (f"CyclicalAnneal(start={self.start!r}, end={self.end!r}, "
                f"period={self.period!r}, ratio={self.ratio!r})")
