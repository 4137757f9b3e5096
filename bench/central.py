"""Central at scale: N local agents, each its own process, hand versions to one central.

A benchmark, not a test (issue #10, section 6). It measures, in one run on this machine:

- intake throughput (deliveries/s, sustained) and p50/p99 latency from send to central's ack
  and to "visible in central's listing";
- lost and duplicated deliveries: every sender records what central acknowledged, and after
  the run every acknowledged delivery must be in central's listing exactly once;
- listing p50 of a model with 100k versions (seeded before central starts), next to MLflow's
  ``get_registered_model`` / ``search_model_versions`` measured in the same run;
- the same load with central killed by kill -9 mid-load and restarted (or, with
  ``--replicas 2``, one replica killed while the senders fail over to the other).

Each simulated local agent (``bench/_central_sender.py``) builds, signs and posts deliveries
with the local agent's own forwarding code; see that file for what it does and skips.

    python bench/central.py --quick                   # smoke run: 3 agents x 5 pushes, 2k versions
    python bench/central.py                           # 20 agents x 50 pushes, 100k versions, mlflow
    python bench/central.py --agents 100 --pushes 10  # one process per analyst, 100 analysts
    python bench/central.py --database-url postgresql://… --s3 --replicas 2 --kill-replica
        # PostgreSQL, a seaweedfs S3 started for the run, two replicas, one killed for good

Results go to bench/results/central.json (stable keys: ``TARGET_KEYS``, ``PHASE_KEYS``). Every
process it starts is stopped in a finally block; files live in one temporary directory removed
at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Agent, fmt_s, free_port, median, percentile  # noqa: E402
from push import MlflowServer, Report, run_helper, time_gets, verdict  # noqa: E402

SENDER = HERE / "_central_sender.py"
PROFILED = HERE / "_central_profiled.py"
LISTED_MODEL = "bench-many"
# The keys of central.json's "targets" and of each phase: tests and dashboards read these.
TARGET_KEYS = ("intake_per_s", "listing_p50_s", "lost_under_kill", "duplicated_under_kill")
PHASE_KEYS = (
    "agents",
    "pushes",
    "expected",
    "acked",
    "dead",
    "gave_up",
    "lost",
    "duplicated",
    "unacked_applied",
    "ack_mismatch",
    "not_validated",
    "duration_s",
    "throughput_per_s",
    "sustained_per_s",
    "ack_p50_s",
    "ack_p99_s",
    "visible_p50_s",
    "visible_p99_s",
    "retries",
    "central_cpu_s",
    "cpu_per_delivery_s",
    "kill",
)


# -- central ----------------------------------------------------------------------------------


class Central(Agent):
    """A central agent on a fixed port (so it can be killed and restarted where the senders
    look for it), with a known token, and optionally the storage flags of issue #10."""

    def __init__(self, home, runtime_dir, log, port, token, extra, profile_out=None, env=None):
        super().__init__(home, runtime_dir, log, extra_args=tuple(extra))
        self.port, self.token_value, self.profile_out = port, token, profile_out
        self.env = env or {}

    @property
    def runtime_file(self) -> Path:
        return self.runtime_dir / "handoff-central.json"

    def command(self) -> list[str]:
        if self.profile_out:
            cmd = [sys.executable, str(PROFILED)]
        else:
            cmd = [sys.executable, "-m", "handoff_agent"]
        cmd += ["serve", "--role", "central", "--home", str(self.home), "--port", str(self.port)]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {**super().environment(), "HANDOFF_TOKEN": self.token_value, **self.env}
        if self.profile_out:
            env["HANDOFF_BENCH_PROFILE"] = str(self.profile_out)
        return env

    def exited(self, code: int) -> Exception:
        return CentralRefused(self.log, code)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_value

    def kill9(self) -> None:
        """kill -9 the central process itself (not its group): a crash, not a stop."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its orphaned sandbox workers
        self.proc = None

    def cpu_seconds(self) -> float:
        """utime + stime of central and every process under it, live (the warm sandboxed
        probe and check workers) or reaped."""
        if self.proc is None:
            return 0.0
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            times[pid] = sum(int(x) for x in fields[11:15])
        tree, grew = {self.proc.pid}, True
        while grew:
            more = {p for p, pp in parents.items() if pp in tree and p not in tree}
            tree |= more
            grew = bool(more)
        return sum(times.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 30.0, window: float = 0.5) -> None:
        """Until central and its workers stop starting up (under 5% of a core), so that
        what is measured next is not its warm-up."""
        end = time.perf_counter() + timeout
        last = self.cpu_seconds()
        while time.perf_counter() < end:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - last < 0.05 * window:
                return
            last = now


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def footprint(home: Path, s3=None) -> dict | None:
    """Rows per table, database bytes and blob bytes of a SQLite-plus-files central, read
    through a read-only connection while it runs (the WAL included). None for other stores."""
    import sqlite3

    path = home / "registry.db"
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        rows = {t: conn.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
        pages = conn.execute("pragma page_count").fetchone()[0]
        size = conn.execute("pragma page_size").fetchone()[0]
    finally:
        conn.close()
    blobs = home / "blobs"
    if s3 is not None:
        blob_bytes = s3.bytes_stored()
    else:
        files = blobs.rglob("*") if blobs.exists() else []
        blob_bytes = sum(f.stat().st_size for f in files if f.is_file())
    return {"rows": rows, "db_bytes": pages * size, "blob_bytes": blob_bytes}


def per_delivery(before: dict | None, after: dict | None, n: int) -> dict | None:
    if not before or not after or not n:
        return None
    rows = {t: (after["rows"][t] - before["rows"].get(t, 0)) / n for t in after["rows"]}
    return {
        "rows": {t: r for t, r in rows.items() if r},
        "rows_total": sum(rows.values()),
        "db_bytes": (after["db_bytes"] - before["db_bytes"]) / n,
        "blob_bytes": (after["blob_bytes"] - before["blob_bytes"]) / n,
    }


class CentralRefused(RuntimeError):
    """Central exited at start: the one line that says why (e.g. an unknown flag)."""

    def __init__(self, log: Path, code: int):
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
        why = next(
            (x for x in reversed(lines) if "error" in x.lower() or "critical" in x.lower()),
            lines[-1] if lines else "no output",
        )
        super().__init__(f"central refused to start (exit {code}): {why}")


def write_policy(path: Path, senders: dict[str, str], revalidate: bool) -> Path:
    """A central policy naming one intake secret per simulated analyst, as IT would."""
    lines = ["[intake]", f"revalidate = {'true' if revalidate else 'false'}"]
    lines += [
        "max_versions_per_hour = 0  # a throughput run: no per-sender limit",
        "[intake.senders]",
    ]
    lines += [f"{name} = {json.dumps(secret)}" for name, secret in senders.items()]
    lines += ["[sandbox]", "require = false"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def storage_args(args) -> list[str]:
    out = []
    if args.database_url:
        out += ["--database-url", args.database_url]
    if args.blob_url:
        out += ["--blob-url", args.blob_url]
    return out


# -- seeding ----------------------------------------------------------------------------------


def seed_versions(home: Path, database_url: str | None, name: str, n: int) -> float:
    """Create ``n`` versions of ``name`` in central's store before central starts, through the
    store's bulk import (multi-row inserts, one transaction per 10,000 versions, audit rows
    included). Returns seconds taken.

    The one place that knows how central's store is opened: issue #10's ``MetadataStore``
    (SQLite or PostgreSQL) when the agent has it, else the SQLite ``Registry`` of before."""
    manifest = {
        "format_version": 1,
        "name": name,
        "flavor": "sklearn",
        "serialization": "skops",
        "task": "classification",
        "message": "seeded",
    }
    batch = 10_000
    t = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    from handoff_agent.store.metadata import MetadataStore

    store = MetadataStore.open(database_url) if database_url else MetadataStore.for_home(home)
    try:
        for start in range(0, n, batch):
            items = [(f"{i:064x}", 1000 + i, manifest) for i in range(start, min(n, start + batch))]
            store.insert_versions_bulk(name, items, "seed")
        store.analyze()  # fresh statistics, as autovacuum would give a database this size
    finally:
        store.close()
    return time.perf_counter() - t


# -- the bundle -------------------------------------------------------------------------------


def make_bundle(path: Path) -> int:
    """A small push: a logistic regression on 200 rows x 5 features, as skops, with its data,
    laid out as the extension's ``push`` does. Returns the bundle's size in bytes."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from jupyter_handoff import bundle_writer as bw
    from jupyter_handoff.data import prepare

    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    y = pd.Series(y.astype(np.int64), name="label")
    model = LogisticRegression().fit(X, y)
    members, fps, signature = prepare(X, y, None, None, 1000, 1000, bw.feature_names(model))
    member, data = bw.serialize_model(model, "skops")
    members[member] = data
    manifest = {
        "format_version": 1,
        "name": "placeholder",
        "serialization": "skops",
        "flavor": "sklearn",
        "model_class": "sklearn.linear_model._logistic.LogisticRegression",
        "task": "classification",
        "signature": signature,
        "params": bw.json_safe_params(model),
        "data": fps,
        "message": "",
        "tags": {},
        "gate": {},
        "provenance": bw.provenance("bench.ipynb", "model = LogisticRegression().fit(X, y)"),
    }
    bundle = bw.assemble(members, manifest)  # adds the members' digests to the manifest
    path.write_text(
        json.dumps(
            {"members": {k: v.hex() for k, v in members.items()}, "manifest": bundle.manifest}
        )
    )
    return bundle.size


# -- one phase: N senders, optionally a kill -9 mid-load --------------------------------------


class Senders:
    """N sender processes: started, made ready, released at once, awaited."""

    def __init__(self, tmp: Path, label: str, jobs: list[dict]):
        self.tmp, self.label, self.jobs = tmp, label, jobs
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 300) -> None:
        log = open(self.tmp / f"senders-{self.label}.log", "ab")  # noqa: SIM115
        for job in self.jobs:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(SENDER), json.dumps(job)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                )
            )
        for p in self.procs:  # each prints "ready" once imported and built
            line = p.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"a sender failed to start; see {log.name}")

    def go(self) -> float:
        t = time.monotonic()
        for p in self.procs:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        return t

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(max(1.0, deadline - time.monotonic()))
        if any(p.returncode for p in self.procs):
            log = self.tmp / f"senders-{self.label}.log"
            last = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"a sender failed: {last[0]} (see {log})")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def done_so_far(self) -> int:
        n = 0
        for job in self.jobs:
            with contextlib.suppress(OSError):
                n += Path(job["out"]).read_bytes().count(b"\n")
        return n

    def records(self) -> list[dict]:
        out = []
        for job in self.jobs:
            with contextlib.suppress(OSError):
                for line in Path(job["out"]).read_text().splitlines():
                    out.append({**json.loads(line), "model": job["model"], "sender": job["user"]})
        return out


def killer(senders: Senders, centrals: list[Central], at: int, restart: bool, info: dict):
    """Wait until ``at`` deliveries are done, kill -9 central (replica 0), restart it."""
    while senders.done_so_far() < at:
        if all(p.poll() is not None for p in senders.procs):
            return
        time.sleep(0.02)
    victim = centrals[0]
    info["at_done"] = senders.done_so_far()
    info["t_kill"] = time.monotonic()
    victim.kill9()
    if not restart:
        return
    victim.start()
    info["t_up"] = time.monotonic()
    info["down_s"] = info["t_up"] - info["t_kill"]


def run_phase(rep: Report, args, tmp: Path, centrals: list[Central], cfg: dict, kill: bool):
    label = "kill" if kill else "steady"
    jobs = []
    for i in range(args.agents):
        user = f"analyst{i:04d}"
        jobs.append(
            {
                "index": i,
                "parent": os.getpid(),
                "user": user,
                "model": f"{label}-{user}",
                "pushes": args.pushes,
                "urls": [c.url for c in centrals],
                "token": cfg["token"],
                "secret": cfg["senders"][user],
                "bundle": str(cfg["bundle"]),
                "out": str(tmp / f"out-{label}-{i}.jsonl"),
                "backoff": 1.0,  # HandoffAgent.forward_backoff's default
                "backoff_cap": 300.0,  # HandoffAgent.forward_backoff_cap's default
                "give_up": args.give_up,
                "check_visible": True,
                "visible_timeout": 60.0,
            }
        )
    senders = Senders(tmp, label, jobs)
    kill_info: dict = {}
    expected = args.agents * args.pushes
    try:
        senders.start()
        cpu0 = sum(c.cpu_seconds() for c in centrals)
        foot0 = None if args.database_url else footprint(cfg["home"], cfg.get("s3"))
        busy0, total0 = machine_cpu()
        t0 = senders.go()
        thread = None
        if kill:
            thread = threading.Thread(
                target=killer,
                # --kill-replica: the killed replica stays down, the others carry the load;
                # else it is restarted at once, as a supervisor would.
                args=(
                    senders,
                    centrals,
                    max(1, int(expected * 0.4)),
                    not args.kill_replica,
                    kill_info,
                ),
                daemon=True,
            )
            thread.start()
        senders.wait(timeout=args.give_up + 600)
        t1 = time.monotonic()
        if thread is not None:
            thread.join(120)
        cpu1 = sum(c.cpu_seconds() for c in centrals)
        busy1, total1 = machine_cpu()
    finally:
        senders.stop()
    records = senders.records()
    d = summarize(records, expected, t0, t1)
    d.update(agents=args.agents, pushes=args.pushes)
    # How busy the whole machine was (senders, central, its workers, and anyone else's work).
    d["machine_busy"] = (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
    if kill:
        d["kill"] = {
            "at_done": kill_info.get("at_done"),
            "down_s": kill_info.get("down_s"),
            "replica": 0,
            "restarted": "t_up" in kill_info,
        }
        d["central_cpu_s"] = None  # the killed process's CPU time is gone with it
        d["cpu_per_delivery_s"] = None
    else:
        d["kill"] = None
        d["central_cpu_s"] = cpu1 - cpu0
        d["cpu_per_delivery_s"] = (cpu1 - cpu0) / d["acked"] if d["acked"] else None
    settle_and_verify(centrals, records, jobs, d)
    foot1 = None if args.database_url else footprint(cfg["home"], cfg.get("s3"))
    d["per_delivery"] = per_delivery(foot0, foot1, d["acked"])
    rep.data.setdefault("phases", {})[label] = d
    return d


def summarize(records: list[dict], expected: int, t0: float, t1: float) -> dict:
    acked = [r for r in records if r["state"] == "acked"]
    acks = sorted(r["t_ack"] for r in acked)
    lat = [r["t_ack"] - r["t_send"] for r in acked]
    vis = [r["t_visible"] - r["t_send"] for r in acked if r.get("t_visible")]
    n = len(acks)
    sustained = None
    if n >= 10:  # the middle 80% of acks, so start-up and the tail do not count
        lo, hi = acks[n // 10], acks[(9 * n) // 10]
        sustained = ((9 * n) // 10 - n // 10) / (hi - lo) if hi > lo else None
    return {
        "expected": expected,
        "acked": n,
        "dead": sum(r["state"] == "dead" for r in records),
        "gave_up": sum(r["state"] == "gave_up" for r in records),
        "duration_s": t1 - t0,
        "throughput_per_s": n / (acks[-1] - t0) if acks else 0.0,
        "sustained_per_s": sustained,
        "ack_p50_s": median(lat) if lat else None,
        "ack_p99_s": percentile(lat, 99) if lat else None,
        "visible_p50_s": median(vis) if vis else None,
        "visible_p99_s": percentile(vis, 99) if vis else None,
        "not_visible": len(acked) - len(vis),
        "retries": sum(r["attempts"] - 1 for r in records),
        "duplicate_acks": sum(bool(r.get("duplicate")) for r in acked),
        "errors_seen": sorted({e for r in records for e in r.get("errors", [])})[:10],
    }


def list_all(central: Central, name: str) -> list[dict]:
    """Every version of ``name`` at central, paged through the public listing."""
    out, before = [], None
    while True:
        q = f"?limit=1000&before={before}" if before else "?limit=1000"
        try:
            page = central.get_json(f"/api/v1/models/{name}/versions{q}")["versions"]
        except OSError as e:
            if getattr(e, "code", None) == 404:
                return out  # central never heard of this model
            raise
        out += page
        if len(page) < 1000:
            return out
        before = page[-1]["number"]


def settle_and_verify(centrals: list[Central], records: list[dict], jobs: list[dict], d: dict):
    """Compare what each sender got acknowledged with central's listing: every acknowledged
    delivery is there exactly once (by its bundle's digest, unique per push), under the
    version number central acknowledged; nothing else is there."""
    reader = next(c for c in centrals if c.proc is not None)
    deadline = time.monotonic() + 30  # a version's stage moves to validated just after intake
    while True:
        listed = {job["model"]: list_all(reader, job["model"]) for job in jobs}
        pending = sum(v.get("stage") == "received" for vs in listed.values() for v in vs)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lost = duplicated = mismatch = extra = 0
    for job in jobs:
        mine = [r for r in records if r["model"] == job["model"] and r["state"] == "acked"]
        by_digest: dict[str, list[int]] = {}
        for v in listed[job["model"]]:
            by_digest.setdefault(v["digest"], []).append(v["number"])
        for r in mine:
            found = by_digest.get(r["digest"], [])
            lost += not found
            duplicated += max(0, len(found) - 1)
            mismatch += bool(found) and r["version"] not in found
        acked_digests = {r["digest"] for r in mine}
        extra += sum(len(ns) for dg, ns in by_digest.items() if dg not in acked_digests)
    stages: dict[str, int] = {}
    for vs in listed.values():
        for v in vs:
            stages[v.get("stage") or "none"] = stages.get(v.get("stage") or "none", 0) + 1
    d.update(
        lost=lost,
        duplicated=duplicated,
        ack_mismatch=mismatch,
        unacked_applied=extra,
        stages=stages,
        not_validated=sum(n for s, n in stages.items() if s != "validated"),
    )


# -- the report -------------------------------------------------------------------------------


def ratio_note(rep: Report, key: str, goal: str, measured, ok, ratio: str) -> str:
    return rep.target(key, goal, measured, ok) + (f" ({ratio})" if ratio else "")


def report_phase(rep: Report, d: dict, title: str) -> None:
    rep.section(title)
    rep.row(
        "deliveries acked / expected",
        f"{d['acked']} / {d['expected']}",
        f"{d['agents']} agents x {d['pushes']} pushes",
    )
    rep.row("dead (refused) / gave up", f"{d['dead']} / {d['gave_up']}", "")
    rep.row("throughput, whole run", f"{d['throughput_per_s']:.1f} /s", "first send .. last ack")
    if d["sustained_per_s"]:
        rep.row("throughput, sustained", f"{d['sustained_per_s']:.1f} /s", "middle 80% of acks")
    rep.row(
        "send -> ack, p50 / p99",
        f"{fmt_s(d['ack_p50_s'])} / {fmt_s(d['ack_p99_s'])}",
        "first attempt .. 2xx, retries included",
    )
    rep.row(
        "send -> visible in listing, p50 / p99",
        f"{fmt_s(d['visible_p50_s'])} / {fmt_s(d['visible_p99_s'])}",
        "GET .../versions shows it",
    )
    rep.row("retried attempts", str(d["retries"]), f"{d['duplicate_acks']} acks were replays")
    rep.row(
        "lost / duplicated",
        f"{d['lost']} / {d['duplicated']}",
        f"ack mismatches {d['ack_mismatch']}, unacked applied {d['unacked_applied']}",
    )
    rep.row("versions not validated after settle", str(d["not_validated"]), str(d["stages"]))
    if d.get("machine_busy") is not None:
        rep.row(
            "machine CPU busy during the phase",
            f"{d['machine_busy']:.0%}",
            f"of {os.cpu_count()} cores: senders + central + anyone else",
        )
    if d["cpu_per_delivery_s"]:
        rep.row(
            "central CPU per delivery",
            fmt_s(d["cpu_per_delivery_s"]),
            "process and its workers (probe, check)",
        )
    if d.get("per_delivery"):
        pd = d["per_delivery"]
        rep.row(
            "central rows written per delivery",
            f"{pd['rows_total']:.1f}",
            ", ".join(f"{t} {n:g}" for t, n in sorted(pd["rows"].items())),
        )
        rep.row(
            "central bytes per delivery: database / blobs",
            f"{pd['db_bytes'] / 1024:.1f} / {pd['blob_bytes'] / 1024:.1f} KiB",
            "SQLite pages",
        )
    if d["kill"]:
        k = d["kill"]
        rep.row(
            "kill -9 after deliveries done",
            str(k["at_done"]),
            f"central down {fmt_s(k['down_s'])} until healthy again",
        )


def bench_listing(rep: Report, args, central: Central, tmp: Path, seed_s: float) -> None:
    rep.section(f"Listing a model with {args.listing_versions:,} versions (keep-alive HTTP)")
    reps = 50 if args.quick else 200
    page = time_gets(central, f"/api/v1/models/{LISTED_MODEL}/versions", reps)
    one = time_gets(
        central, f"/api/v1/models/{LISTED_MODEL}/versions/{args.listing_versions}", reps
    )
    models = time_gets(central, "/api/v1/models", reps)
    d = {
        "versions": args.listing_versions,
        "reps": reps,
        "seed_s": seed_s,
        "page_p50_s": median(page),
        "page_p99_s": percentile(page, 99),
        "version_p50_s": median(one),
        "models_p50_s": median(models),
        "database": rep.data["config"]["database"],
    }
    rep.data["listing"] = d
    p50 = d["page_p50_s"]
    on_pg = (args.database_url or "").startswith("postgres")
    rep.row("seeding (registry methods, in-process)", fmt_s(seed_s), "before central starts")
    rep.row(
        "GET .../versions (page of 100), p50",
        fmt_s(p50),
        ratio_note(
            rep,
            "listing_p50_s",
            "<= 5 ms" + ("" if on_pg else " (issue: on PostgreSQL)"),
            p50,
            p50 <= 0.005,
            f"{0.005 / p50:.1f}x headroom" if p50 <= 0.005 else f"{p50 / 0.005:.1f}x over",
        ),
    )
    rep.row("GET .../versions, p99", fmt_s(d["page_p99_s"]), f"{reps} requests")
    rep.row("GET .../versions/N (one version), p50", fmt_s(d["version_p50_s"]), "")
    rep.row("GET /api/v1/models, p50", fmt_s(d["models_p50_s"]), "")
    if args.skip_mlflow or args.quick:
        rep.row("MLflow", "skipped", "--quick" if args.quick else "--skip-mlflow")
        return
    store, nv = tmp / "mlflow", args.mlflow_versions
    pop = run_helper(
        ["populate", "--store", str(store), "--name", LISTED_MODEL, "--versions", str(nv)],
        tmp / "mlflow.log",
    )
    srv = MlflowServer(store, tmp / "mlflow-server.log")
    try:
        srv.start()
        q = run_helper(
            ["query", "--url", srv.url, "--name", LISTED_MODEL, "--reps", str(reps)],
            tmp / "mlflow.log",
        )
    finally:
        srv.stop()
    grm, smv = median(q["get_registered_model"]), median(q["search_model_versions_100"])
    d["mlflow"] = {
        "versions": nv,
        "populate_s": pop["populate_s"],
        "get_registered_model_p50_s": grm,
        "search_model_versions_100_p50_s": smv,
    }
    rep.row(
        f"MLflow get_registered_model ({nv:,} versions), p50",
        fmt_s(grm),
        f"{grm / p50:.1f}x Handoff's page",
    )
    rep.row("MLflow search_model_versions (100), p50", fmt_s(smv), f"{smv / p50:.1f}x Handoff's")
    rep.note(
        f"MLflow's model has {nv:,} versions (MlflowClient on its sqlite store; creating 100k "
        "that way takes too long for a benchmark), Handoff's has "
        f"{args.listing_versions:,}; MLflow's calls go through MlflowClient over HTTP."
    )


# -- main -------------------------------------------------------------------------------------


def preflight(args) -> None:
    """Say in one line when this agent does not take the storage flags yet."""
    wanted = [f for f in ("--database-url", "--blob-url") if getattr(args, f[2:].replace("-", "_"))]
    if args.s3 and "--blob-url" not in wanted:
        wanted.append("--blob-url")
    if not wanted:
        return
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "serve", "--help-all"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    missing = [f for f in wanted if f not in out]
    if missing:
        raise SystemExit(
            f"this agent's `serve` does not take {' or '.join(missing)} yet (issue #10's "
            "MetadataStore / S3 blob store are not merged); run without it for SQLite + files."
        )


def start_centrals(args, tmp: Path, cfg: dict) -> list[Central]:
    shared_home = not args.database_url  # SQLite + files: the replicas share one home
    centrals = []
    for i in range(args.replicas):
        home = cfg["home"] if shared_home or i == 0 else tmp / f"central-home-{i}"
        if home != cfg["home"]:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
        extra = ["--policy", str(cfg["policy"]), *storage_args(args)]
        prof = tmp / f"central-{i}.prof" if args.profile else None
        c = Central(
            home,
            tmp / f"rt-central-{i}",
            tmp / f"central-{i}.log",
            free_port(),
            cfg["token"],
            extra,
            prof,
            cfg["s3"].env if cfg.get("s3") else None,
        )
        centrals.append(c)
        try:
            c.start()
        except CentralRefused as e:
            hint = ""
            if storage_args(args):
                hint = " (this agent does not take --database-url/--blob-url yet: issue #10)"
            raise SystemExit(f"{e}{hint}") from None
    return centrals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=20, help="simulated local agents (processes)")
    p.add_argument("--pushes", type=int, default=50, help="versions each agent hands off")
    p.add_argument("--database-url", default="", help="central's metadata store (issue #10)")
    p.add_argument("--blob-url", default="", help="central's blob store, e.g. s3://bucket/prefix")
    p.add_argument(
        "--s3",
        action="store_true",
        help="start a seaweedfs S3 server on loopback for the run and use a bucket of it as "
        "--blob-url (credentials and endpoint reach central through the AWS environment)",
    )
    p.add_argument("--replicas", type=int, default=1, help="central processes, round-robin")
    p.add_argument(
        "--kill-replica",
        action="store_true",
        help="with --replicas 2: the replica killed mid-load stays down (default: restarted)",
    )
    p.add_argument("--skip-kill", action="store_true", help="no kill -9 phase")
    p.add_argument("--listing-versions", type=int, default=100_000)
    p.add_argument("--mlflow-versions", type=int, default=1000)
    p.add_argument("--skip-mlflow", action="store_true")
    p.add_argument(
        "--revalidate",
        action="store_true",
        help="central re-runs the checks on every delivery (intake then competes "
        "with check workers for the 2 cores)",
    )
    p.add_argument(
        "--give-up",
        type=float,
        default=600.0,
        help="seconds a sender retries one delivery before giving up",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run central under cProfile (all threads) and print its top costs",
    )
    p.add_argument("--quick", action="store_true", help="3 agents x 5 pushes, 2,000 versions")
    p.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    p.add_argument("--out", default=str(HERE / "results" / "central.json"))
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = p.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--agents" not in given:
            args.agents = 3
        if "--pushes" not in given:
            args.pushes = 5
        if "--listing-versions" not in given:
            args.listing_versions = 2000
    if args.kill_replica and args.replicas < 2:
        p.error("--kill-replica needs --replicas 2 (or more)")

    preflight(args)
    # A SIGTERM (a CI timeout, kill) still runs the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="handoff-central-bench-", dir=args.dir))
    rep = Report()
    rep.data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    rep.data["config"] = {
        "agents": args.agents,
        "pushes": args.pushes,
        "replicas": args.replicas,
        "database": (args.database_url.split("://")[0] if args.database_url else "sqlite"),
        "blobs": (args.blob_url.split("://")[0] if args.blob_url else "files"),
        "revalidate": args.revalidate,
        "quick": args.quick,
        "sender": "bench/_central_sender.py: the local agent's forwarding code, no checks",
    }
    load0 = os.getloadavg()
    print(f"Central benchmark on {platform.node()} ({os.cpu_count()} CPUs), temp dir {tmp}")
    print(f"load average at start: {load0[0]:.2f} (1 min); other work on the machine skews numbers")
    home = tmp / "central-home"
    names = [f"analyst{i:04d}" for i in range(args.agents)]
    cfg = {
        "home": home,
        "token": secrets.token_urlsafe(32),
        "senders": {n: secrets.token_urlsafe(32) for n in names},
        "bundle": tmp / "bundle.json",
    }
    cfg["policy"] = write_policy(tmp / "policy.toml", cfg["senders"], args.revalidate)
    size = make_bundle(cfg["bundle"])
    if args.s3:
        from _s3 import S3

        (tmp / "s3").mkdir()
        cfg["s3"] = S3(tmp / "s3").start()
        args.blob_url = args.blob_url or f"s3://{cfg['s3'].bucket}/blobs"
        rep.data["config"]["blobs"] = "s3 (seaweedfs on loopback)"
    rep.data["config"]["bundle_bytes"] = size
    print(f"bundle: {size:,} bytes (skops logistic regression + 200 rows of data)", flush=True)
    centrals: list[Central] = []
    try:
        seed_s = seed_versions(home, args.database_url, LISTED_MODEL, args.listing_versions)
        centrals = start_centrals(args, tmp, cfg)
        for c in centrals:
            c.wait_idle()
        bench_listing(rep, args, centrals[0], tmp, seed_s)
        steady = run_phase(rep, args, tmp, centrals, cfg, kill=False)
        report_phase(rep, steady, "Intake under load")
        kill = None
        if not args.skip_kill:
            kill = run_phase(rep, args, tmp, centrals, cfg, kill=True)
            what = "one replica" if args.replicas > 1 else "central"
            report_phase(rep, kill, f"Intake with {what} killed by kill -9 mid-load")
        for c in centrals:
            c.stop()
        rep.data["audit_verify"] = audit_verify(args, home)
        rep.section("Central's audit chain after the run")
        rep.row("jupyter handoff audit verify", rep.data["audit_verify"], "hash chain intact?")
        summary(rep, steady, kill)
    finally:
        for c in centrals:
            c.stop()
        if cfg.get("s3"):
            cfg["s3"].stop()
        if args.profile:
            print_profile(tmp, centrals)
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    rep.finish(
        "Handoff central benchmark summary (loopback, this machine)", t_start, load0, args.out
    )
    for line in rep.data["summary"]:
        print(line)
    return 0


def audit_verify(args, home: Path) -> str:
    """``jupyter handoff audit verify`` on central's store once it is stopped: its one line."""
    cmd = [sys.executable, "-m", "handoff_agent", "audit", "verify", "--home", str(home)]
    cmd += ["--agent-role", "central"]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {out.returncode}"


def summary(rep: Report, steady: dict, kill: dict | None) -> None:
    """One line per target of issue #10: MET/MISSED with the ratio; also in the JSON."""
    rep.section("Targets (issue #10)")
    rate = steady["sustained_per_s"] or steady["throughput_per_s"]
    ok = rate >= 20
    rep.row(
        "sustained intake, small bundles",
        f"{rate:.1f} /s",
        ratio_note(rep, "intake_per_s", ">= 20 /s", rate, ok, f"{rate / 20:.2f}x"),
    )
    lines = [f"intake {rate:.1f} deliveries/s >= 20/s: {verdict(ok)} ({rate / 20:.2f}x)"]
    p50 = rep.data["listing"]["page_p50_s"]
    lines.append(
        f"listing p50 {p50 * 1e3:.2f} ms at {rep.data['listing']['versions']:,} versions "
        f"({rep.data['config']['database']}) <= 5 ms: {verdict(p50 <= 0.005)} "
        f"({0.005 / p50:.1f}x)"
    )
    if kill is not None:
        for key, label in (("lost", "lost_under_kill"), ("duplicated", "duplicated_under_kill")):
            n = kill[key] + (kill["ack_mismatch"] if key == "duplicated" else 0)
            if key == "lost":
                n += kill["gave_up"] + kill["dead"]
            rep.row(f"{key} under kill -9", str(n), ratio_note(rep, label, "0", n, n == 0, ""))
            lines.append(f"{key} under kill -9: {n} (target 0): {verdict(n == 0)}")
    rep.data["summary"] = lines


def print_profile(tmp: Path, centrals: list[Central]) -> None:
    """Central's cProfile, its threads merged (not the child watchers, which only wait), and
    the time its offloaded calls waited for their thread and ran."""
    import io
    import pstats

    for i, _ in enumerate(centrals):
        files = [
            f
            for f in sorted(tmp.glob(f"central-{i}.prof*"))
            if f.suffix != ".json" and "waitpid" not in f.name
        ]
        if not files:
            continue
        stats = pstats.Stats(*map(str, files), stream=io.StringIO())
        stats.files = []  # not one title line per thread
        stats.stream = sys.stdout
        print(f"\n== central {i}: cProfile, all threads, top 30 by own time")
        print("   (idle: SimpleQueue.get = pool threads waiting, epoll = loop waiting)")
        stats.sort_stats("tottime").print_stats(30)
        print(f"\n== central {i}: top 40 by cumulative time")
        stats.sort_stats("cumulative").print_stats(40)
        timings = tmp / f"central-{i}.prof.timings.json"
        if timings.exists():
            print(f"\n== central {i}: offloaded calls (agent.call / run_io): wait, then run")
            rows = json.loads(timings.read_text())
            for name, (n, wait, run) in sorted(rows.items(), key=lambda kv: -kv[1][2])[:20]:
                print(
                    f"   {name:<40} n={n:<6} wait {wait / n * 1e3:7.2f} ms"
                    f"  run {run / n * 1e3:7.2f} ms  total run {run:6.2f} s"
                )


if __name__ == "__main__":
    sys.exit(main())
