"""Reports escape everything a user wrote, and are served sandboxed."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from support import push_model, wait_checked

from handoff_agent import reports

EVIL = "<script>alert(1)</script>"


def push_evil(agent) -> int:
    """A version whose column, message and tag are markup, checked; each test pushes it (the
    same bytes make the same version), so none depends on another having run first."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=[EVIL, "ok"])
    y = (X["ok"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    v = push_model(agent, model, "evil", X=X, y=y, message=EVIL, tags={EVIL: EVIL})
    wait_checked(agent, "evil", v.number)
    return v.number


def test_report_escapes_names_columns_and_message(shared_agent):
    path = f"/api/v1/models/evil/versions/{push_evil(shared_agent)}/report"
    status, page = shared_agent.request("GET", path)
    assert status == 200
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    _, card = shared_agent.request("GET", path + "?format=md")
    assert "<script" not in card.lower()


def test_report_served_with_sandbox_csp_and_nosniff(shared_agent):
    import http.client

    number = push_evil(shared_agent)
    conn = http.client.HTTPConnection(shared_agent.host, shared_agent.port, timeout=30)
    conn.request(
        "GET",
        f"/api/v1/models/evil/versions/{number}/report",
        headers={"Authorization": f"token {shared_agent.token}"},
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("Content-Security-Policy").startswith("sandbox")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


def test_renderer_escapes_a_hostile_model_name_and_drops_non_png_plots():
    version = {
        "model": EVIL,
        "number": 1,
        "digest": "0" * 64,
        "status": "passed",
        "manifest": {"message": EVIL, "model_class": EVIL},
        "checks": [
            {
                "name": EVIL,
                "status": "pass",
                "message": EVIL,
                "duration": 0.1,
                "result": {
                    "metrics": {EVIL: 1.0},
                    "tables": {EVIL: [{EVIL: EVIL}]},
                    "plots": {"x": "PHNjcmlwdD4="},
                },
            }
        ],  # base64 of <script>
    }
    out = reports.render(version)
    assert b"<script" not in out["html"].lower()
    assert b"<script" not in out["md"].lower()
    assert b"data:image/png" not in out["html"]


def test_unknown_format_and_pending_report(shared_agent):
    status, body = shared_agent.request("GET", "/api/v1/models/evil/versions/1/report?format=pdf")
    assert status == 400 and "format" in body["error"]["message"]
    status, body = shared_agent.request("GET", "/api/v1/models/evil/versions/99/report")
    assert status == 404
