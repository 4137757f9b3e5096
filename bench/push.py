"""Handoff benchmark: push time, 1 GiB ingest, version listing, cold start.

A benchmark, not a test: it measures Handoff side by side with the machine's floor and with
MLflow, in one run on this machine, and prints a table of numbers and ratios, then one line
per target (MET or MISSED with the measured ratio); bench/results/push.json holds the numbers
with each target under a stable key in "targets". Targets come from issues #2 and #13 and
DESIGN.md "Performance budget".

    python bench/push.py                 # everything (about 3-5 minutes, 2 cores)
    python bench/push.py --quick         # no 1 GiB ingest, no mlflow server, fewer reps
    python bench/push.py --skip-mlflow   # Handoff and the floor only

Everything runs on loopback. Every process it starts is stopped in a finally block, and all
files live in one temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    MB,
    MLFLOW_ENV,
    Agent,
    GiB,
    MiB,
    RssSampler,
    cpu_seconds,
    disk_free,
    fmt_s,
    free_port,
    median,
    percentile,
    start_until_ready,
    stop_process,
    wait_workers_idle,
)

MLFLOW_HELPER = HERE / "_mlflow_helper.py"


class Report:
    """Collects rows for the printed table and the JSON file."""

    def __init__(self):
        self.sections: list[tuple[str, list[tuple[str, str, str]]]] = []
        self.data: dict = {}
        self.notes: list[str] = []

    def section(self, title: str) -> None:
        self.sections.append((title, []))
        print(f"\n== {title}", flush=True)

    def row(self, label: str, value: str, note: str = "") -> None:
        self.sections[-1][1].append((label, value, note))
        print(f"   {label:<46} {value:>14}  {note}", flush=True)

    def target(self, key: str, goal: str, measured: float, ok: bool) -> str:
        """Record a target's verdict (also in the JSON) and return the table's note."""
        self.data.setdefault("targets", {})[key] = {
            "target": goal,
            "measured": measured,
            "met": ok,
        }
        return f"target {goal}: {verdict(ok)}"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, title: str, t_start: float, load0, out: str) -> None:
        """Print the summary table and the run's conditions; write the JSON results."""
        total = time.perf_counter() - t_start
        self.data["total_s"] = total
        print("\n" + "=" * 78)
        print(title)
        print(self.render())
        load1 = os.getloadavg()
        self.data["machine"]["loadavg_end"] = load1
        print(f"\nTotal run time: {total:.0f} s on {os.cpu_count()} CPUs; 1-min load average")
        print(f"{load0[0]:.2f} at start, {load1[0]:.2f} at end (the benchmark itself adds ~1-2).")
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=1, default=str))
        print(f"Results written to {path}")
        print("\nTargets")
        for key, t in self.data.get("targets", {}).items():
            shown = "-" if t["measured"] is None else f"{t['measured']:.3g}"
            print(f"{verdict(t['met']):<6} {key:<28} {shown} (target {t['target']})")

    def render(self) -> str:
        out = []
        for title, rows in sorted(self.sections):
            out.append(f"\n{title}")
            out.append("-" * len(title))
            for label, value, note in rows:
                out.append(f"  {label:<46} {value:>14}  {note}".rstrip())
        if self.notes:
            out.append("\nNotes")
            out.append("-----")
            out.extend(f"  - {n}" for n in self.notes)
        return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "n/a"}[ok]


def run_helper(args: list[str], log: Path, timeout: float = 1800) -> dict:
    """Run bench/_mlflow_helper.py in a subprocess and return its JSON answer."""
    env = {**os.environ, **MLFLOW_ENV}
    with open(log, "ab") as err:
        out = subprocess.run(
            [sys.executable, str(MLFLOW_HELPER), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"mlflow helper {args[0]} failed ({out.returncode}); see {log}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


# -- 1. push ----------------------------------------------------------------------------------


def make_model():
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=20000, n_features=30, random_state=0)
    t = time.perf_counter()
    # n_jobs=-1 only to fit faster; the trees are the same (random_state), and the pickled
    # estimator says n_jobs=None as in the brief.
    model = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=-1).fit(X, y)
    model.set_params(n_jobs=None)
    return model, X, y, time.perf_counter() - t


def floor_once(model, directory: Path, rep: int) -> float:
    """pickle protocol 5 + sha256 + write + fsync: the least a durable push must do."""
    from handoff_agent.writeback import write_all  # before the clock starts

    model._bench_rep = ("floor", rep)
    path = directory / f"floor-{rep}.pkl"
    t = time.perf_counter()
    data = pickle.dumps(model, protocol=5)
    hashlib.sha256(data).hexdigest()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t
    path.unlink()
    return elapsed


def bench_push(rep: Report, args, tmp: Path, runtime_dir: Path) -> None:
    rep.section("1. Push a RandomForest (200 trees, 20k x 30): time until the call returns")
    model, X, y, fit_s = make_model()
    size = len(pickle.dumps(model, protocol=5))
    reps = 3 if args.quick else 7
    rep.row("model pickle size (protocol 5)", f"{size / MB:.1f} MB", f"fit took {fit_s:.1f} s")
    d: dict = {"pickle_bytes": size, "reps": reps}
    rep.data["push"] = d

    agent_home = tmp / "push-home"
    agent = Agent(agent_home, runtime_dir, tmp / "agent-push.log")
    try:
        agent.start()
        # The floor writes into the same home dir (same filesystem) as the agent's blobs.
        floor = [floor_once(model, agent_home, i) for i in range(reps + 1)][1:]
        d["floor"] = floor
        rep.row("floor: pickle + sha256 + write + fsync", fmt_s(median(floor)), "median")

        handoff = None
        try:
            import jupyter_handoff

            push = jupyter_handoff.push
            # Never let a push start a detached agent we would not stop.
            with contextlib.suppress(Exception):
                from jupyter_handoff.config import settings

                settings().auto_start = False
        except (ImportError, AttributeError) as e:
            push = None
            rep.row("Handoff push", "n/a", f"jupyter_handoff.push unavailable: {e}")
        if push is not None:
            handoff, idem, xy, last, cpu = push_reps(agent, push, model, X, y, reps)
            d.update(handoff=handoff, idempotent=idem, with_data=xy, last_version=last)
            f = median(floor)
            h = median(handoff)
            rep.row("Handoff push (new bytes each rep)", fmt_s(h), "median; checks settled")
            # The CPU a push takes (the agent's from /proc, in clock ticks: a mean over the
            # reps), and the least time it allows on this machine's cores.
            kernel_cpu = sum(c[0] for c in cpu) / len(cpu)
            agent_cpu = sum(c[1] for c in cpu) / len(cpu)
            cores = os.cpu_count() or 1
            d.update(kernel_cpu_s=kernel_cpu, agent_cpu_s=agent_cpu, cpus=cores)
            rep.row(
                "  CPU per push: kernel, agent",
                f"{kernel_cpu * 1e3:.0f} ms, {agent_cpu * 1e3:.0f} ms",
                f"on {cores} cores no push ends before {fmt_s((kernel_cpu + agent_cpu) / cores)}",
            )
            rep.row(
                "Handoff push, same bytes again (idempotent)",
                fmt_s(median(idem)),
                "median; read again, answered by the version holding them",
            )
            if isinstance(xy, list):
                rep.row("Handoff push with X, y (2,000 rows)", fmt_s(median(xy)), "median")
            else:
                rep.row("Handoff push with X, y (2,000 rows)", "failed", str(xy)[:60])
            d["ratio_floor"] = h / f
            rep.row(
                "Handoff / floor",
                f"{h / f:.2f}x",
                rep.target("push_vs_floor", "<= 1.5x", h / f, h / f <= 1.5),
            )
            if isinstance(xy, list):
                r = median(xy) / h
                d["ratio_with_data"] = r
                rep.row(
                    "Handoff push with X, y / without",
                    f"{r:.2f}x",
                    rep.target("push_with_data_vs_without", "<= 1.2x", r, r <= 1.2),
                )
    finally:
        agent.stop()

    if args.skip_mlflow:
        return
    model_path = tmp / "model.pkl"
    model_path.write_bytes(pickle.dumps(model, protocol=5))
    mreps = 2 if args.quick else 5
    ml = run_helper(
        [
            "push",
            "--model",
            str(model_path),
            "--store",
            str(tmp / "mlflow-push"),
            "--reps",
            str(mreps),
            "--modes",
            "fast,fast_cloudpickle,default,default_cloudpickle",
        ],
        tmp / "mlflow.log",
    )
    model_path.unlink()
    d["mlflow"] = ml
    rep.row("MLflow import (not counted per call)", fmt_s(ml["import_s"]), "separate process")
    labels = {
        "fast": "MLflow: pickle, explicit pip reqs",
        "fast_cloudpickle": "MLflow: cloudpickle, explicit pip reqs",
        "default_cloudpickle": "MLflow 2.x default: cloudpickle, inferred reqs",
        "default": "MLflow 3 default: skops (+trusted Tree type)",
    }
    for mode, label in labels.items():
        rep.row(label, fmt_s(ml[mode]["median"]), f"median of {mreps}, after 1 warm-up")
    fastest = min(ml[m]["median"] for m in ("fast", "fast_cloudpickle"))
    d["mlflow_fastest"] = fastest
    rep.row("MLflow fastest (better of the two explicit)", fmt_s(fastest), "")
    if handoff:
        h = median(handoff)
        speedup = fastest / h
        d["speedup_vs_mlflow_fastest"] = speedup
        d["speedup_vs_mlflow_default"] = ml["default"]["median"] / h
        r = h / fastest
        rep.row(
            "Handoff / MLflow fastest",
            f"{r:.2f}x",
            rep.target("push_vs_mlflow_fastest", "<= 1x", r, r <= 1.0),
        )
        rep.row("MLflow default / Handoff", f"{ml['default']['median'] / h:.1f}x", "")
        rep.row("MLflow fastest / floor", f"{fastest / median(floor):.2f}x", "MLflow does no fsync")
    rep.note(
        "MLflow runs in its own process (bench/_mlflow_helper.py): import and store setup are "
        "timed apart, and each configuration makes one untimed warm-up call before its timed "
        "calls. log_model is called without an active run, then register_model; no signature "
        "or input example. Telemetry is off (MLFLOW_DISABLE_TELEMETRY)."
    )


def push_reps(agent: Agent, push, model, X, y, reps: int):
    """Time jupyter_handoff.push; wait (untimed) for each version's checks, and for the warm
    workers that replace their workers to finish importing, before the next: with data, the
    checks end on both slots, and two spares importing beside a push would be timed with it.
    Pushes with and without X, y alternate, so the machine's drift over the run (its load
    changes over minutes here) falls on both sides of their ratio alike."""
    times, idem, cpu = [], [], []
    last = None

    def timed(**kw):
        wait_workers_idle(agent)
        cpu0, kernel0 = cpu_seconds(agent.pid), time.process_time()
        t = time.perf_counter()
        v = push(model, **kw)
        dt = time.perf_counter() - t
        used = (time.process_time() - kernel0, (cpu_seconds(agent.pid) or 0) - (cpu0 or 0))
        return dt, v, used

    Xs, ys = X[:2000], y[:2000]
    xy: list | str = []
    for i in range(reps + 1):  # the first push (agent connection, lazy imports) is not counted
        model._bench_rep = ("handoff", i)
        dt, v, used = timed(name="bench-rf")
        agent.wait_checks(v.name, v.number)
        if i:
            times.append(dt)
            cpu.append(used)
        last = {"name": v.name, "number": v.number, "digest": v.digest}
        if isinstance(xy, str):
            continue
        try:
            model._bench_rep = ("handoff-xy", i)
            dt, v, _ = timed(name="bench-rf-xy", X=Xs, y=ys)
            agent.wait_checks(v.name, v.number)
            if i:
                xy.append(dt)
        except Exception as e:
            xy = f"{type(e).__name__}: {e}"
    model._bench_rep = ("handoff", reps)  # the last version's bytes again
    for _ in range(reps):
        dt, v, _ = timed(name="bench-rf")
        idem.append(dt)
    return times, idem, xy, last, cpu


# -- machine limits and 2. ingest -------------------------------------------------------------


def loopback_throughput(total: int) -> float:
    """A plain socket sender and receiver (two threads) moving ``total`` bytes on loopback."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def receive():
        conn, _ = srv.accept()
        buf = bytearray(MiB)
        with conn:
            while got[0] < total:
                n = conn.recv_into(buf)
                if not n:
                    break
                got[0] += n

    th = threading.Thread(target=receive)
    th.start()
    chunk = memoryview(os.urandom(MiB))
    t = time.perf_counter()
    with socket.create_connection(srv.getsockname()) as c:
        for _ in range(total // MiB):
            c.sendall(chunk)
        th.join()
    elapsed = time.perf_counter() - t
    srv.close()
    assert got[0] == total
    return total / elapsed / MB


def disk_throughput(directory: Path, total: int, how: str) -> float:
    """A fresh file of ``total`` bytes written and fsynced, in MB/s, written ``how``:

    - "direct": as the agent writes a blob it receives over HTTP (``BlobWriter.append``:
      past its first 64 MiB around the page cache);
    - "spool": as a kernel writes a spool entry (``SpoolSink``: through the page cache,
      each 8 MiB handed to the disk) and the agent drops what it has read (``drop_behind``);
    - "plain": through the page cache, all of it left to the fsync: its rate follows how
      many fresh pages the VM must fault in (0.2-2.5 GB/s from one probe to the next)."""
    from handoff_agent.store.blobs import BlobWriter
    from handoff_agent.writeback import drop_behind
    from jupyter_handoff.bundle_writer import SpoolSink

    chunk = os.urandom(MiB)
    if how == "direct":
        t = time.perf_counter()
        with BlobWriter(directory, publish=None) as w:  # never committed: removed on exit
            for _ in range(total // MiB):
                w.append(chunk)
            w.finish()
            return total / (time.perf_counter() - t) / MB
    path = directory / "disk-probe.bin"
    try:
        t = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if how == "spool":
                sink = SpoolSink(fd)
                for i in range(total // MiB):
                    sink.write([chunk])
                    drop_behind(fd, i * MiB, (i + 1) * MiB)
            else:
                for _ in range(total // MiB):
                    os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return total / (time.perf_counter() - t) / MB
    finally:
        path.unlink(missing_ok=True)


def hash_throughput(total: int, new=hashlib.sha256) -> float:
    chunk = os.urandom(MiB)
    h = new()
    t = time.perf_counter()
    for _ in range(total // MiB):
        h.update(chunk)
    return total / (time.perf_counter() - t) / MB


class _Generated(io.RawIOBase):
    """``size`` pseudo-random bytes, a pure function of the offset, so two reads agree.

    Block k (1 MiB) is k as 8 bytes followed by a slice of a 16 MiB random pool: no two
    blocks are equal, and generating it costs a copy, not a random number generator.
    """

    def __init__(self, size: int, pool: bytes):
        self.size, self.pos, self.pool = size, 0, pool
        self.blocks = len(pool) // MiB

    def readable(self) -> bool:
        return True

    def _block(self, k: int) -> bytes:
        base = (k % self.blocks) * MiB
        return k.to_bytes(8, "little") + self.pool[base + 8 : base + MiB]

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        parts = []
        while n > 0:
            k, off = divmod(self.pos, MiB)
            part = self._block(k)[off : off + n]
            parts.append(part)
            self.pos += len(part)
            n -= len(part)
        return b"".join(parts)


class _HashingWriter(io.RawIOBase):
    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.f.write(b)
        self.n += len(b)
        return len(b)

    def tell(self) -> int:
        return self.n


def build_bundle(path: Path, name: str, member_size: int) -> tuple[str, int, str]:
    """A valid bundle laid out as a kernel writes one (``assemble``): a ``member_size``
    model.pkl of random bytes, then manifest.json, then the end. Returns its digest, its
    size and its manifest's digest."""
    from handoff_agent import bundle
    from handoff_agent import manifest as shape

    pool = os.urandom(16 * MiB)
    h = shape.member_hasher()
    src = _Generated(member_size, pool)
    while block := src.read(MiB):
        h.update(block)
    serialization = bundle.MODEL_MEMBERS["model.pkl"]
    fields = {"name": name, "serialization": serialization, "flavor": "bench", "task": None}
    manifest = shape.with_digests(fields, {"model.pkl": h.hexdigest()})
    raw = json.dumps(manifest).encode()
    with open(path, "wb") as f:
        w = _HashingWriter(f)
        w.write(bundle.tar_header("model.pkl", member_size))
        src = _Generated(member_size, pool)
        while block := src.read(MiB):
            w.write(block)
        w.write(bundle.padding(member_size))
        w.write(bundle.tar_header(bundle.MANIFEST, len(raw)) + raw + bundle.padding(len(raw)))
        w.write(b"\0" * (2 * bundle.BLOCK))
        f.flush()
        # On disk before any clock starts: its write-back would otherwise share the disk
        # with the ingest measured next (the spool hand-over: 280 MB/s with it, 316-353 without).
        os.fsync(f.fileno())
    return w.sha.hexdigest(), path.stat().st_size, hashlib.sha256(raw).hexdigest()


def upload(agent: Agent, name: str, path: Path, digest: str) -> tuple[int, dict, float, float]:
    """Stream a bundle in 1 MiB chunks. Returns status, body, send seconds, total seconds."""
    size = path.stat().st_size
    conn = agent.connection(timeout=600)
    try:
        t = time.perf_counter()
        conn.putrequest("POST", f"/api/v1/models/{name}/versions")
        conn.putheader("Authorization", f"token {agent.token}")
        conn.putheader("Content-Type", "application/x-tar")
        conn.putheader("Content-Length", str(size))
        conn.putheader("X-Handoff-Digest", f"sha256:{digest}")
        conn.endheaders()
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                conn.send(chunk)
        sent = time.perf_counter() - t
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        return resp.status, body, sent, time.perf_counter() - t
    finally:
        conn.close()


class _MemoryBundle:
    """A built bundle as ``assemble`` gives one to the extension's client (its parts, size
    and manifest digest), its bytes in memory as a serialized model's are."""

    spooled = True

    def __init__(self, data: bytes, manifest_digest: str):
        self.data, self.size = memoryview(data), len(data)
        self.manifest_digest = manifest_digest

    @property
    def parts(self):
        for at in range(0, self.size, MiB):
            yield self.data[at : at + MiB]


def spool_upload(agent: Agent, name: str, path: Path, manifest_digest: str):
    """Hand a bundle over as a kernel on the agent's machine does (the extension's client):
    the request names a fresh spool entry, the bundle is written into it while the agent
    reads, hashes and validates it, and the agent fsyncs it. Returns status, body, seconds."""
    from jupyter_handoff.bundle_writer import SpoolSink
    from jupyter_handoff.client import AgentClient

    client = AgentClient(agent.url, agent.token, spool=agent.info["spool"])
    bundle = _MemoryBundle(path.read_bytes(), manifest_digest)  # read before the clock starts

    def build(sink: int) -> _MemoryBundle:
        SpoolSink(sink).write(list(bundle.parts))  # as ``assemble`` writes one
        return bundle

    t = time.perf_counter()
    status, body = client.push_written(name, build)
    return status, body, time.perf_counter() - t


def bench_ingest(rep: Report, args, tmp: Path) -> None:
    from handoff_agent import manifest as shape

    rep.section("2. Ingest of a 1 GiB bundle (streamed POST over loopback)")
    d: dict = {}
    rep.data["ingest"] = d
    if args.quick:
        rep.row("1 GiB ingest", "skipped", "--quick")
        d["skipped"] = "--quick"
        return
    free = disk_free(tmp)
    if free < 5 * GiB:
        rep.row("1 GiB ingest", "skipped", f"only {free / GiB:.1f} GiB free, need 5 GiB")
        d["skipped"] = f"disk free {free}"
        return
    total = GiB
    home = tmp / "ingest-home"
    home.mkdir()
    d["loopback_MBps"] = lo = loopback_throughput(total)
    d["disk_plain_MBps"] = plain = disk_throughput(home, total, "plain")
    probes: dict[str, list[float]] = {"direct": [], "spool": []}

    def probe() -> None:
        for how, rates in probes.items():
            rates.append(disk_throughput(home, total, how))

    probe()
    d["sha256_MBps"] = sha = hash_throughput(total)
    d["member_hash_MBps"] = member = hash_throughput(total, shape.member_hasher)
    rep.row("machine: loopback socket, 1 GiB", f"{lo:.0f} MB/s", "plain send/recv, 2 threads")
    rep.row("machine: sha256, 1 GiB", f"{sha:.0f} MB/s", "one core")
    rep.row(f"machine: {shape.MEMBER_HASH}, 1 GiB", f"{member:.0f} MB/s", "one core")
    rep.row(
        "machine: disk write, then fsync, 1 GiB",
        f"{plain:.0f} MB/s",
        "through the page cache, no write-back hints: no target's baseline",
    )

    bundle_path = tmp / "big.bundle"
    t = time.perf_counter()
    digest, size, _ = build_bundle(bundle_path, "bench-big", total)
    d["bundle_bytes"] = size
    d["build_s"] = time.perf_counter() - t
    agent = Agent(home, tmp / "rt-ingest", tmp / "agent-ingest.log")
    try:
        agent.start()
        # The warm spare worker imports for a second or two after the agent starts: on two
        # cores that would be measured as ingest (255 MB/s instead of 600 on 2 December).
        wait_workers_idle(agent, present=True)
        cpu0, sender0 = cpu_seconds(agent.pid), time.thread_time()
        with RssSampler(agent.pid, 0.010) as rss:
            status, body, sent, elapsed = upload(agent, "bench-big", bundle_path, digest)
        sender_cpu, cpu1 = time.thread_time() - sender0, cpu_seconds(agent.pid)
        agent_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        if status not in (200, 201):
            raise RuntimeError(f"ingest failed: {status} {body}")
        agent.wait_checks("bench-big", body["version"], timeout=300)
        probe()
        # The same size through the spool, as a local push hands it over (other bytes, so a
        # new version: the same bytes would be answered by their digest without a copy)
        _, size2, manifest2 = build_bundle(bundle_path, "bench-spool", total)
        wait_workers_idle(agent, present=True)
        s_status, s_body, s_elapsed = spool_upload(agent, "bench-spool", bundle_path, manifest2)
        if s_status not in (200, 201) or not s_body.get("created"):
            raise RuntimeError(f"spool ingest failed: {s_status} {s_body}")
        agent.wait_checks("bench-spool", s_body["version"], timeout=300)
        probe()
    finally:
        agent.stop()
        bundle_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(home)
    # The disk's rate: three probes of each way the agent's bytes reach it, before, between
    # and after the two ingests. The targets are against the faster median of the two ways.
    d["disk_MBps_probes"] = probes
    rates = {how: median(r) for how, r in probes.items()}
    d["disk_MBps"] = disk = max(rates.values())
    for how, what in (("direct", "an HTTP upload"), ("spool", "a spool entry")):
        rep.row(
            "machine: disk write + fsync, 1 GiB",
            f"{rates[how]:.0f} MB/s",
            f"as the agent writes {what}, median of 3 "
            f"({min(probes[how]):.0f}-{max(probes[how]):.0f})",
        )
    mbps = size / elapsed / MB
    d.update(
        status=status,
        send_s=sent,
        total_s=elapsed,
        MBps=mbps,
        rss_baseline=rss.baseline,
        rss_peak=rss.peak,
        rss_growth=rss.growth,
        rss_samples=rss.samples,
    )
    rep.row("Handoff ingest over HTTP, call to 201", f"{mbps:.0f} MB/s", "a remote sender")
    rep.row("  of which: body sent", fmt_s(sent), "then fsync, commit (validated on the stream)")
    rep.row("  total", fmt_s(elapsed), f"{size / GiB:.3f} GiB bundle")
    rep.row("Handoff / loopback", f"{mbps / lo:.2f}x", "")
    rep.row(
        "Handoff / disk write+fsync",
        f"{mbps / disk:.2f}x",
        rep.target("ingest_vs_disk", ">= 0.8x", mbps / disk, mbps / disk >= 0.8),
    )
    rep.row(
        "Handoff / sha256 on one core",
        f"{mbps / sha:.2f}x",
        f"the agent hashes every byte twice (bundle: sha256, member: {shape.MEMBER_HASH})",
    )
    # Where the two cores went: what the upload cost the agent and the sender, and the rate
    # their CPU allows at most; beside it, the rate the two hash passes alone would allow.
    cpus = os.cpu_count() or 1
    d.update(agent_cpu_s=agent_cpu, sender_cpu_s=sender_cpu, cpus=cpus)
    if agent_cpu is not None:
        d["cpu_bound_MBps"] = cpu_bound = cpus * size / (agent_cpu + sender_cpu) / MB
        d["hash_bound_MBps"] = hash_bound = cpus / (1 / sha + 1 / member + sender_cpu / (size / MB))
        rep.row(
            "  CPU: agent, sender",
            f"{agent_cpu:.2f} s, {sender_cpu:.2f} s",
            f"on {cpus} cores that allows at most {cpu_bound:.0f} MB/s",
        )
        rep.row(
            "  the two hash passes and the sender alone",
            f"{hash_bound:.0f} MB/s",
            "at most: the rest of the agent's CPU (receiving, writing) is its overhead",
        )
    spool_mbps = size2 / s_elapsed / MB
    d.update(spool_s=s_elapsed, spool_MBps=spool_mbps)
    rep.row(
        "Handoff ingest through the spool, to 201",
        f"{spool_mbps:.0f} MB/s",
        f"a local kernel writes it as the agent reads it; then fsync ({fmt_s(s_elapsed)})",
    )
    rep.row(
        "  through the spool / disk write+fsync",
        f"{spool_mbps / disk:.2f}x",
        rep.target(
            "ingest_spool_vs_disk",
            ">= 0.8x",
            spool_mbps / disk,
            spool_mbps / disk >= 0.8,
        ),
    )
    grow = rss.growth / MiB
    rep.row(
        "agent RSS growth during upload",
        f"{grow:.1f} MiB",
        rep.target("ingest_rss_growth_MiB", "< 64 MiB", grow, grow < 64)
        + f"; {rss.samples} samples @10ms",
    )
    rep.note(
        "Ingest MB/s = bundle bytes / (first header sent .. response read): it includes the "
        "agent's hash of the whole body, the member hashes of its stream validation (on a "
        "second thread), the fsync and the registry commit. MB = 10^6 bytes."
    )


# -- 3. listing -------------------------------------------------------------------------------


def build_registry(home: Path, name: str, n: int) -> float:
    """One model with ``n`` versions, inserted in bulk in one transaction (no audit rows)."""
    from handoff_agent.audit import canonical, now
    from handoff_agent.store import tables
    from handoff_agent.store.metadata import MetadataStore

    t = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True)
    store = MetadataStore.for_home(home)
    stamp = now()
    manifest = canonical({"format_version": 1, "name": name, "flavor": "bench"})
    empty = "{}"
    rows = [
        {
            "model": name,
            "number": i,
            "digest": hashlib.sha256(str(i).encode()).hexdigest(),
            "size": 1000 + i,
            "flavor": "bench",
            "task": "classification",
            "serialization": "pickle",
            "signature": empty,
            "params": empty,
            "metrics": empty,
            "manifest": manifest,
            "message": f"version {i}",
            "tags": empty,
            "notebook": "bench.ipynb",
            "cell_hash": hashlib.sha256(b"cell%d" % i).hexdigest()[:16],
            "environment": empty,
            "pushed_by": "bench",
            "pushed_at": stamp,
            "status": "passed",
        }
        for i in range(1, n + 1)
    ]
    with store.engine.begin() as conn:
        conn.execute(
            tables.models.insert().values(
                name=name, owner="bench", created=stamp, next_version=n + 1
            )
        )
        conn.execute(tables.versions.insert(), rows)
    store.close()
    return time.perf_counter() - t


def time_gets(agent: Agent, path: str, reps: int, warmup: int = 10) -> list[float]:
    conn = agent.connection(timeout=30)
    headers = {"Authorization": f"token {agent.token}"}
    times = []
    try:
        for i in range(warmup + reps):
            t = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status}")
            if i >= warmup:
                times.append(dt)
    finally:
        conn.close()
    return times


class MlflowServer:
    def __init__(self, store: Path, log: Path):
        self.store, self.log = store, log
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 180.0) -> float:
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.store / 'mlflow.db'}",
            "--default-artifact-root",
            f"file://{self.store / 'artifacts'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc, took = start_until_ready(
            cmd, self.log, f"{self.url}/health", "mlflow server", timeout, poll=0.010
        )
        return took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def bench_listing(rep: Report, args, tmp: Path, mlflow_server: dict) -> None:
    rep.section("3. List versions of a model with 100,000 versions (keep-alive HTTP)")
    n = 100_000
    reps = 50 if args.quick else 200
    home = tmp / "list-home"
    build_s = build_registry(home, "bench-many", n)
    d: dict = {"versions": n, "reps": reps, "build_s": build_s}
    rep.data["listing"] = d
    agent = Agent(home, tmp / "rt-list", tmp / "agent-list.log")
    try:
        agent.start()
        page = time_gets(agent, "/api/v1/models/bench-many/versions", reps)
        deep = time_gets(agent, "/api/v1/models/bench-many/versions?before=50000", reps)
        models = time_gets(agent, "/api/v1/models", reps)
    finally:
        agent.stop()
    d.update(page=page, deep=deep, models=models)
    p50 = median(page)
    rep.row(
        "Handoff GET .../versions (page of 100), p50",
        fmt_s(p50),
        rep.target("list_p50_s", "<= 5 ms", p50, p50 <= 0.005),
    )
    rep.row("Handoff GET .../versions, p99", fmt_s(percentile(page, 99)), f"{reps} requests")
    rep.row("Handoff GET ...?before=50000, p50", fmt_s(median(deep)), "a page mid-history")
    rep.row("Handoff GET /api/v1/models, p50", fmt_s(median(models)), "")

    if not mlflow_server.get("url"):
        return
    q = run_helper(
        ["query", "--url", mlflow_server["url"], "--name", "bench-many", "--reps", str(reps)],
        tmp / "mlflow.log",
    )
    d["mlflow"] = q
    grm = q["get_registered_model"]
    smv = q["search_model_versions_100"]
    nv = mlflow_server["versions"]
    rep.row(f"MLflow get_registered_model ({nv} versions), p50", fmt_s(median(grm)), "")
    rep.row("MLflow get_registered_model, p99", fmt_s(percentile(grm, 99)), "")
    rep.row("MLflow search_model_versions (100), p50", fmt_s(median(smv)), "same page size")
    rep.row("MLflow get_registered_model / Handoff p50", f"{median(grm) / p50:.1f}x", "")
    rep.row("MLflow search_model_versions / Handoff p50", f"{median(smv) / p50:.1f}x", "")
    rep.note(
        "Handoff's registry is built with raw SQL before the agent starts. MLflow's model has "
        f"{nv} versions created with MlflowClient on the sqlite store; its client calls go "
        "through MlflowClient over HTTP (client overhead included), Handoff's through "
        "http.client."
    )


# -- 4. cold start ----------------------------------------------------------------------------


def bench_cold_start(rep: Report, args, tmp: Path) -> dict:
    rep.section("4. Cold start to a healthy health endpoint (poll every 10 ms)")
    d: dict = {}
    rep.data["cold_start"] = d
    times = []
    for i in range(5):
        with Agent(tmp / f"cold-home-{i}", tmp / f"rt-cold-{i}", tmp / "agent-cold.log") as a:
            a.start()
            times.append(a.startup_seconds)
    d["handoff"] = times
    m = median(times)
    rep.row(
        "Handoff agent, fresh home, median of 5",
        fmt_s(m),
        rep.target("cold_start_s", "<= 1.5 s", m, m <= 1.5),
    )
    rep.row("Handoff agent, min .. max", f"{fmt_s(min(times))} .. {fmt_s(max(times))}", "")

    server_info: dict = {}
    if args.skip_mlflow or args.quick:
        rep.row("mlflow server", "skipped", "--quick" if args.quick else "--skip-mlflow")
        return server_info
    store = tmp / "mlflow-server"
    nv = 1000
    pop = run_helper(
        ["populate", "--store", str(store), "--name", "bench-many", "--versions", str(nv)],
        tmp / "mlflow.log",
    )
    d["mlflow_populate"] = pop
    srv = MlflowServer(store, tmp / "mlflow-server.log")
    starts = []
    try:
        for _ in range(2):
            starts.append(srv.start())
            srv.stop()
        d["mlflow"] = starts
        rep.row("mlflow server (sqlite, 1000 versions), 2 runs", fmt_s(median(starts)), "median")
        rep.row("mlflow server / Handoff agent", f"{median(starts) / m:.1f}x", "")
        srv.start()
        server_info = {"url": srv.url, "versions": nv, "server": srv}
    except Exception:
        srv.stop()
        raise
    return server_info


# -- main -------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="no 1 GiB ingest, no mlflow server")
    p.add_argument("--skip-mlflow", action="store_true", help="no MLflow at all")
    p.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    p.add_argument("--out", default=str(HERE / "results" / "push.json"))
    p.add_argument(
        "--sections",
        default="cold,listing,push,ingest",
        help="comma-separated: cold (cold start), listing, push, ingest",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="handoff-bench-", dir=args.dir))
    runtime_dir = tmp / "rt-push"
    # jupyter_handoff finds the agent through the runtime dir: set it before importing it.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    rep = Report()
    rep.data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tmp": str(tmp),
        "args": vars(args),
    }
    load0 = os.getloadavg()
    rep.data["machine"]["loadavg_start"] = load0
    print(f"Handoff benchmark on {platform.node()} ({os.cpu_count()} CPUs), temp dir {tmp}")
    print(f"load average at start: {load0[0]:.2f} (1 min); other work on the machine skews numbers")
    server: dict = {}
    try:
        sections = set(args.sections.split(","))
        if "cold" in sections:
            server = bench_cold_start(rep, args, tmp)
        if "listing" in sections:
            bench_listing(rep, args, tmp, server)
        if server.get("server"):
            server["server"].stop()
        if "push" in sections:
            bench_push(rep, args, tmp, runtime_dir)
        if "ingest" in sections:
            bench_ingest(rep, args, tmp)
    finally:
        if server.get("server"):
            server["server"].stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    rep.finish("Handoff benchmark summary (loopback, this machine)", t_start, load0, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
