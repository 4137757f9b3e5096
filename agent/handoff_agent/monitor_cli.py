"""``jupyter handoff monitor import NAME FILE.parquet [--reference]``, ``monitor run NAME
[--now TS]`` and ``monitor release NAME``: backfill a prediction log (or set the monitoring
reference) in central's stores, evaluate the closed windows on demand, with a simulated clock
if asked, and lift the quarantine of log segments whose blobs were restored.

``import`` and ``release`` write to the stores of central's home (or --database-url /
--blob-url) directly;
``run`` asks the running central (its runtime file, or --url with HANDOFF_TOKEN), so alerts
reach SSE, destinations and the model server; without a running central it evaluates in
this process, under the policy central runs with (``--policy FILE``, else the home's
``policy.toml``); a rollback then reaches the model servers at their next slot poll.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from traitlets import Bool, Unicode

from . import runtime
from ._version import __version__
from .cli_hints import Asked, cli_hint
from .command import Command
from .monitor import windows
from .shell import complain, os_user, visible
from .vocabulary import when_text

USAGE = (
    "Usage: jupyter handoff monitor import NAME FILE.parquet [--reference] [--json]\n"
    "       jupyter handoff monitor run NAME [--now 2026-02-01T00:00:00Z | EPOCH_SECONDS]"
    " [--policy FILE] [--json]\n"
    "       jupyter handoff monitor release NAME [--json]"
)


def parse_now(text: str) -> float | None:
    """``--now``: epoch seconds or an ISO time from 2000 on (the API's rule: a NaN would
    replay windows forever); past the agent's clock is ``windows.not_after_clock``'s. A
    mistake is a HandoffError: one line, exit 2."""
    from .errors import BadRequest

    if not text:
        return None
    try:
        now = float(text)
    except ValueError:
        try:
            now = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadRequest(
                f"--now {text!r} is neither epoch seconds nor an ISO time like "
                "2026-02-01T00:00:00Z.",
                "",
            ) from None
    if not math.isfinite(now) or now < windows.EARLIEST:
        raise BadRequest(f"--now {text!r} is not a time {windows.now_span_text()}.", "")
    return now


def _window_text(w: dict) -> str:
    """One judged window in one line: its numbers, then why it judged less (its reason)."""
    m = w.get("metrics") or {}
    ops = m.get("traffic") or {}
    day = datetime.fromtimestamp(w["start"], UTC)
    start = day.strftime("%Y-%m-%d %H:%M" if w["kind"] == "hourly" else "%Y-%m-%d")
    parts = [f"{ops.get('requests', 0)} requests"]
    if ops.get("error_rate") is not None:
        parts.append(f"{ops['error_rate']:.2%} errors")
    if ops.get("p99_ms") is not None:
        parts.append(f"p99 {ops['p99_ms']:.0f} ms")
    drift = m.get("drift")
    if drift and drift.get("features"):  # a reference without inputs judges none
        moved = ", ".join(drift.get("drifted") or []) or "none"
        parts.append(
            f"input drift {drift['share']:.2f} ({len(drift.get('drifted') or [])} of "
            f"{len(drift.get('features') or {})} features: {moved})"
        )
    shift = m.get("prediction_drift") or {}
    if shift.get("psi") is not None:
        parts.append(f"prediction PSI {shift['psi']:.2f}")
    est = m.get("estimate") or {}
    if est.get("estimate") is not None:
        trusted = "" if est.get("calibrated") else ", scores not calibrated: not judged"
        parts.append(
            f"estimated accuracy {est['estimate']:.3f} (baseline {est.get('baseline')}{trusted})"
        )
    perf = m.get("performance") or {}
    if perf.get("value") is not None:
        parts.append(
            f"{perf['metric']} {perf['value']:.3f} on {perf.get('labels')} labels "
            f"(baseline {perf.get('baseline')})"
        )
    elif w.get("labels") == "waiting" and m.get("labels_due"):
        parts.append(
            f"labels: {m.get('labels', 0)}, performance judged from {when_text(m['labels_due'])}"
        )
    line = f"  {w['kind']:<8} {start}  {w['status']:<12} " + ", ".join(parts)
    return line + (f"; {w['reason']}" if w.get("reason") else "")


def run_text(out: dict) -> str:
    """``monitor run``'s answer for people: a line per window judged, then a line per alert
    that fired or cleared (``--json`` prints every metric)."""
    now = datetime.fromtimestamp(out["now"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    windows = out.get("windows") or []
    if not windows:
        lines = [f"{out['model']}: no closed window left to judge by {now}."]
    else:
        n = len(windows)
        lines = [f"{out['model']}: judged {n} closed window{'s' * (n != 1)} by {now}:"]
        lines += [_window_text(w) for w in windows]
    alerts = out.get("alerts") or []
    n = len(alerts)
    lines.append(f"{n} alert change{'s' * (n != 1)}:" if n else "No alert changes.")
    for a in alerts:
        done = a.get("outcome") or a.get("action")
        lines.append(f"  {a['state']:<8} {a['kind']} ({a['window']}), {done}: {a['message']}")
    for s in out.get("skipped") or []:
        lines.append(f"  skipped a quarantined log segment ({s['rows']} rows): {s['digest'][:12]}")
    # names and messages hold text others wrote: escaped, a line each
    return "\n".join(visible(line) for line in lines)


def _many(n: int, what: str) -> str:
    return f"{n:,} {what}{'s' * (n != 1)}"


def import_text(out: dict) -> str:
    """``monitor import``'s answer for people: what was added (``--json``: the whole answer)."""
    if "reference" in out:
        return visible(
            f"{out['model']}: monitoring reference set from {_many(out['rows'], 'row')} "
            f"(blob {out['reference'][:12]})."
        )
    first, last = (out[k][:10] for k in ("first", "last"))
    span = first if first == last else f"{first} to {last}"
    added, rows = out["rows"] - out["already_logged"], out["rows"]
    count = (
        _many(added, "prediction") if added == rows else f"{added:,} of {_many(rows, 'prediction')}"
    )
    line = (
        f"{out['model']}: imported {count} served over "
        f"{_many(out['days'], 'day')} ({span}), {_many(out['labels'], 'label')}, "
        f"{_many(len(out['features']), 'input feature')}"
    )
    if out["already_logged"]:
        line += f"; {out['already_logged']:,} were logged already (counted once)"
    return visible(line + ".")


def release_text(out: dict) -> str:
    """``monitor release``'s answer for people: a line for what was released, a line per
    segment still quarantined and why (``--json``: the whole answer)."""
    freed, still = out["released"], out["still_quarantined"]
    rows = sum(s["rows"] for s in freed)
    lines = [
        f"{out['model']}: released {_many(len(freed), 'quarantined log segment')} "
        f"({_many(rows, 'prediction')}); {len(still)} still quarantined" + (":" if still else ".")
    ]
    lines += [f"  {s['digest'][:12]} ({_many(s['rows'], 'prediction')}): {s['now']}" for s in still]
    return "\n".join(visible(line) for line in lines)


class MonitorApp(Command):
    name = "jupyter-handoff-monitor"
    description = (
        "monitor import NAME FILE.parquet [--reference]: backfill a prediction log from "
        "another system (or set the model's reference); monitor run NAME [--now TS]: "
        "evaluate the closed windows now; monitor release NAME: read the quarantined "
        "prediction-log segments again and lift the quarantine of those whose blobs read "
        "whole (restored from a backup)."
    )
    version = __version__
    now = Unicode(
        "",
        help="Evaluate as if it were this earlier time (ISO or epoch seconds; not past the "
        f"agent's clock by more than {windows.SKEW:g} s, whose windows have not closed).",
    ).tag(config=True)
    url = Unicode("", help="Central's URL (token in HANDOFF_TOKEN). Default: the running one.").tag(
        config=True
    )
    reference = Bool(False, help="import: the file is the model's monitoring reference.").tag(
        config=True
    )

    @property
    def classes(self):  # --help describes the aliases through HandoffAgent
        from .cli import ServeApp

        return ServeApp.classes.fget(self)

    aliases = {
        "home": "HandoffAgent.home",
        "database-url": "HandoffAgent.database_url",
        "blob-url": "HandoffAgent.blob_url",
        "now": "MonitorApp.now",
        "url": "MonitorApp.url",
        "policy": "HandoffAgent.policy_file",
    }
    as_json = Bool(False, help="Print the whole answer as JSON (run: every window's metrics).").tag(
        config=True
    )
    flags = {
        "reference": (
            {"MonitorApp": {"reference": True}},
            "The file is the model's reference (validation data with predictions).",
        ),
        "json": ({"MonitorApp": {"as_json": True}}, "Print the answer as JSON."),
    }

    def start(self):
        from .errors import HandoffError
        from .names import validate_name
        from .store.blobs import BlobError

        args = list(self.extra_args)
        if (
            not args
            or args[0] not in ("import", "run", "release")
            or len(args) != (3 if args[0] == "import" else 2)
        ):
            complain(USAGE)
            self.exit(2)
        self.config.HandoffAgent.role = "central"
        try:
            validate_name(args[1])
            if args[0] == "import":
                out = self._import(args[1], Path(args[2]))
            elif args[0] == "release":
                out = self._release(args[1])
            else:
                out = self._run(args[1], parse_now(self.now))
        except HandoffError as e:
            complain(f"{e.message}\n{cli_hint(e.code, e.hint, Asked('central'))}".strip())
            self.exit(2)
        except BlobError as e:  # the blob store unreachable, at start or midway
            why = str(e).rstrip(".")
            complain(f"The blob store failed: {why}. Nothing was recorded; run the command again.")
            self.exit(1)
        if self.as_json:
            print(json.dumps(out, indent=2, default=str))
        else:
            print({"run": run_text, "import": import_text, "release": release_text}[args[0]](out))

    def _blobs(self):
        """The central's blob store, or a BlobUnavailable saying why it cannot be opened."""
        from .cli import _blob_store
        from .store.blobs import BlobUnavailable

        try:
            return _blob_store(self.config)
        except ValueError as e:  # S3 unreachable or refusing, a bad blob_url
            raise BlobUnavailable(str(e)) from None

    def _import(self, name: str, path: Path) -> dict:
        from .cli import _open_db
        from .errors import BadRequest
        from .monitor import backfill

        if not path.is_file():  # a usage mistake: exit 2, as serve's bad policy is
            raise BadRequest(f"No file {path}. Give a Parquet prediction log.", "")
        frame = backfill.read(path.read_bytes())
        registry, blobs = _open_db(self.config), self._blobs()
        try:
            if self.reference:
                return backfill.import_reference(registry, blobs, name, frame, "cli")
            return backfill.import_log(registry, blobs, name, frame, "cli")
        finally:
            registry.close()

    def _release(self, name: str) -> dict:
        from .cli import _open_db
        from .serving import predlog

        registry, blobs = _open_db(self.config), self._blobs()
        try:
            return predlog.release(registry, blobs, name, os_user())
        finally:
            registry.close()

    def _run(self, name: str, now: float | None) -> dict:
        from .errors import BadRequest, HandoffError

        info = None if self.url else runtime.read("central")
        if self.url or (info and runtime.healthy(info["url"])):
            from .inventory_cli import env_token

            base = (self.url or info["url"]).rstrip("/")
            # HANDOFF_TOKEN, when set, speaks for whoever runs it, as for every command that
            # asks an agent (it sent the runtime file's, the owner's, whatever the user's role)
            token = env_token() or ("" if self.url else info["token"])
            req = urllib.request.Request(
                f"{base}/api/v1/models/{name}/monitor/run",
                data=json.dumps({"now": now}).encode(),
                headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                err = json.loads(e.read() or b"{}").get("error", {})
                asked = Asked("central", self.url)
                hint = cli_hint(err.get("code", ""), err.get("hint", ""), asked)
                if err.get("code") == "now_in_future":  # the --now given: a usage mistake
                    raise HandoffError(err.get("message", str(e)), hint) from None
                raise SystemExit(f"{err.get('message', e)}\n{hint}".strip()) from None
            except (OSError, ValueError) as e:  # refused, unreachable, timed out, not JSON
                raise SystemExit(
                    f"The agent at {base} is not answering ({getattr(e, 'reason', e)})."
                ) from None
        if now is not None:  # evaluated here: this process's clock is the agent's
            windows.not_after_clock(now, time.time())
        from .cli import _home, _open_db
        from .monitor.service import MonitorService
        from .policy import Policy
        from .stages import StageManager

        given = self.config.HandoffAgent.get("policy_file")
        policy_file = Path(given) if given else _home(self.config) / "policy.toml"
        if given and not policy_file.is_file():
            raise BadRequest(f"--policy {given}: no such file.", "")
        try:  # its thresholds and actions, as central judges (the defaults without one)
            policy = Policy.load(policy_file if policy_file.is_file() else None)
        except ValueError as e:  # the file's mistake, as serve says it: exit 2
            raise BadRequest(str(e), "") from None
        registry, blobs = _open_db(self.config), self._blobs()
        try:
            from .serving.deploy import DeploymentService

            stages = StageManager(registry, policy, DeploymentService(registry, policy).on_stage)
            return MonitorService(registry, blobs, policy, stages).run(name, now)
        finally:
            registry.close()
