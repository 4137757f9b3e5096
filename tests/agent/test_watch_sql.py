"""A SQL source on the local PostgreSQL: appended rows are detected, and the URL's password
is neither stored in clear nor logged."""

from __future__ import annotations

import psycopg
import pytest
from backends import PASSWORD
from sqlalchemy.engine import make_url
from watch_support import check, watch


@pytest.fixture
def events_db(postgres):
    url = postgres.database()
    u = make_url(url)
    conn = psycopg.connect(
        host=u.host, user=u.username, password=u.password, dbname=u.database, autocommit=True
    )
    conn.execute(
        "CREATE TABLE watched_events (id serial PRIMARY KEY, amount double precision, "
        "kind text, updated_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "INSERT INTO watched_events (amount, kind, updated_at) SELECT g * 1.0, "
        "CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, now() - interval '1 day' "
        "+ g * interval '1 second' FROM generate_series(1, 200) g"
    )
    yield url, conn
    conn.close()


def test_sql_source_detects_appended_rows(agent, events_db):
    url, conn = events_db
    query = "SELECT id, amount, kind, updated_at FROM watched_events"
    w = watch(agent, model="churn", source=url, query=query, every="1d")
    assert w["last"]["change"] == "first" and w["last"]["rows"] == 200
    assert w["source"] == url.replace(PASSWORD, "***")
    assert check(agent, w["id"])["change"] == "unchanged"
    # When rows arrive
    conn.execute(
        "INSERT INTO watched_events (amount, kind, updated_at) SELECT g * 1.0, 'a', "
        "'2999-02-01'::timestamptz FROM generate_series(1, 50) g"
    )
    out = check(agent, w["id"])
    # Then the change is "appended", with the new count and max(updated_at) (set in the future
    # here, so that the test does not depend on the clock)
    assert out["change"] == "appended" and out["triggers"][0]["action"] == "alert"
    _status, detail = agent.request("GET", f"/api/v1/watches/{w['id']}")
    last = detail["snapshots"][0]
    assert last["rows"] == 250 and last["max_updated"].startswith("2999-02-01")
    # A column added to the query's result is a schema change
    conn.execute("ALTER TABLE watched_events ADD COLUMN region text")
    w2 = watch(agent, model="churn", source=url, query="SELECT * FROM watched_events")
    conn.execute("ALTER TABLE watched_events DROP COLUMN region")
    assert check(agent, w2["id"])["change"] == "schema"
    # The password is in no row, no API answer and no log line
    rows = agent.sql("SELECT source, secret FROM data_sources")
    assert rows and all(PASSWORD not in (r["source"] + (r["secret"] or "")) for r in rows)
    assert PASSWORD not in str(agent.request("GET", "/api/v1/watches")[1])
    assert PASSWORD not in agent.read_log()


def test_a_failing_query_is_a_clear_error_without_the_password(agent, events_db):
    url, _ = events_db
    status, body = agent.request(
        "POST", "/api/v1/watches", {"model": "churn", "source": url, "query": "SELECT nope"}
    )
    assert status == 201, body
    assert "failed" in body["last"]["error"] and PASSWORD not in body["last"]["error"]


def test_a_query_without_updated_at_is_overdue_once_its_result_stays_the_same_too_long(
    agent, tmp_path
):
    import sqlite3
    from datetime import UTC, datetime, timedelta

    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE features (id INTEGER PRIMARY KEY, amount REAL)")
        conn.executemany("INSERT INTO features (amount) VALUES (?)", [(i,) for i in range(50)])
    query = "SELECT id, amount FROM features"
    w = watch(
        agent, model="churn", source=f"sqlite:///{db}", query=query, on=["overdue"], overdue="26h"
    )
    assert check(agent, w["id"])["change"] == "unchanged"
    # The same result for 30 hours (the watch's snapshots taken then, as on a real schedule)
    then = (datetime.now(UTC) - timedelta(hours=30)).isoformat(timespec="microseconds")
    agent.sql("UPDATE source_snapshots SET time = :t WHERE source_id = :s", t=then, s=w["id"])
    out = check(agent, w["id"])
    assert out["change"] == "overdue" and [t["action"] for t in out["triggers"]] == ["alert"]
    assert check(agent, w["id"])["triggers"] == []  # still overdue: alerted once
    # New rows: the source is on time again
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO features (amount) VALUES (99)")
    assert check(agent, w["id"])["change"] == "appended"
    assert check(agent, w["id"])["change"] == "unchanged"
