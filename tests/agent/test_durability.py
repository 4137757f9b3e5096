"""kill -9 at random moments while pushes stream in: every acknowledged push survives."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import threading
import time

from agent_support import NO_CHECKS, part_files
from s3_support import agent_blobs, corrupt_blob
from support import bundle_bytes, until

NAME = "durable"
KILLS = 6
PUSHERS = 2
MAX_PUSHES = 150  # answered attempts over all pushers: a bound, normally not reached
# Fixed, so a push never pairs a new port with an old token; 128 bits long, as the agent needs.
TOKEN = "durability-test-token-0123456789"


class Harness:
    def __init__(self, agent, seed: int):
        self.agent = agent
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[int, str] = {}  # version -> digest, from 200/201 answers only
        self.errors: list = []
        self.attempts = 0
        self.dropped = 0  # pushes whose connection died (the agent was killed)

    def pusher(self, tid: int) -> None:
        rng = random.Random(self.seed * 100 + tid)
        i = 0
        data = None
        while not self.stop.is_set():
            if data is None:
                model = rng.randbytes(rng.randint(1_000, 400_000)) + f"{tid}-{i}".encode()
                data = bundle_bytes(NAME, model=model)
                i += 1
            with self.lock:
                if self.attempts >= MAX_PUSHES:
                    return
            try:
                status, body = self.agent.push_bytes(NAME, data)
            except (OSError, http.client.HTTPException):
                # The agent died under us, or is restarting. The push was not acknowledged;
                # send the same bytes again (which answers 200 if it had in fact been stored).
                with self.lock:
                    self.dropped += 1
                time.sleep(0.02)
                continue
            with self.lock:
                self.attempts += 1
                if status in (200, 201):
                    digest = hashlib.sha256(data).hexdigest()
                    assert body["digest"] == digest
                    prev = self.acked.setdefault(body["version"], digest)
                    if prev != digest:
                        self.errors.append(("version acked twice", body["version"], prev))
                    data = None
                else:
                    self.errors.append((status, body))
                    data = None
            time.sleep(rng.uniform(0.01, 0.05))


def test_acknowledged_pushes_survive_kill_9(agent_factory):
    a = agent_factory(NO_CHECKS, f"--HandoffAgent.token={TOKEN}")
    rng = random.Random(20240611)
    h = Harness(a, seed=7)
    threads = [threading.Thread(target=h.pusher, args=(t,), daemon=True) for t in range(PUSHERS)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.4))
            a.kill9()
            a.start()
        # Let the pushers get some answers from the last agent, then stop them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(h.acked) < 5 and h.attempts < MAX_PUSHES:
            time.sleep(0.05)
    finally:
        h.stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert h.errors == [], h.errors
    assert h.acked, a.read_log()

    # A crash leaves a half-written upload behind; the next start removes it.
    planted = a.home / "tmp" / "upload-planted.part"
    planted.write_bytes(b"half an upload")
    a.kill9()
    a.start()
    assert not planted.exists()
    # versions stored but killed before their reports get them now, in the background
    # (check_flow.resume_concluded): those writes end, and leave no part file behind
    until(lambda: part_files(a.home) == [], what="no half-written file left")

    # Every acknowledged version is there, with the bytes it was acknowledged with.
    for number, digest in sorted(h.acked.items()):
        status, v = a.request("GET", f"/api/v1/models/{NAME}/versions/{number}")
        assert status == 200, (number, v)
        assert v["digest"] == digest, number
        agent_blobs(a).verify(digest)  # raises unless its bytes hash to its digest

    # Version numbers have no gaps (a push stored but not acknowledged still counts).
    status, listing = a.request("GET", f"/api/v1/models/{NAME}/versions?limit=1000")
    assert status == 200
    numbers = [v["number"] for v in listing["versions"]]
    assert numbers == list(range(len(numbers), 0, -1))
    assert max(h.acked) <= len(numbers)

    # No partial blob is visible: every stored blob is complete and named by its hash.
    store = agent_blobs(a)
    for digest in store.iter_digests():
        store.verify(digest)
    if not store.url.startswith("s3://"):  # and nothing else lies in the directory
        for path in (a.home / "blobs").rglob("*"):
            name = path.name if path.is_dir() else path.parent.name + path.name
            assert re.fullmatch(r"[0-9a-f]{2}" if path.is_dir() else r"[0-9a-f]{64}", name)

    fsck = a.cli("fsck")  # with the agent's blob store
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "fsck: OK" in fsck.stdout
    assert "CORRUPT" not in fsck.stdout and "MISSING" not in fsck.stdout
    assert a.healthy()


def test_pushing_the_same_model_again_repairs_its_corrupt_bundle(agent_factory):
    """A bundle's stored bytes went bad; every read says so and advises pushing the model
    again. The push of the same bytes, however it is sent (a client that waits for the
    go-ahead with the digest, or the whole body), replaces them."""

    agent = agent_factory("--HandoffAgent.checks=[]", "--HandoffAgent.forward_to=[]")
    data = bundle_bytes("churn", model=os.urandom(50_000))
    status, first = agent.push_bytes("churn", data)
    assert status == 201, first
    for how in ({"Expect": "100-continue"}, {}):
        corrupt_blob(agent, first["digest"])
        status, body = agent.request("GET", "/api/v1/models/churn/versions/1/bundle")
        assert (status, body["error"]["code"]) == (409, "blob_corrupt"), body
        assert "push the model again" in body["error"]["hint"], body
        status, again = agent.push_bytes("churn", data, **how)
        assert (status, again["version"], again["created"]) == (200, 1, False), again
        status, _ = agent.request("GET", "/api/v1/models/churn/versions/1/bundle")
        assert status == 200, how
    assert agent.cli("fsck").returncode == 0


def test_a_champion_whose_bundle_went_bad_warns_rather_than_passing_uncompared(agent_factory):
    """The champion's stored bundle is corrupt: the performance check cannot compare with it.
    It says why (the blob, fsck) and warns; it passed as if there were no champion."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from support import push_model, wait_checked

    agent = agent_factory(
        "--HandoffAgent.checks=['loads', 'performance']", "--HandoffAgent.forward_to=[]"
    )
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
    y = (X["a"] > 0).astype(int)
    first = push_model(agent, LogisticRegression().fit(X, y), "churn", X=X, y=y)
    assert wait_checked(agent, "churn", first.number)["status"] == "passed"
    digest = agent.request("GET", "/api/v1/models/churn/versions/1")[1]["digest"]
    corrupt_blob(agent, digest)
    second = push_model(agent, LogisticRegression(C=0.5).fit(X, y), "churn", X=X, y=y)
    checked = wait_checked(agent, "churn", second.number)
    perf = next(c for c in checked["checks"] if c["name"] == "performance")
    assert perf["status"] == "warn", perf
    assert "champion version 1 did not load: its stored bundle is unreadable" in perf["message"]
    assert "jupyter handoff fsck" in perf["message"], perf
