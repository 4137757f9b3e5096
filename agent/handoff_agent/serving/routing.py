"""One endpoint per model, with slots, and the choice of which version answers a request.

- ``production`` and ``canary`` share the traffic: canary gets its percentage, production the
  rest (all of it when there is no canary; a canary alone takes everything). A production
  the server cannot serve now (``down``: loading, or its bundle cannot load) keeps its
  share, answered 503: the canary never takes it over, unbaked.
- ``shadow`` gets a mirrored copy of every routed request; its answer is logged, never sent.
- ``test`` (and ``previous``, the warm rollback target) get traffic only when a request
  names their version.

The draw is uniform in [0, 100): random per request, or a stable hash of the request's key,
so a key keeps its version while the split stays the same.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

SLOTS = ("production", "canary", "shadow", "test", "previous")
SPLIT_SLOTS = ("production", "canary")


@dataclass(frozen=True)
class Route:
    slot: str
    number: int
    traffic: float = 0.0


@dataclass
class Endpoint:
    model: str
    routes: dict[str, Route] = field(default_factory=dict)  # slot -> Route
    down: dict[str, tuple[int, str]] = field(default_factory=dict)  # slot -> (number, why)

    def versions(self) -> set[int]:
        return {r.number for r in self.routes.values()}

    def slot_of(self, number: int) -> str | None:
        """The slot a version serves in; the split slots first."""
        for slot in SLOTS:
            r = self.routes.get(slot)
            if r is not None and r.number == number:
                return slot
        return None

    def canary_share(self) -> float:
        canary = self.routes.get("canary")
        if canary is None:
            return 0.0
        if "production" not in self.routes and "production" not in self.down:
            return 100.0
        return min(100.0, max(0.0, canary.traffic))

    def pick(self, key: str | None = None, rng: random.Random | None = None) -> Route | None:
        """The route of one request: canary below its share of the draw, else production.
        None: nothing to route to, or production's share while production is down."""
        if not any(s in self.routes for s in SPLIT_SLOTS):
            return None
        draw = draw_of(self.model, key) if key else (rng or random).random() * 100.0
        if draw < self.canary_share():
            return self.routes["canary"]
        if "production" in self.down:
            return self.routes.get("production")
        return self.routes.get("production") or self.routes["canary"]

    def shadow(self) -> Route | None:
        return self.routes.get("shadow")


def draw_of(model: str, key: str) -> float:
    """A key's fixed place in [0, 100): the same key, the same draw, on every replica."""
    digest = hashlib.sha256(f"{model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def endpoints_from(rows: list[dict]) -> dict[str, Endpoint]:
    """Endpoints from the slot table's rows (``slots_of``)."""
    out: dict[str, Endpoint] = {}
    for row in rows:
        ep = out.setdefault(row["model"], Endpoint(row["model"]))
        ep.routes[row["slot"]] = Route(row["slot"], int(row["number"]), float(row["traffic"]))
    return out
