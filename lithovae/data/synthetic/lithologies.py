"""The lithology table: per-principal properties from the reference figures, with the
calibration filling what the reference lacks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lithovae.data import reference
from lithovae.data.synthetic.calibration import (
    COMPACTION_M, DEFAULT_KIND, GROUP_AFFINITY, GROUP_BED_M, GROUP_KIND, GROUP_MAD, GROUP_MS_NGR,
    GROUP_TINT, HARD_GROUPS, LITHIFIED, LITHIFIED_WORDS, MIN_BED_M, MUDSTONE_TINT, NAME_MAD,
    NAME_MS_NGR, NEUTRAL, NEUTRAL_NAMES, OTHER_AS, PLATFORM, PLATFORM_TINT, SETTINGS,
    SIMPLIFIED_WORDS, SOFT,
)


def _lookup(name: str, table: dict):
    """Value for a principal: the full name, else dropping leading words."""
    words = name.split()
    for i in range(len(words)):
        key = " ".join(words[i:])
        if key in table:
            return table[key]
    return None


def _grade(name: str, group: str) -> int:
    if group in HARD_GROUPS or name in NEUTRAL_NAMES:
        return NEUTRAL
    return LITHIFIED if any(w in name for w in LITHIFIED_WORDS) else SOFT


def _simplified(name: str, group: str) -> str:
    if name.startswith("interbedded "):
        return name[len("interbedded "):]
    for word in SIMPLIFIED_WORDS:
        if word in name:
            return word
    if any(w in name for w in PLATFORM):
        return "limestone"
    if group in HARD_GROUPS or group == "Evaporite":
        return name
    return name.split()[-1]


@dataclass
class _Lithologies:
    names: list[str]
    groups: list[str]
    counts: np.ndarray
    group_code: np.ndarray
    grade: np.ndarray
    hard: np.ndarray
    grain: np.ndarray
    grain_sd: np.ndarray
    porosity: np.ndarray
    porosity_sd: np.ndarray
    compaction_m: np.ndarray
    ms_median: np.ndarray
    ms_sd: np.ndarray
    ms_diamag: np.ndarray
    ngr_median: np.ndarray
    ngr_sd: np.ndarray
    lstar: np.ndarray
    lstar_rsd: np.ndarray
    tint: np.ndarray
    bed_m: np.ndarray
    simplified: list[str]
    lith_type: list[str]
    subtype: list[str]
    affinity: np.ndarray  # settings x lithologies


@lru_cache(maxsize=1)
def _lithologies() -> _Lithologies:
    dist = reference.class_distribution()
    names = dist["Lithology"].tolist()
    counts = dist["Count"].to_numpy(dtype=float)
    mapping = reference.lithology_groups()
    groups = [reference.group_of(n, mapping) for n in names]
    # "Other" principals take the properties of the group they resemble
    as_groups = [OTHER_AS.get(nm, g) if g == reference.OTHER_GROUP else g
                 for nm, g in zip(names, groups)]
    n = len(names)

    mad = reference.read("lily_mad_density_by_lithology.csv")
    mad_table = {r.principal_lithology: (r.grain_density_mean, r.porosity_pct_mean,
                                         r.porosity_pct_std, r.grain_density_std)
                 for r in mad.itertuples()}
    by_group: dict[str, list] = {}
    for name, values in mad_table.items():
        by_group.setdefault(reference.group_of(name, mapping), []).append(values)
    group_mad = {g: tuple(np.median(np.array(v), axis=0)) for g, v in by_group.items()}

    refl = reference.read("lily_reflectance_L_by_principal.csv")
    refl = refl.assign(w_mean=refl["mean"] * refl["count"], w_rsd=refl["rsd"] * refl["count"])
    agg = refl.groupby("Principal")[["w_mean", "w_rsd", "count"]].sum()
    l_table = {p: (r["w_mean"] / r["count"], r["w_rsd"] / r["count"]) for p, r in agg.iterrows()}
    subtype_table = (refl.sort_values("count", ascending=False).drop_duplicates("Principal")
                     .set_index("Principal")["Lithology Subtype"].to_dict())
    l_by_group: dict[str, list] = {}
    for p, v in l_table.items():
        l_by_group.setdefault(reference.group_of(p, mapping), []).append(v)
    group_l = {g: tuple(np.median(np.array(v), axis=0)) for g, v in l_by_group.items()}

    arr = {k: np.zeros(n) for k in ("grain", "grain_sd", "porosity", "porosity_sd", "compaction_m",
                                    "ms_median", "ms_sd", "ms_diamag", "ngr_median", "ngr_sd",
                                    "lstar", "lstar_rsd", "bed_m")}
    tint = np.zeros((n, 3))
    affinity = np.zeros((len(SETTINGS), n))
    simplified, lith_type, subtype, grade = [], [], [], np.zeros(n, dtype=np.int64)
    for i, (name, as_group) in enumerate(zip(names, as_groups)):
        props = NAME_MAD.get(name) or _lookup(name, mad_table)
        if props is None:
            props = GROUP_MAD.get(as_group) or group_mad.get(as_group) or GROUP_MAD["Other"]
        grain, poro, poro_sd = props[:3]
        arr["grain"][i], arr["porosity"][i] = grain, poro / 100
        arr["porosity_sd"][i] = max(poro_sd, 2.0) / 100
        arr["grain_sd"][i] = props[3] if len(props) > 3 else 0.06
        arr["compaction_m"][i] = COMPACTION_M.get(as_group, np.inf)
        ms_ngr = next((v for keys, v in NAME_MS_NGR if any(k in name for k in keys)), None)
        ms_ngr = ms_ngr or GROUP_MS_NGR[as_group]
        (arr["ms_median"][i], arr["ms_sd"][i], arr["ms_diamag"][i],
         arr["ngr_median"][i], arr["ngr_sd"][i]) = ms_ngr
        if as_group == "Clay/Mud" and "sand" in name:
            arr["ngr_median"][i] *= 0.8
            arr["ms_median"][i] *= 1.3
        lstar = _lookup(name, l_table) or group_l.get(as_group) or (40.0, 0.2)
        arr["lstar"][i], arr["lstar_rsd"][i] = lstar
        tint[i] = GROUP_TINT[as_group]
        if any(w in name for w in PLATFORM):
            tint[i] = PLATFORM_TINT
        elif as_group == "Clay/Mud" and "stone" in name:
            tint[i] = MUDSTONE_TINT
        share = counts[i] / counts.sum()
        arr["bed_m"][i] = max(MIN_BED_M, GROUP_BED_M[as_group] * min(1.0, (share / 0.002) ** 0.3))
        affinity[:, i] = GROUP_AFFINITY[as_group]
        simplified.append(_simplified(name, as_group))
        kind, default_subtype = GROUP_KIND.get(as_group, DEFAULT_KIND)
        lith_type.append(kind)
        subtype.append(subtype_table.get(name, default_subtype))
        grade[i] = _grade(name, as_group)
    return _Lithologies(
        names=names, groups=groups, counts=counts,
        group_code=np.array([list(GROUP_AFFINITY).index(g) for g in as_groups]),
        grade=grade, hard=np.array([g in HARD_GROUPS for g in as_groups]), tint=tint,
        simplified=simplified, lith_type=lith_type, subtype=subtype, affinity=affinity, **arr)

