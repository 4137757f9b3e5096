"""A risk officer's JupyterLab, connected to a real central: the Inventory view lists the model
with its sensitive attribute and risk tag, filters, and downloads a dossier that verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import expect
from test_signoff_browser import Agent, central_stage

from handoff_agent.dossier_verify import verify

PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="jupyter-handoff-panel"]'
PANEL = "#jupyter-handoff-panel"
CHECKS = "--HandoffAgent.checks=['loads', 'fairness']"

PUSH = """
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
import jupyter_handoff

X, y = make_classification(n_samples=400, n_features=4, random_state=1)
X = pd.DataFrame(X, columns=["tenure", "spend", "visits", "age"])
y = pd.Series(y, name="churned")
gender = pd.Series(np.where(np.arange(400) % 2, "f", "m"), name="gender")
jupyter_handoff.push(LogisticRegression().fit(X, y), name="loans", X=X, y=y, sensitive=[gender])
"""


@pytest.fixture(scope="module")
def risk_site(lab_factory):
    agents: list[Agent] = []
    site: dict = {}

    def prepare(lab):
        central = Agent(lab, "central", ["--role", "central", CHECKS])
        agents.append(central)
        agents.append(Agent(lab, "local", ["--forward-to", "central", CHECKS]))
        token = subprocess.run(
            [sys.executable, "-m", "handoff_agent", "token", "create", "--user", "rita",
             "--role", "analyst", "--home", central.home],
            env=lab.env, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        lab.args += [
            f"--HandoffServer.central_url={central.url}",
            f"--HandoffServer.central_token={token}",
        ]
        site["central"] = central

    site["lab"] = lab_factory(prepare=prepare)
    yield site
    for a in reversed(agents):
        a.stop()


def test_inventory_view_filters_and_downloads_a_dossier(risk_site, page, screenshot, tmp_path):
    lab, central = risk_site["lab"], risk_site["central"]
    # Given a model pushed from a real kernel with a sensitive attribute, validated at central
    lab.run_in_kernel(PUSH)
    deadline = time.monotonic() + 240
    while central_stage(central, "loans", 1) != "validated":
        assert time.monotonic() < deadline, f"stage: {central_stage(central, 'loans', 1)}"
        time.sleep(0.5)
    # When rita opens the Inventory from the side panel
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    page.locator(PANEL).locator(".jp-Handoff-inventoryOpen").click()
    view = page.locator(".jp-Handoff-inventory")
    row = view.locator('.jp-Handoff-inventoryRow[data-model="loans"]')
    # Then it lists the model at central with its facts and risk tag
    expect(row).to_have_attribute("data-stage", "validated", timeout=30_000)
    expect(row.locator(".jp-Handoff-inventorySensitive")).to_have_text("gender")
    expect(row.locator('.jp-Handoff-riskTag[data-tag="uses_sensitive_attributes"]')).to_be_visible()
    expect(row).to_contain_text("not deployed")
    expect(view).to_contain_text("alerts: those firing at central's monitor")
    screenshot(page, "inventory")
    # Filtering by a sensitive attribute no model has leaves none; by gender, this one
    view.locator('input[name="sensitive"]').fill("religion")
    view.locator(".jp-Handoff-inventoryApply").click()
    expect(view.locator(".jp-Handoff-inventoryRow")).to_have_count(0, timeout=15_000)
    view.locator('input[name="sensitive"]').fill("gender")
    view.locator('select[name="tag"]').select_option("uses_sensitive_attributes")
    view.locator(".jp-Handoff-inventoryApply").click()
    expect(view.locator(".jp-Handoff-inventoryRow")).to_have_count(1, timeout=15_000)
    # And its Dossier button saves a signed dossier that verifies with central's key
    with page.expect_download(timeout=60_000) as download:
        view.locator('.jp-Handoff-inventoryRow[data-model="loans"] .jp-Handoff-dossier').click()
    saved = tmp_path / "loans.zip"
    download.value.save_as(saved)
    with urllib.request.urlopen(f"{central.url}/api/v1/keys", timeout=10) as r:
        key = json.loads(r.read())["keys"][0]["pem"]
    assert verify(saved, key)["subject"] == "loans:1"
    # The panel's version row offers the same button
    panel_row = page.locator(PANEL).locator(
        '.jp-Handoff-version[data-model="loans"][data-version="1"]'
    )
    expect(panel_row.locator(".jp-Handoff-dossier")).to_be_visible(timeout=15_000)
