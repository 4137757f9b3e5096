"""Stream validation: a plain bundle is judged as its bytes arrive, with the same verdict as
reading it back; anything else is left to ``bundle.validate`` (the result is None)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from blake3 import blake3
from support import bundle_bytes, make_tar, manifest_for

from handoff_agent import bundle
from handoff_agent.errors import InvalidBundle


def streamed(data: bytes, step: int, name: str = "m"):
    check = bundle.StreamCheck(name)
    for i in range(0, len(data), step):
        check.feed(data[i : i + step])
    return check.result()


@pytest.mark.parametrize("step", [1, 511, 512, 4096, 1 << 20])
def test_a_plain_bundle_gets_the_same_manifest_in_any_chunking(step):
    data = bundle_bytes("m", model=os.urandom(3000))
    assert streamed(data, step) == bundle.validate(io.BytesIO(data), "m")


def test_the_manifest_may_come_last():
    model = os.urandom(2000)
    m = manifest_for("m", {"model.pkl": model})
    data = make_tar(
        [
            ("model.pkl", model, tarfile.REGTYPE),
            ("manifest.json", json.dumps(m).encode(), tarfile.REGTYPE),
        ]
    )
    assert streamed(data, 700)["name"] == "m"


def test_a_bundle_with_sha256_member_digests_is_still_accepted():
    # Bundles written before the members' digests were BLAKE3 (format 1) say no files_hash:
    # SHA-256. The stream hashes BLAKE3, so it leaves them to validate(), which reads the
    # manifest first.
    model = os.urandom(3000)
    m = manifest_for("m", {"model.pkl": model}, format_version=1)
    del m["files_hash"]
    m["files"] = {"model.pkl": hashlib.sha256(model).hexdigest()}
    data = bundle_bytes("m", model=model, manifest=m)
    assert streamed(data, 700) is None
    assert bundle.validate(io.BytesIO(data), "m")["files"] == m["files"]
    m["files"] = {"model.pkl": blake3(model).hexdigest()}  # BLAKE3 digests, said to be SHA-256
    with pytest.raises(InvalidBundle, match="does not match its manifest"):
        bundle.validate(io.BytesIO(bundle_bytes("m", model=model, manifest=m)), "m")


def test_an_unknown_member_hash_is_refused_by_name():
    model = os.urandom(3000)
    m = manifest_for("m", {"model.pkl": model}, files_hash="md5")
    data = bundle_bytes("m", model=model, manifest=m)
    for judge in (lambda: streamed(data, 700), lambda: bundle.validate(io.BytesIO(data), "m")):
        with pytest.raises(InvalidBundle, match="Unknown files_hash 'md5'; expected one of sha256"):
            judge()


def test_a_wrong_member_digest_is_refused_on_the_stream():
    model = os.urandom(2000)
    m = manifest_for("m", {"model.pkl": b"other bytes"})
    with pytest.raises(InvalidBundle, match="does not match its manifest"):
        streamed(bundle_bytes("m", model=model, manifest=m), 1000)


@pytest.mark.parametrize(
    "data",
    [
        bundle_bytes("m", extra=[("data/X.parquet", None, tarfile.SYMTYPE)]),
        bundle_bytes("m", extra=[("model.pkl", b"again", tarfile.REGTYPE)]),
        bundle_bytes("m", extra=[("../evil", b"x", tarfile.REGTYPE)]),
        bundle_bytes("m", model=os.urandom(5000))[:3000],
        b"garbage" * 100,
    ],
    ids=["symlink", "duplicate", "traversal", "truncated", "garbage"],
)
def test_anything_not_plain_is_left_to_validate(data):
    assert streamed(data, 512) is None
    with pytest.raises(InvalidBundle):
        bundle.validate(io.BytesIO(data), "m")
