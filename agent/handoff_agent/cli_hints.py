"""An API error's hint as a ``jupyter handoff`` command prints it.

The agent's hints are written for every client, so some name HTTP things: a route to GET, the
Retry-After header, the event stream. Someone in a shell needs the command or flag that does
the same. ``cli_hint`` rewords those, by error code, for every command that prints an agent's
refusal (the notebook's counterpart is ``jupyter_handoff.errors.notebook_hint``); a hint with
nothing of HTTP in it passes as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_NAME = r"[\w.\-]+"
_MODELS = re.compile(r"List models with GET /api/v1/models\.")
_VERSIONS = re.compile(rf"List its versions with GET /api/v1/models/({_NAME})/versions\.")
_VALIDATION = re.compile(rf"GET /api/v1/models/({_NAME})/versions/\d+ \(validation\)")
_RERUN = re.compile(rf"POST (/api/v1/models/{_NAME}/versions/\d+/validation)")
_DEPLOYMENT = re.compile(r"GET /api/v1/models/([\w.\-]+)/deployment")


@dataclass(frozen=True)
class Asked:
    """Which agent the command asked (``role``, or ``url`` with the token in HANDOFF_TOKEN),
    so a suggested command asks the same one."""

    role: str = "local"
    url: str = ""

    def agent(self) -> str:
        """The options of the commands that take ``--agent`` (inventory, outbox, prune …)."""
        return f" --url {self.url}" if self.url else f" --agent {self.role}"

    def agent_role(self) -> str:
        """``audit log``'s: ``--agent-role central`` (the local agent by default)."""
        if self.url:
            return f" --url {self.url}"
        return " --agent-role central" if self.role == "central" else ""


def _not_found(hint: str, asked: Asked) -> str:
    hint = _MODELS.sub(f"`jupyter handoff inventory{asked.agent()}` lists the models.", hint)
    return _VERSIONS.sub(
        lambda m: (
            f"`jupyter handoff audit log {m[1]} --action version.create{asked.agent_role()}` "
            "lists its versions."
        ),
        hint,
    )


def _load_test(hint: str, asked: Asked) -> str:
    hint = _VALIDATION.sub(lambda m: f"`jupyter handoff deployment {m[1]}` (validations)", hint)
    # no command runs it again: the route stays, said to be the HTTP API's
    return _RERUN.sub(r"POST \1 on central's HTTP API", hint)


def _deployment(hint: str, asked: Asked) -> str:
    """A sign-off refused by the guardrails (bake, shadow): where to watch the canary."""
    where = f" --url {asked.url}" if asked.url else ""
    return _DEPLOYMENT.sub(lambda m: f"`jupyter handoff deployment {m[1]}{where}`", hint)


_BUSY = (
    "Run the command again in a few seconds. If it persists, check what else holds the "
    "database (`jupyter handoff status`)."
)
_NOT_CENTRAL = "Ask central: leave out --agent local, or give central's URL with --url."
_REPORT_PENDING = "Reports are written when every check has finished: run the command again then."
_NOT_AT_CENTRAL = (
    "Wait for the hand-off (`jupyter handoff outbox` shows where it stands), or forward it "
    "from the notebook (`%mlops forward NAME:N --to central`)."
)


def _no_lineage(hint: str, asked: Asked) -> str:
    return hint.replace(
        "`%mlops watch` lists the sources",
        f"`jupyter handoff watch NAME{asked.agent()}` lists a model's sources",
    )


_LOCAL_ONLY = (
    "Watch it at the local agent: leave out --agent central (or use %mlops watch in the notebook)."
)

# error code -> the hint in a shell's words (from the agent's hint and which agent was asked)
CLI_HINTS: dict[str, Callable[[str, Asked], str]] = {
    "not_found": _not_found,
    "load_test_failed": _load_test,
    "load_test_pending": _load_test,
    "bake_not_clean": _deployment,
    "shadow_not_passed": _deployment,
    "database_busy": lambda hint, asked: _BUSY,
    "not_central": lambda hint, asked: _NOT_CENTRAL,
    "report_pending": lambda hint, asked: _REPORT_PENDING,
    # not HTTP, but the notebook's words (`%mlops show`), which a shell cannot run
    "not_at_central": lambda hint, asked: _NOT_AT_CENTRAL,
    "no_lineage": _no_lineage,
    "local_only": lambda hint, asked: _LOCAL_ONLY,
}


def cli_hint(code: str, hint: str, asked: Asked | None = None) -> str:
    """``hint`` (of an error with ``code``) worded for a ``jupyter handoff`` command."""
    reword = CLI_HINTS.get(code or "")
    return reword(hint or "", asked or Asked()) if reword else hint or ""
