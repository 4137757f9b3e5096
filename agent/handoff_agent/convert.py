"""Convert a pickle bundle to skops, in a worker (``python -I -m handoff_agent.convert``).

Central loads only skops with the types it trusts, so the local agent converts before
forwarding. Runs out of the agent process, sandboxed, because converting means unpickling.
It gets the bundle and the output file as descriptors on stdin (``sandbox.receive_job``) and
writes one JSON line on its protocol channel.
"""

from __future__ import annotations

import json
import sys
import tarfile

from . import trust
from .bundle import MANIFEST, write_tar
from .manifest import model_member, with_files


def convert(src: str, out: str, digest: str) -> dict:
    """``src`` is the verified bundle ``digest`` (the agent's blob store checked it)."""
    import pickle

    import skops.io as sio

    with tarfile.open(src, mode="r:") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        members = {
            m.name: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.name not in (MANIFEST, model_member("pickle"))
        }
        model = pickle.loads(tar.extractfile(model_member("pickle")).read())
    members[model_member("skops")] = data = sio.dumps(model)
    # What central will need beyond the default list; nothing here loads the skops file.
    untrusted = trust.untrusted(trust.needed_types(data))
    manifest = with_files({**manifest, "serialization": "skops", "converted_from": digest}, members)
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    with open(out, "wb") as f:
        write_tar(f, [(MANIFEST, manifest_bytes), *sorted(members.items())])
    return {"ok": True, "untrusted_types": untrusted}


def main() -> int:
    from .sandbox import serve_one_job

    return serve_one_job(lambda job: convert(job["bundle"], job["out"], job["digest"]))


if __name__ == "__main__":
    sys.exit(main())
