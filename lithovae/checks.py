"""Option checks, declared beside what they check.

Each class a config builds (a ``_target_``, the data module) declares the ranges of its own
options in a class attribute ``OPTIONS``, a mapping from option name to a check; the
structured configs of ``lithovae/config.py`` declare theirs in their fields' metadata. The
config check (:func:`lithovae.config.validate`) and the class's constructor both call
:func:`check_options` on that one declaration, so they cannot disagree::

    class RandomMask(MaskStrategy):
        OPTIONS = {"prob": below_one}   # narrows MaskStrategy's "prob": unit_interval

        def __init__(self, *, prob, masked_weight):
            check_options(type(self), locals())

A check gets the option's name (the config's dotted key, e.g. ``mask.prob``) and its value
and raises ``ValueError`` with a message that starts with ``"<name>: "``. The options of every
class in the method resolution order apply, base class first: a subclass can narrow an
option, never widen it. A key of several names, ``("n_folds", "fold")``, declares a check of
their relation: it gets the prefix and a dict of those options' values (None if absent).
This module imports nothing of lithovae's, so every class can import it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, Callable

Check = Callable[[str, Any], None]

# Maxima: a larger value cannot fit in memory (checked before anything is built, where it
# would otherwise fail after training). The arithmetic, for the worst case each allows:
# latent size d: the evaluation's full-covariance GMM indexes the d(d+1)/2 covariance entries
# (two int64 each) and holds sum(eval.k) d x d float64 matrices: at 1024, 8 MB and
# 57 * 1024^2 * 8 B = 0.5 GB for the default k; at 100 000 the index pairs alone are 80 GB.
MAX_LATENT_DIM = 1024
# hidden width w: a w x w layer trains with four float32 copies (weight, gradient, Adam's two
# moments): 4096^2 * 16 B = 268 MB per layer, 134 MB of activations per 8192-row batch.
MAX_WIDTH = 4096
# clusters, mixture components, pseudo-inputs K: the GMM's feature sums are sum(k) x
# (d(d+3)/2 + 1) float64 (1000 components at d = 64: 17 MB; at d = 1024: 4.2 GB); a VampPrior
# batch is B x K x d floats (512 x 1000 x 1024 x 4 B = 2 GB).
MAX_CLUSTERS = 1000
# context c: each bin becomes (2c + 1) x F float64 values, F <= 12 features: at 32, 6.2 KB per
# bin, 1.5 GB for the 240 K bins of LILY (the predictor expands new tables the same way, and
# predictor.json's context is checked against this too).
MAX_CONTEXT = 32
# bootstrap resamples: the counts are [resamples, boreholes] and every score is [resamples]; each
# 1000 add about 0.3 s on the default test set (benchmarks/bench_eval.py)
MAX_RESAMPLES = 100_000


# -- declarations -------------------------------------------------------------------------------
def declared_options(owner: type) -> list[tuple[str | tuple[str, ...], Check]]:
    """The checks ``owner`` declares, base classes' first: each class's ``OPTIONS`` and, for a
    dataclass, the ``check`` in its own fields' metadata (see :func:`checked`)."""
    if not isinstance(owner, type):  # a target that is a function (a logger factory)
        return list(getattr(owner, "OPTIONS", {}).items())
    found = []
    for cls in reversed(owner.__mro__):
        if dataclasses.is_dataclass(cls) and "__dataclass_fields__" in vars(cls):
            found += [(f.name, f.metadata["check"]) for f in dataclasses.fields(cls) if "check" in f.metadata]
        found += list(vars(cls).get("OPTIONS", {}).items())
    return found


def checked(check: Check, default: Any = "???"):
    """A structured-config field whose value must pass ``check`` (the default, "???": set in YAML)."""
    return dataclasses.field(default=default, metadata={"check": check})


_ABSENT = object()


def _value(values: Mapping, name: str):
    """``values[name]``, following a dotted name into nested mappings; _ABSENT when not set."""
    if name in values:  # a config node's adapter takes the dotted name whole
        return values[name]
    value = values
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def check_options(owner: type, values: Mapping, prefix: str = "", error: type[Exception] = ValueError) -> None:
    """Every option ``owner`` declares (:func:`declared_options`) that ``values`` sets must pass
    its check; the first that fails raises ``error`` naming ``prefix + name``. ``values``: the
    config node's options, or a constructor's arguments (``locals()``: names not declared,
    ``self`` among them, are ignored)."""
    for name, check in declared_options(owner):
        try:
            if isinstance(name, tuple):
                found = {n: _value(values, n) for n in name}
                check(prefix, {n: (None if v is _ABSENT else v) for n, v in found.items()})
            elif (value := _value(values, name)) is not _ABSENT:
                check(prefix + name, value)
        except ValueError as exc:
            if type(exc) is error:
                raise
            raise error(str(exc)) from None


# -- scalar conversions (the constructors keep their values as these return them) --------------
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


# -- checks: (key, value) -> None, raising ValueError("<key>: must be ...") ----------------------
def at_least(minimum: int) -> Check:
    """An integer >= ``minimum``."""
    def check(key: str, value) -> None:
        integer_at_least(f"{key}:", value, minimum)
    return check


def between(minimum: int, maximum: int) -> Check:
    """An integer in [``minimum``, ``maximum``]."""
    def check(key: str, value) -> None:
        try:
            integer_at_least(f"{key}:", value, minimum)
            ok = value <= maximum
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{key}: must be an integer in [{minimum}, {maximum}], got {value!r}")
    return check


def non_negative(key: str, value) -> None:
    """A finite number >= 0."""
    non_negative_number(f"{key}:", value)


def positive(key: str, value) -> None:
    """A finite number > 0."""
    if non_negative_number(f"{key}:", value) == 0:
        raise ValueError(f"{key}: must be a finite number > 0, got {value!r}")


def below_one(key: str, value) -> None:
    """A probability in [0, 1): a dropout rate, a share that must leave something."""
    probability(f"{key}:", value, allow_one=False)


def unit_interval(key: str, value) -> None:
    """A probability in [0, 1]."""
    probability(f"{key}:", value, allow_one=True)


def _positive_fraction(key: str, value, allow_one: bool) -> None:
    """A number in (0, 1), or (0, 1] with ``allow_one``: a factor that must shrink, never zero."""
    try:
        ok = probability(f"{key}:", value, allow_one=allow_one) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{key}: must be in (0, 1{']' if allow_one else ')'}, got {value!r}")


def open_unit_interval(key: str, value) -> None:
    _positive_fraction(key, value, allow_one=False)


def half_open_unit_interval(key: str, value) -> None:
    _positive_fraction(key, value, allow_one=True)


def random_seed(key: str, value) -> None:
    """A seed numpy accepts: an integer in [0, 2**32 - 1]."""
    integer_at_least(f"{key}:", value, 0)
    if value > 2**32 - 1:
        raise ValueError(f"{key}: must be an integer <= {2**32 - 1}, got {value!r}")


def one_of(*choices) -> Check:
    """One of ``choices``."""
    def check_choice(key: str, value) -> None:
        if value not in choices:
            raise ValueError(f"{key}: must be one of {list(choices)}, got {value!r}")
    return check_choice


def optional(check: Check) -> Check:
    """null, or what ``check`` accepts."""
    def check_optional(key: str, value) -> None:
        if value is not None:
            try:
                check(key, value)
            except ValueError as exc:
                raise ValueError(str(exc).replace(": must be ", ": must be null or ", 1)) from None
    return check_optional


def _is_list(value) -> bool:
    """A list, tuple or OmegaConf ListConfig (what Hydra passes without ``_convert_``)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def each(check: Check, *, non_empty: bool = False) -> Check:
    """A list whose every entry passes ``check`` (a bad entry is named ``key[i]``)."""
    def check_each(key: str, value) -> None:
        if not _is_list(value) or (non_empty and not value):
            kind = "a non-empty list" if non_empty else "a list"
            raise ValueError(f"{key}: must be {kind}, got {value!r}")
        for i, item in enumerate(value):
            check(f"{key}[{i}]", item)
    return check_each


def options_of(owner: type) -> Check:
    """A nested config node (a mapping) whose options pass those ``owner`` declares."""
    def check_nested(key: str, value) -> None:
        if isinstance(value, Mapping):
            check_options(owner, value, f"{key}.")
    return check_nested


def split_fractions(key: str, value) -> None:
    """train/val/test fractions: three numbers >= 0 summing to 1 (as borehole_split wants)."""
    ok = _is_list(value) and len(value) == 3
    if ok:
        try:
            numbers = [non_negative_number(key, v) for v in value]
        except ValueError:
            ok = False
        else:
            ok = abs(sum(numbers) - 1) <= 1e-6
    if not ok:
        raise ValueError(f"{key}: must be three numbers >= 0 summing to 1, got {value!r}")
