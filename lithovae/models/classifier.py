"""Direct classifier baseline: an MLP from the scaled features to lithology classes.

No decoder and no prior: the "latent" used for clustering is the last hidden layer
(mu; logvar is zeros), and ``recon`` is NaN so reconstruction metrics report it as
missing. Trained with a class-balanced cross-entropy alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lithovae.checks import MAX_WIDTH, below_one, between, check_options, each
from lithovae.models.base import DataSpec, LatentModel, LossContext, ModelOutput
from lithovae.models.blocks import mlp
from lithovae.models.heads import ClassTargetMixin, resolve_target


class DirectClassifier(ClassTargetMixin, LatentModel):
    OPTIONS = {"hidden": each(between(1, MAX_WIDTH)), "dropout": below_one}  # checked by the config and here

    # defaults: lithovae/conf/model/direct_classifier.yaml
    def __init__(self, data: DataSpec, *, hidden: list[int], dropout: float, batchnorm: bool,
                 target: str, class_weighting: str):
        check_options(type(self), locals())
        super().__init__(data)
        hidden = list(hidden)
        if not hidden:
            raise ValueError("DirectClassifier needs at least one hidden layer (its latent)")
        self.latent_dim = hidden[-1]
        self.target = resolve_target(data, target)
        self.encoder = mlp(data.n_features, hidden, batchnorm=batchnorm, dropout=dropout)
        self.head = nn.Linear(hidden[-1], self.target.n_classes)
        self.register_class_weight(class_weighting)

    def encode(self, x: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x * visible)
        return h, torch.zeros_like(h)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        return mu  # deterministic: the hidden layer is not a distribution

    def decode(self, z: Tensor) -> Tensor:
        return torch.full((z.shape[0], self.data.n_features), float("nan"),
                          dtype=z.dtype, device=z.device)

    def classify(self, z: Tensor) -> Tensor:
        return self.head(z)

    def loss(self, batch: dict[str, Tensor], out: ModelOutput, visible: Tensor,
             ctx: LossContext) -> dict[str, Tensor]:
        term = self.weighted_class_loss(batch, out.logits)
        return {"class": term, "loss": term}
