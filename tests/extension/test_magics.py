"""%mlops in a shell that re-raises errors: happy paths and every user mistake."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from IPython.core.error import UsageError
from sklearn.linear_model import LogisticRegression


def run(shell, line: str):
    result = shell.run_cell(line)
    result.raise_error()
    return result.result


@pytest.fixture
def ns(shell, data, model):
    X, y = data
    shell.user_ns.update(clf=model, X=X, y=y, not_a_model=[1, 2, 3])
    return shell.user_ns


def test_push_then_read_back(shell, ns, connected):
    # Given a fitted model and data; When pushed through the magic
    version = run(shell, "%mlops push clf --name churn --data X y --sensitive gender -m first")
    # Then the agent has it, with its manifest, over HTTP
    assert (version.name, version.number) == ("churn", 1)
    status, body = connected.request("GET", "/api/v1/models/churn/versions/1")
    assert status == 200
    assert body["digest"] == version.digest
    assert body["manifest"]["message"] == "first"
    assert body["manifest"]["data"]["sensitive"]["schema"] == [{"name": "gender", "dtype": "int64"}]
    assert {c["name"] for c in body["manifest"]["signature"]["columns"]} >= {"f0", "gender"}
    assert {row["role"] for row in body["lineage"]} == {"X", "y", "sensitive"}


def test_versions_and_show(shell, ns, connected):
    run(shell, "%mlops push clf --name churn --tag team=risk")
    run(shell, "%mlops push clf --name churn --data X y")
    table = run(shell, "%mlops versions churn")
    assert list(table["number"]) == [2, 1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", table["pushed_at"][0])  # as history
    models = run(shell, "%mlops versions")
    assert list(models["name"]) == ["churn"]
    assert "imported" not in models  # no model here is monitored from an imported log
    shown = run(shell, "%mlops show churn:1")
    assert shown.number == 1 and shown.manifest["tags"] == {"team": "risk"}
    assert run(shell, "%mlops show churn").number == 2
    assert "churn" in shown._repr_html_() and "Version('churn', 1" in repr(shown)
    # the text form (a terminal, a notebook as text) lists each check and its result
    two = run(shell, "%mlops show churn:2").wait()
    text = repr(two)
    for c in two.checks:
        assert any(line.split()[:2] == [c["name"], c["status"]] for line in text.splitlines())


def test_agent_status(shell, connected, capsys):
    run(shell, "%mlops agent status")
    assert connected.url in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("%mlops", "Missing subcommand"),
        ("%mlops fly", "Unknown subcommand 'fly'"),
        ("%mlops push clf", "--name"),
        ("%mlops push nothing_here --name churn", "No variable named 'nothing_here'"),
        ("%mlops push not_a_model --name churn", "not a model"),
        ("%mlops push clf --name '../etc/passwd'", "not a valid model name"),
        ("%mlops push clf --name churn --data X short_y", "X has 600 rows but y has 10"),
        ("%mlops push clf --name churn --data X nan_y", "missing values"),
        ("%mlops push clf --name churn --data X y2d", "one column"),
        ("%mlops push clf --name churn --data X y --sensitive religion", "not a column of X"),
        ("%mlops push clf --name churn --tag oops", "is not K=V"),
        ("%mlops push clf --name churn --sensitive gender", "--sensitive needs --data"),
        ("%mlops push lam --name churn", "cannot be pickled"),
        ("%mlops show churn:latest", "must be a number"),
        ("%mlops push clf --name churn --format zip", "invalid choice"),
        ("%mlops push unfitted --name churn --data X y", "is not fitted"),
        ("%mlops push clf --name churn --data X y --sensitive short_y", "sensitive data has 10"),
        ("%mlops monitor churn --window weekly", "invalid choice"),
        ("%mlops monitor '../etc'", "not a valid model name"),
    ],
)
def test_usage_errors(shell, ns, connected, line, says):
    ns.update(
        short_y=np.zeros(10),
        nan_y=np.where(np.arange(600) == 3, np.nan, 0.0),
        y2d=np.zeros((600, 2)),
        lam=_Holder(),
        unfitted=LogisticRegression(),
    )
    with pytest.raises(UsageError, match=_escape(says)):
        run(shell, line)
    # Nothing reached the registry, and the agent is fine.
    assert connected.request("GET", "/api/v1/models")[1] == {"models": []}
    assert connected.healthy()


def test_monitor_without_a_central_says_how_to_start_one(shell, connected):
    # a local agent relays monitoring from its central; none runs here
    with pytest.raises(UsageError, match="Deployments and monitoring live at central"):
        run(shell, "%mlops monitor churn")


class _Holder:
    """A model carrying a lambda: it predicts, but cannot be pickled."""

    def __init__(self):
        self.fn = lambda x: x

    def predict(self, X):
        return X


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_no_agent_running(shell, ns, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="No Handoff agent is running") as e:
        run(shell, "%mlops push clf --name churn")
    assert "jupyter handoff serve" in str(e.value)


def test_killed_agent(shell, ns, connected, settings):
    # Given an agent the notebook was using; When it is killed -9
    settings.agent_url, settings.token = connected.url, connected.token
    run(shell, "%mlops push clf --name churn")
    connected.kill9()
    # Then the next push says so, with what to do, and no traceback
    with pytest.raises(UsageError, match="not answering") as e:
        run(shell, "%mlops push clf --name churn --data X y")
    assert "%mlops agent start" in str(e.value)


def test_a_stuck_agent_is_said_to_be_stuck_and_no_second_one_starts(
    shell, ns, connected, settings, capsys
):
    """A live agent that stopped answering (SIGSTOP here): not "no agent is running", and no
    second agent on its home, even where the notebook may start one."""
    import os
    import signal

    settings.auto_start = True
    os.kill(connected.pid, signal.SIGSTOP)
    try:
        with pytest.raises(UsageError, match="is running but not answering") as e:
            run(shell, "%mlops versions")
        assert f"(pid {connected.pid})" in str(e.value) and "jupyter handoff stop" in str(e.value)
        run(shell, "%mlops agent status")
        assert "runs but does not answer" in capsys.readouterr().out
    finally:
        os.kill(connected.pid, signal.SIGCONT)
    assert [p for p in os.listdir(connected.runtime_dir) if p.startswith("handoff")] == [
        "handoff-local.json"
    ]
    assert run(shell, "%mlops versions") is not None  # it answers again


def test_agent_refusal_is_a_usage_error(shell, ns, connected, settings):
    settings.agent_url, settings.token = connected.url, "wrong"
    with pytest.raises(UsageError, match=r"(?m)^The token is wrong: .*\(unauthorized\)$"):
        run(shell, "%mlops push clf --name churn")


def test_help_lists_every_subcommand(shell):
    doc = shell.find_line_magic("mlops").__doc__
    for sub in ("push", "versions", "show", "agent"):
        assert f"%mlops {sub}" in doc
    assert "--sensitive" in doc and "--format" in doc


def test_first_push_starts_a_detached_agent(shell, ns, settings, tmp_path, monkeypatch, capsys):
    from handoff_agent import runtime

    # Given no agent; When the first push runs with auto-start on
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    settings.auto_start = True
    version = run(shell, "%mlops push clf --name churn")
    info = runtime.read()
    try:
        # Then it says so, the push lands, and the agent lives in its own session
        assert "Started a Handoff agent" in capsys.readouterr().out
        assert version.number == 1
        assert os.getsid(info["pid"]) != os.getsid(0)
        assert info["home"] == str(tmp_path / "data" / "handoff")
        # When the analyst stops it while its checks run: "Stopped" is said once it has
        # exited, so an `agent start` right after starts one instead of finding it answering
        shell.run_line_magic("mlops", "agent stop")
        assert capsys.readouterr().out == f"Stopped the agent (pid {info['pid']}).\n"
        assert not runtime._alive(info["pid"]) and runtime.read() is None
    finally:
        if runtime._alive(info["pid"]):
            os.kill(info["pid"], signal.SIGTERM)


def test_a_push_after_the_agent_was_killed_starts_one_on_its_home(
    shell, ns, settings, tmp_path, monkeypatch, capsys
):
    """The analyst's agent served ``--home ~/mine`` and was killed: the next push starts one
    on that home (where their versions are), not on the default one, and says which."""
    import subprocess
    import sys

    from handoff_agent import runtime

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: what kill -9 leaves in the runtime file
    mine = tmp_path / "mine"
    runtime.write({"url": "http://127.0.0.1:9", "token": "t", "pid": gone.pid, "home": str(mine)})
    settings.auto_start = True
    version = run(shell, "%mlops push clf --name churn")
    info = runtime.read()
    try:
        assert info["home"] == str(mine) and version.number == 1
        assert f"home {mine})" in capsys.readouterr().out
    finally:
        os.kill(info["pid"], signal.SIGTERM)


def test_sensitive_variable_not_a_model_feature(shell, ns, data, connected):
    # Given a model trained without gender; gender as a column of X, and as a variable
    X, y = data
    features = X.drop(columns="gender")
    ns.update(no_gender=LogisticRegression(max_iter=500).fit(features, y), X_ng=features)
    ns["g"] = X["gender"].to_numpy()
    # When pushed with --sensitive naming the column, then the variable
    v1 = run(shell, "%mlops push no_gender --name fair --data X y --sensitive gender")
    v2 = run(shell, "%mlops push no_gender --name fair2 --data X_ng y --sensitive g")
    for v, label in ((v1, "gender"), (v2, "g")):
        # Then the model's input leaves gender out, and the fairness check groups by it
        v.wait(timeout=120)
        columns = [c["name"] for c in v.manifest["signature"]["columns"]]
        assert columns == ["f0", "f1", "f2", "f3", "f4"]
        assert v.manifest["data"]["sensitive"]["schema"][0]["name"] == label
        checks = {c["name"]: c for c in v.checks}
        assert checks["smoke"]["status"] == "pass"
        groups = checks["fairness"]["result"]["tables"]["groups"]
        assert {r["sensitive"] for r in groups} == {label}
        assert {r["group"] for r in groups} == {"0", "1"}


def test_text_push_records_the_input_kind(shell, ns, connected):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    texts = ["good film", "bad film", "great plot", "awful plot"] * 10
    labels = [1, 0, 1, 0] * 10
    ns.update(texts=texts, labels=labels)
    ns["text_clf"] = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    v = run(shell, "%mlops push text_clf --name reviews --data texts labels")
    body = connected.request("GET", "/api/v1/models/reviews/versions/1")[1]
    assert body["manifest"]["signature"] == {
        "columns": [{"name": "text", "dtype": "object"}],
        "input": "text",
    }
    assert v.number == 1


def test_python_api_get_forward_lineage(shell, ns, connected):
    import jupyter_handoff

    run(shell, "%mlops push clf --name churn --data X y")
    run(shell, "%mlops push clf --name churn --data X y -m again")
    assert jupyter_handoff.get("churn:1").number == 1
    assert jupyter_handoff.get("churn", 2).number == 2
    assert jupyter_handoff.get("churn", np.int64(1)).number == 1
    assert jupyter_handoff.get("churn").number == 2
    assert "forward" in jupyter_handoff.__all__ and "lineage" in jupyter_handoff.__all__
    assert jupyter_handoff.forward.__doc__ and jupyter_handoff.lineage.__doc__
    assert jupyter_handoff.lineage("churn:1")["version"] == 1
    assert "  stages: " in repr(jupyter_handoff.lineage("churn:1"))
    with pytest.raises(UsageError, match="must be a number"):
        jupyter_handoff.get("churn:x")
    with pytest.raises(UsageError, match="whole number"):
        jupyter_handoff.get("churn", 1.5)
    with pytest.raises(UsageError, match="has no option 'data'"):
        jupyter_handoff.push(ns["clf"], "churn", data=(ns["X"], ns["y"]))


def test_agent_hints_name_magics_not_routes(shell, ns, connected):
    with pytest.raises(UsageError) as e:
        run(shell, "%mlops show nope")
    assert "/api/" not in str(e.value) and "%mlops versions" in str(e.value)
    run(shell, "%mlops push clf --name churn")
    with pytest.raises(UsageError) as e:
        run(shell, "%mlops show churn:7")
    assert "/api/" not in str(e.value) and "%mlops versions churn" in str(e.value)
