"""A reviewer in JupyterLab, connected to a real central agent, approves a version from the
side panel, and its stage changes; she withdraws a sign-off that has not counted yet, from the
panel too; once another reviewer rejects it, both sides' panels say who and why, with every
sign-off's comment shown as text. An analyst's panel has no such buttons."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="jupyter-handoff-panel"]'
PANEL = "#jupyter-handoff-panel"
# A reviewer's comment is the user's text: markup in it must show as written, never run, and
# a long unbroken word must wrap inside the sidebar.
HOSTILE = "<img src=x onerror=alert(1)> canary ok, see " + "dashboards/" * 30

PUSH = """
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier
import jupyter_handoff

X, y = make_classification(n_samples=400, n_features=4, random_state=1)
X = pd.DataFrame(X, columns=["tenure", "spend", "visits", "age"])
y = pd.Series(y, name="churned")
jupyter_handoff.push(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y),
                     name="credit", X=X, y=y)
jupyter_handoff.push(DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y),
                     name="credit", X=X, y=y)
jupyter_handoff.forward("credit", 2, to="central")  # this machine's 2 is central's 1
"""


class Agent:
    """An agent process started in a lab's dirs (so the lab and its kernels find it)."""

    def __init__(self, lab, role: str, args: list[str]):
        self.role = role
        self.log = open(lab.base / f"agent-{role}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handoff_agent", "serve", *args],
            env=lab.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        path = Path(lab.runtime_dir) / f"handoff-{role}.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                info = json.loads(path.read_text())
                if info["pid"] == self.proc.pid:
                    self.url, self.token, self.home = info["url"], info["token"], info["home"]
                    return
            except (OSError, ValueError, KeyError):
                pass
            assert self.proc.poll() is None, f"{role} agent exited"
            time.sleep(0.1)
        raise RuntimeError(f"the {role} agent did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def central_site(lab_factory):
    """A central agent, a local agent that forwards to it, and the reviewer alice's
    JupyterLab configured with her central token."""
    agents: list[Agent] = []
    site: dict = {}

    def prepare(lab):
        central = Agent(lab, "central", ["--role", "central"])
        agents.append(central)
        # Hands off only what it is asked to: this machine's numbers differ from central's
        local = ["--forward-to", "central", "--HandoffAgent.forward_on=[]"]
        agents.append(Agent(lab, "local", local))
        token = subprocess.run(
            [sys.executable, "-m", "handoff_agent", "token", "create", "--user", "alice",
             "--role", "reviewer", "--home", central.home],
            env=lab.env, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        lab.args += [
            f"--HandoffServer.central_url={central.url}",
            f"--HandoffServer.central_token={token}",
        ]
        site["central"], site["alice"] = central, token

    site["lab"] = lab_factory(prepare=prepare)
    yield site
    for a in reversed(agents):
        a.stop()


def central_get(central: Agent, path: str) -> dict:
    """GET a central route with the agent's own token."""
    import urllib.request

    req = urllib.request.Request(
        f"{central.url}{path}", headers={"Authorization": f"token {central.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def central_stage(central: Agent, name: str, number: int) -> str | None:
    try:
        return central_get(central, f"/api/v1/models/{name}/versions/{number}").get("stage")
    except OSError:
        return None


def post_signoff(central: Agent, token: str, name: str, number: int, body: dict) -> dict:
    """A sign-off (or its withdrawal) through central's API, as the token's user."""
    import urllib.request

    req = urllib.request.Request(
        f"{central.url}/api/v1/models/{name}/versions/{number}/signoffs",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def reject_at_central(lab, central: Agent, user: str, name: str, number: int, why: str) -> dict:
    """``user``, a second reviewer at central, rejects a version through the API."""
    token = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "token", "create", "--user", user,
         "--role", "reviewer", "--home", central.home],
        env=lab.env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    return post_signoff(central, token, name, number, {"decision": "reject", "comment": why})


def fits(locator) -> bool:
    """Nothing in the element is wider than the element (no horizontal overflow)."""
    return locator.evaluate("n => n.scrollWidth <= n.clientWidth")


def test_reviewer_approves_from_the_panel(central_site, page, screenshot):
    lab, central = central_site["lab"], central_site["central"]
    # Given two versions pushed from a real kernel, the second forwarded to central and
    # validated there
    lab.run_in_kernel(PUSH)
    deadline = time.monotonic() + 240
    while central_stage(central, "credit", 1) != "validated":
        assert time.monotonic() < deadline, f"stage: {central_stage(central, 'credit', 1)}"
        time.sleep(0.5)
    # When alice, a reviewer, opens the panel: it shows central, with her role
    alerts: list[str] = []  # a comment's markup that ran would open one
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    page.goto(lab.lab_url())
    page.wait_for_selector(".jp-LabShell", timeout=60_000)
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    expect(panel.locator(".jp-Handoff-whoami")).to_contain_text("alice", timeout=15_000)
    expect(panel.locator(".jp-Handoff-whoami")).to_contain_text("reviewer")
    row = panel.locator('.jp-Handoff-version[data-model="credit"][data-version="1"]')
    expect(row).to_have_attribute("data-stage", "validated", timeout=30_000)
    # and, above the models, what waits for her sign-off
    queue = panel.locator(".jp-Handoff-reviews")
    expect(queue.locator("summary")).to_have_text("Waiting for your sign-off (1)")
    waiting = queue.locator('.jp-Handoff-review[data-model="credit"][data-version="1"]')
    expect(waiting).to_contain_text("validated → approved · needs 1 reviewer")
    screenshot(panel, "review-queue")
    expect(row.locator(".jp-Handoff-promote")).to_have_count(0)  # promote is an admin's
    # and approves it with a comment
    row.locator(".jp-Handoff-approve").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("Checked the fairness numbers")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    # Then a notification says the stage changed (looked for first: it closes after 8 s), and
    # it did, in the panel and at central
    expect(page.locator(".Toastify__toast", has_text="credit:1 is now approved")).to_be_visible(
        timeout=15_000
    )
    expect(row).to_have_attribute("data-stage", "approved", timeout=15_000)
    expect(row.locator(".jp-Handoff-stage")).to_have_text("approved")
    assert central_stage(central, "credit", 1) == "approved"
    screenshot(page, "approved")
    # The queue now asks for the canary's sign-off; approving it there moves it on
    expect(waiting).to_have_attribute("data-next", "canary", timeout=15_000)
    waiting.locator(".jp-Handoff-approve").click()
    dialog.locator("input").fill(HOSTILE)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    expect(row).to_have_attribute("data-stage", "canary", timeout=15_000)
    assert central_stage(central, "credit", 1) == "canary"
    # Production needs a reviewer's and an admin's sign-off: alice's approval alone leaves it
    # waiting, and until it counts she may take it back, from the panel, with a reason
    expect(waiting).to_have_attribute("data-next", "production", timeout=15_000)
    row.locator(".jp-Handoff-approve").click()
    dialog.locator("input").fill("Canary looks fine")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    withdraw = row.locator(".jp-Handoff-withdraw")
    expect(withdraw).to_have_text("Withdraw my sign-off", timeout=15_000)
    expect(row.locator(".jp-Handoff-approve, .jp-Handoff-reject")).to_have_count(0)
    expect(row).to_have_attribute("data-stage", "canary")
    expect(queue).to_have_count(0)  # nothing else waits for her
    row.locator(".jp-Handoff-signoffs summary").click()
    mine_now = row.locator('.jp-Handoff-signoff[data-stage="production"]')
    expect(mine_now).to_contain_text("alice (reviewer) approve for production")
    screenshot(panel, "withdraw-offered")
    withdraw.click()
    expect(dialog).to_contain_text("Withdraw my sign-off of credit:1 for production")
    dialog.locator("input").fill("<b>latency</b> needs another day")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    # Then the version waits for her sign-off again: Approve is back, in the queue too
    expect(row.locator(".jp-Handoff-approve")).to_be_visible(timeout=15_000)
    expect(withdraw).to_have_count(0)
    expect(row).to_have_attribute("data-stage", "canary")
    expect(waiting).to_have_attribute("data-next", "production", timeout=15_000)
    expect(row.locator(".jp-Handoff-signoffs summary")).to_have_text("Sign-offs (2)")
    expect(mine_now).to_have_count(0)
    screenshot(panel, "withdrawn")
    # and at central: the sign-off is gone; the audit log keeps it, with why it was taken back
    signed = central_get(central, "/api/v1/models/credit/versions/1")["signoffs"]
    assert [(s["user"], s["stage"]) for s in signed] == [
        ("alice", "approved"),
        ("alice", "canary"),
    ]
    gone = central_get(central, "/api/v1/audit?subject=credit:1&action=signoff.withdraw")
    [entry] = gone["entries"]
    payload = entry["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert entry["actor"] == "alice"
    assert payload["stage"] == "production"
    assert payload["why"] == "<b>latency</b> needs another day"
    # A withdrawal central refuses (here, taken back elsewhere while the dialog was open)
    # shows the agent's message and hint, as a refused approval does
    row.locator(".jp-Handoff-approve").click()
    dialog.locator("input").fill("Canary looks fine")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    withdraw.click()
    dialog.locator("input").fill("second thoughts")
    post_signoff(central, central_site["alice"], "credit", 1, {"decision": "withdraw"})
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    refused = page.locator(".Toastify__toast", has_text="no sign-off of credit:1 for production")
    expect(refused).to_contain_text("nothing was changed", timeout=15_000)
    expect(refused).to_contain_text("`jupyter handoff reviews` shows who signed what.")
    expect(row.locator(".jp-Handoff-approve")).to_be_visible(timeout=15_000)
    assert central_stage(central, "credit", 1) == "canary"
    # The analyst's side, on this machine: the version central has says what central waits
    # for next; the one never handed off says nothing of central's
    panel.locator(".jp-Handoff-source").select_option("local")
    mine = panel.locator('.jp-Handoff-version[data-model="credit"][data-version="2"]')
    expect(mine).to_have_attribute("data-stage", "canary", timeout=30_000)
    expect(mine.locator(".jp-Handoff-waiting")).to_have_text(
        "Waits for 1 reviewer, 1 admin sign-offs to become production", timeout=30_000
    )
    expect(mine.locator(".jp-Handoff-approve")).to_have_count(0)  # the local view signs nothing
    kept = panel.locator('.jp-Handoff-version[data-model="credit"][data-version="1"]')
    expect(kept).to_have_attribute("data-stage", "")
    expect(kept.locator(".jp-Handoff-waiting")).to_have_count(0)
    screenshot(panel, "waiting-for")
    # When rita, another reviewer, rejects it at central with a reason
    why = "too few rows from 2025"
    assert reject_at_central(lab, central, "rita", "credit", 1, why) == {"stage": "rejected"}
    # Then the analyst's panel says who rejected it and why, under the version
    expect(mine).to_have_attribute("data-stage", "rejected", timeout=30_000)
    expect(mine.locator(".jp-Handoff-stopped")).to_have_text(f"rejected by rita: {why}")
    expect(mine.locator(".jp-Handoff-waiting")).to_have_count(0)
    # and every sign-off: who, the decision, the stage it was for, and the comment
    signoffs = mine.locator(".jp-Handoff-signoffs")
    expect(signoffs.locator("summary")).to_have_text("Sign-offs (3)")
    signoffs.locator("summary").click()
    each = signoffs.locator(".jp-Handoff-signoff")
    said = [("alice", "approve", "approved"), ("alice", "approve", "canary"),
            ("rita", "reject", "production")]  # fmt: skip
    for i, (user, decision, stage) in enumerate(said):
        expect(each.nth(i)).to_have_attribute("data-user", user)
        expect(each.nth(i)).to_have_attribute("data-decision", decision)
        expect(each.nth(i)).to_contain_text(f"{user} (reviewer) {decision} for {stage}")
    comments = signoffs.locator(".jp-Handoff-signoffComment")
    expect(comments).to_have_text(["Checked the fairness numbers", HOSTILE, why])
    # the markup in a comment is literal text: no element made of it, nothing ran
    expect(panel.locator("img")).to_have_count(0)
    assert alerts == []
    assert fits(mine) and fits(panel.locator(".jp-Handoff-models"))  # the long word wraps
    screenshot(panel, "rejected-why")
    # The reviewer's own view, central's, says the same of central's number
    panel.locator(".jp-Handoff-source").select_option("central")
    expect(row.locator(".jp-Handoff-stopped")).to_have_text(
        f"rejected by rita: {why}", timeout=30_000
    )
    expect(row.locator(".jp-Handoff-signoffs summary")).to_have_text("Sign-offs (3)")
    expect(row.locator(".jp-Handoff-approve")).to_have_count(0)  # nothing left to sign


def test_an_analyst_sees_no_signoff_actions(central_site, jupyterlab, lab_page):
    # The analyst's lab has no central: the same kind of version shows no actions
    page = lab_page()
    page.locator(PANEL_TAB).click()
    panel = page.locator(PANEL)
    expect(panel.locator(".jp-Handoff-models")).to_be_visible(timeout=15_000)
    expect(panel.locator(".jp-Handoff-source option[value=central]")).to_have_count(0)
    expect(
        panel.locator(".jp-Handoff-approve, .jp-Handoff-reject, .jp-Handoff-promote")
    ).to_have_count(0)
