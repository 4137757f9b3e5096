"""Follow the agent's server-sent events in a daemon thread, with plain http.client.

The kernel never blocks: the thread reads ``GET /api/v1/events`` and hands each event to a
callback. The bus is lossy by design, so a follower re-reads the state it cares about after
connecting (``on_open``) and whenever an event says something finished.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.parse

# The agent writes a keepalive comment every 15 s: twice that in silence means it is gone.
READ_TIMEOUT = 40.0
RETRY_EVERY = 2.0


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_events(lines):
    """Yield ``(event type, data dict)`` from an iterable of SSE lines (bytes or str)."""
    kind, data = "message", []
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line:
            parsed = _json("\n".join(data)) if data else None
            if parsed is not None:
                yield kind, parsed
            kind, data = "message", []
        elif line.startswith(":"):
            yield "comment", {"text": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)


class EventFollower:
    """Calls ``on_event(kind, data)`` for each event of ``model`` (and ``version``), read
    from ``path`` (``/api/v1/events``, or a route that streams one model's events).

    ``on_open()`` runs after every (re)connection, ``on_lost(exc)`` when the agent stops
    answering. After a loss the follower looks for an agent again every ``RETRY_EVERY`` s
    (through ``reconnect()``, which returns a fresh client or None) until ``give_up_after``.
    ``stop()`` ends it; so does ``on_event`` returning True.
    """

    def __init__(
        self,
        client,
        model=None,
        version=None,
        *,
        on_event,
        on_open=None,
        on_lost=None,
        reconnect=None,
        give_up_after: float = 600.0,
        path: str = "/api/v1/events",
    ):
        self.client, self.path = client, path
        self.model, self.version = model, version
        self.on_event, self.on_open, self.on_lost = on_event, on_open, on_lost
        self.reconnect = reconnect
        self.give_up_after = give_up_after
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self.thread = threading.Thread(target=self._run, name="handoff-events", daemon=True)

    def start(self) -> EventFollower:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):  # unblocks a pending readline
                conn.sock.shutdown(2)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _path(self) -> str:
        query = {k: v for k, v in (("model", self.model), ("version", self.version)) if v}
        if self.path != "/api/v1/events":  # a route of one model's events
            return self.path
        return self.path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._follow():
                    return
            except Exception as e:  # any failure means the stream is gone
                if self._stop.is_set():
                    return
                if self.on_lost:
                    self.on_lost(e)
                if not self._wait_for_agent():
                    return
            else:
                if self._stop.is_set():
                    return
                if self.on_lost:
                    self.on_lost(ConnectionError("the event stream ended"))
                if not self._wait_for_agent():
                    return

    def _wait_for_agent(self) -> bool:
        deadline = time.monotonic() + self.give_up_after
        while not self._stop.wait(RETRY_EVERY):
            if time.monotonic() > deadline:
                return False
            client = self.reconnect() if self.reconnect else None
            if client is not None:
                self.client = client
                return True
        return False

    def _follow(self) -> bool:
        """Read the stream until it ends (False) or the follower is done (True)."""
        c = self.client
        conn = http.client.HTTPConnection(c.host, c.port, timeout=READ_TIMEOUT)
        self._conn = conn
        try:
            conn.request("GET", self._path(), headers=c._headers({"Accept": "text/event-stream"}))
            resp = conn.getresponse()
            if resp.status != 200:
                raise ConnectionError(f"the agent answered {resp.status} to the event stream")
            opened = False
            for kind, data in parse_events(iter(resp.readline, b"")):
                if self._stop.is_set():
                    return True
                if kind == "comment":
                    if not opened:
                        opened = True
                        if self.on_open and self.on_open():
                            return True
                    continue
                if self.model and data.get("model") != self.model:
                    continue
                if self.on_event(kind, data):
                    self._stop.set()
                    return True
            return self._stop.is_set()
        finally:
            self._conn = None
            conn.close()
