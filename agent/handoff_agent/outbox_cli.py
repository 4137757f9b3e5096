"""``jupyter handoff outbox``: where each hand-off stands, from a shell. What still waits (why,
and when it is tried next), what a destination refused for good (why, and how to send it
again), and with ``--all`` what was delivered; then the webhook notices still waiting."""

from __future__ import annotations

import json
import time

from traitlets import Bool, Enum, Unicode

from ._version import __version__
from .command import Command
from .inventory_cli import Unreachable, _request, every_page
from .shell import complain, visible

SEND_AGAIN = (
    "Send a dead one again once its cause is fixed: `%mlops forward NAME:N --to DEST` in the "
    "notebook, or POST /api/v1/models/NAME/versions/N/forward."
)


class OutboxApp(Command):
    name = "jupyter-handoff-outbox"
    description = (
        "The agent's deliveries one by one, oldest first: those still waiting (the last "
        "error and the next try) and those refused for good (why); --all: delivered too."
    )
    usage = "jupyter handoff outbox [--all] [--agent local|central] [--json]"
    examples = "jupyter handoff outbox"
    version = __version__
    every = Bool(False, help="Delivered ones too.").tag(config=True)
    as_json = Bool(False, help="Print the agent's JSON answer.").tag(config=True)
    agent = Enum(
        ["local", "central"], "local", help="Which running agent's outbox: local or central."
    ).tag(config=True)
    url = Unicode("", help="The agent's URL, not its runtime file; token in HANDOFF_TOKEN.").tag(
        config=True
    )
    aliases = {"agent": "OutboxApp.agent", "url": "OutboxApp.url"}
    flags = {
        "all": ({"OutboxApp": {"every": True}}, "Delivered ones too."),
        "json": ({"OutboxApp": {"as_json": True}}, "Print the agent's JSON answer."),
    }

    def start(self):
        if self.extra_args:
            complain(f"jupyter handoff outbox takes no arguments.\nUsage: {self.usage}")
            self.exit(2)
        states = "pending,delivered,dead" if self.every else "pending,dead"
        try:
            rows = self.deliveries(states)
            notices = every_page(self.answer, "/api/v1/outbox/notices?limit=1000", "notices")
            # what stops stages coming back though deliveries go (central refusing the token)
            problems = self.answer("/api/v1/outbox").get("problems") or []
        except Unreachable as e:
            complain(e)
            self.exit(1)
        if self.as_json:
            doc = {"deliveries": rows, "notices": notices, "problems": problems}
            print(json.dumps(doc, indent=1))
            return
        for problem in problems:
            print(visible(problem))
        now = time.time()
        for row in rows:
            print(delivery_line(row, now))
        if not rows:
            print("No delivery waits" + ("." if self.every else ", and none was refused."))
        if any(r["state"] == "dead" for r in rows):
            print(SEND_AGAIN)
        for notice in notices:
            print(notice_line(notice, now))

    def deliveries(self, states: str) -> list[dict]:
        path = f"/api/v1/outbox/deliveries?state={states}&limit=1000"
        return every_page(self.answer, path, "deliveries")

    def answer(self, path: str) -> dict:
        return json.loads(_request(self.agent, self.url, path)[0])


def delivery_line(row: dict, now: float) -> str:
    """One delivery for people: which version, where, and where it stands; shown inert, as
    the error is what a destination answered."""
    return visible(_delivery_line(row, now))


def _delivery_line(row: dict, now: float) -> str:
    head = f"{row['model']}:{row['number']} -> {row['destination']}"
    error = " ".join((row.get("last_error") or "").split())[:300]
    tries = f"{row['attempts']} attempt{'s' * (row['attempts'] != 1)}"
    if row["state"] == "delivered":
        remote = row.get("remote") or {}
        there = f" as {remote['name']}:{remote['version']}" if remote.get("name") else ""
        return f"{head}  delivered {(row.get('delivered') or '')[:16]}{there}"
    if row["state"] == "dead":
        return f"{head}  dead after {tries}: {error or 'no reason recorded'}"
    if not row["attempts"]:
        return f"{head}  pending, not tried yet"
    wait = max(0.0, (row.get("next_try") or now) - now)
    return f"{head}  pending after {tries}, next try {_in(wait)}: {error}"


def notice_line(row: dict, now: float) -> str:
    """A webhook notice still waiting, shown inert (the error is what a receiver answered)."""
    head = f"{row['kind']} notice -> {row['destination']}"
    if not row["attempts"]:
        return visible(f"{head}  being sent")
    error = " ".join((row.get("last_error") or "").split())[:300]
    tries = f"{row['attempts']} attempt{'s' * (row['attempts'] != 1)}"
    wait = max(0.0, (row.get("next_try") or now) - now)
    return visible(f"{head}  waiting after {tries}, next try {_in(wait)}: {error}")


def _in(seconds: float) -> str:
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"in {seconds:.0f} s"
    return f"in {seconds / 60:.0f} min" if seconds < 7200 else f"in {seconds / 3600:.1f} h"
