"""Data sources a model watches, and the lineage graph, from the notebook
(``%mlops watch``, ``%mlops lineage SOURCE``). Thin over the agent's ``/api/v1/watches``."""

from __future__ import annotations

import html
import os
import urllib.parse

from handoff_agent.shell import visible
from handoff_agent.vocabulary import (
    NOT_SQL_SCHEMES,
    period_text,
    watch_last_text,
    watch_line,
    watch_trigger_text,
)

from .client import connect
from .errors import HandoffUsageError
from .refs import checked_name

ON = ("change", "schema", "drift", "overdue")


def _absolute(source: str) -> str:
    """A path (or glob) as the agent needs it: absolute, from the kernel's directory."""
    if "://" in source and not source.startswith("file://"):
        return source
    path = source[len("file://") :] if source.startswith("file://") else source
    return os.path.abspath(os.path.expanduser(path))


def watch(
    model: str,
    source: str | None = None,
    *,
    query: str | None = None,
    every: str = "1h",
    overdue: str | None = None,
    on=("change",),
    run: str | None = None,
    actions=None,
    params: dict | None = None,
    timeout: float = 600,
    target: str | None = None,
):
    """Watch ``source`` (a file, a glob of Parquet/CSV files, or a SQLAlchemy URL with
    ``query``) for ``model``, like ``%mlops watch``. Without ``source``: the model's watched
    sources. The agent fingerprints it now (the baseline), then every ``every``; with no new
    data for longer than ``overdue`` (default: twice ``every``) the source is overdue.
    ``target``: the rows' label column, which the ``revalidate`` action scores against."""
    checked_name(model)
    client = connect(start=False)
    if source is None:
        return Watches(client.get(f"/api/v1/watches?model={model}")["watches"])
    on = [on] if isinstance(on, str) else list(on)
    bad = [o for o in on if o not in ON]
    if bad:
        raise HandoffUsageError(
            f"--on {bad[0]!r} is not a change a watch knows.", f"Use one of: {', '.join(ON)}."
        )
    body = {"model": model, "source": _absolute(source), "every": every, "on": on}
    scheme = body["source"].partition("://")[0].lower()
    if "://" in body["source"] and not query and scheme not in NOT_SQL_SCHEMES:  # agent says
        raise HandoffUsageError(
            "A SQL source needs a query.", "Add --query 'SELECT * FROM events'."
        )
    if run is not None:
        path = os.path.abspath(os.path.expanduser(run))
        if not path.endswith(".ipynb") or not os.path.isfile(path):
            raise HandoffUsageError(
                f"No notebook at {run!r}.", "Give --run the path of an existing .ipynb file."
            )
        body["run"] = path
    pairs = (
        ("query", query),
        ("overdue", overdue),
        ("actions", actions),
        ("params", params),
        ("target", target),
    )
    for key, value in pairs:
        if value is not None:
            body[key] = list(value) if key == "actions" else value
    body["timeout"] = timeout
    return Watches([client.post("/api/v1/watches", body)])


def unwatch(model: str, source_id: int) -> Watches:
    """Stop watching source ``source_id`` (the ``[N]`` a listing shows) for ``model``;
    returns the model's watched sources left."""
    checked_name(model)
    client = connect(start=False)
    rows = client.get(f"/api/v1/watches?model={model}")["watches"]
    if source_id not in [w["id"] for w in rows]:
        listed = ", ".join(f"[{w['id']}] {w['source']}" for w in rows[:5])
        raise HandoffUsageError(
            f"{model} watches no source [{source_id}].",
            f"It watches: {visible(listed)}." if rows else f"{model} watches no data source.",
        )
    client.delete(f"/api/v1/watches/{source_id}")
    return Watches([w for w in rows if w["id"] != source_id])


def lineage_graph(ref: str | None = None) -> LineageGraph:
    """The lineage graph around a source (path, URL or id), a fingerprint or a model."""
    client = connect(start=False)
    query = "" if ref is None else "?ref=" + urllib.parse.quote(ref, safe="")
    return LineageGraph(client.get("/api/v1/lineage/graph" + query))


def is_source_ref(ref: str) -> bool:
    """A path, glob or URL (a model name never holds / or *), or a data file's name here."""
    if any(c in ref for c in "/*") or "://" in ref:
        return True
    return ref.lower().endswith((".parquet", ".pq", ".csv")) or os.path.isfile(ref)


def source_ref(ref: str) -> str:
    return _absolute(ref) if is_source_ref(ref) and "://" not in ref else ref


REPLACED = "\nReplaced the earlier settings of [{id}]: one watch per source."


class Watches(list):
    """Watched sources, shown as a table: source, period, what triggers, last change and
    what it set off (a revalidation's verdict)."""

    def __repr__(self) -> str:
        return (
            "\n".join(
                visible(watch_line(w) + (REPLACED.format(id=w["id"]) if w.get("replaced") else ""))
                for w in self
            )
            or "No watched sources."
        )

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{w['id']}</td><td>{e(w['model'])}</td><td><code>{e(w['source'])}</code>"
            f"</td><td>{period_text(w['every'])}</td><td>{e(', '.join(w['on']))}</td>"
            f"<td>{e(', '.join(w['actions']))}</td>"
            f"<td>{e(watch_last_text(w))}</td>"
            f"<td>{e(watch_trigger_text(w.get('last_trigger')))}</td></tr>"
            for w in self
        )
        head = (
            "<tr><th>id</th><th>model</th><th>source</th><th>every</th><th>on</th>"
            "<th>actions</th><th>last change</th><th>last trigger</th></tr>"
        )
        return f"<table>{head}{rows}</table>" if self else "No watched sources."


class LineageGraph(dict):
    """Which models use which data, where each serves now, and which change triggered which
    retrain. A dict (nodes, edges), shown as a table of edges."""

    def _label(self, node_id: str) -> str:
        n = next((n for n in self["nodes"] if n["id"] == node_id), {"id": node_id})
        kind = n.get("kind")
        if kind == "source":
            return f"source {n['source']}"
        if kind == "dataset":
            return f"dataset {n['fingerprint'][:12]}…"
        if kind == "version":
            where = ", ".join(f"{s['slot']} {s['traffic']:g}%" for s in n.get("serving", []))
            return f"{n['model']}:{n['number']} ({where or n.get('stage') or n.get('status')})"
        if kind == "trigger":
            return f"{n.get('change')} → {n.get('action')} ({n.get('state', '')})"
        return f"model {n.get('model')}"

    def __repr__(self) -> str:
        lines = [
            visible(f"{self._label(e['from'])} -[{e['kind']}]-> {self._label(e['to'])}")
            for e in self["edges"]
        ]
        return "\n".join(lines) or "LineageGraph(empty)"

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(self._label(x['from']))}</td><td>{e(x['kind'])}</td>"
            f"<td>{e(self._label(x['to']))}</td></tr>"
            for x in self["edges"]
        )
        return f"<table><tr><th>from</th><th></th><th>to</th></tr>{rows}</table>"
