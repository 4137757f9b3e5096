"""The router in-process: split accuracy over 10k requests, sticky keys, and the slots that
take traffic only by version. (Over HTTP, test_serving.py checks the same on a live server.)"""

from __future__ import annotations

import random
from collections import Counter

from handoff_agent.serving.routing import Endpoint, Route, draw_of, endpoints_from

N = 10_000


def endpoint(canary_share: float | None, production=True) -> Endpoint:
    ep = Endpoint("churn")
    if production:
        ep.routes["production"] = Route("production", 1, 100.0)
    if canary_share is not None:
        ep.routes["canary"] = Route("canary", 2, canary_share)
    ep.routes["test"] = Route("test", 3, 0.0)
    return ep


def test_random_split_matches_the_policy_within_one_and_a_half_points():
    for share in (1.0, 10.0, 25.0, 50.0):
        ep, rng = endpoint(share), random.Random(int(share))
        got = Counter(ep.pick(rng=rng).slot for _ in range(N))
        assert abs(100.0 * got["canary"] / N - share) <= 1.5, (share, got)
        assert set(got) <= {"production", "canary"}  # test never gets routed traffic


def test_sticky_keys_keep_their_version_and_still_split():
    ep = endpoint(20.0)
    keys = [f"customer-{i}" for i in range(N)]
    first = {k: ep.pick(key=k).number for k in keys}
    assert all(ep.pick(key=k).number == first[k] for k in keys[:500])
    share = 100.0 * sum(1 for v in first.values() if v == 2) / N
    assert abs(share - 20.0) <= 1.5
    # The draw is a pure function of (model, key): every replica routes a key the same way.
    assert draw_of("churn", "customer-7") == draw_of("churn", "customer-7")
    assert draw_of("churn", "customer-7") != draw_of("other", "customer-7")


def test_production_alone_canary_alone_and_no_split_slot():
    assert {endpoint(None).pick().slot for _ in range(200)} == {"production"}
    assert {endpoint(30.0, production=False).pick().slot for _ in range(200)} == {"canary"}
    only_test = Endpoint("churn", {"test": Route("test", 3)})
    assert only_test.pick() is None
    assert only_test.slot_of(3) == "test" and only_test.slot_of(4) is None


def test_endpoints_from_slot_rows():
    rows = [
        {"model": "a", "slot": "production", "number": 1, "traffic": 100.0},
        {"model": "a", "slot": "canary", "number": 2, "traffic": 5.0},
        {"model": "b", "slot": "test", "number": 1, "traffic": 0.0},
    ]
    eps = endpoints_from(rows)
    assert eps["a"].canary_share() == 5.0 and eps["a"].versions() == {1, 2}
    assert eps["b"].pick() is None


def test_a_production_that_cannot_serve_keeps_its_share_and_the_canary_only_its_own():
    """Production's bundle went bad (or its workers still start) beside a 30 % canary: its
    70 % get nothing to route to (the server answers 503 naming why), never the canary."""
    ep = Endpoint("churn", {"canary": Route("canary", 2, 30.0)}, {"production": (1, "corrupt")})
    assert ep.canary_share() == 30.0
    picked = [ep.pick(f"customer-{i}") for i in range(2000)]
    to_canary = sum(r is not None for r in picked) / len(picked)
    assert {r.slot for r in picked if r is not None} == {"canary"}
    assert 0.25 < to_canary < 0.35  # its 30 %, not everything
    # no production at all (a first version's canary): the canary takes everything
    assert Endpoint("churn", {"canary": Route("canary", 2, 30.0)}).canary_share() == 100.0
