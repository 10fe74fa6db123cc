"""v2.14 semi-supervised VAE: the VAE plus a classifier head on the latent sample.

Loss = recon + beta * KL + alpha * CE over labeled rows (base.loss adds the class
term because ``classify`` returns logits; alpha comes from the training plan).
"""

from __future__ import annotations

from lithovae.models.base import DataSpec
from lithovae.models.heads import ClassifierHeadMixin
from lithovae.models.vae import VAE


class SemiSupervisedVAE(ClassifierHeadMixin, VAE):
    def __init__(self, data: DataSpec, classifier_hidden: list[int] = (64,),
                 classifier_dropout: float = 0.3, target: str = "principal", **vae_kwargs):
        super().__init__(data, **vae_kwargs)
        self.add_classifier(data, target, classifier_hidden, classifier_dropout)
