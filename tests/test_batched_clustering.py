"""The torch backend of the evaluation (:mod:`lithovae.evaluation.batched`) against scikit-learn.

The random streams differ (torch generators vs numpy's), so the two backends agree exactly
only from the same start: k-means from the same initial centres and a GMM from the same
k-means labels give sklearn's labels and parameters. From their own seeds, they agree on the
ARI (within 0.005) where the data decide the clustering; where a single random start decides
(over-split k-means, sklearn's one-start GMM) the two differ as much as sklearn does between
two seeds (``benchmarks/bench_eval.py --seeds``), so those cases are not compared here.
"""

from __future__ import annotations

import logging
import math
import types

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from lithovae.evaluation import batched
from lithovae.evaluation.metrics import (clustering_scores, clustering_scores_many, seeded_subsample,
                                         silhouette)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread for torch and for the BLAS/OpenMP under sklearn: these are many small
    operations, which more threads only slow down on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def latents(rows: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows shaped like the project's latent means: clusters of unequal sizes, anisotropic,
    float32, labelled by cluster."""
    rng = np.random.default_rng(seed)
    y = rng.choice(clusters, rows, p=rng.dirichlet(np.full(clusters, 3.0)))
    means = rng.normal(0, 4, (clusters, dim))
    shapes = rng.normal(0, 0.5, (clusters, dim, dim)) / np.sqrt(dim) + 0.5 * np.eye(dim)
    x = means[y] + np.einsum("nij,nj->ni", shapes[y], rng.normal(size=(rows, dim)))
    return x.astype(np.float32), y


def blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(n_samples=2000, centers=6, n_features=4, cluster_std=1.0, random_state=seed)


DATASETS = {**{f"blobs{s}": (lambda s=s: blobs(s)) for s in range(3)},
            **{f"latents{s}": (lambda s=s: latents(5000, 10, 12 + s, s)) for s in range(4)}}
KMEANS_CASES = list(DATASETS)
GMM_CASES = ["blobs0", "blobs1", "blobs2", "latents2", "latents3"]  # where one k-means start reaches the optimum


@pytest.fixture(scope="module")
def overlapping():
    """Blobs close enough that the k-means restarts reach different optima."""
    x, y = make_blobs(n_samples=3000, centers=8, n_features=6, cluster_std=3.0, random_state=1)
    return x, y


def _sklearn_gmm_from(labels: np.ndarray, k: int, covariance: str) -> GaussianMixture:
    """sklearn's GaussianMixture started from the hard ``labels`` (instead of its own k-means)."""
    model = GaussianMixture(k, covariance_type=covariance)

    def start(self, X, random_state, xp=None):
        resp = np.zeros((len(X), k))
        resp[np.arange(len(X)), labels] = 1
        self._initialize(X, resp)

    model._initialize_parameters = types.MethodType(start, model)
    return model


# -- the same algorithms as sklearn ---------------------------------------------------------------

def test_kmeans_from_the_same_start_is_sklearns(overlapping):
    x, _ = overlapping
    ks = (5, 8, 11)
    init = x[np.random.default_rng(0).choice(len(x), (3, 11), replace=False)]  # 3 restarts
    ours = batched.kmeans(x, ks, n_init=3, seed=0, init=init)
    for g, k in enumerate(ks):
        fits = [KMeans(k, init=init[r, :k], n_init=1).fit(x) for r in range(3)]
        best = min(fits, key=lambda model: model.inertia_)  # sklearn keeps the lowest inertia
        assert np.array_equal(ours.labels[0, g].numpy(), best.labels_)
        assert int(ours.n_iter[0, g]) == best.n_iter_
        assert float(ours.inertia[0, g]) == pytest.approx(best.inertia_, rel=1e-5)
        assert np.allclose(ours.centers[0, g, :k].numpy(), best.cluster_centers_, atol=1e-4)
        assert ours.centers[0, g, k:].isnan().all()


def test_a_row_equidistant_from_two_centres_goes_to_the_first():
    x = np.array([[0.0], [0.0], [0.0], [1.0], [2.0], [2.0], [2.0]])
    init = np.array([[[0.0], [2.0]]])
    ours = batched.kmeans(x, (2,), n_init=1, seed=0, init=init)
    model = KMeans(2, init=init[0], n_init=1).fit(x)
    assert np.array_equal(ours.labels[0, 0].numpy(), model.labels_)  # [0, 0, 0, 0, 1, 1, 1]
    assert np.allclose(ours.centers[0, 0].numpy(), model.cluster_centers_)  # 0.25 and 2


def test_the_restart_of_lowest_inertia_is_kept(overlapping):
    x, _ = overlapping
    ks = (5, 8, 11)
    one = batched.kmeans(x, ks, n_init=1, seed=0)
    ten = batched.kmeans(x, ks, n_init=10, seed=0, first_labels=True)
    # restart 0 does not depend on n_init: it is the one-restart run (the GMM's start)
    assert torch.equal(ten.first_labels, one.labels)
    assert (ten.inertia <= one.inertia).all() and (ten.inertia < one.inertia * (1 - 1e-4)).any()
    sk = [KMeans(k, n_init=10, random_state=0).fit(x).inertia_ for k in ks]
    assert (ten.inertia[0].numpy() <= np.array(sk) * 1.001).all()  # as good as sklearn's best


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_from_the_same_kmeans_labels_is_sklearns(overlapping, covariance):
    x, _ = overlapping
    ks = (5, 8, 11)
    start = batched.kmeans(x, ks, n_init=1, seed=3).labels
    ours = batched.gmm(x, ks, seed=3, covariance=covariance, init_labels=start)
    assert ours.ok.all() and (ours.reg_covar == 1e-6).all()
    for g, k in enumerate(ks):
        model = _sklearn_gmm_from(start[0, g].numpy(), k, covariance).fit(x)
        assert float(ours.lower_bound[0, g]) == pytest.approx(model.lower_bound_, abs=1e-10)
        assert int(ours.n_iter[0, g]) == model.n_iter_ and bool(ours.converged[0, g]) == model.converged_
        assert np.array_equal(ours.labels[0, g].numpy(), model.predict(x))
        assert np.allclose(ours.weights[0, g, :k].numpy(), model.weights_, atol=1e-10)
        assert np.allclose(ours.means[0, g, :k].numpy(), model.means_, atol=1e-8)
        assert np.allclose(ours.covariances[0, g, :k].numpy(), model.covariances_, atol=1e-8)
        assert (batched.gmm_predict(x, ours) == ours.labels).all()


@pytest.mark.parametrize("name", KMEANS_CASES)
def test_kmeans_ari_agrees_with_sklearn(name):
    """k = the number of clusters and two fewer, 10 restarts each: the same ARI (+-0.005)."""
    x, y = DATASETS[name]()
    c = np.unique(y).size
    scores = {backend: clustering_scores(x, y, ks=(c - 2, c), seed=0, n_init=10, gmm=False,
                                         backend=backend).scores for backend in ("torch", "sklearn")}
    for k in (c - 2, c):
        key = f"ari_kmeans_k{k}"
        assert scores["torch"][key] == pytest.approx(scores["sklearn"][key], abs=0.005), key


@pytest.mark.parametrize("name", GMM_CASES)
def test_gmm_ari_agrees_with_sklearn(name):
    """One k-means start each, as sklearn: the same ARI (+-0.005) at k = the number of clusters
    on data where that start reaches the optimum."""
    x, y = DATASETS[name]()
    c = np.unique(y).size
    scores = {backend: clustering_scores(x, y, ks=(c - 2, c), seed=0, n_init=10,
                                         backend=backend).scores for backend in ("torch", "sklearn")}
    assert scores["torch"][f"ari_gmm_k{c}"] == pytest.approx(scores["sklearn"][f"ari_gmm_k{c}"], abs=0.005)
    assert scores["torch"]["ari_best"] == pytest.approx(scores["sklearn"]["ari_best"], abs=0.005)


@pytest.mark.parametrize("size, seed", [(None, 0), (700, 1), (1500, 2)])
def test_silhouette_is_sklearns_on_the_same_rows(overlapping, size, seed):
    x, _ = overlapping
    labels = KMeans(8, n_init=1, random_state=0).fit_predict(x)
    labels[:3] = 99  # a small cluster, and a singleton below
    labels[3] = 98
    rows = seeded_subsample(len(x), size, seed)
    expected = silhouette_score(x[rows], labels[rows])
    assert batched.silhouette(x, labels, size, seed) == pytest.approx(expected, abs=1e-10)
    assert silhouette(x, labels, size, seed, backend="torch") == pytest.approx(
        silhouette(x, labels, size, seed, backend="sklearn"), abs=1e-10)


def test_silhouette_is_nan_without_two_clusters(overlapping):
    x, _ = overlapping
    assert math.isnan(batched.silhouette(x, np.zeros(len(x), dtype=int), 500, 0))
    assert math.isnan(batched.silhouette(x[:5], np.arange(5), None, 0))  # every row its own cluster


def test_ari_is_sklearns_to_the_bit():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 300, 5000):
        true = rng.integers(0, 9, n)
        pred = np.stack([rng.integers(0, 5, n), true, np.zeros(n, dtype=int), true % 3])
        assert batched.adjusted_rand(true, pred) == [adjusted_rand_score(true, p) for p in pred]


# -- batched members, determinism -----------------------------------------------------------------

@pytest.fixture(scope="module")
def members():
    x, y = latents(2000, 6, 9, 0)
    rng = np.random.default_rng(1)
    others = [latents(2000, 6, 9, s)[0] for s in (1, 2)]
    return np.stack([x, *others, x @ rng.normal(size=(6, 6)).astype(np.float32)]), y


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` group the rows alike (cluster numbers aside)."""
    pairs = torch.unique(torch.stack([a, b]), dim=1)
    return pairs.shape[1] == torch.unique(a).numel() == torch.unique(b).numel()


def test_members_in_one_batch_are_the_members_alone(members):
    xs, _ = members
    ks = (6, 9, 12)
    together = batched.kmeans(xs, ks, n_init=3, seed=2, first_labels=True)
    mixtures = batched.gmm(xs, ks, seed=2, init_labels=together.first_labels)
    for m in range(len(xs)):
        alone = batched.kmeans(xs[m], ks, n_init=3, seed=2, first_labels=True)
        # the same partitions: where two restarts reach one partition, which of them (and so
        # which numbering) wins can turn on the last digits, as BLAS kernels may order a batch's
        # reductions differently from one member's
        for j in range(len(ks)):
            assert same_partition(together.labels[m][j], alone.labels[0][j])
        assert torch.equal(together.first_labels[m], alone.first_labels[0])
        torch.testing.assert_close(together.inertia[m], alone.inertia[0], rtol=1e-6, atol=0)
        mixture = batched.gmm(xs[m], ks, seed=2)
        assert torch.equal(mixtures.labels[m], mixture.labels[0])
        torch.testing.assert_close(mixtures.lower_bound[m], mixture.lower_bound[0], rtol=1e-6, atol=0)


def test_a_member_with_ties_leaves_the_others_unchanged():
    """Integer rows tie between integer centres (their Lloyd step is redone with an argmin);
    random rows do not: batched together, the random member's step is its step alone, to the bit."""
    rng = np.random.default_rng(0)
    x = torch.stack([torch.randn(4000, 3, generator=torch.Generator().manual_seed(0)),
                     torch.as_tensor(rng.integers(-2, 3, (4000, 3)), dtype=torch.float32)])
    x1 = torch.cat([x, torch.ones(2, 4000, 1)], -1)
    xt, x1t = x.transpose(1, 2).contiguous(), x1.transpose(1, 2).contiguous()
    centers = x[:, :5][:, None]  # [2 members, 1 run, k = 5, D]
    (new, _), = batched._lloyd_step(x1, xt, x1t, [(5, centers)], 1000)
    (alone, _), = batched._lloyd_step(x1[:1], xt[:1], x1t[:1], [(5, centers[:1])], 1000)
    (exact, _), = batched._lloyd_step(x1[1:], xt[1:], x1t[1:], [(5, centers[1:])], 1000)
    assert torch.equal(new[0], alone[0]) and torch.equal(new[1], exact[0])
    dist = ((x[1, :, None] - centers[1, 0][None]) ** 2).sum(-1)
    assert ((dist == dist.min(1, keepdim=True).values).sum(1) > 1).any()  # there are ties


def test_scores_of_many_members_are_the_scores_of_each(members, caplog):
    xs, y = members
    y = y.copy()
    y[::5] = -1
    broken = xs[1].copy()
    broken[0, 0] = np.nan
    latents_list = [xs[0], broken, xs[2][:, :4], xs[3]]  # a non-finite member, a narrower one
    options = dict(seed=1, n_init=3, gmm=True, max_fit_samples=None)
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        many = clustering_scores_many(latents_list, y, (6, 9), backend="torch", **options)
    assert any(r.getMessage().startswith("member 1: clustering: the latent means have non-finite")
               for r in caplog.records)
    # members 0 and 3 (same width) in one pass, as on a GPU
    batched_pass = clustering_scores_many(latents_list, y, (6, 9), backend="torch",
                                          members_per_pass=4, **options)
    for a, b in zip(many, batched_pass):
        assert a.scores == b.scores or np.isnan(a.scores["ari_best"])
    for z, result in zip(latents_list, many):
        alone = clustering_scores(z, y, ks=(6, 9), backend="torch", **options)
        assert result.scores.keys() == alone.scores.keys()
        assert all(result.scores[k] == alone.scores[k] or (result.scores[k] != result.scores[k]
                                                            and alone.scores[k] != alone.scores[k])
                   for k in alone.scores)
        assert (result.assignment is None) == (alone.assignment is None)
        if alone.assignment is not None:
            assert np.array_equal(result.assignment, alone.assignment)
    assert math.isnan(many[1].scores["ari_best"]) and many[1].assignment is None
    sk = clustering_scores_many(np.stack([xs[0], xs[2]]), np.stack([y, y]), (6, 9), backend="sklearn",
                                **options)
    assert sk[0].scores == clustering_scores(xs[0], y, ks=(6, 9), backend="sklearn", **options).scores


def test_same_seed_same_labels_other_seed_other_start(overlapping):
    x, _ = overlapping
    a = batched.kmeans(x, (8, 11), n_init=2, seed=5, first_labels=True)
    b = batched.kmeans(torch.as_tensor(x), (8, 11), n_init=2, seed=5, first_labels=True)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.inertia, b.inertia)
    assert torch.equal(batched.gmm(x, (8, 11), seed=5).labels, batched.gmm(x, (8, 11), seed=5).labels)
    c = batched.kmeans(x, (8, 11), n_init=2, seed=6, first_labels=True)
    assert not torch.equal(a.first_labels, c.first_labels)


# -- robustness ------------------------------------------------------------------------------------

def test_gmm_retries_each_member_and_k_with_more_regularisation(members, monkeypatch):
    xs, _ = members
    step = batched._Mixture.m_step
    tried = []

    def fails_for_member_1_k_6(self, stats, reg):
        params, coef, failed = step(self, stats, reg)
        tried.append((stats.shape[1], reg))
        if stats.shape[1] == 6 and reg < 1e-2:
            failed = failed.clone()
            failed[1] = True
        return params, coef, failed

    monkeypatch.setattr(batched._Mixture, "m_step", fails_for_member_1_k_6)
    result = batched.gmm(xs, (6, 9), seed=0)
    assert result.ok.all()
    expected = torch.full((len(xs), 2), 1e-6, dtype=torch.float64)
    expected[1, 0] = 1e-2
    assert torch.equal(result.reg_covar, expected)
    assert {reg for k, reg in tried if k == 6} == {1e-6, 1e-4, 1e-2}
    assert {reg for k, reg in tried if k == 9} == {1e-6}


def test_a_gmm_that_never_fits_is_null_with_one_warning(monkeypatch, caplog):
    x, y = latents(600, 4, 5, 0)
    step = batched._Mixture.m_step

    def always_fails(self, stats, reg):
        params, coef, failed = step(self, stats, reg)
        return params, coef, torch.ones_like(failed)

    monkeypatch.setattr(batched._Mixture, "m_step", always_fails)
    assert not batched.gmm(x, (4,), seed=0).ok.any()
    assert (batched.gmm(x, (4,), seed=0).labels == -1).all()
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        scores = clustering_scores(x, y, ks=(4, 5), n_init=1, backend="torch").scores
    assert math.isnan(scores["ari_gmm_k4"]) and math.isfinite(scores["ari_kmeans_k4"])
    assert scores["best_method"] == "kmeans"
    lines = [r.getMessage() for r in caplog.records]
    assert any("gmm k=4" in m and "ari_gmm_k4 = null" in m for m in lines)
    assert all("\n" not in m for m in lines)


def test_degenerate_latents_with_the_torch_backend(caplog):
    x, y = latents(400, 3, 4, 0)
    constant = np.column_stack([x, np.zeros(len(x)), np.full(len(x), 3.0)])
    scores = clustering_scores(constant, y, ks=(4,), n_init=2, backend="torch").scores
    assert math.isfinite(scores["ari_kmeans_k4"]) and math.isfinite(scores["ari_gmm_k4"])
    # three distinct rows for k = 5: ties between equal centres, empty clusters relocated
    few = np.repeat(np.eye(3), [30, 20, 10], axis=0)
    result = batched.kmeans(few, (5,), n_init=2, seed=0)
    assert result.labels.shape == (1, 1, 60) and float(result.inertia[0, 0]) == pytest.approx(0, abs=1e-6)
    with caplog.at_level(logging.WARNING, logger="lithovae"):
        short = clustering_scores(x[:8], y[:8], ks=(4, 12), n_init=1, backend="torch").scores
        single = clustering_scores(x, np.zeros(len(x), dtype=int), ks=(4,), n_init=1, backend="torch")
        bad = x.copy()
        bad[5, 1] = np.inf
        infinite = clustering_scores(bad, y, ks=(4,), n_init=1, backend="torch").scores
    assert math.isnan(short["ari_kmeans_k12"]) and math.isfinite(short["ari_kmeans_k4"])
    assert math.isnan(single.scores["ari_best"]) and single.assignment is None
    assert math.isnan(infinite["ari_best"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("kmeans k=12" in m for m in messages) and any("ARI is undefined" in m for m in messages)
    assert any("non-finite" in m for m in messages)


def test_a_subsampled_fit_predicts_every_row():
    x, y = latents(2000, 5, 6, 3)
    result = clustering_scores(x, y, ks=(6,), seed=4, n_init=2, gmm=False, max_fit_samples=300,
                               backend="torch")
    rows = seeded_subsample(len(x), 300, 4)
    fit = batched.kmeans(x[rows], (6,), n_init=2, seed=4)
    expected = batched.kmeans_predict(x, fit)[0, 0].numpy()
    assert result.assignment.shape == (len(x),) and np.array_equal(result.assignment, expected)
    assert result.scores["ari_kmeans_k6"] == adjusted_rand_score(y, expected)


def test_an_unknown_backend_is_an_error():
    x, y = latents(100, 3, 3, 0)
    with pytest.raises(ValueError, match="backend"):
        clustering_scores(x, y, ks=(3,), backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        silhouette(x, y, 50, 0, backend="numpy")
