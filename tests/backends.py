"""The metadata backends the agent tests run on: SQLite (the default home file) and PostgreSQL.

PostgreSQL is the cluster on this machine (``pg_ctlcluster 15 main start``; ``.ci/run`` starts
it). The tests connect over TCP as a role they create once through ``su postgres``, with a
password, so that the agents' logs can be searched for it. Each agent gets a fresh database,
copied from a migrated template. Without PostgreSQL the ``postgresql`` param skips, except
under CI, where it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import uuid

import pytest

ROLE = "handoff_test"
PASSWORD = "pw-7c1e93d4a5b2f608"  # a test role on a loopback cluster; tests look for it in logs
HOST = os.environ.get("HANDOFF_TEST_PG_HOST", "127.0.0.1")
PREFIX = os.environ.get("HANDOFF_TEST_PG_PREFIX", "handoff_test")


def pg_url(db: str, password: bool = True) -> str:
    secret = f":{PASSWORD}" if password else ""
    return f"postgresql://{ROLE}{secret}@{HOST}:5432/{db}"


class Postgres:
    """Creates and drops this session's databases."""

    def __init__(self):
        import psycopg

        self.psycopg = psycopg
        self.tag = f"{PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.created: list[str] = []
        self.admin = self._connect("postgres")
        self.template = f"{self.tag}_tpl"
        self._run(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        from handoff_agent.store.metadata import MetadataStore

        MetadataStore.open(pg_url(self.template)).close()

    def _connect(self, db: str):
        return self.psycopg.connect(
            host=HOST, user=ROLE, password=PASSWORD, dbname=db, autocommit=True
        )

    def _run(self, sql: str) -> None:
        self.admin.execute(sql)

    def database(self) -> str:
        """A fresh, migrated database; returns its URL (with the password)."""
        name = f"{self.tag}_{len(self.created)}"
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return pg_url(name)

    def close(self) -> None:
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def ensure_role() -> None:
    """Create the test role once (as the postgres OS user, over the socket)."""
    sql = (
        f"DO $$ BEGIN CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
    )
    subprocess.run(
        ["su", "postgres", "-c", "psql -qAt"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start_postgres() -> Postgres:
    try:
        try:
            return Postgres()
        except Exception:
            ensure_role()
            return Postgres()
    except Exception as e:
        why = (
            f"PostgreSQL is not available ({str(e).strip().splitlines()[0]}). "
            "Start it with `pg_ctlcluster 15 main start`."
        )
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


class Backend:
    """What an agent test runs on: ``database_url()`` gives each agent its database."""

    def __init__(self, name: str, postgres: Postgres | None = None, s3=None):
        self.name, self.postgres, self.s3 = name, postgres, s3

    def database_url(self) -> str | None:
        return self.postgres.database() if self.postgres else None

    def blob_store(self, home) -> tuple[list[str], dict]:
        """Arguments and environment for an agent's blobs: files in its home, or on S3 a
        bucket named after the home, so an agent restarted on the same home finds them."""
        if self.s3 is None:
            return [], {}
        from s3_support import s3_agent_args

        bucket = "h-" + hashlib.sha256(str(home).encode()).hexdigest()[:40]
        with contextlib.suppress(Exception):  # already made for this home
            self.s3.client().create_bucket(Bucket=bucket)
        return s3_agent_args(self.s3, bucket)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


class Relay:
    """A TCP relay on loopback in front of a server the tests share (the PostgreSQL cluster,
    seaweedfs), for an agent to reach it through: ``cut()`` drops every connection and
    refuses new ones (the server restarting, a network partition), ``restore()`` lets
    connections through again. The server itself keeps running for the other tests."""

    def __init__(self, port: int = 5432):
        import socket
        import threading

        self._socket, self._threading = socket, threading
        self.target = port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.lock = threading.Lock()
        self.open: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` (of the server on loopback) reached through this relay."""
        return url.replace(f"{HOST}:{self.target}", f"{HOST}:{self.port}")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                if not self.up:
                    raise OSError("cut")
                server = self._socket.create_connection((HOST, self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(self._socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(self._socket.SHUT_RDWR)
                s.close()
            self.open = []

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
