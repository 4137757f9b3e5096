"""Watched data sources and the lineage graph: thin over ``watch.service`` and
``watch.lineage``."""

from __future__ import annotations

from ..errors import BadRequest, Conflict, NotFound
from ..names import validate_name
from ..watch import lineage
from .base import BaseHandler

WRITERS = ("analyst", "admin")


def writers(agent) -> tuple[str, ...]:
    """Who may add, remove or check a watch. At central a watch reads whatever central can
    reach (its files, databases on its network) with central's access, on every analyst's
    behalf: an admin's act there, as the policy's ``[[watch]]`` tables are."""
    return ("admin",) if agent.role == "central" else WRITERS


class WatchesHandler(BaseHandler):
    """GET: the watched sources (of ``?model=``), each with its last fingerprint.
    POST: watch a source; the first fingerprint (the baseline) is taken before the answer."""

    @property
    def roles(self):
        return {"GET": BaseHandler.roles["GET"], "POST": writers(self.agent)}

    async def _known_at_central(self, model) -> None:
        """At central a watch is an admin's, for a model central holds: a typo is a 404
        naming it, not a watch whose actions find nothing. (A local agent's may come first:
        its retraining notebook pushes the model's first version.)"""
        if self.agent.role == "central" and isinstance(model, str):
            validate_name(model)
            await self.known_model(model, monitored=True)

    async def get(self):
        model = self.get_query_argument("model", None)
        if model is not None:
            validate_name(model)
            await self._known_at_central(model)
        agent = self.agent
        rows = await agent.read(agent.registry.watches, model)
        for row in rows:
            row["last"] = _brief(await agent.read(agent.registry.snapshot_last, row["id"]))
            row["last_trigger"] = _trigger(await agent.read(agent.registry.trigger_last, row["id"]))
            row.update(_unreadable(row["last"], row["last_trigger"]))
        self.write_json({"watches": rows})

    async def post(self):
        body = self.json_body()
        await self._known_at_central(body.get("model"))
        row = await self.agent.watches.add(body, self.identity["user"])
        self.write_json(row, 201)


class WatchHandler(BaseHandler):
    """GET: one source with its fingerprint history and triggers. DELETE: stop watching."""

    @property
    def roles(self):
        return {"GET": BaseHandler.roles["GET"], "DELETE": writers(self.agent)}

    async def _row(self, source_id: str) -> dict:
        row = await self.agent.read(self.agent.registry.watch_get, int(source_id))
        if row is None:
            raise NotFound(
                f"No watched source {source_id}.", "`%mlops watch` lists them.", code="no_source"
            )
        return row

    async def get(self, source_id: str):
        agent, row = self.agent, await self._row(source_id)
        snaps = await agent.read(agent.registry.snapshots, row["id"])
        row["snapshots"] = [_brief(s) for s in snaps]
        row["triggers"] = await agent.read(agent.registry.triggers_of, row["id"])
        self.write_json(row)

    async def delete(self, source_id: str):
        _still_watched(await self._row(source_id))
        await self.agent.call(
            self.agent.registry.watch_remove, int(source_id), self.identity["user"]
        )
        self.write_json({"removed": int(source_id)})


class WatchCheckHandler(BaseHandler):
    """POST: fingerprint the source now (off schedule), with whatever it triggers."""

    @property
    def roles(self):
        return {"POST": writers(self.agent)}

    async def post(self, source_id: str):
        row = await self.agent.read(self.agent.registry.watch_get, int(source_id))
        if row is None:
            raise NotFound(f"No watched source {source_id}.", code="no_source")
        _still_watched(row)
        self.write_json(await self.agent.watches.check(row["id"]))


def _still_watched(row: dict) -> None:
    """A removed watch keeps its history (GET) but is neither checked nor removed again."""
    if not row.get("active", 1):
        raise Conflict(
            f"Watch {row['id']} ({row['source']}) was removed; nothing was done.",
            "`%mlops watch` lists the sources watched now; watch it again to restart.",
            code="watch_removed",
        )


class RevalidationsHandler(BaseHandler):
    """GET: the version's revalidations (its checks re-run on a watched source's new rows by
    the revalidate action), oldest first, each with its checks' results and verdict."""

    async def get(self, name: str, number: str):
        validate_name(name)
        agent = self.agent
        vid = await agent.read(agent.registry.version_id, name, int(number))
        rows = await agent.read(agent.registry.revalidations_of, vid)
        self.write_json({"model": name, "version": int(number), "revalidations": rows})


class LineageGraphHandler(BaseHandler):
    """The lineage graph (of ``?ref=``: a source, a fingerprint or a model) as JSON or dot."""

    async def get(self):
        ref = self.get_query_argument("ref", None)
        fmt = self.get_query_argument("format", "json")
        if fmt not in ("json", "dot"):
            raise BadRequest(f"Unknown format {fmt!r}.", "Use format=json or format=dot.")
        g = await self.agent.read(lineage.graph, self.agent.registry, ref or None)
        if fmt == "dot":
            self.set_header("Content-Type", "text/vnd.graphviz; charset=utf-8")
            self.finish(lineage.dot(g))
        else:
            self.write_json(g)


def _trigger(row: dict | None) -> dict | None:
    """What the source's last change set off, and how it ended (a revalidation's verdict)."""
    if row is None:
        return None
    detail = row.get("detail") or {}
    keep = ("verdict", "revalidation", "version", "error", "why", "since")
    return {
        **{k: row.get(k) for k in ("id", "time", "change", "action", "state")},
        **{k: detail[k] for k in keep if detail.get(k) is not None},
    }


def _unreadable(last: dict | None, trigger: dict | None) -> dict:
    """``error`` and ``error_since`` while the source cannot be read (its last check failed
    after its last good fingerprint), for the listings; else nothing."""
    if not trigger or trigger["change"] != "error" or trigger.get("error") is None:
        return {}
    if last is not None and last["time"] >= trigger["time"]:
        return {}
    return {"error": trigger["error"], "error_since": trigger.get("since") or trigger["time"]}


def _brief(snap: dict | None) -> dict | None:
    if snap is None:
        return None
    keep = ("id", "time", "fingerprint", "rows", "size", "schema_hash", "max_updated", "change")
    return {**{k: snap.get(k) for k in keep}, "psi": snap.get("psi")}
