"""Argument checks shared by the config-group classes (schedules, masking, alpha)."""

from __future__ import annotations

import math


def non_negative_number(name: str, value) -> float:
    """``value`` as a finite float >= 0; YAML may deliver "1e-10" as a string."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number
