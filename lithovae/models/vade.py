"""v2.7 VaDE (Jiang et al. 2017): the VAE with a learnable Gaussian-mixture prior.

p(c) = softmax(pi_logits), p(z|c) = N(means_c, exp(logvars_c)); the KL term uses
the responsibilities gamma(c|z) at the latent sample as q(c|x). The mixture is
initialised once, at the start of epoch ``init_epoch`` (model/vade.yaml: 0, the first), by a
diagonal GaussianMixture fitted to the train latent means. The paper fits it on a
pretrained autoencoder's codes: an untrained encoder's means are tightly packed, so
the fitted variances are tiny and the KL term starts very large; ``init_epoch > 0``
lets the VAE train first under the initial mixture (seeded N(0, 1) means, unit variances).
"""

from __future__ import annotations

import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from lithovae.checks import MAX_CLUSTERS, at_least, between, check_options, random_seed
from lithovae.models.base import DataSpec, ModelOutput
from lithovae.models.heads import latents_as_numpy
from lithovae.models.losses import gmm_log_responsibilities, vade_kl
from lithovae.models.vae import VAE


class VaDE(VAE):
    OPTIONS = {"n_components": between(1, MAX_CLUSTERS), "init_epoch": at_least(0), "seed": random_seed}

    # defaults: lithovae/conf/model/vade.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, n_components: int, seed: int, init_epoch: int,
                 **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.n_components = n_components
        self.seed = seed
        self.init_epoch = init_epoch
        generator = torch.Generator().manual_seed(seed)
        self.pi_logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.randn(n_components, self.latent_dim, generator=generator))
        self.logvars = nn.Parameter(torch.zeros(n_components, self.latent_dim))
        # a buffer, so a resumed run does not refit the mixture over trained parameters
        self.register_buffer("gmm_initialised", torch.tensor(False))

    def log_pi(self) -> Tensor:
        return torch.log_softmax(self.pi_logits, dim=0)

    def log_responsibilities(self, z: Tensor) -> Tensor:
        """log gamma(c|z) [B, K]; argmax gives the model's own cluster assignment."""
        return gmm_log_responsibilities(z, self.log_pi(), self.means, self.logvars)

    def prior_kl(self, out: ModelOutput) -> Tensor:
        log_pi = self.log_pi()  # once per step, shared by the responsibilities and the KL
        log_gamma = gmm_log_responsibilities(out.z, log_pi, self.means, self.logvars)
        return vade_kl(out.mu, out.logvar, log_gamma, log_pi, self.means, self.logvars)

    def extra_scores(self, scores: dict) -> dict:
        """``ari_vade``: the ARI of its own clustering (the evaluation's ``ari_prior``), and
        whether the mixture was fitted to the latents before the scored weights."""
        if "ari_prior" not in scores:
            return {}
        return {"ari_vade": scores["ari_prior"], "vade_mixture_fitted": bool(self.gmm_initialised)}

    def on_train_epoch_start(self, epoch: int, embed_train) -> None:
        if bool(self.gmm_initialised) or epoch < self.init_epoch:
            return
        gmm = GaussianMixture(self.n_components, covariance_type="diag", random_state=self.seed)
        gmm.fit(latents_as_numpy(embed_train()))
        with torch.no_grad():
            self.pi_logits.copy_(torch.as_tensor(gmm.weights_).log())
            self.means.copy_(torch.as_tensor(gmm.means_))
            self.logvars.copy_(torch.as_tensor(gmm.covariances_).log())
            self.gmm_initialised.fill_(True)
