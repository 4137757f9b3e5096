"""A local agent follows its central's event stream for one model, so the notebook and the
panel see deployments live without holding a token for central.

``follow`` reads central's ``GET /api/v1/events?model=NAME`` with the local agent's central
token and yields what to pass on: central's deployment events (``vocabulary.DEPLOY_EVENTS``,
with central's ids, so a client's ``Last-Event-ID`` resumes at central), ``central`` events
when the stream is up or lost (never with the token, the URL's query or central's headers),
and keepalives. A lost stream is opened again with a growing pause (at most ``RETRY_CAP``),
resuming after the last id seen; a stream silent for ``IDLE`` seconds (central writes a
keepalive every 15) is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable

from .vocabulary import DEPLOY_EVENTS

IDLE = 45.0  # seconds without a byte from central: the stream is gone
CONNECT = 10.0  # seconds to open the connection
# The pause before opening the stream again, doubling; the client gets a keepalive after
# each (its reader gives up after 40 s of silence).
RETRY_FIRST, RETRY_CAP = 0.5, 10.0
MAX_LINE = 1 << 20  # one SSE line from central (an event's JSON) at most
MAX_HEAD = 64 << 10


class Lost(Exception):
    """Central's stream could not be opened or ended; the message is safe to show."""


async def _open(url: str, token: str, model: str, after: int | None):
    """The connection, past the response's headers: (reader, writer, chunked)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Lost("central's URL is not http(s)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/") + "/api/v1/events?" + urllib.parse.urlencode({"model": model})
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    head = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: token {token}",
        "Accept: text/event-stream",
        "Connection: close",
    ]
    if after is not None:
        head.append(f"Last-Event-ID: {after}")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname, port, ssl=parts.scheme == "https", limit=MAX_LINE
            ),
            CONNECT,
        )
    except (OSError, TimeoutError) as e:
        raise Lost(f"central is not answering ({type(e).__name__})") from None
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), IDLE)
        fields = status_line.split()
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        chunked, size = False, 0
        while True:
            line = await asyncio.wait_for(reader.readline(), IDLE)
            size += len(line)
            if not line or size > MAX_HEAD:
                raise Lost("central's answer was cut short")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if status != 200:
            raise Lost(f"central answered {status or 'garbage'}{await _code(reader, status)}")
        return reader, writer, chunked
    except BaseException as e:
        writer.close()
        if isinstance(e, (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError)):
            raise Lost(f"central's stream broke ({type(e).__name__})") from None
        raise


async def _code(reader: asyncio.StreamReader, status: int) -> str:
    """`` (code)`` from central's JSON error (the one error shape), if it sent one."""
    with contextlib.suppress(Exception):
        body = await asyncio.wait_for(reader.read(MAX_HEAD), 5)
        code = json.loads(body[body.find(b"{") : body.rfind(b"}") + 1])["error"]["code"]
        if isinstance(code, str) and code.isidentifier():
            return f" ({code})"
    return ""


async def _lines(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's lines, de-chunked; every read waits at most IDLE."""

    async def read(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), IDLE)

    if not chunked:
        while line := await asyncio.wait_for(reader.readline(), IDLE):
            yield line
        return
    pending = b""
    while True:
        size_line = await asyncio.wait_for(reader.readline(), IDLE)
        if not size_line:
            return
        n = int(size_line.split(b";")[0].strip() or b"0", 16)
        if n == 0:
            return
        if n + len(pending) > MAX_LINE:
            raise Lost("central sent an event larger than this agent relays")
        pending += (await read(n + 2))[:-2]
        *done, pending = pending.split(b"\n")
        for line in done:
            yield line + b"\n"


async def follow(
    target: Callable[[], tuple[str, str]], model: str, after: int | None = None
) -> AsyncIterator[tuple[str, dict | None]]:
    """Yield ``("event", event)``, ``("central", {"state", "reason"})`` and
    ``("keepalive", None)`` for as long as the caller reads. ``target()`` gives central's
    (url, token), read again before each attempt."""
    pause, up = RETRY_FIRST, None
    while True:
        url, token = target()
        writer = None
        try:
            if not url:
                raise Lost("no central is running")
            reader, writer, chunked = await _open(url, token, model, after)
            if up is not True:
                yield "central", {"model": model, "state": "connected", "reason": None}
            up, pause = True, RETRY_FIRST
            kind, data = "message", []
            async for raw in _lines(reader, chunked):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(":"):
                    yield "keepalive", None
                elif line:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
                else:
                    event = _event(kind, data, model)
                    kind, data = "message", []
                    if event is not None:
                        if isinstance(event.get("id"), int):
                            after = event["id"]
                        yield "event", event
            raise Lost("central ended the stream")
        except Lost as e:
            reason = str(e)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            reason = f"central's stream broke ({type(e).__name__})"
        finally:
            if writer is not None:
                writer.close()
        if up is not False:
            yield "central", {"model": model, "state": "down", "reason": reason}
        up = False
        await asyncio.sleep(pause)
        yield "keepalive", None  # the client's stream stays open while central is away
        pause = min(pause * 2, RETRY_CAP)


def _event(kind: str, data: list[str], model: str) -> dict | None:
    """Central's event, if it is one of ``model``'s deployment events."""
    if kind not in DEPLOY_EVENTS or not data:
        return None
    try:
        event = json.loads("\n".join(data))
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("model") != model:
        return None
    return event
