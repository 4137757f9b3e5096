"""Fingerprints and their classification, on real files, without an agent."""

from __future__ import annotations

import time

import pytest
from watch_support import frame

from handoff_agent.watch import classify, fingerprint


def _fp(path, ref=None, prev=None):
    edges = fingerprint.reference_edges(ref) if ref is not None else None
    return fingerprint.fingerprint(
        {"kind": "file", "source": str(path)}, None, edges, (prev or {}).get("rows") or 0
    )


def _ref_stats(ref):
    edges = fingerprint.reference_edges(ref)
    return fingerprint.stats(ref, edges)


def test_files_glob_fingerprint_has_size_mtime_sha256_and_stats(tmp_path):
    frame(100).to_parquet(tmp_path / "part-1.parquet")
    frame(50, seed=1).to_parquet(tmp_path / "part-2.parquet")
    fp = _fp(tmp_path / "part-*.parquet")
    assert fp["rows"] == 150 and len(fp["files"]) == 2
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 and f["mtime"] for f in fp["files"])
    assert set(fp["stats"]) == {"a", "b", "c", "d", "y"} and "hist" in fp["stats"]["a"]


def test_each_kind_of_change(tmp_path):
    ref = frame(500)[list("abcd")]
    stats = _ref_stats(ref)
    path = tmp_path / "d.parquet"
    frame(500).to_parquet(path)
    first = _fp(path, ref)
    assert classify.classify(None, first, stats, 3600)[0] == "first"
    same = _fp(path, ref, first)
    assert classify.classify(first, same, stats, 3600)[0] == "unchanged"
    # Overdue: the same content, long past its period
    assert classify.classify(first, same, stats, 60, now=time.time() + 3600)[0] == "overdue"
    frame(700).to_parquet(path)  # the first 500 rows, then 200 more
    grown = _fp(path, ref, first)
    assert classify.classify(first, grown, stats, 3600)[0] == "appended"
    frame(500, seed=9).to_parquet(path)  # rewritten, same distribution
    assert classify.classify(first, _fp(path, ref, first), stats, 3600)[0] == "modified"
    frame(500, seed=9, shift=1.5).to_parquet(path)  # shifted: PSI against the reference
    change, psi = classify.classify(first, _fp(path, ref, first), stats, 3600)
    assert change == "drift" and psi > classify.PSI_THRESHOLD
    frame(500).assign(extra=1).to_parquet(path)
    assert classify.classify(first, _fp(path, ref, first), stats, 3600)[0] == "schema"


def test_policy_watch_tables(tmp_path):
    from handoff_agent.policy import Policy

    path = tmp_path / "policy.toml"
    path.write_text(
        '[[watch]]\nmodel = "churn"\nsource = "/data/a.parquet"\non = ["schema"]\n'
        'actions = ["alert", "pause_canary"]\n'
    )
    assert Policy.load(path).watches == [
        {
            "model": "churn",
            "source": "/data/a.parquet",
            "on": ["schema"],
            "actions": ["alert", "pause_canary"],
        }
    ]
    path.write_text('[[watch]]\nmodel = "churn"\n')
    with pytest.raises(ValueError, match="needs model = NAME and source"):
        Policy.load(path)
