"""The comparison: real versions from a real agent, stored results only; asserted on traits."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from support import until, wait_checked

from jupyter_handoff import api, config
from jupyter_handoff.comparison import Comparison, compare
from jupyter_handoff.widgets.style import BETTER, WORSE


def perf(version: dict) -> dict:
    (c,) = [c for c in version["checks"] if c["name"] == "performance"]
    return c["result"]["metrics"]


@pytest.fixture(scope="module")
def pushed_three(shared_agent, data, backend):
    """churn:1..3: the same data, models of different strength; all checked. Pushed once
    for the module: the tests that use them only read."""
    X, y = data
    features = X.drop(columns="gender")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_RUNTIME_DIR", str(shared_agent.runtime_dir))
        mp.setattr(config, "_instance", config.Handoff(auto_start=False))
        for c in (1.0, 0.001, 0.05):
            api.push(LogisticRegression(C=c, max_iter=500).fit(features, y), "churn",
                     X=features, y=y, message=f"C={c}")  # fmt: skip
        return [wait_checked(shared_agent, "churn", n) for n in (1, 2, 3)]


@pytest.fixture
def three(pushed_three, shared_agent, settings, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(shared_agent.runtime_dir))
    return pushed_three


def test_two_versions_hold_the_right_deltas(three):
    v1, v2, _ = three
    comparison = compare("churn:1", "churn:2")
    widget = comparison.widget(follow=False)
    assert widget.selected == ["churn:1", "churn:2"] and widget.baseline == "churn:1"
    m1, m2 = perf(v1), perf(v2)
    for metric in ("roc_auc", "accuracy", "f1", "log_loss"):
        assert widget.deltas[metric]["churn:2"] == pytest.approx(m2[metric] - m1[metric])
    # the colour follows the metric's direction: log_loss lower is better
    row = {r["metric"]: r for r in comparison.metrics()}
    assert row["log_loss"]["better"]["churn:2"] == (m2["log_loss"] < m1["log_loss"])
    assert row["roc_auc"]["better"]["churn:2"] == (m2["roc_auc"] > m1["roc_auc"])
    colour = BETTER if row["accuracy"]["better"]["churn:2"] else WORSE
    assert colour in widget.metrics_html.value
    assert row["roc_auc"]["ci"]["churn:2"] == m2["roc_auc_ci"]
    # the champion is the best version that passed, and it is marked
    passed = [v for v in three if v["status"] in ("passed", "warned")]
    best = max(passed, key=lambda v: (perf(v)["roc_auc"], v["number"]))
    assert widget.champions == [f"churn:{best['number']}"]
    if best["number"] in (1, 2):
        assert "★ champion" in widget.metrics_html.value
    # data, schema, gate and charts come from the stored results
    assert (
        "changed" not in widget.data_html.value and "same input columns" in widget.data_html.value
    )
    assert "verdict" in widget.gate_html.value
    assert widget.charts_html.value.count("data:image/png;base64,") >= 3
    # the text form (a terminal, a notebook as text) carries the metrics and their changes
    text = repr(comparison)
    assert text.startswith("Comparison(churn:1, churn:2"), text
    auc = next(line for line in text.splitlines() if line.split()[0] == "roc_auc")
    d = comparison.deltas["roc_auc"]["churn:2"]
    assert f"({d:+.3g} {'better' if d > 0 else 'worse'})" in auc, text
    assert "Metrics" in comparison._repr_html_()


def test_three_versions_and_the_pickers(three):
    comparison = compare("churn:1", "churn:2", "churn:3")
    widget = comparison.widget(follow=False)
    assert widget.selected == ["churn:1", "churn:2", "churn:3"]
    assert set(widget.deltas["roc_auc"]) == {"churn:2", "churn:3"}
    assert [value for _, value in widget.picker.options] == ["churn:3", "churn:2", "churn:1"]
    # picking another baseline recomputes the deltas against it
    widget.baseline_picker.value = "churn:3"
    m = {v["number"]: perf(v) for v in three}
    assert widget.baseline == "churn:3"
    assert widget.deltas["f1"]["churn:1"] == pytest.approx(m[1]["f1"] - m[3]["f1"])
    # picking two versions in the picker narrows the comparison
    widget.picker.value = ("churn:2", "churn:1")
    assert widget.selected == ["churn:2", "churn:1"] and set(widget.deltas["f1"]) == {"churn:1"}
    widget.picker.value = ("churn:2",)
    assert "at least two" in widget.notice.value


def test_latest_against_champion(three):
    comparison = compare("churn")
    champion = compare("churn:1", "churn:2").champions
    assert comparison.labels[-1] == "churn:3"
    assert comparison.labels[0] in champion or comparison.labels[0] != "churn:3"


def test_different_tasks_say_so(connected, data, model):
    X, y = data
    api.push(model, "churn", X=X, y=y)
    api.push(LinearRegression().fit(X, y.astype(float)), "price", X=X, y=y.astype(float))
    wait_checked(connected, "churn", 1)
    wait_checked(connected, "price", 1)
    widget = compare("churn:1", "price:1").widget(follow=False)
    assert "different tasks" in widget.task_message and "classification" in widget.task_message
    assert widget.deltas == {}
    assert "not comparable" in widget.metrics_html.value
    assert "verdict" in widget.gate_html.value


def test_a_version_still_checking_updates_when_it_finishes(connected, data, model):
    # Given a checked version and a new one whose checks are still running
    X, y = data
    api.push(model, "churn", X=X, y=y)
    wait_checked(connected, "churn", 1)
    api.push(LogisticRegression(C=0.01, max_iter=500).fit(X, y), "churn", X=X, y=y)
    checking = connected.request("GET", "/api/v1/models/churn/versions/2")[1]
    assert checking["status"] == "checking"
    first = connected.request("GET", "/api/v1/models/churn/versions/1")[1]
    # When the comparison is shown
    widget = Comparison([first, checking]).widget()
    assert widget.checking == ["churn:2"] or widget.checking == []
    # Then it updates itself when the checks finish, with the deltas
    until(lambda: not widget.checking and "roc_auc" in widget.deltas, what="the checks")
    done = connected.request("GET", "/api/v1/models/churn/versions/2")[1]
    assert widget.deltas["roc_auc"]["churn:2"] == pytest.approx(
        perf(done)["roc_auc"] - perf(first)["roc_auc"]
    )
    assert "Still checking" not in widget.notice.value
    widget.stop()


def test_a_metric_that_is_not_a_number_is_shown_as_text():
    from jupyter_handoff.widgets.compare_html import fmt

    # Given a plugin check that reported a string where a CI bound goes
    # Then the table shows it as text, not markup
    assert fmt("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert fmt(0.5) == "0.500" and fmt(3) == "3" and fmt(None) == ""


def test_a_constant_target_without_an_interval_still_compares(connected, data):
    # Given a regressor of a constant target: its bootstrap CI has no finite bound
    X, _ = data
    flat = X.assign(target=3.0)["target"]
    for shift in (0.0, 1.0):
        api.push(LinearRegression().fit(X, flat + shift), "flat", X=X, y=flat)
    versions = [wait_checked(connected, "flat", n) for n in (1, 2)]
    assert any(v.get("r2_ci") == [None, None] for v in map(perf, versions)), versions
    # Then the comparison renders: the value without an interval, and the chart
    widget = compare("flat:1", "flat:2").widget(follow=False)
    assert "r2" in widget.metrics_html.value and "[, ]" not in widget.metrics_html.value
    assert "data:image/png;base64," in widget.charts_html.value
