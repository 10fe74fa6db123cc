"""Model inputs derived from the binned features (data-level variants of the study).

- ``context`` (v2.2): each bin plus the ``context`` bins above and below in the
  same borehole (18-D for context 1); a neighbour that is absent is missing (NaN).
- ``engineered`` (v2.9): six derived features appended to the six measured (12-D).
- :func:`impute_rgb` (v2.6.10): RGB predicted from GRA/MS/NGR by a gradient-boosted
  regressor where the camera is missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lithovae.data.errors import BuildError
from lithovae.data.scaler import STUDY_TRANSFORMS
from lithovae.data.schema import ALL_FEATURES

# not at the top: sklearn.ensemble is imported inside the one feature that needs it (seconds to
# import)

# name -> (function of the feature frame, scaler transform)
ENGINEERED = {
    "lightness": (lambda f: (f["R"] + f["G"] + f["B"]) / 3, "log1p"),
    "chroma": (lambda f: f[["R", "G", "B"]].max(axis=1) - f[["R", "G", "B"]].min(axis=1), "log1p"),
    "red_minus_blue": (lambda f: f["R"] - f["B"], "none"),
    "red_minus_green": (lambda f: f["R"] - f["G"], "none"),
    "ngr_per_density": (lambda f: f["NGR"] / f["GRA"], "signed_log"),
    "ms_per_density": (lambda f: f["MS"] / f["GRA"], "signed_log"),
}


def expand_features(frame: pd.DataFrame, base: list[str], context: int = 0,
                    engineered: bool = False, transforms: dict[str, str] | None = None):
    """Returns (values [N, F'] float64 with NaN, feature names, transform per name)."""
    base_transforms = dict(STUDY_TRANSFORMS, **(transforms or {}))
    feats = frame[base].astype(np.float64)
    names, transform_of = list(base), {f: base_transforms.get(f, "none") for f in base}
    if engineered:
        missing = set(ALL_FEATURES) - set(base)
        if missing:
            raise BuildError(f"engineered features need all six measurements; missing {sorted(missing)}")
        for name, (fn, t) in ENGINEERED.items():
            feats[name] = fn(feats)
            names.append(name)
            transform_of[name] = t
    columns = [feats.to_numpy()]
    if context:
        bh = frame["borehole_id"].to_numpy()
        bins = np.round(frame["depth_m"].to_numpy() / _bin_size(frame), 0).astype(np.int64)
        own = feats.to_numpy()
        for offset in [o for k in range(1, context + 1) for o in (-k, k)]:
            shifted = np.full_like(own, np.nan)
            src = np.arange(len(frame)) + offset
            ok = (src >= 0) & (src < len(frame))
            src_ok = src[ok]
            same = (bh[src_ok] == bh[ok]) & (bins[src_ok] == bins[ok] + offset)
            rows = np.flatnonzero(ok)[same]
            shifted[rows] = own[src_ok[same]]
            columns.append(shifted)
            tag = f"above{-offset}" if offset < 0 else f"below{offset}"
            for n in list(feats.columns):
                names.append(f"{n}_{tag}")
                transform_of[f"{n}_{tag}"] = transform_of[n]
    return np.column_stack(columns), names, transform_of


def _bin_size(frame: pd.DataFrame) -> float:
    steps = np.diff(frame["depth_m"].to_numpy())
    steps = steps[steps > 1e-9]
    return float(np.round(steps.min(), 6)) if len(steps) else 0.2


def impute_rgb(values: np.ndarray, names: list[str], train_rows: np.ndarray, seed: int = 0):
    """Fill missing R, G, B from GRA, MS, NGR with one regressor per channel, fitted on
    training rows that have real RGB. Returns (values, number of rows imputed)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    col = {n: i for i, n in enumerate(names)}
    missing = [f for f in ALL_FEATURES if f not in col]
    if missing:
        raise BuildError(f"datamodule.impute_rgb: needs the features {ALL_FEATURES}; the data has {names} "
                         f"(missing {missing})")
    phys = values[:, [col["GRA"], col["MS"], col["NGR"]]]
    rgb_cols = [col["R"], col["G"], col["B"]]
    has_rgb = ~np.isnan(values[:, rgb_cols]).any(axis=1)
    has_phys = ~np.isnan(phys).any(axis=1)
    target = ~has_rgb & has_phys
    fit_rows = train_rows & has_rgb & has_phys
    if not target.any():
        return values, 0
    if fit_rows.sum() < 10:
        raise BuildError("impute_rgb: fewer than 10 training rows with real RGB to fit on")
    out = values.copy()
    for c in rgb_cols:
        model = HistGradientBoostingRegressor(random_state=seed).fit(phys[fit_rows], values[fit_rows, c])
        out[target, c] = model.predict(phys[target])
    return out, int(target.sum())
