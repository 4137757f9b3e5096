"""Delivery is durable and exactly-once in effect: central down, local killed, replays."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import pickle
import socket
import time
import uuid

import pytest
from support import bundle_bytes, manifest_for, push_model, until
from test_pipeline_central import FIRST_SECRET, SECOND_SECRET, start_pair

from handoff_agent import audit, signing
from handoff_agent.bundle import write_tar
from handoff_agent.policy import Policy

FAST = ["--HandoffAgent.checks=[]"]  # no checks: the verdict comes with the push


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outbox_states(local) -> dict:
    rows = local.request("GET", "/api/v1/outbox")[1]["outbox"]
    return {r["state"]: r["n"] for r in rows}


def push_many(local, n: int, start: int = 0) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    X = pd.DataFrame({"a": np.arange(20.0)})
    y = np.arange(20) % 2
    for i in range(start, start + n):
        model = DummyClassifier().fit(X, y)
        model.tag_ = i  # new bytes, new version
        push_model(local, model, "many", X=X, y=y, format="skops")  # nothing to convert


def test_central_down_then_back_kill_local_mid_delivery(tmp_path):
    port = free_port()
    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST, central_port=port)
    try:
        central.stop()  # IT's intake is down
        push_many(local, 50)
        until(lambda: outbox_states(local).get("pending") == 50, timeout=120)
        assert "delivered" not in outbox_states(local)

        central.start()  # back on the same port
        # Kill -9 the local agent while it delivers, then restart it.
        until(lambda: outbox_states(local).get("delivered", 0) >= 5, timeout=60, every=0.05)
        local.kill9()
        local.start()
        until(lambda: outbox_states(local) == {"delivered": 50}, timeout=120)

        versions = central.request("GET", "/api/v1/models/many/versions?limit=1000")[1]
        assert sorted(v["number"] for v in versions["versions"]) == list(range(1, 51))
        digests = [v["digest"] for v in versions["versions"]]
        assert len(set(digests)) == 50  # each applied once
        fsck = central.cli("fsck")  # on the central's own blob store: files, or its bucket
        assert fsck.returncode == 0 and "MISSING" not in fsck.stdout, fsck.stdout
        assert local.cli("audit", "verify").returncode == 0
    finally:
        local.stop()
        central.stop()


def chain(actor: str = "zoe", n: int = 1) -> list[dict]:
    """A source's audit log of ``n`` entries from genesis, as a local agent sends it."""
    rows, prev = [], audit.GENESIS
    for seq in range(1, n + 1):
        row = {"seq": seq, "time": "t", "actor": actor, "action": "a", "subject": "s"}
        row.update(payload="{}", prev_hash=prev)
        row["hash"] = prev = audit.row_hash(prev, row)
        rows.append(row)
    return rows


def envelope(
    name: str,
    model: bytes = b"x",
    serialization: str = "skops",
    rows: list | None = None,
    gate: dict | None = None,
    pushed_by: str = "zoe",
    verdict: dict | None = {"verdict": "pass", "reasons": []},  # noqa: B006 (never mutated)
) -> bytes:
    member = "model.skops" if serialization == "skops" else "model.pkl"
    members = {member: model}
    m = manifest_for(name, members, serialization=serialization)
    if gate is not None:
        m["gate"] = gate
    import tarfile

    from support import make_tar

    bundle = make_tar(
        [
            ("manifest.json", json.dumps(m).encode(), tarfile.REGTYPE),
            (member, model, tarfile.REGTYPE),
        ]
    )
    env = {
        "format": 1,
        "source": "test-source",
        "local": {
            "model": name,
            "number": 1,
            "pushed_by": pushed_by,
            **({"verdict": verdict} if verdict is not None else {}),
        },
        "bundle_digest": hashlib.sha256(bundle).hexdigest(),
        "audit": chain() if rows is None else rows,
    }
    out = io.BytesIO()
    write_tar(out, [("envelope.json", json.dumps(env).encode()), ("bundle.tar", bundle)])
    return out.getvalue()


def deliver(
    central,
    body: bytes,
    secret=FIRST_SECRET,
    delivery_id=None,
    stamp=None,
    tamper=False,
    full=False,
):
    """(status, body) of a signed delivery; ``full``: (status, headers, body)."""
    delivery_id = delivery_id or uuid.uuid4().hex
    stamp = str(stamp if stamp is not None else int(time.time()))
    signature = signing.sign(secret, delivery_id, stamp, [body])
    if tamper:
        body = body[:-600] + b"\x01" + body[-599:]
    headers = {
        "Content-Type": "application/x-tar",
        "Content-Length": str(len(body)),
        "X-Handoff-Delivery": delivery_id,
        "X-Handoff-Timestamp": stamp,
        "X-Handoff-Signature": signature,
        signing.KEY_HEADER: signing.key_id(secret),
    }
    conn = http.client.HTTPConnection(central.host, central.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/v1/intake")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        with contextlib.suppress(OSError):  # refused on its headers (key, hourly limit)
            conn.send(body)
        resp = conn.getresponse()
        status, out, raw = resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
    answer = json.loads(raw) if raw else {}
    return (status, out, answer) if full else (status, answer)


def central_stage_of(central, name: str):
    """(stage, its comment) of version 1 once it has left received, else None."""
    version = central.request("GET", f"/api/v1/models/{name}/versions/1")[1]
    stages = version.get("stages") or []
    last = stages[-1] if stages else {}
    return None if last.get("stage") in (None, "received") else (last["stage"], last["comment"])


def count(central, name: str) -> int:
    status, body = central.request("GET", f"/api/v1/models/{name}/versions")
    return len(body["versions"]) if status == 200 else 0


def test_intake_rejects_tampering_wrong_secrets_replays_and_duplicates(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST)
    try:
        body = envelope("signed")
        status, err = deliver(central, body, tamper=True)
        assert (status, err["error"]["code"]) == (401, "bad_signature")
        status, err = deliver(central, body, secret="not-the-secret")
        assert (status, err["error"]["code"]) == (401, "bad_signature")
        # Past the 5 minutes either way; a minute more, so a loaded machine's seconds between
        # the stamp and central's check (and int()'s truncation) never bring it inside
        status, err = deliver(central, body, stamp=int(time.time()) - 360)
        assert (status, err["error"]["code"]) == (401, "stale_delivery")
        status, err = deliver(central, body, stamp=int(time.time()) + 360)
        assert (status, err["error"]["code"]) == (401, "stale_delivery")
        assert count(central, "signed") == 0

        same_id = uuid.uuid4().hex
        status, first = deliver(central, body, secret=SECOND_SECRET, delivery_id=same_id)
        assert status == 201 and first["version"] == 1  # the rotation secret works too
        status, again = deliver(central, body, delivery_id=same_id)
        assert status == 200 and again["duplicate"] is True
        assert count(central, "signed") == 1
        # The same bytes again in another delivery, claimed by someone else: the version's
        # origin (its sender and who pushed it) is the first delivery's, not rewritten
        origin = central.request("GET", "/api/v1/models/signed/versions/1")[1]["origin"]
        status, _ = deliver(central, envelope("signed", pushed_by="mallory"))
        assert status in (200, 201) and count(central, "signed") == 1
        after = central.request("GET", "/api/v1/models/signed/versions/1")[1]["origin"]
        assert after == origin and after["claimed_by"] == "zoe", after
        # Central trusting the sender's checks (revalidate = false) takes no verdict as none:
        # rejected, saying so (it counted as a pass)
        import skops.io as sio
        from sklearn.linear_model import LogisticRegression

        model = sio.dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1]))
        status, out = deliver(central, envelope("unjudged", model=model, verdict=None))
        assert status == 201, out
        stage = until(lambda: central_stage_of(central, "unjudged"), 60, "its stage")
        assert stage == ("rejected", "the delivery had no verdict"), stage
        # A name the API would refuse is refused at intake too: nothing is created
        for name in ("../etc", "a/b", "-x", "x" * 129):
            status, err = deliver(central, envelope(name))
            assert (status, err["error"]["code"]) == (400, "invalid_name"), (name, err)
        models = central.request("GET", "/api/v1/models")[1]["models"]
        assert [m["name"] for m in models] == ["signed", "unjudged"], models
        assert central.healthy()
    finally:
        local.stop()
        central.stop()


def test_deliveries_sent_at_once_cannot_pass_the_hourly_limit_together(tmp_path):
    """Eight deliveries of one sender at the same moment, two allowed an hour: each was
    counted before any was recorded, and all got in. Now two do; the rest wait (429)."""
    from concurrent.futures import ThreadPoolExecutor

    local, central = start_pair(
        tmp_path, revalidate=False, local_args=FAST, intake="max_versions_per_hour = 2"
    )
    try:
        bodies = [envelope("burst", model=f"model {i}".encode()) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(s for s, _ in pool.map(lambda b: deliver(central, b), bodies))
        assert statuses == [201] * 2 + [429] * 6, statuses
        assert count(central, "burst") == 2
    finally:
        local.stop()
        central.stop()


def _headers_only(central, key: str, size: int = 500 << 20) -> tuple[int, dict]:
    """What central answers a delivery's headers (a 500 MiB body announced, none sent)."""

    delivery_id, stamp = uuid.uuid4().hex, str(int(time.time()))
    conn = http.client.HTTPConnection(central.host, central.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/intake")
        for k, v in {
            "Content-Type": "application/x-tar",
            "Content-Length": str(size),
            "X-Handoff-Delivery": delivery_id,
            "X-Handoff-Timestamp": stamp,
            "X-Handoff-Signature": "sha256=" + "0" * 64,
            signing.KEY_HEADER: key,
        }.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_an_unknown_key_or_a_sender_over_its_limit_is_refused_before_the_body(tmp_path):
    """The delivery's key names its secret before its body: central refuses a key it does
    not know, or a sender over its hourly limit, without reading (or storing) a byte; a
    500 MiB body was read and spooled before the 401 or 429."""
    local, central = start_pair(
        tmp_path, revalidate=False, local_args=FAST, intake="max_versions_per_hour = 1"
    )
    try:
        status, body = _headers_only(central, signing.key_id("no such secret"))
        assert (status, body["error"]["code"]) == (401, "bad_signature"), body
        push_many(local, 1)  # alice's one version this hour, through her agent (its key)
        until(lambda: outbox_states(local) == {"delivered": 1}, timeout=60, what="delivered")
        status, body = _headers_only(central, signing.key_id(FIRST_SECRET))
        assert (status, body["error"]["code"]) == (429, "rate_limited"), body
        assert "Sender 'alice' delivered 1 versions in the last hour" in body["error"]["message"]
    finally:
        local.stop()
        central.stop()


def test_a_sender_over_its_hourly_limit_waits_in_its_outbox_and_loses_nothing(tmp_path):
    """One analyst's retraining loop gone wrong cannot flood central: past the policy's
    versions an hour per sender, a delivery is a 429 with Retry-After, and the local agent
    keeps it in its outbox (retrying) until central takes it."""
    port = free_port()
    local, central = start_pair(
        tmp_path,
        revalidate=False,
        local_args=FAST,
        central_port=port,
        intake="max_versions_per_hour = 2",
    )
    try:
        push_many(local, 3)

        def waiting():
            rows = local.request("GET", "/api/v1/outbox")[1]["outbox"]
            return next((r for r in rows if r["state"] == "pending" and r["last_error"]), None)

        until(waiting, timeout=60, what="the third delivery refused")
        assert outbox_states(local) == {"delivered": 2, "pending": 1}
        waiting = waiting()
        assert "takes at most 2 versions an hour from one sender" in waiting["last_error"]
        assert "central's admin sets [intake] max_versions_per_hour" in waiting["last_error"]
        assert count(central, "many") == 2
        # Straight to the intake, as alice: the refusal says when to come back
        status, headers, err = deliver(central, envelope("more"), full=True)
        assert (status, err["error"]["code"]) == (429, "rate_limited"), err
        assert 3000 < int(headers["Retry-After"]) <= 3600, headers
        assert "Sender 'alice' delivered 2 versions in the last hour" in err["error"]["message"]
        # The local agent waits as long as central asked, not the backoff's few minutes
        rows = local.request("GET", "/api/v1/outbox/deliveries?state=pending")[1]["deliveries"]
        assert rows[0]["next_try"] - time.time() > 3000, rows
        # When the admin lifts the limit, the waiting delivery goes in when the analyst
        # forwards it again (or when its hour is up): nothing was lost
        policy = tmp_path / "policy.toml"
        policy.write_text(policy.read_text().replace("max_versions_per_hour = 2", ""))
        central.stop()
        central.start()
        status, body = local.request(
            "POST", "/api/v1/models/many/versions/3/forward", {"to": "central"}
        )
        assert (status, body["queued"]) == (202, False), body  # queued already: tried now
        until(lambda: outbox_states(local) == {"delivered": 3}, timeout=60)
        assert count(central, "many") == 3
        # and who forced it is on the row and in the audit, as for a dead one sent again
        rows = local.request("GET", "/api/v1/outbox/deliveries?state=delivered")[1]["deliveries"]
        me = local.request("GET", "/api/v1/whoami")[1]["user"]
        assert [r["forced_by"] for r in rows if r["number"] == 3] == [me], rows
        audit = "select payload from audit where action = 'forward.queue' and subject = 'many:3'"
        payloads = [json.loads(r["payload"]) for r in local.sql(audit)]
        assert payloads[-1] == {
            "destination": "central",
            "forced": True,
            "again": False,
            "now": True,
        }
    finally:
        local.stop()
        central.stop()


def test_a_sender_over_its_hourly_bytes_waits_and_one_too_big_for_an_hour_is_refused(tmp_path):
    """``max_bytes_per_hour``: what fits goes in; past it a delivery waits (429 with
    Retry-After, for when enough of the hour's bytes have left it); one delivery larger than
    the hour's bytes would never fit, and is a 413 saying so."""
    local, central = start_pair(
        tmp_path, revalidate=False, local_args=FAST, intake="max_bytes_per_hour = 3_000_000"
    )
    try:
        for name in ("big1", "big2"):
            status, out = deliver(central, envelope(name, model=os.urandom(1_200_000)))
            assert status == 201, out
        status, headers, err = deliver(
            central, envelope("big3", model=os.urandom(1_200_000)), full=True
        )
        assert (status, err["error"]["code"]) == (429, "rate_limited"), err
        assert 3000 < int(headers["Retry-After"]) <= 3600, headers
        message = err["error"]["message"]
        assert message.startswith("Sender 'alice' delivered 2.3 MiB in the last hour"), message
        assert message.endswith("takes at most 2.9 MiB an hour from one sender."), message
        status, err = deliver(central, envelope("huge", model=os.urandom(3_100_000)))
        assert (status, err["error"]["code"]) == (413, "too_large"), err
        assert err["error"]["message"].startswith("This delivery is 3.0 MiB; central takes"), err
        assert count(central, "big3") == count(central, "huge") == 0
    finally:
        local.stop()
        central.stop()


@pytest.mark.parametrize("key", ["max_versions_per_hour", "max_bytes_per_hour"])
@pytest.mark.parametrize("value", ['"lots"', "-1", "2.5", "true"])
def test_a_bad_hourly_limit_stops_central_with_the_key_named(tmp_path, key, value):
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[intake]\n{key} = {value}\n")
    with pytest.raises(ValueError, match=f"{key} must be a whole number >= 0"):
        Policy.load(policy)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_is_refused_at_central_and_never_loaded(tmp_path):
    local, central = start_pair(tmp_path, revalidate=True, local_args=FAST)
    marker = tmp_path / "pwned"
    try:
        payload = pickle.dumps(_Marker(str(marker)))
        status, err = deliver(central, envelope("evil", payload, "pickle"))
        assert (status, err["error"]["code"]) == (415, "pickle_refused")
        time.sleep(1)
        assert not marker.exists()
        assert count(central, "evil") == 0
    finally:
        local.stop()
        central.stop()


def test_forced_forward_of_a_failing_version_is_recorded(tmp_path):
    loads_only = ["--HandoffAgent.checks=['loads']"]
    local, central = start_pair(tmp_path, revalidate=False, local_args=loads_only)
    try:
        status, _ = local.push_bytes("junk", bundle_bytes("junk"))  # does not even unpickle
        assert status == 201
        until(
            lambda: local.request("GET", "/api/v1/models/junk/versions/1")[1]["status"] == "failed",
            timeout=90,
        )
        assert outbox_states(local) == {}  # a failed verdict forwards nothing by itself
        status, body = local.request(
            "POST", "/api/v1/models/junk/versions/1/forward", {"to": "central"}
        )
        assert status == 202 and body["queued"] is True
        # The bundle is not a real pickle, so converting it for central fails: dead-letter
        until(lambda: outbox_states(local).get("dead") == 1, timeout=90)
        version = local.request("GET", "/api/v1/models/junk/versions/1")[1]
        assert "Cannot convert the model to skops" in version["forwards"][0]["last_error"]
        status, body = local.request(
            "POST", "/api/v1/models/junk/versions/1/forward", {"to": "nowhere"}
        )
        assert (status, body["error"]["code"]) == (400, "unknown_destination")
    finally:
        local.stop()
        central.stop()


def test_a_rewritten_local_history_is_detected_at_central(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST)
    try:
        assert deliver(central, envelope("first", b"1"))[0] == 201
        # Same source, same audit position, another hash: its history was rewritten.
        status, err = deliver(central, envelope("second", b"2", rows=chain("mallory")))
        assert (status, err["error"]["code"]) == (409, "audit_rewritten")
        assert count(central, "second") == 0
    finally:
        local.stop()
        central.stop()


def test_bodies_left_by_older_deliveries_go_when_the_agent_starts(tmp_path):
    """A home from before delivered bodies were removed (or an agent stopped between a
    delivery and the removal): its envelopes and the bundles converted for them go at the
    next start, and the disk keeps only the versions."""
    from s3_support import agent_blobs

    from handoff_agent.forwarding.central import ENVELOPE

    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST)
    try:
        push_many(local, 1)
        until(lambda: outbox_states(local) == {"delivered": 1}, timeout=60)
        # (the delivery's own body goes just after it is marked delivered: let it go first,
        # so the envelope put in its place below is the only one left)
        until(lambda: local.sql("select body_digest from outbox") == [{"body_digest": None}])
        local.stop()
        # What such a home holds: an envelope, and inside it a converted bundle
        blobs = agent_blobs(local)
        converted = blobs.put_bytes(b"a bundle converted to skops")
        out = io.BytesIO()
        head = json.dumps({"bundle_digest": converted}).encode()
        write_tar(out, [(ENVELOPE, head), ("bundle.tar", b"a bundle converted to skops")])
        envelope = blobs.put_bytes(out.getvalue())
        local.sql("update outbox set body_digest = :d", d=envelope)
        before = local.cli("fsck").stdout
        assert "delivery envelope" in before and "converted bundle" in before, before
        local.start()
        until(lambda: not blobs.exists(envelope) and not blobs.exists(converted), timeout=30)
        # (the row forgets its body just after the bytes go)
        until(lambda: local.sql("select body_digest from outbox") == [{"body_digest": None}])
        after = local.cli("fsck").stdout
        assert "note:" not in after and "fsck: OK" in after, after
        assert local.sql("select count(*) as n from versions")[0]["n"] == 1  # kept
    finally:
        local.stop()
        central.stop()


def test_a_dead_delivery_sent_again_after_later_ones_arrives(tmp_path):
    """A rotation mistake kills a delivery (central does not know the secret); once it is put
    right, later versions go through, and the dead one, sent again, arrives: its body, built
    before them, carried audit rows behind what central anchored since (409
    audit_backwards, dead for good); it is built anew once."""
    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST)
    right, wrong = (
        f"--CentralDestination.secret={FIRST_SECRET}",
        "--CentralDestination.secret=wrong-secret-Zq8Lm3Vx7Rt2Yp9Kd4Hs6",
    )

    def restart_with(secret: str) -> None:
        local.stop()
        local.args = [secret if a in (right, wrong) else a for a in local.args]
        local.start()

    try:
        restart_with(wrong)
        push_many(local, 1)  # many:1, signed with a secret central does not know
        until(lambda: outbox_states(local) == {"dead": 1}, timeout=60, what="the dead delivery")
        restart_with(right)
        push_many(local, 1, start=1)  # many:2 goes through: central anchors past many:1's rows
        until(lambda: outbox_states(local) == {"dead": 1, "delivered": 1}, timeout=60)
        status, _ = local.request(
            "POST", "/api/v1/models/many/versions/1/forward", {"to": "central"}
        )
        assert status == 202  # queued again
        until(lambda: outbox_states(local) == {"delivered": 2}, timeout=60, what="many:1 sent")
        assert count(central, "many") == 2
        assert local.cli("fsck").stdout.splitlines()[-1] == "fsck: OK"
    finally:
        local.stop()
        central.stop()
