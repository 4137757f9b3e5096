"""How strong a shared secret is: central and the local destination refuse weak ones at start.

The rule, kept simple so an operator can check it by eye: a secret made only of hex digits
counts 4 bits a character, anything else 6 bits (the url-safe base64 alphabet), and it must
reach 128 bits: 32 hex digits, or 22 characters otherwise (``token_urlsafe(16)``). A secret of
fewer than 8 distinct characters is weak whatever its length ("aaaa…" is not random).
"""

from __future__ import annotations

import string

MIN_BITS = 128
MIN_DISTINCT = 8
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def bits(secret: str) -> int:
    per_char = 4 if secret and all(c in string.hexdigits for c in secret) else 6
    return per_char * len(secret)


def weak_secret_error(secret: str, where: str) -> str | None:
    """None when ``secret`` is strong enough, else a message naming ``where`` and the fix."""
    if bits(secret) >= MIN_BITS and len(set(secret)) >= MIN_DISTINCT:
        return None
    return (
        f"The secret from {where} is too weak: it holds about {bits(secret)} bits, and at "
        f"least {MIN_BITS} are required (32 hex digits, or 22 url-safe characters, with at "
        f"least {MIN_DISTINCT} distinct ones). Generate one with: {GENERATE}"
    )
