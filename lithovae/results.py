"""Run results on disk: strict JSON (an undefined or non-finite number is null), written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lithovae.files import atomic_write


def jsonable(value):
    """NaN and ±inf (undefined or overflowed metrics) become None; numpy scalars become Python."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(data) -> str:
    return json.dumps(jsonable(data), indent=1, allow_nan=False)


def write_json(path: str | Path, data) -> Path:
    path = Path(path)
    text = to_json(data)  # fails before anything is written
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
