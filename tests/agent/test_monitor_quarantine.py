"""A prediction-log segment the monitor cannot read (a byte flipped in its middle, its tail cut
off) is quarantined once, with one warning line and an audit row, and monitoring goes on with
the other segments instead of failing on it every run."""

from __future__ import annotations

import http.client
import io
import json
import time

import pandas as pd
from s3_support import agent_blobs, corrupt_blob, tamper_blob
from support import RunningAgent, handoff_cli

QUARANTINED = "prediction-log segment"


def _export(central: RunningAgent, query: str = "") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(central.host, central.port, timeout=60)
    try:
        auth = {"Authorization": f"token {central.token}"}
        conn.request("GET", f"/api/v1/models/churn/predictions{query}", headers=auth)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_corrupt_segment_is_quarantined_and_the_monitor_goes_on(tmp_path, backend):
    central = RunningAgent(tmp_path / "central", tmp_path / "rt", ["--role", "central"])
    central.start()
    try:
        # Given three days of predictions, one log segment each (written by `monitor import`)
        first = (time.time() // 86400 - 4) * 86400
        days = [first + i * 86400 for i in range(3)]
        for i, day in enumerate(days):
            log = pd.DataFrame({"a": [0.1 * k for k in range(50)], "prediction": [0, 1] * 25})
            path = tmp_path / f"day{i}.parquet"
            log.assign(time=day + 60.0 * log.index).to_parquet(path)
            p = central.cli("monitor", "import", "churn", str(path))
            assert p.returncode == 0, p.stdout + p.stderr
        good, rotten, torn = (
            r["digest"] for r in central.sql("SELECT digest FROM prediction_segments ORDER BY id")
        )
        # When one segment gets a garbage byte in its middle and another loses its tail
        corrupt_blob(central, rotten)
        data = agent_blobs(central).read_bytes(torn)
        tamper_blob(central, torn, data[: len(data) - 100])

        # then `monitor run --now` evaluates every day: the first from its data
        now = str(days[2] + 86400)
        p = central.cli("monitor", "run", "churn", "--now", now, "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        out = json.loads(p.stdout)
        daily = {w["start"]: w for w in out["windows"] if w["kind"] == "daily"}
        assert sorted(daily) == days, out["windows"]
        assert daily[days[0]]["metrics"]["rows"] == 50
        assert "skipped_segments" not in daily[days[0]]["metrics"]
        # and names what it could not read, in its answer and in each window that lacks it
        skipped = {s["digest"]: s for s in out["skipped"]}
        assert set(skipped) == {rotten, torn}, out["skipped"]
        assert skipped[rotten]["quarantined"] == "its bytes no longer match their digest"
        assert skipped[rotten]["rows"] == 50
        assert daily[days[1]]["metrics"]["rows"] == 0
        assert daily[days[1]]["metrics"]["skipped_segments"] == [rotten]
        assert daily[days[2]]["metrics"]["skipped_segments"] == [torn]
        # with one warning line per segment and an audit row each
        lines = [line for line in central.read_log().splitlines() if QUARANTINED in line]
        assert len(lines) == 2, lines
        assert rotten in lines[0] and "churn" in lines[0] and "fsck" in lines[0]
        audit = central.sql(
            "SELECT subject, payload FROM audit WHERE action = 'monitor.segment_quarantined'"
        )
        assert sorted(json.loads(a["payload"])["digest"] for a in audit) == sorted([rotten, torn])
        assert {a["subject"] for a in audit} == {"churn"}

        # A run asked with someone's own token (HANDOFF_TOKEN) is theirs: an analyst may not
        analyst = central.make_token("ana", "analyst")
        p = handoff_cli({**central.env, "HANDOFF_TOKEN": analyst}, "monitor", "run", "churn")
        assert p.returncode == 1 and p.stdout == "", p.stdout + p.stderr
        assert p.stderr.startswith("ana (analyst) may not "), p.stderr

        # When more predictions arrive and the monitor runs again
        log = pd.DataFrame({"a": [0.5] * 30, "prediction": [1] * 30})
        log.assign(time=days[2] + 86400 + 60.0 * log.index).to_parquet(tmp_path / "day3.parquet")
        p = central.cli("monitor", "import", "churn", str(tmp_path / "day3.parquet"))
        assert p.returncode == 0, p.stdout + p.stderr
        status, body = central.request(
            "POST", "/api/v1/models/churn/monitor/run", {"now": days[2] + 2 * 86400}
        )
        # then the new day is evaluated, the quarantined segments are not read again, and
        # nothing more is logged about them
        assert status == 200, body
        (new,) = [w for w in body["windows"] if w["kind"] == "daily"]
        assert new["start"] == days[2] + 86400 and new["metrics"]["rows"] == 30
        lines = [line for line in central.read_log().splitlines() if QUARANTINED in line]
        assert len(lines) == 2, lines
        # and the stored series keeps every day, the good segment's whole
        status, body = central.request("GET", "/api/v1/models/churn/monitor?window=daily")
        assert status == 200, body
        rows = {w["start"]: w["metrics"]["rows"] for w in body["windows"]}
        assert rows == {days[0]: 50, days[1]: 0, days[2]: 0, days[2] + 86400: 30}, rows
        marks = central.sql("SELECT digest, quarantined FROM prediction_segments ORDER BY id")
        assert [m["quarantined"] is None for m in marks] == [True, False, False, True]
        assert marks[0]["digest"] == good

        # An export of the log refuses to pass for whole, naming what it lacks
        status, raw = _export(central)
        error = json.loads(raw)["error"]
        assert status == 409 and error["code"] == "log_segments_quarantined", error
        assert error["message"].startswith("2 segment(s) of churn's prediction log (100 "), error
        assert "quarantined=skip" in error["hint"], error
        # and serves the rest when asked
        status, raw = _export(central, "?quarantined=skip")
        assert status == 200, raw[:300]
        assert len(pd.read_parquet(io.BytesIO(raw))) == 50 + 30
        status, raw = _export(central, "?quarantined=yes")
        assert status == 400 and b"quarantined=skip" in raw, raw
        # A segment the export is first to find bad is quarantined by it, once
        day3 = agent_blobs(central).read_bytes(marks[3]["digest"])
        corrupt_blob(central, marks[3]["digest"])
        status, raw = _export(central)
        assert status == 409 and b"3 segment(s)" in json.loads(raw)["error"]["message"].encode()
        status, raw = _export(central, "?quarantined=skip")
        assert status == 200 and len(pd.read_parquet(io.BytesIO(raw))) == 50
        lines = [line for line in central.read_log().splitlines() if QUARANTINED in line]
        assert len(lines) == 3 and marks[3]["digest"] in lines[2], lines
        # and fsck, which the hint names, says whose blobs are bad
        p = central.cli("fsck")
        assert f"CORRUPT blob {rotten} (churn prediction log)" in p.stdout, p.stdout

        # When the operator restores one blob from a backup and releases the log
        tamper_blob(central, marks[3]["digest"], day3)
        p = central.cli("monitor", "release", "churn", "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        out = json.loads(p.stdout)
        # then that segment is read again, and the two still bad stay quarantined
        assert out["released"] == [{"digest": marks[3]["digest"], "rows": 30}], out
        assert sorted(s["digest"] for s in out["still_quarantined"]) == sorted([rotten, torn])
        status, raw = _export(central, "?quarantined=skip")
        assert status == 200 and len(pd.read_parquet(io.BytesIO(raw))) == 80
        # and, released again, it says in lines for people that nothing more read whole
        p = central.cli("monitor", "release", "churn")
        assert p.returncode == 0, p.stdout + p.stderr
        lines = p.stdout.splitlines()
        assert lines[0] == (
            "churn: released 0 quarantined log segments (0 predictions); 2 still quarantined:"
        ), lines
        assert sorted(line.split()[0] for line in lines[1:]) == sorted(
            d[:12] for d in (rotten, torn)
        ), lines
        (row,) = central.sql("SELECT payload FROM audit WHERE action = 'monitor.segment_released'")
        assert json.loads(row["payload"])["digest"] == marks[3]["digest"]
        assert "Uncaught exception" not in central.read_log()
    finally:
        central.stop()
