"""The trust table: types an admin added to the default list, and versions waiting on them.

Plain functions over the metadata store, shared by the HTTP routes and the CLI. Each
change and its audit row share one transaction.
"""

from __future__ import annotations

from . import trust
from .errors import BadRequest


def listing(store, policy_types=()) -> dict:
    """What ``GET /api/v1/trust`` and ``trust list`` show: default, policy and added."""
    return {
        "default": sorted(trust.DEFAULT_TRUSTED),
        "policy": sorted(policy_types),
        "added": store.trust_added(),
    }


def add(store, names, by: str) -> list[str]:
    """Trust ``names`` (refused for gadgets). Returns the names newly added."""
    return store.trust_add(trust.check_addable(names), by, trust.DEFAULT_TRUSTED)


def remove(store, names, by: str) -> list[str]:
    """Stop trusting added types. Default types cannot be removed here."""
    defaults = sorted(set(names) & trust.DEFAULT_TRUSTED)
    if defaults:
        raise BadRequest(
            f"{', '.join(defaults)} is on the default list and cannot be removed.",
            "The default list ships with Handoff; `jupyter handoff trust list` shows it.",
            code="default_type",
        )
    return store.trust_remove(names, by)


def releasable(store, allowed) -> list[dict]:
    """Waiting versions (still in needs_trust) whose every type is now trusted."""
    return [r for r in store.trust_waiting() if not trust.untrusted(r["types"], allowed)]
