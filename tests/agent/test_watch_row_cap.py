"""A watched file bigger than ``c.HandoffAgent.watch_max_rows``: Parquet is read a row group at a
time up to the cap, as a CSV is read up to it, never whole; its statistics cover the rows read,
and the cap is said once in the log and in every check."""

from __future__ import annotations

import json

from support import RunningAgent
from watch_support import check, frame, watch

assert RunningAgent  # this module starts agents: conftest runs it on every backend
CAP = 1000


def _hist_rows(agent, source_id: int) -> int:
    """How many values of column ``a`` the source's last statistics were computed over."""
    (row,) = agent.sql(
        "SELECT stats FROM source_snapshots WHERE source_id = :s ORDER BY id DESC LIMIT 1",
        s=source_id,
    )
    return sum(json.loads(row["stats"])["a"]["hist"])


def test_a_parquet_or_csv_source_over_the_cap_is_read_up_to_it_and_says_so(agent_factory, tmp_path):
    agent = agent_factory(f"--HandoffAgent.watch_max_rows={CAP}")
    # Given a Parquet file of 5000 rows in row groups of 700, the same rows as CSV, and a
    # small Parquet file under the cap
    big_pq, big_csv, small = (tmp_path / n for n in ("big.parquet", "big.csv", "small.parquet"))
    frame(5000).to_parquet(big_pq, row_group_size=700)
    frame(5000).to_csv(big_csv, index=False)
    frame(300).to_parquet(small)
    ids = {
        p: watch(agent, model="churn", source=str(p), on=["change"])["id"]
        for p in (big_pq, big_csv, small)
    }

    # When each is checked (twice: once at registration, once now)
    out = {p: check(agent, ids[p]) for p in ids}

    # then statistics cover the first CAP rows of a big file, all rows of a small one
    assert _hist_rows(agent, ids[big_pq]) == CAP
    assert _hist_rows(agent, ids[big_csv]) == CAP
    assert _hist_rows(agent, ids[small]) == 300
    # a Parquet file's rows are counted by its footer (a CSV's: those read)
    assert out[big_pq]["rows"] == 5000 and out[small]["rows"] == 300
    assert out[big_csv]["rows"] == CAP
    # and each check of a big file says so in one line naming the file and the setting
    for p in (big_pq, big_csv):
        (note,) = out[p]["capped"]
        assert note.startswith(f"{p} has more than 1,000 rows: "), note
        assert "c.HandoffAgent.watch_max_rows" in note
    assert out[small]["capped"] == []
    # the agent's log says it once per source, not at every check
    lines = [line for line in agent.read_log().splitlines() if "has more than 1,000 rows" in line]
    assert len(lines) == 2, lines
    assert {str(big_pq), str(big_csv)} == {p for p in map(str, ids) if any(p in x for x in lines)}
    # nothing changed between the two checks: the cap does not make the same file look new
    assert {p: out[p]["change"] for p in ids} == dict.fromkeys(ids, "unchanged")


def test_rows_appended_past_the_cap_read_as_appended_and_a_rewrite_as_modified(
    agent_factory, tmp_path
):
    """Past the cap the rows read no longer show the new ones: whether the file only grew is
    told by its bytes (its earlier bytes still first), which the check hashes anyway."""
    agent = agent_factory(f"--HandoffAgent.watch_max_rows={CAP}")
    big = tmp_path / "events.csv"
    frame(3000).to_csv(big, index=False)
    w = watch(agent, model="churn", source=str(big), on=["change"])
    # When rows are appended to the end of the file, as a logger or an export does
    with open(big, "a") as f:
        f.write(frame(50, seed=1).to_csv(index=False, header=False))
    # Then the change reads as appended, though the rows read (the first CAP) are the same
    out = check(agent, w["id"])
    assert (out["change"], out["capped"] != []) == ("appended", True), out
    assert [t["action"] for t in out["triggers"]] == ["alert"]
    # and a rewrite of an early row (the file as long as before, or longer) as modified
    text = big.read_text().splitlines(keepends=True)
    text[1] = "9" + text[1]
    big.write_text("".join(text) + text[-1])
    assert check(agent, w["id"])["change"] == "modified"
