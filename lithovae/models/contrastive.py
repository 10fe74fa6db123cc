"""v2.8 contrastive VAE: InfoNCE on the latent means with k-means pseudo-labels.

Loss = recon + beta * KL + gamma * InfoNCE(mu, pseudo-labels). The pseudo-labels
come from KMeans on the train latent means, refreshed every ``refresh_every``
epochs from epoch 0 (row i belongs to ``batch["index"] == i``).
"""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from lithovae.checks import MAX_CLUSTERS, at_least, between, check_options, non_negative, positive, random_seed
from lithovae.models.base import DataSpec, LossContext, ModelOutput
from lithovae.models.heads import latents_as_numpy
from lithovae.models.losses import info_nce
from lithovae.models.vae import VAE


class ContrastiveVAE(VAE):
    OPTIONS = {"gamma": non_negative, "temperature": positive, "n_clusters": between(2, MAX_CLUSTERS),
               "refresh_every": at_least(1), "seed": random_seed}

    # defaults: lithovae/conf/model/contrastive.yaml (``vae_kwargs``: VAE's, in model/vae.yaml)
    def __init__(self, data: DataSpec, *, gamma: float, temperature: float, n_clusters: int,
                 refresh_every: int, seed: int, **vae_kwargs):
        check_options(type(self), locals())
        super().__init__(data, **vae_kwargs)
        self.gamma = gamma
        self.temperature = temperature
        self.n_clusters = n_clusters
        self.refresh_every = refresh_every
        self.seed = seed
        # pseudo-label per train row (empty until the first refresh) and the k-means centroids
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(n_clusters, self.latent_dim))

    def on_train_epoch_start(self, epoch: int, embed_train) -> None:
        # also refresh when labels are missing (e.g. a run resumed from weights only)
        if epoch % self.refresh_every == 0 or self.pseudo_labels.numel() == 0:
            self.refresh_pseudo_labels(embed_train())

    def refresh_pseudo_labels(self, train_means) -> None:
        kmeans = KMeans(self.n_clusters, random_state=self.seed, n_init=3)
        labels = kmeans.fit_predict(latents_as_numpy(train_means))
        device = self.centroids.device
        self.pseudo_labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.centroids = torch.as_tensor(kmeans.cluster_centers_, dtype=self.centroids.dtype,
                                         device=device)

    def pseudo_labels_for(self, batch: dict[str, Tensor], mu: Tensor) -> Tensor:
        """Stored labels for train rows; outside training (other splits, other row indices)
        each row takes its nearest centroid."""
        if self.training:
            return self.pseudo_labels[batch["index"].to(self.pseudo_labels.device)]
        return torch.cdist(mu.detach(), self.centroids.to(mu)).argmin(dim=1)

    def extra_losses(self, batch: dict[str, Tensor], out: ModelOutput,
                     ctx: LossContext) -> dict[str, Tensor]:
        if self.pseudo_labels.numel() == 0:
            return {"contrastive": out.mu.sum() * 0.0}
        labels = self.pseudo_labels_for(batch, out.mu)
        return {"contrastive": self.gamma * info_nce(out.mu, labels, self.temperature)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the stored label vector has the train split's length, not the empty placeholder's
        key = prefix + "pseudo_labels"
        if key in state_dict:
            self.pseudo_labels = torch.empty_like(state_dict[key], device=self.pseudo_labels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
