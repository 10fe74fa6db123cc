"""The default-scale synthetic LILY against the real figures (slow: run with `make test-slow`).

Checks the issue's calibration targets on the complete6 set built by the real builder.
"""

from __future__ import annotations

import pandas as pd
import pytest

from lithovae.data import reference
from lithovae.data.report import realism_report
from lithovae.data.sources import SyntheticSource
from tests.conftest import config_defaults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[0, 1], ids=["seed0", "seed1"])
def built(request, tmp_path_factory):
    data = config_defaults()["data"]
    source = SyntheticSource(scale="default", seed=request.param, build=data["build"],
                             transforms=data["transforms"])
    path, manifest = source.prepare(tmp_path_factory.mktemp(f"default{request.param}"), log=lambda *a: None)
    frame = pd.read_parquet(path)
    _, figures = realism_report(frame, source.name, synthetic=True)
    return frame, manifest, figures


def test_size_boreholes_and_lithologies(built):
    frame, manifest, _ = built
    assert 200_000 <= len(frame) <= 280_000
    assert 250 <= frame["borehole_id"].nunique() <= 350
    assert frame["principal"].nunique() >= 100


def test_feature_quartiles_within_15_percent_of_real(built):
    _, _, figures = built
    for feature, q in figures["quartiles"].items():
        for ours, real, name in zip(q["ours"], q["real"], ("p25", "p50", "p75")):
            assert abs(ours - real) <= 0.15 * abs(real), f"{feature} {name}: {ours:.3f} vs real {real:.3f}"


def test_top_three_lithologies_and_shares(built):
    frame, _, _ = built
    shares = frame["principal"].value_counts(normalize=True)
    assert list(shares.index[:3]) == ["nannofossil ooze", "clay", "silty clay"]
    ref = reference.class_distribution().set_index("Lithology")["Percentage"] / 100
    for lith in shares.index[:3]:
        assert abs(shares[lith] - ref[lith]) <= 0.25 * ref[lith], lith


def test_raw_feature_kmeans_is_poor_but_not_random(built):
    _, _, figures = built
    assert 0.03 <= figures["kmeans_ari_k12"] <= 0.20
