import math

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from lithovae.evaluation.clusters import cluster_table, hierarchy_ari, lithology_centroids


def test_cluster_table_matches_hand_computation():
    assignment = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    names = ["A", "A", "A", "B", "D", "C", "C", "D", "E", None, np.nan]
    table = cluster_table(assignment, names)

    assert list(table.index) == [0, 1]
    assert table.index.name == "cluster"
    first, second = table.loc[0], table.loc[1]

    assert first["size"] == 4 and first["n_labeled"] == 4
    assert first["top_lithology"] == "A"
    assert first["purity"] == pytest.approx(0.75)
    assert first["entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert first["lithology_2"] == "B" and first["share_2"] == pytest.approx(0.25)
    assert pd.isna(first["lithology_3"]) and math.isnan(first["share_3"])
    assert first["top3"] == "A 75.0%; B 25.0%"

    # 7 rows, 5 labeled: C 2, D 2, E 1; the C/D tie ranks by name
    assert second["size"] == 7 and second["n_labeled"] == 5
    assert second["top_lithology"] == "C"
    assert second["purity"] == pytest.approx(0.4)
    assert second["entropy"] == pytest.approx(-(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)))
    assert (second["lithology_2"], second["share_2"]) == ("D", pytest.approx(0.4))
    assert (second["lithology_3"], second["share_3"]) == ("E", pytest.approx(0.2))
    assert second["top3"] == "C 40.0%; D 40.0%; E 20.0%"


def test_cluster_table_pure_and_unlabeled_clusters():
    table = cluster_table(np.array([3, 3, 3, 7, 7]), ["gabbro"] * 3 + [None, ""])
    assert table.loc[3, "purity"] == 1.0
    assert table.loc[3, "entropy"] == 0.0
    assert table.loc[7, "size"] == 2 and table.loc[7, "n_labeled"] == 0
    assert pd.isna(table.loc[7, "top_lithology"])
    assert math.isnan(table.loc[7, "purity"]) and math.isnan(table.loc[7, "entropy"])


def test_cluster_table_rejects_length_mismatch():
    with pytest.raises(ValueError, match="rows"):
        cluster_table([0, 1, 2], ["A", "B"])


def _skewed_blocks():
    """B's median is at A, but its mean (one far row) is near C and D."""
    a = [[0.0, 0.0]] * 3
    b = [[0.0, 0.0], [0.0, 0.0], [100.0, 100.0]]
    c = [[40.0, 40.0]] * 3
    d = [[41.0, 41.0]] * 3
    mu = np.array(a + b + c + d)
    names = ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["D"] * 3
    return mu, names


def test_lithology_centroids_are_medians():
    mu, names = _skewed_blocks()
    centroids = lithology_centroids(mu, names)
    assert list(centroids.index) == ["A", "B", "C", "D"]
    np.testing.assert_allclose(centroids.loc["B"].to_numpy(), [0.0, 0.0])
    np.testing.assert_allclose(centroids.loc["D"].to_numpy(), [41.0, 41.0])


def test_hierarchy_ari_hand_examples():
    mu, names = _skewed_blocks()
    # medians: {A, B} at 0 and {C, D} at 40-41 -> two clusters matching the groups exactly
    matching = {"A": "g1", "B": "g1", "C": "g2", "D": "g2"}
    assert hierarchy_ari(mu, names, matching, n_clusters=2) == pytest.approx(1.0)
    # groups across the clusters: contingency all ones -> ARI = (0 - 2/3) / (2 - 2/3) = -0.5
    crossed = {"A": "g1", "B": "g2", "C": "g1", "D": "g2"}
    assert hierarchy_ari(mu, names, crossed, n_clusters=2) == pytest.approx(-0.5)


def test_hierarchy_ari_matches_independent_computation():
    rng = np.random.default_rng(3)
    n_lith, n_rows = 30, 900
    lithologies = [f"lith{i:02d}" for i in range(n_lith)]
    names = rng.choice(lithologies, n_rows).astype(object)
    names[rng.random(n_rows) < 0.05] = None
    offsets = rng.normal(scale=3.0, size=(n_lith, 4))
    codes = np.array([lithologies.index(n) if n is not None else 0 for n in names])
    mu = offsets[codes] + rng.normal(size=(n_rows, 4))
    groups = {name: f"group{i % 6}" for i, name in enumerate(lithologies)}
    del groups["lith29"]  # a lithology without an expert group is left out

    frame = pd.DataFrame(mu).assign(name=names).dropna(subset=["name"])
    frame = frame[frame["name"].isin(list(groups))]
    centroids = frame.groupby("name").median()
    expected_clusters = AgglomerativeClustering(n_clusters=14).fit_predict(centroids.to_numpy())
    expected = adjusted_rand_score([groups[n] for n in centroids.index], expected_clusters)

    assert hierarchy_ari(mu, names, groups) == pytest.approx(expected, abs=1e-12)


def test_hierarchy_ari_nan_when_too_few_lithologies():
    mu, names = _skewed_blocks()
    groups = {"A": "g1", "B": "g1", "C": "g2", "D": "g2"}
    assert math.isnan(hierarchy_ari(mu, names, groups, n_clusters=14))
