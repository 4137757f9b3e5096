"""serving/stats.py: rolling per-slot counters that are cheap to update and add up exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from handoff_agent.serving.stats import (
    GAMMA,
    RollingStats,
    StatsBook,
    WindowStats,
    bucket_value,
    latency_bucket,
    prediction_psi,
)


def test_latency_buckets_keep_quantiles_within_the_relative_error():
    for ms in (0.0005, 0.01, 0.3, 1.0, 7.5, 250.0, 60_000.0):
        got = bucket_value(latency_bucket(ms))
        assert abs(got - ms) / ms <= GAMMA - 1 or ms < 0.001
    r = RollingStats()
    values = [float(v) for v in range(1, 1001)]  # 1..1000 ms
    random.Random(0).shuffle(values)
    for v in values:
        r.record(5.0, v)
    w = r.window(5.0)
    assert w.count == 1000 and w.errors == 0 and w.error_rate == 0
    assert w.p50 == pytest.approx(500, rel=GAMMA - 1)
    assert w.p99 == pytest.approx(990, rel=GAMMA - 1)
    assert WindowStats().p99 is None and WindowStats().error_rate is None


def test_outputs_errors_labels_and_pairs_are_counted():
    r = RollingStats()
    r.record(1.0, 2.0, classes=["yes", "no", "yes"], scores=[0.9, 0.1, 0.8])
    r.record(1.5, 3.0, error=True, classes=["yes"])  # a failed request has no outputs
    r.record(2.0, 2.0, classes=[np.int64(1)], scores=[float("nan")])
    r.record_label(2.0, "yes", "yes")
    r.record_label(2.0, "no", "yes")
    r.record_pair(2.0, True)
    r.record_pair(2.0, False)
    r.record_pair(2.0, True)
    w = r.window(2.0)
    assert (w.count, w.errors, w.error_rate) == (3, 1, 1 / 3)
    assert w.classes == {"yes": 2, "no": 1, 1: 1}
    assert type(next(k for k in w.classes if k == 1)) is int  # numpy scalars as their value
    assert w.scores == {90: 1, 10: 1, 80: 1}  # NaN has no bin
    assert w.live("accuracy") == 0.5 and w.live("mae") is None
    assert w.agreement == pytest.approx(2 / 3)
    assert w.summary()["requests"] == 3


def test_a_label_that_is_no_finite_number_adds_no_error():
    # Given a regressor's labels, one of them sent as "nan" and one as "inf"
    r = RollingStats()
    for pred, label in ((1.0, "1"), (2.0, "3.5"), (4.0, "nan"), (4.0, "inf")):
        r.record_label(3.0, pred, label)
    # Then the error is over the two numbers, not NaN or infinite from then on
    assert r.window(3.0).live("mae") == pytest.approx(0.75)


def test_live_regression_metrics():
    r = RollingStats()
    for pred, label in ((1.0, 1.0), (2.0, 3.0), (4.0, 1.0)):
        r.record_label(0.0, pred, label)
    w = r.window(0.0)
    assert w.live("mae") == pytest.approx(4 / 3)
    assert w.live("rmse") == pytest.approx((10 / 3) ** 0.5)
    assert w.live("accuracy") == pytest.approx(1 / 3)
    # errors 0, 1, 3: mae 4/3 with variance (10/3 - 16/9) / 3; squared errors 0, 1, 9
    assert w.live_moments("mae") == pytest.approx((4 / 3, (10 / 3 - 16 / 9) / 3, 3))
    assert w.live_moments("rmse") == pytest.approx((10 / 3, (82 / 3 - 100 / 9) / 3, 3))
    assert w.live_moments("accuracy") == pytest.approx((1 / 3, (1 / 3) * (2 / 3) / 3, 3))
    assert WindowStats().live_moments("accuracy") is None


def _traffic(seed: int, n: int = 300):
    rng = random.Random(seed)
    return [
        (rng.uniform(0, 100), rng.lognormvariate(0, 0.5), rng.random() < 0.02, rng.random())
        for _ in range(n)
    ]


def _feed(r: RollingStats, traffic):
    for now, ms, err, score in traffic:
        r.record(now, ms, error=err, classes=[score > 0.5], scores=[score])


def test_two_workers_merge_to_exactly_one():
    a, b, both = RollingStats(), RollingStats(), RollingStats()
    ta, tb = _traffic(1), _traffic(2)
    _feed(a, ta)
    _feed(b, tb)
    _feed(both, sorted(ta + tb))
    merged = a.merge(b).window(100.0)
    assert merged == both.window(100.0)
    assert merged.p99 == both.window(100.0).p99


def test_drain_and_absorb_through_json_across_processes():
    worker, main, direct = StatsBook(), StatsBook(), StatsBook()
    traffic = _traffic(3)
    _feed(worker.get("churn", 2, "canary"), traffic[:150])
    main.absorb(json.loads(json.dumps(worker.drain())))
    _feed(worker.get("churn", 2, "canary"), traffic[150:])
    main.absorb(json.loads(json.dumps(worker.drain())))
    _feed(direct.get("churn", 2, "canary"), traffic)
    assert worker.drain() == []  # each count travels once
    got = main.window("churn", 2, "canary", 100.0)
    assert got == direct.window("churn", 2, "canary", 100.0)
    assert set(got.classes) == {True, False}  # class types survive JSON
    assert main.window("churn", 3, "canary", 100.0) == WindowStats()
    main.forget("churn", 2, "canary")
    assert main.window("churn", 2, "canary", 100.0).count == 0


def test_old_slices_fall_out_of_the_window():
    r = RollingStats(window_seconds=60, slice_seconds=10)
    r.record(0.0, 1.0)
    r.record(35.0, 1.0)
    r.record(59.0, 1.0)
    assert r.window(59.0).count == 3
    assert r.window(59.0, since=30.0).count == 2  # from the slice starting at `since`
    # a slice that starts before `since` holds requests from before it: it is not counted
    assert r.window(59.0, since=31.0).count == 1
    r.record(95.0, 1.0)  # slice 9: slices 3 and older are gone
    assert sorted(r.slices) == [5, 9]
    assert r.window(95.0).count == 2
    assert r.window(200.0).count == 0
    with pytest.raises(ValueError):
        RollingStats(window_seconds=5, slice_seconds=10)


def test_prediction_psi_on_scores_then_classes():
    rng = np.random.default_rng(0)
    prod, same, shifted = RollingStats(), RollingStats(), RollingStats()
    for s in rng.beta(2, 5, 2000):
        prod.record(0.0, 1.0, classes=[s > 0.5], scores=[s])
    for s in rng.beta(2, 5, 2000):
        same.record(0.0, 1.0, classes=[s > 0.5], scores=[s])
    for s in rng.beta(5, 2, 2000):
        shifted.record(0.0, 1.0, classes=[s > 0.5], scores=[s])
    p = prod.window(0.0)
    low, on = prediction_psi(same.window(0.0), p)
    assert on == "scores" and low < 0.05
    high, _ = prediction_psi(shifted.window(0.0), p)
    assert high > 1.0
    # without scores, on classes
    c1, c2 = WindowStats(classes={"a": 50, "b": 50}), WindowStats(classes={"a": 90, "b": 10})
    value, on = prediction_psi(c2, c1)
    assert on == "classes" and value == pytest.approx(0.8789, abs=1e-3)
    assert prediction_psi(WindowStats(), c1) == (None, None)
