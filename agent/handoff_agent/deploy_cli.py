"""IT's deployment commands from a shell: what waits for a sign-off, where a model serves, a
sign-off, a stage change, the canary's share and a rollback. What the panel's buttons do, for
scripts and CI jobs.

Each asks central over HTTP (its runtime file, or ``--url`` with the token in
``HANDOFF_TOKEN``) and prints the outcome: a line, or the deployment it left. A usage mistake
exits 2 with the usage line; a refusal prints central's message and hint and exits 1.
"""

from __future__ import annotations

import json
import re

from traitlets import Bool, Unicode

from ._version import __version__
from .command import Command
from .inventory_cli import Unreachable, _request, every_page
from .names import typed_name, typed_ref
from .shell import complain, visible
from .vocabulary import missing_text, traffic_share_problem

URL_HELP = "Central's URL instead of its runtime file; the token in HANDOFF_TOKEN."


class _CentralCommand(Command):
    """One call to central. Subclasses say what the arguments are and what to print."""

    version = __version__
    usage = ""
    url = Unicode("", help=URL_HELP).tag(config=True)
    comment = Unicode("", help="Why, kept with the stage change in the audit log.").tag(config=True)
    as_json = Bool(False, help="Print central's JSON answer.").tag(config=True)
    switches: dict[str, tuple[str, str]] = {"json": ("as_json", "Print central's JSON answer.")}

    @property
    def aliases(self):
        me = type(self).__name__
        return {"url": f"{me}.url", ("m", "message"): f"{me}.comment"}

    @property
    def flags(self):
        me = type(self).__name__
        return {k: ({me: {trait: True}}, why) for k, (trait, why) in self.switches.items()}

    def start(self):
        try:
            parsed = self.parse(list(self.extra_args))
        except ValueError as e:
            complain(f"{e}\nUsage: {self.usage}")
            self.exit(2)
        try:
            self.run(*parsed)
        except Unreachable as e:
            complain(e)
            self.exit(1)

    def call(self, path: str, body: dict | None = None) -> dict:
        return json.loads(_request("central", self.url, path, body)[0])

    def show(self, name: str, view: dict) -> None:
        from jupyter_handoff.serving_calls import Deployment

        print(json.dumps(view, indent=1) if self.as_json else repr(Deployment(name, view)))


def _args(args: list[str], n: int) -> list[str]:
    if len(args) != n:
        raise ValueError(f"Expected {n} argument{'s' * (n != 1)}, got {len(args)}.")
    return args


class DeploymentApp(_CentralCommand):
    name = "jupyter-handoff-deployment"
    description = (
        "Where each version of a model serves at central: slot, version, traffic, requests, "
        "error rate, p50/p99 and alarms; without NAME, every model that serves."
    )
    usage = "jupyter handoff deployment [NAME] [--json]"
    examples = "jupyter handoff deployment churn"

    def parse(self, args):
        return [typed_name(a) for a in (args if len(args) < 2 else _args(args, 1))]

    def run(self, name: str | None = None):
        if name:
            self.show(name, self.call(f"/api/v1/models/{name}/deployment"))
            return
        from jupyter_handoff.deploy_view import model_names

        views = {}
        for each in model_names(self.call):
            view = self.call(f"/api/v1/models/{each}/deployment")
            if view.get("slots"):
                views[each] = view
        if self.as_json:
            print(json.dumps(views, indent=1))
            return
        for each, view in views.items():
            self.show(each, view)
        if not views:
            print("No model has a deployment.")


def review_line(r: dict) -> str:
    """'churn:2  validated -> approved  needs 1 reviewer  in: bob (reviewer)  pass  pushed
    by alice, validated since 2026-12-05 03:50', and what would refuse an approval now."""
    needs = missing_text(r["missing"])
    if r.get("ready"):  # the policy was relaxed after its sign-offs came in
        needs = (
            "no more sign-offs under central's policy now (one more, or `jupyter handoff "
            f"stage {r['model']}:{r['version']} {r['next']}` by an admin, moves it)"
        )
    signed = ", ".join(f"{s['user']} ({s['role']})" for s in r["signoffs"]) or "-"
    line = (
        f"{r['model']}:{r['version']}  {r['stage']} -> {r['next']}  needs {needs}  in: {signed}"
        f"  {r['verdict']}  pushed by {r['pushed_by']}, {r['stage']} since {r['since'][:16]}"
    )
    blocked = r.get("blocked")
    return visible(line) + (f"\n  not yet: {visible(blocked['message'])}" if blocked else "")


class ReviewsApp(_CentralCommand):
    name = "jupyter-handoff-reviews"
    description = (
        "The versions waiting for sign-offs at central, oldest first: the next stage, the "
        "sign-offs missing and in, and what would refuse an approval now; --mine: those "
        "you may sign now."
    )
    usage = "jupyter handoff reviews [--mine] [--json]"
    examples = "jupyter handoff reviews --mine"
    mine = Bool(False, help="Only the versions the token's user may sign now.").tag(config=True)
    switches = {**_CentralCommand.switches, "mine": ("mine", "Only those you may sign now.")}

    def parse(self, args):
        return _args(args, 0)

    def run(self):
        query = "mine=true&" if self.mine else ""
        out = {"reviews": every_page(self.call, f"/api/v1/reviews?{query}limit=1000", "reviews")}
        if self.as_json:
            print(json.dumps(out, indent=1))
            return
        for r in out["reviews"]:
            print(review_line(r))
        if not out["reviews"]:
            print(f"No version waits for {'your' if self.mine else 'a'} sign-off.")
        elif self.mine:
            print("Sign: jupyter handoff signoff NAME:N --to STAGE [-m WHY] [--reject]")


class SignoffApp(_CentralCommand):
    name = "jupyter-handoff-signoff"
    description = (
        "Sign a version off for its next stage at central (reviewer): approve, or --reject "
        "with -m why. It moves when the policy's sign-offs for that stage are in. "
        "--withdraw takes your own sign-off back while the version still waits for that stage."
    )
    usage = "jupyter handoff signoff NAME:N [--to STAGE] [--reject | --withdraw] [-m COMMENT]"
    examples = "jupyter handoff signoff churn:3 --to approved -m 'fairness reviewed'"
    reject = Bool(False, help="Reject the version instead of approving it.").tag(config=True)
    withdraw = Bool(
        False,
        help="Take back your own sign-off while the version still waits for that stage "
        "(-m says why, kept in the audit log).",
    ).tag(config=True)
    to = Unicode(
        "",
        help="The stage you sign it off for, as `reviews` showed it: if another sign-off "
        "moved the version on first, yours is refused instead of counting for the next one. "
        "With --withdraw, the stage you signed for (default: the one it waits for).",
    ).tag(config=True)
    switches = {
        **_CentralCommand.switches,
        "reject": ("reject", "Reject the version."),
        "withdraw": ("withdraw", "Take back your own sign-off."),
    }

    @property
    def aliases(self):
        return {**super().aliases, "to": f"{type(self).__name__}.to"}

    def parse(self, args):
        if self.reject and self.withdraw:
            raise ValueError("--withdraw takes your sign-off back; it cannot also --reject.")
        return typed_ref(_args(args, 1)[0])

    def run(self, name: str, number: int):
        if self.withdraw:
            self._withdraw(name, number)
            return
        decision = "reject" if self.reject else "approve"
        to = self.to or self._waits_for(name, number)
        body = {"decision": decision, "comment": self.comment, "to": to}
        out = self.call(f"/api/v1/models/{name}/versions/{number}/signoffs", body)
        if self.as_json:
            print(json.dumps(out, indent=1))
        elif out.get("waiting_for"):
            print(
                f"{name}:{number} signed off; it stays {out['stage']} until the sign-offs "
                f"for {out['waiting_for']} are in."
            )
        else:
            print(f"{name}:{number} is now {out['stage']}.")

    def _withdraw(self, name: str, number: int) -> None:
        """Without --to, central finds the sign-off itself, under the version's lock: one
        for a stage the version has since entered is refused as counted, not 'none'."""
        body = {"decision": "withdraw", "comment": self.comment}
        if self.to:
            body["to"] = self.to
        out = self.call(f"/api/v1/models/{name}/versions/{number}/signoffs", body)
        if self.as_json:
            print(json.dumps(out, indent=1))
            return
        print(
            f"{name}:{number}: your sign-off for {out['waiting_for']} is withdrawn; it stays "
            f"{out['stage']}, waiting for the sign-offs for {out['waiting_for']}."
        )

    def _waits_for(self, name: str, number: int) -> str:
        """The stage the version waits to be signed off for now: sent as ``to``, so a
        sign-off that lands after another moved it on is refused, not counted for the next."""
        stage = self.call(f"/api/v1/models/{name}/versions/{number}")["stage"]
        flow = {s["name"]: s for s in self.call("/api/v1/meta")["stages"]["flow"]}
        return (flow.get(stage) or {}).get("signoff_to") or ""


class StageApp(_CentralCommand):
    name = "jupyter-handoff-stage"
    description = (
        "Move a version to a stage at central (admin), e.g. archived; the policy's sign-offs "
        "and gates still apply."
    )
    usage = "jupyter handoff stage NAME:N STAGE [-m COMMENT]"
    examples = "jupyter handoff stage churn:1 archived -m 'replaced by churn:3'"

    def parse(self, args):
        ref, stage = _args(args, 2)
        return (*typed_ref(ref), stage)

    def run(self, name: str, number: int, stage: str):
        body = {"to": stage, "comment": self.comment}
        out = self.call(f"/api/v1/models/{name}/versions/{number}/transition", body)
        print(
            json.dumps(out, indent=1) if self.as_json else f"{name}:{number} is now {out['stage']}."
        )


class TrafficApp(_CentralCommand):
    name = "jupyter-handoff-traffic"
    description = "Set the canary's share of a model's traffic at central, 0 to 100 (admin)."
    usage = "jupyter handoff traffic NAME PERCENT"
    examples = "jupyter handoff traffic churn 25"

    def parse(self, args):
        name, typed = _args(args, 2)
        # plain digits: float() would also read 1_0, non-ASCII digits and 1e-320
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?%?", typed.strip()):
            raise ValueError(f"{typed!r} is not a percentage, e.g. 25.")
        percent = float(typed.strip().rstrip("%"))
        problem = traffic_share_problem(percent)  # central's rule, said before asking it
        if problem:
            raise ValueError(problem)
        return typed_name(name), percent

    def run(self, name: str, percent: float):
        self.show(
            name, self.call(f"/api/v1/models/{name}/deployment/traffic", {"percent": percent})
        )


class RollbackApp(_CentralCommand):
    name = "jupyter-handoff-rollback"
    description = (
        "Roll a model's production version back at central (admin): the previous production "
        "serves again, in one step."
    )
    usage = "jupyter handoff rollback NAME[:N] [-m COMMENT]"
    examples = "jupyter handoff rollback churn:3 -m 'error rate up since 14:00'"

    def parse(self, args):
        (arg,) = _args(args, 1)
        return typed_ref(arg) if ":" in arg else (typed_name(arg), None)

    def run(self, name: str, number: int | None):
        """Central rolls back ``number`` only while it is in production, so running this
        twice, or after another admin, is refused rather than rolling back the version
        restored. Without ``:N``, the version in production as this command reads it."""
        if number is None:
            view = self.call(f"/api/v1/models/{name}/deployment")
            number = next((s["version"] for s in view["slots"] if s["slot"] == "production"), None)
        body = {"comment": self.comment}
        if number is not None:  # none: central says there is nothing to roll back
            body["version"] = number
        self.show(name, self.call(f"/api/v1/models/{name}/deployment/rollback", body))
