"""v2.13 multi-decoder VAE: the shared VAE encoder, one decoder per feature."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lithovae.models.base import DataSpec
from lithovae.models.vae import VAE


class PerFeatureDecoder(nn.Module):
    """Independent decoders with one output each; their outputs concatenated in feature order."""

    def __init__(self, decoders: list[nn.Module]):
        super().__init__()
        self.decoders = nn.ModuleList(decoders)

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([decoder(z) for decoder in self.decoders], dim=-1)


def single_output_copy(decoder: nn.Sequential) -> nn.Sequential:
    """A freshly initialised copy of ``decoder`` whose final Linear has one output."""
    fresh = copy.deepcopy(decoder)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    fresh[-1] = nn.Linear(fresh[-1].in_features, 1)
    return fresh


class MultiDecoderVAE(VAE):
    def __init__(self, data: DataSpec, **vae_kwargs):  # VAE's, in lithovae/conf/model/vae.yaml
        super().__init__(data, **vae_kwargs)
        # each feature gets the plain VAE's decoder architecture (hidden reversed), 1 output wide
        self.decoder = PerFeatureDecoder(
            [single_output_copy(self.decoder) for _ in range(data.n_features)])
