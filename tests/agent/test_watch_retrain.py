"""A changed source file runs the registered retraining notebook (a real kernel through
nbclient); its candidate goes through the local checks to central, carrying ``triggered_by``
the change. A schema change alerts and does not retrain."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from sklearn.linear_model import LogisticRegression
from support import push_model, until, wait_checked
from test_pipeline_central import start_pair
from watch_support import check, finished_retrain, frame, retrain_notebook, triggers, watch


@pytest.fixture
def pair(tmp_path):
    local, central = start_pair(tmp_path)
    yield local, central
    local.stop()
    central.stop()


def _first_version(local, tmp_path):
    df = frame(400)
    X, y = df[list("abcd")], df["y"]
    v = push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y, reference=X)
    wait_checked(local, "churn", v.number)
    return df


def test_changed_file_retrains_and_the_candidate_reaches_central_with_its_lineage(pair, tmp_path):
    local, central = pair
    data = tmp_path / "data" / "churn.parquet"
    data.parent.mkdir()
    # Given a model in production's pipeline and its data file
    _first_version(local, tmp_path).to_parquet(data)
    nb = retrain_notebook(tmp_path / "retrain.ipynb")
    # When the analyst watches the file with a retraining notebook
    w = watch(local, model="churn", source=str(data), every="1h", run=str(nb), params={"C": 0.5})
    assert w["last"]["change"] == "first" and w["actions"] == ["alert", "retrain"]
    # and rows are appended to it
    frame(600).to_parquet(data)
    out = check(local, w["id"])
    # Then the change is classified, an alert and a retrain are triggered
    assert out["change"] == "appended", out
    assert {t["action"] for t in out["triggers"]} == {"alert", "retrain"}
    run = finished_retrain(local, w["id"])
    assert run["state"] == "done", run["detail"]
    assert run["detail"]["versions"] == [{"model": "churn", "number": 2}]
    # and its audit row names the watch, the model and the version the retrain produced
    rows = local.sql("SELECT payload FROM audit WHERE action = 'trigger.done'")
    [done] = [p for p in map(json.loads, (r["payload"] for r in rows)) if p["trigger"] == run["id"]]
    assert (done["watch"], done["model"], done["source"], done["action"]) == (
        w["id"],
        "churn",
        str(data),
        "retrain",
    )
    assert done["versions"] == [{"model": "churn", "number": 2}] and done["state"] == "done"
    # and the candidate carries its cause, checked like any push
    body = wait_checked(local, "churn", 2)
    cause = body["manifest"]["provenance"]["triggered_by"]
    assert cause["trigger"] == run["id"] and cause["change"] == "appended"
    assert cause["fingerprint"] == out["fingerprint"] and cause["source"] == str(data)
    assert body["manifest"]["provenance"]["notebook"] == str(nb.resolve())  # its lineage

    # and central receives it, with the same lineage, for its own checks and sign-offs
    def at_central():
        status, got = central.request("GET", "/api/v1/models/churn/versions/2")
        return status == 200 and got

    got = until(at_central, 120, "the retrained version at central")
    assert got["manifest"]["provenance"]["triggered_by"]["trigger"] == run["id"]
    # The lineage shows the source, its change, and the retrain it caused, on both agents
    # (at central, the trigger is the sending agent's: central numbers triggers of its own)
    sender = f"{got['origin']['source']}:"
    for agent, ref, of in ((local, str(data), ""), (central, "churn", sender)):
        status, g = agent.request("GET", "/api/v1/lineage/graph?ref=" + ref)
        assert status == 200, g
        retrained = [e for e in g["edges"] if e["kind"] == "retrained"]
        assert retrained == [
            {"from": f"trigger:{of}{run['id']}", "to": "version:churn:2", "kind": "retrained"}
        ]
    status, g = local.request("GET", f"/api/v1/lineage/graph?ref={out['fingerprint'][:12]}")
    assert status == 200 and any(n["id"] == "version:churn:2" for n in g["nodes"])
    status, dot = local.request("GET", "/api/v1/lineage/graph?format=dot")
    assert status == 200 and dot.startswith("digraph lineage {") and "retrained" in dot


def test_schema_change_alerts_and_does_not_retrain(agent, tmp_path):
    data = tmp_path / "events.csv"
    df = _first_version(agent, tmp_path)
    df.to_csv(data, index=False)
    nb = retrain_notebook(tmp_path / "retrain.ipynb")
    w = watch(agent, model="churn", source=str(data), on=["change"], run=str(nb))
    # When a column is added
    df.assign(e=1.5).to_csv(data, index=False)
    out = check(agent, w["id"])
    # Then it is a schema change: an alert, and the retrain is skipped, with why
    assert out["change"] == "schema"
    states = {t["action"]: t["state"] for t in out["triggers"]}
    assert states == {"alert": "done", "retrain": "skipped"}
    skipped = next(t for t in triggers(agent, w["id"]) if t["action"] == "retrain")
    assert "schema" in skipped["detail"]["why"]
    assert agent.request("GET", "/api/v1/models/churn/versions/2")[0] == 404
    actions = {r["action"] for r in agent.sql("SELECT action FROM audit")}
    assert {"watch.add", "trigger.alert", "trigger.retrain"} <= actions
    # The same from the command line: the watch list, and the graph as dot
    listed = _cli(agent, "watch", "churn")
    assert f"[{w['id']}] churn <- {data}" in listed and ": schema" in listed
    dot = _cli(agent, "lineage", str(data), "--format", "dot")
    assert dot.startswith("digraph lineage {") and "schema -> retrain" in dot
    # and a watch stopped by its id: listed no more, audited
    removed = _cli(agent, "watch", "churn", "--remove", str(w["id"]))
    assert removed == f"Stopped watching [{w['id']}] churn <- {data}.\n", removed
    assert _cli(agent, "watch", "churn") == "churn watches no data source.\n"
    assert agent.sql("SELECT action FROM audit WHERE action = 'watch.remove'")
    # and its lineage still reads: the source, marked removed, with what its change set off
    dot = _cli(agent, "lineage", str(data), "--format", "dot")
    assert f"{data} (removed)" in dot and "schema -> retrain" in dot, dot


def _cli(agent, *args) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent", *args],
        env=agent.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_schedule_fingerprints_without_being_asked(agent, tmp_path):
    data = tmp_path / "d.csv"
    frame(50).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), every="1s")
    frame(80).to_csv(data, index=False)

    def changed():
        snaps = agent.request("GET", f"/api/v1/watches/{w['id']}")[1]["snapshots"]
        return [s for s in snaps if s["change"] == "appended"]

    assert until(changed, 60, "a scheduled fingerprint to see the appended rows")
    # the change's trigger is committed just after its snapshot
    acted = until(lambda: triggers(agent, w["id"]), 30, "the change's trigger")
    assert [t["action"] for t in acted] == ["alert"]


def run_retrain(tmp_path, cells: list[str], timeout: int) -> dict:
    """``python -m handoff_agent.watch.retrain`` on a notebook of ``cells``: its result."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = tmp_path / "retrain-run.ipynb"
    nbformat.write(nb, path)
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent.watch.retrain", str(path), "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_timeout_stops_the_whole_run_not_each_cell(tmp_path):
    # A notebook of three cells, each shorter than the timeout, together longer
    result = run_retrain(tmp_path, ["import time; time.sleep(2)"] * 3, timeout=4)
    # Then the run is stopped at the timeout, and says so
    assert result == {"ok": False, "error": "the notebook ran longer than 4 s"}


def test_a_failed_retrain_says_the_error_without_terminal_colours(tmp_path):
    """The notebook's error is shown in the notebook, the CLI and the panel: plain text."""
    result = run_retrain(tmp_path, ["n-rows = 5"], timeout=60)
    assert result["ok"] is False and "\x1b" not in result["error"], result
    assert result["error"].startswith("SyntaxError"), result


def test_a_watchs_retrains_run_one_at_a_time(agent, tmp_path):
    """Three changes while a retrain runs: each retrains, in turn, not three kernels at
    once (each notebook here notes when it ran)."""
    import nbformat

    data, runs = tmp_path / "events.csv", tmp_path / "runs.jsonl"
    frame(100).to_csv(data, index=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import json, time\nstart = time.time()\ntime.sleep(1.5)\n"
            f"open({str(runs)!r}, 'a').write(json.dumps([start, time.time()]) + '\\n')"
        )
    ]
    path = tmp_path / "note.ipynb"
    nbformat.write(nb, path)
    w = watch(agent, model="churn", source=str(data), run=str(path), on=["change"])
    for n in (150, 200, 250):
        frame(n).to_csv(data, index=False)
        assert [t["action"] for t in check(agent, w["id"])["triggers"]] == ["alert", "retrain"]

    def all_ran():
        done = [t for t in triggers(agent, w["id"]) if t["action"] == "retrain"]
        return len(done) == 3 and all(t["state"] != "running" for t in done) and done

    assert all(t["state"] == "done" for t in until(all_ran, 180, "three retrains"))
    spans = sorted(json.loads(line) for line in runs.read_text().splitlines())
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans  # never overlap


SLOW_FIRST_RUN = """
import os, pathlib, time
mark = pathlib.Path(mark)
first = not mark.exists()
mark.write_text(str(os.getpid()))
if first:
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_a_retrain_cut_short_by_kill_9_stops_with_its_agent_and_runs_again(agent, tmp_path):
    """The notebook runs in a session of its own: killed with its agent's kill -9, it would
    run on unseen. It stops with the agent, and the restarted agent marks its trigger
    interrupted and runs the notebook once more."""
    import nbformat

    data, mark = tmp_path / "events.csv", tmp_path / "kernel.pid"
    frame(100).to_csv(data, index=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SLOW_FIRST_RUN)]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    w = watch(agent, model="churn", source=str(data), run=str(path), params={"mark": str(mark)})
    # Given a change whose retrain is running (its kernel has started the notebook)
    frame(150).to_csv(data, index=False)
    assert [t["action"] for t in check(agent, w["id"])["triggers"]] == ["alert", "retrain"]
    kernel = int(until(lambda: mark.exists() and mark.read_text(), 120, "the notebook to run"))
    with open(f"/proc/{kernel}/stat") as f:
        runner = int(f.read().rsplit(")", 1)[1].split()[1])  # the kernel's parent
    # When the agent is killed (kill -9)
    agent.kill9()
    # Then the notebook does not run on without it: neither its runner nor its kernel
    until(lambda: not _running(runner) and not _running(kernel), 30, "the notebook to stop")
    # and when the agent starts again, the retrain is interrupted, and run once more
    agent.start()

    def settled():
        rows = [t for t in triggers(agent, w["id"]) if t["action"] == "retrain"]
        return len(rows) == 2 and rows[1]["state"] not in ("pending", "running") and rows

    first, again = until(settled, 180, "the retrain to run again")
    assert first["state"] == "interrupted", first
    assert first["detail"]["error"] == "the agent stopped while the notebook ran; it runs once more"
    assert again["state"] == "done" and again["detail"]["retry_of"] == first["id"], again
    rows = agent.sql("SELECT payload FROM audit WHERE action = 'trigger.done'")
    states = {p["trigger"]: p["state"] for p in map(json.loads, (r["payload"] for r in rows))}
    assert (states[first["id"]], states[again["id"]]) == ("interrupted", "done")
