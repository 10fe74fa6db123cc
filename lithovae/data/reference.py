"""Reference figures measured on the real LILY database, shipped with the package.

These calibrate and check the synthetic benchmark data and give the published
numbers to show beside ours. See ``reference/README.md`` for what each file holds.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

OTHER_GROUP = "Other"


def path(name: str):
    """Path of a shipped reference file, e.g. ``path("lily_class_distribution.csv")``."""
    return resources.files("lithovae.data") / "reference" / name


@lru_cache(maxsize=None)
def read(name: str) -> pd.DataFrame:
    with resources.as_file(path(name)) as p:
        return pd.read_csv(p)


def class_distribution() -> pd.DataFrame:
    """Principal lithologies of the real complete6 set with counts (139 rows)."""
    return read("lily_class_distribution.csv").copy()


@lru_cache(maxsize=None)
def _group_map() -> dict[str, str]:
    df = read("lily_lithology_groups.csv")
    return dict(zip(df["Principal_Lithology"], df["Lithology_Group"]))


def lithology_groups() -> dict[str, str]:
    """Principal lithology -> one of the study's 14 expert groups (a copy: callers may edit it)."""
    return dict(_group_map())


def group_names() -> list[str]:
    """The 14 expert groups, most common first (the label order used everywhere)."""
    df = read("lily_lithology_groups.csv")
    return list(df.groupby("Lithology_Group")["Count"].sum().sort_values(ascending=False).index)


# The study's keyword hierarchy, for principals outside the 139 mapped ones.
# Checked in order: the first keyword found in the name decides the group.
_KEYWORDS = [
    ("serpentin", "Ultramafic"), ("peridot", "Ultramafic"), ("harzburg", "Ultramafic"),
    ("dunite", "Ultramafic"), ("basalt", "Mafic Igneous"), ("gabbro", "Mafic Igneous"),
    ("diabase", "Mafic Igneous"), ("dolerite", "Mafic Igneous"), ("andesit", "Intermediate/Felsic Igneous"),
    ("dacit", "Intermediate/Felsic Igneous"), ("rhyol", "Intermediate/Felsic Igneous"),
    ("granit", "Intermediate/Felsic Igneous"), ("tuff", "Volcaniclastic"), ("lapilli", "Volcaniclastic"),
    ("ash", "Volcaniclastic"), ("volcani", "Volcaniclastic"), ("hyaloclast", "Volcaniclastic"),
    ("schist", "Metamorphic"), ("gneiss", "Metamorphic"), ("meta", "Metamorphic"),
    ("breccia", "Conglomerate/Breccia"), ("conglomerat", "Conglomerate/Breccia"),
    ("diamict", "Diamict"), ("gypsum", "Evaporite"), ("anhydrite", "Evaporite"), ("halite", "Evaporite"),
    ("diatom", "Biogenic Silica"), ("radiolar", "Biogenic Silica"), ("siliceous", "Biogenic Silica"),
    ("chert", "Biogenic Silica"), ("porcellanite", "Biogenic Silica"),
    ("nannofossil", "Carbonate"), ("foraminifer", "Carbonate"), ("chalk", "Carbonate"),
    ("limestone", "Carbonate"), ("calcare", "Carbonate"), ("carbonate", "Carbonate"),
    ("sand", "Sand"), ("silt", "Silt"), ("clay", "Clay/Mud"), ("mud", "Clay/Mud"),
]


def group_of(principal: str, mapping: dict[str, str] | None = None) -> str:
    """Expert group of a principal lithology: the shipped mapping, else the keyword hierarchy."""
    mapping = _group_map() if mapping is None else mapping
    if principal in mapping:
        return mapping[principal]
    name = str(principal).lower()
    for keyword, group in _KEYWORDS:
        if keyword in name:
            return group
    return OTHER_GROUP


def groups_for(principals: pd.Series) -> pd.Series:
    """Expert group per row (None where the principal is missing), looked up once per name."""
    names = principals.dropna().unique()
    return principals.map({p: group_of(p) for p in names if isinstance(p, str)})


def feature_summary(dataset: str = "complete6_20cm") -> pd.DataFrame:
    """Quartiles etc. of each feature in the real binned set, indexed by our feature name."""
    df = read("lily_feature_summary.csv")
    df = df[df["dataset"] == dataset].copy()
    names = {"Bulk density (GRA)": "GRA", "Magnetic susceptibility (instr. units)": "MS",
             "NGR total counts (cps)": "NGR", "R": "R", "G": "G", "B": "B"}
    df["feature"] = df["feature"].map(names)
    return df.set_index("feature")
