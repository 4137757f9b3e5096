"""``WatchService``: the sources models watch, fingerprinted on schedule, and what a change
sets off. One service owns the ``data_sources``, ``source_snapshots`` and ``triggers`` rows.

The scheduler runs in the agent the watch was registered with. ``%mlops watch`` registers it
with the analyst's local agent: the files and databases are reachable from that machine, the
retraining notebook and its kernel live there, and the candidate it pushes enters the normal
flow (local checks, signed hand-off, central's checks and sign-offs). A canary can only be
paused or rolled back where it serves, so those actions need central's DeploymentService.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import keyword
import logging
import math
import os
import shlex
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..bundle import read_members
from ..errors import BadRequest, Conflict, HandoffError, NotFound
from ..manifest import data_member
from ..names import validate_name
from ..outage import failed_round
from ..parquet_bytes import read_frame
from ..store.engine import redact
from ..vocabulary import (
    MONITOR_ALERT,
    NO_RETRAIN_ON,
    NO_REVALIDATE_ON,
    NOT_SQL_SCHEMES,
    WATCH_ACTIONS,
    WATCH_KEYS,
    WATCH_ON,
    owed_again,
    period_seconds,
    watch_alert_text,
)
from . import classify as cls
from . import fingerprint as fpm
from . import secrets

log = logging.getLogger("handoff_agent.watch")
MIN_EVERY = 1.0
MAX_EVERY = 365 * 86400.0
SNAPSHOT_TRIES = 3  # a check whose snapshot another check beat classifies again, this often
ORPHAN_SLACK = 60.0  # past a revalidation's timeout, before another replica calls it orphaned
REFERENCE_MEMBERS = (data_member("reference_X"), data_member("X"))
REFERENCES_KEPT = 64  # bundles' references kept in memory: bins and histograms of each feature
TRIGGERED_BY = "HANDOFF_TRIGGERED_BY"  # the retrain kernel's environment -> push provenance
OWED_LEASE = 120.0  # seconds a claim holds a change's pending triggers while they are acted on


class PolicyWatchError(ValueError):
    """A policy's [[watch]] table the agent cannot watch: the start stops with this line."""


class Options:
    """How a watch's settings are named where they were given: here the options of
    ``jupyter handoff watch`` and ``%mlops watch``, which send the API's body. ``spec`` is the
    one validation; only its words change with where the values came from."""

    fields_hint = (
        'e.g. {"model": "churn", "source": "/data/churn.parquet", "every": "1h", "on": ["change"]}'
    )
    absolute_hint = "The magic and the CLI make it absolute; through the API give one."
    between = " "  # between two settings of one example

    def key(self, key: str) -> str:
        return f"--{key}"

    def given(self, key: str, value) -> str:
        """A value as it was given, for a message."""
        return f"--{key} {value!r}"

    def item(self, key: str, value) -> str:
        """One word of a list (--on, --action), for a message."""
        return repr(value)

    query_example = "--query 'SELECT * FROM events'"  # written whole: no SQL outside the store
    params_example = '{"epochs": 3}'  # the body's JSON, which --params takes too

    def example(self, key: str, value) -> str:
        """How to write a value, for a hint."""
        return f"--{key} {shlex.quote(str(value))}"


class PolicyKeys(Options):
    """A policy file's [[watch]] table: its keys, and values as TOML writes them."""

    fields_hint = 'e.g. model = "churn", source = "/data/churn.parquet", every = "1h"'
    absolute_hint = 'Central reads the file as written: e.g. source = "/data/churn.parquet".'
    between = ", "

    def key(self, key: str) -> str:
        return key

    def given(self, key: str, value) -> str:
        if key in ("on", "actions"):
            return self.item(key, value)
        return self.example(key, value)

    def item(self, key: str, value) -> str:
        return f"{_toml(value)} in {key}"

    query_example = 'query = "SELECT * FROM events"'
    params_example = "params = { epochs = 3 }"  # a TOML inline table, not JSON

    def example(self, key: str, value) -> str:
        return f"{key} = {_toml(value)}"


OPTIONS = Options()


def _toml(value) -> str:
    """A string, number or list as TOML (and JSON) write it."""
    return json.dumps(value, ensure_ascii=False)


def parse_every(text, key: str = "every", words: Options = OPTIONS) -> float:
    """``30s``, ``15m``, ``1h``, ``1d`` or a number of seconds (``key`` names it in errors)."""
    seconds = period_seconds(text)
    if seconds is None:
        raise BadRequest(
            f"{words.given(key, text)} is not a period.", hint="Write e.g. 30s, 15m, 1h or 1d."
        )
    if not math.isfinite(seconds) or seconds > MAX_EVERY:
        raise BadRequest(
            f"{words.given(key, text)} is too long.",
            hint=f"At most 365d, e.g. {words.example(key, '1d')}",
        )
    if seconds < MIN_EVERY:
        raise BadRequest(
            f"{words.given(key, text)} is shorter than {MIN_EVERY:.0f} s.",
            hint=f"e.g. {words.example(key, '1h')}",
        )
    return seconds


class WatchService:
    def __init__(
        self,
        registry,
        blobs,
        pools,
        events,
        home: Path,
        role: str,
        owner: str,
        deployments=None,
        notify=None,
    ):
        self.registry, self.blobs, self.pools, self.events = registry, blobs, pools, events
        self.home, self.role, self.deployments = Path(home), role, deployments
        self.owner = owner  # this agent's id: its claims on the pending triggers
        # (kind, event), called inside the transaction of the trigger's row that owes a
        # webhook notice (the agent's Notices.keep, shared with the monitor's alerts and the
        # guardrails), so a kill after the commit cannot lose it; None without a webhook
        self.notify = notify
        # async (model) -> central's firing alerts of the model (a local agent's view of
        # central's monitor), asked every ``retrain_poll`` seconds; None: never asked
        self.central_alerts = None
        self.retrain_poll = 60.0
        self._next_poll = 0.0
        self._next_orphans = 0.0
        self.runtime_dir = None  # where the retrain kernel finds this agent (set at start)
        self.tick_seconds = 1.0
        self.revalidation_timeout = 1800.0  # set from c.HandoffAgent.revalidation_timeout
        self.max_rows = fpm.MAX_ROWS  # set from c.HandoffAgent.watch_max_rows
        self._capped_said: set[tuple[int, str]] = set()  # (source, note) logged once each
        self._task: asyncio.Task | None = None
        self._running: set[int] = set()
        self.retrains: set[asyncio.Task] = set()  # and revalidations: background work
        self._retrain_turn: dict[int, asyncio.Lock] = {}  # a watch's retrains run in turn
        # revalidate.Revalidator: re-runs a version's checks on the new rows; set by the agent
        self.revalidator = None
        # a bundle's reference by its digest: the bytes never change, so every check of every
        # watch of the model reads the bundle once, not once a check
        self._references: dict[str, dict | None] = {}
        self._references_lock = threading.Lock()  # checks run on the I/O pool's threads

    # -- registration ---------------------------------------------------------------------

    def spec(self, body: dict, missing_ok: bool = False, words: Options = OPTIONS) -> dict:
        """A watch as ``%mlops watch`` and the CLI send it, validated: the row to store.
        ``missing_ok``: a file or glob that matches nothing now is watched anyway (a policy's
        source, whose export may not have run yet: its checks record why it cannot be read).
        ``words``: how the mistakes name the settings (a policy's keys, not the options)."""
        w = words
        model = body.get("model")
        validate_name(model)
        unknown = [k for k in body if k not in WATCH_KEYS]
        if unknown:  # a misspelt setting ("evry") would leave its default unseen
            raise BadRequest(
                f"Unknown setting {unknown[0]!r}; a watch takes {', '.join(WATCH_KEYS)}.",
                hint="Check its spelling.",
            )
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            raise BadRequest(
                "Say which data to watch.", hint=f"e.g. {w.example('source', '/data/*.parquet')}"
            )
        for key in ("query", "run"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise BadRequest(f"{key} must be a string.", hint=w.fields_hint)
        for key in ("on", "actions"):
            value = body.get(key)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise BadRequest(f"{key} must be a list of words.", hint=w.fields_hint)
        every = parse_every(body.get("every", "1h"), "every", w)
        # the expected period between updates; none: cls.overdue_after's default
        overdue = body.get("overdue")
        overdue = None if overdue is None else parse_every(overdue, "overdue", w)
        if overdue is not None and overdue < every:  # its data is older than that at each look
            raise BadRequest(
                f"{w.example('overdue', body['overdue'])} is shorter than "
                f"{w.example('every', body.get('every', '1h'))}: "
                "the source would be overdue at every check.",
                hint=f"Give {w.key('overdue')} the longest the data may go unchanged, e.g. "
                f"{w.example('every', '1h')}{w.between}{w.example('overdue', '26h')} for a daily "
                "source.",
            )
        on = body.get("on") or ["change"]
        bad = [o for o in on if o not in WATCH_ON]
        if bad:
            raise BadRequest(
                f"{w.given('on', bad[0])} is not a change a watch knows.",
                hint=f"Use one or more of: {', '.join(WATCH_ON)}.",
            )
        run = body.get("run")
        actions = body.get("actions") or (["alert", "retrain"] if run else ["alert"])
        bad = [a for a in actions if a not in WATCH_ACTIONS]
        if bad:
            raise BadRequest(
                f"Unknown action {w.item('actions', bad[0])}.",
                hint=f"Use one of: {', '.join(WATCH_ACTIONS)}.",
            )
        if "retrain" in actions and not run:
            raise BadRequest(
                "A retrain needs a notebook.", hint=f"Add {w.example('run', 'retrain.ipynb')}."
            )
        canary = [a for a in actions if a.endswith("_canary")]
        if canary and self.deployments is None:
            raise Conflict(
                f"{canary[0]} acts on a canary, which serves only on central.",
                hint="Register this watch with the central agent (jupyter handoff watch --agent "
                "central).",
                code="central_only",
            )
        if run:
            path = Path(run)
            if not path.is_absolute() or path.suffix != ".ipynb" or not path.is_file():
                raise BadRequest(
                    f"No notebook at {run!r}.",
                    hint="Give the path of an existing .ipynb file (the magic makes it absolute).",
                )
            if self.role != "local":
                raise Conflict(
                    "Retraining notebooks run on the analyst's local agent, not on central.",
                    hint="Register the watch from the notebook with %mlops watch.",
                    code="local_only",
                )
        target = body.get("target")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise BadRequest(
                "target must be a column name.", hint=f"e.g. {w.example('target', 'churned')}"
            )
        if "revalidate" in actions and not target:
            raise BadRequest(
                "A revalidation needs the target column of the source's rows.",
                hint=f"Add {w.example('target', 'COLUMN')} (the label the checks score the "
                "model against).",
            )
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("params must be an object.", hint=f"e.g. {w.params_example}")
        odd = [k for k in params if not k.isidentifier() or keyword.iskeyword(k)]
        if odd:  # each becomes `name = value` in the notebook's injected cell
            raise BadRequest(
                f"params {odd[0]!r} is no Python variable name; the retrain sets each "
                "parameter as a variable in the notebook.",
                hint='Use names like {"n_rows": 5}.',
            )
        try:  # injected as Python literals: NaN or Infinity would be a NameError there
            json.dumps(params, allow_nan=False)
        except ValueError:
            raise BadRequest(
                "params may not hold NaN or Infinity.", hint=f"e.g. {w.params_example}"
            ) from None
        timeout = body.get("timeout", 600)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise BadRequest("timeout must be a positive number of seconds.", hint="e.g. 600")
        spec = {
            "model": model,
            "every": every,
            "overdue": overdue,
            "on": list(dict.fromkeys(on)),
            "actions": list(dict.fromkeys(actions)),  # an action named twice runs once
            "run": run,
            "params": params,
            "timeout": float(timeout),
            "target": target,
        }
        scheme = source.partition("://")[0].lower()
        if fpm.is_sql(source) and scheme in NOT_SQL_SCHEMES:
            # not a database: "needs a query" would send the user writing SQL for a web file
            raise BadRequest(
                f"A {scheme}:// source is neither a file here nor a database: a watch reads "
                "Parquet or CSV files on this machine, or a SQL query through a SQLAlchemy URL.",
                hint=_URL_HINT,
            )
        if fpm.is_sql(source):
            query = body.get("query")
            if not isinstance(query, str) or not query.strip():
                raise BadRequest(
                    "A SQL source needs a query.",
                    hint=f"Add {w.query_example}.",
                )
            shown = redact(source)
            if shown.startswith("<"):
                raise BadRequest("The source is not a SQLAlchemy URL.", hint=_URL_HINT)
            self._not_ours(fpm.sqlite_path(source))
            spec.update(
                kind="sql", source=shown, query=query, secret=secrets.seal(self.home, source)
            )
        else:
            path = source[len("file://") :] if source.startswith("file://") else source
            if not os.path.isabs(path):
                raise BadRequest(
                    f"The source {source!r} is not an absolute path.",
                    hint=w.absolute_hint,
                )
            try:
                files = fpm.files_of(path)
            except fpm.SourceError as e:
                raise BadRequest(
                    str(e), hint=f"e.g. {w.example('source', '/data/part-*.parquet')}"
                ) from None
            if not files and not missing_ok:
                raise BadRequest(
                    f"No file matches {path!r}.",
                    hint="Check the path; a glob like data/*.parquet must match files that "
                    "exist now.",
                )
            for f in files:
                self._not_ours(f)
            other = [f.name for f in files if f.suffix.lower() not in fpm.SUFFIXES]
            if other:
                raise BadRequest(
                    f"{other[0]} is not a Parquet or CSV file.",
                    hint="Watch .parquet or .csv files, e.g. "
                    f"{w.example('source', '/data/*.parquet')}.",
                )
            if body.get("query"):  # it would be kept and never run: the files are read whole
                raise BadRequest(
                    f"{w.key('query')} is for a database source; files are read whole.",
                    hint=f"Drop {w.key('query')}, or watch the database by its SQLAlchemy URL.",
                )
            spec.update(kind="file", source=path)
        return spec

    async def add(self, body: dict, by: str) -> dict:
        """Register a watch and take its first fingerprint (the baseline) before answering.
        A ``--target`` the source's rows lack is refused now, not at the first change."""
        spec = await self.pools.run_io(self.spec, body)
        if spec["target"]:
            await self._has_column(spec, spec["target"])
        row = await self.pools.call(self.registry.watch_add, spec, by)
        now = time.time()
        await self.pools.call(self.registry.watch_claim, row["id"], now, now + row["every"])
        row["last"] = await self.check(row["id"])
        return row

    async def _has_column(self, spec: dict, target: str) -> None:
        try:
            fp = await self.pools.run_io(
                fpm.fingerprint, spec, self.unseal(spec), None, 0, self.home, self.max_rows
            )
        except fpm.SourceError:
            return  # the first check records why the source cannot be read
        columns = [c["name"] for c in fp["schema"]]
        if target not in columns:
            raise BadRequest(
                f"The source has no column {target!r} (--target); its columns are "
                f"{', '.join(columns[:20])}.",
                hint="Name the column that holds the label the checks score the model against.",
                code="no_target_column",
            )

    def _not_ours(self, path: Path | None) -> None:
        """A watch reads the user's data, never the agent's own stores (its registry would
        answer queries about tokens and sign-offs)."""
        try:
            fpm.outside([] if path is None else [path], self.home)
        except fpm.SourceError:
            raise BadRequest(
                "That source is inside the agent's own home; a watch reads your data, not "
                "Handoff's storage.",
                hint="Watch the files or database the model was trained on.",
                code="source_in_home",
            ) from None

    def policy_specs(self, entries: list[dict], path: str) -> list[dict]:
        """The policy's [[watch]] tables, validated when the agent is built, before anything
        starts: a bad one stops the start with one line naming the file, the table and its
        key as written there. A file not there (yet) is no mistake in the policy: it is
        watched, and its checks say it cannot be read, alerting like any unreadable source."""
        out = []
        for n, entry in enumerate(entries, 1):
            try:
                out.append(self.spec(entry, missing_ok=True, words=PolicyKeys()))
            except (BadRequest, Conflict) as e:
                raise PolicyWatchError(
                    f"{path}: [[watch]] #{n} (model {_toml(entry.get('model'))}): "
                    f"{e.message} {e.hint or ''}".rstrip()
                ) from None
        return out

    def register_specs(self, specs: list[dict], by: str) -> list[dict]:
        """Store the policy's watches, validated by ``policy_specs``."""
        return [self.registry.watch_add(spec, by) for spec in specs]

    def unseal(self, row: dict) -> str | None:
        return secrets.unseal(self.home, row["secret"]) if row.get("secret") else None

    # -- the schedule ---------------------------------------------------------------------

    def start(self, runtime_dir: str | None = None) -> None:
        self.runtime_dir = runtime_dir
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for task in [self._task, *self.retrains]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self) -> None:
        if self.role == "local":
            try:
                await self.interrupted_retrains()
            except Exception:  # the database away at the start: the loop goes on regardless
                failed_round(log, "marking interrupted retrains failed")
            try:
                self._interrupted(await self.pools.call(self.registry.revalidations_interrupted))
            except Exception:
                failed_round(log, "marking interrupted revalidations failed")
        released = False
        while True:
            try:
                if not released:  # what this agent owed when it stopped or died: owed now
                    await self.pools.call(self.registry.triggers_release, self.owner)
                    released = True
                await self.owed()
                if time.time() >= self._next_orphans:
                    self._next_orphans = time.time() + ORPHAN_SLACK / 2
                    await self.orphans()
                await self.tick()
                if self.central_alerts is not None and time.time() >= self._next_poll:
                    self._next_poll = time.time() + self.retrain_poll
                    await self.requested_retrains()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed_round(log, "watch tick failed")
            await asyncio.sleep(self.tick_seconds)

    async def interrupted_retrains(self) -> list[dict]:
        """Retrains this agent's stop (or ``kill -9``) cut short, each marked ``interrupted``
        with why and owed once more: a change's as a pending trigger (``retry_of`` the first)
        that the loop carries out now, a monitor alert's by the next poll of central's alerts
        (``requested_retrains``). Not again when it was a re-run already, or when the candidate
        it pushed arrived before the stop (a second run would push a second candidate). The
        notebook's runner does not outlive its agent (``retrain.py`` stops it, and its kernel,
        once the agent that started it is gone), so none goes on unseen."""
        out = []
        for tr in await self.pools.read(self.registry.retrains_running):
            pushed = await self.pools.read(self.triggered_versions, tr["id"])
            retried = not owed_again(tr["detail"])
            again = not pushed and not retried
            error = "the agent stopped while the notebook ran"
            names = ", ".join(f"{v['model']}:{v['number']}" for v in pushed)
            monitor = tr["change"] == MONITOR_ALERT  # run again by the poll, as a new trigger
            why = (
                f"; its candidate {names} was pushed, so it is not run again"
                if pushed
                else "; it ran once again already"
                if retried
                else "; it runs once more while central's alert fires"
                if monitor
                else "; it runs once more"
            )
            detail = {**tr["detail"], "ok": False, "error": error + why, "versions": pushed}
            new = await self.pools.call(
                self.registry.retrain_interrupted, tr["id"], detail, again and not monitor
            )
            log.warning("retrain trigger %s interrupted: %s%s", tr["id"], error, why)
            out.append({"trigger": tr["id"], "state": "interrupted", "again": new})
        return out

    async def orphans(self) -> int:
        """Mark interrupted the revalidations running longer than one may (their agent
        stopped), each owed once more: any replica may, since a live one is cancelled at
        ``revalidation_timeout``; the next ``owed`` round carries the re-run out."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.revalidation_timeout + ORPHAN_SLACK)
        marked = await self.pools.call(
            self.registry.revalidations_interrupted, cutoff.isoformat(timespec="microseconds")
        )
        self._interrupted(marked)
        return len(marked)

    @staticmethod
    def _interrupted(marked: list[dict]) -> None:
        for m in marked:
            log.warning(
                "revalidation %s (trigger %s) interrupted: %s%s",
                m["revalidation"],
                m["trigger"],
                m["error"],
                f" (trigger {m['again']})" if m["again"] else "",
            )

    async def tick(self) -> list[dict]:
        """Fingerprint every source that is due (claimed first: replicas share the table)."""
        at = time.time()
        out = []
        for source_id in await self.pools.read(self.registry.watches_due, at):
            if source_id in self._running:
                continue
            row = await self.pools.read(self.registry.watch_get, source_id)
            if not await self.pools.call(
                self.registry.watch_claim, source_id, at, at + row["every"]
            ):
                continue
            try:
                out.append(await self.check(source_id))
            except Exception:  # one source's failure must not stop the others' checks
                log.exception("checking watched source %s failed", source_id)
        return out

    async def check(self, source_id: int) -> dict:
        """One fingerprint now: the snapshot, its change, and the actions it sets off."""
        self._running.add(source_id)
        try:
            return await self._check(source_id)
        finally:
            self._running.discard(source_id)

    async def _check(self, source_id: int) -> dict:
        row = await self.pools.read(self.registry.watch_get, source_id, True)
        if row is None:
            raise NotFound(f"No watched source {source_id}.", code="no_source")
        prev = await self.pools.read(self.registry.snapshot_last, source_id)
        ref = await self.pools.run_io(self.reference, row["model"])
        try:
            fp = await self.pools.run_io(
                fpm.fingerprint,
                row,
                self.unseal(row),
                ref["edges"] if ref else None,
                (prev or {}).get("rows") or 0,
                self.home,
                self.max_rows,
                ((prev or {}).get("detail") or {}).get("files"),
            )
        except fpm.SourceError as e:
            return await self._unreadable(row, str(e))
        detail = {
            "files": fp.get("files"),
            "row_hashes": fp.get("row_hashes"),
            "schema": fp["schema"],
        }
        if fp.get("capped"):
            detail["capped"] = fp["capped"]
        for note in fp.get("capped") or ():
            if (source_id, note) not in self._capped_said:  # once a source, not every check
                self._capped_said.add((source_id, note))
                log.warning("watch %s (%s): %s", source_id, row["model"], note)
        covered = {c for word in row["on"] for c in WATCH_ON[word]}
        for _ in range(SNAPSHOT_TRIES):
            fp.pop("since", None)
            # the last snapshot of an earlier watch of the source (removed, then added again)
            # is no baseline: the first fingerprint since is
            base = None if prev is None or (prev.get("detail") or {}).get("ended") else prev
            if base is not None and base["fingerprint"] == fp["fingerprint"]:
                fp["since"] = await self.pools.read(
                    self.registry.unchanged_since, source_id, fp["fingerprint"]
                )
            prev_full = base and {
                **base,
                "row_hashes": (base.get("detail") or {}).get("row_hashes"),
                "schema": (base.get("detail") or {}).get("schema"),
                "files": (base.get("detail") or {}).get("files"),
            }
            change, psi = cls.classify(
                prev_full,
                fp,
                ref["stats"] if ref else None,
                row["every"],
                overdue=row.get("overdue"),
            )
            # an overdue source alerts once, not at every check, until its data changes
            again = change == "overdue" and (base or {}).get("change") == "overdue"
            owed = tuple(row["actions"]) if change in covered and not again else ()
            snap = await self.pools.call(
                self.registry.snapshot_add,
                source_id,
                fp,
                change,
                psi,
                detail,
                prev and prev["id"],
                owed,
                self.owner,
                time.time() + OWED_LEASE,
            )
            if snap is not None:
                break
            # another check of this source (the schedule, a replica) stored its snapshot
            # first: this one's change is against that one, so a change acts once
            prev = await self.pools.read(self.registry.snapshot_last, source_id)
        else:
            raise Conflict(
                f"Source {source_id} is being checked by others right now.",
                hint="Check it again in a moment.",
                code="check_busy",
            )
        summary = {
            "source_id": source_id,
            "model": row["model"],
            "source": row["source"],
            "snapshot": snap["id"],
            "fingerprint": fp["fingerprint"],
            "change": change,
            "psi": psi,
            "rows": fp.get("rows"),
            "size": fp.get("size"),
            "max_updated": fp.get("max_updated"),
            "capped": fp.get("capped") or [],
            "triggers": [],
        }
        summary["triggers"] = await self.act(row, snap)
        self.events.publish(
            "watch.snapshot", **{k: v for k, v in summary.items() if k != "triggers"}
        )
        return summary

    async def _unreadable(self, row: dict, error: str) -> dict:
        """A check that could not read the source (gone, not Parquet or CSV, cut short).
        Its first such check records why (``error``, the alert skipped until it lasts); once
        it has been unreadable for longer than the watch's overdue period, one alert goes out
        (SSE ``watch.alert``, the webhook), like an overdue source's; the checks between add
        nothing. A good fingerprint ends it."""
        source_id = row["id"]
        self.events.publish("watch.error", model=row["model"], source=row["source"], error=error)
        streak = await self.pools.read(self.registry.errors_unsettled, source_id)
        late = cls.overdue_after(row["every"], row.get("overdue"))
        since = streak[0]["time"] if streak else None
        add = self.registry.trigger_add
        if since is None:
            why = f"an alert goes out once it has been unreadable for {late:g} s"
            await self.pools.call(
                add, source_id, None, "error", "alert", "skipped", {"error": error, "why": why}
            )
            since = (await self.pools.read(self.registry.errors_unsettled, source_id))[0]["time"]
        elif not any(t["state"] == "done" for t in streak) and (
            time.time() - datetime.fromisoformat(since).timestamp() > late
        ):
            detail = {"error": error, "since": since}
            event = await self.pools.call(self._alert_unreadable, row, detail)
            self._announce("watch.alert", event)
        return {"source": row["source"], "error": error, "since": since}

    def _alert_unreadable(self, row: dict, detail: dict) -> dict:
        """The unreadable source's alert trigger and its webhook notice, in one transaction."""
        with self.registry.transaction():
            tid = self.registry.trigger_add(row["id"], None, "error", "alert", "done", detail)
            event = {
                "trigger": tid,
                "model": row["model"],
                "source": row["source"],
                "source_id": row["id"],
                "change": "error",
                **detail,
            }
            event["message"] = watch_alert_text(event)  # a sentence for people
            if self.notify is not None:
                self.notify("watch.alert", event)
        return event

    # -- actions --------------------------------------------------------------------------

    async def act(self, row: dict, snap: dict) -> list[dict]:
        """Carry out the change's pending triggers (``snap["owed"]``: action -> trigger id),
        each to the state it reaches. One that fails is recorded failed, with why."""
        out = []
        for action, tid in snap["owed"].items():
            try:
                out.append(await self._act(action, tid, row, snap))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("the %s of trigger %s failed", action, tid)
                # if even this fails (the database away), its claim lapses and it is tried again
                await self._carried(tid, "failed", {"error": str(e) or type(e).__name__})
                out.append({"trigger": tid, "action": action, "state": "failed"})
        return out

    async def owed(self) -> list[dict]:
        """Carry out the pending triggers no agent holds: their agent stopped or died between
        storing a change and acting on it (any replica may: a claim is one agent's)."""
        at = time.time()
        rows = await self.pools.call(self.registry.triggers_owed, self.owner, at, at + OWED_LEASE)
        by_snapshot: dict[int, dict[str, int]] = {}
        for r in rows:
            by_snapshot.setdefault(r["snapshot_id"], {})[r["action"]] = r["id"]
        out = []
        for snapshot_id, owed in by_snapshot.items():
            snap = await self.pools.read(self.registry.snapshot_get, snapshot_id)
            row = await self.pools.read(self.registry.watch_get, snap["source_id"], True)
            log.info("carrying out %s owed by snapshot %s", ", ".join(owed), snapshot_id)
            out += await self.act(row, {**snap, "owed": owed})
        return out

    async def _act(self, action: str, tid: int, row: dict, snap: dict) -> dict:
        change = snap["change"]
        base = {
            "model": row["model"],
            "source": row["source"],
            "source_id": row["id"],
            "snapshot": snap["id"],
            "fingerprint": snap["fingerprint"],
            "change": change,
            "psi": snap["psi"],
        }
        if action == "revalidate":
            return await self._revalidate(tid, row, snap, change)
        if action in ("pause_canary", "rollback_canary"):
            return await self._canary(tid, row, change, action)
        if action == "retrain" and change in NO_RETRAIN_ON:
            why = {"why": f"no retrain on a {change} change"}
            await self._carried(tid, "skipped", why)
            return {"trigger": tid, "action": action, "state": "skipped", **why}
        if action == "alert":
            event = {"trigger": tid, **base}
            event["message"] = watch_alert_text(event)  # a sentence for people, as an alert's
            if await self._carried(tid, "done", base, ("watch.alert", event)):
                self._announce("watch.alert", event)
            return {"trigger": tid, "action": action, "state": "done"}
        if action == "retrain":
            if await self._carried(tid, "running", {}):
                self._start_retrain(tid, row, snap, change)
            return {"trigger": tid, "action": action, "state": "running"}
        raise ValueError(f"no such action: {action}")

    async def _carried(self, tid: int, state: str, detail: dict, notice=None) -> bool:
        """A pending trigger's new state; False: another agent carried it out first.
        ``notice``: its webhook notice (kind, event), in the same transaction."""
        return await self.pools.call(
            self._noticed, notice, self.registry.trigger_start, tid, state, detail
        )

    def _noticed(self, notice: tuple[str, dict] | None, write, *args):
        """``write(*args)`` and the webhook notice it owes in one transaction (on the
        metadata thread); none when ``write`` did nothing (False)."""
        with self.registry.transaction():
            done = write(*args)
            if done is not False and notice is not None and self.notify is not None:
                self.notify(*notice)
        return done

    async def _canary(self, tid, row, change, action) -> dict:
        model, why = row["model"], f"data source {row['source']}: {change}"
        try:
            if action == "pause_canary":
                await self.pools.call(self.deployments.set_traffic, model, 0.0, "watch")
                detail = {"traffic": 0}
            else:
                abort = self.deployments.abort_canary
                number = await self.pools.call(abort, model, why, "watch", True)
                detail = {"version": number}
            state = "done"
        except (NotFound, Conflict) as e:
            state, detail = "skipped", {"why": e.message}
        event = {"model": model, "source": row["source"], "change": change, "state": state}
        event = {"trigger": tid, **event, **detail}
        if not await self._carried(tid, state, detail, (f"watch.{action}", event)):
            return {"trigger": tid, "action": action, "state": state, **detail}
        self._announce(f"watch.{action}", event)
        return {"trigger": tid, "action": action, "state": state, **detail}

    async def _revalidate(self, tid, row, snap, change) -> dict:
        """Start re-running the checks of the model's production (else newest) version on
        the source's rows, in the background; the trigger is done when they are."""
        version = None
        if self.revalidator is not None and change not in NO_REVALIDATE_ON:
            version = await self.pools.read(self.revalidator.version_for, row["model"])
        if version is None:
            why = (
                f"no revalidation on a {change} change"
                if change in NO_REVALIDATE_ON
                else f"no version of {row['model']} to revalidate"
            )
            await self._carried(tid, "skipped", {"why": why})
            return {"trigger": tid, "action": "revalidate", "state": "skipped", "why": why}
        number = version["number"]
        rid = await self.pools.call(
            self.registry.revalidation_add, tid, version["id"], row, snap["id"], {"version": number}
        )
        if rid is not None:
            self._background(self._revalidation(tid, rid, row, snap, change, version))
        return {
            "trigger": tid,
            "action": "revalidate",
            "state": "running",
            "revalidation": rid,
            "version": number,
        }

    async def _revalidation(self, tid, rid, row, snap, change, version) -> None:
        try:
            out = await asyncio.wait_for(
                self.revalidator.run(row, self.unseal(row), version), self.revalidation_timeout
            )
        except TimeoutError:
            error = f"not finished within {self.revalidation_timeout:g} s"
            out = {"state": "failed", "verdict": None, "checks": [], "detail": {"error": error}}
        except asyncio.CancelledError:
            raise
        except Exception as e:  # recorded as failed, never left running
            log.exception("revalidation %s failed", rid)
            out = {"state": "failed", "verdict": None, "checks": [], "detail": {"error": str(e)}}
        event = {
            "trigger": tid,
            "revalidation": rid,
            "model": row["model"],
            "version": version["number"],
            "source": row["source"],
            "change": change,
            "state": out["state"],
            "verdict": out["verdict"],
            "error": out["detail"].get("error"),
        }
        await self.pools.call(
            self._noticed,
            ("watch.revalidate", event),
            self.registry.revalidation_done,
            rid,
            tid,
            out["state"],
            out["verdict"],
            out["checks"],
            out["detail"],
        )
        self._announce("watch.revalidate", event)

    def _announce(self, kind: str, event: dict) -> None:
        """A trigger that reached people: an SSE event, once its row, audit row and webhook
        notice committed (the event wakes the notices' sender)."""
        self.events.publish(kind, **event)

    def _start_retrain(self, tid: int, row: dict, snap: dict, change: str, extra=None) -> None:
        self._background(self.retrain(tid, row, snap, change, extra))

    def _background(self, coro) -> None:
        """A retrain or a revalidation, kept in ``retrains`` until it ends."""
        task = asyncio.ensure_future(coro)
        self.retrains.add(task)
        task.add_done_callback(self.retrains.discard)

    # -- retrains central's monitor asks for ---------------------------------------------

    async def requested_retrains(self) -> list[dict]:
        """Central's firing alerts whose ``[monitor.actions]`` action is ``retrain`` (audit
        ``monitor.retrain_requested``) run the model's registered retraining notebook here,
        once per alert, like a changed source does: through the model's first watch with a
        notebook and the retrain action. Central down: asked again at the next poll."""
        out = []
        chosen: dict[str, dict] = {}
        for row in await self.pools.read(self.registry.watches):
            if row.get("run") and "retrain" in row["actions"]:
                chosen.setdefault(row["model"], row)
        for model, row in chosen.items():
            try:
                alerts = await self.central_alerts(model)
            except HandoffError as e:
                log.info("no retrain requests for %s from central: %s", model, e.message)
                continue
            wanted = [a for a in alerts if a.get("action") == "retrain"]
            if not wanted:
                continue
            ran: dict = {}
            for t in await self.pools.read(self.registry.triggers_of, row["id"]):
                if t["change"] == MONITOR_ALERT:
                    ran.setdefault((t.get("detail") or {}).get("alert"), []).append(t)
            for alert in wanted:
                again = _run_again(ran.get(alert["id"], []))
                if again is not False:
                    out.append(await self.retrain_for_alert(row, alert, again))
        return out

    async def retrain_for_alert(self, row: dict, alert: dict, retry_of: int | None = None) -> dict:
        snap = await self.pools.read(self.registry.snapshot_last, row["id"])
        if snap is None:  # the source never fingerprinted: no data to name as the cause
            return {"action": "retrain", "state": "skipped", "alert": alert["id"]}
        asked = {"alert": alert["id"], "kind": alert.get("kind"), "window": alert.get("window")}
        if retry_of is not None:
            asked["retry_of"] = retry_of
        add = self.registry.trigger_add
        tid = await self.pools.call(
            add, row["id"], snap["id"], MONITOR_ALERT, "retrain", "running", asked
        )
        self._start_retrain(tid, row, snap, MONITOR_ALERT, asked)
        return {"trigger": tid, "action": "retrain", "state": "running", **asked}

    async def retrain(
        self, tid: int, row: dict, snap: dict, change: str, extra: dict | None = None
    ) -> None:
        """The notebook in its own process (nbclient and a kernel); the agent waits.
        ``extra``: what else caused it (central's alert), kept in the cause and the result."""
        cause = {
            "trigger": tid,
            "source": row["source"],
            "source_id": row["id"],
            "fingerprint": snap["fingerprint"],
            "snapshot": snap["id"],
            "change": change,
            **(extra or {}),
        }
        params = {
            **row["params"],
            "handoff_source": row["source"] if row["kind"] == "file" else None,
            "handoff_trigger": cause,
        }
        env = {**os.environ, TRIGGERED_BY: json.dumps(cause)}
        if self.runtime_dir:
            env["JUPYTER_RUNTIME_DIR"] = self.runtime_dir
        # one retrain of a watch at a time: changes in quick succession each retrain, in turn,
        # not as a pile of kernels and pushes at once
        async with self._retrain_turn.setdefault(row["id"], asyncio.Lock()):
            result = await self._run_notebook(row, params, env)
        pushed = await self.pools.read(self.triggered_versions, tid)
        state = "done" if result.get("ok") else "failed"
        detail = {**(extra or {}), **result, "versions": pushed, "notebook": row["run"]}
        await self.pools.call(self.registry.trigger_done, tid, state, detail)
        self.events.publish(
            "watch.retrain",
            model=row["model"],
            trigger=tid,
            state=state,
            versions=pushed,
            error=result.get("error"),
        )

    async def _run_notebook(self, row: dict, params: dict, env: dict) -> dict:
        """The notebook in its own process, bounded by the watch's timeout: its result."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "handoff_agent.watch.retrain",
            row["run"],
            "--params",
            json.dumps(params, default=str),
            "--timeout",
            str(row["timeout"]),
            cwd=str(Path(row["run"]).parent),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), row["timeout"] + 30)
            lines = stdout.decode(errors="replace").strip().splitlines()
            result = json.loads(lines[-1]) if lines else {"ok": False, "error": "no result"}
        except TimeoutError:
            os.killpg(proc.pid, 9)
            await proc.wait()
            result = {"ok": False, "error": f"the notebook ran longer than {row['timeout']:.0f} s"}
        except ValueError:
            result = {"ok": False, "error": stderr.decode(errors="replace")[-500:]}
        except asyncio.CancelledError:
            os.killpg(proc.pid, 9)
            raise
        return result

    def triggered_versions(self, tid: int) -> list[dict]:
        return [
            {"model": v["model"], "number": v["number"]}
            for v in self.registry.versions_with_manifests()
            if (triggered_by(v) or {}).get("trigger") == tid
        ]

    # -- the model's reference ------------------------------------------------------------

    def reference(self, model: str) -> dict | None:
        """PSI bins and histograms from the model's newest version's reference (else its
        evaluation) data, read from the bundle as Parquet: data only, no model code."""
        rows = [v for v in self.registry.versions_with_manifests(model) if v.get("digest")]
        if not rows:
            return None
        digest = rows[-1]["digest"]
        with self._references_lock:
            if digest in self._references:
                return self._references[digest]
        try:
            with self.blobs.open(digest) as f:
                found = read_members(f, REFERENCE_MEMBERS)
            member = next((m for m in REFERENCE_MEMBERS if m in found), None)
            frame = None if member is None else read_frame(found[member])
        except Exception as e:  # a reference that cannot be read: no PSI, and the log says why
            log.warning("no reference for %s: %s", model, e)
            return None  # not kept: the next check tries again
        ref = None
        if frame is not None:
            edges = fpm.reference_edges(frame)
            ref = {"edges": edges, "stats": fpm.stats(frame, edges)}
        with self._references_lock:
            if len(self._references) >= REFERENCES_KEPT:
                self._references.pop(next(iter(self._references)))  # the oldest read
            self._references[digest] = ref
        return ref


def _run_again(triggers: list[dict]):
    """Whether an alert's retrain runs (again): None, never run; the id of its one trigger
    that its agent's stop interrupted before a candidate was pushed (run once more); False,
    handled."""
    if not triggers:
        return None
    first = triggers[0]
    if len(triggers) == 1 and first["state"] == "interrupted":
        return False if (first["detail"] or {}).get("versions") else first["id"]
    return False


def triggered_by(version: dict) -> dict | None:
    return ((version.get("manifest") or {}).get("provenance") or {}).get("triggered_by")


_URL_HINT = "Write e.g. postgresql://user:password@host/db (a SQLAlchemy URL) or a file path."
