"""The review queue a page at a time, on each backend: every waiting version once, in order,
across pages; and a reviewer's own entries found past the many they may not sign."""

from __future__ import annotations

import pytest
from test_metadata import Registry, digest_of, manifest

from handoff_agent.policy import Policy
from handoff_agent.stages import StageManager
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def stages(tmp_path, backend):
    r = Registry(MetadataStore.for_home(tmp_path, backend.database_url() or ""))
    yield StageManager(r, Policy())
    r.close()


def waiting(stages, name: str, pusher: str, n: int) -> None:
    """``n`` versions of ``name`` pushed by ``pusher``, each waiting for a reviewer."""
    reg = stages.store
    for i in range(n):
        v, _ = reg.create_version(name, digest_of(f"{name}{i}"), 1, manifest(name), pusher, [])
        vid = reg.version_id(name, v["number"])
        reg.stage_set(vid, "validated", "agent", "", f"{name}:{v['number']}")


def every_page(stages, **kw) -> tuple[list[tuple[str, int]], int]:
    seen, after, pages = [], 0, 0
    while True:
        page = stages.page(after=after, **kw)
        seen += [(r["model"], r["version"]) for r in page["reviews"]]
        pages += 1
        if "next" not in page:
            return seen, pages
        after = page["next"]


def test_pages_hold_every_waiting_version_once_oldest_first(stages):
    waiting(stages, "churn", "ana", 4)
    waiting(stages, "risk", "ana", 3)
    everything = [("churn", n) for n in range(1, 5)] + [("risk", n) for n in range(1, 4)]
    assert every_page(stages, limit=3) == (everything, 3)
    assert every_page(stages, limit=7) == (everything, 1)  # exactly one page: no next
    only = every_page(stages, limit=2, only=("risk", None))
    assert only == ([("risk", 1), ("risk", 2), ("risk", 3)], 2)


def test_a_reviewers_page_reaches_past_the_versions_they_may_not_sign(stages):
    """bob pushed the first 250 (he may not sign his own): his page still finds ana's three,
    which come after more rows than the store is asked for at once."""
    waiting(stages, "churn", "bob", 250)
    waiting(stages, "risk", "ana", 3)
    bob = {"user": "bob", "roles": ["reviewer"]}
    first = stages.page(bob, limit=2)
    assert [(r["model"], r["version"]) for r in first["reviews"]] == [("risk", 1), ("risk", 2)]
    rest = stages.page(bob, limit=2, after=first["next"])
    assert [(r["model"], r["version"]) for r in rest["reviews"]] == [("risk", 3)]
    assert "next" not in rest
    assert len(stages.queue()) == 253 and len(stages.queue(bob)) == 3
