"""Pieces several variants share: class targets, class weights, classifier heads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lithovae.checks import MAX_WIDTH, below_one, between, each
from lithovae.errors import ConfigError
from lithovae.models.base import DataSpec
from lithovae.models.blocks import mlp
from lithovae.models.losses import class_loss

# target name -> (batch key, DataSpec attribute with the class count, DataSpec attribute with counts)
TARGETS = {
    "principal": ("y", "n_classes", "class_counts"),
    "group": ("y_group", "n_groups", "group_counts"),
}
CLASS_WEIGHTINGS = ("none", "inverse_frequency", "balanced")


@dataclass(frozen=True)
class ClassTarget:
    name: str
    batch_key: str
    n_classes: int
    counts: tuple[int, ...]  # training-set count per class code; may be empty


def resolve_target(data: DataSpec, target: str) -> ClassTarget:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    batch_key, n_attr, counts_attr = TARGETS[target]
    if target == "group" and data.n_groups == 0:  # own data without groups: nothing to invent them from

        raise ConfigError("data.groups: this model predicts lithology groups (model.target=group) but the data "
                          "have none; give data.groups (a mapping label -> group, or a file) or a data.group "
                          "column, or use model.target=principal")
    return ClassTarget(target, batch_key, int(getattr(data, n_attr)),
                       tuple(int(c) for c in getattr(data, counts_attr)))


class ClassTargetMixin:
    """``class_target`` reads the batch key of ``self.target`` (principal or group).

    Also the optional class weighting: :meth:`register_class_weight` then
    :meth:`weighted_class_loss`.
    """

    target: ClassTarget

    def class_target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch[self.target.batch_key]

    def class_target_name(self) -> str:
        return self.target.name

    def class_counts(self) -> tuple[int, ...]:
        return self.target.counts

    def register_class_weight(self, scheme: str) -> None:
        """Buffer ``class_weight``: the per-class loss weights of ``scheme`` (see :func:`class_weights`)."""
        self.register_buffer("class_weight", class_weights(self.target, scheme))

    def weighted_class_loss(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """Cross-entropy on the target's labeled rows, weighted by ``class_weight`` (alpha 1)."""
        return class_loss(logits, self.class_target(batch), 1.0, self.class_weight)


class ClassifierHeadMixin(ClassTargetMixin):
    """A classifier MLP ``self.classifier`` from the latent to the target's class logits."""

    # the head's options, checked by the config and each model's constructor (lithovae.checks)
    OPTIONS = {"classifier_hidden": each(between(1, MAX_WIDTH)), "classifier_dropout": below_one}

    classifier: nn.Sequential

    def add_classifier(self, data: DataSpec, target: str, hidden: Sequence[int],
                       dropout: float) -> None:
        """Resolve ``self.target`` and build ``self.classifier`` on ``self.latent_dim`` inputs."""
        self.target = resolve_target(data, target)
        self.classifier = classifier_head(self.latent_dim, hidden, self.target.n_classes, dropout)

    def classify(self, z: Tensor) -> Tensor:
        return self.classifier(z)


def classifier_head(in_dim: int, hidden: Sequence[int], n_classes: int,
                    dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout per hidden layer, then class logits (no BatchNorm, as in the seeds)."""
    return mlp(in_dim, list(hidden), n_classes, batchnorm=False, dropout=dropout)


def class_weights(target: ClassTarget, scheme: str) -> Tensor | None:
    """Per-class loss weights [n_classes] from the training-set counts, or None for ``"none"``.

    - ``"inverse_frequency"``: ``1 / (count + 1)`` (VAE classifier v1.0), unnormalised.
    - ``"balanced"``: ``1 / count`` normalised to mean 1 over classes present in
      training; classes with count 0 get weight 0.
    """
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got {scheme!r}")
    if scheme == "none":
        return None
    counts = target.counts
    if len(counts) != target.n_classes:
        raise ValueError(
            f"class weighting {scheme!r} needs the training count of each of the "
            f"{target.n_classes} {target.name} classes in the DataSpec; got {len(counts)} counts")
    counts_t = torch.tensor(counts, dtype=torch.float64)
    if scheme == "inverse_frequency":
        return (1.0 / (counts_t + 1.0)).float()
    present = counts_t > 0
    if not bool(present.any()):
        raise ValueError(f"no {target.name} class has a training count > 0")
    weights = torch.where(present, 1.0 / counts_t.clamp(min=1.0), torch.zeros_like(counts_t))
    return (weights / weights[present].mean()).float()


def latents_as_numpy(latents) -> np.ndarray:
    """What ``embed_train()`` returned (tensor or array, [N, D]) as a float64 array for sklearn."""
    if isinstance(latents, Tensor):
        latents = latents.detach().cpu().numpy()
    return np.asarray(latents, dtype=np.float64)
