"""Signed HTTP POSTs for destinations: no redirects followed, 4xx vs retryable sorted out."""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import BinaryIO

from .. import signing
from ..plugins import Result

RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 20


def _chunks(body):
    """bytes, a path, or an open seekable binary file (read from its start each time)."""
    if isinstance(body, bytes):
        yield body
        return
    if isinstance(body, Path):
        with open(body, "rb") as f:
            yield from _chunks(f)
        return
    body.seek(0)
    while chunk := body.read(CHUNK):
        yield chunk


def _size(body) -> int:
    if isinstance(body, bytes):
        return len(body)
    if isinstance(body, Path):
        return body.stat().st_size
    return os.fstat(body.fileno()).st_size


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def post_signed(
    url: str,
    body: bytes | Path | BinaryIO,
    delivery_id: str,
    secret: str,
    content_type: str,
    headers: dict | None = None,
    timeout: float = 60,
) -> Result:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return Result(False, retryable=False, error=f"unsupported URL scheme in {url!r}")
    stamp = str(int(time.time()))
    signature = signing.sign(secret, delivery_id, stamp, _chunks(body))
    size = _size(body)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    unsent = None
    try:
        conn.connect()  # a refused connection fails here, not as a half-sent request
        conn.putrequest("POST", parts.path or "/")
        for k, v in {
            "Content-Type": content_type,
            "Content-Length": str(size),
            "X-Handoff-Delivery": delivery_id,
            "X-Handoff-Timestamp": stamp,
            "X-Handoff-Signature": signature,
            signing.KEY_HEADER: signing.key_id(secret),
            **(headers or {}),
        }.items():
            conn.putheader(k, v)
        try:
            conn.endheaders()
            for chunk in _chunks(body):
                conn.send(chunk)
        except OSError as e:  # a refusal answered before the body (an unknown key): read it
            unsent = e
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as e:
        e = unsent or e  # no answer to read: the send's own failure says more
        return Result(False, error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"raw": raw[:200].decode(errors="replace")}
    if 200 <= resp.status < 300:
        return Result(True, remote=answer if isinstance(answer, dict) else {"answer": answer})
    err = answer.get("error", {}) if isinstance(answer, dict) else {}
    message = f"{resp.status} {err.get('code', resp.reason)}: {err.get('message', '')}".strip()
    if isinstance(err, dict) and err.get("hint"):  # the receiver's way out, for whoever reads
        message += f" {err['hint']}"
    if 300 <= resp.status < 400:
        return Result(False, retryable=False, error=f"{message} (redirects are not followed)")
    return Result(
        False,
        retryable=resp.status in RETRYABLE,
        retry_after=retry_after(resp.getheader("Retry-After")),
        error=message,
        code=str(err.get("code") or "") if isinstance(err, dict) else "",
    )
