"""Whether a difference is beyond noise: intervals and verdicts shared by a run's end-of-run
table (bootstrap over test boreholes), replicates (over seeds), paired comparisons and studies.

A difference whose interval contains 0 is reported as no difference.
"""

from __future__ import annotations

import math

from lithovae.errors import DataError

# not at the top: numpy and scipy are imported inside the functions that compute intervals: verdict
# lines need neither

# the headline scores: each has an interval in metrics.json (``<name>_ci_low``/``_ci_high``)
# and a mean and interval over replicates; the gains are paired (same resamples, same seeds)
HEADLINE = ("ari_selected", "baseline_ari_selected", "ari_gain",
            "ari_inductive", "baseline_ari_inductive", "ari_inductive_gain",
            "r2_mean", "balanced_accuracy", "auc_pooled")
LEVEL = 0.95
# a bootstrap over fewer test boreholes has too few distinct resamples (2 boreholes: 3) for its
# percentile interval to cover at its level: the interval is shown, no verdict is drawn from it
MIN_BOOTSTRAP_BOREHOLES = 10


def verdict(low: float, high: float) -> str:
    """``beats``, ``loses to`` or ``matches`` for the interval [low, high] of a difference B - A
    (B beats A when the whole interval is above 0); ``undefined`` when either end is NaN."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    if low > 0:
        return "beats"
    if high < 0:
        return "loses to"
    return "matches"


def verdict_line(subject: str, reference: str, metric: str, value: float, low: float, high: float,
                 level: float = LEVEL, over: str = "") -> str:
    """One plain sentence for a difference ``metric`` = subject - reference and its interval,
    e.g. ``verdict: the latent space matches the raw features (ari_gain +0.012 [-0.020, +0.041],
    95% interval over test boreholes): no difference beyond the interval``."""
    word = verdict(low, high)
    interval = f"{metric} {value:+.3f} [{low:+.3f}, {high:+.3f}], {level:.0%} interval{' over ' + over if over else ''}"
    if word == "undefined":
        return f"verdict: undefined ({metric} or its interval is not defined)"
    tail = {"beats": "beyond the interval", "loses to": "beyond the interval",
            "matches": "no difference beyond the interval"}[word]
    return f"verdict: {subject} {word} {reference} ({interval}): {tail}"


def mean_interval(values, level: float = LEVEL) -> dict:
    """Mean, std (ddof 1) and the Student-t ``level`` interval of the mean over replicates (seeds,
    folds) of one score; non-finite values are left out. ``n`` < 2: std and interval are NaN."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_difference(a, b, level: float = LEVEL) -> dict:
    """The paired difference ``b - a`` of two pandas Series indexed alike (e.g. by (seed, fold)):
    mean, std, t-interval and ``verdict`` (:func:`verdict`: B beats / matches / loses to A) over the
    keys both hold a finite value for. A key on one side only (or NaN on either) is no pair: it is
    counted in ``n_unpaired`` and named in ``unpaired`` (``("a", key)``/``("b", key)``), never
    dropped silently. Fewer than 2 pairs: interval NaN, verdict ``undefined``. Keys must be unique."""
    import numpy as np

    for name, side in (("a", a), ("b", b)):
        if not side.index.is_unique:
            doubled = list(dict.fromkeys(side.index[side.index.duplicated()]))
            raise DataError(f"paired_difference: {name} holds several values for {doubled[0]}: one per pair")
    a = a.astype(float)
    b = b.astype(float)
    ok_a = a.index[np.isfinite(a.to_numpy())]
    ok_b = b.index[np.isfinite(b.to_numpy())]
    shared = ok_a.intersection(ok_b, sort=False)
    unpaired = ([("a", k) for k in a.index.difference(shared, sort=False)]
                + [("b", k) for k in b.index.difference(shared, sort=False)])
    diff = b.loc[shared].to_numpy() - a.loc[shared].to_numpy()
    out = mean_interval(diff, level)
    out.update(verdict=verdict(out["ci_low"], out["ci_high"]), n_unpaired=len(unpaired), unpaired=unpaired)
    return out
