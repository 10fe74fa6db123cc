"""Feature-masking strategies: which observed entries the encoder may see in training.

``visible = strategy(observed, generator)`` returns a bool tensor [B, F] that is
always a subset of ``observed``; entries observed but not visible are "hidden".
The reconstruction error on hidden entries is weighted by ``masked_weight``
(see :class:`lithovae.models.base.LossContext`). At evaluation the plan passes
``observed`` to the encoder directly, so strategies only act in training.

Strategies are built by Hydra, then ``bind(feature_names)`` resolves feature
names to column indices and returns a ready strategy. Their parameters are required
keywords: the defaults are in ``lithovae/conf/mask/*.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from lithovae.checks import below_one, check_options, non_negative, unit_interval

__all__ = ["MaskStrategy", "NoMask", "RandomMask", "BlockMask", "RealMask"]


def _check_observed(observed: Tensor) -> None:
    if observed.dtype != torch.bool or observed.dim() != 2:
        raise ValueError(
            f"observed must be a bool tensor [B, F], got {observed.dtype} of shape {tuple(observed.shape)}")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    # A generator only draws on its own device; move the draws afterwards.
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


class MaskStrategy:
    """Base class. Subclasses that hide entries set ``prob`` and override :meth:`_hidden`
    (and :meth:`bind` if they need names, :meth:`_check_compatible` to validate ``observed``)."""

    masked_weight: float = 0.0
    prob: float = 0.0  # chance of hiding; 0 hides nothing
    # the options' ranges (checked by the config and the constructors: lithovae.checks);
    # a subclass may narrow them
    OPTIONS = {"prob": unit_interval, "masked_weight": non_negative}

    @property
    def trains_imputation(self) -> bool:
        """True when the strategy hides observed values (the decoder learns to impute)."""
        return self.prob > 0

    def bind(self, feature_names: Sequence[str]) -> MaskStrategy:
        return copy.copy(self)

    def __call__(self, observed: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_observed(observed)
        self._check_compatible(observed)
        if self.prob == 0:
            return observed.clone()
        return observed & ~self._hidden(observed, generator)

    def _check_compatible(self, observed: Tensor) -> None:
        """Raise if ``observed`` does not fit the (bound) strategy."""

    def _hidden(self, observed: Tensor, generator: torch.Generator | None) -> Tensor:
        """Bool [B, F]: entries to hide (only called when ``prob > 0``)."""
        raise NotImplementedError


class NoMask(MaskStrategy):
    """The encoder sees every observed entry (v2.6.7, v2.14)."""

    def __repr__(self) -> str:
        return "NoMask()"


class RealMask(MaskStrategy):
    """No extra masking: only the real missing values (observed=False) are hidden (v2.15).

    Identical in effect to :class:`NoMask`; the name records that training uses
    incomplete rows, whose missingness correlates with lithology.
    """

    def __repr__(self) -> str:
        return "RealMask()"


class RandomMask(MaskStrategy):
    """Each observed entry is hidden independently with probability ``prob``.

    The seeds' ``apply_mask`` (v2.14.2: prob 0.3); hybrid: prob 0.1, masked_weight 0.5.
    """

    OPTIONS = {"prob": below_one}  # < 1: every feature hidden would leave the encoder nothing

    def __init__(self, *, prob: float, masked_weight: float):
        check_options(type(self), locals())
        self.prob = float(prob)
        self.masked_weight = float(masked_weight)

    def _hidden(self, observed: Tensor, generator: torch.Generator | None) -> Tensor:
        return _uniform(tuple(observed.shape), generator, observed.device) < self.prob

    def __repr__(self) -> str:
        return f"RandomMask(prob={self.prob!r}, masked_weight={self.masked_weight!r})"


class BlockMask(MaskStrategy):
    """Per row, with probability ``prob`` hide all of ``features`` together.

    Mimics the realistic pattern where one instrument (in ``mask/block.yaml`` the colour
    camera: R, G, B) is missing as a whole.
    """

    # prob may be 1 (MaskStrategy's range): one instrument always missing, the others remain

    def __init__(self, *, prob: float, features: Sequence[str], masked_weight: float):
        check_options(type(self), locals())
        self.prob = float(prob)
        if isinstance(features, str):
            raise ValueError(f"features must be a list of feature names, got the string {features!r}")
        self.features = tuple(str(name) for name in features)
        if not self.features:
            raise ValueError("features must name at least one feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features contains duplicates: {list(self.features)}")
        self.masked_weight = float(masked_weight)
        self._block: Tensor | None = None  # bool [F], set by bind()

    def bind(self, feature_names: Sequence[str]) -> BlockMask:
        names = list(feature_names)
        unknown = [name for name in self.features if name not in names]
        if unknown:
            raise ValueError(f"BlockMask features {unknown} are not among the data features {names}")
        bound = copy.copy(self)
        block = torch.zeros(len(names), dtype=torch.bool)
        block[[names.index(name) for name in self.features]] = True
        bound._block = block
        return bound

    def _check_compatible(self, observed: Tensor) -> None:
        if self._block is None:
            raise RuntimeError("BlockMask is not bound: call bind(feature_names) first")
        if observed.shape[1] != self._block.numel():
            raise ValueError(f"observed has {observed.shape[1]} features, but BlockMask was bound "
                             f"to {self._block.numel()}")

    def _hidden(self, observed: Tensor, generator: torch.Generator | None) -> Tensor:
        hide_row = _uniform((observed.shape[0],), generator, observed.device) < self.prob
        return hide_row[:, None] & self._block.to(observed.device)[None, :]

    def __repr__(self) -> str:
        return (f"BlockMask(prob={self.prob!r}, features={list(self.features)!r}, "
                f"masked_weight={self.masked_weight!r})")
