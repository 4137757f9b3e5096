"""HTTP client for the agent: plain http.client, so the kernel imports nothing heavy."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import select
import socket
import time
import urllib.parse

from handoff_agent import runtime
from handoff_agent.runtime import SPOOL_FOLLOW_HEADER, SPOOL_TYPE

from .config import settings
from .errors import AgentError, AgentUnavailable

FOLLOW_BODY = 256  # bytes: a followed entry's closing body, its length sent before it is known
START_HINT = "Start it with `jupyter handoff serve`, or run `%mlops agent start`."
CONTINUE_WAIT = 10.0  # seconds to wait for "100 Continue" before sending anyway
HEALTHY_FOR = 30.0  # seconds a health check (or any answer) of a running agent is trusted
STUCK_AFTER = 10.0  # seconds a live agent's process may take to answer before it is stuck
READ_TIMEOUT = 120.0  # a read's wait: a push may take c.Handoff.timeout, a read not that long

_answered: dict[str, float] = {}  # agent url -> when it last answered this kernel


class AgentClient:
    def __init__(self, url: str, token: str, timeout: float = 600.0, spool: str | None = None):
        self._at(url, token, spool)
        self.timeout = timeout
        # Found through the runtime file (not configured): when that agent restarts on
        # another port or with another token, the objects holding this client follow it.
        self.follows_runtime = False

    def _at(self, url: str, token: str, spool: str | None) -> None:
        self.url = url.rstrip("/")
        self.spool = spool  # the agent's spool dir, from its runtime file: same machine
        self.token = token
        parsed = urllib.parse.urlsplit(self.url)
        self.host, self.port = parsed.hostname, parsed.port or 80

    def _moved(self) -> bool:
        """Whether the running agent is now another one than this client's (restarted on
        another port or with another token), and if so, point at it."""
        info = runtime.read() if self.follows_runtime else None
        if not info or (info["url"].rstrip("/"), info["token"]) == (self.url, self.token):
            return False
        self._at(info["url"], info["token"], info.get("spool") if self.spool else None)
        return True

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def _headers(self, extra: dict | None = None) -> dict:
        return {"Authorization": f"token {self.token}", **(extra or {})}

    def _answer(self, conn: http.client.HTTPConnection, raw: bool = False):
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 400:
            try:
                err = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "bad_response", "message": data[:200].decode(errors="replace")}
            raise AgentError(
                resp.status, err.get("code", "error"), err.get("message", ""), err.get("hint", "")
            )
        if raw:
            return resp.status, data
        return resp.status, json.loads(data) if data else {}

    def _call(self, fn, timeout: float | None = None):
        """``_send``, once more at the agent running now when this one's is gone (refused: it
        got nothing) or does not know the token (401): restarted elsewhere. For the reads and
        small requests; a push, whose body is written as it goes, is sent once."""
        try:
            return self._send(fn, timeout)
        except AgentUnavailable as e:
            if not (getattr(e, "refused", False) and self._moved()):
                raise
        except AgentError as e:
            if not (e.status == 401 and self._moved()):
                raise
        return self._send(fn, timeout)

    def _send(self, fn, timeout: float | None = None):
        conn = self._conn(timeout)
        try:
            found = fn(conn)
            _answered[self.url] = time.monotonic()
            return found
        except AgentError:
            _answered[self.url] = time.monotonic()  # it answered, with an error
            raise
        except (
            ConnectionRefusedError,
            ConnectionResetError,
            BrokenPipeError,
            http.client.BadStatusLine,
        ) as e:
            _answered.pop(self.url, None)
            gone = AgentUnavailable(
                f"The agent at {self.url} is not answering ({type(e).__name__}). "
                "It may have stopped or been killed.",
                START_HINT,
            )
            # nothing of the agent's reached it: refused, or another program that answers
            # no HTTP has its port now (RemoteDisconnected is the agent dying mid-answer)
            gone.refused = isinstance(e, ConnectionRefusedError) or (
                isinstance(e, http.client.BadStatusLine) and not isinstance(e, ConnectionResetError)
            )
            raise gone from None
        except TimeoutError:
            _answered.pop(self.url, None)
            raise AgentUnavailable(
                f"The agent at {self.url} did not answer within {conn.timeout:.0f} s.",
                "Check `jupyter handoff status`; raise c.Handoff.timeout for very large models.",
            ) from None
        finally:
            conn.close()

    def get(self, path: str) -> dict:
        def go(conn):
            conn.request("GET", path, headers=self._headers())
            return self._answer(conn)[1]

        return self._call(go, min(self.timeout, READ_TIMEOUT))

    def side_get(self, path: str) -> dict | None:
        """``get`` for a view's side line (where it serves, its alerts, what central waits
        for): None when the agent or its central cannot say, so a view never fails for it."""
        try:
            return self.get(path)
        except Exception:
            return None

    def post(self, path: str, body: dict) -> dict:
        def go(conn):
            headers = self._headers({"Content-Type": "application/json"})
            # refused before the whole body (a 413): its answer, read next, says why
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            return self._answer(conn)[1]

        return self._call(go)

    def delete(self, path: str) -> dict:
        def go(conn):
            conn.request("DELETE", path, headers=self._headers())
            return self._answer(conn)[1]

        return self._call(go)

    def get_raw(self, path: str) -> bytes:
        def go(conn):
            conn.request("GET", path, headers=self._headers())
            return self._answer(conn, raw=True)[1]

        return self._call(go)

    def push(self, name: str, bundle) -> tuple[int, dict]:
        """Offer a built bundle by its digest, then send it only if the agent asks for it: one
        request, whose headers say ``Expect: 100-continue``. An agent already holding these
        bytes answers with that version at once (a re-push sends nothing); otherwise it says
        continue, and the bundle goes as the body."""
        path = _versions(name)
        return self._send(lambda conn: self._offer(conn, path, bundle))

    def _offer(self, conn, path: str, bundle):
        conn.putrequest("POST", path)
        headers = {
            "Content-Type": "application/x-tar",
            "Content-Length": str(bundle.size),
            "X-Handoff-Digest": f"sha256:{bundle.digest}",
            "Expect": "100-continue",
        }
        for k, v in self._headers(headers).items():
            conn.putheader(k, v)
        conn.endheaders()
        if _go_ahead(conn, min(self.timeout, CONTINUE_WAIT)):
            for part in bundle.parts:
                conn.send(part)
        return self._answer(conn)

    def push_written(self, name: str, build) -> tuple[int, dict]:
        """Push the bundle ``build(sink)`` lays out (``bundle_writer.assemble``). For a local
        agent it goes into a fresh spool entry that the agent reads, hashes and checks while
        it is written: the request names the entry before the first byte, and its body, once
        all is written, gives the size and manifest digest that pin the bytes. Without a
        spool here, or when writing into it fails midway (a full disk), the bundle goes over
        HTTP, offered by its digest."""
        path = _versions(name)
        entry = self.open_spool()
        if entry is None:
            return self.push(name, build(None))
        with entry:  # adopted (gone), refused (removed) or abandoned; never left behind
            try:
                return self._send(lambda conn: self._follow(conn, path, entry, build))
            except _SpoolUnwritable as e:
                bundle = e.bundle
        return self.push(name, bundle.hashed())

    def _follow(self, conn, path: str, entry: SpoolEntry, build):
        conn.putrequest("POST", path)
        headers = {
            "Content-Type": SPOOL_TYPE,
            "Content-Length": str(FOLLOW_BODY),
            SPOOL_FOLLOW_HEADER: entry.name,
            "Expect": "100-continue",
        }
        for k, v in self._headers(headers).items():
            conn.putheader(k, v)
        conn.endheaders()
        bundle = build(entry.fd)
        entry.close()  # all written: the agent fsyncs it before it answers
        if not bundle.spooled:
            raise _SpoolUnwritable(bundle)  # the connection closes, and the agent lets go
        if _go_ahead(conn, min(self.timeout, CONTINUE_WAIT)):  # else: its refusal came first
            end = {"spool": entry.name, "size": bundle.size}
            end["manifest"] = f"sha256:{bundle.manifest_digest}"
            conn.send(json.dumps(end).encode().ljust(FOLLOW_BODY))
        return self._answer(conn)

    def open_spool(self) -> SpoolEntry | None:
        """A fresh entry in the agent's spool, for the bundle writer to fill while it hashes;
        None when there is no spool here (another machine's agent, no permission)."""
        if not self.spool:
            return None
        entry = f"{secrets.token_hex(16)}.bundle"
        target = os.path.join(self.spool, entry)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return SpoolEntry(entry, target, os.open(target, flags, 0o600))
        except OSError:
            return None


class SpoolEntry:
    """A bundle's file in the agent's spool, written by this kernel. Closing the ``with``
    removes it unless the agent adopted it (then it is gone from the spool already)."""

    def __init__(self, name: str, path: str, fd: int):
        self.name, self.path, self.fd = name, path, fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SpoolEntry:
        return self

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __exit__(self, *exc) -> None:
        self.discard()


class _SpoolUnwritable(Exception):
    """Writing into the agent's spool failed midway: the push goes over HTTP instead."""

    def __init__(self, bundle=None):
        super().__init__()
        self.bundle = bundle


def _versions(name: str) -> str:
    return f"/api/v1/models/{urllib.parse.quote(name, safe='')}/versions"


def _go_ahead(conn: http.client.HTTPConnection, wait: float) -> bool:
    """After headers sent with ``Expect: 100-continue``: True when the agent says continue
    (its interim answer is read off the socket here) or says nothing within ``wait`` seconds
    (then the body goes anyway, as RFC 9110 asks); False when its final answer came first,
    left on the socket for ``getresponse()``."""
    sock = conn.sock
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return True
        head = sock.recv(12, socket.MSG_PEEK)
        if len(head) == 12 or not head:
            break
        time.sleep(0.001)  # part of a status line: the rest is on its way
    if head[:5] != b"HTTP/" or head[9:12] != b"100":
        return False
    seen = b""
    while not seen.endswith(b"\r\n\r\n"):  # the interim answer: a status line, no headers
        byte = sock.recv(1)
        if not byte:
            raise ConnectionResetError
        seen += byte
    return True


def connect(start: bool | None = None, announce=print) -> AgentClient:
    """A client for the configured or running agent; start one if allowed and needed."""
    cfg = settings()
    if cfg.agent_url:
        return AgentClient(cfg.agent_url, cfg.token, cfg.timeout)
    info = runtime.read()  # None once the agent's process is gone
    if info and (_healthy(info["url"]) or runtime.healthy(info["url"], STUCK_AFTER)):
        spool = info.get("spool") if cfg.spool else None
        client = AgentClient(info["url"], cfg.token or info["token"], cfg.timeout, spool)
        client.follows_runtime = not cfg.token
        return client
    if info:  # its process lives but does not answer: another agent would not help
        raise AgentUnavailable(
            f"The agent at {info['url']} (pid {info['pid']}) is running but not answering.",
            "It may be stuck: `jupyter handoff status` checks it again; `jupyter handoff stop`, "
            "then `%mlops agent start`, restarts it.",
        )
    if not (cfg.auto_start if start is None else start):
        raise AgentUnavailable("No Handoff agent is running.", START_HINT)
    # the home of the agent that ran last (killed: its runtime file remains), not the default
    last = runtime.read(check_alive=False)
    try:
        info = runtime.start_detached(home=last.get("home") if last else None)
    except RuntimeError as e:
        raise AgentUnavailable(
            str(e), "Run `jupyter handoff serve` in a terminal to see why."
        ) from None
    announce(
        f"Started a Handoff agent at {info['url']} (pid {info['pid']}, home {info['home']}). "
        "It keeps running after the kernel stops; `jupyter handoff stop` stops it."
    )
    return AgentClient(info["url"], cfg.token or info["token"], cfg.timeout)


def _healthy(url: str) -> bool:
    """A health check, skipped while the agent at ``url`` answered this kernel in the last
    ``HEALTHY_FOR`` seconds: each check is a connection and a request on every push, tens of
    milliseconds on a busy machine. A refused or timed-out request forgets the answer."""
    url = url.rstrip("/")
    if time.monotonic() - _answered.get(url, -HEALTHY_FOR) < HEALTHY_FOR:
        return True
    if runtime.healthy(url):
        _answered[url] = time.monotonic()
        return True
    _answered.pop(url, None)
    return False
