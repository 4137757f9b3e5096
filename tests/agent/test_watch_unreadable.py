"""A watched file that stops being readable data (emptied by a failed export, overwritten
with something that is not Parquet) is a recorded, named error at its check, never a 500;
the watch keeps going and sees the data again once it is fixed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import RunningAgent, handoff_cli, until
from watch_support import frame, retrain_notebook, triggers, watch


def _check(agent, source_id: int) -> dict:
    status, out = agent.request("POST", f"/api/v1/watches/{source_id}/check", {})
    assert status == 200, out
    return out


def test_an_emptied_csv_or_a_corrupt_parquet_is_a_named_error_and_the_watch_recovers(
    agent, tmp_path
):
    csv, pq = tmp_path / "events.csv", tmp_path / "events.parquet"
    frame(100).to_csv(csv, index=False)
    frame(100).to_parquet(pq)
    w_csv = watch(agent, model="churn", source=str(csv), on=["change"])
    w_pq = watch(agent, model="churn", source=str(pq), on=["change"])

    # When the export that writes them fails half-way
    csv.write_text("")
    pq.write_bytes(b"PAR1 this is not a parquet file")

    # Then each check says which file cannot be read and why
    empty = _check(agent, w_csv["id"])
    assert empty["error"].startswith(f"{csv} cannot be read as CSV: "), empty
    corrupt = _check(agent, w_pq["id"])
    assert corrupt["error"].startswith(f"{pq} cannot be read as Parquet: "), corrupt
    # and the watch lists it as its last trigger, for %mlops watch and the panel
    [row] = [
        r
        for r in agent.request("GET", "/api/v1/watches?model=churn")[1]["watches"]
        if r["id"] == w_pq["id"]
    ]
    assert row["error"] == corrupt["error"] and row["error_since"] == corrupt["since"]
    assert row["last_trigger"]["change"] == "error"
    assert row["last_trigger"]["state"] == "skipped"  # alerted only if it lasts
    assert row["last_trigger"]["error"] == corrupt["error"]
    # a second check finds it still unreadable: nothing more recorded yet
    assert _check(agent, w_pq["id"])["since"] == corrupt["since"]
    assert len(triggers(agent, w_pq["id"])) == 1

    # Once the data is back, the next check compares it with the last good fingerprint
    frame(150).to_csv(csv, index=False)
    out = _check(agent, w_csv["id"])
    assert out["change"] == "appended", out
    assert [t["action"] for t in triggers(agent, w_csv["id"])] == ["alert", "alert"]


def test_a_link_into_the_agents_home_planted_in_a_watched_folder_is_never_read(agent, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    frame(100).to_csv(folder / "day-1.csv", index=False)
    w = watch(agent, model="churn", source=str(folder / "day-*.csv"), on=["change"])

    # When someone who may write into the folder links a file of the agent's home into it
    (folder / "day-2.csv").symlink_to(agent.home / "agent-id")

    # Then the check refuses to read it, says why, and records no fingerprint of it
    out = _check(agent, w["id"])
    assert out["error"] == (
        f"{folder / 'day-2.csv'} leads into the agent's own home; a watch reads your data, "
        "not Handoff's storage."
    ), out
    row = agent.request("GET", f"/api/v1/watches/{w['id']}")[1]
    assert [s["change"] for s in row["snapshots"]] == ["first"]
    assert row["triggers"][-1]["detail"]["error"] == out["error"]


def test_the_cli_says_why_a_new_watchs_first_read_failed(agent, tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 half an export")
    out = handoff_cli(agent.env, "watch", "churn", "--source", str(broken))
    assert out.returncode == 0, out.stderr
    assert f"on change -> alert: error: {broken} cannot be read as Parquet: " in out.stdout


def test_watching_a_watched_source_again_says_its_settings_were_replaced(agent, tmp_path):
    """One watch per model and source: a second `watch` of it replaces the first's settings
    (its notebook, period), and says so rather than dropping them unseen."""
    data = tmp_path / "part1.csv"
    data.write_text("a,b\n1,2\n")
    first = handoff_cli(agent.env, "watch", "churn", "--source", str(data), "--every", "30s")
    assert first.returncode == 0 and "Replaced" not in first.stdout, first
    again = handoff_cli(agent.env, "watch", "churn", "--source", str(data))
    lines = again.stdout.splitlines()
    assert again.returncode == 0 and lines[0].startswith("[") and "every 1h" in lines[0]
    watch_id = lines[0][1 : lines[0].index("]")]
    assert lines[1] == f"Replaced the earlier settings of [{watch_id}]: one watch per source."


def test_the_cli_reads_a_retrain_parameter_as_the_magic_does(agent, tmp_path):
    """``--params epochs=3`` reached the notebook as the text "3" (traitlets' K=V), so a
    retrain doing ``range(epochs)`` failed at every change; ``%mlops watch --param`` gave 3."""
    data = tmp_path / "part1.csv"
    frame(50).to_csv(data, index=False)
    nb = retrain_notebook(tmp_path / "retrain.ipynb")
    args = ("--source", str(data), "--run", str(nb))
    params = ("--params", "epochs=3", "--params", "C=0.5", "--params", "tag=v2")

    out = handoff_cli(agent.env, "watch", "churn", *args, *params)

    assert out.returncode == 0, out.stderr
    watch_id = out.stdout[1 : out.stdout.index("]")]
    stored = agent.request("GET", f"/api/v1/watches/{watch_id}")[1]["params"]
    assert stored == {"epochs": 3, "C": 0.5, "tag": "v2"}, stored
    # JSON still passes as it is (a list, a number given as text)
    again = handoff_cli(agent.env, "watch", "churn", *args, "--params", '{"cols": [1], "v": "3"}')
    assert again.returncode == 0, again.stderr
    stored = agent.request("GET", f"/api/v1/watches/{watch_id}")[1]["params"]
    assert stored == {"cols": [1], "v": "3"}, stored


POLICY = """
[intake.senders]
alice = ["watch-policy-secret-Qz8Lm3Vx6Rt1Np4Kd"]

[[watch]]
model = "churn"
source = "{source}"
every = "1s"
"""


def test_a_policy_watch_of_a_file_not_there_yet_starts_central_and_says_why(backend, tmp_path):
    missing = tmp_path / "exports" / "churn.parquet"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(source=missing))
    args = ["--role", "central", "--policy", str(policy)]
    central = RunningAgent(tmp_path / "central", tmp_path / "rt", args)
    # When central starts with a [[watch]] of a file the export has not written yet
    central.start()
    try:
        # Then it runs, and the watch says, as a path, why it cannot read it
        def listed():
            rows = central.request("GET", "/api/v1/watches")[1]["watches"]
            return rows and rows[0].get("error") and rows[0]

        row = until(listed, 60, "the policy watch's first check")
        assert row["source"] == str(missing)
        assert row["error"] == f"No file matches {str(missing)!r}."
        # and once the file is written, the watch reads it
        missing.parent.mkdir()
        frame(100).to_parquet(missing)
        until(lambda: not listed(), 60, "the policy watch reading the new file")
    finally:
        central.stop()


def serve_central(tmp_path, policy) -> subprocess.CompletedProcess:
    """``serve --role central --policy POLICY``, which must stop at once."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    return subprocess.run(
        [
            *(sys.executable, "-m", "handoff_agent", "serve", "--role", "central", "--port", "0"),
            *("--policy", str(policy), f"--HandoffAgent.home={tmp_path / 'home'}"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused_line(tmp_path, p) -> str:
    """The one line a refused start says, once nothing was started: no model server, no
    API listening, no runtime file for a kernel to find."""
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [line for line in p.stderr.splitlines() if "[[watch]]" in line]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert "Model server" not in p.stderr and "listening" not in p.stderr, p.stderr
    assert not (tmp_path / "runtime").exists() or not list((tmp_path / "runtime").iterdir())
    return lines[0]


def test_a_policy_watch_central_cannot_watch_stops_the_start_naming_the_path(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not data")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(source=text))
    line = refused_line(tmp_path, serve_central(tmp_path, policy))
    assert line.endswith(
        f'{policy}: [[watch]] #1 (model "churn"): notes.txt is not a Parquet or CSV file. '
        'Watch .parquet or .csv files, e.g. source = "/data/*.parquet".'
    ), line


@pytest.mark.parametrize(
    "table, said",
    [
        ('every = "0h"', 'every = "0h" is shorter than 1 s. e.g. every = "1h"'),
        (
            'every = "1h"\noverdue = "30m"',
            'overdue = "30m" is shorter than every = "1h": the source would be overdue at '
            "every check. Give overdue the longest the data may go unchanged, e.g. "
            'every = "1h", overdue = "26h" for a daily source.',
        ),
        (
            'every = "1h"\nactions = ["alert", "email"]',
            'Unknown action "email" in actions. Use one of: alert, revalidate, retrain, '
            "pause_canary, rollback_canary.",
        ),
        # its example in TOML, as the file writes it, not the API's JSON
        ("params = 3", "params must be an object. e.g. params = { epochs = 3 }"),
    ],
)
def test_a_policy_watch_setting_out_of_bounds_stops_the_start_in_the_files_words(
    tmp_path, table, said
):
    """The second [[watch]] of the file is named by its place, its model and its key as
    written there (not the CLI's --every), before the model server starts."""
    data = tmp_path / "churn.csv"
    frame(10).to_csv(data, index=False)
    policy = tmp_path / "policy.toml"
    second = f'\n[[watch]]\nmodel = "fraud"\nsource = "{data}"\n{table}\n'
    policy.write_text(POLICY.format(source=data).replace('every = "1s"', 'every = "1h"') + second)
    line = refused_line(tmp_path, serve_central(tmp_path, policy))
    assert line.endswith(f'{policy}: [[watch]] #2 (model "fraud"): {said}'), line


def test_a_policy_watch_with_a_misspelt_key_stops_the_start_naming_it(tmp_path):
    """``evry = "1h"`` would leave the watch at the default period, unnoticed: refused."""
    data = tmp_path / "churn.csv"
    frame(10).to_csv(data, index=False)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(source=data) + 'evry = "1h"\n')
    line = refused_line(tmp_path, serve_central(tmp_path, policy))
    assert line.endswith(
        f"{policy}: [[watch]] #1: unknown key 'evry'; the keys are model, source, query, "
        "every, overdue, on, actions, run, params, timeout, target."
    ), line


def test_the_cli_takes_several_changes_and_actions_after_one_option_as_the_magic_does(
    agent, tmp_path
):
    """``watch --on change drift`` was refused (traitlets took one value an option), while
    ``%mlops watch --on change drift`` takes several; repeating the option still works."""
    data = tmp_path / "several.csv"
    frame(50).to_csv(data, index=False)
    args = ("--source", str(data), "--target", "y")

    out = handoff_cli(
        agent.env,
        "watch",
        "churn",
        *args,
        "--on",
        "change",
        "drift",
        "--action",
        "alert",
        "revalidate",
    )

    assert out.returncode == 0, out.stderr
    watch_id = out.stdout[1 : out.stdout.index("]")]
    stored = agent.request("GET", f"/api/v1/watches/{watch_id}")[1]
    assert (stored["on"], stored["actions"]) == (["change", "drift"], ["alert", "revalidate"])
    # the option repeated, and both forms at once, mean the same
    again = handoff_cli(
        agent.env, "watch", "churn", *args, "--on", "schema", "--on", "drift", "overdue"
    )
    assert again.returncode == 0, again.stderr
    stored = agent.request("GET", f"/api/v1/watches/{watch_id}")[1]
    assert stored["on"] == ["schema", "drift", "overdue"], stored
    # an option given no value is one line naming it, exit 2
    for option in ("--on", "--action"):
        out = handoff_cli(agent.env, "watch", "churn", *args, option)
        assert out.returncode == 2 and out.stdout == "", out
        assert out.stderr.splitlines()[0] == f"{option} needs a value.", out.stderr
        assert "Traceback" not in out.stderr
