"""The lineage graph: which trigger retrained which version, across agents."""

from __future__ import annotations


class _Central:
    """What lineage reads at a central with its own watch (trigger 2, a rollback) and
    churn:2, delivered by an analyst's agent whose own trigger 2 retrained it."""

    def slots_of(self):
        return []

    def dataset_links(self):
        return []

    def watches_ever(self):
        return [{"id": 1, "source": "/data/c.parquet", "kind": "file", "model": "churn",
                 "on": ["change"], "actions": ["rollback_canary"], "removed": False}]  # fmt: skip

    def triggers_traced(self, source_id):
        return [{"id": 2, "action": "rollback_canary", "change": "modified", "state": "done",
                 "time": "2026-12-07T00:00:00", "snapshot_id": 5,
                 "fingerprint": "ab" * 32}]  # fmt: skip

    def versions_with_manifests(self):
        cause = {"trigger": 2, "change": "appended", "source": "/home/ana/churn.parquet"}
        manifest = {"provenance": {"triggered_by": cause}}
        return [{"model": "churn", "number": 2, "stage": "validated", "status": "passed",
                 "manifest": manifest, "origin": {"source": "agent-ana"}}]  # fmt: skip


def test_central_lineage_names_the_senders_trigger_not_its_own_of_that_number():
    """A retrain an analyst's watch set off is drawn from that agent's trigger, never from
    central's own trigger 2 (a rollback on another file)."""
    from handoff_agent.watch import lineage

    g = lineage.graph(_Central())
    (edge,) = [e for e in g["edges"] if e["kind"] == "retrained"]
    assert edge == {"from": "trigger:agent-ana:2", "to": "version:churn:2", "kind": "retrained"}
    node = next(n for n in g["nodes"] if n["id"] == "trigger:agent-ana:2")
    assert node["agent"] == "agent-ana" and node["source"] == "/home/ana/churn.parquet"
