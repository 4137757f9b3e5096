"""Check a dossier offline: its files, its audit rows against central's chain head, and
central's ed25519 signature. No agent runs; the only input besides the zip is the key.

Each failure is one ``Failed(what, why)``: what failed (a file, an audit entry, the key, the
signature) and why, so the command prints one line that names it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from . import keys
from .audit import GENESIS, row_hash
from .dossier import AUDIT_NAME, FORMAT, JSON_NAME, LINK_KEYS, SIG_NAME

ROW_KEYS = ("seq", "time", "actor", "action", "subject", "payload", "prev_hash", "hash")


class Failed(Exception):
    def __init__(self, what: str, why: str):
        super().__init__(f"{what}: {why}")
        self.what, self.why = what, why


def _read(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if len(names) != len(set(names)):
                raise Failed("archive", "it holds two members with the same name")
            return {n: z.read(n) for n in names}
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise Failed("archive", f"not a readable dossier zip ({e})") from None


def _json(files: dict[str, bytes], name: str) -> dict:
    if name not in files:
        raise Failed(name, "missing from the archive")
    try:
        out = json.loads(files[name])
    except ValueError:
        raise Failed(name, "is not valid JSON: it was changed") from None
    if not isinstance(out, dict):
        raise Failed(name, "is not a JSON object")
    return out


def check_key(sig: dict, pinned: list[keys.Ed25519PublicKey] | None):
    """The key to verify with: the pinned one the dossier names (given several, as central
    lists its current and retired keys, the one whose id it names)."""
    try:
        embedded = keys.from_raw_b64(str(sig.get("public_key", "")))
    except keys.BadKey:
        raise Failed(SIG_NAME, "holds no readable ed25519 public key") from None
    if not pinned:
        return embedded
    match = [k for k in pinned if keys.key_id(k) == keys.key_id(embedded)]
    if not match:
        given = ", ".join(keys.key_id(k) for k in pinned)
        raise Failed(
            "key",
            f"the dossier is signed by key {keys.key_id(embedded)}, not by the given "
            f"key{'s' if len(pinned) > 1 else ''} {given} (central's keys, retired ones too, "
            "are at GET /api/v1/keys)",
        )
    return match[0]


def check_audit(doc: dict, chain: dict) -> int:
    """Every row re-hashes, each links to the one before, the last is the signed head, and
    every entry about this version is there. Returns the number of rows."""
    head, rows = (doc.get("audit") or {}).get("head"), chain.get("rows")
    if not isinstance(rows, list) or not rows or not isinstance(head, dict):
        raise Failed("audit", "the dossier carries no audit entries or no chain head")
    prev = None
    for row in rows:
        if isinstance(row, dict) and row.get("redacted") is True:  # another model's entry
            if set(row) != {*LINK_KEYS, "redacted"}:
                raise Failed(f"audit entry {row.get('seq')}", "a redacted entry was altered")
        elif not isinstance(row, dict) or not all(k in row for k in ROW_KEYS):
            raise Failed("audit", "an entry is malformed")
        elif row_hash(row["prev_hash"], row) != row["hash"]:
            raise Failed(
                f"audit entry {row['seq']}",
                f"({row['action']} {row['subject']}) does not match its hash: it was edited",
            )
        if prev is not None and (row["seq"] != prev["seq"] + 1 or row["prev_hash"] != prev["hash"]):
            raise Failed(
                f"audit entries {prev['seq']} and {row['seq']}",
                "do not link: an entry was dropped, reordered or replaced",
            )
        if prev is None and row["seq"] == 1 and row["prev_hash"] != GENESIS:
            raise Failed("audit entry 1", "is not the start of the chain")
        prev = row
    if (prev["seq"], prev["hash"]) != (head.get("seq"), head.get("hash")):
        raise Failed(
            "audit",
            f"the entries end at {prev['seq']} ({prev['hash'][:16]}), not at central's signed "
            f"chain head {head.get('seq')} ({str(head.get('hash'))[:16]})",
        )
    listed = set(doc["audit"].get("version_entries") or [])
    about = {r["seq"] for r in rows if r.get("subject") == doc.get("subject")}
    if listed != about:
        gone = sorted(listed ^ about)
        raise Failed("audit", f"entries {gone} about {doc.get('subject')} are missing or extra")
    return len(rows)


# What a dossier lists of its version's history, and the audit action that records each:
# (dossier key, action, the row's fields as the audit entry holds them)
RECORDED = (
    ("signoffs", "signoff", ("stage", "role", "user", "decision", "comment")),
    ("stages", "stage.enter", ("stage", "by", "comment")),
)


def check_records(doc: dict, rows: list[dict]) -> None:
    """The sign-offs and stage changes dossier.json lists are those its audit entries
    record: a table edited under the chain (who signed, in which role, why) fails here,
    though the chain itself verifies. Fields an older entry did not record are not judged."""
    subject = doc.get("subject")
    ours = [r for r in rows if not r.get("redacted") and r.get("subject") == subject]
    for key, action, fields in RECORDED:
        listed = doc.get(key) or []
        entries = _standing(ours, action)
        if len(listed) != len(entries):
            raise Failed(
                key,
                f"dossier.json lists {len(listed)} for {subject}, its audit entries record "
                f"{len(entries)}: the record was edited",
            )
        for i, (item, entry) in enumerate(zip(listed, entries, strict=True), 1):
            payload = _payload(entry)
            said = {**payload, "user": entry["actor"], "by": entry["actor"]}
            for field in fields:
                if field in said and (item or {}).get(field) != said[field]:
                    raise Failed(
                        f"{key} entry {i}",
                        f"its {field} {(item or {}).get(field)!r} is not the "
                        f"{said[field]!r} audit entry {entry['seq']} recorded: it was edited",
                    )


def _standing(ours: list[dict], action: str) -> list[dict]:
    """The entries of ``action`` still in force: a sign-off withdrawn later (its
    ``signoff.withdraw`` entry names the stage and user) left the table, so not the dossier's
    list, while both entries stay in the chain."""
    entries = []
    for r in ours:
        if r.get("action") == action:
            entries.append(r)
        elif action == "signoff" and r.get("action") == "signoff.withdraw":
            gone = _payload(r)
            entries = [
                e
                for e in entries
                if (_payload(e).get("stage"), e["actor"]) != (gone.get("stage"), gone.get("user"))
            ]
    return entries


def _payload(entry: dict) -> dict:
    """An audit entry's payload: canonical JSON text, as it was hashed."""
    try:
        out = json.loads(entry["payload"]) if isinstance(entry["payload"], str) else None
    except ValueError:
        out = None
    return out if isinstance(out, dict) else {}


def check_files(doc: dict, files: dict[str, bytes]) -> int:
    listed = doc.get("files")
    if not isinstance(listed, dict):
        raise Failed(JSON_NAME, "lists no file digests")
    extra = sorted(set(files) - set(listed) - {JSON_NAME, SIG_NAME})
    if extra:
        raise Failed(extra[0], "is in the archive but not in the signed list of files")
    for name, digest in sorted(listed.items()):
        if name not in files:
            raise Failed(name, "is listed in dossier.json but missing from the archive")
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise Failed(name, "its sha256 differs from the digest central signed: it was changed")
    for kind, rep in (doc.get("reports") or {}).items():
        if rep and listed.get(rep["file"]) != rep["digest"]:
            raise Failed(rep["file"], f"is not the {kind} report central stored")
    return len(listed)


def verify(path: str | Path, key_text: str | None = None) -> dict:
    """Check everything; return a summary, or raise ``Failed`` naming the first problem."""
    pinned = None
    if key_text is not None:
        try:
            pinned = keys.parse_public_all(key_text)
        except keys.BadKey as e:
            raise Failed("key", f"the given key cannot be read: {e}") from None
    files = _read(Path(path))
    doc, sig = _json(files, JSON_NAME), _json(files, SIG_NAME)
    if doc.get("format") != FORMAT:
        raise Failed(JSON_NAME, f"is not a {FORMAT} document (format {doc.get('format')!r})")
    public = check_key(sig, pinned)
    chain = _json(files, AUDIT_NAME)
    entries = check_audit(doc, chain)
    n_files = check_files(doc, files)
    if sig.get("signed_file") != JSON_NAME or not keys.verify(
        public, str(sig.get("signature", "")), files[JSON_NAME]
    ):
        raise Failed(
            "signature",
            f"dossier.json does not match the ed25519 signature of key {keys.key_id(public)}: "
            "it was changed after central signed it",
        )
    check_records(doc, chain["rows"])  # what central signed against what its chain says
    return {
        "subject": doc.get("subject"),
        "key_id": keys.key_id(public),
        "pinned": pinned is not None,
        "files": n_files,
        "audit_entries": entries,
        "head": doc["audit"]["head"],
    }
