"""fairness: fairlearn metrics per group, and thresholds on the differences."""

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.fairness import FairnessCheck


def _data(n=2000, seed=0):
    X, y = make_classification(n, n_features=5, n_informative=3, class_sep=2.0, random_state=seed)
    rng = np.random.default_rng(seed)
    sensitive = pd.DataFrame({"gender": rng.choice(["f", "m"], n)})
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]), pd.Series(y), sensitive


class RejectsGroup:
    """Unfair by construction: never selects anyone whose gender is "f"."""

    _estimator_type = "classifier"

    def __init__(self, model, gender):
        self.model, self.gender = model, gender

    def predict(self, X):
        pred = self.model.predict(X)
        pred[(self.gender.loc[X.index] == "f").to_numpy()] = 0
        return pred


def test_fair_model_passes():
    X, y, s = _data()
    res = FairnessCheck().run(
        CheckContext(LogisticRegression().fit(X, y), {}, X=X, y=y, sensitive=s)
    )
    assert res.status == "pass"
    assert res.metrics["gender.dp_diff"] < 0.1
    groups = {r["group"] for r in res.tables["groups"]}
    assert groups == {"f", "m"}
    assert {"selection_rate", "accuracy", "tpr", "fpr", "count"} <= set(res.tables["groups"][0])
    assert "by_group_gender" in res.plots


def test_unfair_model_fails_on_demographic_parity_and_equalized_odds():
    X, y, s = _data()
    model = RejectsGroup(LogisticRegression().fit(X, y), s["gender"])

    res = FairnessCheck().run(CheckContext(model, {}, X=X, y=y, sensitive=s))

    assert res.status == "fail"
    assert res.metrics["dp_diff"] > 0.3
    assert res.metrics["eo_diff"] > 0.5
    assert "dp_diff" in res.message and "gender" in res.message


def test_thresholds_come_from_config():
    X, y, s = _data()
    model = RejectsGroup(LogisticRegression().fit(X, y), s["gender"])
    ctx = CheckContext(
        model, {}, X=X, y=y, sensitive=s, config={"max_dp_diff": 1, "max_eo_diff": 1}
    )
    assert FairnessCheck().run(ctx).status == "pass"


def test_small_groups_are_reported_but_not_judged():
    X, y, s = _data()
    s["region"] = ["tiny"] * 5 + ["north"] * 995 + ["south"] * 1000
    res = FairnessCheck().run(
        CheckContext(LogisticRegression().fit(X, y), {}, X=X, y=y, sensitive=s)
    )
    assert res.status == "warn"
    assert "tiny" in res.message
    assert any(r["group"] == "tiny" for r in res.tables["groups"])


def test_a_continuous_column_is_said_to_want_bins():
    X, y, _ = _data()
    ages = pd.DataFrame({"âge client": np.random.default_rng(1).uniform(18, 90, len(X))})
    res = FairnessCheck().run(
        CheckContext(LogisticRegression().fit(X, y), {}, X=X, y=y, sensitive=ages)
    )
    assert res.status == "warn"
    assert "âge client: 2000 distinct values, a number per row rather than groups" in res.message
    assert "pd.cut" in res.message


def test_regression_error_per_group():
    X, y = make_regression(800, n_features=4, noise=1, random_state=0)
    X, y = pd.DataFrame(X, columns=list("abcd")), pd.Series(y)
    s = pd.DataFrame({"group": np.where(np.arange(800) % 2, "a", "b")})
    base = LinearRegression().fit(X, y)

    class NoisyForB:
        _estimator_type = "regressor"

        def predict(self, X):
            noise = np.where(s["group"].loc[X.index] == "b", 50.0, 0.0)
            return base.predict(X) + noise

    fair = FairnessCheck().run(CheckContext(base, {}, X=X, y=y, sensitive=s))
    unfair = FairnessCheck().run(CheckContext(NoisyForB(), {}, X=X, y=y, sensitive=s))
    assert fair.status == "pass"
    assert unfair.status == "fail"
    assert "mae_ratio" in unfair.message
    assert {"mae", "rmse"} <= set(unfair.tables["groups"][0])


def test_skips_without_sensitive_columns():
    X, y, _ = _data(100)
    res = FairnessCheck().run(CheckContext(LogisticRegression().fit(X, y), {}, X=X, y=y))
    assert res.status == "skip"


def test_string_overrides_from_the_command_line_are_converted():
    # Given thresholds typed as --gate fairness.max_dp_diff=1 (strings)
    X, y, s = _data()
    model = RejectsGroup(LogisticRegression().fit(X, y), s["gender"])
    config = {"max_dp_diff": "1", "max_eo_diff": "1.0", "plots": "false"}
    res = FairnessCheck().run(CheckContext(model, {}, X=X, y=y, sensitive=s, config=config))
    assert res.status == "pass"
    assert res.plots == {}
