"""Argument checks shared by the config-group classes (schedules, masking, alpha)."""

from __future__ import annotations

import math
from numbers import Integral


def non_negative_number(name: str, value) -> float:
    """``value`` as a finite float >= 0; YAML may deliver "1e-10" as a string."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def integer_at_least(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and non-integers are rejected."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def probability(name: str, value, *, allow_one: bool) -> float:
    """``value`` as a float in [0, 1] (or [0, 1) without ``allow_one``)."""
    try:
        prob = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    upper_ok = prob <= 1 if allow_one else prob < 1
    if isinstance(value, bool) or not (0 <= prob and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return prob
