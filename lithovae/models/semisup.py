"""v2.14 semi-supervised VAE: the VAE plus a classifier head on the latent sample.

Loss = recon + beta * KL + alpha * CE over labeled rows (base.loss adds the class
term because ``classify`` returns logits; alpha comes from the training plan).
"""

from __future__ import annotations

from lithovae.checks import check_options
from lithovae.models.base import DataSpec
from lithovae.models.heads import ClassifierHeadMixin
from lithovae.models.vae import VAE


class SemiSupervisedVAE(ClassifierHeadMixin, VAE):
    # defaults: lithovae/conf/model/semisup.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, classifier_hidden: list[int], classifier_dropout: float,
                 target: str, **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.add_classifier(data, target, classifier_hidden, classifier_dropout)
