"""The interface every model variant shares.

A batch is a dict of tensors (see :mod:`lithovae.data.datamodule`):

- ``x``        float [B, F]  scaled features, 0 where not observed
- ``observed`` bool  [B, F]  True where the value was measured
- ``y``        long  [B]     principal lithology code, -1 where unlabeled
- ``y_group``  long  [B]     expert group code, -1 where unlabeled
- ``index``    long  [B]     row index into the split (stable across epochs)
- ``borehole`` long  [B], ``depth`` float [B]

The training plan decides which entries the encoder may see (``visible``: observed
and not masked by the mask strategy) and passes a :class:`LossContext`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lithovae.models.losses import class_loss, gaussian_kl, masked_sse
from lithovae.spec import DataSpec  # re-exported: the models' view of the data


def latent_means(model: "LatentModel", x: Tensor, observed: Tensor, chunk: int = 8192) -> Tensor:
    """Latent means of every row (in eval mode, no gradients), embedded ``chunk`` rows at a
    time on the model's device and returned on the CPU."""
    device = next(model.parameters()).device
    with inference(model):
        return torch.cat([model.embed(xs.to(device), os.to(device)).cpu()
                          for xs, os in zip(x.split(chunk), observed.split(chunk))])


@contextlib.contextmanager
def inference(model: nn.Module):
    """No gradients and eval mode (BatchNorm running stats, no dropout) for the block;
    the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@dataclass
class LossContext:
    """Per-step weights chosen by the training plan."""

    beta: float = 1.0
    # classification weight: a float, or a per-sample tensor [B] (adaptive alpha)
    alpha: float | Tensor = 0.0
    # weight of the reconstruction error on entries hidden from the encoder (a tensor: one
    # weight per member of a stacked ensemble, the term then always computed)
    masked_weight: float | Tensor = 0.0
    epoch: int = 0


@dataclass
class ModelOutput:
    mu: Tensor
    logvar: Tensor
    z: Tensor
    recon: Tensor
    logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class LatentModel(nn.Module):
    """Base of every variant: encode to a Gaussian posterior, decode, score.

    Subclasses build ``self.encoder`` (returning ``(mu, logvar)``) and
    ``self.decoder`` and may override :meth:`prior_kl`, :meth:`extra_losses`,
    :meth:`classify`, or :meth:`head_input`.
    """

    latent_dim: int

    def __init__(self, data: DataSpec):
        super().__init__()
        self.data = data

    # -- building blocks subclasses may override ------------------------------------
    def encode(self, x: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x * visible)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def classify(self, z: Tensor) -> Tensor | None:
        """Class logits from a latent sample; None for models without a head."""
        return None

    def head_input(self, mu: Tensor, z: Tensor) -> Tensor:
        """What :meth:`classify` reads in :meth:`forward`: the latent sample by default."""
        return z

    def class_target_name(self) -> str:
        """Which labels :meth:`class_target` reads: "principal" (or "group", see heads)."""
        return "principal"

    def class_counts(self) -> tuple[int, ...]:
        """Training-set count per code of the class the model is scored on (see :meth:`class_target`)."""
        return self.data.class_counts

    def prior_kl(self, out: ModelOutput) -> Tensor:
        """KL(q(z|x) || p(z)) per sample [B]; the standard normal prior by default."""
        return gaussian_kl(out.mu, out.logvar)

    def extra_losses(self, batch: dict[str, Tensor], out: ModelOutput,
                     ctx: LossContext) -> dict[str, Tensor]:
        """Additional weighted terms (already multiplied by their weight), summed into the loss."""
        return {}

    # -- shared machinery --------------------------------------------------------------
    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: Tensor, visible: Tensor) -> ModelOutput:
        visible = visible.to(x.dtype)
        mu, logvar = self.encode(x, visible)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return ModelOutput(mu=mu, logvar=logvar, z=z, recon=self.decode(z),
                           logits=self.classify(self.head_input(mu, z)))

    def loss(self, batch: dict[str, Tensor], out: ModelOutput, visible: Tensor,
             ctx: LossContext) -> dict[str, Tensor]:
        """Named loss terms, each a scalar; ``loss`` is the weighted total.

        Reconstruction is scored only where a value was observed (never on
        missing values); entries observed but hidden from the encoder are also
        reported as ``masked_recon`` and weighted by ``ctx.masked_weight``.
        """
        observed = batch["observed"].to(out.recon.dtype)
        terms: dict[str, Tensor] = {}
        terms["recon"] = self.reconstruction_error(out.recon, batch["x"], observed)
        terms["kl"] = self.kl_term(out)
        total = terms["recon"] + ctx.beta * terms["kl"]
        if isinstance(ctx.masked_weight, Tensor) or ctx.masked_weight:
            hidden = observed * (1.0 - visible.to(out.recon.dtype))
            terms["masked_recon"] = self.reconstruction_error(out.recon, batch["x"], hidden)
            total = total + ctx.masked_weight * terms["masked_recon"]
        if out.logits is not None:
            terms["class"] = class_loss(out.logits, self.class_target(batch), ctx.alpha)
            total = total + terms["class"]
        for name, value in self.extra_losses(batch, out, ctx).items():
            terms[name] = value
            total = total + value
        terms["loss"] = total
        return terms

    # the reductions of the loss terms: summed over features (latent dims) per sample, then
    # averaged over the batch; a variant may average over entries instead (models/hybrid.py)
    def reconstruction_error(self, recon: Tensor, x: Tensor, mask: Tensor) -> Tensor:
        return masked_sse(recon, x, mask).mean()

    def kl_term(self, out: ModelOutput) -> Tensor:
        return self.prior_kl(out).mean()

    def class_target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["y"]

    def on_train_epoch_start(self, epoch: int, embed_train) -> None:
        """Hook before each training epoch; ``embed_train()`` gives train latent means [N, D]."""

    def extra_scores(self, scores: dict) -> dict:
        """The variant's own scores, from the evaluation's ``scores`` so far
        (:data:`lithovae.evaluation.scoring.SCORES`); none by default."""
        return {}

    @torch.no_grad()
    def embed(self, x: Tensor, visible: Tensor) -> Tensor:
        """Latent means: what clustering and downstream classifiers use."""
        return self.encode(x, visible.to(x.dtype))[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, visible: Tensor) -> Tensor:
        return self.decode(self.embed(x, visible))
