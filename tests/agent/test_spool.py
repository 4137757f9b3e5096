"""The local hand-over: a kernel on the agent's machine writes the bundle into the agent's
spool, and the agent verifies it and links it into the store, with no copy over HTTP.

A spool entry is refused, removed, and nothing stored, when it is anything but a plain file
of the declared bytes: a symlink, a hard link, a fifo, a wrong digest, a truncated file or a
name that is not the agent's pattern.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from agent_support import NO_CHECKS, assert_error, assert_nothing_stored, part_files, wait_until
from s3_support import agent_blobs
from support import bundle_bytes

from jupyter_handoff.client import SPOOL_TYPE, AgentClient

ENTRY = "0123456789abcdef0123456789abcdef.bundle"


@pytest.fixture
def a(agent_factory):
    agent = agent_factory(NO_CHECKS)  # on the defaults only (tests/conftest.py): files
    assert spool_of(agent) is not None, "the files backend offers a spool"
    return agent


def spool_of(agent) -> Path | None:
    found = json.loads(agent.runtime_file.read_text()).get("spool")
    return Path(found) if found else None


class Parts:
    """What AgentClient.push sends: a bundle as parts, with its digest."""

    def __init__(self, data: bytes):
        self.parts, self.size = [data], len(data)
        self.digest = hashlib.sha256(data).hexdigest()


def hand_over(agent, entry: str, digest: str, name: str = "m"):
    return agent.request(
        "POST",
        f"/api/v1/models/{name}/versions",
        body=json.dumps({"spool": entry}).encode(),
        headers={"X-Handoff-Digest": f"sha256:{digest}", "Content-Type": SPOOL_TYPE},
    )


def assert_spool_empty(agent) -> None:
    assert wait_until(lambda: not list(spool_of(agent).iterdir()))
    assert wait_until(lambda: not part_files(agent.home)), part_files(agent.home)


def test_a_local_push_is_adopted_from_the_spool_without_a_copy(a):
    # Given a client that knows the agent's spool (as the kernel reads it from the runtime file)
    data = bundle_bytes("m", model=os.urandom(300_000))
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    # When it pushes
    status, body = client.push("m", Parts(data))
    # Then the version holds exactly those bytes, and the spool is empty again
    assert status == 201 and body["digest"] == hashlib.sha256(data).hexdigest(), body
    assert agent_blobs(a).read_bytes(body["digest"]) == data
    assert_spool_empty(a)
    # And the same bytes again are the same version
    status, again = client.push("m", Parts(data))
    assert status == 200 and again["version"] == body["version"]


def test_a_spool_the_kernel_cannot_write_falls_back_to_http(a, tmp_path):
    data = bundle_bytes("m", model=os.urandom(5000))
    client = AgentClient(a.url, a.token, spool=str(tmp_path / "not-here"))
    status, body = client.push("m", Parts(data))
    assert status == 201 and body["version"] == 1, body


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "directory"])
def test_a_spool_entry_that_is_not_a_plain_file_is_refused(a, tmp_path, kind):
    # Given a file outside the spool that the entry points at
    outside = tmp_path / "secret.tar"
    data = bundle_bytes("m")
    outside.write_bytes(data)
    entry = spool_of(a) / ENTRY
    if kind == "symlink":
        entry.symlink_to(outside)
    elif kind == "hardlink":
        os.link(outside, entry)
    elif kind == "fifo":
        os.mkfifo(entry)
    else:
        entry.mkdir()
    # When the agent is asked to adopt it
    status, body = hand_over(a, ENTRY, hashlib.sha256(data).hexdigest())
    # Then it refuses, says why, stores nothing, and leaves what the entry pointed at alone
    err = assert_error(status, body, 422, "spool_refused")
    assert "spool entry was refused" in err["message"]
    assert_nothing_stored(a)
    assert outside.read_bytes() == data
    assert_spool_empty(a)


@pytest.mark.parametrize("cut", [False, True], ids=["wrong-digest", "truncated"])
def test_a_spool_entry_whose_bytes_do_not_match_is_refused(a, cut):
    data = bundle_bytes("m", model=os.urandom(50_000))
    declared = hashlib.sha256(data).hexdigest()
    (spool_of(a) / ENTRY).write_bytes(data[: len(data) // 2] if cut else data + b"\0" * 512)
    status, body = hand_over(a, ENTRY, declared)
    assert_error(status, body, 422, "digest_mismatch")
    assert_nothing_stored(a)
    assert_spool_empty(a)


@pytest.mark.parametrize("entry", ["../blobs", "x.bundle", "/etc/passwd", ENTRY + "/..", 7])
def test_a_spool_name_outside_the_pattern_is_refused(a, entry):
    status, body = hand_over(a, entry, "0" * 64)
    assert_error(status, body, 422, "spool_refused")
    assert_nothing_stored(a)


def test_a_refused_entry_loses_nothing_already_stored(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    first = bundle_bytes("m", model=os.urandom(20_000))
    status, body = client.push("m", Parts(first))
    assert status == 201
    (spool_of(a) / ENTRY).symlink_to(a.home / "blobs")
    assert hand_over(a, ENTRY, body["digest"])[0] == 422
    versions = a.request("GET", "/api/v1/models/m/versions")[1]["versions"]
    assert [v["number"] for v in versions] == [1]
    agent_blobs(a).verify(body["digest"])


def test_an_acknowledged_spool_push_survives_kill_9(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    data = bundle_bytes("m", model=os.urandom(400_000))
    status, body = client.push("m", Parts(data))
    assert status == 201
    a.kill9()
    a.start()
    got = a.request("GET", "/api/v1/models/m/versions/1")[1]
    assert got["digest"] == body["digest"]
    assert agent_blobs(a).read_bytes(body["digest"]) == data


def written_while_hashed(client: AgentClient, model: bytes):
    """What the notebook does for a local agent: the bundle goes into a fresh spool entry as
    it is hashed, before the agent is asked (``open_spool`` then ``assemble(sink=...)``)."""
    from jupyter_handoff import bundle_writer as bw

    entry = client.open_spool()
    assert entry is not None
    manifest = {"format_version": 1, "name": "m", "serialization": "pickle"}
    return entry, bw.assemble({"model.pkl": model}, manifest, sink=entry.fd)


def test_a_bundle_written_into_the_spool_as_it_is_hashed_is_adopted(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    # Given a bundle written into the spool while it was hashed
    model = os.urandom(300_000)
    entry, b = written_while_hashed(client, model)
    assert b.spooled
    # When it is pushed
    status, body = client.push("m", b, entry)
    # Then the agent adopted exactly those bytes, and the spool is empty
    assert status == 201 and body["digest"] == b.digest, body
    assert agent_blobs(a).read_bytes(b.digest) == b"".join(bytes(p) for p in b.parts)
    assert_spool_empty(a)
    # And the same bytes written again are answered by the version that holds them; the
    # entry written for nothing is removed
    entry, again = written_while_hashed(client, model)
    status, body2 = client.push("m", again, entry)
    assert status == 200 and body2["version"] == body["version"]
    assert_spool_empty(a)


def test_a_bundle_whose_spool_write_failed_goes_over_http(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    entry, b = written_while_hashed(client, os.urandom(100_000))
    b.spooled = False  # as when a write into the entry failed midway (a full disk)
    status, body = client.push("m", b, entry)
    assert status == 201 and body["digest"] == b.digest, body
    assert agent_blobs(a).read_bytes(b.digest) == b"".join(bytes(p) for p in b.parts)
    assert_spool_empty(a)


def test_a_spool_entry_damaged_after_it_was_hashed_is_refused_and_nothing_is_lost(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    first = bundle_bytes("m", model=os.urandom(20_000))
    assert client.push("m", Parts(first))[0] == 201
    # Given a bundle whose spool entry changes after the kernel hashed it (a bit flips)
    entry, b = written_while_hashed(client, os.urandom(200_000))
    with open(entry.path, "r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 1]))
    # When it is pushed
    with pytest.raises(Exception) as refused:
        client.push("m", b, entry)
    # Then the agent refuses it as not the declared bytes, stores nothing new, keeps what it
    # had, and no entry or upload is left behind
    assert getattr(refused.value, "code", None) == "digest_mismatch", refused.value
    versions = a.request("GET", "/api/v1/models/m/versions")[1]["versions"]
    assert [v["number"] for v in versions] == [1]
    agent_blobs(a).verify(versions[0]["digest"])
    assert_spool_empty(a)
