"""In-memory data module: tensors per split, whole batches by index.

No per-sample Dataset or collate: a batch sampler yields index tensors and one
fancy-index per tensor builds the batch (the models are tiny, so per-sample
loading would dominate the step time).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lithovae.checks import (MAX_CONTEXT, at_least, between, check_options, half_open_unit_interval, one_of,
                             optional, split_fractions)
from lithovae.data import reference
from lithovae.data.errors import BuildError
from lithovae.data.features import expand_features
from lithovae.data.labels import LabelEncoding
from lithovae.data.scaler import DistributionAwareScaler
from lithovae.data.schema import DATASET_KEY_COLUMNS
from lithovae.data.sources import missing_ids
from lithovae.data.splits import (SPLIT_KINDS, borehole_split, check_disjoint, entropy_balanced_folds,
                                   entropy_balanced_split, label_entropy, two_way_split)
from lithovae.spec import DataSpec

# not at the top: lithovae.data.features is imported inside the function that expands context
# features: it loads scikit-learn

SPLITS = ("train", "val", "test")
# datamodule.label_unit: which rows keep their labels together when label_fraction < 1
LABEL_UNITS = ("borehole", "bin")
_LABEL_STREAM = 0x1ABE1  # the labeled-subset draw has its own random stream, apart from the split's


def fold_of_n_folds(prefix: str, values: dict) -> None:
    """``fold`` in 0..n_folds-1 when both are set (a config may leave ``fold`` to its sweep)."""
    n_folds, fold = values["n_folds"], values["fold"]
    if n_folds is not None and fold is not None and not fold < n_folds:
        raise ValueError(f"{prefix}fold: must be < {prefix}n_folds, got n_folds={n_folds}, fold={fold!r}")


class TensorBatchDataset(torch.utils.data.Dataset):
    """A dict of equal-length tensors indexed by a whole batch of rows at once."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(rows)  # an index tensor from ShuffledBatchSampler, or a list
        return {k: v[rows] for k, v in self.tensors.items()}


class ShuffledBatchSampler(torch.utils.data.Sampler):
    """Yields index tensors of whole batches from one seeded permutation per epoch.

    Under DDP (``world_size`` > 1) every rank draws the same permutation (same seed),
    cut to a multiple of the world size, and takes every ``world_size``-th row from
    ``rank``: the shards are disjoint and have the same number of batches.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None = None,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.generator, self.shuffle = generator, shuffle
        self.rank, self.world_size = rank, world_size
        self.n_total = n
        self.n = n // world_size if world_size > 1 else n
        self.batch_size = batch_size

    def _drops_single(self) -> bool:
        # a final training batch of one row would break BatchNorm; that row trains next epoch
        return self.shuffle and self.n > 1 and self.n % self.batch_size == 1

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size - int(self._drops_single())

    def __iter__(self):
        order = torch.randperm(self.n_total, generator=self.generator) if self.shuffle \
            else torch.arange(self.n_total)
        if self.world_size > 1:
            order = order[:self.n * self.world_size][self.rank::self.world_size]
        batches = order.split(self.batch_size)
        yield from batches[:-1] if self._drops_single() else batches


class LithoDataModule(pl.LightningDataModule):
    """Loads the binned Parquet, splits by borehole, scales, serves batches.

    ``fold``/``n_folds`` select an entropy-balanced CV fold as the test set
    (validation is then carved from the remaining boreholes); otherwise ``split`` chooses the
    train/val/test split by ``fractions``: ``random_boreholes`` (seeded shuffle) or
    ``entropy_balanced`` (seed 002's greedy split, each part's lithology entropy near the whole
    set's).

    ``label_fraction`` < 1 keeps the labels (``y``, ``y_group``) of only that share of the
    training bins, whole boreholes or single bins (``label_unit``), drawn by ``seed``; the other
    training rows get -1, as unlabeled rows have. Validation and test keep every label (they are
    scored). The draws are nested: a smaller fraction's labeled rows are a subset of a larger's.

    The options of the ``datamodule`` config and ``seed`` are required keywords: their
    defaults are written once, in ``lithovae/conf/train.yaml``. ``transforms`` (from the
    data source), ``scaler`` and ``encoding`` (a trained run's) are None when not used.

    ``assignment`` (a trained run's ``split.json`` boreholes, ``{train|val|test: [ids]}``)
    fixes each borehole's part instead of computing the split, so a run is scored on its own
    parts whatever rows were added or removed since: the data's boreholes in none of them
    form a fourth part, ``unseen``; the parts' boreholes not in the data are listed in
    ``missing_boreholes``; and a part may be empty (the caller checks the one it scores).
    """

    # the options' ranges (the ``datamodule`` config's, checked there and here: lithovae.checks)
    OPTIONS = {
        "batch_size": at_least(2),  # BatchNorm needs two rows
        "eval_batch_size": at_least(1),
        "steps_per_batch": at_least(1),
        "fractions": split_fractions,
        "context": between(0, MAX_CONTEXT),
        "n_folds": optional(at_least(2)),
        "fold": optional(at_least(0)),
        ("n_folds", "fold"): fold_of_n_folds,
        "split": one_of(*SPLIT_KINDS),
        "label_fraction": half_open_unit_interval,
        "label_unit": one_of(*LABEL_UNITS),
    }

    def __init__(self, dataset_path: str | Path, *, batch_size: int,
                 fractions: tuple[float, float, float], seed: int,
                 n_folds: int | None, fold: int | None,
                 standardize: bool, context: int, engineered: bool, impute_rgb: bool,
                 eval_batch_size: int, steps_per_batch: int, keep_on_device: bool,
                 split: str, label_fraction: float, label_unit: str,
                 transforms: dict[str, str] | None = None,
                 scaler: DistributionAwareScaler | None = None, encoding: LabelEncoding | None = None,
                 assignment: dict[str, list[str]] | None = None):
        check_options(type(self), locals(), "datamodule.", BuildError)
        if n_folds is not None and fold is None:  # built for one fold: the sweep must have chosen it
            raise BuildError(f"datamodule.fold: must be set when datamodule.n_folds is, got n_folds={n_folds}, "
                             f"fold={fold!r}")
        super().__init__()
        self.dataset_path = Path(dataset_path)
        self.batch_size = batch_size
        # the train loader hands the plan this many mini-batches at once (one Lightning step),
        # so Lightning's fixed per-batch cost is paid once per chunk, not per optimizer step
        self.steps_per_batch = steps_per_batch
        self.keep_on_device = keep_on_device  # on a GPU, hold the split tensors in device memory
        self.eval_batch_size = eval_batch_size
        self.fractions = tuple(fractions)
        self.seed = seed
        self.n_folds, self.fold = n_folds, fold
        self.split, self.label_fraction, self.label_unit = split, float(label_fraction), label_unit
        self._fit_started: float | None = None
        self.transforms = transforms
        self.standardize = standardize
        self.context, self.engineered, self.impute_rgb = context, engineered, impute_rgb
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        self.frames: dict[str, pd.DataFrame] = {}
        self.stats: dict = {}
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        # a trained run's scaler and label codes, to evaluate it on other data unchanged
        self.fitted_scaler, self.fixed_encoding = scaler, encoding
        if assignment is not None:
            unknown = sorted(set(assignment) - set(SPLITS))
            if unknown:
                raise BuildError(f"split assignment: unknown part {unknown[0]!r}, expected {list(SPLITS)}")
            assignment = {s: [str(b) for b in assignment.get(s, [])] for s in SPLITS}
        self.assignment = assignment
        self.missing_boreholes: dict[str, list[str]] = {}

    # -- preparing ---------------------------------------------------------------------------
    def _assigned_boreholes(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The fixed ``assignment``'s parts as found in ``frame``, and ``unseen``: the rest."""
        present = set(frame["borehole_id"].astype(str).unique())
        parts = {s: np.array(sorted(set(ids) & present), dtype=object) for s, ids in self.assignment.items()}
        try:
            check_disjoint(parts)
        except ValueError as exc:
            raise BuildError(f"split assignment: {exc}") from None
        assigned = set().union(*map(set, self.assignment.values()))
        parts["unseen"] = np.array(sorted(present - assigned), dtype=object)
        self.missing_boreholes = {s: sorted(set(ids) - present) for s, ids in self.assignment.items()}
        return parts

    def _split_boreholes(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if self.assignment is not None:
            return self._assigned_boreholes(frame)
        if self.n_folds:
            labels = frame["principal"].fillna("<unlabeled>")
            folds = entropy_balanced_folds(frame["borehole_id"], labels, self.n_folds, self.seed)
            test = folds[self.fold]
            rest = frame[~frame["borehole_id"].isin(test)]["borehole_id"]
            val_share = self.fractions[1] / (self.fractions[0] + self.fractions[1])
            train, val = two_way_split(rest, val_share, self.seed)
            parts = {"train": train, "val": val, "test": test}
            check_disjoint(parts)
            return parts
        if self.split == "entropy_balanced":
            labels = frame["principal"].fillna("<unlabeled>")
            return entropy_balanced_split(frame["borehole_id"], labels, self.fractions, self.seed)
        return borehole_split(frame["borehole_id"], self.fractions, self.seed)

    def _labeled_train_rows(self, train_boreholes: pd.Series) -> np.ndarray:
        """Which training rows keep their labels (bool, in row order): all for a fraction of 1;
        else the first bins, or the first whole boreholes, of one seeded permutation, as many
        as bring the labeled share of the training bins closest to ``label_fraction`` (at
        least one bin or borehole)."""
        n = len(train_boreholes)
        keep = np.ones(n, dtype=bool)
        if self.label_fraction >= 1 or n == 0:
            return keep
        rng = np.random.default_rng([self.seed, _LABEL_STREAM])
        target = self.label_fraction * n
        if self.label_unit == "bin":
            keep[:] = False
            keep[rng.permutation(n)[:max(1, int(round(target)))]] = True
            return keep
        ids = np.array(sorted(pd.unique(train_boreholes.astype(str))), dtype=object)
        ids = ids[rng.permutation(len(ids))]
        sizes = train_boreholes.astype(str).value_counts().reindex(ids).to_numpy()
        n_labeled = int(np.argmin(np.abs(np.cumsum(sizes) - target))) + 1
        return train_boreholes.astype(str).isin(ids[:n_labeled]).to_numpy()

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            self._fit_started = time.perf_counter()
        if self.tensors:
            return
        frame = pd.read_parquet(self.dataset_path)
        if frame.empty:
            raise BuildError(f"{self.dataset_path}: dataset has no rows")
        no_id = missing_ids(frame["borehole_id"])
        if no_id.any():  # such rows belong to no part of the split (the sources drop and count them)
            raise BuildError(f"{self.dataset_path}: {int(no_id.sum())} of {len(frame)} rows have no "
                             "borehole_id; rebuild the dataset from its source")
        base_features = [c for c in frame.columns if c not in DATASET_KEY_COLUMNS]
        values, names, transforms = expand_features(frame, base_features, self.context,
                                                    self.engineered, self.transforms)
        own = _own_vocabulary(self.dataset_path)
        if self.fixed_encoding is not None:
            self.encoding = self.fixed_encoding
        elif own:
            self.encoding = LabelEncoding.for_own_data(frame["principal"], frame["lithology_group"])
        else:
            self.encoding = LabelEncoding.for_labels(frame["principal"])
        # lithology -> group, for the hierarchy check: LILY's expert hierarchy on LILY data, the
        # groups the data give on own data (each label's most frequent group), none without
        self.hierarchy = _data_hierarchy(frame) if own else reference.lithology_groups()
        if not self.encoding.groups:
            print(f"[lithovae.data] {self.dataset_path.name}: no lithology groups (set data.groups, a mapping "
                  "label -> group): group diagnostics skipped, group-target models unavailable")
        parts = self._split_boreholes(frame)
        self.split_boreholes = {k: sorted(map(str, v)) for k, v in parts.items()}
        masks = {k: frame["borehole_id"].isin(v).to_numpy() for k, v in parts.items()}
        if self.impute_rgb:
            from lithovae.data.features import impute_rgb

            values, self.stats["rgb_imputed"] = impute_rgb(values, names, masks["train"], self.seed)
        if self.fitted_scaler is not None:
            if self.fitted_scaler.feature_names != names:
                raise BuildError(f"{self.dataset_path}: features {names} differ from the trained "
                                 f"scaler's {self.fitted_scaler.feature_names}")
            self.scaler = self.fitted_scaler
        else:
            self.scaler = DistributionAwareScaler(names, transforms, self.standardize)
            self.scaler.fit(values[masks["train"]])
        scaled = self.scaler.transform(values)
        observed = ~np.isnan(scaled)
        scaled = np.nan_to_num(scaled, nan=0.0)  # unobserved entries are masked, never used as data
        y = self.encoding.encode(frame["principal"], self.encoding.classes)
        y_group = self.encoding.encode(frame["lithology_group"], self.encoding.groups)
        # partial labels: training rows outside the labeled share lose both codes (train only)
        train_rows = np.flatnonzero(masks["train"])
        hidden = train_rows[~self._labeled_train_rows(frame["borehole_id"].iloc[train_rows])]
        if len(hidden):
            y, y_group = y.copy(), y_group.copy()  # the encoded codes may be read-only views
            y[hidden], y_group[hidden] = -1, -1
        bh_codes = pd.factorize(frame["borehole_id"], sort=True)[0]
        self.feature_names = names
        self.base_features = base_features  # the dataset's columns, before context/engineered
        for split in parts:  # train, val, test (and unseen, with a fixed assignment)
            m = masks[split]
            self.frames[split] = frame.loc[m, ["borehole_id", "depth_m", "principal",
                                               "lithology_group"]].reset_index(drop=True)
            self.tensors[split] = {
                "x": torch.from_numpy(scaled[m]),
                "observed": torch.from_numpy(observed[m]),
                "y": torch.from_numpy(y[m]),
                "y_group": torch.from_numpy(y_group[m]),
                "index": torch.arange(int(m.sum())),
                "borehole": torch.from_numpy(bh_codes[m].astype(np.int64)),
                "depth": torch.from_numpy(frame["depth_m"].to_numpy(np.float32)[m]),
            }
        self.stats.update({f"n_{s}": int(masks[s].sum()) for s in parts})
        self.stats.update({f"boreholes_{s}": len(parts[s]) for s in parts})
        # labeled training rows: what class counts, class weights and adaptive alpha see
        self.stats["n_train_labeled"] = int((self.tensors["train"]["y"] >= 0).sum())
        # label entropy of the whole dataset: the reference of the CV table's entropy differences
        self.stats["entropy_all"] = label_entropy(frame["principal"].dropna())
        if self.assignment is None and min(self.stats[f"n_{s}"] for s in SPLITS) == 0:
            raise BuildError(f"{self.dataset_path}: a split is empty ({self.stats}); "
                             "the dataset has too few boreholes")

    # Lightning calls setup("fit") when fitting starts and teardown("fit") when it ends: the
    # span is the run's training wall time (``stats["train_time"]``, seconds; a resumed run's
    # covers the resumed part only)
    def teardown(self, stage: str) -> None:
        if stage == "fit" and self._fit_started is not None:
            self.stats["train_time"] = time.perf_counter() - self._fit_started
            self._fit_started = None

    def __getstate__(self):
        # spawned DDP ranks rebuild the tensors in setup() (deterministic: same split and
        # scaler) rather than receiving them through pickling
        state = self.__dict__.copy()
        state["tensors"], state["frames"] = {}, {}
        return state

    # saved in checkpoints: a resumed run draws the same batch order as an uninterrupted one
    def state_dict(self) -> dict:
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "shuffle_generator" in state_dict:
            self.shuffle_generator.set_state(state_dict["shuffle_generator"])

    def data_spec(self):

        train = self.tensors["train"]
        return DataSpec(
            n_features=len(self.feature_names), feature_names=tuple(self.feature_names),
            n_classes=len(self.encoding.classes), n_groups=len(self.encoding.groups),
            class_counts=tuple(_counts(train["y"], len(self.encoding.classes))),
            group_counts=tuple(_counts(train["y_group"], len(self.encoding.groups))),
            n_train=len(train["x"]))

    # -- loaders -----------------------------------------------------------------------------
    def world(self) -> tuple[int, int]:
        """(rank, world size) of the trainer using this data module; (0, 1) without DDP."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def rank_batch_size(self) -> int:
        """Rows per optimizer step on each rank: the global batch split over the world."""
        return max(2, self.batch_size // self.world()[1])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        tensors = self.tensors[split]
        device = self.device_for_batches()
        if device is not None and tensors["x"].device != device:
            tensors = self.tensors[split] = {k: v.to(device) for k, v in tensors.items()}
        ds = TensorBatchDataset(tensors)
        rank, world = self.world() if shuffle else (0, 1)
        # one generator per data module: every epoch (and every new loader) draws a new order
        size = self.rank_batch_size() * self.steps_per_batch if shuffle else self.eval_batch_size
        sampler = ShuffledBatchSampler(len(ds), size, self.shuffle_generator, shuffle, rank, world)
        # batch_size=None: the sampler's index lists go straight to __getitem__, no collate
        return DataLoader(ds, sampler=sampler, batch_size=None)

    def device_for_batches(self):
        """The accelerator device when ``keep_on_device``: batches are then indexed there."""
        trainer = getattr(self, "trainer", None)
        if not self.keep_on_device or trainer is None:
            return None
        device = trainer.strategy.root_device
        return device if device.type != "cpu" else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _own_vocabulary(dataset_path: Path) -> bool:
    """Whether the dataset is own data (its manifest says ``label_vocabulary: data``, as the table
    and LAS sources write it): its classes are then its labels. LILY datasets, and datasets
    without a manifest, keep the study's 139 classes."""
    manifest = dataset_path.with_suffix(".manifest.json")
    try:
        return json.loads(manifest.read_text()).get("label_vocabulary") == "data"
    except (OSError, ValueError, AttributeError):
        return False


def _data_hierarchy(frame: pd.DataFrame) -> dict[str, str]:
    """Label -> group as the rows give it (the most frequent group of each label; ties: the
    alphabetically first); empty where no row has both."""
    pairs = frame[["principal", "lithology_group"]].dropna().astype(str)
    if pairs.empty:
        return {}
    counts = pairs.value_counts().rename("n").reset_index()
    counts = counts.sort_values(["principal", "n", "lithology_group"], ascending=[True, False, True], kind="stable")
    first = counts.drop_duplicates("principal")
    return dict(zip(first["principal"], first["lithology_group"]))


def _counts(codes: torch.Tensor, n: int) -> list[int]:
    labeled = codes[codes >= 0]
    return torch.bincount(labeled, minlength=n).tolist()

