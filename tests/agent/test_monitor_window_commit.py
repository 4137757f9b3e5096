"""A closed window is never final without the alert it crossed into: the window, its alerts
and their actions commit together, so a run that fails (or is killed) before its alert is
stored leaves the window due, and the next run fires the alert."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from backends import HOST, PASSWORD, ROLE
from sqlalchemy.exc import DBAPIError
from test_monitor import DAY, POLICY, T0, traffic

from handoff_agent.monitor import backfill
from handoff_agent.monitor.service import MonitorService
from handoff_agent.policy import Policy
from handoff_agent.store.blobs import open_blob_store
from handoff_agent.store.metadata import MetadataStore

REFUSE = """
CREATE FUNCTION refuse_row() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'no space left on device' USING ERRCODE = '53100'; END $$
LANGUAGE plpgsql;
CREATE TRIGGER refuse BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse_row();
"""


def test_a_window_whose_alert_could_not_be_stored_fires_at_the_next_run(postgres, tmp_path):
    url = postgres.database()
    registry, blobs = MetadataStore.open(url), open_blob_store("", tmp_path)
    sql = psycopg.connect(
        host=HOST, user=ROLE, password=PASSWORD, dbname=url.rsplit("/", 1)[1], autocommit=True
    )
    try:
        # Given a reference, and a day of traffic that drifted from it
        rng = np.random.default_rng(11)
        backfill.import_reference(registry, blobs, "churn", traffic(rng, 2000), "test")
        day = traffic(rng, 2000, shift=True).drop(columns=["label"])
        day["time"] = T0 + np.sort(rng.uniform(0, DAY, len(day)))
        backfill.import_log(registry, blobs, "churn", day, "test")
        service = MonitorService(registry, blobs, Policy(monitor=POLICY))
        # When the database refuses the alert's row (its disk filled) as the day is judged
        sql.execute(REFUSE)
        with pytest.raises(DBAPIError):
            service.run("churn", T0 + DAY)
        # then neither the window nor an alert was stored
        assert registry.windows_of("churn", "daily") == []
        assert registry.alerts_of("churn") == []
        # When the database takes rows again, the next run judges the day and fires
        sql.execute("DROP TRIGGER refuse ON alerts")
        result = service.run("churn", T0 + DAY)
        fired = {a["kind"] for a in result["alerts"] if a["state"] == "firing"}
        assert "drift" in fired, result
        assert {a["kind"] for a in registry.alerts_of("churn", "firing")} == fired
        assert len(registry.windows_of("churn", "daily")) == 1
    finally:
        sql.close()
        registry.close()
