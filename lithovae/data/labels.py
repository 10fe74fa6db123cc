"""The labels and groups of own data (``data=table``, ``data=las``): names for numeric label
codes (``data.label_names``), groups of labels (``data.groups``), and the order of the classes.

Nothing of LILY is used here: own data have the classes their labels name and the groups the
user gives (a mapping or a ``data.group`` column), none otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lithovae.data import reference
from lithovae.data.errors import BuildError

_FILE_KINDS = (".csv", ".yaml", ".yml", ".json")


def _key(value) -> str:
    """A label code as the dataset writes it: whole numbers as integers (``3.0`` -> ``"3"``)."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if np.isfinite(number) and number == round(number) else text


def _read_file(path: Path, key: str, columns: str) -> list[tuple]:
    if not path.is_file():
        raise BuildError(f"{key}: no such file {path} (give a mapping, or a .csv/.yaml/.json file)")
    suffix = path.suffix.lower()
    if suffix not in _FILE_KINDS:
        raise BuildError(f"{key}: {path}: unknown file type '{suffix}' (use .csv with columns {columns}, "
                         ".yaml or .json with a mapping)")
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if table.shape[1] != 2 or table.empty:
                raise ValueError(f"need a header and two columns ({columns}), found {table.shape[1]} "
                                 f"column(s) and {len(table)} row(s)")
            return list(zip(table.iloc[:, 0], table.iloc[:, 1]))  # pairs: a code given twice is seen
        text = path.read_text(encoding="utf-8")
        mapping = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (ValueError, OSError, yaml.YAMLError) as exc:  # JSON, CSV and decoding errors are ValueErrors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BuildError(f"{key}: {path}: unreadable ({type(exc).__name__}: {reason})") from None
    if not isinstance(mapping, dict):
        raise BuildError(f"{key}: {path}: must hold a mapping ({columns.replace(',', ': ')}), "
                         f"got {type(mapping).__name__}")
    return list(mapping.items())


def checked_mapping(value, key: str, columns: str) -> dict[str, str] | None:
    """``data.label_names`` / ``data.groups``: None, a mapping, or a path to a CSV (a header,
    then two columns ``columns``), YAML or JSON file holding one. Keys are label codes or
    names (whole numbers written as integers), values non-empty text. One line naming the key
    or file on anything else."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        if not str(value).strip():
            return None
        path = Path(str(value).strip())
        pairs = _read_file(path, key, columns)
        key = f"{key}: {path}"  # errors in its entries name the file
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise BuildError(f"{key}: give a mapping ({columns.replace(',', ': ')}) or a .csv/.yaml/.json "
                         f"file; got {value!r}")
    if not pairs:
        raise BuildError(f"{key}: empty mapping; give at least one entry or null")
    out: dict[str, str] = {}
    for k, v in pairs:
        if k is None or not str(k).strip() or isinstance(v, (dict, list)) or v is None or not str(v).strip():
            raise BuildError(f"{key}: entry {k!r}: {v!r} is not a label and a non-empty name")
        name = _key(k)
        if name in out and out[name] != str(v).strip():
            raise BuildError(f"{key}: '{name}' given twice ({out[name]!r} and {str(v).strip()!r})")
        out[name] = str(v).strip()
    return out


def _left_out(labels: pd.Series, mapping: dict[str, str], what: str, where, log) -> None:
    """One line counting the labels present that ``mapping`` does not cover."""
    present = pd.Series(labels.dropna().unique(), dtype=object)
    missing = sorted(present[~present.isin(list(mapping))].astype(str), key=class_order_key)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        log(f"[lithovae.data] {Path(str(where)).name}: {len(missing)} of {len(present)} {what}: {shown}")


def named_labels(labels: pd.Series, names: dict[str, str] | None, where, log=print) -> pd.Series:
    """Labels (text, NA missing) with each code that ``names`` names replaced by its name; a
    code without a name stays its code, said in one line counting them."""
    if not names:
        return labels
    _left_out(labels, names, "label codes have no name in data.label_names, kept as codes", where, log)
    return labels.map(names).fillna(labels).astype("string")


def grouped_labels(labels: pd.Series, groups: dict[str, str] | None, where, log=print) -> pd.Series:
    """The group of each label from ``groups`` (NA where unlabeled or not in it, said in one
    line); all NA without ``groups``: own data have no groups of their own."""
    if not groups:
        return pd.Series(pd.NA, index=labels.index, dtype="string")
    _left_out(labels, groups, "labels have no group in data.groups, their rows have none", where, log)
    return labels.map(groups).astype("string")


def class_order_key(label: str):
    """Classes of own data in this order: numeric codes by value, then names alphabetically."""
    try:
        return (0, float(label), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(label))


def data_classes(values) -> list[str]:
    """The distinct labels present in ``values`` (missing left out), in :func:`class_order_key` order."""
    present = pd.Series(values).dropna().astype(str).unique()
    return sorted(present, key=class_order_key)


@dataclass
class LabelEncoding:
    """Integer codes of principal lithologies and their groups (saved with each run as
    ``label_encoding.json``): the classifier heads have one output per class, per group."""

    classes: list[str]
    groups: list[str]

    @classmethod
    def for_labels(cls, principals) -> "LabelEncoding":
        """LILY (and synthetic LILY): the study's 139 lithologies first, with fixed codes (as the
        seeds), then any others seen, sorted; the 14 expert groups, then any keyword groups."""
        known = list(reference.class_distribution()["Lithology"])
        seen = set(pd.Series(principals).dropna().unique())
        extra = sorted(seen - set(known))
        groups = reference.group_names()
        extra_groups = sorted({reference.group_of(p) for p in extra} - set(groups))
        return cls(classes=known + extra, groups=groups + extra_groups)

    @classmethod
    def for_own_data(cls, principals, groups) -> "LabelEncoding":
        """Own data (``data=table``/``las``): the labels present, numeric codes by value and then
        names alphabetically; the groups present (from ``data.group``/``data.groups``) in the
        same order, none without them."""
        return cls(classes=data_classes(principals), groups=data_classes(groups))

    def encode(self, values, vocabulary: list[str]) -> np.ndarray:
        codes = {name: i for i, name in enumerate(vocabulary)}
        return pd.Series(values).map(codes).fillna(-1).to_numpy(dtype=np.int64)

    def vocabulary(self, target: str) -> list[str]:
        """Names of the codes of ``target`` ("principal" lithologies or expert "group"s)."""
        return {"principal": self.classes, "group": self.groups}[target]

    def to_dict(self) -> dict:
        return {"classes": self.classes, "groups": self.groups}
