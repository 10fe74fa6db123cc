"""Whether a difference is beyond noise: intervals over replicates, paired differences and
``python -m lithovae.compare A B`` on fabricated run and sweep folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from lithovae import compare
from lithovae.errors import DataError
from lithovae.evaluation.comparisons import LEVEL, mean_interval, paired_difference


def fake_job(job: Path, metrics: dict, seed: int, overrides: list[str] | None = None, fold: int | None = None,
             config: dict | None = None) -> Path:
    """A finished job folder as Hydra and lithovae leave it: .hydra/overrides.yaml,
    .hydra/config.yaml (seed, datamodule.fold) and metrics.json."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides or []))
    cfg = {"seed": seed, "datamodule": {"fold": fold}, **(config or {})}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    (job / "metrics.json").write_text(json.dumps({"seed": seed, **metrics}))
    return job


def fake_sweep(sweep: Path, values: dict[int, dict], swept: list[str] | None = None) -> Path:
    """A sweep folder with one job per seed of ``values`` (seed -> metrics), jobs 0, 1, ..."""
    for num, (seed, metrics) in enumerate(values.items()):
        fake_job(sweep / str(num), metrics, seed, [*(swept or []), f"seed={seed}"])
    return sweep


def test_mean_interval_is_the_student_t_interval_of_the_finite_values():
    values = [0.183, 0.124, np.nan, 0.154, 0.145]
    got = mean_interval(values)
    finite = np.array([0.183, 0.124, 0.154, 0.145])
    low, high = stats.t.interval(LEVEL, df=3, loc=finite.mean(), scale=stats.sem(finite))
    assert got["n"] == 4 and got["mean"] == pytest.approx(finite.mean())
    assert got["std"] == pytest.approx(finite.std(ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    one = mean_interval([0.2, np.inf])
    assert one["mean"] == 0.2 and one["n"] == 1 and all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))
    assert math.isnan(mean_interval([])["mean"])


def test_mean_interval_covers_the_true_mean_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    draws = rng.normal(0.15, 0.03, size=(4000, 4))  # 4 seeds of one score, many times
    covered = [(r["ci_low"] <= 0.15 <= r["ci_high"]) for r in map(mean_interval, draws)]
    assert np.mean(covered) == pytest.approx(LEVEL, abs=0.015)


def _series(values: dict) -> pd.Series:
    return pd.Series(list(values.values()), index=pd.MultiIndex.from_tuples(list(values), names=["seed", "fold"]))


def test_paired_difference_pairs_by_key_and_names_what_has_no_partner():
    a = _series({(0, -1): 0.10, (1, -1): 0.20, (2, -1): 0.15, (3, -1): 0.5})
    b = _series({(2, -1): 0.17, (0, -1): 0.13, (1, -1): 0.225, (4, -1): 0.9, (5, -1): np.nan})
    got = paired_difference(a, b)
    diffs = np.array([0.03, 0.025, 0.02])  # by key, not by position
    low, high = stats.t.interval(LEVEL, df=2, loc=diffs.mean(), scale=stats.sem(diffs))
    assert got["n"] == 3 and got["mean"] == pytest.approx(diffs.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    assert got["verdict"] == "beats"  # every seed gained: the interval is above 0
    assert got["n_unpaired"] == 3 and sorted(got["unpaired"]) == [("a", (3, -1)), ("b", (4, -1)), ("b", (5, -1))]
    assert paired_difference(b, a)["verdict"] == "loses to"
    noisy = paired_difference(a, _series({(0, -1): 0.2, (1, -1): 0.1, (2, -1): 0.16}))
    assert noisy["verdict"] == "matches"


def test_one_pair_is_no_interval_and_duplicated_keys_are_refused():
    one = paired_difference(_series({(0, -1): 0.1}), _series({(0, -1): 0.3, (1, -1): 0.2}))
    assert one["n"] == 1 and math.isnan(one["ci_low"]) and one["verdict"] == "undefined"
    with pytest.raises(DataError, match="several values"):
        paired_difference(pd.Series([0.1, 0.2], index=pd.MultiIndex.from_tuples([(0, -1), (0, -1)])),
                          _series({(0, -1): 0.3}))


def _scores(seed: int, gain: float) -> dict:
    base = 0.1 + 0.01 * seed
    return {"ari_selected": base + gain, "baseline_ari_selected": 0.12, "ari_gain": base + gain - 0.12,
            "r2_mean": 0.8 + 0.001 * seed, "mlflow_run_id": f"run{seed}"}


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        compare.main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_prints_the_paired_difference_and_a_plain_verdict(tmp_path, capsys):
    a = fake_sweep(tmp_path / "a", {s: _scores(s, 0.0) for s in (0, 1, 2)})
    b = fake_sweep(tmp_path / "b", {s: _scores(s, 0.02 + 0.001 * s) for s in (0, 1, 2, 3)})
    code, out, _ = _run(capsys, str(a), str(b))
    assert code == 0
    assert "B beats A (ari_selected difference +0.021" in out and "3 paired seeds" in out
    assert "without a partner (left out): B seed=3" in out
    r2 = next(line for line in out.splitlines() if line.strip().startswith("r2_mean"))
    assert "+0.000" in r2 and "n=3" in r2
    # one run folder against a sweep: its seed pairs it
    fake_job(tmp_path / "run", _scores(1, 0.0), 1)
    code, out, _ = _run(capsys, str(tmp_path / "run"), str(b), "metric=r2_mean")
    assert code == 0 and "verdict: undefined (r2_mean: 1 pair(s)" in out
    same = fake_sweep(tmp_path / "same", {s: _scores(s, 0.001 * (-1) ** s) for s in (0, 1, 2)})
    code, out, _ = _run(capsys, str(a), str(same))
    assert "no difference beyond the interval" in out.splitlines()[-1]


@pytest.mark.parametrize("case, needle", [
    ("empty", "no scored run"),
    ("disjoint", "no (seed, fold) shared"),
    ("doubled", "seed=0 has 2 runs"),
    ("metric", "metric=ari_nothing"),
    ("planted", "_target_"),
    ("usage", "two directories expected"),
])
def test_compare_refuses_bad_input_in_one_line(tmp_path, capsys, case, needle):
    a = fake_sweep(tmp_path / "a", {s: _scores(s, 0.0) for s in (0, 1)})
    b = tmp_path / "b"
    args = [str(a), str(b)]
    if case == "empty":
        b.mkdir()
    elif case == "disjoint":
        fake_sweep(b, {s: _scores(s, 0.0) for s in (5, 6)})
    elif case == "doubled":
        fake_job(b / "0", _scores(0, 0.0), 0, ["mask.prob=0.0"])
        fake_job(b / "1", _scores(0, 0.0), 0, ["mask.prob=0.3"])
    elif case == "metric":
        fake_sweep(b, {s: _scores(s, 0.0) for s in (0, 1)})
        args.append("metric=ari_nothing")
    elif case == "planted":
        fake_job(b, _scores(0, 0.0), 0, config={"model": {"dropout": {"_target_": "os.system"}}})
    else:
        args = [str(a)]
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err
    if case in ("empty", "doubled", "planted"):
        assert str(b) in err
