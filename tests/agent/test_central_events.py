"""``central_events.follow`` against a small real HTTP server on loopback playing central: the
SSE body chunked at awkward places, only the model's deployment events passed on, the resume
after the last id when the stream is lost, and a refusal told without the token.
(The relay between real agents: tests/agent/serving/test_deployment_events.py.)"""

from __future__ import annotations

import asyncio
import json

from handoff_agent import central_events

TOKEN = "relay-token-never-shown-3kT9qLm2VxZp"


def sse(event: dict) -> bytes:
    return (f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n").encode()


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


class Central:
    """Answers each connection with the next of ``answers`` (bytes after the request's
    head), recording the request heads it got."""

    def __init__(self, answers: list[bytes]):
        self.answers, self.heads = list(answers), []

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head.decode())
        answer = self.answers.pop(0) if self.answers else b""
        if answer:
            writer.write(answer)
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


async def take(gen, n: int, kinds=("event", "central")) -> list[tuple[str, dict]]:
    out = []
    async for kind, item in gen:
        if kind in kinds:
            out.append((kind, item))
            if len(out) == n:
                break
    return out


def test_events_pass_chunked_filtered_and_resume_after_the_last_id(monkeypatch):
    monkeypatch.setattr(central_events, "RETRY_FIRST", 0.01)
    ours = {"id": 7, "type": "deployment", "model": "churn", "canary": 40.0}
    body = (
        b": connected\n\n"
        + sse({"id": 5, "type": "check", "model": "churn"})  # not a deployment event
        + sse({"id": 6, "type": "stage", "model": "fraud", "stage": "canary"})  # not ours
        + sse(ours)
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    first = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 7) + b"0\r\n\r\n"
    later = {"id": 9, "type": "guardrail", "model": "churn", "state": "baking"}
    second = head + b"\r\n" + b": connected\n\n" + sse(later)  # not chunked: read to the end

    async def run():
        async with Central([first, second]) as central:
            gen = central_events.follow(lambda: (central.url, TOKEN), "churn")
            try:
                got = await take(gen, 5)
            finally:
                await gen.aclose()
            return central, got

    central, got = asyncio.run(run())
    assert got[0] == ("central", {"model": "churn", "state": "connected", "reason": None})
    assert got[1] == ("event", ours)
    assert got[2][0] == "central" and got[2][1]["state"] == "down"
    assert got[2][1]["reason"] == "central ended the stream"
    assert got[3][1]["state"] == "connected"
    assert got[4] == ("event", later)
    first_head, second_head = central.heads[:2]
    assert first_head.startswith("GET /api/v1/events?model=churn HTTP/1.1\r\n")
    assert f"Authorization: token {TOKEN}" in first_head and "Last-Event-ID" not in first_head
    assert "Last-Event-ID: 7\r\n" in second_head  # resumes after the last id passed on


def test_a_refusal_is_told_with_centrals_code_and_never_the_token(monkeypatch):
    monkeypatch.setattr(central_events, "RETRY_FIRST", 0.01)
    error = json.dumps(
        {"error": {"code": "unauthorized", "message": "The token is wrong.", "hint": TOKEN}}
    ).encode()
    refusal = (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(error), error)
    )

    async def run():
        async with Central([refusal]) as central:
            gen = central_events.follow(lambda: (central.url, TOKEN), "churn")
            try:
                return await take(gen, 1)
            finally:
                await gen.aclose()

    [(kind, item)] = asyncio.run(run())
    assert kind == "central" and item["state"] == "down"
    assert item["reason"] == "central answered 401 (unauthorized)"
    assert TOKEN not in json.dumps(item)


def test_no_central_is_down_and_keeps_the_client_alive(monkeypatch):
    monkeypatch.setattr(central_events, "RETRY_FIRST", 0.01)

    async def run():
        gen = central_events.follow(lambda: ("", ""), "churn")
        try:
            return await take(gen, 3, kinds=("central", "keepalive"))
        finally:
            await gen.aclose()

    got = asyncio.run(run())
    assert got[0] == (
        "central",
        {"model": "churn", "state": "down", "reason": "no central is running"},
    )
    assert [k for k, _ in got[1:]] == ["keepalive", "keepalive"]  # down is said once
