"""serving/guardrails.py: the decision at each tick, without HTTP and without a clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handoff_agent import vocabulary
from handoff_agent.deploy_policy import DeployPolicy
from handoff_agent.policy import Policy
from handoff_agent.serving.guardrails import (
    current_step,
    evaluate,
    evaluate_slots,
    shadow_report,
    shadow_slots,
)
from handoff_agent.serving.stats import RollingStats, StatsBook, WindowStats

POLICY = DeployPolicy(min_requests=100, bake_seconds=300, max_error_rate=0.01)
STEPS = DeployPolicy(steps=(5, 25, 50), step_seconds=60, bake_seconds=120, min_requests=100)


def traffic(n, *, errors=0, ms=5.0, classes=None, scores=None, labels=None, pairs=None):
    """WindowStats of ``n`` requests, the first ``errors`` of them failed."""
    r = RollingStats()
    for i in range(n):
        r.record(
            0.0,
            ms(i) if callable(ms) else ms,
            error=i < errors,
            classes=[classes(i)] if classes else (),
            scores=[scores(i)] if scores else (),
        )
    for pred, label in labels or ():
        r.record_label(0.0, pred, label)
    for agree in pairs or ():
        r.record_pair(0.0, agree)
    return r.window(0.0)


PROD = traffic(2000, classes=lambda i: i % 2, scores=lambda i: (i % 100) / 100 + 0.005)


def test_a_clean_canary_bakes_then_is_ready_to_promote():
    canary = traffic(150, classes=lambda i: i % 2, scores=lambda i: (i % 100) / 100 + 0.005)
    d = evaluate(canary, PROD, POLICY, now=1100.0, started_at=1000.0)
    assert d.state == "baking" and d.alarm is None
    assert d.missing == {"seconds": 200} and d.percent == 10.0
    assert "200 s more" in d.reason
    d = evaluate(canary, PROD, POLICY, now=1300.0, started_at=1000.0)
    assert d.state == "promote_ready" and d.percent == 10.0 and not d.missing
    assert d.metrics["psi"] < 0.2 and d.metrics["p99_ratio"] == pytest.approx(1.0)
    assert "ready to promote" in d.reason
    json.dumps(d.to_dict())  # the audit payload is plain JSON


def test_no_decision_on_too_little_traffic():
    # 99 requests: 1 error is 1% (below the line it would be at 100); the time has passed
    d = evaluate(traffic(99, errors=1), PROD, POLICY, now=10_000.0, started_at=0.0)
    assert d.state == "baking" and d.missing == {"requests": 1}
    assert d.reason == "Baking at 10%: 1 more request before a decision."
    # a slow canary below min_requests is not compared with production yet
    slow = traffic(50, ms=500.0)
    d = evaluate(slow, PROD, POLICY, now=10_000.0, started_at=0.0)
    assert d.state == "baking" and "p99_ratio" not in d.metrics


def test_errors_no_later_success_can_dilute_roll_back_before_min_requests():
    # 2 errors: over 1% even if the next 98 requests all succeed
    d = evaluate(traffic(10, errors=2), PROD, POLICY, now=1.0, started_at=0.0)
    assert d.state == "rollback" and d.percent == 0.0
    assert d.alarm.metric == "error_rate" and d.alarm.value == 0.2


def test_the_error_alarm_holds_above_the_threshold_only():
    at = evaluate(traffic(200, errors=2), PROD, POLICY, now=1000.0, started_at=0.0)
    assert at.state == "promote_ready"  # exactly 1% is not above 1%
    over = evaluate(traffic(200, errors=3), PROD, POLICY, now=1000.0, started_at=0.0)
    assert over.state == "rollback"
    a = over.alarm
    assert (a.metric, a.value, a.threshold) == ("error_rate", 0.015, 0.01)
    assert a.sentence == (
        "Canary error rate 1.5% (3 of 200 requests) is above max_error_rate 1.0%."
    )
    assert over.reason == a.sentence and "\n" not in a.sentence


def test_errors_production_makes_as_often_are_the_clients_not_the_canary():
    # Clients send some rows no model takes: production fails 2% of 2000 requests
    noisy = traffic(2000, errors=40)
    # 100 canaries failing as often, at 100 to 1000 requests: the limit alone (2% > 1%) rolled
    # back nearly every one; against production, a 99% one-sided test, a few at most
    rng = np.random.default_rng(5)
    sizes = [n for n in (100, 200, 400, 1000) for _ in range(25)]
    like = [int(rng.binomial(n, 0.02)) for n in sizes]
    assert sum(e / n > 0.01 for n, e in zip(sizes, like, strict=True)) > 80
    decided = [
        evaluate(traffic(n, errors=e), noisy, POLICY, now=1000.0, started_at=0.0)
        for n, e in zip(sizes, like, strict=True)
    ]
    assert sum(d.state == "rollback" for d in decided) <= 3
    # One failing 6% of its requests is rolled back, and the reason names production's rate
    worse = evaluate(traffic(200, errors=12), noisy, POLICY, now=1000.0, started_at=0.0)
    assert worse.state == "rollback" and worse.metrics["production_error_rate"] == 0.02
    assert worse.alarm.sentence == (
        "Canary error rate 6.0% (12 of 200 requests) is above max_error_rate 1.0%, and above "
        "production's 2.0%."
    )
    # Against a production that fails nothing, the limit alone decides, as before
    assert evaluate(traffic(200, errors=3), PROD, POLICY, 1000.0, 0.0).state == "rollback"


def test_an_alarm_fires_at_the_first_tick_its_condition_holds():
    # Given a canary ticked every 5 s that starts failing 1 request in 20 at t = 60
    policy = DeployPolicy(min_requests=50, max_error_rate=0.02, bake_seconds=600)
    canary, prod = RollingStats(slice_seconds=5), RollingStats(slice_seconds=5)
    first_rollback = condition_from = None
    for tick in range(1, 60):
        now = tick * 5.0
        for i in range(10):
            t = now - 5 + i * 0.5
            canary.record(t, 3.0, error=t >= 60 and i % 2 == 0 and tick % 2 == 0)
            prod.record(t, 3.0)
        w = canary.window(now, since=0.0)
        if condition_from is None and w.count >= 50 and w.errors / w.count > 0.02:
            condition_from = tick
        d = evaluate(w, prod.window(now, since=0.0), policy, now=now, started_at=0.0)
        if d.state == "rollback" and first_rollback is None:
            first_rollback = tick
    # Then the rollback comes at the very tick the condition first holds
    assert condition_from is not None and first_rollback == condition_from


def test_p99_against_production_with_slack_for_submillisecond_noise():
    slow = traffic(1000, ms=lambda i: 6.0 if i % 50 else 30.0)  # p99 30 ms vs 5 ms
    d = evaluate(slow, PROD, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "rollback" and d.alarm.metric == "p99_ratio"
    assert d.alarm.value == pytest.approx(6.0, rel=0.05) and d.alarm.threshold == 1.5
    assert d.alarm.sentence.startswith("Canary p99 latency 29.6 ms")
    assert "times production's 5.07 ms" in d.alarm.sentence  # buckets: 4% wide
    # on 200 requests a p99 is two requests: the tail compared is p95 until there are more
    d = evaluate(traffic(200, ms=lambda i: 6.0 if i % 50 else 30.0), PROD, POLICY, 1000.0, 0.0)
    assert d.state == "promote_ready" and d.metrics["tail_quantile"] == 0.95
    d = evaluate(traffic(200, ms=lambda i: 6.0 if i % 10 else 30.0), PROD, POLICY, 1000.0, 0.0)
    assert d.alarm.metric == "p99_ratio" and d.alarm.sentence.startswith("Canary p95 latency")
    ok = evaluate(traffic(200, ms=7.0), PROD, POLICY, now=1000.0, started_at=0.0)
    assert ok.state == "promote_ready" and ok.metrics["p99_ratio"] < 1.5
    # 0.6 ms against 0.2 ms is 3x, but 0.4 ms apart: under p99_slack_ms
    fast_prod = traffic(500, ms=0.2)
    d = evaluate(traffic(200, ms=0.6), fast_prod, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "promote_ready" and d.metrics["p99_ratio"] > 2.5


def test_prediction_shift_against_production():
    # classes 90/10 against production's 50/50: 0.4 ln 1.8 + 0.4 ln 5 = 0.8789
    prod = traffic(1000, classes=lambda i: i % 2)
    canary = traffic(200, classes=lambda i: int(i % 10 == 0))
    d = evaluate(canary, prod, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "rollback" and d.alarm.metric == "psi"
    assert d.alarm.value == pytest.approx(0.8789, abs=1e-3)
    assert "PSI on classes 0.878 is above max_psi 0.2" in d.alarm.sentence
    # scores piled at the top against production's uniform ones
    shifted = traffic(200, scores=lambda i: 0.9 + (i % 10) / 100)
    d = evaluate(shifted, PROD, POLICY, now=1000.0, started_at=0.0)
    assert d.alarm.metric == "psi" and d.metrics["psi_on"] == "scores"


def test_live_performance_once_enough_labels_arrived():
    prod = traffic(1000, classes=lambda i: i % 2, labels=[(1, 1)] * 90 + [(0, 1)] * 10)
    worse = [(1, 1)] * 70 + [(0, 1)] * 30
    canary = traffic(200, classes=lambda i: i % 2, labels=worse)
    d = evaluate(canary, prod, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "rollback" and d.alarm.metric == "live_metric_ratio"
    assert d.alarm.value == pytest.approx(0.7 / 0.9)
    assert "live accuracy 0.7 over 100 labels" in d.alarm.sentence
    # 84% on 60 labels against 90%: below the line, but what label noise explains
    noisy = traffic(200, classes=lambda i: i % 2, labels=[(1, 1)] * 50 + [(0, 1)] * 10)
    d = evaluate(noisy, prod, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "promote_ready" and d.metrics["live_metric_ratio"] < 0.95
    few = traffic(200, classes=lambda i: i % 2, labels=worse[-40:])  # 40 < min_labels
    d = evaluate(few, prod, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "promote_ready" and d.metrics["live_metric_ratio"] is None
    # a regressor's error, lower is better: auto picks mae
    reg_prod = traffic(1000, labels=[(1.0, 1.5)] * 60)  # mae 0.5
    reg = traffic(200, labels=[(1.0, 2.0)] * 60)  # mae 1.0: half as good
    d = evaluate(reg, reg_prod, POLICY, now=1000.0, started_at=0.0)
    assert d.alarm.metric == "live_metric_ratio" and d.alarm.value == 0.5
    assert d.metrics["live_metric"] == "mae"


def test_every_alarm_is_reported_the_first_decides():
    bad = traffic(200, errors=20, ms=50.0, classes=lambda i: 0)
    d = evaluate(bad, PROD, POLICY, now=1000.0, started_at=0.0)
    assert [a.metric for a in d.alarms] == ["error_rate", "p99_ratio", "psi"]
    assert d.alarm == d.alarms[0]
    assert {a.metric for a in d.alarms} <= set(vocabulary.ALARMS)


def test_linear_steps_advance_then_bake():
    clean = traffic(120)

    def at(percent, elapsed):
        return evaluate(clean, PROD, STEPS, now=elapsed, started_at=0.0, percent=percent)

    d = at(5, 30)
    assert (d.state, d.percent, d.step, d.missing) == ("baking", 5, 0, {"seconds": 30})
    assert d.reason.startswith("Step 1 of 3 at 5%")
    d = at(5, 60)
    assert (d.state, d.percent, d.step) == ("step_up", 25, 1)
    assert "next 25%" in d.reason
    assert at(25, 60).percent == 50 and at(25, 60).state == "step_up"
    d = at(50, 60)  # the last step bakes for bake_seconds
    assert (d.state, d.missing) == ("baking", {"seconds": 60})
    assert at(50, 120).state == "promote_ready"
    # a step without enough requests waits, however long it has been
    d = evaluate(traffic(40), PROD, STEPS, now=600.0, started_at=0.0, percent=5)
    assert d.state == "baking" and d.missing == {"requests": 60}
    # paused at 0% (requests naming its version still reach it): never stepped up, never
    # ready, however long and clean; its alarms still apply
    for policy in (STEPS, POLICY):
        d = evaluate(clean, PROD, policy, now=6000.0, started_at=0.0, percent=0)
        assert (d.state, d.percent) == ("paused", 0.0) and d.reason.startswith("Paused at 0%")
    d = evaluate(traffic(120, errors=5), PROD, STEPS, now=60.0, started_at=0.0, percent=0)
    assert d.state == "rollback"
    # an alarm at any step rolls back to 0%
    d = evaluate(traffic(120, errors=5), PROD, STEPS, now=60.0, started_at=0.0, percent=25)
    assert (d.state, d.percent) == ("rollback", 0.0)


def test_current_step_and_the_whole_policy_is_accepted():
    assert [current_step(p, STEPS) for p in (None, 1, 5, 20, 25, 50, 80)] == [0, 0, 0, 0, 1, 2, 2]
    d = evaluate(traffic(120), PROD, Policy(deploy=STEPS), now=60.0, started_at=0.0)
    assert d.state == "step_up"


def test_without_production_only_the_error_rate_applies():
    slow = traffic(200, ms=500.0, classes=lambda i: 0)
    d = evaluate(slow, None, POLICY, now=1000.0, started_at=0.0)
    assert d.state == "promote_ready" and d.metrics["production_requests"] == 0
    d = evaluate(slow, traffic(10), POLICY, now=1000.0, started_at=0.0)
    assert d.state == "promote_ready"  # too little production traffic to compare with
    assert evaluate(traffic(200, errors=9), None, POLICY, 1000.0, 0.0).state == "rollback"


def test_shadow_report_gates_the_canary():
    gated = DeployPolicy(shadow=True, min_requests=100, min_agreement=0.95)
    prod = traffic(1000, classes=lambda i: i % 2)
    good = traffic(200, classes=lambda i: i % 2, pairs=[True] * 198 + [False] * 2)
    r = shadow_report(good, prod, gated)
    assert (r.gates, r.ready, r.passed) == (True, True, True)
    assert r.agreement == 0.99 and r.psi < 0.01 and r.failures == ()
    assert "class agreement with production" in r.reason
    json.dumps(r.to_dict())

    poor = traffic(200, classes=lambda i: i % 2, pairs=[True] * 180 + [False] * 20)
    r = shadow_report(poor, prod, gated)
    assert r.passed is False and r.agreement == 0.9
    assert r.reason == (
        "Shadow agrees with production on 90.0% of 200 mirrored requests, below "
        "min_agreement 95.0%."
    )
    shifted = traffic(200, classes=lambda i: 0, pairs=[True] * 200, ms=40.0)
    r = shadow_report(shifted, prod, gated)
    assert r.passed is False and len(r.failures) == 2  # PSI and p99

    early = traffic(30, classes=lambda i: i % 2, pairs=[False] * 30)
    r = shadow_report(early, prod, gated)
    assert (r.ready, r.passed, r.failures) == (False, None, ())
    assert "70 more mirrored requests" in r.reason
    # without `shadow = true` the report informs and does not gate
    assert shadow_report(good, prod, DeployPolicy()).gates is False


def test_guardrail_states_are_the_vocabulary():
    seen = {
        evaluate(traffic(10), PROD, POLICY, 0.0, 0.0).state,
        evaluate(traffic(200), PROD, POLICY, 1000.0, 0.0).state,
        evaluate(traffic(200, errors=50), PROD, POLICY, 0.0, 0.0).state,
        evaluate(traffic(120), PROD, STEPS, 60.0, 0.0).state,
        evaluate(traffic(120), PROD, STEPS, 60.0, 0.0, percent=0).state,
    }
    assert seen == set(vocabulary.GUARDRAIL_STATES)
    assert WindowStats().count == 0


def test_the_deployment_service_reads_a_stats_book():
    # Given a book where canary v3 fails and production v2 is healthy, recorded before and
    # after the canary's step started at t = 100
    book = StatsBook(slice_seconds=10)
    for i in range(300):
        t = i * 1.0
        book.get("churn", 2, "production").record(t, 4.0, classes=[i % 2])
        if t >= 100:
            book.get("churn", 3, "canary").record(t, 4.0, error=i % 10 == 0, classes=[i % 2])
            book.get("churn", 4, "shadow").record(t, 4.0, classes=[i % 2])
            book.get("churn", 4, "shadow").record_pair(t, True)
    d = evaluate_slots(book, "churn", 3, 2, POLICY, now=300.0, started_at=100.0, percent=10)
    assert d.state == "rollback" and d.alarm.metric == "error_rate"
    assert d.metrics["requests"] == 200
    # a first deployment has no production to compare with
    d = evaluate_slots(book, "churn", 3, None, POLICY, now=300.0, started_at=100.0)
    assert d.metrics["production_requests"] == 0
    # times as the deployments table keeps them (ISO 8601) work too
    d = evaluate_slots(
        book, "churn", 3, 2, POLICY, now="1970-01-01T00:05:00+00:00", started_at=100.0
    )
    assert d.state == "rollback" and d.metrics["elapsed_seconds"] == 200.0
    r = shadow_slots(book, "churn", 4, 2, DeployPolicy(shadow=True), now=300.0, since=100.0)
    assert (r.ready, r.passed, r.agreement) == (True, True, 1.0)


def test_a_bake_counts_nothing_from_before_it_began():
    # Given a canary v3 that served 150 clean requests (and production 300) in the slice
    # [100, 110) before its bake started again at t = 107 (a pause and resume, a step, a
    # rollback of the production under it)
    book = StatsBook(slice_seconds=10)
    for i in range(150):
        book.get("churn", 3, "canary").record(100 + i / 100, 4.0, classes=[i % 2])
        book.get("churn", 2, "production").record(100 + i / 100, 4.0, classes=[i % 2])
        book.get("churn", 2, "production").record(101 + i / 100, 4.0, classes=[i % 2])
    bake = DeployPolicy(min_requests=100, bake_seconds=0)
    # Then none of them counts: the bake starts at the first slice starting at or after 107,
    # its requests and its time alike (a slice is counted whole or not at all)
    for now in (109.0, 115.0, 400.0):
        d = evaluate_slots(book, "churn", 3, 2, bake, now=now, started_at=107.0, percent=10)
        assert (d.state, d.metrics["requests"]) == ("baking", 0), d
    d = evaluate_slots(book, "churn", 3, 2, POLICY, now=109.0, started_at=107.0, percent=10)
    assert d.missing == {"requests": 100, "seconds": 301}, d  # 1 s to 110, then 300 s
    # And once the canary serves after it, the bake is clean, timed from t = 110
    for i in range(100):
        book.get("churn", 3, "canary").record(110 + i / 100, 4.0, classes=[i % 2])
        book.get("churn", 2, "production").record(110 + i / 100, 4.0, classes=[i % 2])
    d = evaluate_slots(book, "churn", 3, 2, bake, now=111.5, started_at=107.0, percent=10)
    assert (d.state, d.metrics["requests"], d.metrics["elapsed_seconds"]) == (
        "promote_ready",
        100,
        1.5,
    ), d
    # A bake that begins on a slice's edge counts that slice
    d = evaluate_slots(book, "churn", 3, 2, bake, now=111.5, started_at=110.0, percent=10)
    assert d.state == "promote_ready" and d.metrics["requests"] == 100
    # The alarms read the slice it began in too: that version's errors there are its own
    for _ in range(5):  # 5 of 255 requests: above max_error_rate's 1%
        book.get("churn", 3, "canary").record(106.0, 4.0, error=True)
    d = evaluate_slots(book, "churn", 3, 2, bake, now=111.5, started_at=107.0, percent=10)
    assert (d.state, d.alarm.metric) == ("rollback", "error_rate"), d


def test_no_false_alarms_on_canaries_like_production_and_every_shifted_one_caught():
    # Given 200 canaries drawn from production's own distributions at 100 to 400 requests
    # (latency, scores, classes and 90% accuracy on 60 labels), under the default policy,
    # none alarms
    rng = np.random.default_rng(7)
    policy = DeployPolicy()

    def sample(n, *, shift=0.0, accuracy=0.9, slow=1.0, labels=60):
        r = RollingStats()
        scores = rng.beta(2 + shift, 5, n)
        for ms, s in zip(rng.lognormal(1.5, 0.4, n) * slow, scores, strict=True):
            r.record(0.0, float(ms), classes=[bool(s > 0.5)], scores=[float(s)])
        for ok in rng.random(labels) < accuracy:
            r.record_label(0.0, 1, 1 if ok else 0)
        return r.window(0.0)

    prod = sample(5000, labels=1000)
    alarms = [evaluate(sample(int(n)), prod, policy, 1e6, 0.0) for n in rng.integers(100, 400, 200)]
    assert [d.alarm.sentence for d in alarms if d.alarm] == []
    # and a clear shift in each guardrail is caught, every time, on the same traffic
    for kw, metric in (
        ({"shift": 3.0}, "psi"),
        ({"accuracy": 0.5}, "live_metric_ratio"),
        ({"slow": 3.0}, "p99_ratio"),
    ):
        caught = [evaluate(sample(200, **kw), prod, policy, 1e6, 0.0) for _ in range(20)]
        assert [d.alarm and d.alarm.metric for d in caught] == [metric] * 20


def test_a_many_class_canary_without_scores_alarms_on_a_shift_not_on_its_rare_classes():
    # Given a 20-class model that gives no probabilities (a LinearSVC over text), its classes
    # Zipf-distributed, and 200 canaries drawn from production's own distribution at 100 to
    # 400 requests: a sample of a few hundred misses some rare classes, which is no shift
    rng = np.random.default_rng(11)
    shares = 1 / np.arange(1, 21) ** 1.5
    shares /= shares.sum()

    def sample(n, p=shares):
        r = RollingStats()
        for c in rng.choice(len(p), n, p=p):
            r.record(0.0, 5.0, classes=[int(c)])
        return r.window(0.0)

    prod = sample(10_000)
    decisions = [
        evaluate(sample(int(n)), prod, POLICY, 1e6, 0.0) for n in rng.integers(100, 400, 200)
    ]
    assert [d.alarm.sentence for d in decisions if d.alarm] == []
    # while the two commonest classes swapped, or a fifth of the answers a class production
    # never gives, roll back every time at the first decision
    swapped = shares.copy()
    swapped[[0, 1]] = shares[[1, 0]]
    new_class = np.append(shares * 0.8, 0.2)
    for p in (swapped, new_class):
        caught = [evaluate(sample(100, p), prod, POLICY, 1e6, 0.0) for _ in range(20)]
        assert [d.alarm and d.alarm.metric for d in caught] == ["psi"] * 20


def test_labels_sent_as_text_still_catch_a_worse_canary():
    # Ground truth from a CSV or a database often reaches POST …/feedback as text ("1"): the
    # canary is right on half its labelled requests, production on nine in ten
    prod = traffic(
        1000,
        classes=lambda i: i % 2,
        labels=[(i % 2, str(i % 2) if i % 10 else str(1 - i % 2)) for i in range(200)],
    )
    canary = traffic(
        200, classes=lambda i: i % 2, labels=[(i % 2, str(i // 2 % 2)) for i in range(200)]
    )
    d = evaluate(canary, prod, POLICY, now=1000.0, started_at=0.0)
    assert d.metrics["live"] == 0.5 and d.metrics["production_live"] == 0.9
    assert d.state == "rollback" and d.alarm.metric == "live_metric_ratio", d.reason
