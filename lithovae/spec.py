"""What a model needs to know about its data: built by the data module, read by the models."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data it is built for."""

    n_features: int
    feature_names: tuple[str, ...]
    n_classes: int  # principal lithologies
    n_groups: int  # expert groups
    class_counts: tuple[int, ...] = ()  # training-set count per principal code
    group_counts: tuple[int, ...] = ()  # training-set count per group code
    # rows of the training split, labeled or not (estimators over the aggregate posterior q(z)
    # need it); 0: not recorded (a predictor bundle written before it was), models that need it
    # say so when they train
    n_train: int = 0
