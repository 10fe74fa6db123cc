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

from lithovae.checks import at_least, check_options, half_open_unit_interval, integer_at_least, non_negative

__all__ = ["BetaSchedule", "FixedBeta", "LinearAnneal", "CyclicalAnneal"]


class BetaSchedule:
    """Base class: ``schedule(epoch) -> beta``."""

    def __call__(self, epoch: int) -> float:
        return self.value_at(integer_at_least("epoch", epoch, 0))

    def value_at(self, epoch: int) -> float:
        raise NotImplementedError


class FixedBeta(BetaSchedule):
    """The same beta every epoch (v2.5: 0.5; the standard VAE: 1.0)."""

    OPTIONS = {"value": non_negative}  # the ranges, checked by the config and here (lithovae.checks)

    def __init__(self, *, value: float):
        check_options(type(self), locals())
        self.value = float(value)

    def value_at(self, epoch: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"FixedBeta(value={self.value!r})"


class LinearAnneal(BetaSchedule):
    """``start + (end - start) * epoch / epochs`` for ``epoch < epochs``, then ``end``.

    The seeds' schedules: v2.6 (0.001 -> 0.5 over 50), v2.6.7 "anneal_extreme"
    (1e-10 -> 0.75 over 100), hybrid (1e-6 -> 0.5 over 30).
    """

    OPTIONS = {"start": non_negative, "end": non_negative, "epochs": at_least(1)}

    def __init__(self, *, start: float, end: float, epochs: int):
        check_options(type(self), locals())
        self.start, self.end, self.epochs = float(start), float(end), int(epochs)

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

    OPTIONS = {"start": non_negative, "end": non_negative, "period": at_least(1),
               "ratio": half_open_unit_interval}

    def __init__(self, *, start: float, end: float, period: int, ratio: float):
        check_options(type(self), locals())
        self.start, self.end, self.period, self.ratio = float(start), float(end), int(period), float(ratio)

    def value_at(self, epoch: int) -> float:
        position = (epoch % self.period) / self.period  # in [0, 1)
        progress = min(position / self.ratio, 1.0)
        return self.start + (self.end - self.start) * progress

    def __repr__(self) -> str:
        return (f"CyclicalAnneal(start={self.start!r}, end={self.end!r}, "
                f"period={self.period!r}, ratio={self.ratio!r})")
