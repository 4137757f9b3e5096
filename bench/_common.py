"""Shared helpers for the benchmarks: timing stats, processes, the agent, RSS, HTTP.

Nothing here is part of the product. The helpers only use the agent's public surface: the
``serve`` command, the runtime file and the HTTP API.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes per second)
MiB = 1 << 20
GiB = 1 << 30
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}  # no calls home


# -- stats ------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile, p in [0, 100]."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc (or psutil when /proc is missing)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # optional

        return psutil.Process(pid).memory_info().rss
    except Exception:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU a process has used so far, from /proc; None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Sample a process's RSS every ``interval`` seconds in a thread; keep baseline and peak."""

    def __init__(self, pid: int, interval: float = 0.010):
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid) or 0
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.peak = max(self.peak, rss)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process we started (and its process group): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    # Whatever is left of the group (helpers that ignore SIGTERM, e.g. mlflow's job
    # consumers) is killed. The group is the one start_new_session gave this process.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def start_until_ready(
    cmd: list[str], log: Path, ready_url: str, what: str, timeout: float, poll: float = 0.05
) -> tuple[subprocess.Popen, float]:
    """Start a server in its own session, logging to ``log``, and wait until ``ready_url``
    answers 200: (the process, seconds it took). Raises if it exits or never answers."""
    with open(log, "ab") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, **MLFLOW_ENV},
            start_new_session=True,
        )
    while time.perf_counter() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}); see {log}")
        if http_ok(ready_url, timeout=2.0):
            return proc, time.perf_counter() - t
        time.sleep(poll)
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s; see {log}")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError, http.client.HTTPException):
        return False


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


# -- the agent --------------------------------------------------------------------------------


class Agent:
    """A Handoff agent run as ``python -m handoff_agent serve`` in its own process group."""

    def __init__(self, home: Path, runtime_dir: Path, log: Path, extra_args: tuple = ()):
        self.home = Path(home)
        self.runtime_dir = Path(runtime_dir)
        self.log = Path(log)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.startup_seconds: float | None = None

    @property
    def runtime_file(self) -> Path:
        return self.runtime_dir / "handoff-local.json"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "handoff_agent", "serve", "--home", str(self.home)]
        return [*cmd, "--port", "0", *self.extra_args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime_dir)}

    def exited(self, code: int) -> Exception:
        return RuntimeError(f"agent exited with {code}; see {self.log}")

    def start(self, timeout: float = 60.0, poll: float = 0.010) -> Agent:
        """Spawn the agent and poll (every ``poll`` s) until /api/v1/health answers 200."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.info = {}
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise self.exited(self.proc.returncode)
            if not self.info:
                with contextlib.suppress(OSError, ValueError):
                    info = json.loads(self.runtime_file.read_text())
                    if info.get("pid") == self.proc.pid:
                        self.info = info
            if self.info and http_ok(self.url + "/api/v1/health", timeout=2.0):
                self.startup_seconds = time.perf_counter() - t0
                return self
            time.sleep(poll)
        self.stop()
        raise RuntimeError(f"agent not healthy within {timeout:.0f} s; see {self.log}")

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def token(self) -> str:
        return self.info["token"]

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def hostport(self) -> tuple[str, int]:
        rest = self.url.split("://", 1)[1]
        host, port = rest.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def connection(self, timeout: float = 600.0) -> http.client.HTTPConnection:
        host, port = self.hostport
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def get_json(self, path: str) -> dict:
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def wait_checks(self, name: str, number: int, timeout: float = 120.0) -> str:
        """Wait until a version's checks are done (untimed), so they do not skew the next rep."""
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            status = self.get_json(f"/api/v1/models/{name}/versions/{number}").get("status")
            if status not in ("checking", "pending", None):
                return status
            time.sleep(0.05)
        return status

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the agent's check workers ---------------------------------------------------------------


def worker_children(agent_pid: int) -> list[int]:
    """Pids of the agent's check workers (the warm spares, between pushes): the Python
    processes under it, however deep the sandbox (bwrap) nests them, not bwrap itself."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue

    def under_agent(pid: int) -> bool:
        while pid in parent and pid > 1:
            pid = parent[pid]
            if pid == agent_pid:
                return True
        return False

    out = []
    for pid in parent:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"handoff_agent.worker" in argv and b"bwrap" not in argv[0] and under_agent(pid):
            out.append(pid)
    return out


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def wait_workers_idle(agent, most: float = 30.0, still: float = 0.5, present=False) -> None:
    """Wait (at most ``most`` s) until the agent's check workers have used no CPU for
    ``still`` s: a version's checks are over and the warm spares that replace their workers
    have imported what they import. A timed push then measures the push, not the spares.
    ``present``: only once there are workers (spares still being started count as busy)."""
    deadline = time.perf_counter() + most
    last, since = None, None
    while time.perf_counter() < deadline:
        pids = worker_children(agent.proc.pid) if agent.proc else []
        each = [cpu_ticks(p) for p in pids]
        ticks = (len(pids), sum(each)) if (pids or not present) and None not in each else None
        now = time.perf_counter()
        since = (since or now) if ticks is not None and ticks == last else None
        last = ticks
        if since and now - since >= still:
            return
        time.sleep(0.1)
