"""latency and explainability, on small data and small budgets."""

import base64
import random
import time

import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.explainability import ExplainabilityCheck
from handoff_agent.checks.latency import LatencyCheck

X, Y = make_classification(400, n_features=4, n_informative=2, n_redundant=0, random_state=0)
X = pd.DataFrame(X, columns=list("abcd"))
FAST = LogisticRegression().fit(X, Y)


class Sleepy:
    """A slow model: sleeps 50 ms per call (far past 5x the champion's p50 even on a loaded
    machine, where a LogisticRegression's single-row predict can take a few ms)."""

    _estimator_type = "classifier"

    def predict(self, X):
        time.sleep(0.05)
        return FAST.predict(X)


def test_latency_reports_figures():
    res = LatencyCheck().run(CheckContext(FAST, {}, X=X), single_row_repeats=20)
    assert res.status == "pass"
    for key in ("p50_ms", "p99_ms", "throughput_rows_per_s", "peak_memory_mb", "serialized_mb"):
        assert res.metrics[key] >= 0
    assert res.metrics["single_row_calls"] == 20


def test_latency_fails_when_much_slower_than_the_champion():
    res = LatencyCheck().run(
        CheckContext(Sleepy(), {}, X=X, champion=FAST), single_row_repeats=10, batch_repeats=1
    )
    assert res.status == "fail"
    assert "slower than the champion" in res.message
    assert res.metrics["p50_ratio"] > 5


class Slowed:
    """One model as the machine runs it: its first calls, two models' together, fall while
    a check beside it makes the machine slow (10 ms a row), the later ones after (1 ms)."""

    _estimator_type = "classifier"
    calls = 0  # across every instance: the machine is shared

    def predict(self, X):
        Slowed.calls += 1
        time.sleep(0.010 if Slowed.calls <= 40 else 0.001)
        return FAST.predict(X)


def test_the_same_model_is_not_judged_slower_than_itself_when_the_machine_slows():
    # Given a candidate and a champion that are the same model, and a machine that is slow
    # for the first 40 predicts and fast after (a check beside this one ending)
    Slowed.calls = 0
    ctx = CheckContext(Slowed(), {}, X=X, champion=Slowed())
    res = LatencyCheck().run(ctx, single_row_repeats=50, batch_repeats=1)
    # Then both were timed through the same slow and fast spells: neither is slower. Timed
    # one after the other, the candidate took the slow calls: "Much slower than the champion".
    assert res.status == "pass", res.message
    assert 0.5 < res.metrics["p50_ratio"] < 2, res.message
    assert res.metrics["single_row_calls"] == res.metrics["champion_single_row_calls"] == 50


class Jittery:
    """One model on a busy machine: 4 calls in 10, drawn at random, are stretched (8 ms
    instead of 1 ms). This draw stretches 27 of the candidate's 50 timed calls and 18 of the
    champion's, as a busy CI machine did."""

    _estimator_type = "classifier"
    draw = random.Random(93)

    def predict(self, X):
        time.sleep(0.008 if Jittery.draw.random() < 0.4 else 0.001)
        return FAST.predict(X)


def test_the_same_model_is_not_judged_slower_than_itself_when_calls_are_stretched_at_random():
    Jittery.draw = random.Random(93)
    ctx = CheckContext(Jittery(), {}, X=X, champion=Jittery())
    res = LatencyCheck().run(ctx, single_row_repeats=50, batch_repeats=1)
    # The candidate's p50 is a stretched call and the champion's is not (8.9 ms and 1.8 ms
    # here), yet call for call neither is slower. Judged on the two p50s: "Slower" (4.8x).
    assert res.status == "pass", res.message
    assert 0.5 < res.metrics["p50_ratio"] < 2, res.message


def test_a_champion_that_raises_midway_is_named_and_the_candidate_still_timed():
    class Breaks:
        _estimator_type = "classifier"
        calls = 0

        def predict(self, X):
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("champion broke")
            return FAST.predict(X)

    res = LatencyCheck().run(
        CheckContext(FAST, {}, X=X, champion=Breaks()), single_row_repeats=10, batch_repeats=1
    )
    assert res.status == "warn"
    assert "Could not time the champion: predict raised RuntimeError: champion broke" in (
        res.message
    )
    assert res.metrics["single_row_calls"] == 10 and "champion_p50_ms" not in res.metrics


def test_explainability_ranks_informative_features_and_plots_them():
    res = ExplainabilityCheck().run(CheckContext(FAST, {}, X=X, y=pd.Series(Y)), max_rows=200)
    assert res.status == "pass"
    assert res.metrics["rows"] == 200
    top = res.metrics["top_features"]
    assert len(top) == 3
    informative = {"a", "b", "c", "d"} - {r["feature"] for r in res.tables["importance"][-2:]}
    assert set(top[:2]) == informative
    assert set(res.plots) == {f"pdp_{f}" for f in top}
    assert base64.b64decode(res.plots[f"pdp_{top[0]}"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_explainability_regression_with_a_categorical_feature():
    Xr, yr = make_regression(300, n_features=3, random_state=0)
    Xr = pd.DataFrame(Xr, columns=["u", "v", "w"])
    Xr["flag"] = (Xr["u"] > 0).astype(int)
    model = RandomForestRegressor(20, random_state=0).fit(Xr, yr)
    res = ExplainabilityCheck().run(
        CheckContext(model, {}, X=Xr, y=pd.Series(yr)), top_features=4, n_repeats=2
    )
    assert res.status == "pass"
    assert len(res.plots) == 4  # including the binary "flag", plotted as categorical


def test_serialized_size_counts_protocol_5_buffers():
    import pickle

    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from handoff_agent.checks.latency import serialized_size

    X, y = make_classification(n_samples=500, n_features=5, random_state=0)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert serialized_size(forest) == len(pickle.dumps(forest, protocol=5))


class OwnScore:
    """A model with a score of its own (a business metric, say): explainability cannot score
    it from stacked predictions, so it calls the score once per feature and shuffle. With
    ``delay`` the score is slow: it sleeps that long per call."""

    _estimator_type = "classifier"

    def __init__(self, delay: float = 0.0):
        self.delay, self.calls, self.classes_ = delay, 0, FAST.classes_

    def predict(self, X):
        return FAST.predict(X)

    def score(self, X, y):
        self.calls += 1
        time.sleep(self.delay)
        return float((FAST.predict(X) == y).mean())


def test_a_score_of_the_models_own_ranks_the_features_as_sklearns_would():
    # Given a model with its own (fast) score, the same accuracy FAST's score gives
    model = OwnScore()
    res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=pd.Series(Y)), plots=False)
    stacked = ExplainabilityCheck().run(CheckContext(FAST, {}, X=X, y=pd.Series(Y)), plots=False)
    # Then every feature is shuffled n_repeats times, nothing is cut, and the ranking leads
    # with the features that lead the stacked ranking
    assert model.calls == 1 + 4 * 3
    assert res.status == "pass" and res.metrics["budgeted"] is False, res.message
    assert "scored" not in res.metrics and "budget" not in res.message
    assert res.message.startswith("Most important by permutation on 400 rows (drop in its own ")
    assert set(res.metrics["top_features"][:2]) == set(stacked.metrics["top_features"][:2])


def test_a_slow_score_of_the_models_own_is_cut_by_the_budget_and_says_so():
    # Given a model whose own score sleeps 20 ms a call (4 features x 3 shuffles: 13 calls),
    # and a budget of 50 ms set in the check's config
    model = OwnScore(delay=0.02)
    ctx = CheckContext(model, {}, X=X, y=pd.Series(Y), config={"seconds": 0.05, "plots": False})
    res = ExplainabilityCheck().run(ctx)
    # Then the check finishes, ranks the features it shuffled before the budget ran out
    # (not all of them: two calls already spend it), and says what the budget cut
    # (a pass: features it never shuffled may matter, even when those it did do not)
    cut = res.metrics["scored"]
    assert res.status == "pass", res.message
    assert res.metrics["budgeted"] is True and cut["features"] == 4
    assert 1 <= cut["ranked"] < 4 and cut["repeats"] == [1, 1] and cut["n_repeats"] == 3
    assert model.calls == 1 + cut["ranked"]
    ranked = res.tables["importance"]
    assert len(ranked) == cut["ranked"] == len(res.metrics["importance"])
    assert [r["importance"] for r in ranked] == sorted(
        (r["importance"] for r in ranked), reverse=True
    )
    assert (
        f"The model's own score ran out of the 0.05 s budget: ranked {cut['ranked']} of 4 "
        f"features, by 1 of 3 shuffles each; the other {4 - cut['ranked']} were not ranked."
    ) in res.message
