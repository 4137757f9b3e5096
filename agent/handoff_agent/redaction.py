"""Passwords out of URLs that are shown: a browser, an error line, a log. ``store.engine.redact``
does this for database URLs (SQLAlchemy's parser); this does it for any URL in any text (an
agent's or an S3 endpoint's http://USER:PASSWORD@HOST, and botocore's messages quoting one)."""

from __future__ import annotations

import re

# scheme://user:password@ -> scheme://user:***@, to the authority's last @ (as URL parsers
# read it: a password may hold an unescaped @)
USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s\"'<>]*@")
SECRET_PARAM = re.compile(
    r"([?&](?:password|passwd|pwd|secret|token|access_token|sslpassword)=)[^&\s\"']*",
    re.IGNORECASE,
)


def redact_urls(text: str | None) -> str | None:
    """``text`` with the password of every URL in it, and secret query values, as ***."""
    if not text:
        return text
    return SECRET_PARAM.sub(r"\1***", USERINFO.sub(r"\1:***@", text))
