"""Classification-weight (alpha) strategies: ``weights = strategy(target)``.

``target`` is the long tensor [B] of class codes, -1 where unlabeled. A strategy
returns a float (the same weight for every sample) or a float tensor [B]
(per-sample weights), which goes to ``LossContext.alpha``.

Strategies are built by Hydra, then ``bind(class_counts)`` (training-set count
per class code) returns a ready strategy. Their parameters are required keywords: the
defaults are in ``lithovae/conf/alpha/*.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from lithovae.checks import check_options, non_negative

__all__ = ["AlphaStrategy", "NoAlpha", "FixedAlpha", "AdaptiveAlpha"]


class AlphaStrategy:
    """Base class."""

    def bind(self, class_counts: Sequence[int]) -> AlphaStrategy:
        return copy.copy(self)

    def __call__(self, target: Tensor) -> float | Tensor:
        raise NotImplementedError

    def uniform(self) -> float | None:
        """The weight every row gets whatever its class, or None when it depends on the class
        (the stacked ensemble then calls the strategy on each member's batch)."""
        return None


class NoAlpha(AlphaStrategy):
    """No classification loss (unsupervised models)."""

    def __call__(self, target: Tensor) -> float:
        return 0.0

    def uniform(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "NoAlpha()"


class FixedAlpha(AlphaStrategy):
    """The same weight for every sample (v2.14: 0.1; hybrid: 0.5)."""

    OPTIONS = {"value": non_negative}  # the ranges, checked by the config and here (lithovae.checks)

    def __init__(self, *, value: float):
        check_options(type(self), locals())
        self.value = float(value)

    def __call__(self, target: Tensor) -> float:
        return self.value

    def uniform(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"FixedAlpha(value={self.value!r})"


class AdaptiveAlpha(AlphaStrategy):
    """Per-sample ``alpha_i = base / sqrt(freq(class_i))`` (v2.14.1).

    ``freq = count / total`` over the training counts given to :meth:`bind`.
    Unlabeled rows (-1) and classes never seen in training get weight 0, so the
    weights are always finite.
    """

    OPTIONS = {"base": non_negative}

    def __init__(self, *, base: float):
        check_options(type(self), locals())
        self.base = float(base)
        self._table: Tensor | None = None  # float32 [n_classes] on the CPU, set by bind()
        self._device_tables: dict[torch.device, Tensor] = {}  # _table copied to each device used

    def bind(self, class_counts: Sequence[int]) -> AdaptiveAlpha:
        counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
        if counts.dim() != 1 or counts.numel() == 0:
            raise ValueError("class_counts must be a non-empty sequence of per-class counts")
        if not torch.isfinite(counts).all() or (counts < 0).any():
            raise ValueError("class_counts must be finite and >= 0")
        total = counts.sum()
        if total <= 0:
            raise ValueError("class_counts sum to 0: no labeled training rows to weight by")
        freq = counts / total
        table = torch.zeros_like(counts)
        seen = counts > 0
        table[seen] = self.base / freq[seen].sqrt()
        bound = copy.copy(self)
        bound._table = table.float()  # computed in float64, used as float32
        bound._device_tables = {bound._table.device: bound._table}
        return bound

    def _table_on(self, device: torch.device) -> Tensor:
        table = self._device_tables.get(device)
        if table is None:
            with torch.inference_mode(False):  # a normal tensor, even if first made in validation
                table = self._device_tables[device] = self._table.to(device)
        return table

    def __call__(self, target: Tensor) -> Tensor:
        if self._table is None:
            raise RuntimeError("AdaptiveAlpha is not bound: call bind(class_counts) first")
        # checked on the CPU only: on an accelerator, reading target.max() would stall every step
        # (an out-of-range code still fails there, in the indexing below)
        if target.device.type == "cpu" and target.numel() and int(target.max()) >= self._table.numel():
            raise ValueError(f"target has class code {int(target.max())}, but only "
                             f"{self._table.numel()} class counts were bound")
        table = self._table_on(target.device)
        labeled = target >= 0
        return torch.where(labeled, table[target.clamp(min=0)], 0.0)

    def __repr__(self) -> str:
        return f"AdaptiveAlpha(base={self.base!r})"
