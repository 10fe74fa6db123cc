"""Batched clustering in torch: k-means, Gaussian mixtures and the silhouette score.

What :mod:`lithovae.evaluation.metrics` does with scikit-learn, one fit at a time, done here
for every ``k``, every k-means restart and every member of a sweep in one computation on the
device of the input (CPU or GPU):

- :func:`kmeans`: k-means++ seeding (sklearn's greedy variant), Lloyd iterations with sklearn's
  stopping rule (squared centre shift <= ``tol`` x mean feature variance), the restart of lowest
  inertia per k. The centres of all restarts of all ks (and members) are one matrix: a Lloyd
  step is two matrix products per block of rows; restarts converged in every member drop out.
- :func:`gmm`: EM for full (or diagonal) covariance mixtures, initialised like sklearn's default
  (``init_params="kmeans"``: hard responsibilities from one k-means run, i.e. restart 0 of
  :func:`kmeans` with the same seed), ``reg_covar`` added to the diagonal, stopped when the mean
  log-likelihood changes by less than ``tol``. A (member, k) whose covariances are not positive
  definite is refitted with ``reg_covar`` 1e-4 then 1e-2 and is reported as failed if all fail.
- :func:`silhouette`: sklearn's ``silhouette_score`` on a seeded subsample, in row chunks;
  :func:`silhouettes`: that of several clusterings of the same rows, the distances computed once.

Every result is deterministic given ``seed``: the random draws come from CPU
``torch.Generator`` objects seeded from it (one per k-means restart, so that restart ``r``
is the same whatever ``n_init`` is), and are the same for every member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GMM_REG_COVAR", "KMeansResult", "GMMResult", "kmeans", "kmeans_predict", "gmm",
           "gmm_predict", "silhouette", "silhouettes", "seeded_subsample", "adjusted_rand"]

GMM_REG_COVAR = (1e-6, 1e-4, 1e-2)  # sklearn's default first, then stronger regularisation
CHUNK_ELEMENTS = 1 << 19  # elements of one [columns, rows] block per member (2 MiB in float32)


@dataclass
class KMeansResult:
    """Output of :func:`kmeans` for M members and K values of k (kmax = max(ks)).

    ``labels``: [M, K, N] cluster of each fitted row, best restart. ``centers``: [M, K, kmax, D]
    (rows >= k are NaN). ``inertia``: [M, K] float64. ``n_iter``: [M, K] Lloyd iterations of the
    best restart. ``first_labels``: [M, K, N] labels of restart 0 (what sklearn's Gaussian
    mixture starts from), when asked for.
    """

    ks: tuple[int, ...]
    labels: torch.Tensor
    centers: torch.Tensor
    inertia: torch.Tensor
    n_iter: torch.Tensor
    first_labels: torch.Tensor | None = None


@dataclass
class GMMResult:
    """Output of :func:`gmm` for M members and K values of k.

    ``labels``: [M, K, N] most probable component of each fitted row (-1 where the fit failed).
    ``ok``: [M, K] bool, False where every ``reg_covar`` gave a non positive definite covariance.
    ``reg_covar``: [M, K] the regularisation that fitted (NaN where failed). ``lower_bound``,
    ``n_iter``, ``converged``: [M, K], as sklearn's attributes. ``weights`` [M, K, kmax],
    ``means`` [M, K, kmax, D], ``covariances`` [M, K, kmax, D, D] (full) or [M, K, kmax, D]
    (diag), float64, padding components with weight 0.
    """

    ks: tuple[int, ...]
    labels: torch.Tensor
    ok: torch.Tensor
    reg_covar: torch.Tensor
    lower_bound: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    covariance: str = "full"


# -- helpers -------------------------------------------------------------------------------------

def _members(x) -> torch.Tensor:
    """``x`` as a [M, N, D] tensor (a numpy array goes to the CPU)."""
    x = torch.as_tensor(x)
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"x must be [N, D] or [M, N, D], got shape {tuple(x.shape)}")
    return x


def _check_ks(ks: Sequence[int], n: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive ints, got {ks}")
    if max(ks) > n:
        raise ValueError(f"k={max(ks)} is larger than the {n} rows to cluster")
    return ks


def _row_step(columns: int) -> int:
    """Rows per block such that a [columns, rows] block (per member) has ~CHUNK_ELEMENTS elements.
    It depends on the problem (ks, restarts), not on the members or the runs still active, so
    a member's sums are added in the same order alone or in a batch."""
    return max(16, CHUNK_ELEMENTS // max(1, columns))


def _per_member(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` of each member of ``x`` [M, ...], stacked: a reduction over rows done member by
    member, so that its rounding does not depend on how many members are batched."""
    return torch.stack([fn(member) for member in x])


def _chunks(n: int, step: int):
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def seeded_subsample(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of ``size`` out of ``n`` (all rows if None or n <= size)."""
    if size is None or n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


# -- k-means -------------------------------------------------------------------------------------
# A "group" is (k, centres [M, A, k, D]): A runs with k clusters each. The centres of all groups
# are stacked as the rows of one [M, columns, D] matrix, and distances are computed as
# [M, columns, rows] blocks: the minimum over a run's k slots is then a reduction over a middle
# axis with the rows contiguous, which is fast; nothing is padded.

def _restart_draws(seed: int, n_init: int, n: int, kmax: int, trials: int):
    """Per restart: the first centre's row and the uniforms of the k-means++ trials.
    Restart r draws from its own generator, so it does not depend on n_init."""
    base = torch.Generator().manual_seed(int(seed))
    first, uniforms = [], []
    for _ in range(n_init):
        gen = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=base)))
        first.append(torch.randint(n, (1,), generator=gen))
        uniforms.append(torch.rand(max(kmax - 1, 0), trials, generator=gen, dtype=torch.float64))
    return torch.cat(first), torch.stack(uniforms)  # [R], [R, kmax - 1, trials]


def _kmeans_plusplus(x: torch.Tensor, xt: torch.Tensor, xn: torch.Tensor, kmax: int, n_init: int,
                     seed: int) -> torch.Tensor:
    """Greedy k-means++ (sklearn's ``_kmeans_plusplus``, 2 + log(kmax) local trials) for each
    member and restart: centres [M, R, kmax, D]. The first k centres are the k-means++ seeding
    for k (the draws are those of kmax)."""
    m, n, d = x.shape
    trials = 2 + int(np.log(kmax))
    first, uniforms = _restart_draws(seed, n_init, n, kmax, trials)
    first, uniforms = first.to(x.device), uniforms.to(x.device)
    members = torch.arange(m, device=x.device)[:, None]
    centers = x.new_empty(m, n_init, kmax, d)
    centers[:, :, 0] = x[:, first]
    # squared distance of every row to its closest centre: [M, R, N]
    closest = torch.baddbmm(xn[:, None, :] + (centers[:, :, 0] ** 2).sum(-1, keepdim=True),
                            centers[:, :, 0], xt, alpha=-2).clamp_min_(0)
    for c in range(1, kmax):
        cum = closest.double().cumsum(-1)
        targets = uniforms[None, :, c - 1] * cum[..., -1:]  # [M, R, trials]
        cand = torch.searchsorted(cum, targets).clamp_(max=n - 1)
        cand_x = x[members, cand.reshape(m, -1)]  # [M, R * trials, D]
        dist = torch.baddbmm(xn[:, None, :] + (cand_x ** 2).sum(-1, keepdim=True), cand_x, xt,
                             alpha=-2).clamp_min_(0)
        dist = torch.minimum(dist.view(m, n_init, trials, n), closest[:, :, None])
        best = dist.sum(-1, dtype=torch.float64).argmin(-1)  # [M, R]
        closest = dist.gather(2, best[:, :, None, None].expand(m, n_init, 1, n)).squeeze(2)
        centers[:, :, c] = x[members, cand.gather(2, best[:, :, None]).squeeze(2)]
    return centers


def _stacked(groups) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of all groups as [M, columns, D] and their squared norms [M, columns, 1]."""
    m, d = groups[0][1].shape[0], groups[0][1].shape[-1]
    c = torch.cat([centers.reshape(m, -1, d) for _, centers in groups], 1)
    return c, (c ** 2).sum(-1, keepdim=True)


def _blocks(dist: torch.Tensor, groups):
    """Views [M, A, k, rows] of a [M, columns, rows] distance block, one per group."""
    m, offset = dist.shape[0], 0
    for k, centers in groups:
        size = centers.shape[1] * k
        yield dist[:, offset:offset + size].view(m, centers.shape[1], k, -1)
        offset += size


def _nearest(xt: torch.Tensor, xn: torch.Tensor | None, groups, step: int, labels: bool = True):
    """Per group: labels [M, A, N] of the nearest centre of every row (None unless ``labels``) and
    the inertia [M, A] float64 (None unless ``xn``, the rows' squared norms, is given)."""
    m, _, n = xt.shape
    c, cn = _stacked(groups)
    out = [torch.empty(m, g[1].shape[1], n, dtype=torch.int64, device=xt.device) if labels else None
           for g in groups]
    total = [xt.new_zeros(m, g[1].shape[1], dtype=torch.float64) for g in groups]
    for rows in _chunks(n, step):
        dist = torch.baddbmm(cn, c, xt[:, :, rows], alpha=-2)
        for i, block in enumerate(_blocks(dist, groups)):
            if labels:
                near, out[i][:, :, rows] = block.min(2)
            else:
                near = block.amin(2)
            if xn is not None:
                total[i] += (near + xn[:, None, rows]).clamp_min_(0).sum(-1, dtype=torch.float64)
    return out, (total if xn is not None else None)


def _exact_sums(x1: torch.Tensor, xt: torch.Tensor, k: int, centers: torch.Tensor, step: int) -> torch.Tensor:
    """Sums and counts [M, A, k, D + 1] of the rows nearest to each centre (ties: first centre)."""
    (labels,), _ = _nearest(xt, None, [(k, centers)], step)
    m, a, n = labels.shape
    index = labels + torch.arange(0, m * a * k, k, device=xt.device).view(m, a, 1)
    sums = x1.new_zeros(m * a * k, x1.shape[-1])
    sums.index_add_(0, index.reshape(-1), x1[:, None].expand(m, a, n, -1).reshape(-1, x1.shape[-1]))
    return sums.view(m, a, k, -1)


def _lloyd_step(x1: torch.Tensor, xt: torch.Tensor, x1t: torch.Tensor, groups, step: int):
    """One Lloyd iteration of every run of ``groups``; ``x1`` [M, N, D + 1] are the rows with a
    trailing 1, ``xt`` [M, D, N] the rows transposed, ``x1t`` [M, D + 1, N] ``x1`` transposed.
    Returns per group the new centres [M, A, k, D] and the squared centre shift [M, A].

    The assignment is ``distance == minimum`` over a run's slots, summed with one matrix product;
    a run where a row ties between two centres (duplicate rows or centres) is redone with an
    argmin. An empty cluster takes the row farthest from its centre (sklearn)."""
    m, n, d1 = x1.shape
    c, cn = _stacked(groups)
    # the sums as [D + 1, columns] = rows^T @ assignment: ~3.5x faster on one CPU thread than
    # [columns, D + 1] = assignment^T @ rows (a long output row per product, not 11 short ones)
    acc_t = x1.new_zeros(m, d1, c.shape[1])
    for rows in _chunks(n, step):
        dist = torch.baddbmm(cn, c, xt[:, :, rows], alpha=-2)
        for block in _blocks(dist, groups):
            torch.eq(block, block.amin(2, keepdim=True), out=block)
        acc_t.baddbmm_(x1t[:, :, rows], dist.transpose(1, 2))
    acc = acc_t.transpose(1, 2).contiguous()
    out, offset = [], 0
    for k, centers in groups:
        a = centers.shape[1]
        sums = acc[:, offset:offset + a * k].view(m, a, k, d1)
        offset += a * k
        tied = sums[..., -1].sum(-1) != n  # [M, A]: a row counted twice
        if bool(tied.any()):  # only those runs: the others keep their own rounding
            sums = torch.where(tied[..., None, None], _exact_sums(x1, xt, k, centers, step), sums)
        empty = sums[..., -1] == 0
        if bool(empty.any()):
            sums = sums.clone()
            _relocate_empty(x1[..., :-1], centers, sums, empty)
        new = sums[..., :-1] / sums[..., -1:].clamp_min(1)
        out.append((new, ((new - centers) ** 2).sum((-1, -2))))
    return out


def _relocate_empty(x, centers, sums, empty):
    """sklearn's ``_relocate_empty_clusters``: the empty clusters of a run take the rows
    farthest from their centres, which leave their clusters. Rare: a loop over those runs."""
    for mi, ai in empty.any(-1).nonzero().tolist():
        near, lab = ((x[mi, :, None, :] - centers[mi, ai][None]) ** 2).sum(-1).min(-1)
        slots = empty[mi, ai].nonzero().flatten().tolist()
        for slot, row in zip(slots, near.topk(len(slots)).indices.tolist()):
            old = int(lab[row])
            sums[mi, ai, old, :-1] -= x[mi, row]
            sums[mi, ai, old, -1] -= 1
            sums[mi, ai, slot, :-1] = x[mi, row]
            sums[mi, ai, slot, -1] = 1


def _active_groups(active: torch.Tensor, ks, per_k: int):
    """(k, runs) for each k with a run active in some member; run = (index of k) * per_k + r."""
    any_member = active.any(0)
    out = []
    for g, k in enumerate(ks):
        runs = any_member[g * per_k:(g + 1) * per_k].nonzero().flatten() + g * per_k
        if len(runs):
            out.append((k, runs))
    return out


def kmeans(x, ks: Sequence[int], n_init: int, seed: int, max_iter: int = 300, tol: float = 1e-4,
           *, first_labels: bool = False, init: torch.Tensor | None = None) -> KMeansResult:
    """k-means of ``x`` ([N, D] or [M, N, D]: M independent members) for every k in ``ks``, with
    ``n_init`` k-means++ restarts each; the restart of lowest inertia per (member, k) is kept.

    Lloyd steps run in float32 on the centred rows; a restart stops when its squared centre
    shift is <= ``tol`` times the mean feature variance (sklearn's rule: unchanged labels give
    a zero shift). A restart converged in every member leaves the computation. Results have a
    leading member axis even for 2-D input. ``init`` ([R, kmax, D] or [M, R, kmax, D], in the
    coordinates of ``x``): starting centres instead of k-means++ (restart r, k: its first k).
    """
    xs = _members(x)
    m, n, d = xs.shape
    ks = _check_ks(ks, n)
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    dev = xs.device
    x64 = xs.to(torch.float64)
    mean = _per_member(lambda rows: rows.mean(0, keepdim=True), x64)  # [M, 1, D]
    centred64 = x64 - mean
    tol_abs = _per_member(lambda rows: rows.var(0, unbiased=False).mean() * tol, centred64).float()
    xc = centred64.float()
    xt = xc.transpose(1, 2).contiguous()
    xn = (xc ** 2).sum(-1)
    x1 = torch.cat([xc, xc.new_ones(m, n, 1)], -1)
    x1t = x1.transpose(1, 2).contiguous()
    kmax, n_k = max(ks), len(ks)
    p = n_k * n_init  # run = (index of k) * n_init + restart
    if init is None:
        init = _kmeans_plusplus(xc, xt, xn, kmax, n_init, seed)  # [M, R, kmax, D]
    else:
        init = (torch.as_tensor(init, device=dev, dtype=torch.float64).expand(m, n_init, kmax, d)
                - mean[:, None]).float()
    step = _row_step(n_init * sum(ks))
    centers = init[:, None].expand(m, n_k, n_init, kmax, d).reshape(m, p, kmax, d).contiguous()
    active = torch.ones(m, p, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(m, p, dtype=torch.int64, device=dev)
    for _ in range(max_iter):
        selection = _active_groups(active, ks, n_init)
        if not selection:
            break
        steps = _lloyd_step(x1, xt, x1t, [(k, centers[:, runs, :k]) for k, runs in selection], step)
        for (k, runs), (new, shift) in zip(selection, steps):
            update = active[:, runs]
            block = centers[:, runs]
            block[:, :, :k] = torch.where(update[..., None, None], new, block[:, :, :k])
            centers[:, runs] = block
            n_iter[:, runs] += update
            active[:, runs] = update & ~(shift <= tol_abs[:, None])
    everything = [(k, centers[:, g * n_init:(g + 1) * n_init, :k]) for g, k in enumerate(ks)]
    _, inertia = _nearest(xt, xn, everything, step, labels=False)
    inertia = torch.stack(inertia, 1)  # [M, K, R]
    best = inertia.argmin(-1)  # first restart on ties, like sklearn
    runs = torch.arange(n_k, device=dev) * n_init + best  # [M, K]
    best_centers = centers[torch.arange(m, device=dev)[:, None], runs]  # [M, K, kmax, D]
    labels, _ = _nearest(xt, None, [(k, best_centers[:, g:g + 1, :k]) for g, k in enumerate(ks)], step)
    first = None
    if first_labels:
        first, _ = _nearest(xt, None, [(k, centers[:, g * n_init:g * n_init + 1, :k])
                                       for g, k in enumerate(ks)], step)
        first = torch.cat(first, 1)
    slot_ok = torch.arange(kmax, device=dev) < torch.tensor(ks, device=dev)[:, None]  # [K, kmax]
    out_centers = (best_centers.double() + mean[:, None]).masked_fill(~slot_ok[None, :, :, None], float("nan"))
    return KMeansResult(ks=ks, labels=torch.cat(labels, 1), centers=out_centers,
                        inertia=inertia.gather(2, best[..., None]).squeeze(2),
                        n_iter=n_iter.gather(1, runs), first_labels=first)


def kmeans_predict(x, result: KMeansResult) -> torch.Tensor:
    """Nearest centre of each row of ``x`` ([N, D] or [M, N, D]) for every (member, k): [M, K, N]."""
    xs = _members(x)
    centers = result.centers.to(xs.device)
    origin = centers[:, :, 0].mean(1, keepdim=True)  # [M, 1, D]: centring, for float32 precision
    xt = (xs.double() - origin).float().transpose(1, 2).contiguous()
    shifted = (centers - origin[:, None]).float()
    labels, _ = _nearest(xt, None, [(k, shifted[:, g:g + 1, :k]) for g, k in enumerate(result.ks)],
                         _row_step(sum(result.ks)))
    return torch.cat(labels, 1)


# -- Gaussian mixtures ---------------------------------------------------------------------------
# The weighted log density of every component is a linear function of the features
# [x_i x_j (i <= j; x_i^2 for diagonal covariances), x, 1] of a row: one matrix product gives
# the log densities of all components of all ks, and one more the M-step's weighted sums.

class _Mixture:
    def __init__(self, d: int, covariance: str, device):
        if covariance not in ("full", "diag"):
            raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.d, self.covariance = d, covariance
        if covariance == "full":
            self.pairs = torch.triu_indices(d, d, device=device)
            self.n_quad = self.pairs.shape[1]
            i, j = self.pairs
            self.twice = torch.where(i == j, 1.0, 2.0).to(device, torch.float64)
        else:
            self.n_quad = d
        self.n_features = self.n_quad + d + 1

    def features_t(self, xt: torch.Tensor) -> torch.Tensor:
        """Features of rows ``xt`` [M, D, n] as [M, F, n]."""
        quad = xt[:, self.pairs[0]] * xt[:, self.pairs[1]] if self.covariance == "full" else xt * xt
        return torch.cat([quad, xt, xt.new_ones(xt.shape[0], 1, xt.shape[2])], 1)

    def coefficients(self, weights, means, covariances):
        """Coefficients [..., k, F] of the weighted log densities, and ``failed`` [...]: a
        covariance that is not positive definite (or not finite)."""
        d = self.d
        if self.covariance == "full":
            finite = torch.isfinite(covariances).flatten(-2).all(-1)
            eye = torch.eye(d, dtype=covariances.dtype, device=covariances.device)
            chol, info = torch.linalg.cholesky_ex(torch.where(finite[..., None, None], covariances, eye))
            bad = (info > 0) | ~finite
            chol = torch.where(bad[..., None, None], eye, chol)
            precision = torch.cholesky_inverse(chol)
            log_det = -chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # of the precision's Cholesky
            quad = -0.5 * precision[..., self.pairs[0], self.pairs[1]] * self.twice
            linear = (precision @ means[..., None]).squeeze(-1)
        else:
            bad = ~(covariances > 0).all(-1) | ~torch.isfinite(covariances).all(-1)
            var = torch.where(bad[..., None], torch.ones_like(covariances), covariances)
            precision = 1 / var
            log_det = -0.5 * var.log().sum(-1)
            quad = -0.5 * precision
            linear = precision * means
        const = (-0.5 * (linear * means).sum(-1) - 0.5 * d * math.log(2 * math.pi) + log_det
                 + weights.log())
        return torch.cat([quad, linear, const[..., None]], -1), bad.any(-1)

    def m_step(self, stats: torch.Tensor, reg: float):
        """sklearn's ``_estimate_gaussian_parameters`` from the responsibility-weighted feature
        sums ``stats`` [M, k, F]: (weights, means, covariances), coefficients and ``failed`` [M]."""
        d, q = self.d, self.n_quad
        nk = stats[..., -1] + 10 * torch.finfo(torch.float64).eps
        means = stats[..., q:q + d] / nk[..., None]
        second = stats[..., :q] / nk[..., None]
        weights = nk / nk.sum(-1, keepdim=True)
        if self.covariance == "full":
            i, j = self.pairs
            cov = stats.new_zeros(*stats.shape[:-1], d, d)
            cov[..., i, j] = second
            cov[..., j, i] = second
            cov = cov - means[..., :, None] * means[..., None, :]
            cov.diagonal(dim1=-2, dim2=-1).add_(reg)
        else:
            cov = second - means ** 2 + reg
        coef, failed = self.coefficients(weights, means, cov)
        return (weights, means, cov), coef, failed


def _mixture_pass(mix: _Mixture, xt: torch.Tensor, groups, step: int, hard=None, labels: bool = False):
    """One pass over the rows for the mixtures ``groups`` [(k, coefficients [M, k, F])].

    ``hard`` [(k, labels [M, N])]: feature sums per cluster of hard labels instead (the
    k-means initialisation). Otherwise the E-step: feature sums weighted by the
    responsibilities and the summed log-likelihood [M] per group, or with ``labels`` the most
    probable component [M, N] per group."""
    m, _, n = xt.shape
    ks = [k for k, _ in (hard if hard is not None else groups)]
    cols = sum(ks)
    offsets = np.cumsum([0] + ks[:-1]).tolist()
    w = torch.cat([c for _, c in groups], 1) if hard is None else None
    stats = xt.new_zeros(m, cols, mix.n_features)
    loglik = [xt.new_zeros(m) for _ in ks]
    out = [torch.empty(m, n, dtype=torch.int64, device=xt.device) for _ in ks] if labels else None
    for rows in _chunks(n, step):
        phi = mix.features_t(xt[:, :, rows])  # [M, F, n]
        if hard is not None:
            resp = xt.new_zeros(m, cols, phi.shape[2])
            for (k, lab), o in zip(hard, offsets):
                resp.scatter_(1, lab[:, None, rows] + o, 1.0)
        else:
            resp = torch.bmm(w, phi)  # weighted log densities [M, cols, n]
            for i, (k, o) in enumerate(zip(ks, offsets)):
                block = resp[:, o:o + k]
                if labels:
                    out[i][:, rows] = block.argmax(1)
                    continue
                top = block.amax(1, keepdim=True)
                # exp() of large negative numbers is very slow on CPU (denormals); below -700
                # (a responsibility < 1e-304) it changes nothing
                block.sub_(top).clamp_(min=-700.0).exp_()
                total = block.sum(1, keepdim=True)
                block.div_(total)
                loglik[i] += (top + total.log()).sum(-1)[:, 0]
        if not labels:
            stats.baddbmm_(resp, phi.transpose(1, 2))
    if labels:
        return out
    return [stats[:, o:o + k] for k, o in zip(ks, offsets)], loglik


def _em(mix: _Mixture, xt: torch.Tensor, ks, init_labels: torch.Tensor, todo: torch.Tensor,
        reg: float, max_iter: int, tol: float):
    """EM from hard ``init_labels`` [M, K, N] for the (member, k) in ``todo`` [M, K] (a k is
    computed for every member when one needs it, and written back only where needed).
    Returns per k (params, coefficients) lists and failed / lower_bound / n_iter / converged [M, K]."""
    n, dev = xt.shape[2], xt.device
    wanted = [g for g in range(len(ks)) if bool(todo[:, g].any())]
    params, coefs = [None] * len(ks), [None] * len(ks)
    failed = torch.zeros_like(todo)
    step = _row_step(sum(ks) + mix.n_features)
    stats, _ = _mixture_pass(mix, xt, None, step, hard=[(ks[g], init_labels[:, g]) for g in wanted])
    for g, s in zip(wanted, stats):
        params[g], coefs[g], failed[:, g] = mix.m_step(s, reg)
    failed &= todo
    active = todo & ~failed
    bound = torch.full(todo.shape, -math.inf, dtype=torch.float64, device=dev)
    n_iter = torch.zeros(todo.shape, dtype=torch.int64, device=dev)
    converged = torch.zeros_like(todo)
    for _ in range(max_iter):
        groups = [g for g in range(len(ks)) if bool(active[:, g].any())]
        if not groups:
            break
        stats, loglik = _mixture_pass(mix, xt, [(ks[g], coefs[g]) for g in groups], step)
        for g, s, ll in zip(groups, stats, loglik):
            new_params, new_coef, bad = mix.m_step(s, reg)
            update = active[:, g]
            bad &= update
            good = update & ~bad
            new_bound = ll / n
            params[g] = tuple(torch.where(good.view(-1, *[1] * (a.ndim - 1)), a, b)
                              for a, b in zip(new_params, params[g]))
            coefs[g] = torch.where(good[:, None, None], new_coef, coefs[g])
            done = good & ((new_bound - bound[:, g]).abs() < tol)
            bound[:, g] = torch.where(update, new_bound, bound[:, g])
            n_iter[:, g] += update
            failed[:, g] |= bad
            converged[:, g] |= done
            active[:, g] = good & ~done
    return params, coefs, failed, bound, n_iter, converged


def gmm(x, ks: Sequence[int], seed: int, reg_covar: float = 1e-6, max_iter: int = 100,
        tol: float = 1e-3, *, covariance: str = "full", init_labels: torch.Tensor | None = None,
        predict=None) -> GMMResult:
    """Gaussian mixtures of ``x`` ([N, D] or [M, N, D]) for every k in ``ks``, in float64.

    Initialised from hard k-means labels like sklearn (``init_params="kmeans"``): one k-means
    run with ``seed`` (restart 0 of :func:`kmeans`), or ``init_labels`` [M, K, N] when given.
    A (member, k) whose covariances are not positive definite is refitted from the same start
    with ``reg_covar`` 1e-4, then 1e-2 (the larger values of :data:`GMM_REG_COVAR`); ``ok`` is
    False where all fail. ``predict``: rows ([N', D] or [M, N', D]) to label instead of ``x``.
    """
    xs = _members(x)
    m, n, d = xs.shape
    ks = _check_ks(ks, n)
    dev = xs.device
    mix = _Mixture(d, covariance, dev)
    if init_labels is None:
        init_labels = kmeans(xs, ks, n_init=1, seed=seed).labels
    init_labels = init_labels.to(dev)
    mean = _per_member(lambda rows: rows.mean(0, keepdim=True), xs.to(torch.float64))
    xt = (xs.to(torch.float64) - mean).transpose(1, 2).contiguous()
    kmax, n_k = max(ks), len(ks)
    f64 = dict(dtype=torch.float64, device=dev)
    weights = torch.zeros(m, n_k, kmax, **f64)
    means = torch.full((m, n_k, kmax, d), float("nan"), **f64)
    covs = torch.full((m, n_k, kmax, *((d, d) if covariance == "full" else (d,))), float("nan"), **f64)
    coefs = [None] * n_k
    used = torch.full((m, n_k), float("nan"), **f64)
    bound = torch.full((m, n_k), -math.inf, **f64)
    n_iter = torch.zeros(m, n_k, dtype=torch.int64, device=dev)
    converged = torch.zeros(m, n_k, dtype=torch.bool, device=dev)
    todo = torch.ones(m, n_k, dtype=torch.bool, device=dev)
    for reg in (reg_covar, *[r for r in GMM_REG_COVAR if r > reg_covar]):
        params, coef, failed, b, it, conv = _em(mix, xt, ks, init_labels, todo, reg, max_iter, tol)
        fitted = todo & ~failed
        for g, k in enumerate(ks):
            keep = fitted[:, g]
            if not bool(keep.any()):
                continue
            w, mu, cv = params[g]
            weights[keep, g, :k], means[keep, g, :k], covs[keep, g, :k] = w[keep], mu[keep], cv[keep]
            coefs[g] = coef[g] if coefs[g] is None else torch.where(keep[:, None, None], coef[g], coefs[g])
        used[fitted], bound[fitted], n_iter[fitted], converged[fitted] = reg, b[fitted], it[fitted], conv[fitted]
        todo = todo & failed
        if not bool(todo.any()):
            break
    fitted = ~todo
    rows = xt if predict is None else (_members(predict).to(dev, torch.float64) - mean).transpose(1, 2)
    groups = [(k, coefs[g] if coefs[g] is not None else torch.zeros(m, k, mix.n_features, **f64))
              for g, k in enumerate(ks)]
    step = _row_step(sum(ks) + mix.n_features)
    labels = torch.stack(_mixture_pass(mix, rows.contiguous(), groups, step, labels=True), 1)
    return GMMResult(ks=ks, labels=labels.masked_fill(~fitted[..., None], -1), ok=fitted,
                     reg_covar=used, lower_bound=bound, n_iter=n_iter, converged=converged,
                     weights=weights, means=means + mean[:, None], covariances=covs,
                     covariance=covariance)


def gmm_predict(x, result: GMMResult) -> torch.Tensor:
    """Most probable component of each row of ``x`` for every (member, k): [M, K, N]
    (-1 where the fit failed)."""
    dev = result.weights.device
    xs = _members(x).to(dev, torch.float64)
    mix = _Mixture(xs.shape[-1], result.covariance, dev)
    origin = result.means[:, :, 0].nan_to_num().mean(1, keepdim=True)  # [M, 1, D]: for precision
    groups = []
    for g, k in enumerate(result.ks):
        coef, _ = mix.coefficients(result.weights[:, g, :k], result.means[:, g, :k] - origin,
                                   result.covariances[:, g, :k])
        groups.append((k, coef.nan_to_num()))
    xt = (xs - origin).transpose(1, 2).contiguous()
    step = _row_step(sum(result.ks) + mix.n_features)
    labels = torch.stack(_mixture_pass(mix, xt, groups, step, labels=True), 1)
    return labels.masked_fill(~result.ok[..., None], -1)


# -- silhouette and ARI --------------------------------------------------------------------------

def silhouette(x, labels, sample_size: int | None, seed: int) -> float:
    """sklearn's ``silhouette_score`` (Euclidean) of ``labels`` on the rows
    :func:`seeded_subsample` picks (the same rows as the sklearn backend), in float64 and in row
    chunks. NaN when the sample has fewer than 2 clusters or every row is its own cluster."""
    labels = torch.as_tensor(labels)
    return silhouettes(x, labels.reshape(1, -1), sample_size, seed)[0]


def silhouettes(x, labels, sample_size: int | None, seed: int) -> list[float]:
    """:func:`silhouette` of each row of ``labels`` [B, N] (several clusterings of the same rows,
    e.g. k-means at every k) on the same seeded sample: the distances are computed once."""
    x = torch.as_tensor(x)
    labels = torch.as_tensor(labels)
    if x.ndim != 2 or labels.ndim != 2 or labels.shape[1] != x.shape[0]:
        raise ValueError(f"x must be [N, D] with one label per row, got {tuple(x.shape)} and "
                         f"{tuple(labels.shape)}")
    rows = torch.as_tensor(seeded_subsample(x.shape[0], sample_size, seed), device=x.device)
    x = x[rows].to(torch.float64)
    n = x.shape[0]
    runs = []  # (b, code, freq, onehot) of every clustering with a defined score
    scores = [float("nan")] * labels.shape[0]
    for b in range(labels.shape[0]):
        _, code = torch.unique(labels[b].to(x.device)[rows], return_inverse=True)
        freq = torch.bincount(code).to(torch.float64)
        if 2 <= freq.shape[0] < n:
            onehot = torch.zeros(n, freq.shape[0], dtype=torch.float64, device=x.device)
            onehot[torch.arange(n, device=x.device), code] = 1
            runs.append((b, code, freq, onehot))
    if not runs:
        return scores
    xn = (x ** 2).sum(-1)
    totals = torch.zeros(len(runs), dtype=torch.float64, device=x.device)
    step = max(1, CHUNK_ELEMENTS // n)
    for s in range(0, n, step):
        block = torch.addmm(xn[s:s + step, None] + xn[None], x[s:s + step], x.T, alpha=-2)
        block.clamp_min_(0)
        block.diagonal(offset=s).zero_()
        block.sqrt_()
        for r, (_, code, freq, onehot) in enumerate(runs):
            sums = block @ onehot  # [c, clusters]: summed distances to each cluster
            own = code[s:s + step, None]
            intra = sums.gather(1, own).squeeze(1) / (freq[own.squeeze(1)] - 1)
            inter = (sums / freq).scatter_(1, own, math.inf).amin(1)
            score = (inter - intra) / torch.maximum(intra, inter)
            totals[r] += torch.nan_to_num(score, nan=0.0).sum()
    for r, (b, *_) in enumerate(runs):
        scores[b] = float(totals[r] / n)
    return scores


def adjusted_rand(labels_true, labels_pred) -> list[float]:
    """sklearn's ``adjusted_rand_score`` of ``labels_true`` [N] against each row of
    ``labels_pred`` ([N] or [B, N]), from the same integer pair counts (so the same floats).
    Returns one float per row."""
    true = torch.as_tensor(labels_true).reshape(-1)
    pred = torch.as_tensor(labels_pred)
    pred = pred.reshape(-1, pred.shape[-1]).to(true.device)
    if pred.shape[1] != true.shape[0]:
        raise ValueError(f"{true.shape[0]} true labels but {pred.shape[1]} predicted per row")
    n = true.shape[0]
    _, t = torch.unique(true, return_inverse=True)
    _, p = torch.unique(pred, return_inverse=True)  # codes shared across rows: fine for counting
    n_t, n_p, b = int(t.max()) + 1 if n else 1, int(p.max()) + 1 if n else 1, pred.shape[0]
    rows = torch.arange(b, device=true.device)[:, None]
    table = torch.bincount(((rows * n_t + t) * n_p + p).reshape(-1), minlength=b * n_t * n_p)
    table = table.view(b, n_t, n_p)
    squares = (table ** 2).sum((1, 2)).tolist()
    true_sq = int((torch.bincount(t, minlength=n_t) ** 2).sum())
    pred_sq = (table.sum(1) ** 2).sum(-1).tolist()
    out = []
    for sq, psq in zip(squares, pred_sq):
        tp = sq - n
        fp = psq - sq  # sklearn's C[0, 1]: contingency . n_k - sum of squares
        fn = true_sq - sq
        tn = n * n - fp - fn - sq
        if fn == 0 and fp == 0:
            out.append(1.0)
        else:
            out.append(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
    return out
