"""The model inventory: one row per model with what a risk team asks, and risk tags.

Each row describes the model's version in production when it has one, else its newest
version. Facts come from the registry: where the model serves (central's slots), its firing
monitoring alerts, and the sources watched for it. A local agent serves and monitors nothing,
so its rows say so (``where: null``, no alerts, a note) instead of guessing. At central, a
model known only from ``monitor import`` (served elsewhere) has a row too, ``imported:
true``, with its firing alerts and nothing else known.
"""

from __future__ import annotations

import json
import re

from . import inventory_queries as q
from .errors import BadRequest
from .names import NAME_RE
from .shell import visible
from .vocabulary import STAGE_ALIASES, STAGES

RISK_TAGS = {
    "uses_sensitive_attributes": "its checks grouped results by a sensitive attribute",
    "fairness_failed_or_warned": "its last fairness check failed or warned",
    "production_with_open_alert": "it is in production and has an open monitoring alert",
    "data_changed_since_validation": "versions pushed after it brought other data for a role "
    "it was validated on",
    "trusted_types_added_by_hand": "loading it needed types an admin added to the trust list",
}
NOT_SERVING = "not deployed: no version of it serves"
LOCAL_SERVING = "not deployed here: models serve at central (--agent central)"
MONITORING_NOTES = {
    True: "alerts: those firing at central's monitor",
    False: "monitoring runs at central: this agent computes no alerts",
}
IMPORTED_SERVING = (
    "served elsewhere: monitored here from an imported prediction log (`jupyter handoff "
    "monitor import`)"
)
SOURCES_NOTE = (
    "no data source is watched here: data is known by its fingerprints only, and "
    "'data changed since validation' compares the data later pushes of the same model brought"
)
ALERT_FIELDS = ("kind", "window", "value", "threshold", "fired", "action")
WAITING = "waiting for an admin to trust: "
HEX_RE = re.compile(r"^[0-9a-f]{8,64}$")
TEXT_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")
FILTERS = ("tag", "stage", "owner", "dataset", "sensitive")


def parse_filters(raw: dict[str, str | None]) -> dict[str, str]:
    """The filters given, validated; a bad one is a 400 that says what is accepted."""
    out = {k: v for k, v in raw.items() if v not in (None, "")}
    if (tag := out.get("tag")) is not None and "=" not in tag and tag not in RISK_TAGS:
        raise BadRequest(
            f"Unknown tag {tag!r}.",
            f"Use a risk tag ({', '.join(RISK_TAGS)}) or a push tag as KEY=VALUE.",
            code="unknown_tag",
        )
    if "stage" in out:
        out["stage"] = STAGE_ALIASES.get(out["stage"], out["stage"])
    if (stage := out.get("stage")) is not None and stage not in STAGES:
        raise BadRequest(
            f"Unknown stage {stage[:40]!r}.", f"Use one of: {', '.join(STAGES)}.", code="bad_filter"
        )
    if (fp := out.get("dataset")) is not None:
        fp = out["dataset"] = fp.lower().removeprefix("sha256:")
        if not HEX_RE.fullmatch(fp):
            raise BadRequest(
                "dataset must be a data fingerprint: 8 to 64 hex digits (a prefix is enough).",
                "`%mlops lineage NAME:N` shows a version's fingerprints. Data-source tracking "
                "is not configured, so data is known by its fingerprint, not a source name.",
                code="bad_filter",
            )
    if (owner := out.get("owner")) is not None and not NAME_RE.fullmatch(owner):
        raise BadRequest("owner must be a user name.", code="bad_filter")
    if (col := out.get("sensitive")) is not None and not TEXT_RE.fullmatch(col):
        raise BadRequest("sensitive must be a column name.", code="bad_filter")
    return out


def sensitive_attributes(version: dict) -> list[str]:
    data = (version.get("manifest") or {}).get("data") or {}
    return [c["name"] for c in (data.get("sensitive") or {}).get("schema") or []]


def check_summary(version: dict, name: str) -> dict | None:
    c = next((c for c in version.get("checks") or [] if c["name"] == name), None)
    if c is None:
        return None
    metrics = (c.get("result") or {}).get("metrics") or {}
    return {
        "status": c["status"],
        "message": c.get("message"),
        "finished": c.get("finished"),
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))},
    }


def data_of(version: dict) -> list[dict]:
    return [
        {"role": r["role"], "fingerprint": r["dataset"], "rows": r.get("rows"), "source": None}
        for r in version.get("lineage") or []
        if r.get("dataset")
    ]


def hand_trusted(version: dict, trust_changes: list[dict]) -> list[dict]:
    """The types this version waited for before central loaded it, that an admin added to
    the trust list by hand: who, when, and the audit entry that recorded it."""
    waited: set[str] = set()
    for s in version.get("stages") or []:
        comment = s.get("comment") or ""
        if s["stage"] == "needs_trust" and comment.startswith(WAITING):
            waited |= {t.strip() for t in comment[len(WAITING) :].split(",") if t.strip()}
    out = []
    for row in trust_changes:
        if row["action"] != "trust.add":
            continue
        for t in json.loads(row["payload"]).get("types", []):
            if t in waited:
                out.append(
                    {
                        "type": t,
                        "trusted_by": row["actor"],
                        "time": row["time"],
                        "audit_seq": row["seq"],
                    }
                )
    return out


def data_changes(registry, version: dict) -> list[dict]:
    """Later pushes of the same model that brought other data for a role this one used."""
    mine = {d["role"]: d["fingerprint"] for d in data_of(version)}
    out = []
    for r in q.later_data(registry, version["model"], version["number"]):
        if r["role"] in mine and r["dataset"] != mine[r["role"]]:
            out.append(
                {
                    "role": r["role"],
                    "validated_on": mine[r["role"]],
                    "now": r["dataset"],
                    "version": r["number"],
                }
            )
    return out


def production_history(rows: list[dict]) -> list[dict]:
    """When each version entered production and when (and how) it left: mlflow#2169."""
    out, current = [], {}
    for r in rows:
        n = r["number"]
        if r["stage"] == "production":
            current[n] = {"version": n, "since": r["since"], "by": r["by"], "until": None}
            out.append(current[n])
        elif n in current:
            current.pop(n).update(until=r["since"], left_as=r["stage"], left_by=r["by"])
    return out


def serving_of(registry, name: str, central: bool) -> dict:
    """Where ``name`` serves now: 'production v2 (90 %), canary v3 (10 %)', and each slot."""
    from .serving.deploy import shares

    rows = registry.slots_of(name) if central else []
    traffic = shares(rows)
    live = [r for r in rows if traffic[r["slot"]] > 0]
    return {
        "deployed": bool(live),
        "where": ", ".join(f"{r['slot']} v{r['number']} ({traffic[r['slot']]:g} %)" for r in live)
        or None,
        "note": "" if live else NOT_SERVING if central else LOCAL_SERVING,
        "slots": [
            {"slot": r["slot"], "version": r["number"], "traffic": traffic[r["slot"]]} for r in rows
        ],
    }


def firing_alerts(registry, name: str, central: bool) -> list[dict]:
    if not central:
        return []
    return [{k: a.get(k) for k in ALERT_FIELDS} for a in registry.alerts_of(name, "firing")]


def model_row(
    registry,
    model: dict,
    latest: int,
    production: int | None,
    trust_changes,
    central: bool = False,
) -> dict:
    number = production or latest
    v = registry.get_version(model["name"], number)
    sensitive = sensitive_attributes(v)
    fairness = check_summary(v, "fairness")
    drift = check_summary(v, "drift")
    signoff = (v.get("signoffs") or [None])[-1]
    risk = {}
    if sensitive:
        risk["uses_sensitive_attributes"] = sensitive
    if fairness and fairness["status"] in ("fail", "warn", "error"):
        risk["fairness_failed_or_warned"] = {
            "status": fairness["status"],
            "message": fairness["message"],
        }
    if changes := data_changes(registry, v):
        risk["data_changed_since_validation"] = changes
    if trusted := hand_trusted(v, trust_changes):
        risk["trusted_types_added_by_hand"] = trusted
    alerts = firing_alerts(registry, model["name"], central)
    if production and alerts:
        risk["production_with_open_alert"] = sorted({a["kind"] for a in alerts})
    return {
        "name": model["name"],
        "owner": model.get("owner"),
        "latest_version": latest,
        "version": number,
        "described": "production" if production else "latest",
        "stage": v.get("stage"),
        "status": v.get("status"),
        "verdict": v.get("verdict"),
        "digest": v.get("digest"),
        "pushed_by": v.get("pushed_by"),
        "pushed_at": v.get("pushed_at"),
        "serving": serving_of(registry, model["name"], central),
        "data": data_of(v),
        "sensitive_attributes": sensitive,
        "fairness": fairness,
        "drift": drift,
        "alerts": alerts,
        "last_signoff": signoff,
        "production_history": production_history(q.stage_history(registry, model["name"])),
        "tags": (v.get("manifest") or {}).get("tags") or v.get("tags") or {},
        "risk_tags": sorted(risk),
        "risk": risk,
        "imported": False,
    }


def imported_row(registry, name: str) -> dict:
    """A model known only from ``monitor import`` (served elsewhere): no version here, so
    only its monitoring, its firing alerts, is known."""
    return {
        "name": name,
        "owner": None,
        "latest_version": None,
        "version": None,
        "described": "imported",
        "stage": None,
        "status": None,
        "verdict": None,
        "digest": None,
        "pushed_by": None,
        "pushed_at": None,
        "serving": {"deployed": None, "where": None, "note": IMPORTED_SERVING, "slots": []},
        "data": [],
        "sensitive_attributes": [],
        "fairness": None,
        "drift": None,
        "alerts": firing_alerts(registry, name, True),
        "last_signoff": None,
        "production_history": [],
        "tags": {},
        "risk_tags": [],
        "risk": {},
        "imported": True,
    }


def matches(row: dict, f: dict[str, str]) -> bool:
    if (tag := f.get("tag")) is not None:
        if "=" in tag:
            k, _, val = tag.partition("=")
            if str(row["tags"].get(k)) != val:
                return False
        elif tag not in row["risk_tags"]:
            return False
    if "stage" in f and row["stage"] != f["stage"]:
        return False
    if "owner" in f and row["owner"] != f["owner"]:
        return False
    if "dataset" in f and not any(d["fingerprint"].startswith(f["dataset"]) for d in row["data"]):
        return False
    return not ("sensitive" in f and f["sensitive"] not in row["sensitive_attributes"])


def inventory(registry, filters: dict[str, str] | None = None, central: bool = False) -> dict:
    """Every model (filtered), with notes that say what this agent does not track
    (``central``: whether it serves and monitors)."""
    filters = filters or {}
    latest = q.latest_numbers(registry)
    production = q.numbers_in_stage(registry, "production")
    trust_changes = q.trust_audit(registry)
    rows = []
    for m in registry.list_models():
        if m["name"] not in latest:
            continue
        row = model_row(
            registry, m, latest[m["name"]], production.get(m["name"]), trust_changes, central
        )
        if matches(row, filters):
            rows.append(row)
    if central:  # models monitored from an imported log, with no version here
        imported = [imported_row(registry, n) for n in registry.imported_names()]
        rows += [r for r in imported if matches(r, filters)]
        rows.sort(key=lambda r: r["name"])
    return {
        "models": rows,
        "count": len(rows),
        "filters": filters,
        "risk_tags": RISK_TAGS,
        "serving": {"configured": central, "note": "" if central else LOCAL_SERVING},
        "monitoring": {"configured": central, "note": MONITORING_NOTES[central]},
        "data_sources": sources_of(registry),
    }


def sources_of(registry) -> dict:
    """Whether data sources are watched here (``jupyter handoff lineage`` shows them)."""
    watched = len(registry.watches())
    if not watched:
        return {"tracked": False, "watched": 0, "note": SOURCES_NOTE}
    return {
        "tracked": True,
        "watched": watched,
        "note": f"{watched} data source{'s' * (watched != 1)} watched (`jupyter handoff "
        "lineage` shows them)",
    }


CSV_COLUMNS = (
    "name",
    "owner",
    "latest_version",
    "version",
    "stage",
    "serving",
    "datasets",
    "sensitive_attributes",
    "fairness",
    "drift",
    "alerts",
    "last_signoff",
    "risk_tags",
)


def flat(row: dict) -> dict:
    """One row as plain strings, for the table and CSV forms; control characters in what
    analysts named (columns, tags) shown as escapes, never sent to a terminal."""
    s = row.get("last_signoff")
    out = {
        "name": row["name"],
        "owner": row["owner"] or "",
        "latest_version": str(row["latest_version"] or ""),
        "version": str(row["version"] or "imported"),
        "stage": row["stage"] or "",
        "serving": row["serving"]["where"]
        or ("at central (--agent central)" if row["serving"]["note"] == LOCAL_SERVING else "")
        or ("elsewhere (imported log)" if row.get("imported") else "")
        or "not deployed",
        "datasets": " ".join(f"{d['role']}:{d['fingerprint'][:12]}" for d in row["data"]),
        "sensitive_attributes": " ".join(row["sensitive_attributes"]),
        "fairness": (row["fairness"] or {}).get("status", ""),
        "drift": (row["drift"] or {}).get("status", ""),
        "alerts": str(len(row["alerts"])),
        "last_signoff": f"{s['user']} ({s['role']}, {s['decision']}) {s['time']}" if s else "",
        "risk_tags": " ".join(row["risk_tags"]),
    }
    return {k: visible(v) for k, v in out.items()}


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=1, default=str)
