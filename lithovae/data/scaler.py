"""DistributionAwareScaler: the study's per-feature transforms, then standardisation.

MS and NGR get a signed log (they are log-normal with negatives), RGB log1p
(bounded, right-skewed), GRA nothing; then each column is standardised with
statistics of the training boreholes only. NaN (missing) stays NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lithovae.data.errors import BuildError
from lithovae.files import atomic_write

TRANSFORMS = {
    "none": (lambda x: x, lambda y: y),
    "signed_log": (lambda x: np.sign(x) * np.log1p(np.abs(x)),
                   lambda y: np.sign(y) * np.expm1(np.abs(y))),
    "log1p": (np.log1p, np.expm1),
}
# the study's choice per LILY feature (seed 001); other features default to "none"
STUDY_TRANSFORMS = {"GRA": "none", "MS": "signed_log", "NGR": "signed_log",
                    "R": "log1p", "G": "log1p", "B": "log1p"}


def checked_transforms(transforms: dict[str, str] | None) -> dict[str, str]:
    """The ``data.transforms`` mapping (feature -> transform), every transform known."""
    transforms = dict(transforms or {})
    for feature, name in transforms.items():
        if name not in TRANSFORMS:
            raise BuildError(f"data.transforms.{feature}: transform {name!r} unknown; "
                             f"choose from {sorted(TRANSFORMS)}")
    return transforms


class DistributionAwareScaler:
    def __init__(self, feature_names: list[str], transforms: dict[str, str] | None = None,
                 standardize: bool = True):
        transforms = checked_transforms(STUDY_TRANSFORMS if transforms is None else transforms)
        self.feature_names = list(feature_names)
        self.transforms = {f: transforms.get(f, "none") for f in self.feature_names}
        self.standardize = standardize
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def _forward(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float64, copy=True)
        for j, f in enumerate(self.feature_names):
            out[:, j] = TRANSFORMS[self.transforms[f]][0](out[:, j])
        return out

    def fit(self, x: np.ndarray) -> "DistributionAwareScaler":
        t = self._forward(x)
        if self.standardize:
            self.mean_ = np.nanmean(t, axis=0)
            std = np.nanstd(t, axis=0)
            self.scale_ = np.where(std > 0, std, 1.0)  # a constant column stays centred, not inf
        else:
            self.mean_, self.scale_ = np.zeros(t.shape[1]), np.ones(t.shape[1])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError("DistributionAwareScaler.transform called before fit")
        return ((self._forward(x) - self.mean_) / self.scale_).astype(np.float32)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)

    def inverse_transform(self, y: np.ndarray) -> np.ndarray:
        t = np.asarray(y, dtype=np.float64) * self.scale_ + self.mean_
        for j, f in enumerate(self.feature_names):
            t[:, j] = TRANSFORMS[self.transforms[f]][1](t[:, j])
        return t

    # saved beside the model as JSON, so it is readable and versionable
    def state_dict(self) -> dict:
        return {"feature_names": self.feature_names, "transforms": self.transforms,
                "standardize": self.standardize,
                "mean": None if self.mean_ is None else self.mean_.tolist(),
                "scale": None if self.scale_ is None else self.scale_.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "DistributionAwareScaler":
        obj = cls(state["feature_names"], state["transforms"], state["standardize"])
        if state["mean"] is not None:
            obj.mean_, obj.scale_ = np.array(state["mean"]), np.array(state["scale"])
        return obj

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.state_dict(), indent=1)
        atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "DistributionAwareScaler":
        return cls.from_state_dict(json.loads(Path(path).read_text()))
