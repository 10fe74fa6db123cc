"""v3 dual-encoder VAE: one MLP trunk per feature group (physical, colour), fused into one
Gaussian posterior; a single shared decoder reconstructs every feature."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lithovae.checks import MAX_LATENT_DIM, MAX_WIDTH, below_one, between, check_options, each
from lithovae.models.base import DataSpec, LatentModel
from lithovae.models.blocks import GaussianEncoder, mlp


class BranchEncoder(nn.Module):
    """Each branch's trunk sees only its own features; the trunks' outputs are concatenated
    and fused (optional ``fusion_hidden`` layers) into fc_mu / fc_logvar."""

    def __init__(self, branch_indices: dict[str, list[int]], branch_hidden: list[int],
                 fusion_hidden: list[int], latent_dim: int, *, batchnorm: bool, dropout: float):
        super().__init__()
        for name, indices in branch_indices.items():
            self.register_buffer(f"{name}_indices", torch.tensor(indices, dtype=torch.long),
                                 persistent=False)
        self.trunks = nn.ModuleDict({
            name: mlp(len(indices), branch_hidden, batchnorm=batchnorm, dropout=dropout)
            for name, indices in branch_indices.items()})
        width = sum(branch_hidden[-1] if branch_hidden else len(indices)
                    for indices in branch_indices.values())
        self.fusion = GaussianEncoder(width, fusion_hidden, latent_dim,
                                      batchnorm=batchnorm, dropout=dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        parts = [trunk(x[:, getattr(self, f"{name}_indices")]) for name, trunk in self.trunks.items()]
        return self.fusion(torch.cat(parts, dim=-1))


def resolve_branches(branches: dict[str, list[str]], feature_names: tuple[str, ...]
                     ) -> dict[str, list[int]]:
    """Feature names per branch -> column indices into the data's features."""
    if not branches:
        raise ValueError(f"branches: name at least one branch of feature names, got {branches!r}")
    resolved = {}
    for name, features in dict(branches).items():
        features = list(features)
        unknown = [f for f in features if f not in feature_names]
        if unknown or not features:
            raise ValueError(f"branch {name!r}: features {unknown or features} are not among "
                             f"the data's features {list(feature_names)}")
        resolved[str(name)] = [feature_names.index(f) for f in features]
    return resolved


class DualEncoderVAE(LatentModel):
    # the options' ranges, checked by the config and here (lithovae.checks; maxima: memory)
    OPTIONS = {"latent_dim": between(1, MAX_LATENT_DIM), "branch_hidden": each(between(1, MAX_WIDTH)),
               "fusion_hidden": each(between(1, MAX_WIDTH)), "decoder_hidden": each(between(1, MAX_WIDTH)),
               "dropout": below_one}

    # defaults: lithovae/conf/model/dual_encoder.yaml
    def __init__(self, data: DataSpec, *, branches: dict[str, list[str]], latent_dim: int,
                 branch_hidden: list[int], fusion_hidden: list[int], decoder_hidden: list[int],
                 batchnorm: bool, dropout: float):
        check_options(type(self), locals())
        super().__init__(data)
        self.latent_dim = latent_dim
        self.branch_indices = resolve_branches(branches, data.feature_names)
        self.encoder = BranchEncoder(self.branch_indices, list(branch_hidden), list(fusion_hidden),
                                     latent_dim, batchnorm=batchnorm, dropout=dropout)
        self.decoder = mlp(latent_dim, list(decoder_hidden), data.n_features,
                           batchnorm=batchnorm, dropout=dropout)
