"""Every model variant: build, forward, loss terms, gradients, embeddings, variant specifics."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from lithovae.models.base import DataSpec, LossContext
from lithovae.models.classifier import DirectClassifier
from lithovae.models.contrastive import ContrastiveVAE
from lithovae.models.dual_encoder import DualEncoderVAE
from lithovae.models.embedding_classifier import EmbeddingClassifier
from lithovae.models.losses import info_nce
from lithovae.models.multidecoder import MultiDecoderVAE
from lithovae.models.semisup import SemiSupervisedVAE
from lithovae.models.vade import VaDE
from lithovae.models.vae import VAE
from lithovae.models.vampprior import VampPriorVAE
from tests.conftest import CONF_DIR, config_defaults

FEATURES = ("GRA", "MS", "NGR", "R", "G", "B")
N_TRAIN, BATCH = 96, 32


def make_spec() -> DataSpec:
    rng = np.random.default_rng(0)
    class_counts = rng.integers(0, 500, size=139)
    class_counts[[3, 50]] = 0
    group_counts = rng.integers(1, 5000, size=14)
    group_counts[7] = 0
    return DataSpec(6, FEATURES, 139, 14, tuple(int(c) for c in class_counts),
                    tuple(int(c) for c in group_counts), n_train=N_TRAIN)


SPEC = make_spec()


@functools.cache
def _model_yaml(name: str) -> dict:
    """The composed ``model`` node of ``conf/model/<name>.yaml``, interpolations (``seed``) resolved."""
    return OmegaConf.to_container(OmegaConf.create(config_defaults(f"model={name}")).model, resolve=True)


def yaml_kwargs(name: str, **overrides) -> dict:
    """The constructor keywords ``conf/model/<name>.yaml`` gives (the constructors have no
    defaults), with ``overrides`` on top."""
    kwargs = {k: v for k, v in _model_yaml(name).items() if k != "_target_"}
    return {**kwargs, **overrides}


def make_batch(n: int = BATCH, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    observed = torch.rand(n, 6, generator=gen) > 0.2
    x = torch.randn(n, 6, generator=gen) * observed
    return {
        "x": x, "observed": observed,
        "y": torch.randint(-1, 139, (n,), generator=gen),
        "y_group": torch.randint(-1, 14, (n,), generator=gen),
        "index": torch.randperm(N_TRAIN, generator=gen)[:n],
        "borehole": torch.zeros(n, dtype=torch.long), "depth": torch.rand(n, generator=gen),
    }


def visible_of(batch, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return batch["observed"] & (torch.rand(batch["x"].shape, generator=gen) > 0.3)


TRAIN = make_batch(N_TRAIN, seed=5)


def embed_train_of(model):
    def embed_train():
        was_training = model.training
        model.eval()
        means = model.embed(TRAIN["x"], TRAIN["observed"])
        model.train(was_training)
        return means
    return embed_train


# every model YAML is a variant under test: a new conf/model/<name>.yaml is tested here as it is
MODEL_YAMLS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
# keywords that fit a YAML to the 96 training rows here (a variant needs none to be tested)
FIT_TO_TEST_DATA = {"contrastive": {"n_clusters": 4},  # k-means on the 96 rows
                    "embedding_classifier": {"vae_epochs": 2}}  # its second stage within 3 epochs
# further settings of a YAML under test, by name: "<yaml>_<what>"
SETTINGS = {"semisup_group": ("semisup", {"target": "group"})}
VARIANTS = {**{name: (name, {}) for name in MODEL_YAMLS}, **SETTINGS}
CTX = LossContext(beta=0.5, alpha=0.1, masked_weight=0.5, epoch=0)


def make_variant(name: str):
    """The model of conf/model/<yaml>.yaml as Hydra builds it (``_target_`` with the YAML's
    keywords), on the test data spec."""
    yaml, overrides = VARIANTS[name]
    node = _model_yaml(yaml)
    return get_object(node["_target_"])(SPEC, **yaml_kwargs(yaml, **FIT_TO_TEST_DATA.get(yaml, {}), **overrides))


def expected_terms(model, batch, out, ctx: LossContext) -> set[str]:
    """The loss terms a variant reports, derived from its class. The base loss
    (:meth:`LatentModel.loss`) reports ``recon`` and ``kl``, ``masked_recon`` when hidden entries
    are weighted, ``class`` when the model has a head, then its ``extra_losses``; a class whose
    loss adds terms of its own declares them in ``ADDED_TERMS`` (BetaTCVAE's KL parts). Two
    classes replace the base loss: the direct classifier (no decoder: its class term alone) and
    the embedding classifier (its VAE's terms in the first stage, which epoch 0 is here)."""
    if isinstance(model, DirectClassifier):
        return {"class", "loss"}
    if isinstance(model, EmbeddingClassifier):
        return VAE_TERMS
    names = {"recon", "kl", "loss"} | ({"masked_recon"} if ctx.masked_weight else set())
    names |= {"class"} if out.logits is not None else set()
    return names | set(model.extra_losses(batch, out, ctx)) | set(getattr(type(model), "ADDED_TERMS", ()))


VAE_TERMS = {"recon", "kl", "masked_recon", "loss"}


def build(name: str):
    torch.manual_seed(0)
    model = make_variant(name)
    model.train()
    model.on_train_epoch_start(0, embed_train_of(model))
    return model


def reconstructs(model) -> bool:
    """Whether the variant has a decoder (the direct classifier's recon is NaN)."""
    batch = make_batch(n=4)
    return bool(torch.isfinite(model.eval()(batch["x"], batch["observed"]).recon).all())


# -- every variant --------------------------------------------------------------------------

def test_every_model_yaml_is_a_variant_under_test():
    assert set(MODEL_YAMLS) <= set(VARIANTS) and len(MODEL_YAMLS) >= 12
    assert {"vae", "vade", "vampprior", "beta_tcvae"} <= set(MODEL_YAMLS)


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_loss_backward(name):
    model = build(name)
    batch = make_batch()
    visible = visible_of(batch)
    out = model(batch["x"], visible)
    terms = model.loss(batch, out, visible, CTX)
    assert set(terms) == expected_terms(model, batch, out, CTX)
    for term, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), term
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(torch.count_nonzero(g) for g in grads)


@pytest.mark.parametrize("name", VARIANTS)
def test_embed_gives_deterministic_latent_means_in_eval(name):
    model = build(name).eval()
    batch = make_batch(seed=3)
    visible = visible_of(batch)
    first = model.embed(batch["x"], visible)
    assert first.shape == (BATCH, model.latent_dim)
    assert torch.equal(first, model.embed(batch["x"], visible))
    assert torch.equal(first, model(batch["x"], visible).mu)
    # the embedding depends on the input (not a constant)
    assert not torch.allclose(first, model.embed(batch["x"] + 1.0, visible))


@pytest.mark.parametrize("name", VARIANTS)
def test_unobserved_entries_do_not_change_the_recon_term(name):
    model = build(name).eval()
    if not reconstructs(model):
        pytest.skip(f"{name} has no decoder: no recon term")
    batch = make_batch(seed=4)
    visible = visible_of(batch, seed=2)
    ctx = LossContext(masked_weight=1.0)

    def terms_for(x):
        changed = dict(batch, x=x)
        return model.loss(changed, model(x, visible), visible, ctx)

    base = terms_for(batch["x"])
    unobserved = ~batch["observed"]
    assert unobserved.any()
    moved = terms_for(torch.where(unobserved, torch.full_like(batch["x"], 1e3), batch["x"]))
    assert moved["recon"] == base["recon"] and moved["masked_recon"] == base["masked_recon"]
    # an observed value hidden from the encoder is scored: changing it changes both terms
    hidden = batch["observed"] & ~visible
    assert hidden.any()
    moved = terms_for(torch.where(hidden, batch["x"] + 3.0, batch["x"]))
    assert moved["recon"] > base["recon"] and moved["masked_recon"] > base["masked_recon"]


# non-default sizes, so a size the YAML fixes cannot pass unnoticed (the latent is the last
# hidden layer for the direct classifier, built from ``branch_hidden`` for the dual encoder)
SIZES = {"hidden": [32, 16], "classifier_hidden": [64], "branch_hidden": [16, 8], "decoder_hidden": [16, 32]}


@pytest.mark.parametrize("name", MODEL_YAMLS)
def test_builds_from_hydra_config_with_plain_hyperparameters(name):
    """Built by Hydra without ``_convert_``: lists and dicts arrive as ListConfig/DictConfig."""
    node = {**_model_yaml(name), **FIT_TO_TEST_DATA.get(name, {})}
    node.update({k: v for k, v in SIZES.items() if k in node})
    if "latent_dim" in node:
        node["latent_dim"] = 8
    model = instantiate(OmegaConf.create(node), data=SPEC)
    batch = make_batch()
    out = model(batch["x"], batch["observed"])
    assert torch.isfinite(model.loss(batch, out, batch["observed"], CTX)["loss"])
    expected_dim = 8 if "latent_dim" in node else node["hidden"][-1]
    assert out.mu.shape == (BATCH, expected_dim) and model.latent_dim == expected_dim


# -- semi-supervised ------------------------------------------------------------------------

def test_semisup_head_and_targets():
    model = SemiSupervisedVAE(SPEC, **yaml_kwargs("semisup"))
    layers = [type(m).__name__ for m in model.classifier]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.classifier[0].in_features == 10 and model.classifier[0].out_features == 64
    assert model.classifier[2].p == 0.3 and model.classifier[-1].out_features == 139
    group = SemiSupervisedVAE(SPEC, **yaml_kwargs("semisup", target="group")).eval()
    batch = make_batch()
    batch["y"] = torch.full_like(batch["y"], -1)  # principal labels must not be read
    out = group(batch["x"], batch["observed"])
    assert out.logits.shape == (BATCH, 14)
    terms = group.loss(batch, out, batch["observed"], LossContext(alpha=1.0))
    assert terms["class"] > 0
    with pytest.raises(ValueError):
        SemiSupervisedVAE(SPEC, **yaml_kwargs("semisup", target="prefix"))


# -- VaDE ----------------------------------------------------------------------------------

def test_vade_initialises_the_mixture_from_train_means_once():
    model = VaDE(SPEC, **yaml_kwargs("vade", n_components=3, seed=7))
    calls = []

    def embed_train():
        calls.append(1)
        return embed_train_of(model)()

    model.on_train_epoch_start(0, embed_train)
    means = embed_train_of(model)().numpy().astype(np.float64)
    gmm = GaussianMixture(3, covariance_type="diag", random_state=7).fit(means)
    assert torch.softmax(model.pi_logits, 0).tolist() == pytest.approx(gmm.weights_.tolist(), rel=1e-5)
    assert np.allclose(model.means.detach().numpy(), gmm.means_, rtol=1e-5, atol=1e-6)
    assert np.allclose(model.logvars.detach().exp().numpy(), gmm.covariances_, rtol=1e-4)
    model.on_train_epoch_start(1, embed_train)
    model.load_state_dict(model.state_dict())
    assert len(calls) == 1


def test_vade_init_epoch_delays_the_mixture_fit():
    model = VaDE(SPEC, **yaml_kwargs("vade", n_components=3, init_epoch=2))
    calls = []

    def embed_train():
        calls.append(1)
        return embed_train_of(model)()

    initial = model.means.detach().clone()
    for epoch in range(4):
        model.on_train_epoch_start(epoch, embed_train)
        assert len(calls) == (1 if epoch >= 2 else 0)
    assert not torch.equal(model.means, initial)


def test_vade_prior_kl_matches_hand_computation():
    torch.manual_seed(1)
    model = VaDE(SPEC, **yaml_kwargs("vade", n_components=3, latent_dim=2))
    with torch.no_grad():
        model.pi_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
        model.logvars.copy_(torch.tensor([[0.1, -0.5], [0.4, 0.0], [-0.3, 0.2]]))
    model.train()
    batch = make_batch(n=4)
    out = model(batch["x"], batch["observed"])
    kl = model.prior_kl(out).tolist()
    pi = [math.exp(v) for v in model.pi_logits.tolist()]
    pi = [p / sum(pi) for p in pi]
    means, variances = model.means.tolist(), model.logvars.exp().tolist()
    for b in range(4):
        mu, var, z = out.mu[b].tolist(), out.logvar[b].exp().tolist(), out.z[b].tolist()
        joint = [pi[c] * math.prod(math.exp(-(zj - m) ** 2 / (2 * s)) / math.sqrt(2 * math.pi * s)
                                   for zj, m, s in zip(z, means[c], variances[c])) for c in range(3)]
        gamma = [j / sum(joint) for j in joint]
        expected = 0.0
        for c in range(3):
            for j in range(2):
                expected += gamma[c] * 0.5 * (math.log(variances[c][j])
                                              + (var[j] + (mu[j] - means[c][j]) ** 2) / variances[c][j])
            expected += gamma[c] * (math.log(gamma[c]) - math.log(pi[c]))
        expected -= 0.5 * sum(1 + math.log(v) for v in var)
        assert kl[b] == pytest.approx(expected, rel=1e-4, abs=1e-5)


# -- VampPrior ------------------------------------------------------------------------------

def test_vampprior_kl_matches_hand_computation():
    torch.manual_seed(2)
    model = VampPriorVAE(SPEC, **yaml_kwargs("vampprior", n_pseudo_inputs=4, latent_dim=2)).eval()
    batch = make_batch(n=3)
    out = model(batch["x"], batch["observed"])
    assert torch.equal(out.z, out.mu)  # eval: the estimate is taken at the mean
    prior_mu, prior_logvar = model.encoder(model.pseudo_inputs)
    kl = model.prior_kl(out).tolist()

    def log_density(z, mu, var):
        return sum(-0.5 * math.log(2 * math.pi * v) - (zi - m) ** 2 / (2 * v) for zi, m, v in zip(z, mu, var))

    for b in range(3):
        z = out.z[b].tolist()
        log_q = log_density(z, out.mu[b].tolist(), out.logvar[b].exp().tolist())
        log_p = math.log(sum(math.exp(log_density(z, prior_mu[k].tolist(), prior_logvar[k].exp().tolist()))
                             for k in range(4)) / 4)
        assert kl[b] == pytest.approx(log_q - log_p, rel=1e-4, abs=1e-5)


def test_vampprior_uses_the_sampled_z_in_training_and_keeps_batchnorm_stats_clean():
    torch.manual_seed(3)
    model = VampPriorVAE(SPEC, **yaml_kwargs("vampprior")).train()
    batch = make_batch()
    out = model(batch["x"], batch["observed"])
    assert not torch.equal(out.z, out.mu)
    bn = model.encoder.trunk[2]
    before = bn.running_mean.clone()
    kl = model.prior_kl(out)
    assert torch.equal(bn.running_mean, before)
    # single-sample estimate at z: moving z moves the value
    out.z = out.z + 0.5
    assert not torch.allclose(kl, model.prior_kl(out))


def test_vampprior_pseudo_inputs_are_unbounded():
    model = VampPriorVAE(SPEC, **yaml_kwargs("vampprior")).eval()
    u = model.pseudo_inputs
    assert u.shape == (50, 6) and u.min() < 0 and u.max() > 1  # N(0, 1) init, scaled space
    assert torch.equal(u, VampPriorVAE(SPEC, **yaml_kwargs("vampprior")).pseudo_inputs)  # seeded
    with torch.no_grad():
        u.copy_(torch.linspace(-4, 4, 300).reshape(50, 6))
    means, _ = model.prior_components()
    assert torch.allclose(means, model.encoder(u)[0])
    assert not torch.allclose(means, model.encoder(u.clamp(0, 1))[0])
    # an optimiser step leaves them wherever the gradient takes them
    model.train()
    batch = make_batch()
    out = model(batch["x"], batch["observed"])
    model.prior_kl(out).mean().backward()
    assert torch.count_nonzero(u.grad) > 0
    with torch.no_grad():
        u -= 1e3 * u.grad
    assert u.min() < -4 or u.max() > 4


# -- contrastive ----------------------------------------------------------------------------

def test_contrastive_refreshes_pseudo_labels_on_schedule():
    model = ContrastiveVAE(SPEC, **yaml_kwargs("contrastive", n_clusters=4, refresh_every=10, seed=3))
    refreshed_at = []

    for epoch in range(25):
        def embed_train(epoch=epoch):
            refreshed_at.append(epoch)
            return embed_train_of(model)()
        model.on_train_epoch_start(epoch, embed_train)
    assert refreshed_at == [0, 10, 20]
    means = embed_train_of(model)().numpy().astype(np.float64)
    expected = KMeans(4, random_state=3, n_init=3).fit_predict(means)
    assert model.pseudo_labels.tolist() == expected.tolist()
    assert model.pseudo_labels.shape == (N_TRAIN,)


def test_contrastive_term_uses_the_stored_labels_of_the_batch_rows():
    model = build("contrastive")
    labels = torch.arange(N_TRAIN) % 3
    model.pseudo_labels = labels.clone()
    batch = make_batch()
    visible = visible_of(batch)
    out = model(batch["x"], visible)
    term = model.loss(batch, out, visible, CTX)["contrastive"]
    expected = 0.1 * info_nce(out.mu, labels[batch["index"]], 0.5)
    assert torch.allclose(term, expected)
    assert term > 0
    # every batch row in its own cluster: no positives, no term
    model.pseudo_labels = torch.arange(N_TRAIN)
    assert model.loss(batch, out, visible, CTX)["contrastive"] == 0
    # stored labels survive a state_dict round trip into a fresh model
    fresh = ContrastiveVAE(SPEC, **yaml_kwargs("contrastive", n_clusters=4))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.pseudo_labels, model.pseudo_labels)


# -- multi-decoder --------------------------------------------------------------------------

def test_multidecoder_has_one_independent_decoder_per_feature():
    model = MultiDecoderVAE(SPEC, **yaml_kwargs("multidecoder")).eval()
    decoders = model.decoder.decoders
    assert len(decoders) == 6
    linears = [[m for m in d if isinstance(m, torch.nn.Linear)] for d in decoders]
    assert [(l.in_features, l.out_features) for l in linears[0]] == [(10, 16), (16, 32), (32, 1)]
    assert not torch.equal(linears[0][0].weight, linears[1][0].weight)
    batch = make_batch()
    before = model.reconstruct(batch["x"], batch["observed"])
    assert before.shape == (BATCH, 6)
    with torch.no_grad():
        linears[4][-1].bias += 1.0
    delta = model.reconstruct(batch["x"], batch["observed"]) - before
    assert torch.allclose(delta[:, 4], torch.ones(BATCH))
    assert torch.count_nonzero(delta[:, [0, 1, 2, 3, 5]]) == 0


# -- dual encoder ---------------------------------------------------------------------------

def test_dual_encoder_branches_see_only_their_features():
    spec = DataSpec(6, ("R", "G", "B", "GRA", "MS", "NGR"), 139, 14)
    model = DualEncoderVAE(spec, **yaml_kwargs("dual_encoder")).eval()
    assert model.branch_indices == {"physical": [3, 4, 5], "colour": [0, 1, 2]}
    seen = {}
    model.encoder.trunks["physical"].register_forward_hook(lambda m, i, o: seen.setdefault("out", []).append(o))
    batch = make_batch()
    x = batch["x"]
    mu = model.embed(x, torch.ones_like(x))
    x_colour = x.clone()
    x_colour[:, :3] += 2.0
    mu_colour = model.embed(x_colour, torch.ones_like(x))
    assert torch.equal(seen["out"][0], seen["out"][1])  # physical trunk ignores colour
    assert not torch.allclose(mu, mu_colour)  # the fused posterior does not
    assert model.decoder[-1].out_features == 6
    with pytest.raises(ValueError, match="XRF"):
        DualEncoderVAE(spec, **yaml_kwargs("dual_encoder", branches={"physical": ["GRA"], "chem": ["XRF"]}))
    with pytest.raises(ValueError, match="at least one branch"):  # no built-in branches: the YAML's
        DualEncoderVAE(spec, **yaml_kwargs("dual_encoder", branches={}))


# -- direct classifier ----------------------------------------------------------------------

def test_direct_classifier_has_nan_recon_balanced_weights_and_hidden_latent():
    model = DirectClassifier(SPEC, **yaml_kwargs("direct_classifier")).train()
    batch = make_batch()
    out = model(batch["x"], batch["observed"])
    assert out.recon.shape == (BATCH, 6) and torch.isnan(out.recon).all()
    assert out.logits.shape == (BATCH, 14)
    assert torch.equal(out.z, out.mu) and torch.count_nonzero(out.logvar) == 0
    assert out.mu.shape == (BATCH, 32)
    weights = model.class_weight.tolist()
    counts = SPEC.group_counts
    inverse = [1 / c if c else 0.0 for c in counts]
    mean = sum(inverse) / sum(1 for c in counts if c)
    assert weights == pytest.approx([w / mean for w in inverse])
    assert weights[7] == 0.0
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    terms = model.loss(batch, out, batch["observed"], LossContext(alpha=0.0))
    assert set(terms) == {"class", "loss"} and terms["loss"] > 0  # alpha does not apply
    principal = DirectClassifier(SPEC, **yaml_kwargs("direct_classifier", target="principal"))
    assert principal.head.out_features == 139
    assert principal.class_weight[3] == 0 and principal.class_weight[50] == 0


# -- embedding classifier -------------------------------------------------------------------

def vae_params(model):
    return [p for n, p in model.named_parameters() if n.startswith(("encoder.", "decoder."))]


def test_embedding_classifier_stage_one_trains_only_the_vae():
    model = build("embedding_classifier")
    batch = make_batch()
    ctx = LossContext(beta=0.5, alpha=1.0, epoch=1)
    model.on_train_epoch_start(1, embed_train_of(model))
    out = model(batch["x"], batch["observed"])
    terms = model.loss(batch, out, batch["observed"], ctx)
    assert "class" not in terms
    terms["loss"].backward()
    assert all(p.grad is None for p in model.classifier.parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) for p in vae_params(model))


def test_embedding_classifier_gives_no_gradient_to_the_vae_after_vae_epochs():
    model = build("embedding_classifier")
    model.on_train_epoch_start(2, embed_train_of(model))
    model.train()  # the trainer switching back to train mode keeps the VAE frozen
    assert not model.encoder.training and model.classifier.training
    bn = model.encoder.trunk[2]
    stats = bn.running_mean.clone()
    batch = make_batch()
    out = model(batch["x"], batch["observed"])
    assert torch.equal(bn.running_mean, stats)
    terms = model.loss(batch, out, batch["observed"], LossContext(beta=0.5, epoch=2))
    assert set(terms) == {"recon", "kl", "class", "loss"}
    assert torch.equal(terms["loss"], terms["class"]) and terms["class"] > 0
    terms["loss"].backward()
    assert all(p.grad is None for p in vae_params(model))
    assert all(p.grad is not None for p in model.classifier.parameters())
    assert any(torch.count_nonzero(p.grad) for p in model.classifier.parameters())
    # v1.0 weighting: 1 / (count + 1) over principal classes
    assert model.class_weight[0] == pytest.approx(1 / (SPEC.class_counts[0] + 1))


def test_embedding_classifier_loads_a_pretrained_vae_and_skips_stage_one(tmp_path):
    torch.manual_seed(4)
    vae = VAE(SPEC, **yaml_kwargs("vae"))
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in vae.state_dict().items()},
                "hyper_parameters": {"lr": 1e-3}}, path)
    model = EmbeddingClassifier(SPEC, **yaml_kwargs("embedding_classifier", pretrained=str(path),
                                                    target="group", class_weighting="balanced")).train()
    for name, value in vae.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.in_classifier_stage(0) and not model.encoder.training
    batch = make_batch()
    terms = model.loss(batch, model(batch["x"], batch["observed"]), batch["observed"], LossContext())
    assert torch.equal(terms["loss"], terms["class"])
    torch.save({"state_dict": {"model.encoder.fc_mu.weight": vae.encoder.fc_mu.weight}}, path)
    with pytest.raises(ValueError, match="lacks VAE weights"):
        EmbeddingClassifier(SPEC, **yaml_kwargs("embedding_classifier", pretrained=str(path)))
