"""Test support: drive a real agent process over real HTTP, and build bundles."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from handoff_agent import signing
from handoff_agent.bundle import FORMAT_VERSION
from handoff_agent.manifest import with_files

# The metadata backend of the running test (conftest's ``backend`` fixture sets it): an agent
# started without a database_url gets a fresh database on it.
CURRENT_BACKEND = None
# CLI commands that read the blob store: ``RunningAgent.cli`` passes them the agent's.
BLOB_COMMANDS = ("fsck", "monitor")
# The commands that open a home; the others ask a running agent (an unknown option is exit 2)
HOME_COMMANDS = (
    *("serve", "fsck", "token", "audit", "trust", "backup", "restore", "migrate", "monitor"),
)
# The default secret ``Receiver`` verifies deliveries against
WEBHOOK_SECRET = "webhook-secret"


class RunningAgent:
    """An agent process. It sees the built-in plugins and ``plugins`` (``{kind: {name:
    "module:attr"}}``, registered through ``c.HandoffAgent.plugins``), never whatever
    happens to be installed in the entry point groups. Its metadata goes to
    ``database_url`` (default: a fresh database on the test's backend; None: the SQLite
    file in the home), its blobs to the backend's store (files in the home, or a bucket of
    its own on S3). ``env``: extra environment."""

    def __init__(
        self,
        home: Path,
        runtime_dir: Path,
        args: list[str],
        plugins: dict | None = None,
        database_url=...,
        env: dict | None = None,
        prefix: list[str] | None = None,
    ):
        self.home, self.runtime_dir = Path(home), Path(runtime_dir)
        self.prefix = list(prefix or ())  # e.g. ``small_disk``: what the agent runs under
        self.args = ["--HandoffAgent.entry_point_plugins=False", *args]
        central = "--role" in args and args[args.index("--role") + 1] == "central"
        if central and not any(a.startswith("--Validation.") for a in args):
            # Central's ONNX conversion and load test on entering validated cost seconds of
            # CPU per version: only the tests that ask for them run them.
            self.args.append("--Validation.enabled=False")
        if not any(a.startswith("--HandoffAgent.warm_workers") for a in args):
            # Warm check workers (imports done before a push) cost ~2 s of CPU each per
            # start: only the tests that measure or rely on them keep them.
            self.args.append("--HandoffAgent.warm_workers=0")
        # One check worker and one serving worker per version, unless a test asks for more:
        # each is a sandboxed Python importing scikit-learn (~2 s of CPU), and the suite is
        # CPU-bound on two cores. The demo and the browser tests run the defaults.
        if not any(a.startswith("--HandoffAgent.workers") for a in args):
            self.args.append("--HandoffAgent.workers=1")
        if central and not any(a.startswith("--Serving.workers") for a in args):
            self.args.append("--Serving.workers=1")
        if plugins:
            self.args.append("--HandoffAgent.plugins=" + json.dumps(plugins))
        if database_url is ...:
            database_url = CURRENT_BACKEND.database_url() if CURRENT_BACKEND else None
        self.database_url = database_url
        self.extra_env = dict(env or {})
        if CURRENT_BACKEND is not None and "--blob-url" not in self.args:
            blob_args, blob_env = CURRENT_BACKEND.blob_store(self.home)
            self.args += blob_args
            self.extra_env = {**blob_env, **self.extra_env}
        self.proc: subprocess.Popen | None = None
        self.url = self.token = None

    @property
    def env(self) -> dict:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime_dir), **self.extra_env}
        if self.database_url:  # in the environment, off the command line (it has a password)
            env["HANDOFF_DATABASE_URL"] = self.database_url
        return env

    @property
    def role(self) -> str:
        return self.args[self.args.index("--role") + 1] if "--role" in self.args else "local"

    @property
    def runtime_file(self) -> Path:
        return self.runtime_dir / f"handoff-{self.role}.json"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``python -m handoff_agent ARGS --home HOME`` against this agent's home (and
        its database, and for commands that read blobs, its blob store); a command that asks
        the running agent instead gets no ``--home``."""
        args = list(args)
        if args and args[0] in BLOB_COMMANDS and "--blob-url" not in args:
            args += self.blob_args()
        if args and args[0] in HOME_COMMANDS:
            args += ["--home", str(self.home)]
        return handoff_cli(self.env, *args, timeout=timeout)

    def blob_args(self) -> list[str]:
        """The blob-store arguments this agent was started with (S3 credentials travel in
        its environment, never as arguments)."""
        out = []
        if "--blob-url" in self.args:
            i = self.args.index("--blob-url")
            out += self.args[i : i + 2]
        return out + [a for a in self.args if a.startswith("--HandoffAgent.s3_")]

    def make_token(self, user: str, *roles: str) -> str:
        role_args = [a for r in roles for a in ("--role", r)]
        out = self.cli("token", "create", "--user", user, *role_args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip().splitlines()[-1]

    def sql(self, statement: str, **params) -> list[dict]:
        """Run SQL on this agent's database directly, as someone holding its file or its
        password could (tests that tamper or look underneath the API)."""
        from sqlalchemy import create_engine, text

        from handoff_agent.store.engine import normalize

        url = self.database_url or f"sqlite:///{self.home / 'registry.db'}"
        engine = create_engine(normalize(url))
        try:
            with engine.begin() as c:
                res = c.execute(text(statement), params)
                return [dict(r._mapping) for r in res] if res.returns_rows else []
        finally:
            engine.dispose()

    def start(self, timeout: float = 90) -> None:
        self.runtime_file.unlink(missing_ok=True)
        self.log = open(self.home.parent / f"{self.home.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                *(sys.executable, "-m", "handoff_agent", "serve", "--home", str(self.home)),
                *self.args,
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.read_log()}")
            try:
                info = json.loads(self.runtime_file.read_text())
                # under a prefix the agent is its child: a fresh runtime file is its
                if info["pid"] == self.proc.pid or self.prefix:
                    self.pid = info["pid"]
                    self.url, self.token = info["url"], info["token"]
                    parsed = urllib.parse.urlsplit(self.url)
                    self.host, self.port = parsed.hostname, parsed.port
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise RuntimeError("agent did not start")

    def read_log(self) -> str:
        return (self.home.parent / f"{self.home.name}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def request(self, method, path, body=None, headers=None, token=True, timeout=60):
        """Returns (status, parsed JSON body or raw text). ``token`` may be another token."""
        status, _, parsed = self.request_full(method, path, body, headers, token, timeout)
        return status, parsed

    def request_full(self, method, path, body=None, headers=None, token=True, timeout=60):
        """Like ``request``, with the response headers as well."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h.setdefault("Authorization", f"token {self.token if token is True else token}")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, dict(resp.getheaders()), parsed

    def push_bytes(self, name: str, data: bytes, digest: str | None = None, **headers):
        h = {"Content-Type": "application/x-tar"}
        if digest is not False:
            h["X-Handoff-Digest"] = f"sha256:{digest or hashlib.sha256(data).hexdigest()}"
        h.update(headers)
        return self.request("POST", f"/api/v1/models/{name}/versions", body=data, headers=h)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/api/v1/health", token=False, timeout=5)[0] == 200
        except OSError:
            return False


def forwarding_args(
    central: RunningAgent | None,
    secret: str | None,
    *,
    to: str = "central",
    url: str | None = None,
    token: str | None = ...,
    owner: str | None = "alice",
    status_interval: float | None = 0.2,
    backoff: float | None = 0.1,
    backoff_cap: float | None = None,
) -> list[str]:
    """A local agent's arguments for handing its versions to ``central`` (its URL and token,
    unless ``url`` or ``token`` say), signed with ``secret`` as sender ``owner``, polling
    its stages and retrying fast. ``to``: the destination's name. None leaves a setting out
    (its default)."""
    url = url or central.url
    token = central.token if token is ... else token
    settings = {
        "CentralDestination.url": url,
        "CentralDestination.secret": secret,
        "CentralDestination.token": token,
        "HandoffAgent.owner_name": owner,
        "CentralDestination.status_interval": status_interval,
        "HandoffAgent.forward_backoff": backoff,
        "HandoffAgent.forward_backoff_cap": backoff_cap,
    }
    return ["--forward-to", to] + [f"--{k}={v}" for k, v in settings.items() if v is not None]


@contextlib.contextmanager
def churn_at_central(tmp: Path, secret: str, *, local_token: tuple[str, ...] = ()):
    """A central whose intake revalidates and takes alice's versions signed with ``secret``,
    and wants one reviewer's sign-off for approved; a local agent handing its versions to it
    as alice; churn:1 (a logistic regression) pushed through the notebook API and validated
    at central. No checks on either side. ``local_token``: (user, *roles) of the central
    token the local agent holds (default: central's own). Yields (central, local)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    no_checks = "--HandoffAgent.checks=[]"
    (tmp / "policy.toml").write_text(
        f'[intake]\nrevalidate = true\n[intake.senders]\nalice = "{secret}"\n'
        "[stages.approved]\nreviewer = 1\n"
    )
    central = RunningAgent(
        tmp / "central",
        tmp / "rt-central",
        ["--role", "central", "--policy", str(tmp / "policy.toml"), no_checks],
    )
    central.start()
    local = None
    try:
        token = central.make_token(*local_token) if local_token else ...
        local = RunningAgent(
            tmp / "local",
            tmp / "rt-local",
            [*forwarding_args(central, secret, token=token), no_checks],
        )
        local.start()
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y)
        path = "/api/v1/models/churn/versions/1"
        stage = lambda: central.request("GET", path)[1].get("stage")  # noqa: E731
        until(lambda: stage() == "validated", what="churn:1 validated at central")
        yield central, local
    finally:
        if local is not None:
            local.stop()
        central.stop()


def small_disk(mount: Path, size: int) -> list[str]:
    """A prefix that runs an agent with ``mount`` on a filesystem of ``size`` bytes of its own
    (a tmpfs in a mount namespace, through bubblewrap): a disk that really fills. Outside,
    the agent's view of it is ``/proc/PID/root`` + ``mount``."""
    mount.mkdir(parents=True, exist_ok=True)
    return [
        *("bwrap", "--dev-bind", "/", "/", "--die-with-parent"),
        *("--size", str(size), "--tmpfs", str(mount), "--"),
    ]


def manifest_for(name: str, members: dict[str, bytes], **extra) -> dict:
    """A manifest as the kernel writes one (member digests by ``MEMBER_HASH``)."""
    plain = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "serialization": "pickle",
        "flavor": "test",
        "task": None,
    }
    return {**with_files(plain, members), **extra}


def make_tar(entries: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """entries: (name, data, type). type is tarfile.REGTYPE, SYMTYPE, ... data None for links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def bundle_bytes(
    name: str,
    model: bytes = b"not really a pickle",
    manifest: dict | None = None,
    extra: list | None = None,
) -> bytes:
    """A well-formed bundle (the agent never unpickles, so the model can be any bytes)."""
    members = {"model.pkl": model}
    m = manifest or manifest_for(name, members)
    entries = [("manifest.json", json.dumps(m).encode(), tarfile.REGTYPE)]
    entries += [(n, b, tarfile.REGTYPE) for n, b in members.items()]
    entries += extra or []
    return make_tar(entries)


def push_model(agent: RunningAgent, model, name: str, **kwargs):
    """Push through the real notebook-side API to ``agent``."""
    from jupyter_handoff import api, config

    config._instance = config.Handoff(agent_url=agent.url, token=agent.token, auto_start=False)
    try:
        return api.push(model, name, **kwargs)
    finally:
        config._instance = None


def wait_checked(agent: RunningAgent, name: str, number: int, timeout: float = 120) -> dict:
    """Poll until the version has a verdict (bounded; raises if it never comes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = agent.request("GET", f"/api/v1/models/{name}/versions/{number}")
        if status == 200 and body["status"] not in ("checking", "pushed") and body["reports"]:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{name}:{number} was not checked in {timeout} s: {body}")


def send_until_answered(
    address: tuple[str, int], request_head: bytes, total: int, chunked: bool = False
) -> tuple[int, dict | str, int]:
    """Send the head, then body bytes (up to ``total``, in 1 MiB chunks when ``chunked``) only
    while the server has not answered. Returns (status, body, body bytes the socket accepted
    before the answer came)."""
    block = b"\0" * (1 << 20)
    sent, pending = 0, b""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request_head)
        sock.setblocking(False)
        while True:
            want_write = [sock] if sent < total or pending else []
            readable, writable, _ = select.select([sock], want_write, [], 60)
            if readable:
                break
            assert writable, "the server neither answered nor read the body in 60 s"
            if not pending:
                data = block[: total - sent]
                sent += len(data)
                pending = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                pending = pending[sock.send(pending) :]
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        raw = resp.read()
    try:
        return resp.status, json.loads(raw), sent
    except ValueError:
        return resp.status, raw.decode(errors="replace"), sent


def until(predicate, timeout: float = 120, what: str = "condition", every: float = 0.1):
    """Poll until ``predicate()`` is truthy and return it; a generous bound, not a timing test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def handoff_cli(env: dict, *args: str, cwd=None, timeout: float = 120):
    """``jupyter handoff ARGS`` as a user runs it, in ``env`` (an agent's: its runtime dir)."""
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


class Receiver(BaseHTTPRequestHandler):
    """A real webhook receiver. Each POST is kept in ``received`` as a dict: ``headers``,
    ``raw`` (the body's bytes), ``body`` (parsed), ``id`` (the delivery id) and ``ok``
    (its signature is fresh and verifies against ``secret``). A module subclasses it with
    its own ``received`` list and ``secret``, and ``answer`` for other answers;
    ``start_receiver`` serves it."""

    received: list = []
    secret = WEBHOOK_SECRET

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        h = self.headers
        mac = signing.signer(self.secret, h["X-Handoff-Delivery"], h["X-Handoff-Timestamp"])
        mac.update(raw)
        ok = signing.fresh(h["X-Handoff-Timestamp"], 300) and signing.matches(
            h["X-Handoff-Signature"], [mac]
        )
        self.received.append(
            {"ok": ok, "body": json.loads(raw), "id": h["X-Handoff-Delivery"],
             "headers": dict(h), "raw": raw}
        )  # fmt: skip
        status, reply = self.answer(self.received[-1])
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(reply).encode())

    def answer(self, got: dict) -> tuple[int, dict]:
        """The status and JSON body for the delivery ``got``: 200, or 401 unless it verifies."""
        return (200 if got["ok"] else 401), {"received": True}

    def log_message(self, *args):
        pass


def start_receiver(receiver: type[Receiver] = Receiver, path: str = "/hook"):
    """``receiver`` answering on loopback, on a thread, its ``received`` emptied (the class
    outlives one backend's run of a module). Returns (server, its URL at ``path``); the
    caller shuts the server down."""
    receiver.received.clear()
    server = HTTPServer(("127.0.0.1", 0), receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}{path}"
