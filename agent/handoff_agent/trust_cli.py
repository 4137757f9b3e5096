"""``jupyter handoff trust add|remove|list``: the types an agent lets skops load.

It writes the registry directly (one transaction with its audit row); a running agent
re-reads the table every ``c.HandoffAgent.trust_poll_interval`` seconds, and at central the
versions waiting in needs_trust on those types then proceed.
"""

from __future__ import annotations

from ._version import __version__
from .command import Command
from .shell import complain, os_user

USAGE = """Usage: jupyter handoff trust add TYPE... [--agent-role central | --home DIR]
       jupyter handoff trust remove TYPE... [--agent-role central | --home DIR]
       jupyter handoff trust list [--agent-role central | --home DIR]"""


class TrustApp(Command):
    name = "jupyter-handoff-trust"
    description = "Trust exact types for skops loading: trust add TYPE..., remove, list."
    version = __version__
    aliases = {
        "home": "HandoffAgent.home",
        "agent-role": "HandoffAgent.role",
        "database-url": "HandoffAgent.database_url",
    }
    flags = {}

    @property
    def classes(self):
        from .agent import HandoffAgent

        return [HandoffAgent]  # --help describes the --home alias

    def start(self):
        from . import trust_admin
        from .cli import _open_db
        from .errors import HandoffError

        action, names = (self.extra_args[0], self.extra_args[1:]) if self.extra_args else ("", [])
        if action not in ("add", "remove", "list") or (action != "list" and not names):
            complain(USAGE)
            self.exit(2)
        if action == "add":
            from . import trust

            try:  # a malformed name is a usage mistake, said before the registry is opened
                for name in names:
                    trust.check_shape(name)
            except HandoffError as e:
                complain(e.message)
                self.exit(2)
        registry = _open_db(self.config)
        try:
            if action == "list":
                self._print_list(trust_admin.listing(registry))
            elif action == "add":
                new = trust_admin.add(registry, names, os_user())
                print(f"Trusted: {', '.join(new)}." if new else "Already trusted; nothing changed.")
                if new:
                    print(self._whose())
            else:
                gone = trust_admin.remove(registry, names, os_user())
                if not gone:
                    raise HandoffError(
                        f"None of {', '.join(names)} was on the trust list; nothing changed.",
                        "`jupyter handoff trust list` shows it.",
                    )
                print(f"No longer trusted: {', '.join(gone)}.")
        except HandoffError as e:  # a refusal, not a usage mistake (README: exit 1)
            complain(f"{e.message}\n{e.hint}")
            self.exit(1)
        finally:
            registry.close()

    def _whose(self) -> str:
        """Which agent's list changed: without --home or --agent-role, the local agent's."""
        given = self.config.HandoffAgent
        if given.get("home") or given.get("database_url"):
            return (
                "The agent of this home picks this up within seconds; at central, versions "
                "waiting in needs_trust on these types then go on to their checks."
            )
        if given.get("role") == "central":
            return (
                "Central picks this up within seconds; versions waiting in needs_trust on "
                "these types then go on to their checks."
            )
        return (
            "This is the local agent's list, which it picks up within seconds. Central's is "
            "changed with --agent-role central (or its --home)."
        )

    def _print_list(self, listing: dict) -> None:
        print(f"Default list ({len(listing['default'])} types, shipped with Handoff):")
        for name in listing["default"]:
            print(f"  {name}")
        print("Added:" if listing["added"] else "Added: none")
        for row in listing["added"]:
            print(f"  {row['type']}  (by {row['trusted_by']}, {row['time']})")
