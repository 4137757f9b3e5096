"""The Handoff side panel in real JupyterLab and Chromium: versions and verdicts, live
updates and notifications, the sandboxed report, the comparison view, the version warning."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="jupyter-handoff-panel"]'
PANEL = "#jupyter-handoff-panel"
DOCS = Path(__file__).parents[2] / "docs"

PUSH = """
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
import jupyter_handoff

X, y = make_classification(n_samples=400, n_features=4, random_state=0)
X = pd.DataFrame(X, columns=["tenure", "spend", "visits", "age"])
X["gender"] = np.random.default_rng(0).integers(0, 2, len(X))
y = pd.Series(y, name="churned")
for C in {Cs}:
    jupyter_handoff.push(LogisticRegression(C=C, max_iter=500).fit(X, y), name="churn",
                         X=X, y=y, sensitive=["gender"], message=f"C={{C}}")
"""


def version_row(page, number: int):
    return page.locator(f'{PANEL} .jp-Handoff-version[data-model="churn"][data-version="{number}"]')


def wait_checked(lab, number: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = lab.agent_get(f"/api/v1/models/churn/versions/{number}")
        if v["status"] not in ("pushed", "checking") and v["reports"]:
            return v
        time.sleep(0.5)
    raise AssertionError(f"churn:{number} got no verdict in {timeout} s")


@pytest.fixture(scope="module")
def two_versions(jupyterlab):
    """churn:1 and churn:2, pushed from a real kernel, checked by the agent."""
    jupyterlab.run_in_kernel(PUSH.format(Cs="(1.0, 0.01)"))
    return [wait_checked(jupyterlab, n) for n in (1, 2)]


def open_panel(page):
    page.locator(PANEL_TAB).click()
    expect(page.locator(PANEL)).to_be_visible()
    return page.locator(PANEL)


def test_panel_lists_versions_with_verdicts_and_updates_live(
    two_versions, jupyterlab, lab_page, screenshot
):
    page = lab_page()
    panel = open_panel(page)
    # Given two checked versions: each is listed with its verdict, who pushed it and when
    for v in two_versions:
        row = version_row(page, v["number"])
        expect(row).to_have_attribute("data-verdict", v["verdict"]["verdict"], timeout=30_000)
        expect(row.locator(".jp-Handoff-badge")).to_have_text(v["verdict"]["verdict"])
        expect(row.locator(".jp-Handoff-meta")).to_contain_text(v["pushed_by"])
    expect(panel.locator(".jp-Handoff-live")).to_have_text("● live", timeout=15_000)
    # (the buttons on screen, tagged in page memory to tell them from redrawn ones)
    shown = [panel.locator(".jp-Handoff-inventoryOpen"), version_row(page, 1).locator("button")]
    for button in shown:
        button.first.evaluate("b => { b.handoffShown = true; }")
    # When a third version is pushed while the panel is open
    jupyterlab.run_in_kernel(PUSH.format(Cs="(0.1,)"))
    # Then it appears without a refresh, and a notification says when its checks finish
    row = version_row(page, 3)
    expect(row).to_be_visible(timeout=30_000)
    # while the buttons already shown stay the same elements: a click landing mid-update counts
    for button in shown:
        assert button.first.evaluate("b => b.handoffShown === true")
    # (the toast first: it closes after 8 s, and the row may be drawn a moment after it)
    toast = page.locator(".Toastify__toast", has_text="checks finished for churn:3")
    expect(toast).to_be_visible(timeout=180_000)
    expect(row).to_have_attribute("data-verdict", re.compile("^(pass|warn|fail)$"), timeout=30_000)
    shot = screenshot(page, "panel")
    if os.environ.get("HANDOFF_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / "panel.png")


def test_report_opens_in_a_sandboxed_tab(two_versions, lab_page, screenshot):
    page = lab_page()
    open_panel(page)
    version_row(page, 1).locator(".jp-Handoff-open").click()
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Report churn:1")
    expect(tab).to_be_visible(timeout=15_000)
    frame = page.locator(".jp-Handoff-report iframe")
    expect(frame).to_have_attribute("sandbox", "")  # no scripts, no same origin
    expect(page.frame_locator(".jp-Handoff-report iframe").locator("body")).to_contain_text(
        "churn", timeout=15_000
    )
    screenshot(page, "report")


def test_comparison_view_opens(two_versions, lab_page, screenshot):
    page = lab_page()
    panel = open_panel(page)
    for n in (1, 2):
        version_row(page, n).locator(".jp-Handoff-select").check()
    panel.locator(".jp-Handoff-compare").click()
    view = page.locator(".jp-Handoff-comparison table")
    expect(view).to_be_visible(timeout=15_000)
    expect(view.locator("thead")).to_contain_text("churn:1")
    expect(view.locator("thead")).to_contain_text("churn:2")
    expect(view.locator('tr[data-name="verdict"]')).to_be_visible()
    expect(view.locator("tr.jp-Handoff-metricRow").first).to_be_visible()
    expect(view.locator('tr[data-name="accuracy"]')).to_be_visible()
    # how a check ran (rows sampled, shuffles) is not a metric of the version
    names = view.locator("tr.jp-Handoff-metricRow").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )
    assert not [n for n in names if n.split(".")[-1] in ("rows", "n_repeats")], names
    screenshot(page, "compare")


def test_version_mismatch_shows_the_warning_and_the_fix(jupyterlab, page, screenshot):
    # Given a Python package that is not the release this page's labextension came from
    def stale(route):
        body = json.loads(route.fetch().text())
        body.update(python_version="9.9.9", labextension_version="9.9.9", match=False)
        route.fulfill(json=body)

    page.route(re.compile(r"/handoff/api/info(\?.*)?$"), stale)  # Lab adds a cache-buster
    page.goto(jupyterlab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    panel = open_panel(page)
    warning = panel.locator(".jp-Handoff-mismatch")
    expect(warning).to_contain_text("9.9.9", timeout=15_000)
    expect(warning).to_contain_text("pip install")
    screenshot(page, "mismatch")


def test_no_warning_when_versions_match(jupyterlab, lab_page):
    page = lab_page()
    panel = open_panel(page)
    expect(panel.locator(".jp-Handoff-header")).to_be_visible()
    expect(panel.locator(".jp-Handoff-models")).to_be_visible(timeout=15_000)
    expect(panel.locator(".jp-Handoff-mismatch")).to_have_count(0)


def test_a_pruned_version_says_so_in_the_panel(lab_factory, lab_page):
    """``jupyter handoff prune`` from a shell: the panel marks the old versions' rows, and the
    newest keeps its bundle. Of 22 versions the newest 20 are listed; "Show older" the rest."""
    from test_signoff_browser import Agent

    agents = []
    lab = lab_factory(
        prepare=lambda lab: agents.append(
            Agent(lab, "local", ["--HandoffAgent.forward_to=[]", "--HandoffAgent.checks=[]"])
        )
    )
    try:
        lab.run_in_kernel(PUSH.format(Cs=f"{tuple(1.0 / k for k in range(1, 23))}"))
        out = subprocess.run(
            [sys.executable, "-m", "handoff_agent", "prune", "churn", "--keep", "1"],
            env=lab.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.stdout.startswith("churn: pruned versions 1, 2, "), out.stdout + out.stderr
        page = lab_page(lab)
        panel = open_panel(page)
        expect(version_row(page, 22)).to_be_visible(timeout=30_000)
        expect(version_row(page, 22).locator(".jp-Handoff-pruned")).to_have_count(0)
        expect(version_row(page, 3).locator(".jp-Handoff-pruned")).to_contain_text(
            "bundle pruned on 20"
        )
        # The two oldest are behind "Show older", and listed once it is clicked
        expect(version_row(page, 2)).to_have_count(0)
        older = panel.locator('.jp-Handoff-model[data-model="churn"] .jp-Handoff-older')
        expect(older).to_have_text("Show older (2 more)")
        older.click()
        for n in (1, 2):
            expect(version_row(page, n).locator(".jp-Handoff-pruned")).to_contain_text(
                "bundle pruned on 20", timeout=30_000
            )
        expect(older).to_have_count(0)
    finally:
        for a in agents:
            a.stop()


def test_a_refused_hand_off_says_why_beside_the_version(lab_factory, lab_page):
    """A destination refused the version (a webhook off the operator's allowlist): the row
    says so and why, in the error colour, with how to send it again."""
    from test_signoff_browser import Agent

    hook = "http://127.0.0.1:9/hook"
    args = [
        "--HandoffAgent.checks=[]",
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={hook}",
        "--WebhookDestination.secret=" + "s" * 32,
    ]
    agents = []
    lab = lab_factory(prepare=lambda lab: agents.append(Agent(lab, "local", args)))
    try:
        lab.run_in_kernel(PUSH.format(Cs="(1.0,)"))
        page = lab_page(lab)
        open_panel(page)
        said = version_row(page, 1).locator(".jp-Handoff-undelivered-dead")
        expect(said).to_contain_text(
            f"webhook: dead (webhook URL '{hook}' is not on WebhookDestination.allowed_urls)",
            timeout=30_000,
        )
        expect(said).to_have_attribute("title", re.compile(r"%mlops forward churn:1 --to webhook"))
    finally:
        for a in agents:
            a.stop()


MIXED = """
from sklearn.linear_model import LinearRegression
jupyter_handoff.push(LogisticRegression(max_iter=500).fit(X, y), name="mixed", X=X, y=y)
jupyter_handoff.push(LinearRegression().fit(X, y.astype(float)), name="mixed", X=X,
                     y=y.astype(float))
"""


def test_a_comparison_across_tasks_says_the_metrics_are_not_comparable(
    two_versions, jupyterlab, lab_page
):
    # Given a classifier and a regressor under one name (the kernel has PUSH's X and y)
    jupyterlab.run_in_kernel(PUSH.format(Cs="()") + MIXED)
    for n in (1, 2):
        until_checked = time.monotonic() + 180
        while jupyterlab.agent_get(f"/api/v1/models/mixed/versions/{n}")["status"] in (
            "pushed",
            "checking",
        ):
            assert time.monotonic() < until_checked, f"mixed:{n} got no verdict"
            time.sleep(0.5)
    page = lab_page()
    panel = open_panel(page)
    for n in (1, 2):
        row = panel.locator(f'.jp-Handoff-version[data-model="mixed"][data-version="{n}"]')
        row.locator(".jp-Handoff-select").check()
    panel.locator(".jp-Handoff-compare").click()
    # Then the view says so, and a metric only one side has is not "changed"
    view = page.locator(".jp-Handoff-comparison")
    expect(view.locator(".jp-Handoff-tasks")).to_contain_text(
        "Different tasks (classification and regression)", timeout=15_000
    )
    expect(view.locator('tr[data-name="accuracy"] td').nth(3)).to_have_text("")
