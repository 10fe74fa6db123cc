"""Where a binned dataset comes from. Each source turns its config into one
Parquet file in the dataset contract (see :mod:`lithovae.data.schema`) plus a
manifest, and is built by Hydra from the ``data`` config group. The parameters a
``lithovae/conf/data/*.yaml`` sets are required keywords: their defaults are written there."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.checks import check_options, options_of, random_seed
from lithovae.data.builder import (BuildOptions, bin_index, build_dataset, build_from_tables, built_dataset,
                                   checked_encoding, not_decodable)
from lithovae.data.errors import BuildError
from lithovae.data.labels import checked_mapping, grouped_labels, named_labels
from lithovae.data.scaler import checked_transforms
from lithovae.data.schema import ALL_FEATURES, DATASET_KEY_COLUMNS, INSTRUMENTS, MAX_ABS_VALUE
from lithovae.files import atomic_write, file_digest, file_lock

# not at the top: the synthetic generator and pyarrow are imported inside the functions that use
# them: a source of own data never needs the generator


class LilySource:
    """Real LILY ``*_DataLITH.csv`` files in ``raw_dir``, text in ``encoding``
    (``data.encoding``, utf-8 in data/lily.yaml; part of the cache key)."""

    synthetic = False
    OPTIONS = {"build": options_of(BuildOptions)}  # the ranges (lithovae.checks), checked by the config too

    def __init__(self, *, raw_dir: str, build: dict, transforms: dict | None, encoding: str):
        if raw_dir in (None, "", "???"):
            raise BuildError("data.raw_dir: set it to the folder holding the LILY *_DataLITH.csv files")
        self.raw_dir = Path(raw_dir)
        self.options = BuildOptions.from_config(build, encoding=encoding)
        self.transforms = _build_transforms(transforms, self.options)

    @property
    def name(self) -> str:
        return "lily"

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        with file_lock(Path(data_dir) / "lily" / ".lock"):  # parallel jobs build once
            result = build_dataset(self.raw_dir, Path(data_dir) / "lily", self.options, name="lily",
                                   log=log, force=force)
        return result.path, result.manifest


class SyntheticSource:
    """The embedded benchmark: a synthetic LILY generated in the real raw schema and
    built by the same builder. Never a real-data result."""

    synthetic = True
    # the text encoding of the generated raw CSV files (pyarrow's CSV writer writes UTF-8):
    # a fact of the generator, not an option (data/synthetic.yaml has no data.encoding)
    RAW_ENCODING = "utf-8"
    OPTIONS = {"seed": random_seed, "build": options_of(BuildOptions)}  # checked by the config too

    def __init__(self, *, scale: str, seed: int, build: dict, transforms: dict | None):
        from lithovae.data.synthetic import SCALES

        check_options(type(self), locals(), "data.", BuildError)
        if scale not in SCALES:
            raise BuildError(f"data.scale: unknown '{scale}', choose one of {sorted(SCALES)}")
        self.scale, self.seed = scale, int(seed)
        self.options = BuildOptions.from_config(build, encoding=self.RAW_ENCODING)
        self.transforms = _build_transforms(transforms, self.options)

    @property
    def name(self) -> str:
        return f"synthetic-{self.scale}-seed{self.seed}"

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        from lithovae.data.synthetic import GENERATOR_VERSION, generate_tables, summary

        root = Path(data_dir) / self.name
        stamp = root / "generated.json"  # which generator built the datasets here
        with file_lock(root / ".lock"):  # parallel jobs generate and build once
            current = _generator_version(stamp) == GENERATOR_VERSION
            if current and not force and (built := built_dataset(root, self.options, name=self.name, log=log)):
                return built.path, built.manifest
            # the raw tables are a pure function of (generator, scale, seed): binned as they are
            # generated, hole by hole, never written (the default scale's would be 2 GB of CSV);
            # binning them is binning their files (tests/test_synthetic.py builds both)
            log(f"[lithovae.data] generating synthetic LILY ({self.scale}, seed {self.seed}) and binning it "
                "(no raw files written)")
            shutil.rmtree(root / "raw", ignore_errors=True)  # left by an earlier version
            result = build_from_tables(generate_tables(self.scale, self.seed), f"synthetic LILY ({self.name})",
                                       root, self.options, name=self.name, log=log)
            rows = {INSTRUMENTS[n].filename: s["rows_read"] for n, s in result.manifest["steps"]["instruments"].items()}
            generated = summary(self.scale, self.seed, rows)
            atomic_write(stamp, lambda tmp: Path(tmp).write_text(json.dumps(generated, indent=1, default=str)))
        return result.path, result.manifest


def _build_transforms(transforms: dict | None, options: BuildOptions) -> dict[str, str]:
    """``data.transforms`` of a LILY build: None (the study's), or per feature of the feature set."""
    return transforms_within(transforms, options.features,
                             f"the features of data.build.feature_set={options.feature_set}")


def _generator_version(stamp: Path) -> int | None:
    try:
        return json.loads(stamp.read_text()).get("generator_version")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


TABLE_VERSION = 5  # bump when the output of the same table and options changes (3: numeric labels as integers,
# 4: rows without a borehole id dropped and counted, 5: depths binned at data.bin_size, ids stripped)


def checked_features(features, noun: str = "column") -> dict[str, str]:
    """``data.features`` as {dataset feature: source column}: ``None`` means the six LILY
    features (GRA, MS, NGR, R, G, B), a list names columns used as they are, a mapping
    renames. Whatever is given replaces the default; it is never merged with it."""
    if features is None:
        features = list(ALL_FEATURES)
    example = f"list the {noun}s ([GR, RHOB]) or map features to {noun}s ({{GR: GR, RHOB: RHOB}})"
    if isinstance(features, (list, tuple)):
        if not all(isinstance(f, (str, int)) and str(f).strip() for f in features):
            raise BuildError(f"data.features: {noun} names must be non-empty text; got {list(features)!r}")
        names = [str(f).strip() for f in features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BuildError(f"data.features: {twice} listed twice in {names}")
        mapping = {n: n for n in names}
    elif isinstance(features, dict):
        empty = [k for k, v in features.items() if not isinstance(v, (str, int)) or not str(v).strip()]
        if empty:
            raise BuildError(f"data.features.{empty[0]}: no source {noun} given ({features[empty[0]]!r}); {example}")
        mapping = {str(k).strip(): str(v).strip() for k, v in features.items()}
    else:
        raise BuildError(f"data.features: {example}; got {features!r}")
    if not mapping:
        raise BuildError(f"data.features: empty; {example}")
    reserved = [f for f in mapping if f in DATASET_KEY_COLUMNS or not f]
    if reserved:
        raise BuildError(f"data.features: '{reserved[0]}' is a column of the dataset contract "
                         f"({', '.join(DATASET_KEY_COLUMNS)}); name the feature otherwise")
    return mapping


def transforms_within(transforms: dict | None, features: list[str],
                      features_key: str = "data.features") -> dict[str, str]:
    """``data.transforms`` checked (every transform known) and naming only ``features``."""
    transforms = checked_transforms(transforms)
    unknown = [f for f in transforms if f not in features]
    if unknown:
        raise BuildError(f"data.transforms: {list(transforms)} names {unknown}, not in "
                         f"{features_key} {list(features)}; add it there or drop its transform")
    return transforms


class TableSource:
    """A user's own CSV or Parquet: one row per sample or bin, columns chosen in config; the
    depths are binned at ``bin_size`` (``data.bin_size``) as a LAS folder's are.

    ``features`` (``data.features``) names the feature columns: a list of column names
    (feature = column), a mapping {dataset feature: source column}, or None for the six
    LILY features; it replaces the default six. ``transforms`` picks the scaler transform
    (none, signed_log, log1p) per feature, any of ``features`` (None: the study's choice
    for the LILY features, ``none`` for others); ``encoding`` is the text encoding of a CSV
    (``data.encoding``: utf-8 in data/table.yaml, latin-1 for a file with Latin-1 lithology
    names; Parquet ignores it). ``label_names`` (code -> name) names label codes; the groups
    of the labels come from the ``group`` column or the ``groups`` mapping (label -> group),
    else there are none (see :mod:`lithovae.data.labels`).

    What happens to the rows (:func:`table_to_contract`, shared with the LAS source) is
    counted in the manifest's ``steps``.
    """

    synthetic = False

    def __init__(self, *, path: str, borehole: str, depth: str, label: str | None,
                 group: str | None, features: dict[str, str] | list[str] | None,
                 transforms: dict | None, encoding: str, label_names, groups, units,
                 bin_size: float | None):
        if path in (None, "", "???"):
            raise BuildError("data.path: set it to your CSV or Parquet file")
        self.bin_size = checked_bin_size(bin_size)
        self.label_names = checked_mapping(label_names, "data.label_names", "code,name")
        self.groups = checked_mapping(groups, "data.groups", "label,group")
        if group and self.groups:
            raise BuildError(f"data.groups: give the groups once, as data.group (the column '{group}') "
                             "or as data.groups (a mapping), not both")
        if not label and (self.label_names or self.groups):
            raise BuildError("data.label_names / data.groups: need data.label (the label column)")
        self.path = Path(path)
        self.columns = {"borehole_id": borehole, "depth_m": depth, "principal": label,
                        "lithology_group": group}
        self.features = checked_features(features)
        self.transforms = transforms_within(transforms, list(self.features))
        self.encoding = checked_encoding(encoding)
        self.units, self.depth_unit = checked_units(units, list(self.features), depth)

    @property
    def name(self) -> str:
        return f"table-{self.path.stem}"

    def options(self) -> dict:
        """Everything besides the file that changes the output (in the manifest and file name)."""
        return {"columns": self.columns, "features": self.features, "encoding": self.encoding,
                "label_names": self.label_names, "groups": self.groups, "bin_size": self.bin_size,
                "max_abs_value": MAX_ABS_VALUE, "table_version": TABLE_VERSION}

    @property
    def _parquet(self) -> bool:
        return self.path.suffix.lower() in (".parquet", ".pq")

    def header(self) -> list[str]:
        """The file's column names (errors name the file: missing, empty, unreadable)."""
        if not self.path.exists():
            raise BuildError(f"{self.path}: file not found")
        if self.path.stat().st_size == 0:
            raise BuildError(f"{self.path}: empty file")
        try:
            if self._parquet:
                import pyarrow.parquet as pq

                return pq.read_schema(self.path).names
            return list(pd.read_csv(self.path, nrows=0, encoding=self.encoding).columns)
        except UnicodeDecodeError:
            raise not_decodable(self.path, self.encoding) from None
        except Exception as exc:  # unreadable file: say which
            raise BuildError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})") from None

    def _read(self) -> pd.DataFrame:
        wanted = list(dict.fromkeys(c for c in list(self.columns.values()) + list(self.features.values()) if c))
        parquet = self._parquet
        have = self.header()
        missing = [c for c in wanted if c not in have]
        if missing:
            raise BuildError(f"{self.path}: missing column '{missing[0]}'")
        if parquet:
            return pd.read_parquet(self.path, columns=wanted)
        try:
            return pd.read_csv(self.path, usecols=wanted, low_memory=False, encoding=self.encoding)
        except UnicodeDecodeError:
            raise not_decodable(self.path, self.encoding) from None

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        raw = self._read()  # always re-read: a single table is cheap
        out, steps = table_to_contract(raw, where=self.path, borehole=self.columns["borehole_id"],
                                       depth=self.columns["depth_m"], label=self.columns["principal"],
                                       group=self.columns["lithology_group"], features=self.features,
                                       bin_size=self.bin_size, label_names=self.label_names,
                                       groups=self.groups, log=log)
        inputs = {self.path.name: {"sha256": file_digest(self.path)}}
        return write_contract(out, steps, name=self.name, source=self.path, options=self.options(),
                              inputs=inputs, data_dir=data_dir, units=self.units, depth_unit=self.depth_unit)


def checked_units(units, features: list[str], depth: str) -> tuple[dict[str, str], str | None]:
    """``data.units`` (a mapping {feature or the depth column: unit}, or null) as (unit per
    feature, depth unit). Units are shown as written (figure track titles); none is guessed."""
    if units is None:
        return {}, None
    example = f"e.g. {{{features[0]}: gAPI, {depth}: m}}"
    if not isinstance(units, dict):
        raise BuildError(f"data.units: must be a mapping of feature (or the depth column) to unit, {example}; "
                         f"got {str(units)[:60]!r}")
    out: dict[str, str] = {}
    for key, unit in units.items():
        if str(key) not in (*features, depth):
            raise BuildError(f"data.units.{key}: not a feature of data.features {features} nor the depth "
                             f"column '{depth}'")
        if not isinstance(unit, str) or not unit.strip():
            raise BuildError(f"data.units.{key}: must be a unit as text (such as ohm.m), got {unit!r}")
        out[str(key)] = unit.strip()
    return {f: out[f] for f in features if f in out}, out.get(depth)


def _numeric(raw: pd.DataFrame, col: str, where, noun: str = "column") -> pd.Series:
    values = pd.to_numeric(raw[col], errors="coerce")
    bad = values.isna() & raw[col].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BuildError(f"{where}: {noun} '{col}': non-numeric value "
                         f"{raw[col].iloc[row]!r} in data row {row + 1}")
    return values.astype(np.float64)


def checked_bin_size(bin_size) -> float | None:
    """``data.bin_size`` of a table or LAS source: a number > 0 (in the source's depth unit) or
    None (every sample depth kept)."""
    if bin_size is None:
        return None
    ok = isinstance(bin_size, (int, float)) and not isinstance(bin_size, bool) \
        and np.isfinite(bin_size) and bin_size > 0
    if not ok:
        raise BuildError(f"data.bin_size: must be a number > 0 (in the data's depth unit) "
                         f"or null, got {bin_size!r}")
    return float(bin_size)


def borehole_ids(ids: pd.Series) -> pd.Series:
    """Borehole ids as text, alike through every source: surrounding blanks stripped, whole
    numbers as integers (a numeric id column with gaps reads as 3.0; its id is "3", as a LAS
    header's). Missing ids stay missing."""
    return label_strings(ids).str.strip().astype(object)


def missing_ids(ids: pd.Series) -> np.ndarray:
    """True (a bool array) where a borehole id is missing: NaN/None, or text that is empty or blank."""
    text = ids.astype("string").str.strip()
    return (ids.isna() | text.isna() | (text == "")).to_numpy()


def label_strings(values: pd.Series) -> pd.Series:
    """Labels as text: numbers (lithology codes) written as integers where they are whole
    (``3.0`` -> ``"3"``, as a CSV column with gaps or a LAS curve reads them); missing values and
    blank text (``""``, ``"  "``) are NA."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(np.float64)
        whole = numbers.notna() & np.isfinite(numbers) & (numbers == np.round(numbers))
        text = numbers.map(lambda v: str(v) if pd.notna(v) else None).astype("string")
        text[whole] = numbers[whole].astype(np.int64).astype(str)
        return text.where(numbers.notna(), pd.NA)
    text = values.astype("string")
    return text.mask((text.str.strip() == "").fillna(False).astype(bool))  # blank text: no label, as NaN


def table_to_contract(raw: pd.DataFrame, *, where, borehole: str, depth: str, label: str | None,
                      group: str | None, features: dict[str, str], bin_size: float | None = None,
                      noun: str = "column", label_names: dict[str, str] | None = None,
                      groups: dict[str, str] | None = None, log=print) -> tuple[pd.DataFrame, dict]:
    """The rows of a source (columns named by ``borehole``, ``depth``, ``label``, ``group`` and
    the values of ``features``) as the binned dataset contract, and the ``steps`` counted.
    ``where`` names the source in errors, ``noun`` what its columns are (column, curve).
    Label codes are named by ``label_names``; the group of a row is its ``group`` column, else
    its label's in ``groups``, else none (own data have no groups unless given).

    Nothing is dropped uncounted:

    - a row whose borehole id is missing (empty, blank or NaN) belongs to no borehole: it is
      dropped, counted (``dropped_missing_borehole``) and named in one printed line, never
      merged into another borehole; with no id at all the source is an error;
    - a feature value that is ``inf``/``-inf`` or beyond ``±1e12``
      (:data:`~lithovae.data.schema.MAX_ABS_VALUE`; such a column has no known physical
      range, so only this bound applies) is an outlier and becomes missing:
      ``dropped_nonfinite`` and ``dropped_beyond_max_abs``, per feature; a depth that is
      inf or beyond the bound drops its row (``dropped_bad_depth``);
    - a row left with no feature is dropped (``dropped_no_feature``);
    - a feature column with no usable value at all is an error naming the source and column;
    - with ``bin_size``, each depth goes to its bin ``round(depth / bin_size) * bin_size``
      (as the LILY builder bins; edges to the deeper bin); without, the depth is kept to 1e-6;
    - rows with the same (borehole, depth) are averaged into one bin, as the LILY builder
      averages the rows of a 20 cm bin: each feature is the mean of the rows that have it,
      the label the most frequent one (ties: alphabetically first), the group that of the
      first row with that label (``duplicate_rows_averaged`` rows became ``duplicate_bins`` bins).
    """
    if raw.empty:
        raise BuildError(f"{where}: no data rows")
    no_id = missing_ids(raw[borehole])
    if no_id.all():
        raise BuildError(f"{where}: {noun} '{borehole}' (the borehole id) is empty in all {len(raw)} rows")
    steps: dict = {"rows_read": int(len(raw)), "dropped_missing_borehole": int(no_id.sum()),
                   "dropped_nonfinite": {}, "dropped_beyond_max_abs": {}}
    out = pd.DataFrame({"borehole_id": borehole_ids(raw[borehole]).mask(no_id)})
    depths = _numeric(raw, depth, where, noun)
    bad_depth = depths.notna() & ~(np.isfinite(depths) & (depths.abs() <= MAX_ABS_VALUE))
    depths = depths.mask(bad_depth)
    if bin_size:
        known = depths.notna()
        depths[known] = bin_index(depths[known].to_numpy(), bin_size) * bin_size
        steps["bin_size"] = bin_size
    out["depth_m"] = depths.round(6)
    for target, col in features.items():
        values = _numeric(raw, col, where, noun)
        nonfinite = values.notna() & ~np.isfinite(values)
        huge = np.isfinite(values) & (values.abs() > MAX_ABS_VALUE)
        if not (values.notna() & ~nonfinite & ~huge).any():
            raise BuildError(f"{where}: {noun} '{col}' has no finite value in {len(raw)} rows "
                             f"(all empty, NaN, inf or beyond ±{MAX_ABS_VALUE:g})")
        steps["dropped_nonfinite"][target] = int(nonfinite.sum())
        steps["dropped_beyond_max_abs"][target] = int(huge.sum())
        out[target] = values.mask(nonfinite | huge).astype(np.float32)
    no_depth = out["depth_m"].isna()
    steps["dropped_missing_depth"] = int((no_depth & ~bad_depth & ~no_id).sum())  # each row counted once
    steps["dropped_bad_depth"] = int((bad_depth & ~no_id).sum())
    out = out[~no_depth & ~no_id]
    out["principal"] = named_labels(label_strings(raw.loc[out.index, label]), label_names, where, log) \
        if label else pd.NA
    for key in ("prefix", "suffix", "full_lithology"):
        out[key] = pd.NA
    out["lithology_group"] = raw.loc[out.index, group] if group else \
        grouped_labels(out["principal"].astype("string"), groups, where, log)
    feats = list(features)
    no_feature = out[feats].isna().all(axis=1)
    steps["dropped_no_feature"] = int(no_feature.sum())
    out = out[~no_feature][DATASET_KEY_COLUMNS + feats]
    out, steps["duplicate_rows_averaged"], steps["duplicate_bins"] = _average_duplicates(
        out, feats, derive_group=not group, groups=groups)
    out = out.sort_values(["borehole_id", "depth_m"], kind="stable").reset_index(drop=True)
    if out.empty:
        raise BuildError(f"{where}: no row has a depth and at least one feature")
    steps["missing_per_feature"] = {f: int(out[f].isna().sum()) for f in feats}
    if steps["dropped_missing_borehole"]:
        log(f"[lithovae.data] {Path(where).name}: {steps['dropped_missing_borehole']} of {len(raw)} rows "
            f"have no borehole id ({noun} '{borehole}' empty or NaN): dropped")
    dropped = {k: v for k, v in steps.items() if k.startswith(("dropped", "duplicate")) and
               k != "dropped_missing_borehole" and (sum(v.values()) if isinstance(v, dict) else v)}
    if dropped:
        log(f"[lithovae.data] {Path(where).name}: {json.dumps(dropped)}")
    return out, steps


def write_contract(out: pd.DataFrame, steps: dict, *, name: str, source: Path, options: dict,
                   inputs: dict, data_dir: str | Path, units: dict[str, str] | None = None,
                   depth_unit: str | None = None) -> tuple[Path, dict]:
    """Writes the dataset and its manifest (each atomically) and returns (path, manifest):
    one folder per source (sources of the same name in other folders do not collide), one
    file per set of ``options`` (jobs with other options do not overwrite it). ``units``
    (feature -> unit) and ``depth_unit``, where known, are recorded for the log figures."""
    where = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    dest = Path(data_dir) / f"{name}-{where}"
    path = dest / f"{name}_{key}.parquet"
    feats = [c for c in out.columns if c not in DATASET_KEY_COLUMNS]
    manifest = {"name": name, "source": str(source), "options": options, "inputs": inputs,
                "steps": steps,
                "rows": int(len(out)), "boreholes": int(out["borehole_id"].nunique()),
                "lithologies": int(out["principal"].nunique()), "features": feats,
                # own data: the classes are the labels present, the groups only those given
                "label_vocabulary": "data", "units": dict(units or {}), "depth_unit": depth_unit}
    atomic_write(path, lambda tmp: out.to_parquet(tmp, index=False))
    atomic_write(path.with_suffix(".manifest.json"),
                 lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1, default=str)))
    return path, manifest


def _average_duplicates(out: pd.DataFrame, feats: list[str], derive_group: bool,
                        groups: dict[str, str] | None = None):
    """Rows sharing a (borehole, depth) averaged into one: (frame, rows averaged, bins they made)."""
    key = ["borehole_id", "depth_m"]
    dup = out.duplicated(key, keep=False)
    if not dup.any():
        return out, 0, 0
    multi = out[dup]
    merged = multi.groupby(key, sort=False)[feats].mean().reset_index()  # NaN-skipping mean
    labelled = multi[multi["principal"].notna()]
    votes = labelled.groupby(key + ["principal"], sort=False).size().rename("votes").reset_index()
    votes = votes.sort_values(key + ["votes", "principal"], ascending=[True, True, False, True],
                              kind="stable")
    merged = merged.merge(votes.drop_duplicates(key)[key + ["principal"]], on=key, how="left")
    if derive_group:
        merged["lithology_group"] = grouped_labels(merged["principal"].astype("string"), groups, "",
                                                   log=lambda *_: None)  # said once, above
    else:  # the group of the first row with the chosen label (or of the first row with a group)
        rows = multi.merge(merged[key + ["principal"]], on=key, how="left", suffixes=("", "_chosen"))
        same = (rows["principal"] == rows["principal_chosen"]).fillna(False).astype(bool)
        same |= rows["principal_chosen"].isna().to_numpy()
        first = rows[same & rows["lithology_group"].notna()].drop_duplicates(key)
        merged = merged.merge(first[key + ["lithology_group"]], on=key, how="left")
    for column in ("prefix", "suffix", "full_lithology"):
        merged[column] = pd.NA
    merged = merged[out.columns].astype({f: np.float32 for f in feats})
    return pd.concat([out[~dup], merged], ignore_index=True), int(dup.sum()), int(len(merged))
