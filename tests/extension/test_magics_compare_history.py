"""%mlops compare / history / report, help and tab completion, in a shell that re-raises."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from IPython.core.error import UsageError
from sklearn.linear_model import LogisticRegression
from support import wait_checked

from jupyter_handoff.comparison import Comparison
from jupyter_handoff.completer import _hook, candidates, complete
from jupyter_handoff.magics import PARSERS
from jupyter_handoff.timeline import History


def run(shell, line: str):
    result = shell.run_cell(line)
    result.raise_error()
    return result.result


@pytest.fixture(scope="module")
def _pushed_once(shared_agent, data, model):
    """churn:1 and churn:2 (checked), the second on changed data; strong and weak models."""
    from support import push_model

    X, y = data
    weak = LogisticRegression(C=0.001, max_iter=500).fit(X, y)
    push_model(shared_agent, model, "churn", X=X, y=y, message="first")
    push_model(shared_agent, weak, "churn", X=X.iloc[:500], y=y.iloc[:500], message="less data")
    return [wait_checked(shared_agent, "churn", n) for n in (1, 2)]


@pytest.fixture
def pushed(_pushed_once, shared_agent, settings, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(shared_agent.runtime_dir))
    return _pushed_once


def test_compare_two(shell, pushed):
    comparison = run(shell, "%mlops compare churn:1 churn:2")
    assert isinstance(comparison, Comparison) and comparison.labels == ["churn:1", "churn:2"]
    assert "roc_auc" in comparison.deltas
    changed = {r["role"]: r["changed"]["churn:2"] for r in comparison.fingerprints()}
    assert changed == {"X": True, "y": True}
    baseline = run(shell, "%mlops compare churn:1 churn:2 --baseline churn:2")
    assert baseline.baseline == "churn:2" and "churn:1" in baseline.deltas["roc_auc"]


def test_compare_latest_against_champion(shell, pushed):
    passed = [v["number"] for v in pushed if v["status"] in ("passed", "warned")]
    if 1 not in passed:
        with pytest.raises(UsageError, match="no champion"):
            run(shell, "%mlops compare churn")
        return
    comparison = run(shell, "%mlops compare churn")
    assert comparison.labels == ["churn:1", "churn:2"]
    assert "churn:1" in comparison.champions or "churn:2" in comparison.champions


def test_history(shell, pushed):
    history = run(shell, "%mlops history churn")
    assert isinstance(history, History) and [r["number"] for r in history.rows] == [2, 1]
    newest, oldest = history.rows
    assert newest["data_changed"] == ["X", "y"] and oldest["data_changed"] == []
    assert newest["message"] == "less data" and newest["pushed_by"]
    assert newest["verdict"] == pushed[1]["verdict"]["verdict"]
    assert newest["stage"] == ""
    page = history._repr_html_()
    assert "● changed" in page and "less data" in page and "stage" in page
    text = repr(history)  # what a terminal or nbconvert --to text shows
    assert text.startswith("History('churn', 2 versions)")
    frame = history.to_dataframe()
    assert list(frame["number"]) == [2, 1] and "data.X" in frame
    newest_only = run(shell, "%mlops history churn --limit 1")
    assert len(newest_only) == 1
    assert repr(newest_only).startswith("History('churn', newest 1 version; --limit shows more)")


def test_report_and_every_repr(shell, pushed):
    report = run(shell, "%mlops report churn:1")
    assert '<iframe sandbox=""' in report._repr_html_() and "Report('churn', 1" in repr(report)
    from jupyter_handoff import api

    assert "Report('churn', 1" in repr(api.report("churn:1"))  # the API takes NAME:N too
    md = run(shell, "%mlops report churn --format md")
    assert md.number == 2 and md._repr_markdown_()
    version = run(shell, "%mlops show churn:2")
    assert "churn" in version._repr_html_() and version.verdict == pushed[1]["verdict"]


def test_a_checks_own_comparison_with_its_champion_is_not_a_metric_of_the_version():
    def ridge(n, mae, champion_mae):
        metrics = {"task": "regression", "rows": 300, "mae": mae, "mae_ci": [mae, mae]}
        metrics |= {"champion_mae": champion_mae, "delta_mae": mae - champion_mae}
        return {
            "model": "ridge",
            "number": n,
            "checks": [{"name": "performance", "result": {"metrics": metrics}}],
        }

    comparison = Comparison([ridge(1, 8.8, 9.0), ridge(2, 14.4, 8.8)])
    assert [r["metric"] for r in comparison.metrics()] == ["mae"]


def test_history_as_text_says_the_stage_and_the_reasons():
    """A terminal, or nbconvert --to text, shows the stage and the gate's reasons too."""
    warned = {
        "number": 3,
        "status": "warned",
        "verdict": {"verdict": "warn", "reasons": ["fairness: dp_diff 0.14 above 0.1"]},
        "stage": "validated",
        "stage_by": "central",
        "pushed_by": "ana",
        "pushed_at": "2026-12-05T10:00:00",
    }
    lines = repr(History("churn", [warned])).splitlines()
    assert lines[0] == "History('churn', 1 version)"
    assert "warn" in lines[1] and lines[1].endswith("validated by central")
    assert lines[2] == "        fairness: dp_diff 0.14 above 0.1"


def test_history_html_shows_control_and_direction_characters_as_escapes():
    """A reviewer's reason with U+202E would show the rest of the line reversed in a
    browser; the HTML shows it as the text does, escaped."""
    v = {
        "number": 1,
        "status": "passed",
        "verdict": {"verdict": "pass", "reasons": []},
        "stage": "rejected",
        "stage_by": "rita",
        "stages": [{"stage": "rejected", "by": "rita", "comment": "ok \u202egnorw\x1b[31m"}],
        "message": "line one\nline two",
    }
    page = History("churn", [v])._repr_html_()
    assert "\u202e" not in page and "\x1b" not in page and "\n" not in page
    assert "ok \\u202egnorw\\x1b[31m" in page and "line one\\nline two" in page


def test_history_says_central_refuses_the_agents_token():
    """The agent's central token expired: stages stop coming back, and the history says why
    under its title (text and HTML), as `%mlops agent status` does."""
    v = {"number": 1, "status": "passed", "verdict": {"verdict": "pass", "reasons": []}}
    why = (
        "Central refuses this agent's token (401): The token of ana expired at "
        "2026-12-07T10:00:00Z. Stages and sign-offs no longer come back to the notebook."
    )
    history = History("churn", [v], problems=[why])
    assert repr(history).splitlines()[1] == f"  {why}"
    assert html.escape(why) in history._repr_html_()


def test_history_says_why_central_stopped_a_version():
    """A rejection's reason (or the guardrails') reaches the analyst: text and HTML."""
    rejected = {
        "number": 1,
        "status": "passed",
        "verdict": {"verdict": "pass", "reasons": []},
        "stage": "rejected",
        "stage_by": "rita",
        "stages": [
            {"stage": "validated", "by": "central", "comment": ""},
            {"stage": "rejected", "by": "rita", "comment": "Fairness gap on gender too high"},
        ],
    }
    said = "rejected by rita: Fairness gap on gender too high"
    history = History("churn", [rejected])
    assert repr(history).splitlines()[1].endswith(said)
    assert said in history._repr_html_()
    approved = {**rejected, "stage": "approved", "stage_by": "bob"}
    approved["stages"] = [{"stage": "approved", "by": "bob", "comment": "fine"}]
    assert repr(History("churn", [approved])).splitlines()[1].endswith("approved by bob")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("%mlops compare", "the following arguments are required"),
        ("%mlops compare churn:1", "a comparison needs two"),
        ("%mlops compare churn:prod", "No version of churn is in stage 'production'"),
        ("%mlops compare churn:1 churn:9", "no version 9"),
        ("%mlops compare nosuch:1 churn:1", "No model named 'nosuch'"),
        ("%mlops compare '../x:1' churn:1", "not a valid model name"),
        ("%mlops history", "the following arguments are required"),
        ("%mlops history nosuch", "No model named 'nosuch'"),
        ("%mlops history churn --limit 0", "--limit must be at least 1"),
        ("%mlops history churn --limit x", "invalid int value"),
        ("%mlops report churn:9", "no version 9"),
    ],
)
def test_usage_errors(shell, pushed, line, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        run(shell, line)


def test_compare_without_a_champion(shell, connected, data, model):
    X, y = data
    shell.user_ns.update(clf=model, X=X, y=y)
    run(shell, "%mlops push clf --name solo --data X y --sensitive gender")
    wait_checked(connected, "solo", 1)
    status = connected.request("GET", "/api/v1/models/solo/versions/1")[1]["status"]
    if status == "failed":
        with pytest.raises(UsageError, match="no champion"):
            run(shell, "%mlops compare solo")


def test_help_documents_every_subcommand(shell):
    doc = shell.find_line_magic("mlops").__doc__
    for sub in ("push", "versions", "show", "report", "compare", "history", "agent"):
        assert f"%mlops {sub}" in doc
    assert "%%mlops" not in doc  # a line magic; IPython's help formatter adds the one %
    assert "--baseline" in doc and "--limit" in doc and "NAME[:N|:STAGE]" in doc


def test_tab_completion(shell, pushed):
    assert complete("%mlops ") == list(PARSERS) and "dossier" in PARSERS
    assert complete("%mlops hi") == ["history"]
    assert complete("%mlops compare ") == ["churn"]
    assert complete("%mlops compare churn:1 ch") == ["churn"]
    assert complete("%mlops compare churn:") == ["2", "1"]
    assert complete("%mlops push clf --name ") == ["churn"]
    assert complete("%mlops push clf --na") == ["--name"]
    assert complete("%mlops history churn --") == ["--limit"]
    assert complete("%mlops agent st") == ["status", "start", "stop"]
    assert complete("%mlops report churn:2 --format ") == ["html", "md", "json"]
    assert complete("%mlops history churn ") == ["--limit"]  # past the positionals
    assert complete("%mlops predict ch") == ["churn"]
    assert complete("%mlops dossier churn:") == ["2", "1"]
    assert complete("%mlops watch churn --on change s") == ["schema"]
    assert candidates("%mlops watch churn --run ") is None  # a path: IPython's own completion
    assert candidates("%mlops push clf --name churn -m ") == ("", [])  # free text: nothing
    # The notebook's variables where a model or data goes, and X's columns for --sensitive.
    names = {"clf": LogisticRegression(), "X": pd.DataFrame({"gender": [0]}), "s": object()}
    names["LogisticRegression"] = LogisticRegression  # a class, not a model
    assert complete("%mlops push ", names) == ["clf"]
    assert complete("%mlops push clf --name churn --data ", names) == ["X"]
    assert complete("%mlops push clf --name c --data X X --sensitive ", names) == ["gender", "X"]
    # IPython before 8.6 asks through the complete_command hook, which splits at ':' too.
    assert _hook(shell, SimpleNamespace(text_until_cursor="%mlops show churn:")) == ["2", "1"]
    assert _hook(shell, SimpleNamespace(text_until_cursor="%mlops watch c --run ")) is None


def test_completion_without_an_agent(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert complete("%mlops compare ") == []
    assert complete("%mlops com") == ["compare"]


def test_python_api_mirrors_the_magics(pushed):
    import jupyter_handoff

    for name in ("push", "compare", "history", "report", "versions", "get"):
        assert callable(getattr(jupyter_handoff, name)), name
    assert jupyter_handoff.compare("churn:1", "churn:2").labels == ["churn:1", "churn:2"]
    assert len(jupyter_handoff.history("churn")) == 2
    v1 = jupyter_handoff.get("churn", 1)
    assert jupyter_handoff.compare(v1, ("churn", 2)).labels == ["churn:1", "churn:2"]
    assert v1.wait() is v1 and v1.status != "checking"


def test_watch_actions_are_given_one_after_another_or_repeated():
    line = ["churn", "--source", "/d/*.parquet", "--action", "alert", "revalidate"]
    args = PARSERS["watch"].parse_args([*line, "--action", "pause_canary", "--target", "y"])
    assert args.action == ["alert", "revalidate", "pause_canary"] and args.target == "y"
