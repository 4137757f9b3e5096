"""Central anchors each source's audit chain: a delivery must extend it, by seq and hash.
Agents record their own runs: agent.start, agent.stop, and agent.gap after a kill."""

from __future__ import annotations

import json
import tarfile

import pytest
from agent_support import NO_CHECKS, assert_error
from support import make_tar, manifest_for, until
from test_pipeline_central import start_pair
from test_pipeline_delivery import chain, count, deliver, envelope, free_port, outbox_states

from handoff_agent import audit


def central_versions(central, name: str) -> int:
    return count(central, name)


def audit_rows(agent) -> list[dict]:
    return agent.sql("select * from audit order by seq")


def rewrite_from(agent, seq: int, actor: str) -> None:
    """What someone with the local database does to hide an entry: change it, then recompute
    every hash after it, so that the local chain verifies again."""
    agent.sql("update audit set actor = :a where seq = :s", a=actor, s=seq)
    prev = audit.GENESIS
    for row in audit_rows(agent):
        row["prev_hash"], row["hash"] = prev, audit.row_hash(prev, row)
        agent.sql(
            "update audit set prev_hash = :p, hash = :h where seq = :s",
            p=row["prev_hash"],
            h=row["hash"],
            s=row["seq"],
        )
        prev = row["hash"]


def pair(tmp_path):
    """A local agent without checks and a central that takes the local verdict."""
    local, central = start_pair(
        tmp_path, revalidate=False, local_args=[NO_CHECKS], central_port=free_port()
    )
    return local, central


def bundle_bytes(name: str) -> bytes:
    """A skops bundle (central takes nothing else) of a tiny real model, on the trust list."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    members = {"model.skops": sio.dumps(model)}
    manifest = {**manifest_for(name, members), "serialization": "skops"}
    entries = [("manifest.json", json.dumps(manifest).encode(), tarfile.REGTYPE)]
    return make_tar(entries + [(n, b, tarfile.REGTYPE) for n, b in members.items()])


def push_delivered(local, name: str, n: int) -> None:
    assert local.push_bytes(name, bundle_bytes(name))[0] == 201
    until(lambda: outbox_states(local).get("delivered") == n, timeout=60)


@pytest.mark.parametrize("how", ["rewritten_and_rehashed", "edited_after_the_anchor"])
def test_a_rewritten_local_chain_is_refused_at_central(tmp_path, how):
    local, central = pair(tmp_path)
    try:
        push_delivered(local, "first", 1)
        local.stop()
        rows = audit_rows(local)
        create = next(r for r in rows if r["action"] == "version.create")
        if how == "rewritten_and_rehashed":  # the local chain still verifies afterwards
            rewrite_from(local, create["seq"], "mallory")
            assert local.cli("audit", "verify").returncode == 0
        else:  # an entry central has not anchored yet, edited in place
            local.sql("update audit set actor = 'mallory' where seq = :s", s=rows[-1]["seq"])
        local.start()
        local.push_bytes("second", bundle_bytes("second"))
        until(lambda: outbox_states(local).get("dead") == 1, timeout=60)
        forward = local.request("GET", "/api/v1/models/second/versions/1")[1]["forwards"][0]
        assert forward["last_error"].startswith("409 audit_rewritten")
        assert central_versions(central, "second") == 0
    finally:
        local.stop()
        central.stop()


def test_deliveries_from_a_real_agent_extend_the_anchor_across_restarts(tmp_path):
    local, central = pair(tmp_path)
    try:
        push_delivered(local, "one", 1)
        local.kill9()
        local.start()
        push_delivered(local, "two", 2)
        first, second = (
            json.loads(r["remote"]) for r in local.sql("select remote from outbox order by id")
        )
        assert second["audit_anchor"]["seq"] > first["audit_anchor"]["seq"]
        mine = {r["seq"]: r["hash"] for r in audit_rows(local)}
        assert mine[second["audit_anchor"]["seq"]] == second["audit_anchor"]["hash"]
    finally:
        local.stop()
        central.stop()


def test_a_chain_that_does_not_extend_the_anchor_is_refused(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=[NO_CHECKS])
    try:
        full = chain(n=8)
        assert deliver(central, envelope("a", b"1", rows=full[:3]))[0] == 201  # anchors entry 3

        status, body = deliver(central, envelope("b", b"2", rows=full[5:]))  # 4 and 5 missing
        assert (
            "entries 4 to 5 are missing" in assert_error(status, body, 409, "audit_gap")["message"]
        )
        holed = full[2:4] + full[5:]  # from the anchor, but 5 is left out
        status, body = deliver(central, envelope("c", b"3", rows=holed))
        assert_error(status, body, 409, "audit_gap")
        status, body = deliver(central, envelope("d", b"4", rows=full[:2]))  # goes back
        assert_error(status, body, 409, "audit_backwards")
        status, body = deliver(central, envelope("e", b"5", rows=chain("mallory", 5)))
        assert_error(status, body, 409, "audit_rewritten")  # entry 3 is not the anchored one

        assert "unreferenced" not in central.cli("fsck").stdout  # refused: nothing kept
        assert deliver(central, envelope("f", b"6", rows=full[2:]))[0] == 201  # extends: ok
        assert deliver(central, envelope("g", b"7", rows=full[7:]))[0] == 201  # from the head
        assert [count(central, n) for n in "abcdefg"] == [1, 0, 0, 0, 0, 1, 1]
    finally:
        local.stop()
        central.stop()


def test_start_stop_and_gap_records(agent_factory):
    agent = agent_factory(NO_CHECKS)
    agent.push_bytes("lived", bundle_bytes("lived"))
    agent.stop()
    actions = [r["action"] for r in audit_rows(agent)]
    assert actions[0] == "agent.start" and actions[-1] == "agent.stop"

    agent.start()
    agent.kill9()  # no agent.stop
    agent.start()
    agent.stop()
    rows = audit_rows(agent)
    life = [r["action"] for r in rows if r["action"].startswith("agent.")]
    assert life == [
        "agent.start",
        "agent.stop",
        "agent.start",
        "agent.gap",
        "agent.start",
        "agent.stop",
    ]
    gap = next(r for r in rows if r["action"] == "agent.gap")
    assert json.loads(gap["payload"])["started"]["seq"] == life_seq(rows, "agent.start", 1)
    assert agent.cli("audit", "verify").returncode == 0


def life_seq(rows, action: str, index: int) -> int:
    return [r["seq"] for r in rows if r["action"] == action][index]
