"""What entering ``validated`` runs at central, in the background: the computational test of
a deployment in its test environment.

1. The ONNX conversion with parity (``onnx_convert``, in a sandboxed worker: the model's code
   never runs here). Its graph goes to the blob store; the backend (``onnx`` or ``skops``),
   the parity figures, the tolerance and any reason are recorded. The model server then loads
   the version again on that backend (``onnx_backend.choose``).
2. The load test (``loadtest.run_pair``) of the test slot against the production version, in
   the same run, at the policy's concurrency levels, with rows of the evaluation sample, gated
   by ``[deploy.loadtest]``. A failed gate blocks moves beyond ``validated`` as the policy's
   ``block_on`` says (409 ``load_test_failed``, naming the gate).

The run is queued in the transaction that made the version ``validated``, and claimed with a
lease, so one replica runs it and a crash is taken over. Every step is bounded: a timeout, a
dead worker or a broken sandbox is a recorded failure with its reason, never a version left
waiting. A version that leaves ``validated`` while its load test runs stops it (``cancelled``):
the test's requests must not reach a canary's or a shadow's statistics.
Load-test requests carry ``X-Handoff-Load-Test`` (with central's own token) and the request id
``loadtest-MODEL-N``: the model server answers them but keeps them out of the slots'
statistics, the guardrails and the prediction log. Their numbers are the load test's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from traitlets import Bool, Float, Integer
from traitlets.config import Configurable

from .. import loadtest, onnx_convert
from ..errors import Conflict
from ..outage import failed_round
from ..trait_checks import positive
from ..vocabulary import FLOW
from . import onnx_backend, protocols

log = logging.getLogger("handoff_agent")
# The stages beyond validated, up to production (archiving is never blocked).
GATED = FLOW[FLOW.index("validated") + 1 : FLOW.index("production") + 1]
STAGE_POLL = 0.5


class Validation(Configurable):
    """Central: the ONNX conversion and the load test run when a version enters validated."""

    enabled = Bool(
        True,
        help="Central: when a version enters validated, convert it to ONNX (kept only with "
        "parity on its evaluation sample) and load-test its test slot against production, "
        "gated by the policy's [deploy.loadtest]. False: versions serve with skops, untested.",
    ).tag(config=True)
    convert_timeout = Float(
        180.0, help="Seconds the sandboxed ONNX conversion may take before it is stopped."
    ).tag(config=True)
    loadtest_timeout = Float(
        600.0,
        help="Seconds the whole load test (every level, both versions) may take; past that it "
        "is a recorded failure.",
    ).tag(config=True)
    level_seconds = Float(
        20.0, help="Most seconds one concurrency level of the load test runs, per version."
    ).tag(config=True)
    sample_rows = Integer(
        500, help="Rows of the evaluation sample the load test cycles through."
    ).tag(config=True)
    poll_interval = Float(
        2.0,
        help="Seconds between looks for validations to run (queued here, by another replica, "
        "or left by a replica that died).",
    ).tag(config=True)

    _positive = positive(
        *("poll_interval", "convert_timeout", "loadtest_timeout", "level_seconds", "sample_rows")
    )


def process_tree(pids) -> list[int]:
    """``pids`` and every process below them (bubblewrap runs the worker under its own)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat")) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def sample_frame(sample: dict):
    """The evaluation rows the conversion worker read, as a DataFrame (from JSON only)."""
    import pandas as pd

    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    for col, dtype in (sample.get("dtypes") or {}).items():
        with contextlib.suppress(Exception):  # e.g. ints with a null: keep pandas' guess
            frame[col] = frame[col].astype(dtype)
    return frame


def summary(row: dict | None) -> dict | None:
    """The public shape of a validation (version detail, deployment view, report)."""
    if row is None:
        return None
    conv = row.get("conversion") or {}
    lt = row.get("loadtest") or {}
    gate = lt.get("gate") or {}
    return {
        "state": row["state"],
        "backend": row["backend"],
        "parity": {
            "converted": conv.get("converted"),
            "reason": conv.get("reason") or None,
            "tolerance": conv.get("tolerance"),
            "max_abs_diff": conv.get("max_abs_diff"),
            "label_agreement": conv.get("label_agreement"),
            "rows": conv.get("rows"),
            "onnx": row.get("onnx"),
            "onnx_size": conv.get("onnx_size"),
            "seconds": conv.get("seconds"),
        }
        if conv
        else None,
        "loadtest": {
            "verdict": row["verdict"],
            "failed": gate.get("failed") or lt.get("failed") or [],
            "reasons": gate.get("reasons") or [],
            "notes": gate.get("notes") or [],
            "limits": gate.get("limits"),
            "worst": gate.get("worst"),
            "production_version": lt.get("production_version"),
            "candidate": _levels(lt.get("candidate")),
            "production": _levels(lt.get("production")),
            "comparison": (lt.get("comparison") or {}).get("levels"),
        }
        if row["verdict"] or lt
        else None,
        "reason": row["reason"],
        "queued": row["queued"],
        "finished": row["finished"],
    }


def _levels(result: dict | None) -> list[dict] | None:
    if not result:
        return None
    keys = ("concurrency", "requests", "errors", "p50", "p99", "throughput", "error_rate")
    out = []
    for lv in result.get("levels") or []:
        row = {k: lv.get(k) for k in keys}
        row["p50_ms"] = None if lv.get("p50") is None else round(lv["p50"] * 1000, 3)
        row["p99_ms"] = None if lv.get("p99") is None else round(lv["p99"] * 1000, 3)
        row["memory_per_worker"] = lv.get("memory_per_worker")
        row["first_error"] = lv.get("first_error") or None
        del row["p50"], row["p99"]
        out.append(row)
    return out


class ValidationService:
    """``pools``: the agent's store/IO doors; ``trusted()``: central's trust list;
    ``token()``: a token the model server accepts; ``write_reports(model, number, id)``
    renders the version's report again; ``owner``: this home's agent id (claims)."""

    def __init__(
        self,
        settings: Validation,
        store,
        blobs,
        pools,
        events,
        sandbox,
        limits,
        policy,
        owner: str,
        trusted: Callable[[], list[str]],
        token: Callable[[], str],
        write_reports,
        test_slot,
    ):
        self.settings, self.store, self.blobs, self.pools = settings, store, blobs, pools
        self.events, self.sandbox, self.limits, self.policy = events, sandbox, limits, policy
        self.owner, self.trusted, self.token = owner, trusted, token
        self.write_reports = write_reports
        # ``hold_test_slot`` / ``release_test_slot`` (serving.deploy.DeploymentService):
        # the version under test has the model's one test slot for the length of its test.
        self.test_slot = test_slot
        self.server = None  # the ModelServer, once started
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._running: set[int] = set()

    @property
    def lease(self) -> float:
        s = self.settings
        return s.convert_timeout + s.loadtest_timeout + 2 * 120.0  # + two model loads

    # -- inside the stage change's transaction (StageManager hooks) ----------------------

    def on_stage(self, subject: str, version_id: int, before, stage: str, by: str) -> None:
        if stage == "validated" and self.settings.enabled:
            model, _, number = subject.rpartition(":")
            self.store.validation_queue(version_id, model, int(number), by)

    def guard(self, version: dict, target: str, subject: str) -> None:
        """Refuse a move beyond validated that the load test's gate blocks (policy's
        ``[deploy.loadtest] block_on``). Runs in the stage change's transaction."""
        block = self.policy.deploy.loadtest.block_on
        if target not in GATED or block == "never":
            return
        row = self.store.validation_of(version["id"])
        if row is None:  # validated before validation existed, or with it off
            return
        model, _, number = subject.rpartition(":")
        where = f"GET /api/v1/models/{model}/versions/{number} (validation)"
        if row["verdict"] == "fail":
            gate = (row.get("loadtest") or {}).get("gate") or {}
            failed = gate.get("failed") or (row.get("loadtest") or {}).get("failed") or []
            why = "; ".join(gate.get("reasons") or []) or row.get("reason") or "no reason"
            rerun = f"POST /api/v1/models/{model}/versions/{number}/validation"
            if failed == ["finished"]:  # it broke or timed out: no limit was measured
                raise Conflict(
                    f"{subject} cannot enter {target}: its load test did not finish ({why}).",
                    f"See {where}. Once the cause is fixed an admin re-runs it: {rerun}.",
                    code="load_test_failed",
                )
            raise Conflict(
                f"{subject} cannot enter {target}: its load test failed the gate "
                f"{', '.join(failed) or 'of [deploy.loadtest]'} ({why}).",
                f"See {where}. Push a faster version, or once the cause is fixed an admin "
                f"re-runs it: {rerun}. The limits are [deploy.loadtest] in central's policy.",
                code="load_test_failed",
            )
        if block == "not_passed" and row["state"] != "done":
            raise Conflict(
                f"{subject} cannot enter {target} yet: its load test has not finished "
                f"({row['state']}).",
                f'The policy waits for it ([deploy.loadtest] block_on = "not_passed"); '
                f"watch {where}.",
                code="load_test_pending",
            )

    # -- the model server's hook ----------------------------------------------------------

    async def choose_backend(self, model: str, number: int, manifest: dict):
        """``ModelServer.choose_backend``: ONNX where the recorded conversion has parity and
        onnxruntime is here, else skops."""
        vid = await self.pools.read(self.store.version_id, model, number)
        row = await self.pools.read(self.store.validation_of, vid)
        conversion = dict((row or {}).get("conversion") or {}, onnx=(row or {}).get("onnx"))
        if onnx_backend.choose(conversion) == "onnx":
            return "onnx", {"onnx": conversion["onnx"]}
        return "skops"

    # -- admin ----------------------------------------------------------------------------

    def rerun(self, model: str, number: int, by: str) -> dict:
        """Queue a version's validation again (it must still be validated)."""
        with self.store.transaction():
            vid = self.store.version_id(model, number)
            stage = self.store.version_stage(vid)
            if stage != "validated":
                raise Conflict(
                    f"{model}:{number} is {stage}; only a validated version is load-tested.",
                    code="wrong_stage",
                )
            row = self.store.validation_of(vid)
            if row is not None and row["state"] in ("converting", "load_testing"):
                raise Conflict(
                    f"{model}:{number} is being validated now ({row['state']}).",
                    "Wait for it to finish, then run it again if needed.",
                    code="validation_running",
                )
            self.store.validation_queue(vid, model, number, by)
        self._wake.set()
        return summary(self.store.validation_of(vid))

    def of(self, model: str, number: int) -> dict | None:
        return summary(self.store.validation_of(self.store.version_id(model, number)))

    def for_versions(self, model: str, numbers) -> dict[str, dict]:
        rows = self.store.validations_of(model, numbers)
        return {str(n): summary(r) for n, r in sorted(rows.items())}

    # -- the runner -----------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.enabled:
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        events = self.events.subscribe()
        try:
            while True:
                try:
                    await self._run_claimable()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the next look must still happen
                    failed_round(log, "looking for validations to run failed")
                await self._next(events)
        finally:
            self.events.unsubscribe(events)

    async def _next(self, events: asyncio.Queue) -> None:
        """Until a version enters validated (here or at a replica), a rerun, or the poll."""

        async def validated():
            while True:
                e = await events.get()
                if e.get("type") == "stage" and e.get("stage") == "validated":
                    return
                if e.get("type") == "validation" and self.server is not None:
                    # converted at another replica: serve it on the same backend here
                    self.server.adopt(e.get("model"), e.get("version"), e.get("backend"))

        waits = [asyncio.ensure_future(validated()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self.settings.poll_interval, return_when="FIRST_COMPLETED"
            )
        finally:
            for w in waits:
                w.cancel()
            self._wake.clear()

    async def _run_claimable(self) -> None:
        """One at a time: two load tests at once would measure each other."""
        for vid in await self.pools.read(self.store.validation_claimable, self.owner):
            row = await self.pools.call(
                self.store.validation_claim, vid, self.owner, self.lease, tuple(self._running)
            )
            if row is None:
                continue
            self._running.add(vid)
            try:
                await self.run(row)
            finally:
                self._running.discard(vid)

    async def run(self, row: dict) -> None:
        vid, model, number = row["version_id"], row["model"], int(row["number"])
        try:
            await self._convert(vid, model, number, row["digest"])
            await self._load_test(vid, model, number)
        except asyncio.CancelledError:
            raise  # stopping: the claim is this home's, so the next start runs it again
        except Exception as e:
            log.exception("validation of %s:%s broke", model, number)
            await self.pools.call(
                self.store.validation_update,
                vid,
                state="done",
                verdict="fail",
                reason=f"the validation broke: {type(e).__name__}: {e}"[:500],
                loadtest={"failed": ["finished"]},
            )
        if self.write_reports is not None:
            try:
                await self.write_reports(model, number, vid)
            except Exception:
                log.exception("the report of %s:%s was not written again", model, number)
        done = await self.pools.read(self.store.validation_of, vid)
        out = summary(done) or {}
        self.events.publish(
            "validation",
            model=model,
            version=number,
            backend=out.get("backend"),
            verdict=(out.get("loadtest") or {}).get("verdict"),
            failed=(out.get("loadtest") or {}).get("failed") or [],
            reason=out.get("reason"),
        )

    async def _convert(self, vid: int, model: str, number: int, digest: str) -> None:
        await self.pools.call(self.store.validation_update, vid, state="converting")
        result = await onnx_convert.convert(
            self.sandbox,
            self.blobs,
            digest,
            trusted=list(self.trusted()),
            limits=self.limits,
            timeout=self.settings.convert_timeout,
            sample_rows=self.settings.sample_rows,
        )
        self._sample = result.pop("sample", None)
        backend = onnx_backend.choose(result)
        await self.pools.call(
            self.store.validation_update,
            vid,
            backend=backend,
            onnx=result.get("onnx"),
            conversion=result,
            state="load_testing",
        )
        if self.server is not None and backend == "onnx":
            served = await self.server.reload(model, number)
            if served not in (None, "onnx"):
                reason = "the ONNX graph did not load in a serving worker; skops serves"
                await self.pools.call(
                    self.store.validation_update,
                    vid,
                    backend="skops",
                    conversion={**result, "served": False, "serving_reason": reason},
                )

    async def _finish(self, vid: int, verdict: str, reason: str, loadtest_out=None) -> None:
        await self.pools.call(
            self.store.validation_update,
            vid,
            state="done",
            verdict=verdict,
            reason=reason or None,
            loadtest=loadtest_out,
        )

    async def _load_test(self, vid: int, model: str, number: int) -> None:
        server, sample = self.server, self._sample
        if server is None:
            return await self._finish(vid, "skipped", "the model server is off (c.Serving.enabled)")
        if not sample:
            return await self._finish(vid, "skipped", "no evaluation sample was pushed")
        if not await self._take_test_slot(vid, model, number):
            return await self._finish(vid, "cancelled", "the version left validated first")
        try:
            await self._load_test_held(vid, model, number)
        finally:
            await self.pools.call(self.test_slot.release_test_slot, model, number, "validation")

    async def _take_test_slot(self, vid: int, model: str, number: int) -> bool:
        """The model's test slot for this version; while another replica's load test of the
        model runs in it, wait, keeping this claim alive. False: the version left validated."""
        while True:
            got = await self.pools.call(
                self.test_slot.hold_test_slot, model, number, "validation", self.owner
            )
            if got != "busy":
                return got == "held"
            await self.pools.call(
                self.store.validation_update, vid, claimed_until=time.time() + self.lease
            )
            await asyncio.sleep(STAGE_POLL)

    async def _load_test_held(self, vid: int, model: str, number: int) -> None:
        server, sample = self.server, self._sample
        await server.refresh()
        pool = server.pools.get((model, number))
        if (
            pool is None
            or not await pool.wait_settled(server.settings.load_timeout)
            or not pool.ready
        ):
            why = (pool.error if pool else None) or "no worker came up"
            return await self._finish(
                vid,
                "fail",
                f"the test slot did not load: {why}",
                {"failed": ["loaded"]},
            )
        await server.refresh()  # routed now that it is up, before the load test asks it
        slots = await self.pools.read(self.store.slots_of, model)
        prod = next(
            (
                int(r["number"])
                for r in slots
                if r["slot"] == "production" and int(r["number"]) != number
            ),
            None,
        )
        base = f"{server.url}/v2/models/{model}/versions/"
        headers = {
            "Authorization": f"token {self.token()}",
            "X-Request-ID": f"loadtest-{model}-{number}",
            protocols.LOAD_TEST_HEADER: "1",
        }

        def pids(n):
            return lambda: process_tree(p.pids() if (p := server.pools.get((model, n))) else [])

        test = asyncio.ensure_future(
            loadtest.run_pair(
                base + f"{number}/infer",
                base + f"{prod}/infer" if prod is not None else None,
                sample_frame(sample),
                self.policy,
                candidate_pids=pids(number),
                production_pids=pids(prod),
                headers=headers,
                max_seconds=self.settings.level_seconds,
                timeout=server.settings.request_timeout + 5,
            )
        )
        left = await self._watch(vid, test, self.settings.loadtest_timeout)
        if left == "timeout":
            return await self._finish(
                vid,
                "fail",
                f"the load test did not finish within {self.settings.loadtest_timeout:g} s",
                {"failed": ["finished"], "production_version": prod},
            )
        if left is not None:
            return await self._finish(
                vid, "cancelled", f"the version entered {left} before its load test finished"
            )
        out = {**test.result(), "production_version": prod}
        gate = out["gate"]
        await self._finish(vid, gate["verdict"], "; ".join(gate["reasons"]), out)

    async def _watch(self, vid: int, test: asyncio.Task, timeout: float) -> str | None:
        """Wait for ``test``; stop it when the version leaves validated (returns that stage)
        or at ``timeout`` (returns "timeout"). None: it finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not test.done():
                await asyncio.wait([test], timeout=STAGE_POLL)
                if test.done():
                    break
                if loop.time() > deadline:
                    return "timeout"
                stage = await self.pools.read(self.store.version_stage, vid)
                if stage != "validated":
                    return stage
            test.result()  # its own exception, if any, is the run's
            return None
        finally:
            if not test.done():
                test.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await test
