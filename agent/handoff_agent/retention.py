"""Retention: free a model's room by removing the bundles of old versions nobody loads again.

The analyst's retraining loop pushes a version an hour; each keeps its bundle forever unless
something removes it. A pruned version keeps its record, checks, reports, lineage, stages and
audit rows (what a reviewer or auditor reads); only the bundle goes, with an audit row. The
store says which may go (``RetentionStore``); this service adds the champion, which the next
push is compared with, and says what was freed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from .errors import Gone
from .store.blobs import BlobError

log = logging.getLogger("handoff_agent")


class Store(Protocol):
    def prunable(self, name, keep, protect=()): ...
    def prune_version(self, name, row, keep, protect, actor): ...
    def drop_pruned_bundle(self, version_id, remove): ...
    def restore_pruned(self, version_id, present, actor): ...
    def drop_pruned_graph(self, version_id, actor): ...


class Blobs(Protocol):
    def delete(self, digest: str) -> None: ...


class Retention:
    def __init__(self, store: Store, blobs: Blobs, champion: Callable[[str], dict | None]):
        self.store, self.blobs, self.champion = store, blobs, champion

    def prune(self, name: str, keep: int, actor: str, dry_run: bool = False) -> dict:
        """Remove the bundles of ``name``'s versions older than its newest ``keep`` that
        nothing needs; ``dry_run`` says which, and removes nothing."""
        champion = self.champion(name)
        protect = (champion["number"],) if champion else ()
        rows = self.store.prunable(name, keep, protect)
        freed = sum((r["size"] or 0) + r["graph"] for r in rows)
        if not dry_run:
            done = [(r, self._prune(name, r, keep, protect, actor)) for r in rows]
            rows = [r for r, graph in done if graph is not None]
            freed = sum((r["size"] or 0) + graph for r, graph in done if graph is not None)
        return {
            "model": name,
            "keep": keep,
            "dry_run": dry_run,
            "pruned": [r["number"] for r in rows],
            "freed": freed,
        }

    def _prune(self, name, row, keep, protect, actor) -> int | None:
        """Prune one version: None if it may no longer go, else the bytes of its ONNX graph
        that went with it (central's; 0 elsewhere)."""
        store = self.store
        if not store.prune_version(name, row, keep, protect, actor):
            return None  # a stage, a slot or a delivery took it meanwhile
        try:
            store.drop_pruned_bundle(row["id"], self.blobs.delete)
        except Exception:  # the bytes are still there: so is the version, audited as such
            store.restore_pruned(row["id"], lambda: True, actor)
            raise
        graph = store.drop_pruned_graph(row["id"], actor)
        if graph is None:
            return 0
        try:
            self.blobs.delete(graph[0])
        except (OSError, BlobError):  # an orphan now, which fsck lists and passes
            log.warning("%s:%s's ONNX graph stays as an orphan blob", name, row["number"])
            return 0
        return graph[1]


def refuse_pruned(name: str, version: dict) -> None:
    """A pruned version's bundle is gone: say so, and how to bring it back."""
    if version.get("pruned"):
        raise Gone(
            f"{name}:{version['number']}'s bundle was pruned on {version['pruned'][:10]}; "
            "its record and reports are kept.",
            "Push the same model again to bring the bundle back.",
        )
