"""The promotion dossier: one signed zip a person reads (HTML) and a machine checks (JSON).

``gather`` reads the facts (on the registry's thread); ``build`` reads the reports from the
blob store and packs the archive. ``dossier.json`` lists the sha256 of every other file and
central's audit chain head; ``signature.json`` holds central's ed25519 signature over the
exact bytes of ``dossier.json``. ``dossier_verify`` checks all of it offline.
"""

from __future__ import annotations

import io
import json
import zipfile
from hashlib import sha256

from . import inventory_queries as q
from . import keys
from .audit import now
from .inventory import (
    firing_alerts,
    hand_trusted,
    production_history,
    sensitive_attributes,
    serving_of,
    sources_of,
)

FORMAT = "handoff-dossier/1"
JSON_NAME, SIG_NAME, HTML_NAME, AUDIT_NAME = (
    "dossier.json",
    "signature.json",
    "dossier.html",
    "audit.json",
)
REPORT_FILES = {"html": "report.html", "json": "report.json", "md": "model_card.md"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def gather(agent, name: str, number: int) -> dict:
    """Every fact the dossier holds, read from the registry (call on the registry thread)."""
    registry = agent.registry
    v = registry.get_version(name, number)
    subject = f"{name}:{number}"
    manifest = v.get("manifest") or {}
    prov = manifest.get("provenance") or {}
    first = q.first_audit_seq(registry, subject)
    chain = q.audit_from(registry, first) if first else []
    origin = v.get("origin") or {}
    anchor = agent.intake.anchor(origin.get("source")) if agent.intake and origin else None
    trust_changes = q.trust_audit(registry)
    reports = {k: registry.report_digest(name, number, k) for k in REPORT_FILES}
    history = q.stage_history(registry, name)
    policy = agent.policy.stages if agent.policy else {}
    central = agent.role == "central"
    return {
        "version": v,
        "reports": reports,
        "doc": {
            "format": FORMAT,
            "generated_at": now(),
            "generated_by": {"agent_id": agent.agent_id, "role": agent.role},
            "model": name,
            "version": number,
            "subject": subject,
            "bundle": {k: v.get(k) for k in ("digest", "size", "serialization", "flavor", "task")},
            "provenance": {
                "notebook": prov.get("notebook"),
                "cell_hash": prov.get("cell_hash"),
                "git": prov.get("git"),
                "environment": prov.get("environment"),
                "user": prov.get("user"),
                "host": prov.get("host"),
                "message": v.get("message"),
                "pushed_by": v.get("pushed_by"),
                "pushed_at": v.get("pushed_at"),
                "origin": origin,
            },
            "data": {
                "fingerprints": [
                    {"role": role, **{k: fp.get(k) for k in ("fingerprint", "rows", "schema")}}
                    for role, fp in (manifest.get("data") or {}).items()
                ],
                "lineage": v.get("lineage"),
                "sensitive_attributes": sensitive_attributes(v),
                "sources": {**sources_of(registry), "of_this_model": registry.watches(name)},
            },
            "checks": [
                {
                    **{k: c.get(k) for k in ("name", "status", "message", "duration")},
                    **{k: c.get(k) for k in ("started", "finished")},
                    "metrics": (c.get("result") or {}).get("metrics"),
                    "report": f"checks/{c['name']}.json",
                }
                for c in v.get("checks") or []
            ],
            "gate": {
                "verdict": (v.get("verdict") or {}).get("verdict"),
                "reasons": (v.get("verdict") or {}).get("reasons", []),
                "overrides": agent.gate.applied_overrides(manifest.get("gate")),
                "overrides_pushed": manifest.get("gate") or {},
                "thresholds": dict(agent.gate.thresholds),
                "blocking": list(agent.gate.blocking),
            },
            "signoffs": v.get("signoffs"),
            "signoffs_withdrawn": _withdrawn(chain, subject),
            "stages": _with_needed(v.get("stages") or [], chain, subject),
            # central's policy as the dossier is made; each stage change's audit entry
            # holds the sign-offs it needed then (signoffs_needed), and each start's the rule
            "policy": {"signoffs_needed": policy},
            "production_history": production_history(history),
            "serving": serving_of(registry, name, central),
            "monitoring": {
                "configured": central,
                "alerts": firing_alerts(registry, name, central),
            },
            "trust": {
                "types_added_by_hand": hand_trusted(v, trust_changes),
                "trust_list": registry.trust_added(),
                "decisions": [
                    s
                    for s in v.get("stages") or []
                    if s["stage"] == "needs_trust" or "trusted by" in (s.get("comment") or "")
                ],
                "trust_list_changes": trust_changes,
            },
            "audit": {
                "file": AUDIT_NAME,
                "head": {"seq": chain[-1]["seq"], "hash": chain[-1]["hash"]} if chain else None,
                "version_entries": [r["seq"] for r in chain if r["subject"] == subject],
                "entries_in_chain": len(chain),
                "entries_redacted": sum(not _ours(r, subject) for r in chain),
                "source_anchor": {"source": origin.get("source"), **anchor} if anchor else None,
            },
        },
        "audit_rows": [row if _ours(row, subject) else _redacted(row) for row in chain],
    }


def _withdrawn(chain: list[dict], subject: str) -> list[dict]:
    """Sign-offs taken back while the version waited: gone from ``signoffs`` (they no
    longer count), told here from their audit entries, with who withdrew them, when, why."""
    out = []
    for r in chain:
        if r["subject"] == subject and r["action"] == "signoff.withdraw":
            said = json.loads(r["payload"] or "{}")
            out.append({**said, "withdrawn_by": r["actor"], "withdrawn": r["time"]})
    return out


def _with_needed(stages: list[dict], chain: list[dict], subject: str) -> list[dict]:
    """Each stage change with the sign-offs the policy needed for it then, as its audit
    entry recorded (entries from before that was recorded say nothing)."""
    entered = [
        json.loads(r["payload"] or "{}").get("signoffs_needed")
        for r in chain
        if r["subject"] == subject and r["action"] == "stage.enter"
    ]
    if len(entered) != len(stages):  # the verifier names the difference
        return stages
    return [{**s, "signoffs_needed": n} for s, n in zip(stages, entered, strict=True)]


LINK_KEYS = ("seq", "prev_hash", "hash")


def _ours(row: dict, subject: str) -> bool:
    """Rows the dossier shows in full: this version's, and the trust list's changes."""
    return row["subject"] == subject or str(row["action"]).startswith("trust.")


def _redacted(row: dict) -> dict:
    """Another model's entry: only its links, so the chain still verifies up to the signed
    head while the dossier tells an outside reader nothing about other models."""
    return {**{k: row[k] for k in LINK_KEYS}, "redacted": True}


def _dump(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def build(facts: dict, read_blob, key) -> bytes:
    """The zip, signed with ``key``. ``read_blob(digest)`` reads a verified report."""
    from .dossier_html import render  # jinja2: only when a dossier is made

    doc, v = facts["doc"], facts["version"]
    files: dict[str, bytes] = {}
    for kind, digest in facts["reports"].items():
        if digest:
            files[REPORT_FILES[kind]] = read_blob(digest)
    for c in v.get("checks") or []:
        files[f"checks/{c['name']}.json"] = _dump(c)
    files[AUDIT_NAME] = _dump({"head": doc["audit"]["head"], "rows": facts["audit_rows"]})
    doc["model_card"] = files.get("model_card.md", b"").decode() or None
    doc["reports"] = {
        kind: {"file": REPORT_FILES[kind], "digest": d} if d else None
        for kind, d in facts["reports"].items()
    }
    public = key.public_key()
    doc["signer"] = {"algorithm": keys.ALGORITHM, "key_id": keys.key_id(public)}
    files[HTML_NAME] = render(doc).encode()
    doc["files"] = {name: sha256(data).hexdigest() for name, data in sorted(files.items())}
    body = _dump(doc)
    signature = {
        "algorithm": keys.ALGORITHM,
        "key_id": keys.key_id(public),
        "public_key": keys.describe(public)["public_key"],
        "signed_file": JSON_NAME,
        "signature": keys.sign(key, body),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [(JSON_NAME, body), (SIG_NAME, _dump(signature)), *sorted(files.items())]:
            z.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)
    return out.getvalue()


def filename(name: str, number: int) -> str:
    return f"dossier-{name}-{number}.zip"
