"""Built-in check ``schema``: the input signature compared with the previous version's.

A removed, renamed or retyped column breaks every caller of the model, so it fails. An added
column (callers must now send it) and a new column order warn by default.
"""

from __future__ import annotations

from ..plugins import CheckContext, CheckResult
from ._util import columns, result, settings, worst

# Retyping along these arrows keeps every value representable, so it only warns when allowed.
_WIDENING = {("bool", "int"), ("bool", "float"), ("int", "float"), ("uint", "int")}


def _kind(dtype: str) -> str:
    d = dtype.lower()
    for kind in ("bool", "uint", "int", "float", "datetime", "category"):
        if d.startswith(kind):
            return kind
    return "text" if d in ("object", "string", "str") or d.startswith("string") else d


def _columns(manifest: dict | None) -> list[dict] | None:
    sig = (manifest or {}).get("signature") or {}
    cols = sig.get("columns")
    return (
        [{"name": str(c["name"]), "dtype": str(c.get("dtype", ""))} for c in cols] if cols else None
    )


def compare(before: list[dict], after: list[dict], cfg: dict) -> list[dict]:
    """The changes from ``before`` to ``after``, each a row with column, change, status."""
    old = {c["name"]: c["dtype"] for c in before}
    new = {c["name"]: c["dtype"] for c in after}
    removed = [c for c in before if c["name"] not in new]
    added = [c for c in after if c["name"] not in old]
    changes = []
    # A column removed and one added at the same position with the same dtype: a rename.
    new_pos = {c["name"]: i for i, c in enumerate(after)}
    old_pos = {c["name"]: i for i, c in enumerate(before)}
    for r in list(removed):
        i = old_pos[r["name"]]
        twin = next(
            (a for a in added if new_pos[a["name"]] == i and a["dtype"] == r["dtype"]), None
        )
        if twin is not None:
            removed.remove(r)
            added.remove(twin)
            changes.append(_row(r["name"], "renamed", r["name"], twin["name"], "fail"))
    changes += [_row(c["name"], "removed", c["dtype"], None, "fail") for c in removed]
    changes += [_row(c["name"], "added", None, c["dtype"], cfg["on_added"]) for c in added]
    for name, dtype in new.items():
        if name in old and old[name] != dtype:
            widening = (_kind(old[name]), _kind(dtype)) in _WIDENING
            status = "warn" if widening and cfg["allow_widening"] else "fail"
            if _kind(old[name]) == _kind(dtype):  # int32 -> int64, object -> string
                status = "warn"
            changes.append(_row(name, "retyped", old[name], dtype, status))
    common_old = [c["name"] for c in before if c["name"] in new]
    common_new = [c["name"] for c in after if c["name"] in old]
    if common_old != common_new:
        changes.append(_row("*", "reordered", None, None, cfg["on_reordered"]))
    return changes


def _row(column, change, before, after, status) -> dict:
    return {"column": column, "change": change, "before": before, "after": after, "status": status}


class SchemaCheck:
    name = "schema"
    title = "Input signature compatible with the previous version"
    needs = ()
    compares_champion = False
    defaults = {"on_added": "warn", "on_reordered": "warn", "allow_widening": True}

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        cfg = settings(self, ctx, kwargs)
        after = _columns(ctx.manifest)
        if after is None:
            return result("skip", "Skipped: this version has no input signature.")
        metrics = {"columns": len(after)}
        if ctx.X is not None:
            pushed = columns(ctx.X)
            if pushed != [c["name"] for c in after]:
                return result(
                    "fail",
                    "The evaluation data's columns do not match the input signature in the "
                    "manifest. Push again from the notebook so both come from the same frame.",
                    metrics,
                )
        before = _columns(ctx.previous_manifest)
        if before is None:
            return result("pass", "First version with a signature: nothing to compare.", metrics)
        metrics["previous_columns"] = len(before)
        kinds = [
            (m.get("signature") or {}).get("input") or "table"
            for m in (ctx.previous_manifest, ctx.manifest)
        ]
        if kinds[0] != kinds[1]:
            return result(
                "fail",
                f"Breaking change to the input: the previous version took {kinds[0]} input, "
                f"this one takes {kinds[1]}. Every caller must change how it sends rows.",
                metrics,
            )
        changes = compare(before, after, cfg)
        for kind in ("removed", "renamed", "retyped", "added", "reordered"):
            metrics[kind] = sum(c["change"] == kind for c in changes)
        status = worst(c["status"] for c in changes)
        if not changes:
            return result("pass", "The input signature is unchanged.", metrics)
        breaking = [c for c in changes if c["status"] == "fail"]
        shown = breaking or changes
        text = "; ".join(_describe(c) for c in shown[:5])
        more = f" (and {len(shown) - 5} more)" if len(shown) > 5 else ""
        lead = "Breaking change to the input signature" if breaking else "Signature changed"
        return result(status, f"{lead}: {text}{more}.", metrics, {"changes": changes})


def _describe(c: dict) -> str:
    if c["change"] == "renamed":
        return f"column {c['before']!r} renamed to {c['after']!r}"
    if c["change"] == "retyped":
        return f"column {c['column']!r} retyped from {c['before']} to {c['after']}"
    if c["change"] == "reordered":
        return "columns reordered"
    return f"column {c['column']!r} {c['change']}"
