"""The rules of training, each written once and called by both training loops.

A rule holds its options and its state and is fed epoch-level numbers; it never reads a trainer.
The Lightning training plan (:mod:`lithovae.plan`) and its callbacks call these rules through thin
adapters, and the stacked ensemble loop (:mod:`lithovae.ensemble.stacked`) calls them per member
directly (as pythae's trainer calls its callbacks). The checkpoint policies
(:mod:`lithovae.checkpointing`) are rules of the same kind.

- :func:`make_adam` / :data:`ADAM_BETAS`, :data:`ADAM_EPS`: the optimiser step (Adam, L2 decay);
- :class:`PlateauSchedule`: the learning-rate schedule (ReduceLROnPlateau on ``val/loss``);
- :class:`EarlyStopping`: stop after ``patience`` epochs without a lower ``val/loss``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

# torch.optim.Adam's defaults, named so the stacked loop's batched Adam uses the same ones
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8

MONITOR = "val/loss"  # what the LR schedule and early stopping watch


def make_adam(params, *, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The optimiser of one model. The stacked loop applies the same update per member to
    stacked weights (:class:`lithovae.ensemble.stacked.StackedAdam`, tested equal to this)."""
    # the fused kernel cuts the per-step cost of many tiny parameter tensors by about a quarter
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=ADAM_BETAS, eps=ADAM_EPS,
                            fused=True)


class PlateauSchedule:
    """Halve (``factor``) the learning rate after ``patience`` epochs without a lower
    ``val/loss`` (torch's ReduceLROnPlateau; a NaN loss counts as no improvement)."""

    monitor = MONITOR

    def __init__(self, *, enabled: bool, patience: int, factor: float):
        self.enabled, self.patience, self.factor = bool(enabled), patience, factor

    def attach(self, optimizer: torch.optim.Optimizer):
        """The scheduler that steps ``optimizer``'s learning rate, or None when disabled."""
        if not self.enabled:
            return None
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=self.patience,
                                                          factor=self.factor)

    def end_epoch(self, scheduler, metrics: Mapping[str, float]) -> None:
        """After each validation: step ``scheduler`` (from :meth:`attach`) on this epoch's loss."""
        if scheduler is not None:
            scheduler.step(float(metrics[self.monitor]))


class EarlyStopping:
    """Stop once ``patience`` validations in a row brought no strictly lower ``val/loss``, or at
    once on a non-finite one (Lightning's EarlyStopping with mode=min, min_delta=0, check_finite)."""

    monitor = MONITOR

    def __init__(self, *, patience: int):
        self.patience = patience
        self.best = math.inf
        self.wait = 0
        self.stopped_epoch = 0

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Whether training stops after ``epoch``, given its validation ``metrics``."""
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            stop = True
        elif value < self.best:
            self.best, self.wait = value, 0
            stop = False
        else:
            self.wait += 1
            stop = self.wait >= self.patience
        if stop:
            self.stopped_epoch = epoch
        return stop

    # the keys of Lightning's EarlyStopping state: checkpoints written before this class resume too
    def state_dict(self) -> dict:
        return {"wait_count": self.wait, "stopped_epoch": self.stopped_epoch, "best_score": self.best,
                "patience": self.patience}

    def load_state_dict(self, state: dict) -> None:
        self.wait = int(state.get("wait_count", 0))
        self.stopped_epoch = int(state.get("stopped_epoch", 0))
        self.best = float(state.get("best_score", math.inf))


def float_metrics(metrics: Mapping, names: Iterable[str] | None = None) -> dict[str, float]:
    """Lightning's callback metrics (tensors) as plain floats, for the rules."""
    keys = metrics.keys() if names is None else [n for n in names if n in metrics]
    return {k: float(metrics[k]) for k in keys}
