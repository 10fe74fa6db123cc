"""Where a binned dataset comes from. Each source turns its config into one
Parquet file in the dataset contract (see :mod:`lithovae.data.schema`) plus a
manifest, and is built by Hydra from the ``data`` config group. The parameters a
``lithovae/conf/data/*.yaml`` sets are required keywords: their defaults are written there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.data import reference
from lithovae.data.builder import BuildOptions, build_dataset, checked_encoding, not_decodable
from lithovae.data.errors import BuildError
from lithovae.data.scaler import checked_transforms
from lithovae.data.schema import DATASET_KEY_COLUMNS, MAX_ABS_VALUE
from lithovae.files import atomic_write, file_digest, file_lock


class LilySource:
    """Real LILY ``*_DataLITH.csv`` files in ``raw_dir``, text in ``encoding``
    (``data.encoding``, utf-8 in data/lily.yaml; part of the cache key)."""

    synthetic = False

    def __init__(self, *, raw_dir: str, build: dict, transforms: dict | None, encoding: str):
        if raw_dir in (None, "", "???"):
            raise BuildError("data.raw_dir: set it to the folder holding the LILY *_DataLITH.csv files")
        self.raw_dir = Path(raw_dir)
        self.options = BuildOptions.from_config(build, encoding=encoding)
        self.transforms = checked_transforms(transforms)

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

    def __init__(self, *, scale: str, seed: int, build: dict, transforms: dict | None):
        from lithovae.data.synthetic import SCALES

        if scale not in SCALES:
            raise BuildError(f"data.scale: unknown '{scale}', choose one of {sorted(SCALES)}")
        self.scale, self.seed = scale, int(seed)
        self.options = BuildOptions.from_config(build, encoding=self.RAW_ENCODING)
        self.transforms = checked_transforms(transforms)

    @property
    def name(self) -> str:
        return f"synthetic-{self.scale}-seed{self.seed}"

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        from lithovae.data.synthetic import GENERATOR_VERSION, generate_raw

        root = Path(data_dir) / self.name
        raw = root / "raw"
        stamp = raw / "generated.json"
        with file_lock(root / ".lock"):  # parallel jobs generate and build once
            if _generator_version(stamp) != GENERATOR_VERSION:  # none yet, or from an older generator
                log(f"[lithovae.data] generating synthetic LILY ({self.scale}, seed {self.seed}) in {raw}")
                summary = generate_raw(raw, scale=self.scale, seed=self.seed)
                atomic_write(stamp, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=str)))
            result = build_dataset(raw, root, self.options, name=self.name, log=log, force=force)
        return result.path, result.manifest


def _generator_version(stamp: Path) -> int | None:
    try:
        return json.loads(stamp.read_text()).get("generator_version")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


TABLE_VERSION = 2  # bump when the output of the same table and options changes


class TableSource:
    """A user's own CSV or Parquet: one row per bin, columns chosen in config.

    ``features`` maps dataset feature names to source columns; ``transforms``
    picks the scaler transform per feature (none, signed_log, log1p); ``encoding``
    is the text encoding of a CSV (``data.encoding``: utf-8 in data/table.yaml, latin-1
    for a file with Latin-1 lithology names; Parquet ignores it).

    Nothing is dropped uncounted; the manifest's ``steps`` say what happened:

    - a feature value that is ``inf``/``-inf`` or beyond ``±1e12``
      (:data:`~lithovae.data.schema.MAX_ABS_VALUE`; a table column has no known physical
      range, so only this bound applies) is an outlier and becomes missing:
      ``dropped_nonfinite`` and ``dropped_beyond_max_abs``, per feature; a depth that is
      inf or beyond the bound drops its row (``dropped_bad_depth``);
    - a row left with no feature is dropped (``dropped_no_feature``);
    - a feature column with no usable value at all is an error naming the file and column;
    - rows with the same (borehole, depth) (depth to 1e-6 m) are averaged into one bin,
      as the LILY builder averages the rows of a 20 cm bin: each feature is the mean of
      the rows that have it, the label the most frequent one (ties: alphabetically
      first), the group that of the first row with that label
      (``duplicate_rows_averaged`` rows became ``duplicate_bins`` bins).
    """

    synthetic = False

    def __init__(self, *, path: str, borehole: str, depth: str, label: str | None,
                 group: str | None, features: dict[str, str], transforms: dict | None,
                 encoding: str):
        if path in (None, "", "???"):
            raise BuildError("data.path: set it to your CSV or Parquet file")
        self.path = Path(path)
        self.columns = {"borehole_id": borehole, "depth_m": depth, "principal": label,
                        "lithology_group": group}
        if not features:
            raise BuildError(f"data.features: map each dataset feature to its source column, "
                             f"e.g. {{GRA: GRA, MS: MS}}; got {features!r}")
        self.features = dict(features)
        self.transforms = checked_transforms(transforms)
        self.encoding = checked_encoding(encoding)

    @property
    def name(self) -> str:
        return f"table-{self.path.stem}"

    def options(self) -> dict:
        """Everything besides the file that changes the output (in the manifest and file name)."""
        return {"columns": self.columns, "features": self.features, "encoding": self.encoding,
                "max_abs_value": MAX_ABS_VALUE, "table_version": TABLE_VERSION}

    def _read(self) -> pd.DataFrame:
        if not self.path.exists():
            raise BuildError(f"{self.path}: file not found")
        if self.path.stat().st_size == 0:
            raise BuildError(f"{self.path}: empty file")
        wanted = [c for c in list(self.columns.values()) + list(self.features.values()) if c]
        parquet = self.path.suffix.lower() in (".parquet", ".pq")
        try:
            if parquet:
                import pyarrow.parquet as pq

                have = pq.read_schema(self.path).names
            else:
                have = list(pd.read_csv(self.path, nrows=0, encoding=self.encoding).columns)
        except UnicodeDecodeError:
            raise not_decodable(self.path, self.encoding) from None
        except Exception as exc:  # unreadable file: say which
            raise BuildError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})") from None
        missing = [c for c in wanted if c not in have]
        if missing:
            raise BuildError(f"{self.path}: missing column '{missing[0]}'")
        if parquet:
            return pd.read_parquet(self.path, columns=wanted)
        try:
            return pd.read_csv(self.path, usecols=wanted, low_memory=False, encoding=self.encoding)
        except UnicodeDecodeError:
            raise not_decodable(self.path, self.encoding) from None

    def _numeric(self, raw: pd.DataFrame, col: str) -> pd.Series:
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() & raw[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BuildError(f"{self.path}: column '{col}': non-numeric value "
                             f"{raw[col].iloc[row]!r} in data row {row + 1}")
        return values.astype(np.float64)

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        raw = self._read()  # always re-read: a single table is cheap
        if raw.empty:
            raise BuildError(f"{self.path}: no data rows")
        steps: dict = {"rows_read": int(len(raw)), "dropped_nonfinite": {}, "dropped_beyond_max_abs": {}}
        out = pd.DataFrame({"borehole_id": raw[self.columns["borehole_id"]].astype(str)})
        depth = self._numeric(raw, self.columns["depth_m"])
        bad_depth = depth.notna() & ~(np.isfinite(depth) & (depth.abs() <= MAX_ABS_VALUE))
        out["depth_m"] = depth.mask(bad_depth).round(6)
        for target, col in self.features.items():
            values = self._numeric(raw, col)
            nonfinite = values.notna() & ~np.isfinite(values)
            huge = np.isfinite(values) & (values.abs() > MAX_ABS_VALUE)
            if not (values.notna() & ~nonfinite & ~huge).any():
                raise BuildError(f"{self.path}: column '{col}' has no finite value in {len(raw)} rows "
                                 f"(all empty, NaN, inf or beyond ±{MAX_ABS_VALUE:g})")
            steps["dropped_nonfinite"][target] = int(nonfinite.sum())
            steps["dropped_beyond_max_abs"][target] = int(huge.sum())
            out[target] = values.mask(nonfinite | huge).astype(np.float32)
        no_depth = out["depth_m"].isna()
        steps["dropped_missing_depth"] = int((no_depth & ~bad_depth).sum())
        steps["dropped_bad_depth"] = int(bad_depth.sum())
        out = out[~no_depth]
        label_col = self.columns["principal"]
        out["principal"] = raw.loc[out.index, label_col].astype("string") if label_col else pd.NA
        for key in ("prefix", "suffix", "full_lithology"):
            out[key] = pd.NA
        group_col = self.columns["lithology_group"]
        out["lithology_group"] = raw.loc[out.index, group_col] if group_col else reference.groups_for(out["principal"])
        feats = list(self.features)
        no_feature = out[feats].isna().all(axis=1)
        steps["dropped_no_feature"] = int(no_feature.sum())
        out = out[~no_feature][DATASET_KEY_COLUMNS + feats]
        out, steps["duplicate_rows_averaged"], steps["duplicate_bins"] = _average_duplicates(
            out, feats, derive_group=not group_col)
        out = out.sort_values(["borehole_id", "depth_m"], kind="stable").reset_index(drop=True)
        if out.empty:
            raise BuildError(f"{self.path}: no row has a depth and at least one feature")
        steps["missing_per_feature"] = {f: int(out[f].isna().sum()) for f in feats}
        dropped = {k: v for k, v in steps.items() if k.startswith(("dropped", "duplicate")) and
                   (sum(v.values()) if isinstance(v, dict) else v)}
        if dropped:
            log(f"[lithovae.data] {self.path.name}: {json.dumps(dropped)}")
        # one folder per source file (tables of the same name in other folders do not collide),
        # one file per set of options (jobs with other options do not overwrite it)
        where = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:8]
        key = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode()).hexdigest()[:10]
        dest = Path(data_dir) / f"{self.name}-{where}"
        path = dest / f"{self.name}_{key}.parquet"
        manifest = {"name": self.name, "source": str(self.path), "options": self.options(),
                    "inputs": {self.path.name: {"sha256": file_digest(self.path)}},
                    "steps": steps,
                    "rows": int(len(out)), "boreholes": int(out["borehole_id"].nunique()),
                    "lithologies": int(out["principal"].nunique()), "features": feats}
        atomic_write(path, lambda tmp: out.to_parquet(tmp, index=False))
        atomic_write(path.with_suffix(".manifest.json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
        return path, manifest


def _average_duplicates(out: pd.DataFrame, feats: list[str], derive_group: bool):
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
        merged["lithology_group"] = reference.groups_for(merged["principal"])
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
