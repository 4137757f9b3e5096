"""What the prediction log leaves out: a feature the upstream pipeline stops filling is input
drift (its values' PSI sees none of it), and classes logged as floats (a column holding a
null) are the reference's integer classes, not a prediction shift. Days replayed through the
backfill import, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from handoff_agent.monitor import backfill
from handoff_agent.monitor.service import MonitorService
from handoff_agent.monitor_policy import MonitorPolicy
from handoff_agent.policy import Policy
from handoff_agent.store.blobs import open_blob_store
from handoff_agent.store.metadata import MetadataStore

DAY = 86400.0
T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
PER_DAY = 1000
POLICY = MonitorPolicy.load({"daily": True, "monthly": False, "rolling_minutes": 0})


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    if request.param == "postgresql":
        registry = MetadataStore.open(request.getfixturevalue("postgres").database())
    else:
        registry = MetadataStore.for_home(tmp_path)
    yield registry, open_blob_store("", tmp_path)
    registry.close()


def traffic(rng, n: int) -> pd.DataFrame:
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    cat = rng.choice(["a", "b", "c"], n)
    return pd.DataFrame({"x1": x1, "x2": x2, "cat": cat, "prediction": (x1 + x2 > 0).astype(int)})


def day(rng, d: int, frame: pd.DataFrame) -> pd.DataFrame:
    frame["time"] = T0 + d * DAY + np.sort(rng.uniform(0, DAY, len(frame)))
    frame["request_id"] = [f"r{d}-{i}" for i in range(len(frame))]
    return frame


def alerts(service, registry, model: str, days: int) -> dict[int, list]:
    """The alert changes of each midnight's run, by the day whose window closed."""
    out = {}
    for d in range(days):
        changes = service.run(model, T0 + (d + 1) * DAY)["alerts"]
        out[d] = [(a["kind"], a["state"]) for a in changes]
    return out


def test_a_feature_the_pipeline_stops_filling_fires_a_drift_alert_and_clears(stores):
    registry, blobs = stores
    rng = np.random.default_rng(11)
    backfill.import_reference(registry, blobs, "churn", traffic(rng, 3000), "test")
    broken = traffic(rng, PER_DAY).assign(x1=np.nan, cat=None)  # a join that lost its table
    log = pd.concat(
        [
            day(rng, 0, traffic(rng, PER_DAY)),
            day(rng, 1, broken),
            day(rng, 2, traffic(rng, PER_DAY)),
        ],
        ignore_index=True,
    )
    backfill.import_log(registry, blobs, "churn", log, "test")
    service = MonitorService(registry, blobs, Policy(monitor=POLICY))

    changes = alerts(service, registry, "churn", 3)

    # the broken day fires one input-drift alert naming the two empty features; the next
    # day's healthy window clears it
    assert changes == {0: [], 1: [("drift", "firing")], 2: [("drift", "cleared")]}
    broken_day = registry.windows_of("churn", "daily")[1]["metrics"]["drift"]
    assert sorted(broken_day["drifted"]) == ["cat", "x1"]
    assert broken_day["features"]["x1"]["missing_share"] == 1.0
    assert broken_day["features"]["x2"]["missing_share"] == 0.0
    # the alert says why each drifted: the values it lost, not a PSI that reads as no reason
    (fired,) = [a for a in registry.alerts_of("churn") if a["kind"] == "drift"]
    assert (
        ": x1 (100% missing, reference 0%), cat (100% missing, reference 0%), 2 of 3"
        in (fired["message"])
    ), fired["message"]


def test_classes_logged_as_floats_are_the_references_classes(stores):
    registry, blobs = stores
    rng = np.random.default_rng(12)
    backfill.import_reference(registry, blobs, "churn", traffic(rng, 3000), "test")
    days = []
    for d in range(2):  # the other system logged a null where a request failed: floats
        f = day(rng, d, traffic(rng, PER_DAY))
        f["prediction"] = f["prediction"].astype(float).where(rng.uniform(size=PER_DAY) > 0.01)
        days.append(f)
    backfill.import_log(registry, blobs, "churn", pd.concat(days, ignore_index=True), "test")
    service = MonitorService(registry, blobs, Policy(monitor=POLICY))

    changes = alerts(service, registry, "churn", 2)

    # the same classes at the same rates: no prediction shift
    assert changes == {0: [], 1: []}
    for w in registry.windows_of("churn", "daily"):
        assert w["metrics"]["prediction_drift"]["psi"] < 0.05, w["metrics"]["prediction_drift"]


def sparse_traffic(rng, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Two dense features and two the request carries in one row of twenty (an optional
    field, a coupon code): a daily window of a few hundred requests holds a dozen of each."""
    some = rng.uniform(size=(n, 2)) < 0.05
    f = pd.DataFrame(
        {
            "x1": rng.normal(shift, 1, n),
            "x2": rng.normal(shift, 1, n),
            "spend": np.where(some[:, 0], rng.gamma(2, 10, n), np.nan),
            "coupon": np.where(some[:, 1], rng.choice(["A", "B", "C"], n), None),
        }
    )
    return f.assign(prediction=(f["x1"] > 0).astype(int))


def test_sparse_features_read_as_no_drift_from_their_dozen_values(stores):
    registry, blobs = stores
    rng = np.random.default_rng(13)
    backfill.import_reference(registry, blobs, "churn", sparse_traffic(rng, 5000), "test")
    days = [day(rng, d, sparse_traffic(rng, 300)) for d in range(5)]
    days.append(day(rng, 5, sparse_traffic(rng, 300, shift=1.5)))  # then the data moves
    backfill.import_log(registry, blobs, "churn", pd.concat(days, ignore_index=True), "test")
    service = MonitorService(registry, blobs, Policy(monitor=POLICY))

    changes = alerts(service, registry, "churn", 6)

    # five stationary days: no alert, though each window holds ~15 values of each sparse one
    assert all(changes[d] == [] for d in range(5)), changes
    calm = registry.windows_of("churn", "daily")[0]["metrics"]["drift"]["features"]
    assert not calm["spend"]["drifted"] and not calm["coupon"]["drifted"], calm
    # the day the dense features move fires the drift alert
    assert ("drift", "firing") in changes[5]
