"""Config validation: unknown keys and wrong types fail at start, naming the key."""

from __future__ import annotations


class ConfigError(ValueError):
    pass
