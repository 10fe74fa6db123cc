"""Network blocks shared by all variants."""

from __future__ import annotations

from torch import Tensor, nn


def mlp(in_dim: int, hidden: list[int], out_dim: int | None = None, *,
        batchnorm: bool, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> BatchNorm -> Dropout per hidden layer (the seeds' order),
    then a plain Linear to ``out_dim`` if given."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.ReLU()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        if dropout:
            layers.append(nn.Dropout(dropout))
        prev = width
    if out_dim is not None:
        layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """MLP trunk with two heads: posterior mean and log-variance."""

    def __init__(self, in_dim: int, hidden: list[int], latent_dim: int, *,
                 batchnorm: bool, dropout: float):
        super().__init__()
        self.trunk = mlp(in_dim, hidden, batchnorm=batchnorm, dropout=dropout)
        width = hidden[-1] if hidden else in_dim
        self.fc_mu = nn.Linear(width, latent_dim)
        self.fc_logvar = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.fc_mu(h), self.fc_logvar(h)
