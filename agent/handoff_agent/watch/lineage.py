"""The lineage graph: which data each model uses (watched sources and the datasets
fingerprinted at push), where each version serves now, and which change triggered which
retrain. Plain dicts, exported as JSON or Graphviz dot."""

from __future__ import annotations

from ..errors import NotFound
from .service import triggered_by


def graph(store, ref: str | None = None) -> dict:
    """The whole graph, or the part reachable from ``ref``: a source (id, path or redacted
    URL), a source snapshot's fingerprint (or a prefix of 8+ hex digits), a dataset
    fingerprint, or a model name."""
    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    serving: dict[tuple, list] = {}
    for s in store.slots_of():
        if s["slot"] in ("production", "canary", "shadow"):
            serving.setdefault((s["model"], s["number"]), []).append(
                {"slot": s["slot"], "traffic": s["traffic"]}
            )

    def version(model, number, stage=None, status=None):
        key = f"version:{model}:{number}"
        nodes.setdefault(
            key,
            {
                "id": key,
                "kind": "version",
                "model": model,
                "number": number,
                "stage": stage,
                "status": status,
                "serving": serving.get((model, number), []),
            },
        )
        return key

    for v in store.versions_with_manifests():
        version(v["model"], v["number"], v["stage"], v["status"])
    for link in store.dataset_links():
        key = f"dataset:{link['dataset']}"
        nodes.setdefault(key, {"id": key, "kind": "dataset", "fingerprint": link["dataset"]})
        edges.append(
            {"from": key, "to": version(link["model"], link["number"]), "kind": link["role"]}
        )
    # every source ever watched: a removed watch's changes and the retrains they caused stay
    # in the graph (``removed``), each trigger with its snapshot's fingerprint, however old
    for w in store.watches_ever():
        key = f"source:{w['id']}"
        nodes[key] = {
            "id": key,
            "kind": "source",
            "source": w["source"],
            "type": w["kind"],
            "model": w["model"],
            "on": w["on"],
            "actions": w["actions"],
            "removed": w["removed"],
        }
        mkey = f"model:{w['model']}"
        nodes.setdefault(mkey, {"id": mkey, "kind": "model", "model": w["model"]})
        edges.append({"from": key, "to": mkey, "kind": "watched_by"})
        for tr in store.triggers_traced(w["id"]):
            tkey = f"trigger:{tr['id']}"
            nodes[tkey] = {
                "id": tkey,
                "kind": "trigger",
                "action": tr["action"],
                "change": tr["change"],
                "state": tr["state"],
                "time": tr["time"],
                "fingerprint": tr["fingerprint"],
            }
            edges.append({"from": key, "to": tkey, "kind": "changed"})
    for v in store.versions_with_manifests():
        cause = triggered_by(v)
        if cause and cause.get("trigger") is not None:
            # a version delivered here was retrained by its sender's trigger, numbered there:
            # never this agent's trigger of the same number
            sender = (v.get("origin") or {}).get("source")
            tkey = f"trigger:{sender + ':' if sender else ''}{cause['trigger']}"
            nodes.setdefault(
                tkey,
                {
                    "id": tkey,
                    "kind": "trigger",
                    "action": "retrain",
                    "change": cause.get("change"),
                    "fingerprint": cause.get("fingerprint"),
                    "source": cause.get("source"),
                    **({"agent": sender} if sender else {}),
                },
            )
            edges.append(
                {"from": tkey, "to": version(v["model"], v["number"]), "kind": "retrained"}
            )
    for key in [k for k in nodes if k.startswith("version:")]:
        model = nodes[key]["model"]
        if f"model:{model}" in nodes:
            edges.append({"from": f"model:{model}", "to": key, "kind": "version"})
    out = {"nodes": list(nodes.values()), "edges": edges}
    return _reachable(out, _roots(out, ref)) if ref else out


def _roots(g: dict, ref: str) -> set[str]:
    ref = ref.strip()
    hexy = len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref.lower())
    roots = set()
    for n in g["nodes"]:
        if (
            (n["kind"] == "source" and ref in (n["source"], n["id"], n["id"].split(":")[1]))
            or (
                hexy
                and n["kind"] in ("dataset", "trigger")
                and (n.get("fingerprint") or "").startswith(ref.lower())
            )
            or (n["kind"] in ("model", "version") and n.get("model") == ref)
        ):
            roots.add(n["id"])
    if not roots:
        raise NotFound(
            f"Nothing in the lineage matches {ref!r}.",
            "Give a watched source (its path, URL or id), a fingerprint (8+ hex digits) or a "
            "model name; `%mlops watch` lists the sources.",
            code="no_lineage",
        )
    return roots


def _reachable(g: dict, roots: set[str]) -> dict:
    """What lies downstream of the roots (data -> models -> versions), plus the data
    upstream of a version or model root."""
    keep = set(roots)
    changed = True
    while changed:
        changed = False
        for e in g["edges"]:
            if e["from"] in keep and e["to"] not in keep:
                keep.add(e["to"])
                changed = True
    for e in g["edges"]:
        if e["to"] in roots:
            keep.add(e["from"])
    return {
        "nodes": [n for n in g["nodes"] if n["id"] in keep],
        "edges": [e for e in g["edges"] if e["from"] in keep and e["to"] in keep],
    }


def dot(g: dict) -> str:
    """Graphviz dot: sources and datasets as cylinders, versions as boxes (their slots and
    stage in the label), triggers as diamonds."""
    shapes = {"source": "cylinder", "dataset": "cylinder", "version": "box", "trigger": "diamond"}
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for n in g["nodes"]:
        shape = shapes.get(n["kind"], "ellipse")
        lines.append(f"  {_quoted(n['id'])} [shape={shape}, label={_quoted(_label(n))}];")
    for e in g["edges"]:
        lines.append(f"  {_quoted(e['from'])} -> {_quoted(e['to'])} [label={_quoted(e['kind'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quoted(text) -> str:
    """A dot string: ids and labels carry what pushes wrote (a source, a manifest's trigger),
    which must not close the quotes and add attributes (``URL="javascript:..."``)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(n: dict) -> str:
    if n["kind"] == "source":
        return f"{n['source']}{' (removed)' if n.get('removed') else ''}"
    if n["kind"] == "dataset":
        return f"dataset {n['fingerprint'][:12]}"
    if n["kind"] == "version":
        where = ", ".join(f"{s['slot']} {s['traffic']:g}%" for s in n["serving"])
        return f"{n['model']}:{n['number']} {where or n.get('stage') or ''}".strip()
    if n["kind"] == "trigger":
        return f"{n.get('change')} -> {n.get('action')}"
    return n.get("model", n["id"])
