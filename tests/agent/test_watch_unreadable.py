"""A watched file that stops being readable data (emptied by a failed export, overwritten
with something that is not Parquet) is a recorded, named error at its check, never a 500;
the watch keeps going and sees the data again once it is fixed."""

from __future__ import annotations

from support import handoff_cli
from watch_support import frame, triggers, watch


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
    assert again.returncode == 0 and lines[0].startswith("[") and "every 3600s" in lines[0]
    watch_id = lines[0][1 : lines[0].index("]")]
    assert lines[1] == f"Replaced the earlier settings of [{watch_id}]: one watch per source."
