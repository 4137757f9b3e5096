"""One writer process for the many-writers tests: ``python writers.py URL GO_FILE OP ARG``.

Waits until GO_FILE exists (so the writers start together), does OP against the store at URL
and prints one JSON line with what it got.
"""

from __future__ import annotations

import json
import os
import sys
import time

from handoff_agent.errors import Conflict
from handoff_agent.store.metadata import MetadataStore
from handoff_agent.versions import VersionService


def main(url: str, go: str, op: str, arg: str) -> None:
    store = MetadataStore.open(url)
    me = f"writer-{os.getpid()}"
    while not os.path.exists(go):
        time.sleep(0.005)
    out: dict = {"pid": os.getpid()}
    if op == "push":  # arg: how many versions; each writer also pushes the shared bytes
        service = VersionService(store)
        got = []
        for i in range(int(arg)):
            for digest in (f"{me}-{i}", "shared-bytes"):
                version, created = service.create_version(
                    "m", digest, 1, {"name": "m"}, me, ["loads"]
                )
                got.append([digest, version["number"], created])
        out["versions"] = got
    elif op == "claim_outbox":  # claim and deliver until nothing is left
        mine = []
        while rows := store.outbox_claim(me, time.time(), 3):
            for row in rows:
                mine.append(row["id"])
                store.outbox_delivered(row, {"by": me})
        out["rows"] = mine
    elif op == "claim_checks":
        out["runs"] = [r["id"] for r in store.claim_checks(me)]
    elif op == "delivery":  # arg: the delivery id
        out["claimed"] = store.delivery_claim(arg, "src", "body")
    elif op == "stage":  # arg: the version id; move received -> validated
        try:
            store.stage_set(int(arg), "validated", me, "", "m:1", expected="received")
            out["moved"] = True
        except Conflict:
            out["moved"] = False
    print(json.dumps(out))
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
