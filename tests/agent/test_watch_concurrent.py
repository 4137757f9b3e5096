"""Two checks of one source at once (``POST …/check`` while the schedule checks it, or two
replicas): the change is found, and acted on, once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from watch_support import frame, triggers, watch


def test_two_checks_at_once_alert_once(agent, tmp_path):
    data = tmp_path / "events.csv"
    frame(200_000).to_csv(data, index=False)  # a source that takes a moment to read
    w = watch(agent, model="churn", source=str(data), on=["change"])
    frame(200_100).to_csv(data, index=False)  # 100 rows appended

    def check(_):
        return agent.request("POST", f"/api/v1/watches/{w['id']}/check", {})

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(check, range(2)))

    assert [status for status, _ in answers] == [200, 200], answers
    assert sorted(out["change"] for _, out in answers) == ["appended", "unchanged"], answers
    assert [t["action"] for t in triggers(agent, w["id"])] == ["alert"]
