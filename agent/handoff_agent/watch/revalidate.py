"""The revalidate action: a version's checks again, on a watched source's new rows.

The rows go to the same sandboxed check workers a push's checks run in (``runner.CheckRunner``,
one per revalidation, built by the agent's ``make_runner``), as a Parquet file in place of the
pushed evaluation X and y; the model is loaded only there. The results are recorded against
the version (``revalidations``); the version, its stage and its own check rows stay as they were.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..pools import Calls
from . import fingerprint as fpm

# The stage a revalidation checks first: the version serving users. Without one, the newest
# pushed version, the one the analyst is about to hand off.
REVALIDATE_STAGE = "production"


class SourceRowsError(ValueError):
    """The source's rows cannot be checked (no target column, no rows); says what to fix."""


def pick_version(versions: list[dict]) -> dict | None:
    """``versions``: one model's rows (``versions_with_manifests``), oldest first."""
    pushed = [v for v in versions if v.get("digest")]
    serving = [v for v in pushed if v.get("stage") == REVALIDATE_STAGE]
    return (serving or pushed or [None])[-1]


class _Run:
    """One revalidation, as the Jobs its CheckRunner reports to: the results stay here."""

    def __init__(self, model, number, context: dict):
        self.model, self.number, self.context = model, number, context
        self.results: dict[int, dict] = {}

    def job_context(self, model: str, number: int) -> dict:
        return self.context

    async def start_check(self, run_id, model, number, check) -> bool:
        return True

    async def finish_check(self, run_id, status, message, result, duration) -> None:
        self.results[run_id] = {
            "status": status,
            "message": message,
            "result": result,
            "duration": duration,
        }


class Revalidator:
    def __init__(self, registry, gate, pools: Calls, home: Path, default_checks: list[str]):
        self.registry, self.gate, self.pools = registry, gate, pools
        self.home, self.default_checks = Path(home), list(default_checks)
        # (jobs) -> a CheckRunner reporting to ``jobs``; set by the agent when it starts
        self.make_runner: Callable | None = None
        self.max_rows = fpm.MAX_ROWS  # of each file or of the query; c.HandoffAgent.watch_max_rows
        self._ids = itertools.count(1)

    def version_for(self, model: str) -> dict | None:
        return pick_version(self.registry.versions_with_manifests(model))

    def checks_of(self, version_id: int) -> list[str]:
        """The checks the version ran when it was pushed (else the agent's)."""
        return [c["name"] for c in self.registry.checks_for(version_id)] or self.default_checks

    async def run(self, row: dict, url: str | None, version: dict) -> dict:
        """Check ``version`` on the source's rows now. Returns state, verdict, checks and
        detail; a source that cannot be read or checked is a failed revalidation."""
        model, number = version["model"], version["number"]
        try:
            path, rows = await self.pools.run_io(self._write_rows, row, url)
        except (fpm.SourceError, SourceRowsError) as e:
            return {"state": "failed", "verdict": None, "checks": [], "detail": {"error": str(e)}}
        try:
            vid = await self.pools.read(self.registry.version_id, model, number)
            names = await self.pools.read(self.checks_of, vid)
            manifest = await self.pools.read(self.registry.manifest_of, model, number) or {}
            context = {
                "champion": None,  # the version is checked against its own gate, not a rival
                "previous_manifest": None,
                "config": {c: self.gate.check_config(c, manifest.get("gate")) for c in names},
                "data": {"path": path, "target": row["target"]},
            }
            jobs = _Run(model, number, context)
            runs = [
                {"id": next(self._ids), "check_name": n, "model": model, "number": number}
                for n in names
            ]
            await self.make_runner(jobs).run_version(model, number, version["digest"], runs)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        checks = [{"name": r["check_name"], **jobs.results.get(r["id"], _MISSING)} for r in runs]
        verdict = self.gate.verdict(checks)
        return {
            "state": "done",
            "verdict": verdict["verdict"],
            "checks": checks,
            "detail": {"reasons": verdict["reasons"], "rows": rows, "version": number},
        }

    def _write_rows(self, row: dict, url: str | None) -> tuple[str, int]:
        frame = fpm.frame_of(row, url, self.home, self.max_rows)
        frame.columns = [str(c) for c in frame.columns]
        if row["target"] not in frame.columns:
            raise SourceRowsError(
                f"The source has no column {row['target']!r} (the watch's --target); its "
                f"columns are {', '.join(frame.columns[:20])}."
            )
        if frame.empty:
            raise SourceRowsError("The source has no rows to check.")
        fd, path = tempfile.mkstemp(prefix="revalidate-", suffix=".parquet", dir=self.home)
        os.close(fd)
        frame.to_parquet(path, index=False)
        return path, len(frame)


_MISSING = {"status": "error", "message": "The check reported no result.", "result": {}}
