"""``jupyter handoff report``: fetch a report from the running agent, save it, maybe open it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

from . import runtime
from .cli_hints import cli_hint
from .names import NAME_RE
from .shell import complain, visible


def _get(info: dict, path: str) -> bytes:
    req = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"token {info['token']}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def fetch_report(ref: str, fmt: str, open_browser: bool) -> int:
    name, _, number = ref.partition(":")
    if not NAME_RE.fullmatch(name) or (number and not number.isdigit()):
        complain(f"{ref!r} is not NAME or NAME:N, e.g. churn or churn:3.")
        return 2
    info = runtime.read()
    if not (info and runtime.healthy(info["url"])):
        complain("No agent is running. Start one with `jupyter handoff serve`.")
        return 1
    try:
        if not number:
            latest = json.loads(_get(info, f"/api/v1/models/{name}/versions?limit=1"))
            if not latest["versions"]:
                complain(f"{name} has no versions.")
                return 1
            number = str(latest["versions"][0]["number"])
        body = _get(info, f"/api/v1/models/{name}/versions/{number}/report?format={fmt}")
    except urllib.error.HTTPError as e:
        err = json.loads(e.read() or b"{}").get("error", {})
        hint = cli_hint(err.get("code", ""), err.get("hint", ""))
        complain(visible(f"{err.get('message', e)}") + f"\n{visible(hint)}".rstrip())
        return 1
    if fmt != "html":
        print(body.decode())
        return 0
    out = runtime.runtime_file().parent / "handoff-reports" / f"{name}-{number}.html"
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    print(f"Report for {name}:{number}: {out}")
    if open_browser:
        webbrowser.open(Path(out).as_uri())
    return 0
