"""Where a binned dataset comes from. Each source turns its config into one
Parquet file in the dataset contract (see :mod:`lithovae.data.schema`) plus a
manifest, and is built by Hydra from the ``data`` config group."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.data import reference
from lithovae.data.builder import BuildOptions, build_dataset
from lithovae.data.errors import BuildError
from lithovae.data.scaler import checked_transforms
from lithovae.data.schema import ALL_FEATURES, DATASET_KEY_COLUMNS
from lithovae.files import atomic_write, file_digest, file_lock


class LilySource:
    """Real LILY ``*_DataLITH.csv`` files in ``raw_dir``."""

    synthetic = False

    def __init__(self, raw_dir: str, build: dict | None = None, transforms: dict | None = None):
        if raw_dir in (None, "", "???"):
            raise BuildError("data.raw_dir: set it to the folder holding the LILY *_DataLITH.csv files")
        self.raw_dir = Path(raw_dir)
        self.options = BuildOptions.from_config(build)
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

    def __init__(self, scale: str = "default", seed: int = 0, build: dict | None = None,
                 transforms: dict | None = None):
        from lithovae.data.synthetic import SCALES

        if scale not in SCALES:
            raise BuildError(f"data.scale: unknown '{scale}', choose one of {sorted(SCALES)}")
        self.scale, self.seed = scale, int(seed)
        self.options = BuildOptions.from_config(build)
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


class TableSource:
    """A user's own CSV or Parquet: one row per bin, columns chosen in config.

    ``features`` maps dataset feature names to source columns; ``transforms``
    picks the scaler transform per feature (none, signed_log, log1p).
    """

    synthetic = False

    def __init__(self, path: str, borehole: str = "borehole_id", depth: str = "depth_m",
                 label: str | None = "principal", group: str | None = None,
                 features: dict[str, str] | None = None, transforms: dict | None = None):
        if path in (None, "", "???"):
            raise BuildError("data.path: set it to your CSV or Parquet file")
        self.path = Path(path)
        self.columns = {"borehole_id": borehole, "depth_m": depth, "principal": label,
                        "lithology_group": group}
        self.features = dict(features or {f: f for f in ALL_FEATURES})
        self.transforms = checked_transforms(transforms)

    @property
    def name(self) -> str:
        return f"table-{self.path.stem}"

    def _read(self) -> pd.DataFrame:
        if not self.path.exists():
            raise BuildError(f"{self.path}: file not found")
        if self.path.stat().st_size == 0:
            raise BuildError(f"{self.path}: empty file")
        wanted = [c for c in list(self.columns.values()) + list(self.features.values()) if c]
        try:
            if self.path.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                have = pq.read_schema(self.path).names
            else:
                have = list(pd.read_csv(self.path, nrows=0).columns)
        except Exception as exc:  # unreadable file: say which
            raise BuildError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})") from None
        missing = [c for c in wanted if c not in have]
        if missing:
            raise BuildError(f"{self.path}: missing column '{missing[0]}'")
        if self.path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(self.path, columns=wanted)
        return pd.read_csv(self.path, usecols=wanted, low_memory=False)

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        raw = self._read()  # always re-read: a single table is cheap
        if raw.empty:
            raise BuildError(f"{self.path}: no data rows")
        out = pd.DataFrame({"borehole_id": raw[self.columns["borehole_id"]].astype(str)})
        for target, col in [("depth_m", self.columns["depth_m"])] + list(self.features.items()):
            values = pd.to_numeric(raw[col], errors="coerce")
            bad = values.isna() & raw[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise BuildError(f"{self.path}: column '{col}': non-numeric value "
                                 f"{raw[col].iloc[row]!r} in data row {row + 1}")
            out[target] = values.astype(np.float32 if target != "depth_m" else np.float64)
        n_no_depth = int(out["depth_m"].isna().sum())
        out = out[out["depth_m"].notna()]
        label_col = self.columns["principal"]
        out["principal"] = raw.loc[out.index, label_col].astype("string") if label_col else pd.NA
        for key in ("prefix", "suffix", "full_lithology"):
            out[key] = pd.NA
        group_col = self.columns["lithology_group"]
        out["lithology_group"] = raw.loc[out.index, group_col] if group_col else reference.groups_for(out["principal"])
        feats = list(self.features)
        no_feature = out[feats].isna().all(axis=1)
        out = out[~no_feature][DATASET_KEY_COLUMNS + feats]
        out = out.sort_values(["borehole_id", "depth_m"], kind="stable").reset_index(drop=True)
        if out.empty:
            raise BuildError(f"{self.path}: no row has a depth and at least one feature")
        # one folder per source file: tables of the same name in other folders do not collide
        where = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:8]
        dest = Path(data_dir) / f"{self.name}-{where}"
        path = dest / f"{self.name}.parquet"
        manifest = {"name": self.name, "source": str(self.path),
                    "inputs": {self.path.name: {"sha256": file_digest(self.path)}},
                    "steps": {"rows_read": int(len(raw)), "dropped_missing_depth": n_no_depth,
                              "dropped_no_feature": int(no_feature.sum()),
                              "missing_per_feature": {f: int(out[f].isna().sum()) for f in feats}},
                    "rows": int(len(out)), "boreholes": int(out["borehole_id"].nunique()),
                    "lithologies": int(out["principal"].nunique()), "features": feats}
        atomic_write(path, lambda tmp: out.to_parquet(tmp, index=False))
        atomic_write(path.with_suffix(".manifest.json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
        return path, manifest
