"""Without an imported reference, central monitors a production version against the data it
was pushed with, judged by the version's task: a regressor whose targets are whole numbers (the
diabetes progress score) is judged on its error, not on accuracy, for which it has no
baseline and would never alert."""

from __future__ import annotations

import time

import numpy as np
import serving_support
from serving_support import MONITOR_DAILY, push_to_central, sign, start_pair
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from support import RunningAgent

assert RunningAgent  # this module starts agents: conftest runs it on every backend


def test_a_regressor_on_whole_number_targets_is_judged_on_its_error(tmp_path):
    policy = serving_support.POLICY.replace("[deploy]\n", "[deploy]\npromote_after_bake = false\n")
    policy = policy.replace("revalidate = false", "revalidate = true")  # central's default
    policy += MONITOR_DAILY + "min_labels = 50\nlabel_delay_hours = 0\n"
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    assert (y == y.round()).all()  # whole numbers, stored as floats
    model = LinearRegression().fit(X, y)
    local, central = start_pair(tmp_path, policy_text=policy, central_checks='["performance"]')
    try:
        number = push_to_central(local, central, model, "churn", X, y)
        sign(central, "churn", number, "production")
        pushed = central.request("GET", f"/api/v1/models/churn/versions/{number}")[1]

        # Given a day of the model's traffic with its labels, and no imported reference
        rng = np.random.default_rng(0)
        day = (time.time() // 86400 - 2) * 86400
        log = X.assign(
            time=day + np.sort(rng.uniform(0, 86400, len(X))),
            prediction=model.predict(X),
            label=y,
        )
        log.to_parquet(tmp_path / "log.parquet")
        out = central.cli("monitor", "import", "churn", str(tmp_path / "log.parquet"))
        assert out.returncode == 0, out.stdout + out.stderr

        # When the monitor runs
        status, body = central.request("POST", "/api/v1/models/churn/monitor/run", {})
        assert status == 200, body

        # Then the day is judged on its mean absolute error, against the pushed version's
        perf = [p for w in body["windows"] if (p := w.get("metrics", {}).get("performance"))]
        assert perf, body["windows"]
        assert perf[0]["metric"] == "mae", perf[0]
        mae = float(np.mean(np.abs(model.predict(X) - y)))
        assert abs(perf[0]["value"] - mae) < 1e-6 * mae
        assert perf[0]["baseline"] == pushed["metrics"]["mae"]
    finally:
        local.stop()
        central.stop()
