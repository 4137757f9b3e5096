"""Central policy, from a TOML file: who must sign off each stage, and what intake trusts.

[intake]
secrets = ["…", "…"]          # HMAC secrets accepted; two during rotation
trusted_types = ["sklearn.tree._tree.Tree"]   # skops types this central loads
accept_pickle = false
revalidate = true             # re-run the checks here before `validated`

[sandbox]
require = true                # never run model code without bubblewrap

[stages.approved]
reviewer = 1
[stages.production]
reviewer = 1
admin = 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tomllib

FLOW = ["received", "validated", "approved", "canary", "production", "archived"]
TERMINAL = {"archived", "rejected", "rollback"}
DEFAULT_STAGES = {
    "approved": {"reviewer": 1},
    "canary": {"reviewer": 1},
    "production": {"reviewer": 1, "admin": 1},
}


@dataclass
class Policy:
    secrets: list[str] = field(default_factory=list)
    trusted_types: list[str] = field(default_factory=list)
    accept_pickle: bool = False
    revalidate: bool = True
    max_skew: int = 300
    sandbox_require: bool = False
    stages: dict[str, dict[str, int]] = field(default_factory=lambda: dict(DEFAULT_STAGES))

    @classmethod
    def load(cls, path: str | Path | None) -> Policy:
        if not path:
            return cls()
        data = tomllib.loads(Path(path).read_text())
        intake = data.get("intake", {})
        stages = {**DEFAULT_STAGES, **data.get("stages", {})}
        unknown = set(stages) - set(FLOW)
        if unknown:
            raise ValueError(f"Unknown stages in {path}: {sorted(unknown)}; stages are {FLOW}")
        return cls(
            secrets=list(intake.get("secrets", [])),
            trusted_types=list(intake.get("trusted_types", [])),
            accept_pickle=bool(intake.get("accept_pickle", False)),
            revalidate=bool(intake.get("revalidate", True)),
            max_skew=int(intake.get("max_skew_seconds", 300)),
            sandbox_require=bool(data.get("sandbox", {}).get("require", False)),
            stages={k: {r: int(n) for r, n in v.items()} for k, v in stages.items()},
        )

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
