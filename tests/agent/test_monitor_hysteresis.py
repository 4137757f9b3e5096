"""Alert hysteresis: a metric wavering around its threshold fires one alert, not one each
window (each firing may roll back or ask for a retrain, and sends notices). Days replayed
through the backfill import with a simulated clock, on SQLite and on PostgreSQL."""

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
PER_DAY = 300


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    if request.param == "postgresql":
        registry = MetadataStore.open(request.getfixturevalue("postgres").database())
    else:
        registry = MetadataStore.for_home(tmp_path)
    yield registry, open_blob_store("", tmp_path)
    registry.close()


def replay(registry, blobs, name: str, p99s: list[float], **policy) -> list[tuple[int, str]]:
    """One day of traffic per p99 (every request that slow), each day evaluated at the
    midnight after it; (day, firing|cleared) of each alert change of the latency alert."""
    monitor = MonitorPolicy.load(
        {"daily": True, "monthly": False, "rolling_minutes": 0, "min_samples": 200, **policy}
    )
    service = MonitorService(registry, blobs, Policy(monitor=monitor))
    changes = []
    for d, p99 in enumerate(p99s):
        t = T0 + d * DAY + np.linspace(0, DAY - 60, PER_DAY)
        day = pd.DataFrame({"x": np.arange(PER_DAY, dtype=float), "prediction": 1, "time": t})
        day["latency_ms"] = p99
        day["request_id"] = [f"{name}-{d}-{i}" for i in range(PER_DAY)]
        backfill.import_log(registry, blobs, name, day, "test")
        for a in service.run(name, T0 + (d + 1) * DAY)["alerts"]:
            assert a["kind"] == "latency", a
            changes.append((d, a["state"]))
    return changes


WAVERING = [1050, 980, 1040, 990, 1030, 960]  # around max_p99_ms = 1000, never far inside


def test_a_metric_wavering_around_its_threshold_fires_once_and_clears_once_clearly_back(stores):
    registry, blobs = stores
    # Given p99 latency wavering around its 1000 ms threshold for six days, then 500 ms
    changes = replay(registry, blobs, "churn", [*WAVERING, 500, 1050])
    # then the latency alert fired once, on the first crossing day, and stayed firing
    # through the wavering (back under 1000 ms but not under its 900 ms clear level)
    # and cleared on the first day clearly back; a new crossing fires again
    assert changes == [(0, "firing"), (6, "cleared"), (7, "firing")], changes
    alerts = registry.alerts_of("churn")
    assert sorted(a["state"] for a in alerts) == ["cleared", "firing"], alerts
    # and the views show each window's clear level beside its threshold
    service = MonitorService(registry, blobs, Policy(monitor=MonitorPolicy()))
    marks = {m["kind"]: m for m in service.marks(registry.windows_of("churn", "daily")[1])}
    assert marks["latency"]["threshold"] == 1000 and marks["latency"]["clears_at"] == 900


def test_without_hysteresis_the_same_days_fire_each_crossing(stores):
    """What the defaults prevent: with no clear margin every crossing is a new alert."""
    registry, blobs = stores
    changes = replay(registry, blobs, "churn", WAVERING, clear_margin=0)
    assert [d for d, state in changes if state == "firing"] == [0, 2, 4], changes


def test_fire_after_and_clear_after_count_windows_in_a_row(stores):
    registry, blobs = stores
    # Given fire_after = 2 and clear_after = 2: a lone slow day fires nothing
    policy = {"fire_after": 2, "clear_after": 2}
    p99s = [1500, 500, 1500, 500, 1500, 1500, 500, 500]
    changes = replay(registry, blobs, "churn", p99s, **policy)
    # then only the second slow day in a row fires, and the second fast day in a row clears
    assert changes == [(5, "firing"), (7, "cleared")], changes


def test_the_hysteresis_keys_are_bounded_policy_keys():
    with pytest.raises(ValueError, match="clear_margin"):
        MonitorPolicy.load({"clear_margin": 1.5})
    with pytest.raises(ValueError, match="fire_after"):
        MonitorPolicy.load({"fire_after": 0})
    described = MonitorPolicy().describe()
    assert {"fire_after", "clear_after", "clear_margin"} <= set(described)
