"""Two central replicas share one metadata store and both run the monitor: a window both
judge at once fires one alert (one audit row, one event, one action), and clears it once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
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
T0 = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
POLICY = Policy(monitor=MonitorPolicy.load({"daily": True, "monthly": False, "rolling_minutes": 0}))


@pytest.fixture(params=["sqlite", "postgresql"])
def two_replicas(request, tmp_path):
    """Two stores (two engines, as two processes have) over one database, one blob store."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").database()
        stores = [MetadataStore.open(url), MetadataStore.open(url)]
    else:
        stores = [MetadataStore.for_home(tmp_path), MetadataStore.for_home(tmp_path)]
    yield stores, open_blob_store("", tmp_path)
    for s in stores:
        s.close()


def traffic(rng, n: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.normal(shift, 1, (n, 3))
    return pd.DataFrame(x, columns=["x1", "x2", "x3"]).assign(prediction=(x[:, 0] > 0).astype(int))


def in_step(store, barrier: threading.Barrier, *methods: str) -> None:
    """Each replica waits for the other after each of these reads, so both read before either
    writes: the interleaving two replicas' runs every ``every_seconds`` can take. (Not a read
    inside the window's transaction: one replica would wait there holding its lock.)"""
    for name in methods:
        read = getattr(store, name)

        def waiting(*args, _read=read):
            found = _read(*args)
            barrier.wait(timeout=60)
            return found

        setattr(store, name, waiting)


def test_replicas_judging_one_window_at_once_fire_one_alert_and_clear_it_once(two_replicas):
    (a, b), blobs = two_replicas
    rng = np.random.default_rng(3)
    backfill.import_reference(a, blobs, "churn", traffic(rng, 3000), "test")
    days = [traffic(rng, 500, shift=2.0), traffic(rng, 500)]  # a shifted day, then a calm one
    for d, f in enumerate(days):
        f["time"] = T0 + d * DAY + np.sort(rng.uniform(0, DAY, len(f)))
    backfill.import_log(a, blobs, "churn", pd.concat(days, ignore_index=True), "test")
    barrier = threading.Barrier(2)
    for store in (a, b):
        # both find the window due before either stores it; from there the window's
        # transaction and the alert's lock order them
        in_step(store, barrier, "window_starts")
    replicas = [MonitorService(s, blobs, POLICY) for s in (a, b)]

    def both_run(now: float) -> list[tuple]:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda r: r.run("churn", now), replicas))
        return sorted((c["kind"], c["state"]) for run in runs for c in run["alerts"])

    # the shifted day's window closes: one alert of each kind between the two replicas
    kinds = ["drift", "feature_drift", "prediction_drift"]
    assert both_run(T0 + DAY) == [(k, "firing") for k in kinds]
    assert sorted(x["kind"] for x in a.alerts_of("churn", "firing")) == kinds
    # the calm day's window clears each, once
    assert both_run(T0 + 2 * DAY) == [(k, "cleared") for k in kinds]
    assert a.alerts_of("churn", "firing") == []
    actions = [r["action"] for r in a.audit_rows_since(None)]
    assert actions.count("monitor.alert") == actions.count("monitor.alert_cleared") == len(kinds)
