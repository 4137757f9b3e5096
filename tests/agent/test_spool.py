"""The local hand-over: a kernel on the agent's machine writes the bundle into the agent's
spool while the agent reads, hashes and checks it, and the agent links it into the store,
with no copy over HTTP.

A spool entry is refused, removed, and nothing stored, when it is anything but a plain file
of the declared bytes: a symlink, a hard link, a fifo, a wrong digest, a truncated file, a
byte changed, a name that is not the agent's pattern, or a kernel that went away or hung
while writing it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from pathlib import Path

import pytest
from agent_support import NO_CHECKS, assert_error, assert_nothing_stored, part_files, wait_until
from s3_support import agent_blobs
from support import bundle_bytes

from handoff_agent.runtime import SPOOL_FOLLOW_HEADER, SPOOL_TYPE
from handoff_agent.writeback import write_all
from jupyter_handoff import bundle_writer as bw
from jupyter_handoff.client import FOLLOW_BODY, AgentClient
from jupyter_handoff.errors import HandoffUsageError

ENTRY = "0123456789abcdef0123456789abcdef.bundle"


@pytest.fixture
def a(agent_factory):
    agent = agent_factory(NO_CHECKS)  # on the defaults only (tests/conftest.py): files
    assert spool_of(agent) is not None, "the files backend offers a spool"
    return agent


def spool_of(agent) -> Path | None:
    found = json.loads(agent.runtime_file.read_text()).get("spool")
    return Path(found) if found else None


def assembled(model: bytes, name: str = "m"):
    """What the notebook's push gives the client: build the bundle into a sink (the spool
    entry) or, given None, in memory with its digest (``bundle_writer.assemble``)."""
    manifest = {"format_version": 1, "name": name, "serialization": "pickle"}
    return lambda sink: bw.assemble({"model.pkl": model}, manifest, sink=sink)


def bytes_of(bundle) -> bytes:
    return b"".join(bytes(p) for p in bundle.parts)


def writes(bundle, after_each_piece=lambda: None):
    """A build that writes a built bundle's bytes into the sink in four pieces."""
    data = bytes_of(bundle)
    step = len(data) // 4 + 1

    def build(sink):
        for at in range(0, len(data), step):
            write_all(sink, data[at : at + step])
            after_each_piece()
        bundle.spooled = True
        return bundle

    return build


def spool_only(client: AgentClient) -> AgentClient:
    """The client, with its HTTP fallback made a failure: a test that means the hand-over
    through the spool cannot pass by sending the bundle over HTTP."""

    def over_http(name, bundle):
        raise AssertionError("the push fell back to HTTP")

    client.push = over_http
    return client


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


def test_a_local_push_is_read_while_the_kernel_writes_it(a):
    # Given a client that knows the agent's spool (as the kernel reads it from the runtime
    # file), and a bundle it writes in four pieces, a moment apart
    client = spool_only(AgentClient(a.url, a.token, spool=str(spool_of(a))))
    model = os.urandom(300_000)
    bundle = assembled(model)(None)
    claimed = []

    def each_piece():
        claimed.append(not list(spool_of(a).iterdir()))
        time.sleep(0.1)

    # When it pushes
    status, body = client.push_written("m", writes(bundle, each_piece))
    # Then the agent took the entry over before the kernel had finished writing it
    assert len(claimed) == 4 and any(claimed[:3]), claimed
    # And the version holds exactly those bytes, and the spool is empty again
    data = bytes_of(bundle)
    assert status == 201 and body["digest"] == hashlib.sha256(data).hexdigest(), body
    assert agent_blobs(a).read_bytes(body["digest"]) == data
    assert_spool_empty(a)
    # And the same model built again, as the notebook does, is the same version
    status, again = client.push_written("m", assembled(model))
    assert status == 200 and again["version"] == body["version"], again
    assert_spool_empty(a)


def test_a_spool_the_kernel_cannot_write_falls_back_to_http(a, tmp_path):
    client = AgentClient(a.url, a.token, spool=str(tmp_path / "not-here"))
    status, body = client.push_written("m", assembled(os.urandom(5000)))
    assert status == 201 and body["version"] == 1, body


def test_a_spool_write_that_fails_midway_goes_over_http(a):
    # Given a disk that fills up while the bundle is written into the spool (/dev/full)
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        build = assembled(os.urandom(100_000))
        # When the notebook pushes
        status, body = client.push_written("m", lambda sink: build(full))
    finally:
        os.close(full)
    # Then the bundle went over HTTP instead, whole, and no entry is left behind
    expected = build(None)
    assert status == 201 and body["digest"] == expected.digest, body
    assert agent_blobs(a).read_bytes(expected.digest) == bytes_of(expected)
    assert_spool_empty(a)


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
    status, body = client.push_written("m", assembled(os.urandom(20_000)))
    assert status == 201
    (spool_of(a) / ENTRY).symlink_to(a.home / "blobs")
    assert hand_over(a, ENTRY, body["digest"])[0] == 422
    versions = a.request("GET", "/api/v1/models/m/versions")[1]["versions"]
    assert [v["number"] for v in versions] == [1]
    agent_blobs(a).verify(body["digest"])


def test_an_acknowledged_spool_push_survives_kill_9(a):
    client = spool_only(AgentClient(a.url, a.token, spool=str(spool_of(a))))
    bundle = assembled(os.urandom(400_000))(None)
    status, body = client.push_written("m", writes(bundle))
    assert status == 201
    data = bytes_of(bundle)
    a.kill9()
    a.start()
    got = a.request("GET", "/api/v1/models/m/versions/1")[1]
    assert got["digest"] == body["digest"]
    assert agent_blobs(a).read_bytes(body["digest"]) == data


class Following:
    """A kernel's followed push, by hand: the request names the entry; the bytes go into it;
    the body closes it. So a test can write other bytes than it declares, stop midway, or
    go away."""

    def __init__(self, agent, client: AgentClient, name: str = "m", entry: str | None = None):
        self.entry = client.open_spool()
        self.conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
        self.conn.putrequest("POST", f"/api/v1/models/{name}/versions")
        headers = {
            "Authorization": f"token {agent.token}",
            "Content-Type": SPOOL_TYPE,
            "Content-Length": str(FOLLOW_BODY),
            SPOOL_FOLLOW_HEADER: entry or self.entry.name,
        }
        for k, v in headers.items():
            self.conn.putheader(k, v)
        self.conn.endheaders()

    def write(self, data: bytes) -> None:
        write_all(self.entry.fd, data)

    def close(self, end: dict) -> tuple[int, dict]:
        self.entry.close()
        self.conn.send(json.dumps(end).encode().ljust(FOLLOW_BODY))
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        self.conn.close()
        self.entry.discard()
        return resp.status, body

    def declared(self, bundle) -> dict:
        manifest = f"sha256:{bundle.manifest_digest}"
        return {"spool": self.entry.name, "size": bundle.size, "manifest": manifest}


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "change", ["member", "header", "padding", "manifest", "end", "appended", "cut"]
)
def test_a_followed_entry_that_is_not_what_the_kernel_wrote_is_refused(a, change):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    assert client.push_written("m", assembled(os.urandom(20_000)))[0] == 201
    # Given a bundle whose entry holds other bytes than the kernel built (one bit flipped in
    # a member, a header, a padding, the manifest or the end; bytes added; bytes missing)
    bundle = assembled(os.urandom(200_001))(None)
    data = bytes_of(bundle)
    manifest_at = data.index(b'"format_version"')
    damaged = {
        "member": lambda: flipped(data, 100_000),
        "header": lambda: flipped(data, 100),  # the model's mode field
        "padding": lambda: flipped(data, 512 + 200_001 + 3),
        "manifest": lambda: flipped(data, manifest_at + 3),
        "end": lambda: flipped(data, len(data) - 10),
        "appended": lambda: data + bytes(512),
        "cut": lambda: data[:-1024],
    }[change]()
    push = Following(a, client)
    push.write(damaged)
    # When the kernel declares the bundle it built
    status, body = push.close(push.declared(bundle))
    # Then the agent refuses it as not the bytes written, keeps what it had, and no entry or
    # upload is left behind
    assert_error(status, body, 422, "digest_mismatch")
    versions = a.request("GET", "/api/v1/models/m/versions")[1]["versions"]
    assert [v["number"] for v in versions] == [1]
    agent_blobs(a).verify(versions[0]["digest"])
    assert_spool_empty(a)


def test_a_kernel_that_goes_away_while_writing_leaves_nothing_behind(a):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    bundle = assembled(os.urandom(300_000))(None)
    push = Following(a, client)
    push.write(bytes_of(bundle)[:100_000])
    # When the kernel's connection closes before it declares the end (it was killed)
    push.conn.close()
    push.entry.close()
    # Then the agent stops following, removes the entry, and stores nothing
    assert_spool_empty(a)
    assert_nothing_stored(a)


def test_a_mistake_found_while_the_model_is_written_ends_the_push_keeping_nothing(a):
    # Given a push whose model goes ahead of its data (as a big model's does), and whose data
    # turns out wrong while the model is being written
    client = spool_only(AgentClient(a.url, a.token, spool=str(spool_of(a))))

    def the_rest():
        raise HandoffUsageError("X has 200 rows but y has 50.", "Pass X and y from one split.")

    def build(sink):
        return bw.assemble({"model.pkl": os.urandom(bw.PARALLEL_HASH * 2)}, the_rest, sink)

    # When it pushes, the mistake is what comes back
    with pytest.raises(HandoffUsageError, match="200 rows"):
        client.push_written("m", build)
    # And the agent lets the entry go and keeps nothing, and takes the next push as usual
    assert_spool_empty(a)
    assert_nothing_stored(a)
    status, body = client.push_written("m", assembled(b"the next model"))
    assert status == 201 and body["version"] == 1, body


def test_an_entry_that_stops_growing_is_refused(agent_factory):
    a = agent_factory(NO_CHECKS, "--HandoffAgent.spool_stall_timeout=0.5")
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    bundle = assembled(os.urandom(300_000))(None)
    push = Following(a, client)
    push.write(bytes_of(bundle)[:100_000])
    # When the kernel hangs with half the bundle written, its connection still open
    # Then the agent gives the entry up on its own, and says why when the kernel wakes
    assert_spool_empty(a)
    push.write(bytes_of(bundle)[100_000:])
    status, body = push.close(push.declared(bundle))
    err = assert_error(status, body, 422, "spool_refused")
    assert "stopped growing for 0.5 s" in err["message"], err
    assert_nothing_stored(a)


@pytest.mark.parametrize("end", ["other entry", "no size", "bad manifest", "not json"])
def test_a_followed_push_with_a_bad_closing_body_is_refused(a, end):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    bundle = assembled(os.urandom(50_000))(None)
    push = Following(a, client)
    push.write(bytes_of(bundle))
    body = push.declared(bundle)
    if end == "other entry":
        body["spool"] = ENTRY
    elif end == "no size":
        del body["size"]
    elif end == "bad manifest":
        body["manifest"] = "sha256:xyz"
    else:
        body = "the end"
    status, answer = push.close(body)
    assert_error(status, answer, 400)
    assert_nothing_stored(a)
    assert_spool_empty(a)


@pytest.mark.parametrize("entry", ["../blobs", "x.bundle", "/etc/passwd"])
def test_a_followed_entry_outside_the_pattern_is_refused(a, entry):
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    bundle = assembled(os.urandom(5000))(None)
    push = Following(a, client, entry=entry)
    push.write(bytes_of(bundle))
    status, body = push.close({**push.declared(bundle), "spool": entry})
    assert_error(status, body, 422, "spool_refused")
    assert_nothing_stored(a)
    assert_spool_empty(a)


def test_a_refusal_before_the_bundle_is_written_comes_back_at_once(a):
    # Given a name the agent refuses when the request starts
    client = AgentClient(a.url, a.token, spool=str(spool_of(a)))
    # When the kernel pushes under it
    with pytest.raises(Exception) as refused:
        client.push_written("no good", assembled(os.urandom(5000)))
    # Then the refusal is the answer (the closing body was never sent), and the entry is gone
    assert getattr(refused.value, "code", None) == "invalid_name", refused.value
    assert_spool_empty(a)


def test_more_kernels_pushing_at_once_than_the_agent_has_io_threads_all_land(a):
    # Given six kernels on the machine (the agent reads spool entries on four I/O threads)
    from concurrent.futures import ThreadPoolExecutor

    models = [os.urandom(200_000) for _ in range(6)]

    def push(model):
        client = spool_only(AgentClient(a.url, a.token, spool=str(spool_of(a))))
        return client.push_written("m", assembled(model))

    # When they push at the same moment
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(push, models))
    # Then every push is a version of its own, holding its own bytes
    assert sorted(body["version"] for _, body in answers) == [1, 2, 3, 4, 5, 6], answers
    for model, (status, body) in zip(models, answers, strict=True):
        assert status == 201 and body["digest"] == assembled(model)(None).digest
    assert_spool_empty(a)


def test_kernels_that_hang_while_writing_hold_up_no_other_push(a):
    # Given five kernels hung halfway through writing their entries (more than the agent's
    # four I/O threads), their connections open
    hung = []
    for _ in range(5):
        push = Following(a, AgentClient(a.url, a.token, spool=str(spool_of(a))))
        push.write(bytes_of(assembled(os.urandom(50_000))(None))[:20_000])
        hung.append(push)
    try:
        # When another kernel pushes through the spool, and a remote one over HTTP, with a
        # timeout well below the 60 s the agent gives a hung entry
        local = spool_only(AgentClient(a.url, a.token, spool=str(spool_of(a)), timeout=20))
        remote = AgentClient(a.url, a.token, timeout=20)
        status, first = local.push_written("m", assembled(os.urandom(30_000)))
        assert status == 201, first
        status, second = remote.push("m", assembled(os.urandom(30_000))(None))
        # Then both land at once
        assert status == 201 and second["version"] == first["version"] + 1, second
    finally:
        for push in hung:
            push.conn.close()
            push.entry.discard()
    assert_spool_empty(a)


def test_an_agent_stops_promptly_while_a_kernel_is_still_writing(a):
    # Given a kernel halfway through writing its entry
    push = Following(a, AgentClient(a.url, a.token, spool=str(spool_of(a))))
    push.write(bytes_of(assembled(os.urandom(50_000))(None))[:20_000])
    time.sleep(0.5)  # the agent is reading it
    # When the agent is asked to stop (SIGTERM)
    a.proc.send_signal(15)
    # Then it exits on its own, without waiting out the 60 s it gives a hung entry
    a.proc.wait(20)
    assert a.proc.returncode == 0, a.read_log()
    push.conn.close()
    push.entry.discard()
