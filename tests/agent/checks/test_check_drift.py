"""drift: PSI, KS, missing rates and unseen categories against the reference sample."""

import numpy as np
import pandas as pd

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.drift import DriftCheck, psi


def _frames(n=2000, seed=0):
    rng = np.random.default_rng(seed)

    def frame():
        return pd.DataFrame(
            {
                "age": rng.normal(40, 10, n),
                "income": rng.lognormal(10, 1, n),
                "city": rng.choice(["paris", "lyon", "lille"], n),
            }
        )

    return frame(), frame()


def _drift(X, ref, **config):
    return DriftCheck().run(CheckContext(None, {}, X=X, reference_X=ref, config=config))


def test_same_distribution_passes():
    X, ref = _frames()
    res = _drift(X, ref)
    assert res.status == "pass"
    assert res.metrics["max_psi"] < 0.1
    assert {r["feature"] for r in res.tables["features"]} == {"age", "income", "city"}


def test_shifted_feature_fails_and_is_named():
    X, ref = _frames()
    X["age"] += 15
    res = _drift(X, ref)
    assert res.status == "fail"
    assert res.message.startswith("Drift: age: PSI")
    assert res.metrics["max_psi_feature"] == "age"
    row = next(r for r in res.tables["features"] if r["feature"] == "age")
    assert row["ks"] > 0.4
    assert "most_drifted" in res.plots


def test_unseen_categories_and_missing_values_warn():
    X, ref = _frames()
    X.loc[:99, "city"] = "nice"
    X.loc[:299, "income"] = np.nan
    res = _drift(X, ref, psi_fail=10, psi_warn=10)
    assert res.status == "warn"
    assert "'nice'" in res.message
    assert "missing rate rose" in res.message
    city = next(r for r in res.tables["features"] if r["feature"] == "city")
    assert city["unseen"] == ["nice"]


def test_missing_and_new_columns_warn():
    X, ref = _frames()
    res = _drift(X.drop(columns="city").assign(extra=1.0), ref)
    assert res.status == "warn"
    assert "city" in res.message and "extra" in res.message


def test_psi_is_zero_for_identical_histograms_and_grows_with_shift():
    counts = np.array([10, 20, 30, 40])
    assert psi(counts, counts) == 0
    assert psi(counts, counts[::-1]) > 0.25
