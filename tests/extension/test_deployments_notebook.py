"""Deployments from the notebook, end to end: a local agent and a serving central (real
processes, real HTTP), churn:1 in production and churn:2 as a 30 % canary.

- the routes: the canary's share (admin only), a trial prediction, and a local agent that
  answers both from its central with its own token;
- ``%mlops deployments``, ``%mlops predict`` and ``%mlops history`` as a real notebook
  renders them (nbclient), user mistakes as one ``UsageError:`` line;
- the live widget's state, without a browser.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).parents[1] / "agent" / "serving"))
from serving_support import Client, push_to_central, serving_url, sign, start_pair
from support import until

ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    return X, (X["a"] + X["b"] > 0).astype(int)


@pytest.fixture(scope="module")
def canary(tmp_path_factory, backend, data):
    """churn:1 in production, churn:2 in canary at the policy's 30 %."""
    X, y = data
    local, central = start_pair(tmp_path_factory.mktemp("deploy-ux"))
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", v1, "production")
        client = Client(serving_url(central), central.token)
        until(lambda: client.invocations([ROW])[0] == 200, timeout=120, what="churn:1 serving")
        v2 = push_to_central(local, central, LogisticRegression(C=0.01).fit(X, y), "churn", X, y)
        sign(central, "churn", v2, "canary")
        until(
            lambda: any(
                client.invocations([ROW])[1]["X-Handoff-Model-Version"] == str(v2)
                for _ in range(20)
            ),
            timeout=120,
            what="canary traffic",
        )
        yield local, central, v2
    finally:
        local.stop()
        central.stop()


def slots_of(view: dict) -> dict:
    return {s["slot"]: s for s in view["slots"]}


# -- the routes ---------------------------------------------------------------------------


def test_the_local_agent_shows_centrals_deployment_and_predicts_through_it(canary):
    local, central, v2 = canary
    # Given the notebook's agent, which holds no serving of its own
    status, view = local.request("GET", "/api/v1/models/churn/deployment")
    assert status == 200, view
    # Then it shows central's slots, with the server's stats
    slots = slots_of(view)
    assert (slots["production"]["version"], slots["production"]["traffic"]) == (1, 70.0)
    assert (slots["canary"]["version"], slots["canary"]["traffic"]) == (v2, 30.0)
    assert "p99_ms" in slots["canary"] and "requests" in slots["production"]
    # And a trial prediction names the version and slot that answered
    body = {"dataframe_records": [ROW, ROW]}
    status, out = local.request("POST", "/api/v1/models/churn/predict", body)
    assert status == 200, out
    assert out["version"] in (1, v2) and out["slot"] in ("production", "canary")
    assert len(out["predictions"]) == 2 and len(out["probabilities"]) == 2
    status, out = local.request("POST", "/api/v1/models/churn/predict", {**body, "version": v2})
    assert (status, out["version"], out["slot"]) == (200, v2, "canary")
    # Central's own answer carries no token (the local agent used its own)
    assert central.token not in str(out) and local.token not in str(out)


def test_a_bad_trial_prediction_is_a_4xx_with_the_error_shape(canary):
    local, _central, _ = canary
    for body, status_, code in (
        ({"dataframe_records": [{"a": 1.0}]}, 422, "missing_columns"),
        ({"instances": [[1, 2, 3, 4]], "version": 99}, 404, "version_not_served"),
        ({"instances": [[1, 2, 3, 4]], "version": "two"}, 400, "bad_request"),
    ):
        status, out = local.request("POST", "/api/v1/models/churn/predict", body)
        assert status == status_, out
        assert set(out) == {"error"} and set(out["error"]) == {"code", "message", "hint"}
        assert code is None or out["error"]["code"] == code, out
    status, out = local.request("POST", "/api/v1/models/nope/predict", {"instances": [[1]]})
    assert (status, out["error"]["code"]) == (404, "model_not_served"), out


def test_a_model_central_does_not_know_is_a_404_not_an_empty_answer(canary):
    """A typo, or a model not forwarded yet: its deployment, monitoring, alerts and
    prediction log say so, at central and through the local agent, instead of an empty 200."""
    local, central, _ = canary
    for path in ("deployment", "monitor", "alerts", "predictions", "reviews"):
        status, out = central.request("GET", f"/api/v1/models/nope/{path}")
        assert (status, out["error"]["code"]) == (404, "not_found"), (path, out)
        assert out["error"]["message"] == "No model named 'nope'.", out
    for path in ("deployment", "monitor", "alerts", "reviews"):
        status, out = local.request("GET", f"/api/v1/models/nope/{path}")
        assert (status, out["error"]["message"]) == (404, "Central: No model named 'nope'."), out
    status, out = central.request("POST", "/api/v1/models/nope/monitor/run", {})
    assert (status, out["error"]["code"]) == (404, "not_found"), out
    status, out = central.request("POST", "/api/v1/models/nope/deployment/rollback", {})
    assert (status, out["error"]["code"]) == (404, "not_found"), out


def test_a_model_monitored_from_an_imported_log_alone_is_known_to_monitoring(
    canary, data, tmp_path
):
    """Central monitors a model it has no version of from an imported reference and log
    (``jupyter handoff monitor import``): its monitoring answers, its deployment is a 404."""
    _local, central, _ = canary
    X, y = data
    ref = X.assign(prediction=y, score=y.astype(float), label=y)
    ref.to_parquet(tmp_path / "ref.parquet")
    out = central.cli("monitor", "import", "legacy", str(tmp_path / "ref.parquet"), "--reference")
    assert out.returncode == 0, out.stdout + out.stderr
    for method, path in (("GET", "monitor"), ("GET", "alerts"), ("POST", "monitor/run")):
        status, body = central.request(
            method, f"/api/v1/models/legacy/{path}", {} if method == "POST" else None
        )
        assert status == 200 and body["model"] == "legacy", (path, body)
        if path == "monitor":  # served by no version here, and that is not news
            assert body["traffic"] == {"versions": [], "why_none": None}, body
    status, body = central.request("GET", "/api/v1/models/legacy/deployment")
    assert (status, body["error"]["code"]) == (404, "not_found"), body


def test_the_analyst_sees_what_central_waits_for_through_the_local_agent(canary):
    """The analyst's side of the review queue: churn:2, a canary, waits for one reviewer's
    sign-off to become production; churn:1, in production, waits for nothing."""
    local, central, v2 = canary
    status, mine = local.request("GET", "/api/v1/models/churn/reviews")
    assert status == 200, mine
    assert mine == central.request("GET", "/api/v1/models/churn/reviews")[1]
    (entry,) = mine["reviews"]
    assert (entry["model"], entry["version"], entry["stage"]) == ("churn", v2, "canary")
    assert (entry["next"], entry["missing"], entry["pushed_by"]) == (
        "production",
        {"reviewer": 1},
        "alice",
    )
    assert central.token not in str(mine) and local.token not in str(mine)


def test_the_canary_share_is_set_by_an_admin_only(canary):
    _local, central, v2 = canary
    path = "/api/v1/models/churn/deployment/traffic"
    reviewer = central.make_token("rita", "reviewer")
    status, out = central.request("POST", path, {"percent": 50}, token=reviewer)
    assert (status, out["error"]["code"]) == (403, "forbidden_role"), out
    for bad in ({"percent": "half"}, {"percent": True}, {}):
        status, out = central.request("POST", path, bad)
        assert status == 400 and set(out["error"]) == {"code", "message", "hint"}, out
    status, out = central.request("POST", path, {"percent": 150})
    assert (status, out["error"]["code"]) == (400, "bad_traffic"), out
    status, out = central.request(
        "POST", "/api/v1/models/absent/deployment/traffic", {"percent": 5}
    )
    assert (status, out["error"]["code"]) == (404, "not_found"), out
    assert out["error"]["message"] == "No model named 'absent'.", out
    # An admin moves it; production takes the rest, and the audit chain holds
    status, view = central.request("POST", path, {"percent": 50})
    assert status == 200, view
    slots = slots_of(view)
    assert (slots["canary"]["traffic"], slots["production"]["traffic"]) == (50.0, 50.0)
    status, view = central.request("POST", path, {"percent": 30})
    assert slots_of(view)["canary"]["traffic"] == 30.0
    assert central.cli("audit", "verify").returncode == 0
    # /meta says who may do what, so the panel need not guess
    meta = central.request("GET", "/api/v1/meta")[1]
    assert meta["deploy"]["actions"] == {
        "transition": ["admin"],
        "traffic": ["admin"],
        "rollback": ["admin"],
    }
    assert v2


# -- the live widget ----------------------------------------------------------------------


def test_the_widget_shows_each_slot_and_follows_a_traffic_change(canary, settings, monkeypatch):
    local, central, v2 = canary
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(local.runtime_dir))
    from jupyter_handoff import deployments

    dep = deployments("churn")
    assert "serving: production v1 70% / canary v2 30%" in repr(dep)
    widget = dep.widget(interval=0.2)
    try:
        assert {s["slot"]: s["traffic"] for s in widget.slots} == {
            "production": 70.0,
            "canary": 30.0,
        }
        assert widget.serving == f"serving: production v1 70% / canary v{v2} 30%"
        assert "traffic" in widget.view_html.value and widget.alarms == []
        # When an admin sets the canary's share, the widget follows without being asked
        assert (
            central.request("POST", "/api/v1/models/churn/deployment/traffic", {"percent": 20})[0]
            == 200
        )
        until(lambda: "canary v2 20%" in widget.serving, timeout=30, what="widget update")
    finally:
        widget.stop()
        central.request("POST", "/api/v1/models/churn/deployment/traffic", {"percent": 30})
    # The push widget of the canary version says where it serves, once the stage is mirrored
    from jupyter_handoff import get

    until(lambda: get("churn", v2).stage == "canary", timeout=60, what="stage mirrored")
    push_widget = get("churn", v2).widget(follow=False)
    assert push_widget.serving.startswith("this version: canary 30%"), push_widget.serving
    assert "serving: production v1 70% / canary v2 30%" in push_widget.serving
    assert "handoff-serving" in push_widget.handoff_html.value
    # and what central waits for before it moves on
    assert push_widget.waiting.startswith("waits for 1 reviewer sign-off to become production")
    assert "handoff-waiting" in push_widget.handoff_html.value


def test_the_widget_follows_centrals_events_through_the_local_agent(canary, settings, monkeypatch):
    """No polling (an hour between reads): only central's events, relayed by the local
    agent's /api/v1/models/churn/deployment/events, wake the widget."""
    local, central, v2 = canary
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(local.runtime_dir))
    from jupyter_handoff import deployments

    traffic = "/api/v1/models/churn/deployment/traffic"
    widget = deployments("churn").widget(interval=3600)
    try:
        assert widget.serving.endswith(f"canary v{v2} 30%")
        # Either the event or the read after the relay opened: the relay is open after this
        assert central.request("POST", traffic, {"percent": 25})[0] == 200
        until(lambda: f"canary v{v2} 25%" in widget.serving, timeout=60, what="relay open")
        assert central.request("POST", traffic, {"percent": 15})[0] == 200
        until(lambda: f"canary v{v2} 15%" in widget.serving, timeout=30, what="event followed")
    finally:
        widget.stop()
        central.request("POST", traffic, {"percent": 30})


# -- a real notebook ----------------------------------------------------------------------

CELLS = {
    "setup": "import numpy as np, pandas as pd\n"
    "rng = np.random.default_rng(1)\n"
    "X = pd.DataFrame(rng.normal(size=(5, 4)), columns=list('abcd'))\n"
    "wrong = X.rename(columns={'d': 'z'})\n"
    "arr = X.to_numpy()\n"
    "flat = arr[:, 0]\n"
    "config = {'a': 1}\n"
    "inf = X.assign(b=np.inf)\n"
    "strings = X.assign(a='x')\n"
    "one = X['a']\n"
    "texts = ['great service', 'slow']\n"
    "no_texts, mixed = [], ['great service', 3]\n"
    "test_set = pd.DataFrame(rng.normal(size=(500, 4)), columns=list('abcd'))\n"
    "%load_ext jupyter_handoff",
    "deployments": "%mlops deployments churn",
    "all": "%mlops deployments",
    "predict": "%mlops predict churn X",
    "predict_array": "%mlops predict churn arr --version 2",
    "predict_test_set": "%mlops predict churn test_set",
    "history": "%mlops history churn",
}
# (cell, what the UsageError line says)
MISTAKES = {
    "unknown": ("%mlops predict nope X", "'nope' is not served"),
    "columns": ("%mlops predict churn wrong", "Unknown column: 'z'"),
    "not_data": ("%mlops predict churn config", "DATA must be a DataFrame, a 2-D array or texts"),
    "texts": ("%mlops predict churn texts", "row 0 has 1 values for 4 columns"),
    "flat": ("%mlops predict churn flat", "must be 2-D"),
    "one_column": ("%mlops predict churn one", "Missing columns: 'b', 'c', 'd'."),
    "infinite": ("%mlops predict churn inf", "DATA holds infinite values in 'b'."),
    "strings": ("%mlops predict churn strings", "'a'"),
    "version": ("%mlops predict churn X --version 9", "Version 9 of 'churn' is not served"),
    "missing_var": ("%mlops predict churn X_typo", "No variable named 'X_typo'"),
    "no_texts": ("%mlops predict churn no_texts", "DATA has no rows."),
    "mixed_texts": (
        "%mlops predict churn mixed",
        "DATA mixes texts with other values: item 1 is 3.",
    ),
    "deployments_unknown": ("%mlops deployments nope", "Central has no model named 'nope'"),
    "monitor_unknown": ("%mlops monitor nope", "Central has no model named 'nope'"),
}


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts += [out["ename"], out["evalue"], *out["traceback"]]
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.fixture(scope="module")
def notebook(canary):
    local, _central, _ = canary
    env = f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(local.runtime_dir)!r}\n"
    sources = {**CELLS, **{k: v[0] for k, v in MISTAKES.items()}}
    sources["setup"] = env + sources["setup"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources.values()]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    return {k: nb.cells[i].outputs for i, k in enumerate(sources)}


def test_deployments_shows_each_slot_live_and_as_text(notebook):
    outputs = notebook["deployments"]
    text = _text(outputs)
    assert "serving: production v1 70% / canary v2 30%" in text, text
    for column in ("slot", "traffic", "requests", "error_rate", "p50_ms", "p99_ms", "backend"):
        assert column in text, text
    # The guardrails' decision reads as a sentence, not a dict
    assert re.search(r"\n  guardrails: canary [a-z_]+( at 30%)?: [A-Z]", text), text
    data = outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data  # the live widget
    assert "handoff-deployment" in data["text/html"]  # and the HTML where none runs
    assert "<div>guardrails: canary " in data["text/html"]
    assert "Deployment('churn')" in _text(notebook["all"])


def test_predict_shows_the_predictions_with_the_serving_version(notebook):
    text = _text(notebook["predict"])
    assert "churn:" in text and ("(production)" in text or "(canary)" in text), text
    assert "prediction" in text and "proba_1" in text
    assert "churn:2 (canary)" in _text(notebook["predict_array"])


def test_a_prediction_on_a_whole_test_set_shows_its_first_and_last_rows(notebook):
    """500 rows answered: the notebook shows pandas' head and tail of them and where the rest
    are, in the text and the HTML, not 500 lines."""
    (out,) = notebook["predict_test_set"]
    text, page = out["data"]["text/plain"], out["data"]["text/html"]
    note = "500 rows; the result's .to_dataframe() has them all"
    assert text.splitlines()[-1] == note and len(text.splitlines()) < 20, text
    assert "\n499 " in text and "\n250 " not in text, text
    assert page.count("<tr>") < 70 and html.escape(note) in page, page


def test_history_says_where_the_model_serves(notebook):
    text = _text(notebook["history"])
    assert "serving: production v1 70% / canary v2 30%" in text, text
    assert "[canary 30%]" in text and "[production 70%]" in text, text
    # What central waits for before churn:2 moves on, beside its stage
    assert "[waits for 1 reviewer sign-off to become production" in text, text
    html = notebook["history"][0]["data"]["text/html"]
    assert "waits for 1 reviewer sign-off to become production" in html, html


@pytest.mark.parametrize("key", sorted(MISTAKES))
def test_a_mistake_shows_one_usage_error_line(notebook, key):
    outputs = notebook[key]
    text = _text(outputs)
    assert outputs and {o["output_type"] for o in outputs} == {"stream"}, text
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: ") and MISTAKES[key][1] in first, text
    assert len(rest) <= 2, text
    for frame in ("Traceback", 'File "', "---->", "\x1b[", "token ", "/v2/", "/api/"):
        assert frame not in text, text
