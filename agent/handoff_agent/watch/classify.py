"""How a source's new fingerprint differs from the last one: one word of
``vocabulary.SOURCE_CHANGES``, and the PSI that decided a distribution shift."""

from __future__ import annotations

import time

from .. import drift

PSI_THRESHOLD = 0.25  # drift.PSI_BANDS: above 0.25 a significant shift


def max_psi(reference: dict, current: dict) -> float | None:
    """The largest PSI over the numeric columns both statistics have, on the reference's
    bins (``current`` was binned on the same edges), grouped into as many reference quantiles
    as the column's values fill with ``drift.PER_BIN`` each; a column with too few values for
    two such bins is not judged (a few dozen rows from the reference's own distribution would
    read as a shift)."""
    scores = []
    for col, ref in reference.items():
        cur = current.get(col)
        if not cur or "hist" not in ref or "hist" not in cur:
            continue
        bins = sum(cur["hist"]) // drift.PER_BIN
        if len(ref["hist"]) == len(cur["hist"]) and bins >= 2:
            scores.append(drift.psi(*drift.coarsen(ref["hist"], cur["hist"], bins)))
    return max(scores) if scores else None


def overdue_after(every: float, overdue: float | None = None) -> float:
    """Seconds without new data before a source is overdue: the watch's ``overdue`` period
    (``--overdue 26h``), else twice its fingerprint period ``every``."""
    return float(overdue) if overdue else 2 * float(every)


def classify(
    prev: dict | None,
    cur: dict,
    reference_stats: dict | None,
    every: float,
    threshold: float = PSI_THRESHOLD,
    now: float | None = None,
    overdue: float | None = None,
) -> tuple[str, float | None]:
    """``(change, psi)``. Schema first (nothing else compares across schemas), then a shift
    against the reference, then appended or modified; the same content with no update for
    longer than ``overdue_after(every, overdue)`` is overdue."""
    psi = max_psi(reference_stats, cur["stats"]) if reference_stats else None
    if prev is None:
        return "first", psi
    if cur["schema_hash"] != prev["schema_hash"] and not same_kinds(prev, cur):
        return "schema", psi
    if cur["fingerprint"] == prev["fingerprint"]:
        # when the data last changed: the files' mtime, a query's max(updated_at), else
        # since when the watch has seen this very content (``unchanged_since``)
        changed = cur.get("mtime") or _data_time(cur) or _time(cur.get("since")) or None
        now = time.time() if now is None else now
        if changed is not None and every > 0 and now - changed > overdue_after(every, overdue):
            return "overdue", psi
        return "unchanged", psi
    if psi is not None and psi > threshold:
        return "drift", psi
    grew = (cur.get("rows") or 0) > (prev.get("rows") or 0)
    old_rows = prev.get("row_hashes") and prev["row_hashes"] in (
        cur.get("prefix_hash"),
        cur.get("prefix_hash_ints"),
    )
    if grew and (old_rows or cur.get("size") is None):
        return "appended", psi  # files: the old rows come first; SQL: more rows, same schema
    if only_grew(prev.get("files"), cur.get("files")) and (cur.get("rows") or 0) >= (
        prev.get("rows") or 0
    ):
        return "appended", psi  # every earlier byte still there, first: past the row cap too
    return "modified", psi


def only_grew(before: list[dict] | None, now: list[dict] | None) -> bool:
    """Whether the files only grew: each earlier file is there with its earlier bytes first
    (the same file, or ``prefix_sha256``, the hash of its first bytes up to its earlier size,
    equal to its earlier hash), and something was added. It tells an append from a rewrite
    whatever the row cap left unread. A Parquet file rewritten with more rows moves its
    footer, so it never reads as grown this way (its rows past the cap are not compared)."""
    if not before or not now:
        return False
    files = {f.get("path"): f for f in now}
    grew = len(files) > len(before)
    for old in before:
        new = files.get(old.get("path"))
        if new is None:
            return False
        if new.get("sha256") == old.get("sha256"):
            continue
        if new.get("prefix_sha256") is None or new["prefix_sha256"] != old.get("sha256"):
            return False
        grew = True
    return grew


def _kind(dtype: str) -> str:
    if dtype.lower().startswith(("int", "uint")):
        return "integer"
    return "float" if dtype.startswith("float") else dtype


def same_kinds(prev: dict, cur: dict) -> bool:
    """Whether two schemas differ only where a missing value made pandas read a column
    another way: an integer column with a blank (CSV) or a NULL (SQL) reads as floats, a
    boolean one as objects. The column names and their kinds of value are the schema; a
    column retyped with real fractions, renamed, added or dropped is a schema change."""
    a, b = prev.get("schema"), cur.get("schema")
    if not a or not b or [c["name"] for c in a] != [c["name"] for c in b]:
        return False
    for old, new in zip(a, b, strict=True):
        if {**old, "dtype": None} != {**new, "dtype": None}:  # e.g. in every file no more
            return False
        kinds = (_kind(old["dtype"]), _kind(new["dtype"]))
        if old["dtype"] == new["dtype"]:
            continue
        name = old["name"]
        if set(kinds) == {"integer", "float"}:
            fp = cur if kinds[1] == "float" else prev  # the side whose column has blanks
            s = (fp.get("stats") or {}).get(name) or {}
            if s.get("nulls") and s.get("whole", True):
                continue
        elif set(kinds) == {"bool", "object"}:
            fp = cur if kinds[1] == "object" else prev
            s = (fp.get("stats") or {}).get(name) or {}
            if s.get("nulls") and set(s.get("top") or {}) <= {"True", "False"}:
                continue
        return False
    return True


def _data_time(fp: dict) -> float | None:
    return _time(fp.get("max_updated"))


def _time(value) -> float | None:
    """Epoch seconds of an ISO time (None when there is none, or it is not one)."""
    if not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None
