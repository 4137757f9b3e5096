"""The monitor's numbers on known cases, and the ``[monitor]`` policy's loading."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from handoff_agent.monitor import metrics, windows
from handoff_agent.monitor_policy import MonitorPolicy
from handoff_agent.policy import Policy

P = MonitorPolicy()


def test_numeric_drift_psi_ks_and_no_drift_on_the_same_distribution():
    rng = np.random.default_rng(0)
    ref = metrics.feature_of(pd.Series(rng.normal(0, 1, 20_000)), P.bins)
    same = metrics.numeric_drift(ref, rng.normal(0, 1, 5000), P)
    moved = metrics.numeric_drift(ref, rng.normal(1, 1, 5000), P)
    assert same["psi"] < 0.02 and not same["drifted"] and same["p_value"] > 0.001
    assert moved["psi"] > 0.5 and moved["drifted"] and moved["ks"] > 0.3
    assert moved["p_value"] < 1e-10


def test_ks_p_value_matches_the_kolmogorov_distribution():
    # P(sqrt(n) D > 1.36) is 0.05 for large samples
    n = 10_000
    assert metrics.ks_pvalue(1.36 / math.sqrt(n / 2), n, n) == pytest.approx(0.05, abs=0.005)


def test_chi2_survival_function_matches_known_quantiles():
    assert metrics.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=0.01)
    assert metrics.chi2_sf(18.307, 10) == pytest.approx(0.05, abs=0.005)


def test_categorical_drift_counts_unseen_categories():
    ref = metrics.feature_of(pd.Series(list("aab") * 1000), P.bins)
    out = metrics.categorical_drift(ref, pd.Series(list("aabz") * 250), P)
    assert out["unseen"] == ["z"] and out["unseen_share"] == 0.25 and out["drifted"]
    assert math.isfinite(out["psi"])


def test_bootstrap_ci_covers_the_truth_and_cbpe_estimates_accuracy():
    rng = np.random.default_rng(1)
    score = rng.uniform(0, 1, 20_000)
    frame = pd.DataFrame(
        {
            "prediction": (score > 0.5).astype(int),
            "score": score,
            "label": (rng.uniform(0, 1, 20_000) < score).astype(int),
        }
    )
    ref = metrics.reference_of(frame, [], P)
    assert ref.metric == "accuracy" and ref.calibration_error < 0.02
    perf = metrics.performance(frame, ref, P)
    lo, hi = perf["ci"]
    assert lo < 0.75 < hi  # E[max(s, 1-s)] for s uniform
    est = metrics.cbpe(frame, ref, P)
    assert est["calibrated"] and est["estimate"] == pytest.approx(0.75, abs=0.01)


def test_monthly_windows_follow_the_calendar():
    t = windows.floor("monthly", 1767225600 + 40 * 86400)  # 2026-02-10
    assert windows.iso(t).startswith("2026-02-01")
    assert windows.iso(windows.following("monthly", t)).startswith("2026-03-01")
    assert len(windows.closed("daily", 1767225600.5, 1767225600 + 3 * 86400)) == 3


def test_the_policy_table_loads_with_its_actions_and_refuses_in_one_line(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[monitor]\nhourly = true\n[monitor.actions]\ndrift = "rollback"\n')
    policy = Policy.load(path)
    assert policy.monitor.windows == ("hourly", "daily", "monthly")
    assert policy.monitor.action("drift") == "rollback"
    assert policy.monitor.describe()["actions"]["drift"]["value"] == "rollback"
    path.write_text('[monitor.actions]\ndrift = "panic"\n')
    with pytest.raises(ValueError) as e:
        Policy.load(path)
    assert "[monitor.actions] drift" in str(e.value) and "notify" in str(e.value)
    assert "\n" not in str(e.value)
    path.write_text("[monitor]\nmin_sample = 3\n")
    with pytest.raises(ValueError, match="unknown key 'min_sample'"):
        Policy.load(path)


def test_log_records_of_the_server_and_of_a_backfill_flatten_to_one_row_per_prediction():
    import json

    from handoff_agent.monitor import frames

    log = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "time": [1.0, 2.0, 3.0, 4.0],
            "status": [200, 200, 500, 200],
            "latency_ms": [1.0, 2.0, 3.0, 4.0],
            "version": [1, 1, 1, 1],
            "inputs": [
                json.dumps({"x": [1.0], "c": ["u"]}),  # the server: lists, one per row
                json.dumps({"x": [2.0, 3.0], "c": ["v", "w"]}),
                json.dumps({"x": [9.0], "c": ["z"]}),
                json.dumps({"x": [4.0], "c": ["u"]}),
            ],
            "outputs": [
                json.dumps({"predict": [1], "predict_proba": [[0.2, 0.8]]}),
                json.dumps({"predict": [0, 1], "predict_proba": [[0.9, 0.1], [0.3, 0.7]]}),
                None,  # a failed request has no outputs
                json.dumps({"predict": [0], "predict_proba": [[0.6, 0.4]]}),
            ],
        }
    )
    requests, rows = frames.rows(log)
    assert len(requests) == 4  # the failed one counts as traffic
    assert rows["request_id"].tolist() == ["a", "b", "b", "d"]
    assert rows["x"].tolist() == [1.0, 2.0, 3.0, 4.0] and rows["row"].tolist() == [0, 0, 1, 0]
    assert rows["prediction"].tolist() == [1, 0, 1, 0]
    assert rows["score"].tolist() == [0.8, 0.1, 0.7, 0.4]
    # one row per request (the usual window): Arrow unwraps the lists; a multiclass has no score
    single = log.drop(index=1).reset_index(drop=True)
    _, rows = frames.rows(single)
    assert rows["x"].tolist() == [1.0, 4.0] and rows["c"].tolist() == ["u", "u"]
    assert rows["prediction"].tolist() == [1, 0] and rows["score"].tolist() == [0.8, 0.4]
    single["outputs"] = [json.dumps({"predict": [2], "predict_proba": [[0.1, 0.2, 0.7]]})] * 3
    _, rows = frames.rows(single)
    assert rows["prediction"].tolist() == [2, 2] and rows["score"].isna().all()
    # a backfill writes scalars; mixed types fall back to pandas' reader
    log["inputs"] = [json.dumps({"x": v, "c": "u"}) for v in (1.5, "oops", 2, 3)]
    _, rows = frames.rows(log)
    assert rows["x"].tolist() == [1.5, "oops", 3]
