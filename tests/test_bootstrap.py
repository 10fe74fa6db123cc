"""The bootstrap over test boreholes: each statistic against its point estimate, resamples as
repeated rows, determinism, NaN rules, and the coverage of a simulated ARI's interval."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from lithovae.evaluation import classification_scores, reconstruction_r2
from lithovae.evaluation.bootstrap import (
    Resamples,
    ari,
    auc_pooled,
    balanced_accuracy,
    interval,
    r2_mean,
    resample_boreholes,
)

FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]
CLASSES = 7


@pytest.fixture(scope="module")
def rows():
    """A fabricated test set: 9 boreholes (string ids, contiguous runs), unlabeled rows,
    unclustered rows (-1), missing entries (NaN, unobserved), a feature constant within borehole
    b0 (no R^2 on b0 alone), and logits with ties (saturated probabilities)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(20, 60, 9)
    ids = np.repeat([f"b{i}" for i in range(9)], sizes)
    n = ids.size
    labels = rng.integers(-1, 5, n)
    assignment = np.where(rng.random(n) < 0.6, labels, rng.integers(-1, 6, n))
    x = rng.normal(size=(n, len(FEATURES)))
    observed = rng.random(x.shape) < 0.85
    x[ids == "b0", 5] = 1.5
    x[~observed] = np.nan
    recon = np.where(observed, x, 0.0) + rng.normal(0, 0.5, x.shape)
    target = rng.integers(-1, CLASSES, n)
    logits = rng.normal(size=(n, CLASSES)) + 2.0 * np.eye(CLASSES)[np.maximum(target, 0)]
    logits[::3] = rng.integers(0, 2, (len(logits[::3]), CLASSES)) * 800.0  # exact 0/1 probabilities
    return dict(ids=ids, labels=labels, assignment=assignment, x=x, recon=recon, observed=observed,
                target=target, logits=logits)


def point_estimates(d, rows=slice(None)) -> dict[str, float]:
    """The run's scores (sklearn / lithovae.evaluation.metrics) on the given rows."""
    keep = (d["labels"][rows] >= 0) & (d["assignment"][rows] >= 0)
    scores = classification_scores(d["logits"][rows], d["target"][rows], CLASSES)
    return {"ari": adjusted_rand_score(d["labels"][rows][keep], d["assignment"][rows][keep]),
            "r2_mean": reconstruction_r2(d["x"][rows], d["recon"][rows], d["observed"][rows], FEATURES)["r2_mean"],
            "balanced_accuracy": scores["balanced_accuracy"], "auc_pooled": scores["auc_pooled"]}


def bootstrapped(d, r: Resamples) -> dict[str, np.ndarray]:
    return {"ari": ari(d["labels"], {"z": d["assignment"]}, r)["z"],
            "r2_mean": r2_mean(d["x"], d["recon"], d["observed"], r),
            "balanced_accuracy": balanced_accuracy(d["logits"], d["target"], r),
            "auc_pooled": auc_pooled(d["logits"], d["target"], r)}


TOLERANCE = {"ari": 1e-12, "r2_mean": 1e-9, "balanced_accuracy": 1e-12, "auc_pooled": 1e-9}


def test_all_ones_counts_give_the_point_estimates(rows):
    group = np.unique(rows["ids"], return_inverse=True)[1]
    r = Resamples(counts=np.ones((1, 9), dtype=int), group=group, level=0.95)
    got, expected = bootstrapped(rows, r), point_estimates(rows)
    for name, value in expected.items():
        assert np.isfinite(value)
        assert got[name].shape == (1,)
        assert got[name][0] == pytest.approx(value, abs=TOLERANCE[name]), name


def test_a_resample_scores_its_boreholes_rows_repeated(rows):
    """counts [[2, 0, ...]]: borehole b0 alone (drawn twice); and a seeded resample equals the
    point estimate on the rows of each borehole repeated as often as it is drawn."""
    group = np.unique(rows["ids"], return_inverse=True)[1]
    alone = np.zeros((1, 9), dtype=int)
    alone[0, 0] = 2
    drawn = resample_boreholes(rows["ids"], 3, seed=1).counts
    counts = np.concatenate([alone, drawn])
    got = bootstrapped(rows, Resamples(counts=counts, group=group, level=0.95))
    for b, row in enumerate(counts):
        repeated = np.concatenate([np.flatnonzero(group == g) for g in np.repeat(np.arange(9), row)])
        for name, value in point_estimates(rows, repeated).items():
            assert got[name][b] == pytest.approx(value, abs=TOLERANCE[name], nan_ok=True), (b, name)
    # borehole 0 alone: its r2, accuracy and AUC do not depend on its being drawn twice
    b0 = point_estimates(rows, group == 0)
    for name in ("r2_mean", "balanced_accuracy", "auc_pooled"):
        assert got[name][0] == pytest.approx(b0[name], abs=TOLERANCE[name])


def test_resamples_are_seeded(rows):
    a, b = (resample_boreholes(rows["ids"], 50, seed=7) for _ in range(2))
    other = resample_boreholes(rows["ids"], 50, seed=8)
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.group, b.group)
    assert not np.array_equal(a.counts, other.counts)
    assert a.counts.shape == (50, 9) and (a.counts.sum(1) == 9).all()


def test_undefined_resamples_are_nan():
    group = np.repeat([0, 1, 2], 4)
    counts = np.array([[1, 1, 1], [3, 0, 0], [0, 2, 1]])
    r = Resamples(counts=counts, group=group, level=0.95)
    labels = np.array([0, 0, 0, 0, 1, 0, 1, 0, 2, 2, 1, 1])  # borehole 0 holds one class only
    scores = ari(labels, {"z": labels % 2}, r)["z"]
    assert np.isfinite(scores[[0, 2]]).all() and np.isnan(scores[1])
    logits = np.eye(3)[labels]
    logits[8, 1] = np.nan  # a labeled row of borehole 2
    for score in (balanced_accuracy(logits, labels, r), auc_pooled(logits, labels, r)):
        assert np.isnan(score[[0, 2]]).all() and score[1] == pytest.approx(1.0)
    x = np.repeat([[1.0], [2.0], [3.0]], 4, axis=0)  # constant within each borehole
    assert np.isnan(r2_mean(x, x, np.ones_like(x, dtype=bool), r)[1])
    assert r2_mean(x, x, np.ones_like(x, dtype=bool), r)[0] == pytest.approx(1.0)


def test_interval_gives_up_when_too_many_resamples_are_undefined():
    values = np.linspace(0.0, 1.0, 100)
    assert interval(values, 0.9) == pytest.approx(tuple(np.percentile(values, [5, 95])))
    values[:5] = np.nan  # 5%: still an interval, of the finite values
    assert np.isfinite(interval(values, 0.95)).all()
    values[5] = np.nan  # 6%
    assert np.isnan(interval(values, 0.95)).all()
    assert np.isnan(interval(np.full(3, np.nan), 0.95)).all()


def three() -> Resamples:
    """Resamples of 3 rows in 2 boreholes."""
    return resample_boreholes(["a", "b", "b"], 5, seed=0)


@pytest.mark.parametrize("call, message", [
    (lambda: resample_boreholes(["a", "b"], 0, seed=0), "resamples must be >= 1"),
    (lambda: resample_boreholes("abb", 5, seed=0), "borehole_ids must be 1-D"),
    (lambda: resample_boreholes(["a", "b"], 10, seed=0, level=1.0), "level must lie in"),
    (lambda: interval(np.zeros(3), 0.0), "level must lie in"),
    (lambda: ari(np.zeros(4), {"z": np.zeros(4)}, three()), "labels has 4 rows"),
    (lambda: ari(np.zeros(3), {"z": np.zeros(4)}, three()), "assignment 'z' has 4"),
    (lambda: r2_mean(np.zeros((3, 2)), np.zeros((3, 1)), np.ones((3, 2)), three()),
     "must be equal"),
    (lambda: auc_pooled(np.zeros((3, 2)), np.array([0, 2, 1]), three()), "class code 2"),
])
def test_bad_input_is_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def coverage(labels, assignment, truth, rows_per_borehole, level, by_rows, seed, samples=200) -> float:
    """How often the bootstrap interval of the ARI of 40 sampled boreholes covers ``truth``, over
    ``samples`` samples (B = 300). ``by_rows``: resample rows instead of boreholes (the broken way)."""
    rng = np.random.default_rng(seed)
    hits = []
    for sample in range(samples):
        picked = rng.choice(labels.shape[0], 40, replace=False)
        ids = np.arange(40 * rows_per_borehole) if by_rows else np.repeat(picked, rows_per_borehole)
        r = resample_boreholes(ids, 300, seed=sample, level=level)
        low, high = interval(ari(labels[picked].ravel(), {"z": assignment[picked].ravel()}, r)["z"], level)
        hits.append(low <= truth <= high)
    return float(np.mean(hits))


def test_the_interval_of_a_simulated_ari_covers_the_truth_at_its_nominal_rate():
    """A population of 2000 boreholes of 24 rows: each its own mix of 4 classes and its own
    clustering quality (the fixed assignment is the true class with a borehole's probability,
    else a random cluster), so rows of one borehole are not independent. The truth is the ARI
    of the whole population. A correct 95% interval covers it in about 95% of samples (0.895 to
    0.97 over six seeds here); resampling rows, or a 50% interval, cover it about half the time."""
    rng = np.random.default_rng(0)
    boreholes, rows, classes = 2000, 24, 4
    mix = np.cumsum(rng.dirichlet(np.full(classes, 0.5), boreholes), axis=1)
    labels = (rng.random((boreholes, rows))[..., None] > mix[:, None, :]).sum(-1)
    right = rng.random((boreholes, rows)) < rng.beta(0.5, 0.5, (boreholes, 1))
    assignment = np.where(right, labels, rng.integers(0, classes, (boreholes, rows)))
    truth = adjusted_rand_score(labels.ravel(), assignment.ravel())
    band = (0.85, 0.99)  # 200 samples: the rate's own sd is about 0.015
    assert band[0] <= coverage(labels, assignment, truth, rows, 0.95, False, seed=1) <= band[1]
    # the band tells a broken bootstrap from a correct one (about 0.5: 100 samples are plenty)
    assert coverage(labels, assignment, truth, rows, 0.95, True, seed=1, samples=100) < band[0]
    assert coverage(labels, assignment, truth, rows, 0.5, False, seed=1, samples=100) < band[0]
