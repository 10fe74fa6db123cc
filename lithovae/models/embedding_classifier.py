"""VAE classifier v1.0 / v1.1: a classifier on frozen VAE embeddings.

Stage 1 (epochs < ``vae_epochs``) trains the plain VAE loss. From epoch
``vae_epochs`` on, the encoder and decoder are frozen (no gradient, BatchNorm and
dropout in eval mode) and only the classifier trains, on the detached latent means.
With ``pretrained`` (a Lightning checkpoint of a trained VAE run) the encoder and
decoder are loaded and stage 1 is skipped.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lithovae.checks import at_least, check_options
from lithovae.errors import CheckpointError
from lithovae.files import load_checkpoint
from lithovae.models.base import DataSpec, LossContext, ModelOutput
from lithovae.models.heads import ClassifierHeadMixin
from lithovae.models.vae import VAE


class EmbeddingClassifier(ClassifierHeadMixin, VAE):
    frozen = False  # encoder and decoder frozen (see set_frozen)
    OPTIONS = {"vae_epochs": at_least(0)}

    # defaults: lithovae/conf/model/embedding_classifier.yaml (``vae_kwargs``: VAE's, in
    # model/vae.yaml); ``pretrained`` is None there (train stage 1)
    def __init__(self, data: DataSpec, *, vae_epochs: int, classifier_hidden: list[int],
                 classifier_dropout: float, target: str, class_weighting: str,
                 pretrained: str | None, **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.add_classifier(data, target, classifier_hidden, classifier_dropout)
        self.register_class_weight(class_weighting)
        if pretrained:
            self.load_vae(pretrained)
        self.first_classifier_epoch = 0 if pretrained else int(vae_epochs)
        self.set_frozen(self.in_classifier_stage(0))

    def load_vae(self, path: str) -> None:
        """Encoder and decoder weights from a checkpoint whose ``state_dict`` keys start with ``model.``
        (a Lightning checkpoint of a VAE run) or from a bare state dict. Read with
        ``weights_only=True``: a file holding pickled objects is refused, never executed."""
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: model.pretrained: not a checkpoint with a state_dict")
        vae_state = {key.removeprefix("model."): value for key, value in state.items()
                     if isinstance(key, str) and key.removeprefix("model.").startswith(("encoder.", "decoder."))}
        own = {k for k in self.state_dict() if k.startswith(("encoder.", "decoder."))}
        if missing := sorted(own - vae_state.keys()):
            raise CheckpointError(f"{path}: model.pretrained: checkpoint lacks VAE weights {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}")
        try:
            self.load_state_dict(vae_state, strict=False)
        except RuntimeError as exc:  # same names, other shapes: another architecture
            raise CheckpointError(f"{path}: model.pretrained: weights do not fit this model "
                             f"({str(exc).splitlines()[-1].strip()})") from None

    def in_classifier_stage(self, epoch: int) -> bool:
        return epoch >= self.first_classifier_epoch

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # frozen embeddings: no BatchNorm updates, no dropout
            self.encoder.eval()
            self.decoder.eval()
        return self

    def on_train_epoch_start(self, epoch: int, embed_train) -> None:
        self.set_frozen(self.in_classifier_stage(epoch))

    def head_input(self, mu: Tensor, z: Tensor) -> Tensor:
        # the classifier reads detached latent means (as at inference), never samples
        return mu.detach()

    def loss(self, batch: dict[str, Tensor], out: ModelOutput, visible: Tensor,
             ctx: LossContext) -> dict[str, Tensor]:
        if not self.in_classifier_stage(ctx.epoch):
            return super().loss(batch, replace(out, logits=None), visible, ctx)
        term = self.weighted_class_loss(batch, out.logits)
        with torch.no_grad():  # reported only, so the frozen VAE stays visible in the logs
            vae_terms = super().loss(batch, replace(out, logits=None), visible, ctx)
        return {"recon": vae_terms["recon"], "kl": vae_terms["kl"], "class": term, "loss": term}
