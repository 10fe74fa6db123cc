"""The report printed by every build. LILY and synthetic LILY: the realism report, the binned
set beside the real LILY figures. Own data (``data=table``/``las``): the build report, the
set's own figures only (nothing of LILY: its figures describe other rocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lithovae.data import reference
from lithovae.data.scaler import STUDY_TRANSFORMS, DistributionAwareScaler
from lithovae.data.schema import ALL_FEATURES, DATASET_KEY_COLUMNS

# not at the top: scikit-learn is imported inside the report's clustering: the rest of the report
# needs none


def kmeans_baseline_ari(frame: pd.DataFrame, features: list[str], k: int = 12, seed: int = 0,
                        n_init: int = 10, transforms: dict[str, str] | None = None) -> float:
    """Difficulty baseline: k-means on the scaled raw features, ARI vs principal (``transforms``
    None: the study's)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    rows = frame[features].notna().all(axis=1) & frame["principal"].notna()
    x = DistributionAwareScaler(features, transforms).fit_transform(frame.loc[rows, features].to_numpy())
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return float(adjusted_rand_score(frame.loc[rows, "principal"], pred))


def realism_report(frame: pd.DataFrame, name: str, synthetic: bool, top: int = 10, *,
                   lily: bool | None = None, transforms: dict[str, str] | None = None) -> tuple[str, dict]:
    """Text report and the figures behind it. ``lily``: the data are LILY or synthetic LILY,
    compared with the real LILY figures (None: synthetic, or the source named ``lily``);
    otherwise :func:`own_data_report` (``transforms``: the source's, for its baseline)."""
    if lily is None:
        lily = synthetic or name == "lily"
    if not lily:
        return own_data_report(frame, name, top, transforms=transforms)
    own = [c for c in frame.columns if c not in DATASET_KEY_COLUMNS]  # the dataset's features
    features = [c for c in ALL_FEATURES if c in own]  # those LILY has reference quartiles for
    complete = frame.dropna(subset=own)
    ref_set = "complete6_20cm" if len(features) == 6 else "physical3_20cm"
    ref = reference.feature_summary(ref_set)
    kind = "SYNTHETIC benchmark data (not a real-data result)" if synthetic else "data"
    lines = [f"== realism report: {name} — {kind}",
             f"bins {len(frame):,} ({len(complete):,} complete) | boreholes "
             f"{frame['borehole_id'].nunique()} | principal lithologies {frame['principal'].nunique()}",
             *([f"-- feature quartiles vs real LILY {ref_set} (ours / real, % off)"] if features else [])]
    figures: dict = {"bins": len(frame), "bins_complete": len(complete),
                     "boreholes": int(frame["borehole_id"].nunique()),
                     "lithologies": int(frame["principal"].nunique()), "quartiles": {}}
    for f in features:
        q = complete[f].quantile([0.25, 0.5, 0.75]).to_numpy()
        r = ref.loc[f, ["p25", "p50", "p75"]].to_numpy(dtype=float)
        off = 100 * (q - r) / np.abs(r)
        figures["quartiles"][f] = {"ours": q.tolist(), "real": r.tolist(), "pct_off": off.tolist()}
        cells = "  ".join(f"{a:8.3f} / {b:8.3f} ({c:+5.1f}%)" for a, b, c in zip(q, r, off))
        lines.append(f"{f:>4}  {cells}")
    ref_classes = reference.class_distribution().set_index("Lithology")["Percentage"]
    shares = 100 * frame["principal"].value_counts(normalize=True)
    lines.append(f"-- top {top} lithologies (share %, ours / real)")
    for lith, share in shares.head(top).items():
        lines.append(f"  {lith:<28} {share:6.2f} / {ref_classes.get(lith, float('nan')):6.2f}")
    figures["top_lithologies"] = {k: float(v) for k, v in shares.head(top).items()}
    groups = reference.read("lily_lithology_groups.csv").groupby("Lithology_Group")["Percentage"].sum()
    gshares = 100 * frame["lithology_group"].value_counts(normalize=True)
    lines.append("-- expert groups (share %, ours / real)")
    for g, share in gshares.items():
        lines.append(f"  {g:<28} {share:6.2f} / {groups.get(g, float('nan')):6.2f}")
    labeled = complete[complete["principal"].notna()]
    if len(labeled) >= 12 and labeled["principal"].nunique() > 1:
        ari = kmeans_baseline_ari(labeled, own)
        figures["kmeans_ari_k12"] = ari
        lines.append(f"-- difficulty baseline: k-means (k=12, n_init=10) on scaled raw features: "
                     f"ARI = {ari:.3f} (the study's VAEs reach ~0.2-0.29 on real data)")
    return "\n".join(lines), figures


def own_data_report(frame: pd.DataFrame, name: str, top: int = 10, *,
                    transforms: dict[str, str] | None = None) -> tuple[str, dict]:
    """The build report of own data: counts (bins, labeled bins, boreholes, labels), feature
    quartiles and missing shares, label and group shares over the labeled bins, and a
    difficulty baseline (k-means with k = the number of labels, ARI on the complete labeled
    bins, scaled with ``transforms``). Compared with nothing: no LILY figure is shown."""
    own = [c for c in frame.columns if c not in DATASET_KEY_COLUMNS]
    complete = frame.dropna(subset=own)
    labeled = frame["principal"].notna()
    n_labels = int(frame["principal"].nunique())
    lines = [f"== build report: {name} — own data (its own figures; nothing compared with LILY)",
             f"bins {len(frame):,} ({len(complete):,} complete, {int(labeled.sum()):,} labeled) | boreholes "
             f"{frame['borehole_id'].nunique()} | labels {n_labels}",
             "-- feature quartiles (p25 / p50 / p75) and missing share"]
    figures: dict = {"bins": len(frame), "bins_complete": len(complete), "bins_labeled": int(labeled.sum()),
                     "boreholes": int(frame["borehole_id"].nunique()), "lithologies": n_labels,
                     "quartiles": {}, "missing_share": {}}
    quartiles = frame[own].quantile([0.25, 0.5, 0.75])  # per feature, over the bins that have it
    missing = frame[own].isna().mean()
    for f in own:
        q = quartiles[f].to_numpy(dtype=float)
        figures["quartiles"][f] = {"ours": q.tolist()}
        figures["missing_share"][f] = float(missing[f])
        lines.append(f"  {f:<12} {q[0]:10.4g} / {q[1]:10.4g} / {q[2]:10.4g}   missing {100 * missing[f]:5.1f}%")
    shares = 100 * frame["principal"].value_counts(normalize=True)
    figures["top_lithologies"] = {str(k): float(v) for k, v in shares.head(top).items()}
    if len(shares):
        lines.append(f"-- top {min(top, len(shares))} labels (share % of the labeled bins)")
        lines += [f"  {lith:<28} {share:6.2f}" for lith, share in shares.head(top).items()]
    gshares = 100 * frame["lithology_group"].value_counts(normalize=True)
    if len(gshares):
        figures["groups"] = {str(k): float(v) for k, v in gshares.items()}
        lines.append("-- groups (share % of the bins with a group)")
        lines += [f"  {g:<28} {share:6.2f}" for g, share in gshares.items()]
    usable = complete[complete["principal"].notna()]
    k = int(usable["principal"].nunique())
    if k > 1 and len(usable) > k:
        # the transforms training uses: the study's for LILY-named features, the source's on top
        ari = kmeans_baseline_ari(usable, own, k=k, transforms=dict(STUDY_TRANSFORMS, **(transforms or {})))
        figures["kmeans_ari"], figures["kmeans_k"] = ari, k
        lines.append(f"-- difficulty baseline: k-means (k={k}, the number of labels; n_init=10) on "
                     f"scaled raw features of {len(usable):,} complete labeled bins: ARI = {ari:.3f}")
    return "\n".join(lines), figures
