"""Evaluation wall time: the torch backend against scikit-learn, in the same process.

The clustering part of ``score_model()`` on a test set of the default size (40 000 rows of
10-D latent means, drawn from a seeded mixture of 15 anisotropic Gaussians of unequal sizes,
labelled by component): for each k in ``eval.k`` = [10, 12, 15, 20], k-means with 10
restarts and a full-covariance GMM, ARI against the labels, then the silhouette of the best
clustering on a 10 000-row subsample. One CPU thread (torch and the BLAS under sklearn).
The two backends alternate over several rounds and the medians are compared, because a
shared machine is noisy.

Then M members (e.g. the models of a sweep) scored with ``clustering_scores_many`` (all in
one batched pass, and its CPU default of one member per pass) against M separate calls of the
torch backend.

Then the bootstrap over test boreholes (``lithovae.evaluation.bootstrap``) of what a run scores
on the same 40 000 rows cut into about 60 boreholes (contiguous runs): N resamples of 4 ARIs
(latent and raw features, selected and inductive clusterings), ``r2_mean`` on 6 features, and a
classifier's ``balanced_accuracy`` and ``auc_pooled`` over 140 classes. The goal: at most 2 s
added on one thread.

    python benchmarks/bench_eval.py [--rounds 2] [--members 8] [--threads 1] [--seeds 0] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from lithovae.evaluation import bootstrap
from lithovae.evaluation.metrics import clustering_scores, clustering_scores_many, silhouette

KS = (10, 12, 15, 20)
N_INIT = 10
SILHOUETTE_ROWS = 10_000


def mixture(rows: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent-like rows: a seeded mixture of anisotropic Gaussians of unequal sizes (float32)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(clusters, rows, p=rng.dirichlet(np.full(clusters, 2.0)))
    means = rng.normal(0, 3, (clusters, dim))
    shapes = rng.normal(0, 0.6, (clusters, dim, dim))
    x = means[y] + np.einsum("nij,nj->ni", shapes[y], rng.normal(size=(rows, dim)))
    return x.astype(np.float32), y


def evaluation(latent: np.ndarray, labels: np.ndarray, backend: str, seed: int = 0):
    """What score_model() computes for clustering: (wall seconds, scores, silhouette)."""
    started = time.perf_counter()
    result = clustering_scores(latent, labels, ks=KS, seed=seed, n_init=N_INIT, gmm=True,
                               max_fit_samples=None, backend=backend)
    sil = silhouette(latent, result.assignment, SILHOUETTE_ROWS, seed, backend=backend)
    return time.perf_counter() - started, result.scores, sil


def ari_table(scores: dict[str, dict]) -> None:
    names = list(scores)
    print(f"{'':14s}" + "".join(f"{name:>10s}" for name in names) + "   torch-sklearn")
    for method in ("kmeans", "gmm"):
        for k in KS:
            key = f"ari_{method}_k{k}"
            values = [scores[name][key] for name in names]
            print(f"{key:14s}" + "".join(f"{v:10.4f}" for v in values) + f"   {values[0] - values[1]:+.4f}")


def seed_spread(latent, labels, seeds: int) -> None:
    """ARI differences over seeds: torch vs sklearn (same seed), and sklearn vs sklearn (seed s vs
    s + 1), the spread a different random stream gives anyway."""
    runs = {backend: [evaluation(latent, labels, backend, seed)[1] for seed in range(seeds + 1)]
            for backend in ("torch", "sklearn")}
    print(f"\nARI differences over {seeds} seeds: mean (max |.|)")
    print(f"{'':14s}{'torch-sklearn':>24s}{'sklearn s vs s+1':>24s}{'torch mean':>12s}{'sklearn mean':>14s}")
    for method in ("kmeans", "gmm"):
        for k in KS:
            key = f"ari_{method}_k{k}"
            t = np.array([r[key] for r in runs["torch"][:seeds]])
            s = np.array([r[key] for r in runs["sklearn"][:seeds]])
            s_next = np.array([r[key] for r in runs["sklearn"][1:]])
            cross, own = t - s, s_next - s
            print(f"{key:14s}{cross.mean():+12.4f} ({np.abs(cross).max():.4f}){own.mean():+14.4f} "
                  f"({np.abs(own).max():.4f}){t.mean():12.4f}{s.mean():14.4f}")


def same_scores(a: list, b: list) -> bool:
    """The same scores (NaN equal to NaN) and assignments."""
    def key(result):
        return [(k, "nan" if isinstance(v, float) and np.isnan(v) else v) for k, v in result.scores.items()]
    return all(key(x) == key(y) and np.array_equal(x.assignment, y.assignment) for x, y in zip(a, b))


def members(args) -> None:
    """M members (mixtures of seeds 0..M-1, each with its own labels): one clustering_scores_many
    call with all of them in one batched pass, the same call with its default (one member per
    pass on the CPU), and M separate calls."""
    drawn = [mixture(args.rows, args.dim, 15, seed=s) for s in range(args.members)]
    latents, labels = np.stack([x for x, _ in drawn]), np.stack([y for _, y in drawn])
    options = dict(seed=0, n_init=N_INIT, gmm=True, max_fit_samples=None, backend="torch")
    times: dict[str, list[float]] = {"one pass": [], "default": [], "separate": []}
    results = {}
    for _ in range(args.rounds):
        for name in times:
            started = time.perf_counter()
            if name == "separate":
                results[name] = [clustering_scores(z, y, ks=KS, **options) for z, y in zip(latents, labels)]
            else:
                results[name] = clustering_scores_many(
                    latents, labels, KS, members_per_pass=args.members if name == "one pass" else None,
                    **options)
            times[name].append(time.perf_counter() - started)
    separate = statistics.median(times["separate"])
    print(f"\n{args.members} members, clustering only (torch), median of {args.rounds}:")
    for name, label in (("one pass", f"clustering_scores_many, all {args.members} in one batched pass"),
                        ("default", "clustering_scores_many, default (CPU: one member per pass)"),
                        ("separate", f"{args.members} separate clustering_scores calls")):
        median = statistics.median(times[name])
        print(f"  {label:58s} {median:7.2f} s  ({separate / median:.2f}x of separate; "
              f"same results: {same_scores(results[name], results['separate'])})")


def bootstrap_inputs(latent: np.ndarray, boreholes: int, classes: int, seed: int = 0):
    """What a run bootstraps: borehole ids (contiguous runs), 4 fixed clusterings (k-means on the
    latent and on 6 noisy "raw" features, fitted on all rows ("selected") or on the first half
    ("inductive")), a reconstruction of the raw features with missing entries, and a classifier's
    logits over ``classes`` classes (a tenth of the rows unlabeled)."""
    rng = np.random.default_rng(seed)
    rows = latent.shape[0]
    cuts = np.sort(rng.choice(np.arange(1, rows), boreholes - 1, replace=False))
    ids = np.repeat([f"well-{i:03d}" for i in range(boreholes)], np.diff(np.r_[0, cuts, rows]))
    raw = latent[:, :6] + rng.normal(0, 1.0, (rows, 6)).astype(np.float32)
    raw = (raw - raw.mean(0)) / raw.std(0)
    assignments = {}
    for space, z in (("latent", latent), ("raw", raw)):
        for name, fit_rows in (("selected", z), ("inductive", z[: rows // 2])):
            model = KMeans(n_clusters=15, n_init=1, random_state=seed).fit(fit_rows)
            assignments[f"{space} {name}"] = model.predict(z)
    observed = rng.random(raw.shape) < 0.9
    recon = raw + rng.normal(0, 0.5, raw.shape).astype(np.float32)
    target = rng.choice(classes, rows, p=rng.dirichlet(np.full(classes, 0.5)))
    target[rng.random(rows) < 0.1] = -1
    logits = rng.normal(0, 1, (rows, classes)).astype(np.float32)
    logits[np.arange(rows), np.maximum(target, 0)] += 2.5
    return ids, assignments, (raw, recon, observed), (logits, target)


def bootstrap_time(latent, labels, args) -> None:
    """Seconds the bootstrap adds to a run: clustering + r2 (resampling included), and a
    classifier's two scores, median of ``args.rounds``."""
    ids, assignments, (x, recon, observed), (logits, target) = bootstrap_inputs(latent, 60, 140)
    times: dict[str, list[float]] = {"clustering": [], "classifier": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        r = bootstrap.resample_boreholes(ids, args.bootstrap, seed=0)
        aris = bootstrap.ari(labels, assignments, r)
        r2 = bootstrap.r2_mean(x, recon, observed, r)
        middle = time.perf_counter()
        balanced = bootstrap.balanced_accuracy(logits, target, r)
        auc = bootstrap.auc_pooled(logits, target, r)
        times["clustering"].append(middle - started)
        times["classifier"].append(time.perf_counter() - middle)
    print(f"\nbootstrap over test boreholes: {args.bootstrap} resamples of {r.boreholes} boreholes, "
          f"{len(ids):,} rows, median of {args.rounds} (goal <= 2 s added, one thread):")
    print(f"  {len(aris)} ARIs + r2_mean (6 features), resampling included : "
          f"{statistics.median(times['clustering']):6.3f} s")
    print(f"  balanced_accuracy + auc_pooled ({logits.shape[1]} classes)      : "
          f"{statistics.median(times['classifier']):6.3f} s")
    print(f"  total                                              : "
          f"{statistics.median(times['clustering']) + statistics.median(times['classifier']):6.3f} s")
    scores = {f"ari {name}": values for name, values in aris.items()}
    scores.update({"r2_mean": r2, "balanced_accuracy": balanced, "auc_pooled": auc})
    for name, values in scores.items():
        low, high = bootstrap.interval(values, r.level)
        print(f"  {name:20s} {r.level:.0%} interval [{low:.4f}, {high:.4f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both backends")
    parser.add_argument("--members", type=int, default=8, help="members scored together (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--seeds", type=int, default=0,
                        help="also compare ARIs over this many seeds (slow: sklearn runs seeds + 1 times)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="resamples of the bootstrap over test boreholes to time (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    latent, labels = mixture(args.rows, args.dim, 15, seed=0)
    with threadpool_limits(args.threads):
        evaluation(latent[:2000], labels[:2000], "torch")  # warm-up
        print(f"{args.rows:,} rows x {args.dim}-D, ks {list(KS)}, {N_INIT} k-means restarts + full GMM, "
              f"silhouette on {SILHOUETTE_ROWS:,} rows, {torch.get_num_threads()} thread(s)")
        times: dict[str, list[float]] = {"torch": [], "sklearn": []}
        scores: dict[str, dict] = {}
        sils: dict[str, float] = {}
        for r in range(args.rounds):
            for backend in ("torch", "sklearn"):
                seconds, scores[backend], sils[backend] = evaluation(latent, labels, backend)
                times[backend].append(seconds)
            print(f"round {r + 1}: torch {times['torch'][-1]:7.2f} s   sklearn {times['sklearn'][-1]:7.2f} s")
        ours, baseline = statistics.median(times["torch"]), statistics.median(times["sklearn"])
        print(f"sklearn backend: {baseline:7.2f} s (median of {args.rounds})")
        print(f"torch backend  : {ours:7.2f} s (median of {args.rounds}; target <= 5 s on 1 thread)")
        print(f"ratio sklearn / torch = {baseline / ours:.1f}x")
        ari_table(scores)
        print(f"{'silhouette':14s}{sils['torch']:10.4f}{sils['sklearn']:10.4f}   "
              f"(of each backend's best clustering)")

        if args.members:
            members(args)
        if args.seeds:
            seed_spread(latent, labels, args.seeds)
        if args.bootstrap:
            bootstrap_time(latent, labels, args)


if __name__ == "__main__":
    main()
