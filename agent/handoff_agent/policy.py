"""Central policy, from a TOML file: who must sign off each stage, and what intake trusts.

[intake]
secrets = ["…", "…"]          # unnamed HMAC secrets; two during rotation (see below)
trusted_types = ["my_pkg.MyEstimator"]   # exact types trusted beyond the default list
revalidate = true             # re-run the checks here before `validated`
gate_overrides = false        # true: judge with the analyst's --gate overrides, not only ours
required_checks = ["fairness"]   # a skip fails the verdict (fairness: no --sensitive pushed)
max_versions_per_hour = 120   # per sender; more waits (429, Retry-After) in its outbox; 0: off
max_bytes_per_hour = 0        # per sender, the same way (e.g. 10_737_418_240); 0: off

[intake.senders]              # named senders: NAME = "secret", or a list during rotation
alice = "…"
ci = ["…old…", "…new…"]

[sandbox]
require = true                # never run model code without bubblewrap

[stages.approved]
reviewer = 1
[stages.production]
reviewer = 1
admin = 1

[[watch]]                     # a data source central watches (any number of these)
model = "churn"
source = "postgresql://reader:…@warehouse/db"
query = "SELECT * FROM churn_features"
every = "1h"
overdue = "26h"               # no new rows for longer: overdue (default: twice every)
on = ["schema", "drift", "overdue"]
actions = ["alert", "pause_canary"]   # or "revalidate", with target = "LABEL_COLUMN"

[tokens]
max_age = "90d"               # a token's default and longest life (30m, 24h, 7d); left out: forever

[deploy]                      # canary, guardrails, shadow and load test: see deploy_policy.py
canary_percent = 10           # the canary's share of traffic (or linear `steps = [5, 25, 50]`)
shadow = false                # true: an approved version first gets mirrored traffic

[monitor]                     # windows, thresholds, label delay, actions: see monitor_policy.py
daily = true

Who pushed a version, at central, is the sender whose secret verified the delivery's signature,
never what the envelope claims (that is kept as ``claimed_by`` in the version's origin). A
secret from the plain ``secrets`` list (the embedded central's default) authenticates the
machine, not a person: central records such a version as pushed by ``intake``.

Every secret must hold at least 128 bits (see ``secrets_check``); central refuses to start
otherwise.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import trust
from .deploy_policy import DeployPolicy
from .errors import HandoffError
from .monitor_policy import MonitorPolicy
from .secrets_check import weak_secret_error
from .vocabulary import FLOW, WATCH_KEYS

UNNAMED = "intake"  # pushed_by for a delivery signed with a plain [intake] secrets entry

DEFAULT_STAGES = {
    "approved": {"reviewer": 1},
    "canary": {"reviewer": 1},
    "production": {"reviewer": 1, "admin": 1},
}


@dataclass
class Policy:
    secrets: list[str] = field(default_factory=list)
    senders: dict[str, list[str]] = field(default_factory=dict)
    trusted_types: list[str] = field(default_factory=list)
    revalidate: bool = True
    gate_overrides: bool = False  # central's checks apply the pushed --gate overrides
    required_checks: list[str] = field(default_factory=list)  # a skip of one fails the verdict
    max_skew: int = 300
    max_per_hour: int = 120  # versions one sender may deliver in an hour; 0: no limit
    max_bytes_per_hour: int = 0  # bytes one sender may deliver in an hour; 0: no limit
    sandbox_require: bool = False
    stages: dict[str, dict[str, int]] = field(default_factory=lambda: dict(DEFAULT_STAGES))
    deploy: DeployPolicy = field(default_factory=DeployPolicy)
    # [[watch]] tables: data sources central watches (its warehouse), with actions on
    # central's deployments (alert, pause_canary, rollback_canary); watch/service.py checks them.
    watches: list[dict] = field(default_factory=list)
    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)
    # [tokens] max_age: a token made here without --expires gets it; a longer one is
    # refused ("": tokens live until revoked). It binds tokens made before it too: each ends
    # max_age after its creation at the latest (tokens.expiry, worked out at each request).
    token_max_age: str = ""

    @classmethod
    def load(cls, path: str | Path | None) -> Policy:
        if not path:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path} is not valid TOML: {e}.") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not valid TOML: it is not UTF-8 text.") from None
        except OSError as e:
            raise ValueError(f"{path} cannot be read: {e.strerror}.") from None
        _known(data, TOP_KEYS, "the top level", path)
        intake = _table(data, "intake", path)
        sandbox = _table(data, "sandbox", path)
        stages = _stages({**DEFAULT_STAGES, **_table(data, "stages", path)}, path)
        if intake.get("accept_pickle"):
            raise ValueError(
                f"{path}: [intake] accept_pickle is no longer supported: central never "
                "unpickles. Remove the line; local agents convert pickles to skops before "
                "they hand off, and `jupyter handoff trust add` trusts the types a model needs."
            )
        legacy = {"accept_pickle"}  # false: what central does anyway, so still accepted
        _known({k: v for k, v in intake.items() if k not in legacy}, INTAKE_KEYS, "[intake]", path)
        _known(sandbox, SANDBOX_KEYS, "[sandbox]", path)
        token_table = _table(data, "tokens", path)
        _known(token_table, TOKENS_KEYS, "[tokens]", path)
        trusted = list(intake.get("trusted_types", []))
        try:
            trusted = trust.check_addable(trusted) if trusted else []
        except HandoffError as e:
            raise ValueError(f"{path}: [intake] trusted_types: {e.message}") from None
        secrets, senders = _intake_secrets(intake, path)
        per_hour = _hourly(intake, "max_versions_per_hour", cls.max_per_hour, path)
        bytes_per_hour = _hourly(intake, "max_bytes_per_hour", cls.max_bytes_per_hour, path)
        return cls(
            secrets=secrets,
            senders=senders,
            trusted_types=trusted,
            revalidate=_flag(intake, "revalidate", True, "[intake]", path),
            gate_overrides=_flag(intake, "gate_overrides", False, "[intake]", path),
            required_checks=_names(intake, "required_checks", path),
            max_skew=_skew(intake, path),
            max_per_hour=per_hour,
            max_bytes_per_hour=bytes_per_hour,
            sandbox_require=_flag(sandbox, "require", False, "[sandbox]", path),
            stages=stages,
            deploy=DeployPolicy.load(data.get("deploy", {}), path),
            watches=_watches(data.get("watch", []), path),
            monitor=MonitorPolicy.load(data.get("monitor", {}), path),
            token_max_age=_max_age(token_table, path),
        )

    def signers(self) -> list[tuple[str, str]]:
        """(sender name, secret) for every accepted secret, named senders first."""
        named = [(name, s) for name, secrets in self.senders.items() for s in secrets]
        return named + [(UNNAMED, s) for s in self.secrets]

    def next_stage(self, stage: str | None) -> str | None:
        if stage not in FLOW or stage == FLOW[-1]:
            return None
        return FLOW[FLOW.index(stage) + 1]

    def missing(self, stage: str, signoffs: list[dict]) -> dict[str, int]:
        """Sign-offs still needed for ``stage``: role -> count, distinct users per role."""
        need = {}
        for role, count in self.stages.get(stage, {}).items():
            users = {
                s["user"] for s in signoffs if s["role"] == role and s["decision"] == "approve"
            }
            if len(users) < count:
                need[role] = count - len(users)
        return need


def _intake_secrets(intake: dict, path) -> tuple[list[str], dict[str, list[str]]]:
    """The plain secrets list and the named senders, each secret checked for strength."""
    plain = intake.get("secrets", [])
    if not isinstance(plain, list) or not all(isinstance(s, str) for s in plain):
        raise ValueError(f"[intake] secrets in {path} must be a list of strings.")
    raw = intake.get("senders", {})
    if not isinstance(raw, dict):
        raise ValueError(f"[intake.senders] in {path} must map sender names to secrets.")
    senders = {}
    for name, value in raw.items():
        secrets = [value] if isinstance(value, str) else value
        if (
            not isinstance(secrets, list)
            or not secrets
            or not all(isinstance(s, str) for s in secrets)
        ):
            raise ValueError(
                f"[intake.senders] {name} in {path} must be a secret or a list of secrets."
            )
        senders[str(name)] = list(secrets)
    labelled = [("[intake] secrets", s) for s in plain] + [
        (f"[intake.senders] {n}", s) for n, ss in senders.items() for s in ss
    ]
    for label, secret in labelled:
        if problem := weak_secret_error(secret, f"{label} in {path}"):
            raise ValueError(problem)
    owners = [label for label, secret in labelled if [s for _, s in labelled].count(secret) > 1]
    if owners:
        raise ValueError(
            f"One secret is given twice in {path} ({', '.join(sorted(set(owners)))}): each "
            "secret must name one sender. Generate another with "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return list(plain), senders


TOP_KEYS = ("intake", "sandbox", "stages", "watch", "deploy", "monitor", "tokens")
INTAKE_KEYS = (
    *("secrets", "senders", "trusted_types", "revalidate", "gate_overrides"),
    *("required_checks", "max_skew_seconds", "max_versions_per_hour", "max_bytes_per_hour"),
)
SANDBOX_KEYS = ("require",)
TOKENS_KEYS = ("max_age",)


def _max_age(table: dict, path) -> str:
    """[tokens] max_age: a period (30m, 24h, 90d), checked as ``--expires`` is."""
    from .tokens import expiry_seconds

    value = table.get("max_age", "")
    if value == "":
        return ""
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise HandoffError("not a period")
        expiry_seconds(value)
    except HandoffError:
        raise ValueError(
            f'{path}: [tokens] max_age must be a period such as "90d", "24h" or "30m", '
            f"not {value!r}."
        ) from None
    return str(value)


def _table(data: dict, name: str, path) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{path}: write [{name}] as a table of KEY = VALUE lines.")
    return value


def _known(table: dict, keys: tuple[str, ...], where: str, path) -> None:
    """A misspelt key would silently keep its default (``[sandbox] requir = true`` leaves the
    sandbox optional): refuse it, as ``[deploy]`` does."""
    for name in table:
        if name not in keys:
            if where == "the top level":
                raise ValueError(
                    f"{path}: unknown table or key {name!r}; the tables are "
                    f"{', '.join(f'[{k}]' for k in keys)}."
                )
            raise ValueError(
                f"{path}: {where}: unknown key {name!r}; the keys are {', '.join(keys)}."
            )


def _flag(table: dict, key: str, default: bool, where: str, path) -> bool:
    """A boolean key: only TOML's true or false (bool("false") would be True)."""
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: {where} {key} must be true or false (unquoted), not {value!r}.")
    return value


def _skew(intake: dict, path) -> int:
    value = intake.get("max_skew_seconds", 300)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{path}: [intake] max_skew_seconds must be a whole number of seconds > 0, "
            f"not {value!r}."
        )
    return value


SIGNING_ROLES = ("reviewer", "admin")  # the roles whose tokens may sign a stage off


def _stages(stages: dict, path) -> dict[str, dict[str, int]]:
    """[stages.NAME] tables of ROLE = COUNT: a role nobody can hold, or a count that is no
    whole number, would leave every version waiting at that stage for ever."""
    unknown = set(stages) - set(FLOW)
    if unknown:
        raise ValueError(f"Unknown stages in {path}: {sorted(unknown)}; stages are {FLOW}")
    out = {}
    for stage, table in stages.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: write [stages.{stage}] as a table of ROLE = COUNT lines.")
        for role, count in table.items():
            if role not in SIGNING_ROLES:
                raise ValueError(
                    f"{path}: [stages.{stage}] {role} is no role that signs off: the roles are "
                    f"{' and '.join(SIGNING_ROLES)} (a token's --role)."
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(
                    f"{path}: [stages.{stage}] {role} must be a whole number of sign-offs "
                    f">= 0, not {count!r}."
                )
        out[stage] = dict(table)
    return out


def _watches(entries, path) -> list[dict]:
    if not isinstance(entries, list) or not all(isinstance(w, dict) for w in entries):
        raise ValueError(f"{path}: write each watched source as a [[watch]] table.")
    for n, w in enumerate(entries, 1):
        _known(w, WATCH_KEYS, f"[[watch]] #{n}", path)
        if not isinstance(w.get("model"), str) or not isinstance(w.get("source"), str):
            raise ValueError(f"{path}: [[watch]] #{n} needs model = NAME and source = PATH_OR_URL.")
    return [dict(w) for w in entries]


def _hourly(intake: dict, key: str, default: int, path) -> int:
    """An [intake] hourly limit: a whole number >= 0, 0 turning it off."""
    value = intake.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{path}: [intake] {key} must be a whole number >= 0 (0: no limit), not {value!r}."
        )
    return value


def _names(intake: dict, key: str, path) -> list[str]:
    """An [intake] list of check names (the agent refuses to start on one it does not run)."""
    value = intake.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{path}: [intake] {key} must be a list of check names: ["fairness"].')
    return value
