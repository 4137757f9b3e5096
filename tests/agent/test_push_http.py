"""Pushing over HTTP and reading versions back: numbering, idempotency, listing, paging."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time

import pytest
from agent_support import NO_CHECKS, assert_error, raw_connect, upload_head, wait_until
from blake3 import blake3
from s3_support import agent_blobs
from support import RunningAgent, bundle_bytes, manifest_for


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory, backend):
    """One agent for the module's HTTP tests. It runs no checks: they have their own agent."""
    root = tmp_path_factory.mktemp("pushhttp")
    a = RunningAgent(root / "home", root / "rt", [NO_CHECKS])
    a.start()
    yield a
    a.stop()


def push(agent, name, model: bytes, **manifest_extra):
    m = manifest_for(name, {"model.pkl": model}, **manifest_extra)
    data = bundle_bytes(name, model=model, manifest=m)
    status, body = agent.push_bytes(name, data)
    return status, body, data


def test_first_push_is_201_version_1(shared_agent):
    status, body, data = push(shared_agent, "first", b"model one")
    assert status == 201, body
    assert body["name"] == "first"
    assert body["version"] == 1
    assert body["digest"] == hashlib.sha256(data).hexdigest()
    assert body["created"] is True
    assert body["status"] in ("checking", "pushed", "passed", "failed")
    assert agent_blobs(shared_agent).read_bytes(body["digest"]) == data


def test_same_bytes_again_is_200_same_version(shared_agent):
    s1, b1, data = push(shared_agent, "again", b"same model")
    s2, b2 = shared_agent.push_bytes("again", data)
    assert (s1, s2) == (201, 200), (b1, b2)
    assert b2["version"] == b1["version"] == 1
    assert b2["digest"] == b1["digest"]
    assert b2["created"] is False
    _, listing = shared_agent.request("GET", "/api/v1/models/again/versions")
    assert [v["number"] for v in listing["versions"]] == [1]


def offer(agent, name: str, data: bytes):
    """Headers only, as the kernel's client sends them first: the digest and
    ``Expect: 100-continue``. Returns the agent's first answer and the open connection."""
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=30)
    conn.putrequest("POST", f"/api/v1/models/{name}/versions")
    headers = {
        "Authorization": f"token {agent.token}",
        "Content-Type": "application/x-tar",
        "Content-Length": str(len(data)),
        "X-Handoff-Digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "Expect": "100-continue",
    }
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn.sock.recv(4096), conn


def test_offering_bytes_a_version_holds_is_answered_before_the_body(shared_agent):
    # Given a version pushed once
    s1, b1, data = push(shared_agent, "offered", b"offered model")
    # When a client offers the same bytes by their digest, sending no body
    first, conn = offer(shared_agent, "offered", data)
    conn.close()
    # Then the agent answers at once with that version, as a push of the same bytes again
    head, _, raw = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), first
    body = json.loads(raw)
    assert (s1, body["version"], body["created"]) == (201, b1["version"], False)
    assert body["digest"] == b1["digest"] and body["status"] == b1["status"]


def test_offering_new_bytes_gets_continue_then_the_push(shared_agent):
    data = bundle_bytes("offered-new", model=b"a new model")
    first, conn = offer(shared_agent, "offered-new", data)
    # an interim answer: a status line and no headers (the kernel's client reads just that)
    assert first.startswith(b"HTTP/1.1 100 ") and first.endswith(b"\r\n\r\n"), first
    assert first.count(b"\r\n") == 2, first
    conn.send(data)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 201 and body["version"] == 1, body
    assert body["digest"] == hashlib.sha256(data).hexdigest()


def test_push_without_digest_header_works(shared_agent):
    data = bundle_bytes("nodigest")
    status, body = shared_agent.push_bytes("nodigest", data, digest=False)
    assert status == 201, body
    assert body["digest"] == hashlib.sha256(data).hexdigest()


def test_different_bytes_make_version_2(shared_agent):
    s1, b1, _ = push(shared_agent, "two", b"model A")
    s2, b2, _ = push(shared_agent, "two", b"model B")
    assert (s1, s2) == (201, 201)
    assert (b1["version"], b2["version"]) == (1, 2)
    assert b1["digest"] != b2["digest"]
    # Pushing A again does not create version 3.
    s3, b3, _ = push(shared_agent, "two", b"model A")
    assert (s3, b3["version"]) == (200, 1)


def test_same_bytes_under_two_names_are_two_models(shared_agent):
    model = b"shared model bytes"
    # The manifests differ (they carry the name), so build each for its own name.
    sa, ba, _ = push(shared_agent, "twin-a", model)
    sb, bb, _ = push(shared_agent, "twin-b", model)
    assert (sa, sb) == (201, 201)
    assert ba["version"] == bb["version"] == 1


def test_models_list(shared_agent):
    push(shared_agent, "listed", b"m1")
    push(shared_agent, "listed", b"m2")
    status, body = shared_agent.request("GET", "/api/v1/models")
    assert status == 200
    names = [m["name"] for m in body["models"]]
    assert names == sorted(names)
    listed = next(m for m in body["models"] if m["name"] == "listed")
    assert listed["versions"] == 2
    assert listed["owner"]
    assert listed["latest_status"]


def test_models_list_a_page_at_a_time(shared_agent):
    for name in ("pg-a", "pg-b", "pg-c"):
        push(shared_agent, name, name.encode())
    _, body = shared_agent.request("GET", "/api/v1/models")
    everything = [m["name"] for m in body["models"]]
    assert "next" not in body
    seen, after = [], None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        status, body = shared_agent.request("GET", f"/api/v1/models{query}")
        assert status == 200, body
        assert len(body["models"]) <= 2
        seen += [m["name"] for m in body["models"]]
        after = body.get("next")
        if after is None:
            break
        assert after == seen[-1]
    assert seen == everything
    status, body = shared_agent.request("GET", "/api/v1/models?limit=0")
    assert_error(status, body, 400, "bad_request")


def test_versions_list_newest_first_with_paging(shared_agent):
    for i in range(5):
        status, body, _ = push(shared_agent, "paged", f"model {i}".encode())
        assert (status, body["version"]) == (201, i + 1)

    def numbers(query=""):
        status, body = shared_agent.request("GET", f"/api/v1/models/paged/versions{query}")
        assert status == 200, body
        assert body["name"] == "paged"
        return [v["number"] for v in body["versions"]]

    assert numbers() == [5, 4, 3, 2, 1]
    assert numbers("?limit=2") == [5, 4]
    assert numbers("?limit=2&before=4") == [3, 2]
    assert numbers("?limit=2&before=2") == [1]
    assert numbers("?before=1") == []
    assert numbers("?limit=1000") == [5, 4, 3, 2, 1]
    _, body = shared_agent.request("GET", "/api/v1/models/paged/versions?limit=1")
    v = body["versions"][0]
    assert {"number", "digest", "size", "pushed_by", "pushed_at", "status"} <= set(v)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "before=0", "before=x"]
)
def test_bad_paging_is_400(shared_agent, query):
    push(shared_agent, "badpaging", b"m")
    status, body = shared_agent.request("GET", f"/api/v1/models/badpaging/versions?{query}")
    assert_error(status, body, 400, "bad_request")


@pytest.fixture
def checking_agent(agent_factory):
    return agent_factory("--HandoffAgent.checks=['loads']")


def test_get_one_version_with_manifest_lineage_and_checks(checking_agent):
    a = checking_agent
    data_fp = {"X": {"fingerprint": "f" * 64, "rows": 120, "schema": {"a": "float64"}}}
    push(a, "full", b"parent model", message="first")
    status, _, data = push(
        a, "full", b"child model", message="second", data=data_fp, tags={"k": "v"}
    )
    assert status == 201

    status, v = a.request("GET", "/api/v1/models/full/versions/2")
    assert status == 200, v
    assert v["model"] == "full" and v["number"] == 2
    assert v["digest"] == hashlib.sha256(data).hexdigest()
    assert v["size"] == len(data)
    assert v["message"] == "second"
    assert v["tags"] == {"k": "v"}
    assert v["manifest"]["name"] == "full"
    assert v["manifest"]["files"]["model.pkl"] == blake3(b"child model").hexdigest()
    assert v["lineage"] == [
        {"role": "X", "dataset": "f" * 64, "rows": 120, "parent_model": "full", "parent_number": 1}
    ]
    assert [c["name"] for c in v["checks"]] == ["loads"]
    assert {c["status"] for c in v["checks"]} <= {
        "queued",
        "running",
        "pass",
        "warn",
        "fail",
        "error",
        "skip",
    }

    status, v1 = a.request("GET", "/api/v1/models/full/versions/1")
    assert status == 200 and v1["lineage"] == []


def test_checks_finish_and_roll_the_status_forward(checking_agent):
    a = checking_agent
    # The bundle's model is not a real pickle, so the 'loads' check fails, with a message.
    status, _, _ = push(a, "checked", b"not a pickle at all")
    assert status == 201

    def done():
        _, v = a.request("GET", "/api/v1/models/checked/versions/1")
        return v["status"] in ("passed", "failed") and v

    assert wait_until(done, timeout=60), a.read_log()
    v = done()
    assert v["status"] == "failed"
    assert v["checks"][0]["status"] in ("fail", "error")
    assert v["checks"][0]["message"]


def test_unknown_version_is_404(shared_agent):
    push(shared_agent, "known", b"m")
    for path in (
        "/api/v1/models/known/versions/2",
        "/api/v1/models/known/versions/0",
        "/api/v1/models/known/versions/999999999999999999",
        "/api/v1/models/unknown/versions/1",
        "/api/v1/models/unknown/versions",
    ):
        status, body = shared_agent.request("GET", path)
        assert_error(status, body, 404, "not_found")


def test_non_numeric_version_does_not_route(shared_agent):
    status, body = shared_agent.request("GET", "/api/v1/models/known/versions/latest")
    assert_error(status, body, 404, "not_found")


def test_lookup_by_digest(agent):
    data = bundle_bytes("dig")
    _, pushed = agent.push_bytes("dig", data)
    status, found = agent.request(
        "GET", f"/api/v1/models/dig/versions?digest=sha256:{pushed['digest']}"
    )
    assert status == 200 and [v["number"] for v in found["versions"]] == [1]
    status, found = agent.request("GET", f"/api/v1/models/dig/versions?digest=sha256:{'0' * 64}")
    assert status == 200 and found["versions"] == []
    status, err = agent.request("GET", "/api/v1/models/dig/versions?digest=nope")
    assert status == 400 and err["error"]["code"] == "bad_digest_header"


def test_champion_route(agent):
    agent.push_bytes("champ", bundle_bytes("champ"))
    status, body = agent.request("GET", "/api/v1/models/champ/champion")
    assert status == 200 and body == {"name": "champ", "champion": None}  # v1 failed its check
    status, body = agent.request("GET", "/api/v1/models/nobody/champion")
    assert status == 404 and body["error"]["code"] == "not_found"


# -- the body read past tornado (handlers/detached.py) -----------------------------------------


def answer_of(sock) -> tuple[bytes, dict]:
    """Everything the agent sends until it closes the connection: its head and JSON body."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body)


def test_a_body_sent_in_small_pieces_is_stored_whole(shared_agent):
    data = bundle_bytes("pieces", model=os.urandom(3 * (1 << 20) + 17))
    sock = raw_connect(shared_agent)
    with sock:
        sock.sendall(upload_head(shared_agent, "pieces", len(data)))
        for i in range(0, len(data), 700_001):  # across the agent's 1 MiB buffers
            sock.sendall(data[i : i + 700_001])
            time.sleep(0.01)
        head, body = answer_of(sock)  # the agent closes the connection after its answer
    assert head.startswith(b"HTTP/1.1 201 ") and b"\r\nConnection: close" in head, head
    assert body["digest"] == hashlib.sha256(data).hexdigest()
    assert agent_blobs(shared_agent).read_bytes(body["digest"]) == data


def test_bytes_after_the_declared_length_are_not_the_bundle(shared_agent):
    # a client that sends a second request on the same connection: the agent reads exactly
    # Content-Length bytes, answers, and closes; the next request needs a new connection
    data = bundle_bytes("exact", model=b"exact model")
    sock = raw_connect(shared_agent)
    with sock:
        sock.sendall(
            upload_head(shared_agent, "exact", len(data)) + data + b"GET / HTTP/1.1\r\n\r\n"
        )
        head, body = answer_of(sock)
    assert head.startswith(b"HTTP/1.1 201 ") and head.count(b"HTTP/1.1") == 1, head
    assert body["digest"] == hashlib.sha256(data).hexdigest()
    status, listing = shared_agent.request("GET", "/api/v1/models/exact/versions")
    assert status == 200 and [v["number"] for v in listing["versions"]] == [1]


def test_a_refusal_after_the_body_is_json_on_the_same_connection(shared_agent):
    data = bundle_bytes("refused-late", model=b"m")
    sock = raw_connect(shared_agent)
    with sock:
        sock.sendall(
            upload_head(
                shared_agent,
                "refused-late",
                len(data),
                extra=[f"X-Handoff-Digest: sha256:{'0' * 64}"],
            )
            + data
        )
        head, body = answer_of(sock)
    assert head.startswith(b"HTTP/1.1 422 ") and b"application/json" in head, head
    assert body["error"]["code"] == "digest_mismatch", body
