"""Calibration of the synthetic LILY: figures shaped after the real database
(``lithovae/data/reference``, see its README). Data only, no logic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass(frozen=True)
class Scale:
    camera_holes: int     # every instrument; these make the complete6 set
    no_camera_holes: int  # GRA, MS, NGR only (mostly hard rock)
    no_ngr_holes: int     # GRA, MS, RGB only
    length_factor: float  # multiplies every hole's cored length


SCALES = {
    "small": Scale(camera_holes=16, no_camera_holes=5, no_ngr_holes=1, length_factor=0.25),
    "default": Scale(camera_holes=296, no_camera_holes=210, no_ngr_holes=20, length_factor=1.0),
}

# --- depositional settings --------------------------------------------------------------

SETTINGS = ["pelagic carbonate", "siliceous", "terrigenous margin", "volcaniclastic arc",
            "oceanic crust"]
PEL, SIL, TER, ARC, CRU = range(5)
SOFT, LITHIFIED, NEUTRAL = range(3)

# affinity of each lithology group to each setting (PEL, SIL, TER, ARC, CRU)
GROUP_AFFINITY = {
    "Carbonate": (1.0, 0.25, 0.15, 0.15, 0.03),
    "Biogenic Silica": (0.1, 1.0, 0.15, 0.05, 0.01),
    "Clay/Mud": (0.25, 0.5, 1.0, 0.35, 0.02),
    "Silt": (0.03, 0.1, 1.0, 0.25, 0.005),
    "Sand": (0.02, 0.05, 1.0, 0.3, 0.005),
    "Conglomerate/Breccia": (0.02, 0.02, 0.4, 0.6, 0.4),
    "Diamict": (0.01, 0.1, 1.0, 0.05, 0.01),
    "Volcaniclastic": (0.03, 0.05, 0.1, 1.0, 0.1),
    "Mafic Igneous": (0.005, 0.005, 0.005, 0.15, 1.0),
    "Ultramafic": (0.001, 0.001, 0.001, 0.05, 1.0),
    "Intermediate/Felsic Igneous": (0.005, 0.005, 0.02, 0.6, 0.6),
    "Metamorphic": (0.005, 0.005, 0.1, 0.2, 0.5),
    "Evaporite": (0.3, 0.01, 0.2, 0.01, 0.01),
    "Other": (0.2, 0.1, 0.3, 0.3, 0.1),
}
# "Other" principals behave like these groups
OTHER_AS = {"ooze": "Carbonate", "coal": "Clay/Mud", "lava": "Mafic Igneous",
            "volcanic rock": "Mafic Igneous"}
# affinity of a unit's diagenetic grade (rows) to a lithology's grade (soft, lithified, neutral)
GRADE_AFFINITY = np.array([[1.0, 0.05, 1.0], [0.1, 1.0, 1.0]])
# other settings a unit of a hole may take, by the hole's main setting
SECONDARY = {PEL: [SIL, TER, ARC], SIL: [PEL, TER], TER: [PEL, SIL, ARC], ARC: [TER, PEL]}
# fraction of cored length that ends up in complete bins, by main setting (sizes the holes)
COMPLETE_YIELD = {PEL: 0.8, SIL: 0.8, TER: 0.8, ARC: 0.74, CRU: 0.2}
# main setting of the holes without camera (crust-rich); the rest follow the camera holes
NO_CAMERA_SHARES = {CRU: 0.35, ARC: 0.2, SIL: 0.15}
# holes without camera: fraction of cored length in physical3 bins, and size vs camera holes
PHYSICAL3_YIELD = {PEL: 0.85, SIL: 0.85, TER: 0.85, ARC: 0.8, CRU: 0.4}
NO_CAMERA_SIZE = 0.73
WATER_DEPTH = {PEL: (2500, 4800), SIL: (3000, 5500), TER: (200, 3000), ARC: (800, 4000),
               CRU: (1500, 5500)}

HARD_GROUPS = {"Mafic Igneous", "Ultramafic", "Intermediate/Felsic Igneous", "Metamorphic"}
LITHIFIED_WORDS = ("stone", "chalk", "chert", "porcellanite", "diatomite", "tuff", "conglomerate",
                   "wackestone", "packstone", "grainstone", "rudstone", "floatstone", "boundstone",
                   "calcarenite", "calcilutite", "rock", "marble", "schist", "granofels",
                   "cataclasite", "metaclaystone")

# --- physical properties per lithology family ---------------------------------------------

# group: grain density, porosity %, porosity sd % (groups with no MAD row)
GROUP_MAD = {
    "Ultramafic": (2.75, 12.0, 7.0), "Intermediate/Felsic Igneous": (2.72, 8.0, 5.0),
    "Metamorphic": (2.78, 5.0, 4.0), "Evaporite": (2.84, 18.0, 8.0), "Diamict": (2.72, 40.0, 8.0),
    "Other": (2.75, 30.0, 10.0), "Volcaniclastic": (2.70, 35.0, 10.0),
}
NAME_MAD = {"coal": (1.45, 25.0, 8.0), "gypsum rock": (2.32, 8.0, 4.0),
            "anhydrite rock": (2.95, 4.0, 3.0), "lava": (2.88, 12.0, 6.0),
            "ooze": (2.70, 64.0, 8.0), "ash": (2.62, 48.0, 10.0), "tephra": (2.62, 46.0, 10.0),
            "lapilli ash": (2.64, 45.0, 10.0),
            "lapilli tephra": (2.64, 44.0, 10.0), "debris flow": (2.72, 38.0, 8.0)}
# compaction length (m) of porosity by group; igneous rocks do not compact
COMPACTION_M = {"Carbonate": 1800.0, "Biogenic Silica": 2000.0, "Clay/Mud": 1100.0, "Silt": 1400.0,
                "Sand": 2200.0, "Diamict": 1600.0, "Volcaniclastic": 1500.0,
                "Conglomerate/Breccia": 2500.0, "Evaporite": 4000.0, "Other": 2000.0}

# group: MS median (instr. units), MS log sd, diamagnetic offset, NGR median (cps), NGR log sd
GROUP_MS_NGR = {
    "Carbonate": (2.4, 0.75, -1.4, 13.5, 0.5),
    "Biogenic Silica": (5.0, 0.9, -1.0, 16.0, 0.45),
    "Clay/Mud": (33.0, 1.1, 0.0, 46.0, 0.3),
    "Silt": (35.0, 1.0, 0.0, 34.0, 0.3),
    "Sand": (45.0, 1.0, 0.0, 25.0, 0.35),
    "Conglomerate/Breccia": (150.0, 1.1, 0.0, 18.0, 0.5),
    "Diamict": (60.0, 0.8, 0.0, 30.0, 0.3),
    "Volcaniclastic": (280.0, 1.0, 0.0, 14.0, 0.5),
    "Mafic Igneous": (1300.0, 0.9, 0.0, 1.5, 0.6),
    "Ultramafic": (1800.0, 1.0, 0.0, 0.7, 0.7),
    "Intermediate/Felsic Igneous": (400.0, 1.1, 0.0, 10.0, 0.6),
    "Metamorphic": (80.0, 1.1, 0.0, 22.0, 0.5),
    "Evaporite": (0.5, 0.7, -1.3, 3.0, 0.5),
    "Other": (20.0, 1.0, 0.0, 15.0, 0.5),
}
PLATFORM = ("wackestone", "packstone", "grainstone", "rudstone", "floatstone", "boundstone",
            "limestone", "calcarenite", "calcilutite", "dolostone")
# first matching keyword wins: MS median, MS log sd, diamagnetic offset, NGR median, NGR log sd
NAME_MS_NGR = [
    (("serpentin",), (2600.0, 0.9, 0.0, 0.8, 0.7)),
    (("gabbro",), (700.0, 1.1, 0.0, 0.6, 0.6)),
    (("basalt", "boninite", "diabase", "dolerite", "lava", "volcanic rock"),
     (1200.0, 0.8, 0.0, 1.4, 0.6)),
    (("hyaloclast", "metabasite"), (700.0, 1.0, 0.0, 2.0, 0.6)),
    (("dacite", "rhyo", "felsic"), (150.0, 1.0, 0.0, 20.0, 0.5)),
    (("marl",), (9.0, 0.8, -0.8, 18.0, 0.35)),
    (("nannofossil clay", "nannofossil mud", "foraminifera clay", "foraminifera mud"),
     (13.0, 0.9, -0.5, 24.0, 0.35)),
    (("radiolarian mud",), (15.0, 0.9, -0.3, 28.0, 0.35)),
    (("diatom silt",), (12.0, 0.9, -0.3, 22.0, 0.35)),
    (PLATFORM, (1.85, 0.8, -1.2, 11.5, 0.5)),
    (("coal",), (1.0, 0.8, -0.5, 12.0, 0.5)),
    (("gypsum", "anhydrite"), (0.3, 0.7, -1.3, 2.0, 0.5)),
    (("ooze",), (2.4, 0.75, -1.4, 13.5, 0.5)),
]

# relative R, G, B of each group (R > G > B: slightly reddish, like real cores)
GROUP_TINT = {
    "Carbonate": (1.0, 0.975, 0.87), "Biogenic Silica": (1.0, 0.975, 0.83),
    "Clay/Mud": (1.0, 0.96, 0.885), "Silt": (1.0, 0.965, 0.85), "Sand": (1.0, 0.965, 0.85),
    "Conglomerate/Breccia": (1.0, 0.97, 0.87), "Diamict": (1.0, 0.97, 0.87),
    "Volcaniclastic": (1.0, 0.98, 0.9), "Mafic Igneous": (1.0, 0.99, 0.93),
    "Ultramafic": (0.97, 1.0, 0.92), "Intermediate/Felsic Igneous": (1.0, 0.975, 0.91),
    "Metamorphic": (1.0, 0.985, 0.93), "Evaporite": (1.0, 0.985, 0.93), "Other": (1.0, 0.97, 0.88),
}
PLATFORM_TINT = (1.0, 0.96, 0.81)  # tan shallow-water carbonates
MUDSTONE_TINT = (1.0, 0.955, 0.83)
RGB_GAIN, RGB_GAMMA = 502.0, 2.6  # camera value = gain * (L*/100)**gamma

# median bed thickness (m) by group; rare lithologies get thinner beds
GROUP_BED_M = {
    "Carbonate": 2.5, "Biogenic Silica": 2.0, "Clay/Mud": 1.8, "Silt": 0.9, "Sand": 0.8,
    "Conglomerate/Breccia": 0.9, "Diamict": 1.5, "Volcaniclastic": 0.6, "Mafic Igneous": 2.5,
    "Ultramafic": 2.0, "Intermediate/Felsic Igneous": 1.0, "Metamorphic": 1.0, "Evaporite": 0.6,
    "Other": 0.6,
}
BED_SIGMA, MIN_BED_M, BED_PERSISTENCE = 0.6, 0.3, 0.55
MIX_MAX = 0.75  # a bed takes up to this fraction of another lithology's properties
# variation split: hole, bed and within-bed shares of each lithology's spread
HOLE_SD, BED_SD, WITHIN_SD = 0.6, 0.7, 0.4
# MAD porosity sd includes the depth trend modelled by compaction; L* rsd includes noise
POROSITY_SD_SHARE, LSTAR_SD_SHARE = 0.6, 0.95

PREFIXES = {
    "Carbonate": ["foraminifera-rich", "clayey", "foraminifera-bearing", "diatom-bearing",
                  "radiolarian-bearing", "clay-rich", "siliceous", "tuffaceous"],
    "Biogenic Silica": ["clayey", "nannofossil-rich", "radiolarian-rich", "diatom-rich",
                        "ash-bearing"],
    "Clay/Mud": ["silty", "nannofossil-rich", "diatom-bearing", "calcareous", "tuffaceous",
                 "foraminifera-bearing", "sandy", "biosilica-rich", "volcaniclastic"],
    "Silt": ["clayey", "calcareous", "volcaniclastic", "muddy", "glauconitic"],
    "Sand": ["calcareous", "volcaniclastic", "muddy", "glauconitic", "silty"],
    "Volcaniclastic": ["mafic", "vitric", "crystal", "lithic", "calcareous", "pumiceous"],
    "Mafic Igneous": ["aphyric", "plagioclase-phyric", "olivine-phyric", "sparsely phyric",
                      "moderately altered", "highly altered"],
    "Ultramafic": ["serpentinized", "highly serpentinized", "talc-altered"],
    "Conglomerate/Breccia": ["volcanic", "polymict", "monomict", "calcareous"],
}
SUFFIXES = {
    "Carbonate": ["with foraminifera", "with clay", "with ash", "with radiolarians", "with diatoms",
                  "with sponge spicules"],
    "Biogenic Silica": ["with clay", "with radiolarians", "with ash", "with sponge spicules",
                        "with nannofossils"],
    "Clay/Mud": ["with silt", "with sand", "with foraminifera", "with nannofossils", "with ash",
                 "with diatoms", "with dispersed clasts", "with biogenic carbonate"],
    "Silt": ["with clay", "with shell fragments", "with lithic clasts", "with plant remains"],
    "Sand": ["with clay", "with shell fragments", "with lithic clasts", "with mica"],
    "Volcaniclastic": ["with pumice", "with scoria", "with lithic clasts", "with clay"],
    "Mafic Igneous": ["with veins", "with alteration halos", "with glass"],
    "Diamict": ["with dispersed clasts", "with common clasts", "with abundant clasts"],
}
PREFIX_P, SUFFIX_P = 0.35, 0.25


@dataclass(frozen=True)
class _InstrumentSampling:
    interval_cm: float
    skip_top_cm: float
    skip_bottom_cm: float
    half: str                 # A/W: split archive half or whole round
    section_gap_p: float      # a section left unmeasured
    core_gap_p: float         # a whole core left unmeasured


SAMPLING = {
    "GRA": _InstrumentSampling(2.5, 2.5, 2.5, "W", 0.01, 0.0),
    "MS": _InstrumentSampling(2.5, 2.5, 2.5, "W", 0.015, 0.0),
    "NGR": _InstrumentSampling(10.0, 10.0, 10.0, "W", 0.03, 0.05),
    "RGB": _InstrumentSampling(2.0, 1.0, 1.0, "A", 0.03, 0.06),
}
RGB_CORE_GAP_HARD = 0.45  # RCB cores in oceanic crust often have no line-scan image
SECTION_M = 1.5
FLUID_DENSITY = 1.024

# --- lithology vocabulary ---------------------------------------------------------------

# principals that are neither soft nor lithified whatever their words say
NEUTRAL_NAMES = ("breccia", "debris flow", "coal", "lava", "volcanic rock")
# Simplified Lithology: first of these words in the principal wins
SIMPLIFIED_WORDS = ("ooze", "chalk", "marl", "diamict", "claystone", "mudstone", "siltstone",
                    "sandstone", "tuff", "conglomerate", "breccia")
# group: (Lithology Type, default Lithology Subtype)
GROUP_KIND = {
    "Mafic Igneous": ("igneous", "extrusive"), "Ultramafic": ("igneous", "intrusive"),
    "Intermediate/Felsic Igneous": ("igneous", "intrusive"),
    "Volcaniclastic": ("igneous", "extrusive"),
    "Metamorphic": ("metamorphic", "metamorphic"), "Evaporite": ("sedimentary", "evaporite"),
    "Carbonate": ("sedimentary", "biogenic"), "Biogenic Silica": ("sedimentary", "biogenic"),
}
DEFAULT_KIND = ("sedimentary", "clastic")
