"""``jupyter handoff prune``: free an agent's disk by removing the bundles of old versions
nothing needs (``retention.py``), from a shell or a cron job. It asks the running agent, so a
push of the same bytes meanwhile is never half-pruned."""

from __future__ import annotations

import json

from traitlets import Bool, Enum, Int, Unicode

from ._version import __version__
from .command import Command
from .inventory_cli import Unreachable, _request, every_page
from .names import typed_name
from .shell import complain
from .vocabulary import MAX_KEEP, prune_line

AGENT_HELP = "Which running agent to prune: local (default) or central."


class PruneApp(Command):
    name = "jupyter-handoff-prune"
    description = (
        "Free room (admin): remove the bundles of a model's versions older than its newest "
        "--keep that nothing needs: not checking, at no live stage, serving nowhere, with no "
        "delivery to go, not the champion. Records, reports and audit rows stay. Without "
        "NAME, every model."
    )
    usage = "jupyter handoff prune [NAME ...] --keep N [--dry-run] [--agent local|central]"
    examples = "jupyter handoff prune churn --keep 5 --dry-run"
    version = __version__
    keep = Int(0, help="How many of each model's newest versions keep their bundle.").tag(
        config=True
    )
    dry_run = Bool(False, help="Say what would go; remove nothing.").tag(config=True)
    as_json = Bool(False, help="Print the agent's JSON answers.").tag(config=True)
    agent = Enum(["local", "central"], "local", help=AGENT_HELP).tag(config=True)
    url = Unicode("", help="The agent's URL, not its runtime file; token in HANDOFF_TOKEN.").tag(
        config=True
    )
    aliases = {"keep": "PruneApp.keep", "agent": "PruneApp.agent", "url": "PruneApp.url"}
    flags = {
        "dry-run": ({"PruneApp": {"dry_run": True}}, "Say what would go; remove nothing."),
        "json": ({"PruneApp": {"as_json": True}}, "Print the agent's JSON answers."),
    }

    def start(self):
        try:
            names = [typed_name(n) for n in self.extra_args]
            if not 1 <= self.keep <= MAX_KEEP:
                raise ValueError(f"--keep must be from 1 to {MAX_KEEP:,}, e.g. --keep 5.")
        except ValueError as e:
            complain(f"{e}\nUsage: {self.usage}")
            self.exit(2)
        try:
            names = names or self.every_model()
            body = {"keep": self.keep, "dry_run": self.dry_run}
            for name in names:
                raw = _request(self.agent, self.url, f"/api/v1/models/{name}/prune", body)[0]
                out = json.loads(raw)
                print(json.dumps(out) if self.as_json else prune_line(out))
        except Unreachable as e:
            complain(e)
            self.exit(1)

    def every_model(self) -> list[str]:
        def get(path: str) -> dict:
            return json.loads(_request(self.agent, self.url, path)[0])

        return [m["name"] for m in every_page(get, "/api/v1/models", "models")]
