"""HTTP client for the agent: plain http.client, so the kernel imports nothing heavy."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import urllib.parse

from handoff_agent import runtime

from .config import settings
from .errors import AgentError, AgentUnavailable

SPOOL_TYPE = "application/vnd.handoff.spool+json"  # a body naming a bundle in the agent's spool
START_HINT = "Start it with `jupyter handoff serve`, or run `%mlops agent start`."


class AgentClient:
    def __init__(self, url: str, token: str, timeout: float = 600.0, spool: str | None = None):
        self.url = url.rstrip("/")
        self.spool = spool  # the agent's spool dir, from its runtime file: same machine
        self.token = token
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(self.url)
        self.host, self.port = parsed.hostname, parsed.port or 80

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

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

    def _send(self, fn):
        conn = self._conn()
        try:
            return fn(conn)
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as e:
            raise AgentUnavailable(
                f"The agent at {self.url} is not answering ({type(e).__name__}). "
                "It may have stopped or been killed.",
                START_HINT,
            ) from None
        except TimeoutError:
            raise AgentUnavailable(
                f"The agent at {self.url} did not answer within {self.timeout:.0f} s.",
                "Check `jupyter handoff status`; raise c.Handoff.timeout for very large models.",
            ) from None
        finally:
            conn.close()

    def get(self, path: str) -> dict:
        def go(conn):
            conn.request("GET", path, headers=self._headers())
            return self._answer(conn)[1]

        return self._send(go)

    def post(self, path: str, body: dict) -> dict:
        def go(conn):
            headers = self._headers({"Content-Type": "application/json"})
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            return self._answer(conn)[1]

        return self._send(go)

    def get_raw(self, path: str) -> bytes:
        def go(conn):
            conn.request("GET", path, headers=self._headers())
            return self._answer(conn, raw=True)[1]

        return self._send(go)

    def existing(self, name: str, digest: str) -> dict | None:
        """The version already holding these bytes, so a re-push sends nothing."""
        try:
            found = self.get(f"/api/v1/models/{name}/versions?digest=sha256:{digest}&limit=1")
        except AgentError as e:
            if e.status == 404:
                return None
            raise
        return found["versions"][0] if found["versions"] else None

    def push(self, name: str, bundle) -> tuple[int, dict]:
        if (v := self.existing(name, bundle.digest)) is not None:
            return 200, {
                "name": name,
                "version": v["number"],
                "digest": v["digest"],
                "created": False,
                "status": v["status"],
            }

        path = f"/api/v1/models/{urllib.parse.quote(name, safe='')}/versions"
        entry = self._spool_write(bundle) if self.spool else None
        if entry is not None:
            try:
                return self._send(lambda conn: self._spooled(conn, path, entry, bundle.digest))
            finally:  # adopted (gone) or refused (removed) by the agent; never left behind
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.spool, entry))

        def go(conn):
            conn.putrequest("POST", path)
            headers = self._headers(
                {
                    "Content-Type": "application/x-tar",
                    "Content-Length": str(bundle.size),
                    "X-Handoff-Digest": f"sha256:{bundle.digest}",
                }
            )
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            for part in bundle.parts:
                conn.send(part)
            return self._answer(conn)

        return self._send(go)

    def _spool_write(self, bundle) -> str | None:
        """Write the bundle into the agent's spool under a fresh random name; None (so it
        goes over HTTP) when the spool cannot be written here: another machine's agent,
        another filesystem view, no permission."""
        entry = f"{secrets.token_hex(16)}.bundle"
        target = os.path.join(self.spool, entry)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, 0o600)
        except OSError:
            return None
        try:
            for part in bundle.parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(target)
            return None
        os.close(fd)  # the agent fsyncs it before it answers
        return entry

    def _spooled(self, conn, path: str, entry: str, digest: str):
        headers = self._headers(
            {"Content-Type": SPOOL_TYPE, "X-Handoff-Digest": f"sha256:{digest}"}
        )
        conn.request("POST", path, body=json.dumps({"spool": entry}).encode(), headers=headers)
        return self._answer(conn)


def connect(start: bool | None = None, announce=print) -> AgentClient:
    """A client for the configured or running agent; start one if allowed and needed."""
    cfg = settings()
    if cfg.agent_url:
        return AgentClient(cfg.agent_url, cfg.token, cfg.timeout)
    info = runtime.read()
    if info and runtime.healthy(info["url"]):
        spool = info.get("spool") if cfg.spool else None
        return AgentClient(info["url"], cfg.token or info["token"], cfg.timeout, spool)
    if not (cfg.auto_start if start is None else start):
        raise AgentUnavailable("No Handoff agent is running.", START_HINT)
    try:
        info = runtime.start_detached()
    except RuntimeError as e:
        raise AgentUnavailable(
            str(e), "Run `jupyter handoff serve` in a terminal to see why."
        ) from None
    announce(
        f"Started a Handoff agent at {info['url']} (pid {info['pid']}). It keeps running after "
        "the kernel stops; `jupyter handoff stop` stops it."
    )
    return AgentClient(info["url"], cfg.token or info["token"], cfg.timeout)
