"""GET /api/v1/meta: the vocabulary is defined once (vocabulary.py) and served to the panel."""

from __future__ import annotations

import re
from pathlib import Path

from handoff_agent import vocabulary

ROOT = Path(__file__).parents[2]

POLICY = """
[intake]
secrets = ["meta-secret-Rk2Vn8Qp4Lx7Tz1Wc5Hb9"]
[stages.approved]
reviewer = {approved}
[stages.production]
reviewer = 1
admin = {admins}
[deploy]
steps = [5, 25, 50]
"""


def flow_of(agent) -> dict:
    status, body = agent.request("GET", "/api/v1/meta")
    assert status == 200, body
    return {s["name"]: s for s in body["stages"]["flow"]}


def test_the_stage_flow_follows_the_live_policy(agent_factory, tmp_path):
    # Given a central whose policy wants two reviewers for approved
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(approved=2, admins=1))
    central = agent_factory("--role", "central", "--policy", str(policy))
    flow = flow_of(central)
    # Then /meta says so, in the order of the flow, with where each stage leads
    assert list(flow) == list(vocabulary.FLOW)
    assert flow["approved"]["signoffs"] == {"reviewer": 2}
    assert flow["production"]["signoffs"] == {"reviewer": 1, "admin": 1}
    assert flow["canary"]["next"] == "production" and flow["archived"]["next"] is None
    signable = {s: f["signoff_to"] for s, f in flow.items() if f["signoff_to"]}
    assert signable == {"validated": "approved", "approved": "canary", "canary": "production"}
    assert central.request("GET", "/api/v1/meta")[1]["stages"]["policy"] == "central"
    # and the live policy's [deploy] keys beside the deployment words
    deploy = central.request("GET", "/api/v1/meta")[1]["deploy"]
    assert deploy["policy"]["steps"]["value"] == [5, 25, 50]
    assert deploy["slots"] == list(vocabulary.SLOTS)

    # When the policy changes and central restarts (the policy is read at start)
    central.stop()
    policy.write_text(POLICY.format(approved=1, admins=2))
    central.start()
    # Then /meta serves the new flow
    flow = flow_of(central)
    assert flow["approved"]["signoffs"] == {"reviewer": 1}
    assert flow["production"]["signoffs"] == {"reviewer": 1, "admin": 2}


def test_meta_serves_the_vocabulary_to_any_role_and_nobody_else(shared_agent):
    reviewer = shared_agent.make_token("rita", "reviewer")
    status, body = shared_agent.request("GET", "/api/v1/meta", token=reviewer)
    assert status == 200
    assert body["role"] == "local" and body["stages"]["policy"] == "default"
    assert body["metrics"]["higher_is_better"]["log_loss"] is False
    assert body["metrics"]["higher_is_better"]["roc_auc"] is True
    assert body["statuses"]["verdict_status"] == {
        "pass": "passed",
        "warn": "warned",
        "fail": "failed",
    }
    assert set(body["stages"]["terminal"]) == {"archived", "rejected", "rollback"}
    assert body["stages"]["stopped"] == ["rejected", "rollback"]  # the panel shows why
    assert body["deploy"]["policy"]["max_psi"] == {
        "value": 0.2,
        "default": 0.2,
        "help": "alarm: PSI of canary predictions against production's",
    }
    status, err = shared_agent.request("GET", "/api/v1/meta", token=False)
    assert status == 401 and err["error"]["code"]


# Literals that would mean a second copy of the vocabulary: a metric's direction, the
# status <-> verdict map, and the stage flow's order.
DUPLICATES = {
    "metric direction": re.compile(
        r"""['"]?\b(log_loss|rmse|mae|roc_auc)\b['"]?\s*:\s*(False|True|false|true)\b"""
    ),
    "status map": re.compile(
        r"""['"]?\bpassed\b['"]?\s*:\s*['"]pass['"]|['"]pass['"]\s*:\s*['"]passed['"]"""
    ),
    "stopped stages": re.compile(r"""['"]rejected['"],\s*['"]rollback['"]"""),
    "stage flow": re.compile(
        r"""['"]?\bcanary\b['"]?\s*:\s*['"]production['"]|['"]approved['"],\s*['"]canary['"],\s*['"]production['"]"""
    ),
}


def sources():
    yield from (ROOT / "agent" / "handoff_agent").rglob("*.py")
    yield from (ROOT / "extension" / "jupyter_handoff").glob("**/*.py")
    yield from (ROOT / "labextension" / "src").glob("*.ts")


def test_no_second_copy_of_the_vocabulary():
    found = []
    for path in sources():
        if path.name == "vocabulary.py" or "labextension/static" in str(path):
            continue
        text = path.read_text()
        for what, pattern in DUPLICATES.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}: {m.group(0)}")
    assert not found, "Use handoff_agent.vocabulary (or GET /api/v1/meta):\n" + "\n".join(found)


def test_the_duplicate_finder_finds_a_copy():
    # The meta-test above can fail: each pattern matches the copies it is meant to catch.
    assert DUPLICATES["metric direction"].search("{'log_loss': False}")
    assert DUPLICATES["metric direction"].search("const DIR = { rmse: false };")
    assert DUPLICATES["status map"].search("{ passed: 'pass', warned: 'warn' }")
    assert DUPLICATES["stage flow"].search("approved: 'canary', canary: 'production'")
    assert DUPLICATES["stopped stages"].search("const STOPPED = ['rejected', 'rollback'];")
