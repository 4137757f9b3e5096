"""Gate policy: check results in, a verdict (pass / warn / fail) with reasons out."""

from __future__ import annotations

from traitlets import Bool, Callable, Dict, List, Unicode
from traitlets.config import LoggingConfigurable

from .check_settings import settings_problem
from .errors import BadRequest

ORDER = {"pass": 0, "warn": 1, "fail": 2}


class GatePolicy(LoggingConfigurable):
    """Which check failures block a hand-off, and the thresholds checks apply."""

    blocking = List(
        Unicode(),
        ["loads", "smoke", "schema", "performance", "fairness"],
        help="Checks whose fail or error fails the verdict. A fail elsewhere only warns.",
    ).tag(config=True)
    required = List(
        Unicode(),
        [],
        help="Checks that must judge every version: a skip fails the verdict with the reason "
        "it was skipped, e.g. fairness when no --sensitive column was pushed. At central, its "
        "policy's [intake] required_checks are added.",
    ).tag(config=True)
    thresholds = Dict(
        help="Per-check settings over the checks' defaults, e.g. "
        "{'fairness': {'max_dp_diff': 0.1}, 'performance': {'max_regression': 0.01}}."
    ).tag(config=True)
    allow_push_overrides = Bool(
        True, help="Let a push override thresholds with --gate CHECK.KEY=VALUE (recorded)."
    ).tag(config=True)
    checks = List(
        Unicode(), help="The checks the agent runs (set by the agent): an override names one."
    )
    declared = Callable(
        None,
        allow_none=True,
        help="The settings each check declares, {check: defaults}, or None when unknown (set "
        "by the agent: check_settings.DeclaredSettings.settings); an override must fit them.",
    )

    honour_pushed = Bool(
        True,
        help="Judge a version with the --gate overrides it was pushed with (set by the agent: "
        "at central, its policy's [intake] gate_overrides, false by default, so IT's thresholds "
        "govern there and an analyst's override cannot loosen them).",
    )

    def applied_overrides(self, pushed) -> dict:
        """The --gate overrides a version is judged with here: its pushed ones, or none."""
        return dict(pushed or {}) if self.honour_pushed else {}

    def check_delivered(self, pushed) -> None:
        """A delivery's overrides of the checks this agent runs, checked as a push's are when
        it judges with them (central with ``gate_overrides``): a setting its check does not
        declare, or a value of the wrong type, refuses the delivery saying which, rather than
        failing the checks. One of a check it does not run loosens nothing here: ignored."""
        if not (self.honour_pushed and pushed):
            return
        if isinstance(pushed, dict):
            pushed = {
                k: v
                for k, v in pushed.items()
                if not isinstance(k, str) or k.partition(".")[0] in self.checks
            }
        self.validate_overrides(pushed)

    def check_config(self, check: str, overrides: dict | None) -> dict:
        """The settings one check runs with: policy thresholds, then the push's overrides."""
        cfg = dict(self.thresholds.get(check, {}))
        for key, value in (overrides or {}).items():
            name, _, param = key.partition(".")
            if name == check and param:
                cfg[param] = value
        return cfg

    def validate_overrides(self, overrides) -> dict:
        """A push's ``--gate`` overrides, refused up front when one names a check the agent
        does not run, a setting its check does not declare or a value not of its type: a
        typo must not run the checks on the old threshold, nor fail them later."""
        if not overrides:
            return {}
        if not self.allow_push_overrides:
            raise BadRequest(
                "This agent does not accept per-push gate overrides.",
                "Remove --gate, or ask the agent's admin to set GatePolicy.allow_push_overrides.",
            )
        if not isinstance(overrides, dict) or not all(
            isinstance(k, str) and "." in k and isinstance(v, (int, float, str, bool))
            for k, v in overrides.items()
        ):
            raise BadRequest("Gate overrides must map 'check.setting' to a number or string.")
        unknown = sorted({key.partition(".")[0] for key in overrides} - set(self.checks))
        if self.checks and unknown:
            raise BadRequest(
                "The gate overrides (--gate) name a check this agent does not run: "
                f"{', '.join(unknown)}.",
                f"Its checks: {', '.join(self.checks)}.",
            )
        declared = (self.declared() if self.declared is not None else None) or {}
        for check in sorted({key.partition(".")[0] for key in overrides}):
            given = {
                k.partition(".")[2]: v for k, v in overrides.items() if k.startswith(check + ".")
            }
            problem = settings_problem(check, declared.get(check), given, "from --gate")
            if problem:
                raise BadRequest(
                    problem,
                    "Fix that --gate override, or leave it out to keep the agent's threshold.",
                    code="bad_gate_override",
                )
        return overrides

    def verdict(self, checks: list[dict]) -> dict:
        """``checks``: rows with name, status, message. Returns verdict and reasons."""
        verdict, reasons = "pass", []
        for c in checks:
            status = c["status"]
            if status in ("fail", "error"):
                level = "fail" if c["name"] in self.blocking else "warn"
            elif status == "warn":
                level = "warn"
            elif status == "skip" and c["name"] in self.required:
                level = "fail"
            else:
                continue
            said = (c.get("message") or status).splitlines()[0]
            if status == "skip":
                said = f"required, but skipped: {said}"
            reasons.append((level, f"{c['name']}: {said}"))
            if ORDER[level] > ORDER[verdict]:
                verdict = level
        reasons.sort(key=lambda r: r[0] != "fail")  # blocking failures first
        return {"verdict": verdict, "reasons": [r for _, r in reasons]}
