"""Borehole-level splits: train/val/test and entropy-balanced K-fold.

No borehole is ever in two parts; :func:`check_disjoint` enforces it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.data.errors import BuildError
from lithovae.errors import RunDirError


def check_disjoint(parts: dict[str, np.ndarray]) -> None:
    """Raise if any borehole id appears in two parts."""
    seen: dict = {}
    for name, ids in parts.items():
        for b in np.unique(ids):
            if b in seen:
                raise ValueError(f"borehole {b!r} is in both '{seen[b]}' and '{name}' splits")
            seen[b] = name


def _shuffled_ids(boreholes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The unique borehole ids, sorted, and a seeded permutation of them."""
    ids = np.array(sorted(pd.unique(np.asarray(boreholes))), dtype=object)
    return ids, np.random.default_rng(seed).permutation(len(ids))


def two_way_split(boreholes, second_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded borehole split into (first, second), the second holding ``second_share`` (>= 1 hole)."""
    ids, order = _shuffled_ids(boreholes, seed)
    n_second = max(1, int(round(second_share * len(ids))))
    parts = {"first": ids[order[n_second:]], "second": ids[order[:n_second]]}
    check_disjoint(parts)
    return parts["first"], parts["second"]


def borehole_split(boreholes, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, np.ndarray]:
    """Shuffle the unique boreholes (seeded) and cut them 70/15/15 by count."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise BuildError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    ids, order = _shuffled_ids(boreholes, seed)
    if len(ids) < 3:
        raise BuildError(f"need at least 3 boreholes for a train/val/test split, got {len(ids)}")
    n_test = max(1, int(round(fractions[2] * len(ids))))
    n_val = max(1, int(round(fractions[1] * len(ids))))
    parts = {"test": ids[order[:n_test]], "val": ids[order[n_test:n_test + n_val]],
             "train": ids[order[n_test + n_val:]]}
    check_disjoint(parts)
    return parts


def count_entropy(counts) -> float:
    """Shannon entropy (nats) of positive class counts."""
    counts = np.asarray(counts, dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def label_entropy(labels) -> float:
    """Shannon entropy (nats) of a label distribution; the study's diversity measure."""
    counts = pd.Series(labels).value_counts().to_numpy(dtype=float)
    return count_entropy(counts) if counts.sum() > 0 else 0.0


def entropy_balanced_folds(boreholes, labels, n_folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """The study's greedy allocation: boreholes, largest first (seeded tie order),
    each go to the fold whose label entropy after adding it is closest to the
    whole set's entropy, among the folds with the fewest samples so far (within
    a 10% slack of the target size, so fold sizes stay similar).
    Returns the test boreholes of each fold.
    """
    frame = pd.DataFrame({"bh": np.asarray(boreholes), "y": np.asarray(labels)})
    ids = frame["bh"].unique()
    if len(ids) < n_folds:
        raise BuildError(f"need at least {n_folds} boreholes for {n_folds} folds, got {len(ids)}")
    target_entropy = label_entropy(frame["y"])
    per_bh = {b: g["y"].value_counts() for b, g in frame.groupby("bh", sort=True)}
    sizes = pd.Series({b: int(c.sum()) for b, c in per_bh.items()})
    rng = np.random.default_rng(seed)
    order = sizes.index[np.lexsort((rng.random(len(sizes)), -sizes.to_numpy()))]
    target_size = len(frame) / n_folds
    fold_counts = [pd.Series(dtype=float) for _ in range(n_folds)]
    fold_sizes = np.zeros(n_folds)
    members: list[list] = [[] for _ in range(n_folds)]
    for b in order:
        smallest = fold_sizes.min()
        candidates = [k for k in range(n_folds) if fold_sizes[k] <= smallest + 0.1 * target_size]
        best, best_gap = candidates[0], np.inf
        for k in candidates:
            merged = fold_counts[k].add(per_bh[b], fill_value=0)
            gap = abs(count_entropy(merged.to_numpy()) - target_entropy)
            if gap < best_gap:
                best, best_gap = k, gap
        fold_counts[best] = fold_counts[best].add(per_bh[b], fill_value=0)
        fold_sizes[best] += sizes[b]
        members[best].append(b)
    folds = [np.array(m, dtype=object) for m in members]
    check_disjoint({f"fold{k}": f for k, f in enumerate(folds)})
    return folds


# datamodule.split: the seeded random borehole split, or seed 002's entropy-balanced one
SPLIT_KINDS = ("random_boreholes", "entropy_balanced")


def _count_entropies(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a count matrix (0 for an empty row)."""
    total = counts.sum(axis=-1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def entropy_balanced_split(boreholes, labels, fractions=(0.7, 0.15, 0.15), seed: int = 0,
                           slack: float = 0.1) -> dict[str, np.ndarray]:
    """Seed 002's entropy-balanced borehole split ("greedy allocation algorithm to maintain
    similar lithology distributions"; 002 gives no more detail). Greedy, best first: the test
    part, then the validation part, each takes in turn the free borehole that brings its label
    entropy closest to the whole set's, among those that keep it within ``1 + slack`` of its
    target (``fractions`` of the bins), until it holds ``1 - slack`` of the target or none
    fits (an empty part takes the smallest free borehole); training keeps the rest. Ties go by
    a seeded order. Each part gets at least one borehole.

    On a few boreholes of few lithologies each the balance is limited by what whole boreholes
    allow; on the study's 296 boreholes every part's entropy lands within a few hundredths of
    a nat of the whole set's.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise BuildError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    bh_codes, ids = pd.factorize(np.asarray(boreholes), sort=True)
    ids = np.array(ids, dtype=object)
    if len(ids) < 3:
        raise BuildError(f"need at least 3 boreholes for a train/val/test split, got {len(ids)}")
    y_codes, classes = pd.factorize(np.asarray(labels))
    counts = np.bincount(bh_codes * len(classes) + y_codes,
                         minlength=len(ids) * len(classes)).reshape(len(ids), len(classes)).astype(float)
    sizes = counts.sum(axis=1)
    whole = float(_count_entropies(counts.sum(axis=0)))
    tie_order = np.random.default_rng(seed).permutation(len(ids))
    free = np.ones(len(ids), dtype=bool)
    parts: dict[str, np.ndarray] = {}
    for name, share, still_to_fill in (("test", fractions[2], 1), ("val", fractions[1], 0)):
        target = share * sizes.sum()
        held, size, members = np.zeros(counts.shape[1]), 0.0, []
        while not members or size < (1 - slack) * target:
            if free.sum() <= 1 + still_to_fill:  # leave a borehole for each part after this one
                break
            fits = np.flatnonzero(free & (size + sizes <= (1 + slack) * target))
            if not len(fits):
                if members:
                    break
                free_ids = np.flatnonzero(free)
                fits = free_ids[[np.argmin(sizes[free_ids])]]
            gaps = np.abs(_count_entropies(held + counts[fits]) - whole)
            pick = fits[np.lexsort((tie_order[fits], gaps))[0]]
            free[pick] = False
            held, size = held + counts[pick], size + sizes[pick]
            members.append(pick)
        parts[name] = ids[members]
    parts = {"train": ids[free], "val": parts["val"], "test": parts["test"]}
    check_disjoint(parts)
    return parts


SAVED_PARTS = ("train", "val", "test")


def saved_assignment(path: Path) -> dict[str, list[str]] | None:
    """A run's own borehole split from its ``split.json`` (``{"boreholes": {train|val|test:
    [ids]}, ...}``), or None where the run has none (runs saved before they kept it). The file
    is read back, so untrusted: a damaged one, or one of another shape, is a ``RunDirError``
    naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        boreholes = json.loads(path.read_text(encoding="utf-8"))["boreholes"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    except (KeyError, TypeError):
        raise RunDirError(f"{path}: no 'boreholes' key (expected {{\"boreholes\": "
                          "{\"train\": [ids], \"val\": [ids], \"test\": [ids]}}") from None
    shaped = isinstance(boreholes, dict) and set(boreholes) == set(SAVED_PARTS) and all(
        isinstance(ids, list) and all(isinstance(b, str) for b in ids) for ids in boreholes.values())
    if not shaped:
        raise RunDirError(f"{path}: 'boreholes' must map train, val and test to lists of borehole ids")
    try:
        check_disjoint({k: np.array(v, dtype=object) for k, v in boreholes.items()})
    except ValueError as exc:
        raise RunDirError(f"{path}: {exc}") from None
    return boreholes
