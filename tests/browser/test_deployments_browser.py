"""An operator (reviewer and admin at central) in JupyterLab: the Deployments view of a model
shows where each version serves with a traffic bar and its stats, and its buttons start a
canary, set its share, promote it and roll it back, each moving real traffic at central. The
view follows the model's deployment events, so a change made elsewhere shows at once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_signoff_browser import Agent, central_stage

from handoff_agent.pipeline import embedded_policy

PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="jupyter-handoff-panel"]'
PANEL = "#jupyter-handoff-panel"

PUSH = """
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
import jupyter_handoff

X, y = make_classification(n_samples=400, n_features=4, random_state=1)
X = pd.DataFrame(X, columns=["tenure", "spend", "visits", "age"])
y = pd.Series(y, name="churned")
jupyter_handoff.push(LogisticRegression(C={c}).fit(X, y), name="churn", X=X, y=y)
"""


def call(agent, method, path, token, body=None):
    req = urllib.request.Request(
        f"{agent.url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def token(lab, central, user, *roles):
    role_args = [a for r in roles for a in ("--role", r)]
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", "token", "create", "--user", user, *role_args,
         "--home", central.home],
        env=lab.env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip


def wait_for(what, fn, timeout=240):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def ops_site(lab_factory):
    agents: list[Agent] = []
    site: dict = {}

    def prepare(lab):
        # The bake gate has its own end-to-end test (test_guardrails_live): here promotion
        # follows the sign-offs at once, so the view's moves are what is tested.
        policy = embedded_policy(Path(lab.env["JUPYTER_DATA_DIR"]) / "handoff-central")
        policy.write_text(policy.read_text() + "\n[deploy]\npromote_after_bake = false\n")
        central = Agent(lab, "central", ["--role", "central", "--HandoffAgent.checks=[]"])
        agents.append(central)
        agents.append(Agent(lab, "local", ["--forward-to", "central", "--HandoffAgent.checks=[]"]))
        site["rev"] = token(lab, central, "rev", "reviewer")
        site["ops"] = token(lab, central, "ops", "admin")
        ada = token(lab, central, "ada", "reviewer", "admin")
        lab.args += [
            f"--HandoffServer.central_url={central.url}",
            f"--HandoffServer.central_token={ada}",
        ]
        site["central"] = central

    site["lab"] = lab_factory(prepare=prepare)
    yield site
    for a in reversed(agents):
        a.stop()


def slots(site) -> dict:
    status, view = call(site["central"], "GET", "/api/v1/models/churn/deployment", site["ops"])
    return {s["slot"]: s for s in view.get("slots", [])} if status == 200 else {}


def test_deployments_view_starts_a_canary_sets_its_share_promotes_and_rolls_back(
    ops_site, page, screenshot
):
    lab, central, rev, ops = ops_site["lab"], ops_site["central"], ops_site["rev"], ops_site["ops"]
    sign = "/api/v1/models/churn/versions/{}/signoffs"
    # Given churn:1 in production at central (signed off over HTTP) and churn:2 approved
    lab.run_in_kernel(PUSH.format(c=1.0))
    wait_for("churn:1 validated", lambda: central_stage(central, "churn", 1) == "validated")
    for tok in (rev, rev, rev, ops):
        status, body = call(central, "POST", sign.format(1), tok, {"decision": "approve"})
        assert status == 201, body
    assert central_stage(central, "churn", 1) == "production"
    wait_for("churn:1 serving", lambda: slots(ops_site).get("production", {}).get("workers"))
    lab.run_in_kernel(PUSH.format(c=0.01))
    wait_for("churn:2 validated", lambda: central_stage(central, "churn", 2) == "validated")
    assert call(central, "POST", sign.format(2), rev, {"decision": "approve"})[0] == 201
    assert central_stage(central, "churn", 2) == "approved"

    # When ada opens the model's Deployments view from the side panel
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    expect(panel.locator(".jp-Handoff-whoami")).to_contain_text("ada", timeout=15_000)
    panel.locator('.jp-Handoff-model[data-model="churn"] .jp-Handoff-deploymentsOpen').click()
    view = page.locator('.jp-Handoff-deployments[data-model="churn"]')
    # Then the traffic bar and a row per slot show where each version serves
    expect(view.locator(".jp-Handoff-traffic-production")).to_have_attribute(
        "title", "production v1: 100%", timeout=30_000
    )
    test_row = view.locator('.jp-Handoff-slot[data-slot="test"][data-version="2"]')
    expect(test_row).to_be_visible()
    for field in ("traffic", "requests", "error_rate", "p50_ms", "p99_ms", "backend"):
        cell = f'.jp-Handoff-slot[data-slot="production"] td[data-field="{field}"]'
        expect(view.locator(cell)).to_be_visible()
    # The view follows the model's deployment events (through the server extension)
    expect(view).to_have_attribute("data-live", "true", timeout=15_000)
    # Traffic sent to the model server now shows in the stats of the next read
    url = json.loads((lab.runtime_dir / "handoff-central.json").read_text())["serving_url"]
    req = urllib.request.Request(
        f"{url}/invocations?model=churn",
        data=json.dumps(
            {"dataframe_records": [{"tenure": 0.1, "spend": 1, "visits": 0, "age": 2}]}
        ).encode(),
        headers={"Authorization": f"token {ops}", "Content-Type": "application/json"},
    )
    for _ in range(5):
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    requests = view.locator('.jp-Handoff-slot[data-slot="production"] td[data-field="requests"]')

    # When ada starts the canary (her sign-off is the one the policy names for canary)
    test_row.locator('.jp-Handoff-deployMove[data-to="canary"]').click()
    page.locator(".jp-Dialog input").fill("canary for a day")
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()
    # Then churn:2 takes the canary share at central, and the bar shows both
    canary = view.locator(".jp-Handoff-traffic-canary")
    expect(canary).to_be_visible(timeout=30_000)
    assert central_stage(central, "churn", 2) == "canary"
    expect(requests).not_to_have_text("0")  # read again on the stage's events
    # When she sets the canary's share to 40 %
    row = view.locator('.jp-Handoff-slot[data-slot="canary"]')
    box = row.locator(".jp-Handoff-trafficInput")
    traffic = "/api/v1/models/churn/deployment/traffic"

    def redraw(percent):
        """An event at central draws the view again, as one may land while she types."""
        assert call(central, "POST", traffic, ops, {"percent": percent})[0] == 200
        expect(canary).to_have_attribute("title", f"canary v2: {percent}%", timeout=15_000)

    # She clicks into the box first: until it has the focus, any event's redraw replaces it,
    # and Playwright's select_text does not retry on a node replaced under it (CI saw one).
    # (the view draws again between her select-all and her keystrokes: they replace the
    # selection, as Playwright's fill does in two steps, and 40 stays through the next draw)
    box.click()
    box.select_text()
    redraw(10)
    page.keyboard.insert_text("40")
    expect(box).to_have_value("40")
    redraw(15)
    expect(box).to_have_value("40")
    row.locator(".jp-Handoff-trafficSet").click()
    expect(canary).to_have_attribute("title", "canary v2: 40%", timeout=15_000)
    expect(view.locator(".jp-Handoff-traffic-production")).to_have_attribute(
        "title", "production v1: 60%"
    )
    assert slots(ops_site)["canary"]["traffic"] == 40.0
    # When ops changes the share at central over HTTP, not through this view
    assert call(central, "POST", traffic, ops, {"percent": 25})[0] == 200
    # Then the view shows it at once: its event brings a read. Without the event the view
    # would read again only REREAD_MS (30 s) after its last read, just now for the 40 %.
    expect(canary).to_have_attribute("title", "canary v2: 25%", timeout=15_000)
    expect(view.locator(".jp-Handoff-traffic-production")).to_have_attribute(
        "title", "production v1: 75%"
    )
    # The guardrails' decision on the canary and each version's validation read as
    # sentences, not flattened dicts
    expect(view.locator(".jp-Handoff-deployExtra").first).to_have_text(
        re.compile(r"guardrails: canary [a-z_]+( at [\d.]+%)?: [A-Z]"), timeout=15_000
    )
    expect(view.locator(".jp-Handoff-deployExtra").nth(1)).to_have_text(
        re.compile(r"validation: v1 done: [a-z]+ backend; ")
    )
    screenshot(page, "deployments-canary")

    # When ops has signed off production and ada promotes: churn:2 takes all the traffic
    assert call(central, "POST", sign.format(2), ops, {"decision": "approve"})[0] == 201
    row.locator('.jp-Handoff-deployMove[data-to="production"]').click()
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()
    expect(view.locator(".jp-Handoff-traffic-production")).to_have_attribute(
        "title", "production v2: 100%", timeout=30_000
    )
    expect(view.locator('.jp-Handoff-slot[data-slot="previous"][data-version="1"]')).to_be_visible()

    # And a roll back serves churn:1 again, in one step; it names the version the view
    # showed in production, so a second admin's click on a stale view is refused, not a
    # rollback of churn:1
    sent: list = []  # the rollback's body (its URL carries a cache-busting query)
    page.on(
        "request",
        lambda r: "/deployment/rollback?" in r.url and sent.append(r.post_data_json),
    )
    view.locator(".jp-Handoff-deployRollback").click()
    page.locator(".jp-Dialog input").fill("worse on live data")
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()
    expect(view.locator(".jp-Handoff-traffic-production")).to_have_attribute(
        "title", "production v1: 100%", timeout=30_000
    )
    assert (central_stage(central, "churn", 1), central_stage(central, "churn", 2)) == (
        "production",
        "rollback",
    )
    assert sent == [{"version": 2, "comment": "worse on live data"}], sent


def test_an_analyst_sees_the_deployment_without_actions(ops_site, page):
    lab = ops_site["lab"]
    # Given the same lab shown from this machine (the local agent asks central)
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    panel.locator(".jp-Handoff-source").select_option("local")
    expect(page.locator(f'{PANEL}[data-source="local"]')).to_be_visible(timeout=30_000)
    panel.locator('.jp-Handoff-model[data-model="churn"] .jp-Handoff-deploymentsOpen').click()
    view = page.locator('.jp-Handoff-deployments[data-model="churn"]')
    expect(view.locator(".jp-Handoff-traffic-production")).to_be_visible(timeout=30_000)
    expect(view.locator("button")).to_have_count(0)
    # And it follows central's deployment events, which the local agent relays
    expect(view).to_have_attribute("data-live", "true", timeout=15_000)
