"""One simulated local agent for bench/central.py, run as its own process.

It hands versions to central exactly as a local agent's forwarder does, with the agent's own
code: the envelope (``envelope.json`` + ``bundle.tar``, written by ``bundle.write_tar``), the
audit chain (``audit.row_hash``) that central checks extends what it anchored, the signature
and POST (``forwarding.http.post_signed``), one delivery id per version kept across retries,
the same body resent byte for byte, deliveries in order (the next is built after the previous
one's ack, from its audit anchor), and the forwarder's backoff (``outbox.backoff``). What it
skips is everything before the outbox: no checks run here and no pickle is converted, so the
machine's two cores go to central. Each version's bundle differs from the last (its manifest's
message), as a retrained model's would.

Protocol with the parent: read one JSON job from argv, print ``ready`` once built, wait for a
line on stdin, push, write one JSON line per delivery to the job's ``out`` file, print ``done``.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
import time
import urllib.parse
import uuid
from types import SimpleNamespace

from handoff_agent import audit, outbox
from handoff_agent.bundle import MANIFEST, write_tar
from handoff_agent.forwarding.central import BUNDLE, ENVELOPE
from handoff_agent.forwarding.http import post_signed

MAX_ROWS_FIRST = 10_000  # the local agent's audit rows sent when central acknowledged none


class Chain:
    """The local agent's audit log, in memory: what each envelope carries."""

    def __init__(self):
        self.rows: list[dict] = []

    def append(self, action: str, subject: str, payload: dict) -> None:
        prev = self.rows[-1]["hash"] if self.rows else audit.GENESIS
        row = {
            "seq": len(self.rows) + 1,
            "time": audit.now(),
            "actor": "analyst",
            "action": action,
            "subject": subject,
            "payload": audit.canonical(payload),
            "prev_hash": prev,
        }
        row["hash"] = audit.row_hash(prev, row)
        self.rows.append(row)

    def since(self, ack: dict | None) -> list[dict]:
        """``audit.rows_since``: from the acknowledged entry (included) to the head."""
        if ack:
            return self.rows[ack["seq"] - 1 :]
        return self.rows[-MAX_ROWS_FIRST:]


def bundle_bytes(members: dict[str, bytes], manifest: dict) -> tuple[bytes, str]:
    """A bundle as a sender of this benchmark lays it out (manifest first, members in name
    order; the agent reads any order)."""
    import hashlib

    raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
    buf = io.BytesIO()
    write_tar(buf, [(MANIFEST, raw), *sorted(members.items())])
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def envelope(source: str, local: dict, digest: str, rows: list[dict]) -> dict:
    """What ``CentralDestination.body`` writes, in memory (small bundles)."""
    envelope = {
        "format": 1,
        "source": source,
        "local": local,
        "bundle_digest": digest,
        "audit_head": {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]} if rows else None,
        "audit": rows,
    }
    return envelope


def visible(urls: list[str], token: str, name: str, number: int, timeout: float) -> float | None:
    """Poll central's listing until ``number`` is on its first page; the time it was seen.
    A replica that does not answer is skipped for the next one."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        parts = urllib.parse.urlsplit(urls[i % len(urls)])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request(
                "GET",
                f"/api/v1/models/{name}/versions?limit=20",
                headers={"Authorization": f"token {token}"},
            )
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                numbers = {v["number"] for v in json.loads(body)["versions"]}
                if number in numbers:
                    return time.monotonic()
        except (OSError, ValueError, http.client.HTTPException):
            i += 1
        finally:
            conn.close()
        time.sleep(0.005)
    return None


def attempt(url: str, body: bytes, delivery_id: str, secret: str):
    """One ``post_signed``; its ``Result`` (ok, retryable, remote, error)."""
    try:
        return post_signed(f"{url}/api/v1/intake", body, delivery_id, secret, "application/x-tar")
    except Exception as e:  # the forwarder's tick logs it and retries the row
        return SimpleNamespace(ok=False, retryable=True, error=f"{type(e).__name__}: {e}")


def run(job: dict) -> None:
    with open(job["bundle"], "rb") as f:
        base = json.load(f)
    members = {k: bytes.fromhex(v) for k, v in base["members"].items()}
    urls, token, secret = job["urls"], job["token"], job["secret"]
    name, source = job["model"], uuid.uuid4().hex
    chain = Chain()
    chain.append("agent.start", "agent", {"role": "local", "agent_id": source, "pid": os.getpid()})
    ack: dict | None = None
    turn = job["index"]  # round-robin over replicas, like a load balancer's
    out = open(job["out"], "w")  # noqa: SIM115 - closed at the end
    print("ready", flush=True)
    sys.stdin.readline()  # the parent's go
    for k in range(1, job["pushes"] + 1):
        manifest = {**base["manifest"], "name": name, "message": f"{source} push {k}"}
        data, digest = bundle_bytes(members, manifest)
        subject = f"{name}:{k}"
        chain.append("version.create", subject, {"digest": digest, "size": len(data)})
        chain.append("version.verdict", subject, {"verdict": "pass"})
        chain.append("forward.queue", subject, {"destination": "central", "forced": False})
        local = {
            "model": name,
            "number": k,
            "digest": digest,
            "pushed_by": job["user"],
            "pushed_at": audit.now(),
            "status": "passed",
            "verdict": {"verdict": "pass"},
        }
        env = envelope(source, local, digest, chain.since(ack))
        buf = io.BytesIO()
        write_tar(buf, [(ENVELOPE, json.dumps(env, sort_keys=True).encode()), (BUNDLE, data)])
        body = buf.getvalue()
        delivery_id = uuid.uuid4().hex
        rec = {"delivery": delivery_id, "digest": digest, "local": k, "size": len(body)}
        rec["t_send"] = time.monotonic()
        attempts, errors = 0, []
        while True:
            if os.getppid() != job["parent"]:
                sys.exit(3)  # the benchmark is gone: stop rather than retry for minutes
            url = urls[turn % len(urls)]
            t_try = time.monotonic()
            result = attempt(url, body, delivery_id, secret)
            attempts += 1
            if result.ok:
                break
            errors.append(result.error[:200])
            turn += 1  # the next attempt goes to the next replica
            if not result.retryable or time.monotonic() - rec["t_send"] > job["give_up"]:
                break
            time.sleep(outbox.backoff(attempts - 1, job["backoff"], job["backoff_cap"]))
        rec.update(attempts=attempts, errors=errors[-3:], t_last_try=t_try)
        if not result.ok:
            rec.update(state="dead" if not result.retryable else "gave_up", t_ack=None)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            continue  # the real forwarder moves on to the next row too
        rec["t_ack"] = time.monotonic()
        remote = result.remote
        rec.update(state="acked", name=remote.get("name"), version=remote.get("version"))
        rec["duplicate"] = bool(remote.get("duplicate"))
        anchor = remote.get("audit_anchor")
        if isinstance(anchor, dict) and type(anchor.get("seq")) is int:
            ack = anchor
        chain.append(
            "forward.delivered",
            subject,
            {"destination": "central", "delivery": delivery_id, "remote": remote},
        )
        # Read back from another replica when there are two: visible everywhere, not just here.
        readers = urls[(turn + 1) % len(urls) :] + urls[: (turn + 1) % len(urls)]
        rec["t_visible"] = (
            visible(readers, token, remote["name"], remote["version"], job["visible_timeout"])
            if job["check_visible"]
            else None
        )
        turn += 1
        out.write(json.dumps(rec) + "\n")
        out.flush()
    out.close()
    print("done", flush=True)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
