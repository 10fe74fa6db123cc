"""The LILY ``*_DataLITH.csv`` schema and the binned dataset contract."""

from __future__ import annotations

from dataclasses import dataclass

# Columns shared by every LILY file, before the measurement columns.
LOCATION_COLUMNS = [
    "Exp", "Site", "Hole", "Core", "Type", "Sect", "A/W", "Offset (cm)",
    "Depth CSF-A (m)", "Depth CSF-B (m)",
]
# Columns shared by every LILY file, after the measurement columns.
LITHOLOGY_COLUMNS = [
    "Prefix", "Principal", "Suffix", "Full Lithology", "Simplified Lithology",
    "Lithology Type", "Degree of Consolidation", "Lithology Subtype",
    "Expanded Core Type", "Latitude (DD)", "Longitude (DD)", "Water Depth (mbsl)",
]
DEPTH_COLUMN = "Depth CSF-A (m)"
ID_COLUMNS = ["Exp", "Site", "Hole"]
# Lithology columns the builder reads (the rest are carried in the raw files only).
LABEL_COLUMNS = {"Principal": "principal", "Prefix": "prefix", "Suffix": "suffix",
                 "Full Lithology": "full_lithology"}


@dataclass(frozen=True)
class Instrument:
    name: str  # short name, e.g. "GRA"
    filename: str
    # raw measurement column -> dataset feature name
    columns: dict[str, str]


INSTRUMENTS = {
    "GRA": Instrument("GRA", "GRA_DataLITH.csv", {"Bulk density (GRA)": "GRA"}),
    "MS": Instrument("MS", "MS_DataLITH.csv", {"Magnetic susceptibility (instr. units)": "MS"}),
    "NGR": Instrument("NGR", "NGR_DataLITH.csv", {"NGR total counts (cps)": "NGR"}),
    "RGB": Instrument("RGB", "RGB_DataLITH.csv", {"R": "R", "G": "G", "B": "B"}),
}

FEATURE_SETS = {
    "physical3": ["GRA", "MS", "NGR"],
    "complete6": ["GRA", "MS", "NGR", "R", "G", "B"],
}

# Columns of the binned Parquet dataset, in order (features follow).
DATASET_KEY_COLUMNS = [
    "borehole_id", "depth_m", "principal", "prefix", "suffix", "full_lithology",
    "lithology_group",
]
ALL_FEATURES = FEATURE_SETS["complete6"]

# A measurement beyond this magnitude (or inf/-inf) is not data but a fill value or a
# unit error: the builders drop it and count it, whatever the feature. Features with a
# physical range (GRA, RGB: ``data.build.gra_range``/``rgb_range``) are also held to it.
MAX_ABS_VALUE = 1e12


def instruments_for(features: list[str]) -> list[Instrument]:
    """The instruments needed to measure ``features``, in canonical order."""
    unknown = [f for f in features if f not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {ALL_FEATURES}")
    return [inst for inst in INSTRUMENTS.values()
            if any(f in inst.columns.values() for f in features)]
