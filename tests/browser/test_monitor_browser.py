"""An operator in JupyterLab after a drift shift: a prediction log imported at central with
``jupyter handoff monitor import`` (four calm labelled days, then two shifted days), the
monitor run; the panel's churn row shows an alert badge, and the model's Monitor view shows
the firing drift alert and a mark where the drift share crossed its threshold. A model known
at central only from an imported log has its row too, marked imported, with no Deployments."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from playwright.sync_api import expect
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from test_deployments_browser import PANEL, PANEL_TAB, PUSH, call, ops_site, wait_for
from test_signoff_browser import central_stage

assert ops_site  # the deployments test's site: central, a local agent, ada's JupyterLab
DAY = 86400
COLUMNS = ["tenure", "spend", "visits", "age"]
PER_DAY = 300


def monitor_import(lab, central, path, *flags, name: str = "churn") -> None:
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "monitor", "import", name, str(path),
         *flags, "--home", central.home],
        env=lab.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def drift_shift(tmp_path) -> tuple:
    """The reference and six days of served predictions: four calm days whose labels
    arrived, then two days with every input shifted by three standard deviations."""
    X, y = make_classification(n_samples=2000 + 6 * PER_DAY, n_features=4, random_state=1)
    X = pd.DataFrame(X, columns=COLUMNS)
    model = LogisticRegression().fit(X[:2000], y[:2000])

    def scored(frame):
        return frame.assign(
            prediction=model.predict(frame[COLUMNS]),
            score=model.predict_proba(frame[COLUMNS])[:, 1],
        )

    ref = scored(X[:2000]).assign(label=y[:2000])
    midnight = time.time() // DAY * DAY
    rng = np.random.default_rng(2)
    days = []
    for d in range(6):
        part = X[2000 + d * PER_DAY : 2000 + (d + 1) * PER_DAY].reset_index(drop=True)
        if d >= 4:
            part = part + 3 * X[:2000].std()
        t = midnight - (6 - d) * DAY + np.sort(rng.uniform(0, DAY, PER_DAY))
        day = scored(part).assign(time=t, request_id=[f"d{d}-{i}" for i in range(PER_DAY)])
        if d < 4:
            day = day.assign(label=y[2000 + d * PER_DAY : 2000 + (d + 1) * PER_DAY], label_time=t)
        days.append(day)
    ref.to_parquet(tmp_path / "reference.parquet")
    pd.concat(days, ignore_index=True).to_parquet(tmp_path / "log.parquet")
    return tmp_path / "reference.parquet", tmp_path / "log.parquet"


def test_a_drift_shift_shows_a_badge_and_the_crossed_threshold_in_the_monitor_view(
    ops_site, page, screenshot, tmp_path
):
    lab, central, ops = ops_site["lab"], ops_site["central"], ops_site["ops"]
    # Given churn at central, and a prediction log with a drift shift imported there
    if central_stage(central, "churn", 1) is None:
        lab.run_in_kernel(PUSH.format(c=1.0))
    wait_for("churn:1 at central", lambda: central_stage(central, "churn", 1))
    reference, log = drift_shift(tmp_path)
    monitor_import(lab, central, reference, "--reference")
    monitor_import(lab, central, log)
    # and a small log of a model served elsewhere, which central knows only from it
    pd.read_parquet(log)[:50].to_parquet(tmp_path / "elsewhere.parquet")
    monitor_import(lab, central, tmp_path / "elsewhere.parquet", name="acme-scorer")
    # When the monitor runs
    status, body = call(central, "POST", "/api/v1/models/churn/monitor/run", ops, {})
    assert status == 200, body
    assert "drift" in {a["kind"] for a in body["alerts"] if a["state"] == "firing"}, body
    status, listed = call(central, "GET", "/api/v1/models", ops)
    churn = next(m for m in listed["models"] if m["name"] == "churn")

    # Then the panel's churn row carries a badge: the count and the worst kind
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    badge = panel.locator('.jp-Handoff-model[data-model="churn"] .jp-Handoff-alertBadge')
    expect(badge).to_have_attribute("data-alerts", str(churn["open_alerts"]), timeout=30_000)
    expect(badge).to_have_attribute("data-worst", churn["firing"][0]["kind"])
    expect(badge).to_have_attribute("title", re.compile(re.escape("input drift (daily)")))
    screenshot(panel, "panel-alert-badge")

    # When ada clicks it, the Monitor view opens
    badge.click()
    view = page.locator('.jp-Handoff-monitor[data-model="churn"]')
    alert = view.locator('.jp-Handoff-alertRow[data-kind="drift"][data-state="firing"]')
    expect(alert.first).to_be_visible(timeout=30_000)
    expect(alert.first).to_contain_text("crossed")
    # the drift share's row: the threshold from the API, and a mark on the shifted days
    drift = view.locator('.jp-Handoff-monitorRow[data-metric="drift"]')
    expect(drift.locator(".jp-Handoff-monitorThreshold")).to_have_text("alert above 0.3")
    crossed = drift.locator('.jp-Handoff-sparkCell[data-crossed="true"]')
    expect(crossed).to_have_count(2)
    expect(crossed.last.locator(".jp-Handoff-sparkMark")).to_be_visible()
    expect(drift.locator('.jp-Handoff-sparkCell[data-crossed="false"]')).to_have_count(4)
    # performance on the calm, labelled days, with its bootstrap CI
    performance = view.locator('.jp-Handoff-monitorRow[data-metric="performance"]')
    expect(performance.locator(".jp-Handoff-sparkCI").first).to_be_attached()
    expect(view.locator('.jp-Handoff-monitorRow[data-metric="psi:tenure"]')).to_be_visible()
    screenshot(page, "monitor-view")

    # The imported model has its row, marked imported, with no Deployments button (central
    # serves none of it); its Monitor button opens its monitoring, and the panel stays whole
    acme = panel.locator('.jp-Handoff-model[data-model="acme-scorer"]')
    expect(acme).to_have_attribute("data-imported", "true")
    expect(acme.locator(".jp-Handoff-imported")).to_have_text("imported")
    expect(acme.locator(".jp-Handoff-deploymentsOpen")).to_have_count(0)
    churn_row = panel.locator('.jp-Handoff-model[data-model="churn"]')
    expect(churn_row).to_have_attribute("data-imported", "false")
    expect(churn_row.locator(".jp-Handoff-deploymentsOpen")).to_be_visible()
    acme.locator(".jp-Handoff-monitorOpen").click()
    elsewhere = page.locator('.jp-Handoff-monitor[data-model="acme-scorer"]')
    expect(elsewhere.locator(".jp-Handoff-monitorWindow")).to_be_visible(timeout=30_000)
    expect(elsewhere).to_contain_text("Monitoring of acme-scorer")
    expect(elsewhere.locator(".jp-Handoff-error")).to_have_count(0)
    expect(panel.locator(".jp-Handoff-error")).to_have_count(0)
    expect(churn_row.locator(".jp-Handoff-alertBadge")).to_be_visible()
    screenshot(page, "monitor-imported")

    # And from this machine, the local agent relays central's alerts: the same badge
    panel.locator(".jp-Handoff-source").select_option("local")
    expect(page.locator(f'{PANEL}[data-source="local"]')).to_be_visible(timeout=30_000)
    expect(badge).to_have_attribute("data-alerts", str(churn["open_alerts"]), timeout=30_000)
