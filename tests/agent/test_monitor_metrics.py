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


def test_error_rate_counts_the_models_failures_not_a_clients_bad_input():
    """As the guardrails count them: a 5xx, or the model raising on the input; a client's
    malformed or mistyped request (a 4xx the server refused before the model) is not one."""
    from handoff_agent.vocabulary import MODEL_REFUSED

    requests = pd.DataFrame(
        {
            "status": [200, 200, 422, 400, 422, 503, None],
            "error": [None, None, "wrong_dtype", "malformed", MODEL_REFUSED + "boom", "x", None],
            "latency_ms": [5.0] * 7,
        }
    )
    ops = metrics.operations(requests)
    assert ops["requests"] == 7 and ops["error_rate"] == pytest.approx(2 / 7)


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


def _per_value_numeric_drift(ref, values, policy):
    """The straightforward computation the sorted-window path must reproduce exactly: every
    value binary-searched in the reference's edges and KS grid, then counted."""
    from handoff_agent.drift import EPSILON, psi

    v = values[np.isfinite(values)]
    if v.size == 0 or ref.ks_edges is None or ref.ks_edges.size == 0:
        return {"kind": "numeric", "psi": None, "ks": None, "p_value": None, "drifted": False}
    counts = np.bincount(np.searchsorted(ref.edges, v, side="right"), minlength=len(ref.edges) + 1)
    value = psi(ref.counts, counts, EPSILON)
    n = ref.ks_edges.size
    by_left = np.bincount(np.searchsorted(ref.ks_edges, v, side="left"), minlength=n + 1)
    by_right = np.bincount(np.searchsorted(ref.ks_edges, v, side="right"), minlength=n + 1)
    cdf = np.cumsum(by_left[:n]) / v.size  # values <= each grid point
    left = np.cumsum(by_right[:n]) / v.size  # values < each grid point
    d = float(max(np.max(np.abs(cdf - ref.ks_cdf)), np.max(np.abs(left - ref.ks_below))))
    p = metrics.ks_pvalue(d, ref.ks_rows, v.size)
    drifted = value > policy.max_feature_psi or (p < policy.test_alpha and d >= policy.min_ks)
    out = {"kind": "numeric", "psi": value, "ks": d, "p_value": p, "mean": float(np.mean(v))}
    return out | {"drifted": bool(drifted)}


def _cases(rng):
    """(reference, window) pairs: continuous, ties, NaN and inf, constant sides, values on
    the edges, a window outside the reference's range, float32, integers."""
    normal = rng.normal(0, 1, 20_000)
    ties = rng.integers(0, 7, 20_000).astype(float)
    with_gaps = normal.copy()
    with_gaps[::13] = np.nan
    with_gaps[::29] = np.inf
    yield normal, rng.normal(0.2, 1.1, 30_000)
    yield ties, rng.integers(0, 9, 30_000).astype(float)
    yield ties, np.repeat(np.unique(ties), 100)  # every value on an edge
    yield with_gaps, np.where(rng.uniform(size=5000) < 0.1, np.nan, rng.normal(0, 1, 5000))
    yield normal, np.full(4000, 0.5)  # a constant window
    yield np.full(5000, 3.0), rng.normal(3, 1, 4000)  # a constant reference
    yield normal, rng.normal(10, 1, 3000)  # above the whole reference
    yield normal, -np.abs(rng.normal(10, 1, 3000))  # below it
    yield normal, np.array([np.nan, np.inf, -np.inf])  # nothing finite
    yield np.array([np.nan, np.nan]), rng.normal(0, 1, 100)  # a reference with nothing finite
    yield normal.astype(np.float32), rng.normal(0, 1, 7000).astype(np.float32)
    yield rng.integers(-3, 3, 9000), rng.integers(-4, 4, 9000)


def test_numeric_drift_from_one_sort_matches_the_per_value_computation_exactly():
    rng = np.random.default_rng(7)
    for reference, window in _cases(rng):
        ref = metrics.feature_of(pd.Series(reference), P.bins)
        values = pd.Series(window).to_numpy(dtype=float)
        assert metrics.numeric_drift(ref, values, P) == _per_value_numeric_drift(ref, values, P)


def test_numeric_drift_agrees_with_numpy_histograms_and_scipy_ks():
    from scipy import stats

    from handoff_agent.drift import EPSILON, psi

    rng = np.random.default_rng(8)
    reference = rng.normal(0, 1, 50_000)
    ref = metrics.feature_of(pd.Series(reference), P.bins)
    for window in (rng.normal(0, 1, 20_000), rng.normal(0.3, 1.2, 20_000), rng.gamma(2, 1, 9000)):
        out = metrics.numeric_drift(ref, window, P)
        # PSI bins: open outer bins, [edge, next edge) inside, as np.histogram's inner bins
        hist, _ = np.histogram(window, np.concatenate(([-np.inf], ref.edges, [np.inf])))
        assert out["psi"] == psi(ref.counts, hist, EPSILON)
        # KS read at the reference's grid: within one grid step (and one row) of the exact one
        exact = stats.ks_2samp(reference, window).statistic
        assert abs(out["ks"] - exact) <= 1 / metrics.KS_GRID + 1 / reference.size
    # Tied values (fewer distinct ones than the grid): exactly scipy's, a tied minimum too
    ties = np.where(rng.uniform(size=20_000) < 0.5, 0.0, rng.integers(1, 50, 20_000))
    ref = metrics.feature_of(pd.Series(ties), P.bins)
    for window in (np.full(500, -1.0), rng.integers(-5, 60, 5000).astype(float), ties[:3000]):
        exact = stats.ks_2samp(ties, window).statistic
        assert metrics.numeric_drift(ref, window, P)["ks"] == pytest.approx(exact, abs=1e-12)


def test_input_drift_of_a_frame_matches_the_per_column_computation():
    rng = np.random.default_rng(9)
    n = 6000
    reference = pd.DataFrame(
        {
            "x": rng.normal(0, 1, n),
            "k": rng.integers(0, 5, n),
            "s": rng.normal(0, 1, n),
            "c": rng.choice(list("abc"), n),
            "gone": rng.normal(0, 1, n),
        }
    )
    ref = metrics.reference_of(reference, list(reference.columns), P)
    window = pd.DataFrame(
        {
            "x": np.where(rng.uniform(size=n) < 0.05, np.nan, rng.normal(0.5, 1, n)),
            "k": pd.array(rng.integers(0, 6, n), dtype="Int64"),  # nullable integers
            "s": [str(v) if i % 10 else "oops" for i, v in enumerate(rng.normal(0, 1, n))],
            "c": rng.choice(list("abcz"), n),  # an unseen category
        }
    )
    window.loc[::17, "k"] = pd.NA
    out = metrics.input_drift(ref, window, P)
    for name in ("x", "k", "s"):
        values = pd.to_numeric(window[name], errors="coerce").to_numpy(float, na_value=np.nan)
        got = dict(out["features"][name])
        assert got.pop("missing_share") == np.mean(~np.isfinite(values)), name
        assert got.pop("reference_missing_share") == 0.0
        expected = _per_value_numeric_drift(ref.features[name], values, P)
        assert got.pop("drifted") >= expected.pop("drifted")  # missing values may add drift
        assert got == expected, name
    # a tenth of "s" unparseable: drift, though the values it has match the reference's
    assert not _per_value_numeric_drift(ref.features["s"], values, P)["drifted"]
    assert out["features"]["s"]["drifted"] and out["features"]["s"]["missing_share"] == 0.1
    assert out["features"]["c"]["unseen"] == ["z"] and out["features"]["c"]["drifted"]
    assert out["features"]["gone"]["missing"] and "gone" in out["drifted"]
    assert out["drifted"] == [n for n, f in out["features"].items() if f["drifted"]]


def test_calibration_reads_probabilities_only_so_an_old_logit_reference_still_monitors():
    # a reference imported before import refused logits: its out-of-range scores are left out
    # (they raised in np.bincount, and every run of the model failed)
    scores = pd.Series([-3.0, 0.1, 0.2, 0.8, 0.9, 2.5])
    labels = pd.Series([0, 0, 0, 1, 1, 1])
    got = metrics.calibration_error(scores, labels, labels)
    assert got == metrics.calibration_error(scores[1:5], labels[1:5], labels[1:5])
    assert got == pytest.approx(0.15)
