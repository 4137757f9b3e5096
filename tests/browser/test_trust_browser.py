"""An admin in JupyterLab trusts the types a held version waits for, from the side panel, and
central goes on to validate it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect
from test_signoff_browser import PANEL, PANEL_TAB, Agent, central_stage

SVC_TYPE = "sklearn.svm._classes.SVC"
PUSH = """
import numpy as np
import pandas as pd
from sklearn.svm import SVC
import jupyter_handoff

rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["tenure", "spend", "visits"])
y = pd.Series((X["tenure"] > 0).astype(int), name="churned")
jupyter_handoff.push(SVC().fit(X, y), name="svm", X=X, y=y)
"""


@pytest.fixture(scope="module")
def admin_site(lab_factory):
    agents: list[Agent] = []
    site: dict = {}

    def prepare(lab):
        central = Agent(lab, "central", ["--role", "central"])
        agents.append(central)
        agents.append(Agent(lab, "local", ["--forward-to", "central"]))
        token = subprocess.run(
            [sys.executable, "-m", "handoff_agent", "token", "create", "--user", "dana",
             "--role", "admin", "--home", central.home],
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


def wait_stage(central, name, want, timeout=240):
    deadline = time.monotonic() + timeout
    while central_stage(central, name, 1) != want:
        assert time.monotonic() < deadline, f"stage: {central_stage(central, name, 1)}"
        time.sleep(0.5)


def test_admin_trusts_types_from_the_panel(admin_site, page, screenshot):
    lab, central = admin_site["lab"], admin_site["central"]
    # Given a version whose model names a type outside the default list, held at central
    lab.run_in_kernel(PUSH)
    wait_stage(central, "svm", "needs_trust")
    # When dana, an admin, opens the panel on central
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    expect(panel.locator(".jp-Handoff-whoami")).to_contain_text("admin", timeout=15_000)
    row = panel.locator('.jp-Handoff-version[data-model="svm"][data-version="1"]')
    expect(row).to_have_attribute("data-stage", "needs_trust", timeout=30_000)
    expect(row.locator(".jp-Handoff-stage")).to_have_attribute(
        "title", f"Central is waiting for an admin to trust: {SVC_TYPE}"
    )
    screenshot(page, "needs-trust")
    # Its Monitor view says why no window will close, rather than "not yet"
    panel.locator('.jp-Handoff-model[data-model="svm"] .jp-Handoff-monitorOpen').click()
    monitor = page.locator('.jp-Handoff-monitor[data-model="svm"]')
    expect(monitor.locator(".jp-Handoff-notServing")).to_have_text(
        f"No version of svm takes traffic: svm:1 waits for an admin to trust the types it "
        f"names ({SVC_TYPE}).",
        timeout=15_000,
    )
    # and trusts the type it waits for
    row.locator(".jp-Handoff-trust").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text(SVC_TYPE)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    # Then the version leaves needs_trust, and central validates it
    expect(row).not_to_have_attribute("data-stage", "needs_trust", timeout=15_000)
    expect(row.locator(".jp-Handoff-trust")).to_have_count(0)
    wait_stage(central, "svm", "validated")
    expect(row).to_have_attribute("data-stage", "validated", timeout=30_000)
