"""Delivery signatures: HMAC-SHA256(secret, id + "." + timestamp + "." + body)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def signer(secret: str, delivery_id: str, timestamp: str):
    """An HMAC to feed the body into as it streams."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(f"{delivery_id}.{timestamp}.".encode())
    return mac


KEY_HEADER = "X-Handoff-Key"


def key_id(secret: str) -> str:
    """Which secret signs a delivery, said before its body (``X-Handoff-Key``): central can
    refuse an unknown sender, or one over its hourly limit, before reading any byte. A
    one-way digest: it gives nothing of the secret away."""
    return hashlib.sha256(b"handoff-key:" + secret.encode()).hexdigest()[:32]


def sign(secret: str, delivery_id: str, timestamp: str, body_chunks) -> str:
    mac = signer(secret, delivery_id, timestamp)
    for chunk in body_chunks:
        mac.update(chunk)
    return "sha256=" + mac.hexdigest()


def fresh(timestamp: str, max_skew: int, now: float | None = None) -> bool:
    try:
        t = int(timestamp)
    except (TypeError, ValueError):
        return False
    return abs((now or time.time()) - t) <= max_skew


def matches(given: str, macs: list) -> bool:
    """Constant-time check of ``given`` against each candidate secret's MAC."""
    return match_index(given, macs) is not None


def match_index(given: str, macs: list) -> int | None:
    """Which candidate MAC ``given`` is (the sender), comparing against every one."""
    found = None
    for i, mac in enumerate(macs):
        if hmac.compare_digest(given.encode(), ("sha256=" + mac.hexdigest()).encode()):
            found = i if found is None else found
    return found
