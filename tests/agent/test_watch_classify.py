"""Fingerprints and their classification, on real files, without an agent (and once as a
check through the agent sees them)."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from watch_support import check, frame, watch

from handoff_agent.watch import classify, fingerprint


def _fp(path, ref=None, prev=None):
    edges = fingerprint.reference_edges(ref) if ref is not None else None
    return fingerprint.fingerprint(
        {"kind": "file", "source": str(path)}, None, edges, (prev or {}).get("rows") or 0
    )


def _ref_stats(ref):
    edges = fingerprint.reference_edges(ref)
    return fingerprint.stats(ref, edges)


def test_files_glob_fingerprint_has_size_mtime_sha256_and_stats(tmp_path):
    frame(100).to_parquet(tmp_path / "part-1.parquet")
    frame(50, seed=1).to_parquet(tmp_path / "part-2.parquet")
    fp = _fp(tmp_path / "part-*.parquet")
    assert fp["rows"] == 150 and len(fp["files"]) == 2
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 and f["mtime"] for f in fp["files"])
    assert set(fp["stats"]) == {"a", "b", "c", "d", "y"} and "hist" in fp["stats"]["a"]


def test_each_kind_of_change(tmp_path):
    ref = frame(500)[list("abcd")]
    stats = _ref_stats(ref)
    path = tmp_path / "d.parquet"
    frame(500).to_parquet(path)
    first = _fp(path, ref)
    assert classify.classify(None, first, stats, 3600)[0] == "first"
    same = _fp(path, ref, first)
    assert classify.classify(first, same, stats, 3600)[0] == "unchanged"
    # Overdue: the same content, long past its period
    assert classify.classify(first, same, stats, 60, now=time.time() + 3600)[0] == "overdue"
    frame(700).to_parquet(path)  # the first 500 rows, then 200 more
    grown = _fp(path, ref, first)
    assert classify.classify(first, grown, stats, 3600)[0] == "appended"
    frame(500, seed=9).to_parquet(path)  # rewritten, same distribution
    assert classify.classify(first, _fp(path, ref, first), stats, 3600)[0] == "modified"
    frame(500, seed=9, shift=1.5).to_parquet(path)  # shifted: PSI against the reference
    change, psi = classify.classify(first, _fp(path, ref, first), stats, 3600)
    assert change == "drift" and psi > classify.PSI_THRESHOLD
    frame(500).assign(extra=1).to_parquet(path)
    assert classify.classify(first, _fp(path, ref, first), stats, 3600)[0] == "schema"


def test_overdue_after_the_expected_period_on_simulated_time(tmp_path):
    path = tmp_path / "daily.parquet"
    frame(100).to_parquet(path)
    first = _fp(path)
    same = _fp(path, prev=first)
    written = same["mtime"]
    hour = 3600.0
    # Fingerprinted hourly, expected daily with slack: --overdue 26h
    for age, change in ((25 * hour, "unchanged"), (26 * hour + 1, "overdue")):
        got = classify.classify(first, same, None, hour, now=written + age, overdue=26 * hour)
        assert got[0] == change, age
    # Without the setting: twice the fingerprint period
    assert classify.overdue_after(hour) == 2 * hour
    assert classify.classify(first, same, None, hour, now=written + 3 * hour)[0] == "overdue"
    assert classify.classify(first, same, None, hour, now=written + hour)[0] == "unchanged"
    # A SQL source counts from its newest max(updated_at)
    sql = {**same, "mtime": None, "max_updated": "2026-01-01T00:00:00+00:00"}
    start = classify._data_time(sql)
    late = classify.classify(sql, sql, None, hour, now=start + 27 * hour, overdue=26 * hour)
    assert late[0] == "overdue"
    # A bad period is refused with the option's name
    from handoff_agent.errors import BadRequest
    from handoff_agent.watch.service import parse_every

    assert parse_every("26h", "overdue") == 26 * hour
    with pytest.raises(BadRequest, match="--overdue 'soon' is not a period"):
        parse_every("soon", "overdue")


def test_policy_watch_tables(tmp_path):
    from handoff_agent.policy import Policy

    path = tmp_path / "policy.toml"
    path.write_text(
        '[[watch]]\nmodel = "churn"\nsource = "/data/a.parquet"\non = ["schema", "overdue"]\n'
        'actions = ["alert", "pause_canary"]\noverdue = "26h"\n'
    )
    assert Policy.load(path).watches == [
        {
            "model": "churn",
            "source": "/data/a.parquet",
            "on": ["schema", "overdue"],
            "actions": ["alert", "pause_canary"],
            "overdue": "26h",
        }
    ]
    path.write_text('[[watch]]\nmodel = "churn"\n')
    with pytest.raises(ValueError, match="needs model = NAME and source"):
        Policy.load(path)


def test_a_source_of_a_few_dozen_rows_like_the_reference_is_appended_not_drift(tmp_path):
    # A daily file that starts small and grows through the day, drawn from the model's own
    # data: too few rows to tell a shift, so its changes read as what they are
    ref = frame(2000)[list("abcd")]
    stats = _ref_stats(ref)
    path = tmp_path / "today.csv"
    changes = []
    for seed in range(20):
        frame(30, seed=seed).to_csv(path, index=False)
        first = _fp(path, ref)
        assert classify.classify(None, first, stats, 3600) == ("first", None)  # 30 rows
        frame(45, seed=seed).to_csv(path, index=False)  # the same 30 rows, then 15 more
        changes.append(classify.classify(first, _fp(path, ref, first), stats, 3600)[0])
    assert changes == ["appended"] * 20
    # while a few dozen rows far from the reference still are a shift
    frame(45, seed=1, shift=1.5).to_csv(path, index=False)
    change, psi = classify.classify(first, _fp(path, ref, first), stats, 3600)
    assert change == "drift" and psi > classify.PSI_THRESHOLD


def _sql_fp(url):
    return fingerprint.fingerprint({"kind": "sql", "source": url, "query": "select * from ev"})


def test_a_blank_or_null_in_an_integer_column_is_new_data_not_a_schema_change(tmp_path):
    import sqlite3

    # A CSV export whose integer column gets a blank in the rows appended today
    path = tmp_path / "events.csv"
    frame(500).assign(n=range(500)).to_csv(path, index=False)
    first = _fp(path)
    with open(path, "a") as f:
        f.write("0.1,0.2,0.3,0.4,1,\n")
    got = _fp(path, prev=first)
    assert got["schema"] != first["schema"]  # pandas reads n as floats now
    assert classify.classify(first, got, None, 3600)[0] == "appended"
    # the next export has no blank: the same column, not a schema change back
    frame(502).assign(n=range(502)).to_csv(path, index=False)
    assert classify.classify(got, _fp(path, prev=got), None, 3600)[0] != "schema"

    # A NULL in a database's INTEGER column
    db = tmp_path / "w.db"
    c = sqlite3.connect(db)
    c.execute("create table ev(a real, n integer)")
    c.executemany("insert into ev values (?, ?)", [(i * 0.1, i) for i in range(200)])
    c.commit()
    url = f"sqlite:///{db}"
    before = _sql_fp(url)
    c.execute("insert into ev values (1.0, NULL)")
    c.commit()
    after = _sql_fp(url)
    assert classify.classify(before, after, None, 3600)[0] == "appended"
    # while a column renamed is still one
    c.execute("alter table ev rename column n to nn")
    c.commit()
    assert classify.classify(after, _sql_fp(url), None, 3600)[0] == "schema"
    c.close()

    # and so is an integer column that now holds fractions, or a Parquet column retyped
    frame(500).assign(n=range(500)).to_csv(path, index=False)
    first = _fp(path)
    with open(path, "a") as f:
        f.write("0.1,0.2,0.3,0.4,1,2.5\n0.1,0.2,0.3,0.4,1,\n")
    assert classify.classify(first, _fp(path, prev=first), None, 3600)[0] == "schema"
    pq = tmp_path / "d.parquet"
    frame(500).to_parquet(pq)
    first = _fp(pq)
    frame(500).astype({"y": "float64"}).to_parquet(pq)
    assert classify.classify(first, _fp(pq, prev=first), None, 3600)[0] == "schema"


def test_a_csv_read_while_its_writer_is_appending_counts_its_complete_rows(tmp_path):
    path = tmp_path / "events.csv"
    df = frame(1000, seed=40)
    df.to_csv(path, index=False)
    first = _fp(path)
    full = pd.concat([df, frame(500, seed=41)]).to_csv(index=False)
    old = df.to_csv(index=False)
    # When a check reads it with the writer stopped in the middle of a line
    path.write_text(full[: len(old) + (len(full) - len(old)) // 2 + 7])
    cut = _fp(path, prev=first)
    # Then it sees the rows written whole, appended (not a schema change of a half row)
    assert 1000 < cut["rows"] < 1500 and cut["schema"] == first["schema"]
    assert classify.classify(first, cut, None, 3600)[0] == "appended"
    # and once the write is done, the rest are appended too
    path.write_text(full)
    done = _fp(path, prev=cut)
    assert done["rows"] == 1500
    assert classify.classify(cut, done, None, 3600)[0] == "appended"
    # A CSV written without a newline at its end keeps its last row
    path.write_text("a,b\n1,2\n3,4")
    assert _fp(path)["rows"] == 2


def test_a_check_of_a_csv_appended_with_a_blank_integer_sets_off_its_actions(agent, tmp_path):
    path = tmp_path / "events.csv"
    frame(500).assign(n=range(500)).to_csv(path, index=False)
    w = watch(agent, model="churn", source=str(path), on=["change"])
    with open(path, "a") as f:
        f.write("0.1,0.2,0.3,0.4,1,\n")
    out = check(agent, w["id"])
    assert out["change"] == "appended", out
    assert [t["action"] for t in out["triggers"]] == ["alert"]


def test_a_new_partition_without_a_column_is_a_schema_change(tmp_path):
    frame(300, seed=10).to_parquet(tmp_path / "part-001.parquet")
    first = _fp(tmp_path / "part-*.parquet")
    frame(300, seed=11).to_parquet(tmp_path / "part-002.parquet")
    grown = _fp(tmp_path / "part-*.parquet", prev=first)
    assert classify.classify(first, grown, None, 3600)[0] == "appended"
    # When the next partition lacks column d (the rows before it have every column)
    frame(300, seed=13).drop(columns="d").to_parquet(tmp_path / "part-003.parquet")
    partial = _fp(tmp_path / "part-*.parquet", prev=grown)
    # Then it is a schema change, not rows appended with d blank
    assert classify.classify(grown, partial, None, 3600)[0] == "schema"
    # and so is an integer column missing from it (read as floats with blanks)
    (tmp_path / "part-003.parquet").unlink()
    frame(300, seed=13).drop(columns="y").to_parquet(tmp_path / "part-003.parquet")
    assert classify.classify(grown, _fp(tmp_path / "part-*.parquet", prev=grown), None, 3600)[
        0
    ] == ("schema")
