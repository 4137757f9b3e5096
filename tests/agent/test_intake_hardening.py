"""Intake hardening with real agents over HTTP: special tar members, delivery ids that name one
body, the sender as pushed_by, secret strength at start, and blobs verified before forwarding."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
import uuid

import pytest
from agent_support import NO_CHECKS, assert_error, assert_nothing_stored
from s3_support import corrupt_blob
from support import RunningAgent, bundle_bytes, forwarding_args, make_tar, manifest_for, until
from test_pipeline_central import FIRST_SECRET, SECOND_SECRET, start_pair
from test_pipeline_delivery import chain, count, deliver, envelope, outbox_states

from handoff_agent.bundle import write_tar

SENDERS_POLICY = f"""
[intake]
secrets = ["{"u" * 6}-plain-secret-Qw3Er5Ty7Ui9"]
revalidate = false

[intake.senders]
ci = ["{FIRST_SECRET}", "{SECOND_SECRET}"]
"""
PLAIN_SECRET = "u" * 6 + "-plain-secret-Qw3Er5Ty7Ui9"


def sparse_tar(tmp_path, members: dict[str, bytes], sparse: str, fmt: str = "gnu") -> bytes:
    """A real sparse tar from GNU tar: ``sparse`` is written with a 1 MiB hole before its end."""
    src = tmp_path / f"src-{uuid.uuid4().hex}"
    src.mkdir()
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        with open(src / name, "wb") as f:
            if name == sparse:
                f.write(data[:1])
                f.seek(1 << 20)
                f.write(data[1:])
            else:
                f.write(data)
    out = tmp_path / f"{uuid.uuid4().hex}.tar"
    names = list(members)
    subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-cf", str(out), "-C", str(src), *names],
        check=True,
    )
    with tarfile.open(out) as tar:  # the precondition: GNU tar really wrote a sparse member
        assert tar.getmember(sparse).issparse()
    return out.read_bytes()


def expanded(data: bytes) -> bytes:
    """What a sparse member with ``data`` reads back as: the hole is zeros."""
    return data[:1] + b"\0" * ((1 << 20) - 1) + data[1:]


# -- tars -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_a_sparse_bundle_is_refused_at_push(agent_factory, tmp_path, fmt):
    agent = agent_factory(NO_CHECKS)
    model = b"pickle-ish model bytes"
    manifest = manifest_for("sparse", {"model.pkl": expanded(model)})  # digests all match
    data = sparse_tar(
        tmp_path,
        {"manifest.json": json.dumps(manifest).encode(), "model.pkl": model},
        "model.pkl",
        fmt,
    )
    status, body = agent.push_bytes("sparse", data)
    err = assert_error(status, body, 422, "invalid_bundle")
    assert "'model.pkl' is a" in err["message"] and "sparse" in err["message"]
    assert_nothing_stored(agent)


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
        (tarfile.DIRTYPE, "directory"),
    ],
)
def test_device_fifo_and_directory_members_are_refused_at_push(agent_factory, kind, word):
    agent = agent_factory(NO_CHECKS)
    data = bundle_bytes("special", extra=[("data/X.parquet", b"", kind)])
    status, body = agent.push_bytes("special", data)
    err = assert_error(status, body, 422, "invalid_bundle")
    assert word in err["message"]
    assert_nothing_stored(agent)


def signed_post(central, body: bytes, secret: str = FIRST_SECRET):
    return deliver(central, body, secret=secret)


def test_a_sparse_or_device_member_in_a_delivery_is_refused_at_central(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=[NO_CHECKS])
    try:
        good = envelope("sparsed")
        with tarfile.open(fileobj=io.BytesIO(good)) as tar:
            env = tar.extractfile("envelope.json").read()
            bundle = tar.extractfile("bundle.tar").read()
        sparse = sparse_tar(tmp_path, {"envelope.json": env, "bundle.tar": bundle}, "bundle.tar")
        status, body = signed_post(central, sparse)
        err = assert_error(status, body, 422, "invalid_bundle")
        assert "'bundle.tar' is a GNU sparse file" in err["message"]

        device = make_tar(
            [("envelope.json", env, tarfile.REGTYPE), ("bundle.tar", b"", tarfile.CHRTYPE)]
        )
        status, body = signed_post(central, device)
        assert "character device" in assert_error(status, body, 422, "invalid_bundle")["message"]
        assert count(central, "sparsed") == 0
        assert signed_post(central, good)[0] == 201  # the same content, as plain files
    finally:
        local.stop()
        central.stop()


def test_central_re_verifies_the_bundle_digest(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=[NO_CHECKS])
    try:
        good = envelope("rehash")
        with tarfile.open(fileobj=io.BytesIO(good)) as tar:
            env = json.loads(tar.extractfile("envelope.json").read())
            bundle = tar.extractfile("bundle.tar").read()
        env["bundle_digest"] = hashlib.sha256(b"another bundle").hexdigest()
        out = io.BytesIO()
        write_tar(out, [("envelope.json", json.dumps(env).encode()), ("bundle.tar", bundle)])
        status, body = signed_post(central, out.getvalue())
        assert_error(status, body, 422, "digest_mismatch")
        assert count(central, "rehash") == 0
    finally:
        local.stop()
        central.stop()


# -- deliveries -------------------------------------------------------------------------------


def test_a_delivery_id_names_one_body(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False, local_args=[NO_CHECKS])
    try:
        same_id = uuid.uuid4().hex
        first = envelope("once", b"model one")
        assert deliver(central, first, delivery_id=same_id)[0] == 201
        # the same id and body again (a retry after a lost answer): no second effect
        status, again = deliver(central, first, delivery_id=same_id)
        assert status == 200 and again["duplicate"] is True and again["version"] == 1
        # the same id with another bundle, or the same bundle in another envelope: 409
        for other in (envelope("once", b"model two"), envelope("twice", b"model one")):
            status, body = deliver(central, other, delivery_id=same_id)
            err = assert_error(status, body, 409, "delivery_conflict")
            assert same_id in err["message"] and "another body" in err["message"]
        assert count(central, "once") == 1 and count(central, "twice") == 0
    finally:
        local.stop()
        central.stop()


# -- senders ----------------------------------------------------------------------------------


def test_pushed_by_is_the_authenticated_sender_not_the_envelope(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(SENDERS_POLICY)
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt", ["--role", "central", "--policy", str(policy)]
    )
    central.start()
    try:
        # The envelope claims "zoe"; the secret that signs it is ci's (either of its two).
        assert deliver(central, envelope("a", b"1"), secret=FIRST_SECRET)[0] == 201
        rows = chain(n=2)
        assert deliver(central, envelope("b", b"2", rows=rows), secret=SECOND_SECRET)[0] == 201
        rows = chain(n=3)
        assert deliver(central, envelope("c", b"3", rows=rows), secret=PLAIN_SECRET)[0] == 201
        for name, sender in (("a", "ci"), ("b", "ci"), ("c", "intake")):
            v = central.request("GET", f"/api/v1/models/{name}/versions/1")[1]
            assert v["pushed_by"] == sender
            assert v["origin"]["claimed_by"] == "zoe" and v["origin"]["sender"] == sender
    finally:
        central.stop()


# -- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("weak", ["short-secret", "0123456789abcdef0123456789abcde", "a" * 40])
def test_a_weak_intake_secret_stops_central_at_start(tmp_path, weak):
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[intake]\nsecrets = ["{weak}"]\n')
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt", ["--role", "central", "--policy", str(policy)]
    )
    with pytest.raises(RuntimeError, match="agent exited") as info:
        central.start()
    message = str(info.value)
    assert str(policy) in message and "secrets.token_urlsafe(32)" in message
    assert weak not in message  # never the secret itself
    assert "Traceback" not in message


def test_a_weak_destination_secret_stops_the_local_agent_at_start(tmp_path):
    local = RunningAgent(
        tmp_path / "local", tmp_path / "rt", ["--CentralDestination.secret=hunter2"]
    )
    with pytest.raises(RuntimeError, match="agent exited") as info:
        local.start()
    message = str(info.value)
    assert "c.CentralDestination.secret" in message and "secrets.token_urlsafe(32)" in message
    assert "hunter2" not in message


def test_strong_secrets_of_32_hex_or_22_urlsafe_characters_start(tmp_path):
    policy = tmp_path / "policy.toml"
    hexed, urlsafe = "0123456789abcdef" * 2, "Ab3-dE6_gH9jK2mN5pQ8sT"
    policy.write_text(f'[intake]\nsecrets = ["{hexed}"]\n[intake.senders]\nx = "{urlsafe}"\n')
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt", ["--role", "central", "--policy", str(policy)]
    )
    central.start()
    central.stop()


# -- verified forwarding ----------------------------------------------------------------------


def test_a_corrupt_bundle_blob_is_not_forwarded(tmp_path):
    hold = [NO_CHECKS, "--HandoffAgent.forward_on=[]"]  # nothing forwards until asked
    local, central = start_pair(tmp_path, revalidate=False, local_args=hold)
    try:
        data = bundle_bytes("rotten")
        assert local.push_bytes("rotten", data)[0] == 201
        corrupt_blob(local, hashlib.sha256(data).hexdigest())
        path = "/api/v1/models/rotten/versions/1/forward"
        assert local.request("POST", path, {"to": "central"})[0] == 202
        until(lambda: outbox_states(local).get("dead") == 1, timeout=60)
        error = local.request("GET", "/api/v1/models/rotten/versions/1")[1]["forwards"][0]
        assert "corrupt on disk" in error["last_error"]
        assert "jupyter handoff fsck" in error["last_error"]
        assert count(central, "rotten") == 0
    finally:
        local.stop()
        central.stop()


def test_a_stored_delivery_body_corrupted_before_a_retry_is_dead_lettered(agent_factory):
    with socket.socket() as s:  # a port nothing listens on: every attempt fails and retries
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    local = agent_factory(
        NO_CHECKS,
        *forwarding_args(
            None, FIRST_SECRET, url=down, token=None, owner=None, status_interval=None,
            backoff=0.2, backoff_cap=0.5,
        ),
        "--CentralDestination.format=pickle",  # the test bundle is no real pickle to convert
    )  # fmt: skip
    assert local.push_bytes("later", bundle_bytes("later"))[0] == 201

    def body_digest():
        rows = local.sql("select body_digest, attempts from outbox")
        row = rows[0] if rows else None
        return row and row["body_digest"] and row["attempts"] >= 1 and row["body_digest"]

    corrupt_blob(local, until(body_digest, timeout=60))
    until(lambda: outbox_states(local).get("dead") == 1, timeout=60)
    error = local.request("GET", "/api/v1/models/later/versions/1")[1]["forwards"][0]
    assert "corrupt on disk" in error["last_error"] and "fsck" in error["last_error"]


def test_a_central_home_from_before_body_digests_keeps_working(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(SENDERS_POLICY)
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt", ["--role", "central", "--policy", str(policy)]
    )
    central.start()
    old_id, body = uuid.uuid4().hex, envelope("old", b"1")
    assert deliver(central, body, delivery_id=old_id)[0] == 201
    central.stop()
    # as a delivery recorded before body digests were (migration m004): none stored
    central.sql("update deliveries set body_digest = null")

    central.start()
    try:
        status, again = deliver(central, body, delivery_id=old_id)
        assert status == 200 and again["duplicate"] is True  # matched on its id, as before
        new_id, rows = uuid.uuid4().hex, chain(n=2)
        assert deliver(central, envelope("new", b"2", rows=rows), delivery_id=new_id)[0] == 201
        other = envelope("new", b"3", rows=rows)
        assert_error(*deliver(central, other, delivery_id=new_id), 409, "delivery_conflict")
    finally:
        central.stop()


def test_one_secret_for_two_senders_stops_central_at_start(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[intake.senders]\nann = "{FIRST_SECRET}"\nbob = "{FIRST_SECRET}"\n')
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt", ["--role", "central", "--policy", str(policy)]
    )
    with pytest.raises(RuntimeError, match="each secret must name one sender") as info:
        central.start()
    assert FIRST_SECRET not in str(info.value)
