"""Monitoring with simulated time: 60 days replayed through the backfill import (30
stationary days, a covariate shift, then a concept shift whose labels arrive late), evaluated
one day at a time on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
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
from handoff_agent.vocabulary import when_text

DAY = 86400.0
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
PER_DAY = 2000
COVARIATE, CONCEPT = 30, 45  # first shifted days


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def traffic(rng, n, shift=False, concept=False) -> pd.DataFrame:
    x1 = rng.normal(1.2 if shift else 0.0, 1, n)
    x2 = rng.normal(0, 1, n)
    x3 = rng.normal(1.5 if shift else 0.0, 1, n)
    x4 = rng.uniform(0, 1, n)
    cat = rng.choice(["a", "b", "c"], n, p=[0.2, 0.3, 0.5] if shift else [0.5, 0.3, 0.2])
    score = sigmoid(1.5 * x1 - 1.0 * x2 + 0.5 * (cat == "a"))  # the model: calibrated
    truth = sigmoid(-1.5 * x1 + 1.0 * x2) if concept else score
    label = (rng.uniform(0, 1, n) < truth).astype(int)
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "x3": x3,
            "x4": x4,
            "cat": cat,
            "prediction": (score > 0.5).astype(int),
            "score": score,
            "label": label,
        }
    )


def sixty_days(rng) -> pd.DataFrame:
    days = []
    for d in range(60):
        f = traffic(rng, PER_DAY, shift=d >= COVARIATE, concept=d >= CONCEPT)
        t = T0 + d * DAY + np.sort(rng.uniform(0, DAY, PER_DAY))
        f["time"] = pd.to_datetime(t, unit="s", utc=True)
        f["request_id"] = [f"r{d}-{i}" for i in range(PER_DAY)]
        f["latency_ms"] = rng.gamma(2, 2, PER_DAY)
        # labels arrive a day later; after the concept shift, four days later
        delay = (4 if d >= CONCEPT else 1) * DAY + rng.uniform(0, 3600, PER_DAY)
        f["label_time"] = pd.to_datetime(t + delay, unit="s", utc=True)
        days.append(f)
    return pd.concat(days, ignore_index=True)


POLICY = MonitorPolicy.load(
    {
        "daily": True,
        "monthly": False,
        "rolling_minutes": 0,
        "min_samples": 200,
        "min_labels": 200,
        "label_delay_hours": 48,
        "actions": {"drift": "retrain"},
    }
)


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").database()
        registry = MetadataStore.open(url)
    else:
        registry = MetadataStore.for_home(tmp_path)
    yield registry, open_blob_store("", tmp_path)
    registry.close()


@pytest.mark.timeout(900)  # 120,000 predictions and 60 runs; minutes on a loaded 2-core box
def test_sixty_days_alert_on_time_and_never_in_the_stationary_month(stores):
    registry, blobs = stores
    rng = np.random.default_rng(7)
    backfill.import_reference(registry, blobs, "churn", traffic(rng, 5000), "test")
    log = sixty_days(rng)
    out = backfill.import_log(registry, blobs, "churn", log, "test")
    assert out["rows"] == 60 * PER_DAY and out["labels"] == 60 * PER_DAY
    assert set(out["features"]) == {"x1", "x2", "x3", "x4", "cat"}

    service = MonitorService(registry, blobs, Policy(monitor=POLICY))
    fired: dict[str, list] = {}
    for day in range(1, 61):  # midnight after each day: that day's window closes
        result = service.run("churn", T0 + day * DAY)
        for a in result["alerts"]:
            if a["state"] == "firing":
                fired.setdefault(a["kind"], []).append((day, (a["fired_window"] - T0) / DAY))

    # the drift alert in the first closed daily window after the shift, at once
    assert fired["drift"][0] == (COVARIATE + 1, COVARIATE)
    # the performance alert in the first window whose labels arrived (4 days late)
    perf_day, perf_window = fired["performance"][0]
    assert perf_window == CONCEPT
    assert perf_day == CONCEPT + 5  # its labels all arrived by then
    # no alert of any kind from the 30 stationary windows
    stationary = [w for kind in fired.values() for _, w in kind if w < COVARIATE]
    windows = registry.windows_of("churn", "daily")
    assert len(windows) == 60
    false_alarm_rate = len(stationary) / COVARIATE
    print(f"false-alarm rate over {COVARIATE} stationary daily windows: {false_alarm_rate:.3f}")
    assert stationary == []

    # the label-free estimate is within 0.03 of the realised accuracy while stationary
    for w in windows[:COVARIATE]:
        m = w["metrics"]
        assert m["estimate"]["calibrated"], m["estimate"]
        assert abs(m["estimate"]["estimate"] - m["performance"]["value"]) <= 0.03, m
        lo, hi = m["performance"]["ci"]
        assert lo <= m["performance"]["value"] <= hi
    # the concept shift's windows close only when their labels arrived
    assert windows[CONCEPT]["labels"] == "final"
    assert windows[CONCEPT]["metrics"]["labels"] >= POLICY.min_labels

    # a drift alert's retrain action is an audit row the retraining side consumes
    actions = [r["action"] for r in registry.audit_rows_since(None)]
    assert "monitor.retrain_requested" in actions and "monitor.alert" in actions
    firing = registry.alerts_of("churn", "firing")
    assert {a["kind"] for a in firing} >= {"drift", "performance"}


def test_a_window_below_the_minimum_sample_size_says_why_and_never_alerts(stores):
    registry, blobs = stores
    rng = np.random.default_rng(3)
    backfill.import_reference(registry, blobs, "small", traffic(rng, 2000), "test")
    f = traffic(rng, 50, shift=True)
    f["time"] = T0 + np.sort(rng.uniform(0, DAY, 50))
    backfill.import_log(registry, blobs, "small", f, "test")
    result = MonitorService(registry, blobs, Policy(monitor=POLICY)).run("small", T0 + 3 * DAY)
    window, *empty = result["windows"]  # the day with traffic, then two without
    assert window["status"] == "insufficient" and len(empty) == 2
    assert "50 predictions, fewer than min_samples = 200" in window["reason"]
    assert all(w["status"] == "insufficient" for w in empty)
    assert result["alerts"] == [] and registry.alerts_of("small") == []


def test_the_views_read_each_window_against_its_thresholds_and_the_firing_alerts(stores):
    registry, blobs = stores
    rng = np.random.default_rng(5)
    backfill.import_reference(registry, blobs, "churn", traffic(rng, 2000), "test")
    days = []
    for d, shift in enumerate((False, True)):
        f = traffic(rng, 400, shift=shift)
        f["time"] = T0 + d * DAY + np.sort(rng.uniform(0, DAY, 400))
        days.append(f)
    backfill.import_log(registry, blobs, "churn", pd.concat(days, ignore_index=True), "test")
    service = MonitorService(registry, blobs, Policy(monitor=POLICY))
    service.run("churn", T0 + 2 * DAY)

    calm, shifted = registry.windows_of("churn", "daily")
    drift = {m["kind"]: m for m in service.marks(shifted)}["drift"]
    assert drift == {
        "kind": "drift",
        "value": shifted["metrics"]["drift"]["share"],
        "threshold": POLICY.max_drift_share,
        "worse": "above",
        "crossed": True,
        "clears_at": POLICY.max_drift_share * (1 - POLICY.clear_margin),
    }
    assert not any(m["crossed"] for m in service.marks(calm))
    estimate = {m["kind"]: m for m in service.marks(calm)}.get("estimated_performance")
    assert estimate is None or estimate["worse"] == "below"
    # the models list's badges: one query for the firing alerts of a page of models
    firing = registry.firing_alerts(["churn", "other"])
    assert set(firing) == {"churn"}
    assert "drift" in {a["kind"] for a in firing["churn"]}
    assert all(set(a) == {"kind", "window", "fired_window", "message"} for a in firing["churn"])
    assert registry.firing_alerts(["other"]) == {}


def test_every_alert_kind_has_a_severity():
    from handoff_agent.monitor_policy import ALERT_KINDS, SEVERITY, describe_alerts

    assert sorted(SEVERITY) == sorted(ALERT_KINDS)
    assert describe_alerts()["severity"][0] == "performance"


def test_a_rollback_alert_rolls_back_only_the_production_version_its_window_measured(stores):
    """An hourly and a daily alert of one incident: the first rolled churn:2 back, an admin
    promoted the fix churn:3 since; the daily window's alert must not roll churn:3 back. Nor
    may a window of an imported log (version 0: what it measured may serve anywhere). Each
    rollback withheld says why, in the alert and in an audit row."""
    from handoff_agent.stages import StageManager
    from handoff_agent.versions import VersionService

    registry, blobs = stores
    manifest = {"format_version": 1, "name": "churn", "serialization": "pickle", "files": {}}
    for n in (1, 2, 3):
        VersionService(registry).create_version("churn", f"{n:064x}", 1, manifest, "ana", [])
    vid = {n: registry.version_id("churn", n) for n in (1, 2, 3)}
    for n, stage in ((1, "archived"), (2, "rollback"), (3, "production")):
        registry.stage_set(vid[n], stage, "ada", "", f"churn:{n}")
    for slot, n in (("production", 3), ("previous", 1)):
        registry.slot_set("churn", slot, vid[n], n, 100.0 if slot == "production" else 0.0, "t")
    # no deployment hook: the slots stay as they are; the stages are the real rules
    service = MonitorService(registry, blobs, stages=StageManager(registry, Policy()))
    alert = {"id": 1, "message": "churn: performance 0.0 crossed 0.9", "window": "daily"}

    def act(served, window="daily"):
        with registry.transaction():
            return service.act("churn", {**alert, "window": window}, "rollback", served=served)

    (row,) = [h for h in registry.stage_history(vid[2]) if h["stage"] == "rollback"]
    held = {
        # the version it measured, checked under its lock as an admin's rollback is
        (2,): "not rolled back (churn:2 was rolled back already, by ada at "
        f"{when_text(row['since'])}; nothing was done.); notified",
        (0,): "not rolled back: the window measured version 0 (imported: its version unknown), "
        "not churn:3 that serves; notified",
        (0, 3): "not rolled back: the window measured version 0 (imported: its version unknown) "
        "and churn:3, not churn:3 alone that serves; notified",
        (): "not rolled back: the window measured no version, not churn:3 that serves; notified",
    }
    for served, said in held.items():
        assert act(list(served)) == (said, False), served
    # a monthly window's alert (it closes weeks after most of its traffic) only notifies
    monthly = "a monthly window does not roll back (the daily ones do); notified"
    assert act([3], "monthly") == (monthly, False)
    withheld = registry.audit_rows(("monitor.rollback_withheld",))
    assert [(r["subject"], json.loads(r["payload"])["reason"]) for r in withheld] == [
        ("churn", said) for said in [*held.values(), monthly]
    ]
    assert [json.loads(r["payload"])["measured"] for r in withheld] == [[2], [0], [0, 3], [], [3]]
    assert [registry.version_stage(vid[n]) for n in (1, 2, 3)] == [
        "archived",
        "rollback",
        "production",
    ]
    # a window churn:3 served (churn:2 too: a promotion within it) rolls churn:3 back
    assert act([2, 3]) == ("rolled back churn:3; churn:1 serves again", True)
    assert registry.version_stage(vid[3]) == "rollback"


def test_a_rollback_alert_rolls_back_the_version_it_saw_or_is_told_who_did(stores):
    """The monitor names the production version it read, and the StageManager checks it
    under the version's lock: an admin who rolled churn:2 back after the monitor read the
    slots wins, and the monitor notifies, saying who and when; churn:1 is not rolled back."""
    from handoff_agent.stages import StageManager
    from handoff_agent.versions import VersionService

    registry, blobs = stores
    manifest = {"format_version": 1, "name": "churn", "serialization": "pickle", "files": {}}
    for n in (1, 2):
        VersionService(registry).create_version("churn", f"{n:064x}", 1, manifest, "ana", [])
    v1, v2 = registry.version_id("churn", 1), registry.version_id("churn", 2)
    registry.stage_set(v1, "archived", "ada", "replaced by version 2", "churn:1")
    registry.stage_set(v2, "production", "ada", "", "churn:2")
    registry.slot_set("churn", "production", v2, 2, 100.0, "ada")
    registry.slot_set("churn", "previous", v1, 1, 0.0, "ada")
    # no deployment hook: the slots stay as the monitor read them before the admin's commit
    stages = StageManager(registry, Policy())
    stages.transition("churn", 2, {"user": "ada", "roles": ["admin"]}, "rollback", "errors up")
    service = MonitorService(registry, blobs, stages=stages)
    alert = {"id": 1, "message": "churn: performance 0.0 crossed 0.9", "window": "daily"}
    with registry.transaction():
        outcome, rolled = service.act("churn", alert, "rollback", served=[2])
    (row,) = [h for h in registry.stage_history(v2) if h["stage"] == "rollback"]
    assert (outcome, rolled) == (
        f"not rolled back (churn:2 was rolled back already, by ada at {when_text(row['since'])} "
        "('errors up'); nothing was done.); notified",
        False,
    )
    assert [registry.version_stage(v) for v in (v1, v2)] == ["archived", "rollback"]


def test_a_log_imported_late_judges_its_window_again_and_an_older_window_clears_nothing(stores):
    """A window is judged when it closes; records of it stored later (a late import, a
    segment flushed after it closed) judge it again, whole. Its alert names it; but a window
    older than the one that fired an alert does not clear that alert."""
    registry, blobs = stores
    rng = np.random.default_rng(11)
    backfill.import_reference(registry, blobs, "churn", traffic(rng, 4000), "test")

    imports = iter(range(10))

    def day(d: int, shift: bool) -> None:
        f = traffic(rng, PER_DAY, shift=shift)
        f["time"] = T0 + d * DAY + np.sort(rng.uniform(0, DAY, PER_DAY))
        n = next(imports)
        f["request_id"] = [f"r{n}-{i}" for i in range(PER_DAY)]
        backfill.import_log(registry, blobs, "churn", f, "test")

    service = MonitorService(registry, blobs, Policy(monitor=POLICY))
    day(0, False)
    day(2, False)
    first = service.run("churn", T0 + 3 * DAY)
    assert [w["status"] for w in first["windows"]] == ["ok", "insufficient", "ok"]
    assert first["alerts"] == []

    day(1, True)  # day 1's log arrives late, shifted
    late = service.run("churn", T0 + 3 * DAY)
    assert [w["start"] for w in late["windows"]] == [T0 + DAY]  # only the window it touched
    fired = {a["kind"]: (a["state"], a["fired_window"]) for a in late["alerts"]}
    assert fired["drift"] == ("firing", T0 + DAY), fired  # (and the shifted predictions')
    assert set(fired.values()) == {("firing", T0 + DAY)}, fired

    day(0, False)  # more of day 0, within bounds: older than the alert's window
    again = service.run("churn", T0 + 3 * DAY)
    assert [w["start"] for w in again["windows"]] == [T0] and again["alerts"] == []
    assert {a["kind"] for a in registry.alerts_of("churn", "firing")} == set(fired)

    day(3, False)  # the next day within bounds clears them
    cleared = service.run("churn", T0 + 4 * DAY)
    assert {(a["kind"], a["state"]) for a in cleared["alerts"]} == {
        (kind, "cleared") for kind in fired
    }
    assert registry.alerts_of("churn", "firing") == []


def test_one_feature_moved_alerts_and_says_which_then_clears_in_its_own_words(stores):
    """x3 alone moves (1 of 5 features: under the share of drifted features that alerts);
    the feature-drift alert names it with its PSI, and its clearing says it is back within,
    not the firing's words again. A constant column that changes value counts too."""
    registry, blobs = stores
    rng = np.random.default_rng(5)

    def day_of(d: int, moved: bool) -> pd.DataFrame:
        f = traffic(rng, PER_DAY)
        f["k"] = 2.0 if moved else 1.0  # constant in the reference
        if moved:
            f["x3"] += 1.0
        f["time"] = T0 + d * DAY + np.sort(rng.uniform(0, DAY, PER_DAY))
        f["request_id"] = [f"r{d}-{i}" for i in range(PER_DAY)]
        return f

    reference = traffic(rng, 4000).assign(k=1.0)
    backfill.import_reference(registry, blobs, "churn", reference, "test")
    backfill.import_log(registry, blobs, "churn", day_of(0, True), "test")
    service = MonitorService(registry, blobs, Policy(monitor=POLICY))
    fired = {a["kind"]: a for a in service.run("churn", T0 + DAY)["alerts"]}
    assert set(fired) == {"drift", "feature_drift"}, fired  # 2 of 6 features: k and x3
    message = fired["feature_drift"]["message"]
    assert message.startswith("churn: drift in one feature "), message
    assert message.endswith(" features drifted") and ": k (PSI " in message, message
    drifted = fired["drift"]["message"].split(": ", 2)[-1]
    assert drifted.startswith(("x3 (PSI", "k (PSI")) and "2 of 6 features drifted" in drifted

    backfill.import_log(registry, blobs, "churn", day_of(1, False), "test")
    cleared = {a["kind"]: a for a in service.run("churn", T0 + 2 * DAY)["alerts"]}
    assert {k: a["state"] for k, a in cleared.items()} == {k: "cleared" for k in fired}
    said = cleared["feature_drift"]["message"]
    assert " is back within 0.5 in the daily window from " in said, said


def test_a_window_with_no_reference_says_what_it_cannot_judge(stores):
    """A model monitored from an imported log with no reference: its windows say, where the
    views show a reason, that drift and performance are not judged (they read 'ok', silent)."""
    registry, blobs = stores
    rng = np.random.default_rng(9)
    f = traffic(rng, PER_DAY)
    f["time"] = T0 + np.sort(rng.uniform(0, DAY, PER_DAY))
    backfill.import_log(registry, blobs, "churn", f, "test")
    (window,) = MonitorService(registry, blobs, Policy(monitor=POLICY)).run("churn", T0 + DAY)[
        "windows"
    ]
    assert window["status"] == "ok", window
    assert window["reason"] == (
        "no reference: input drift, prediction drift and performance not judged"
    )


def test_the_rolling_window_reads_with_its_own_start_and_by_since(stores):
    """The rolling window is kept under one key (start 0): its series read ``start`` 1970
    and ``?since=`` (the view's last day) never returned it. It reads with the start its
    run gave it, and ``since`` takes it while it ends after it."""
    registry, blobs = stores
    rng = np.random.default_rng(5)
    backfill.import_reference(registry, blobs, "live", traffic(rng, 500), "test")
    now = T0 + DAY
    f = traffic(rng, 300)
    f["time"] = now - 1800 + np.sort(rng.uniform(0, 1700, 300))  # the last half hour
    backfill.import_log(registry, blobs, "live", f, "test")
    policy = MonitorPolicy.load({"daily": False, "monthly": False, "rolling_minutes": 60})
    MonitorService(registry, blobs, Policy(monitor=policy)).run("live", now)

    [rolling] = registry.windows_of("live", "rolling", since=now - 3 * 3600)

    assert rolling["start"] == now - 3600 and rolling["end"] == now, rolling
    assert rolling["metrics"]["traffic"]["requests"] == 300
    assert registry.windows_of("live", "rolling", since=now + 1) == []
