"""How model code is started: every process that loads a model (checks, conversion, the MLflow
worker) is spawned here, so that one place decides what it can see and how long it lives.

With bubblewrap (``bwrap``), a worker gets new network, pid and ipc namespaces, read-only binds
of what Python needs and nothing else (no agent home, no runtime dir, no agent /proc), and a
small tmpfs as /tmp. Its input and output files are not bound at all: the agent opens them and
passes the descriptors over the worker's stdin socket. Without bubblewrap it falls back to
rlimits, no-new-privs and a process group killed as a whole, and says so once. Central's policy
can require bubblewrap; then nothing runs without it.

Both modes apply rlimits in the worker itself (``confine``) before the model loads, and a pids
cgroup where the agent may create one: the kernel ignores RLIMIT_NPROC for root.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("handoff_agent")

MODES = ("auto", "bwrap", "rlimits")
INSTALL_HINT = "Install bubblewrap (`apt-get install bubblewrap`), then restart the agent."
MAX_LINE = 256 << 20  # one protocol message; a result this large is a bug, not a model
STDERR_TAIL = 64 << 10
SEND_TIMEOUT = 120.0  # a spare may still be importing its libraries
GRACE = 2.0  # seconds to collect what a finished worker wrote, and for kills to land

# Only these variables reach a worker: no tokens, no secrets, no PYTHONPATH tricks.
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "SYSTEMROOT", "OMP_NUM_THREADS")
ENV_KEEP_PREFIX = ("OPENBLAS_", "MKL_")
# What Python and its libraries read under /etc; nothing else of the host's /etc is visible.
ETC = (
    "alternatives",
    "ca-certificates",
    "fonts",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "resolv.conf",
    "ssl/certs",
    "ssl/openssl.cnf",
)


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(threads: int | None = None) -> dict[str, str]:
    """The worker's environment: a few variables of the agent's, no secrets. ``threads``:
    how many threads each numeric library (OpenMP, OpenBLAS, MKL) may start, unless the
    agent's environment already says."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIX)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if threads:
        for name in THREAD_VARS:
            env.setdefault(name, str(threads))
    return env


class SandboxRefused(Exception):
    """Model code must not run: the sandbox is required and bubblewrap cannot run."""


class ProtocolError(Exception):
    """The worker wrote something that is not a message of the protocol."""


@dataclass
class Limits:
    """Per-process limits applied inside the worker before any model code runs."""

    memory: int | None = None  # RLIMIT_AS, bytes
    cpu: int | None = None  # RLIMIT_CPU, seconds
    file_size: int = 1 << 30  # RLIMIT_FSIZE, bytes
    open_files: int = 1024  # RLIMIT_NOFILE
    processes: int = 128  # processes and threads at once
    threads: int | None = None  # each numeric library's threads (worker_env); None: its own

    def to_json(self, mode: str) -> dict:
        nproc = self.processes
        if mode != "bwrap" and os.geteuid() != 0:
            # Outside a user namespace RLIMIT_NPROC counts all of this user's tasks.
            nproc += _user_tasks()
        return {
            "as": self.memory,
            "cpu": self.cpu,
            "fsize": self.file_size,
            "nofile": self.open_files,
            "nproc": nproc,
        }


def _user_tasks() -> int:
    uid, total = str(os.getuid()), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = Path(entry.path, "status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("Uid", "").split()[:1] == [uid]:
                total += int(fields.get("Threads", "1"))
    return total


# -- inside the worker ------------------------------------------------------------------------


def confine(limits: dict | None) -> None:
    """Called by a worker after its trusted imports, before the model: the rlimits, no new
    privileges, and death with the agent. Works the same inside bubblewrap and without it."""
    import ctypes
    import resource

    limits = limits or {}
    for name, key in (
        ("RLIMIT_AS", "as"),
        ("RLIMIT_FSIZE", "fsize"),
        ("RLIMIT_NOFILE", "nofile"),
        ("RLIMIT_NPROC", "nproc"),
    ):
        if limits.get(key):
            value = int(limits[key])
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(getattr(resource, name), (value, value))
    if limits.get("cpu"):
        cpu = int(limits["cpu"])
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the agent


def receive_job() -> dict:
    """Read the job from stdin, a socket that also carries the job's open files. Each file's
    path in the job becomes ``/proc/self/fd/N``: the worker never sees where it came from."""
    sock = socket.socket(fileno=0)
    chunks, fds = [], []
    while True:
        data, got, _flags, _addr = socket.recv_fds(sock, 1 << 16, 16)
        fds += got
        if not data:
            break
        chunks.append(data)
    sock.detach()
    head, _, body = b"".join(chunks).partition(b"\n")
    job = json.loads(body)
    _place_fds(job, json.loads(head), fds)
    return job


def serve_one_job(work) -> int:
    """A one-job worker's main: take the job, keep stdout for the answer, confine, run
    ``work(job)`` and write its JSON result; a failure becomes ``{"ok": False, "error"}``."""
    from .worker import claim_stdout

    job = receive_job()
    protocol = claim_stdout()  # whatever the model prints goes to stderr
    confine(job.get("limits"))
    try:
        result = work(job)
    except Exception as e:  # every failure becomes a message, never a silent exit
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    protocol.write(json.dumps(result) + "\n")
    protocol.flush()
    return 0


def _place_fds(job: dict, keys: list[str], fds: list[int]) -> None:
    for key, fd in zip(keys, fds, strict=True):
        *parents, leaf = key.split(".")
        target = job
        for p in parents:
            target = target[p]
        target[leaf] = f"/proc/self/fd/{fd}"


def serve_jobs(work) -> int:
    """A long-lived worker's main (``Worker.ask``): one job per line on stdin, each a line of
    file keys then a line of JSON with its descriptors, one result line per job, until the
    agent closes the socket. Confined once, before the first job; the agent replaces a
    worker that fails, hangs or has served its share of jobs."""
    from .worker import claim_stdout

    sock = socket.socket(fileno=0)
    protocol = claim_stdout()
    confined = False
    buf, fds = b"", []
    while True:
        while buf.count(b"\n") < 2:
            data, got, _flags, _addr = socket.recv_fds(sock, 1 << 16, 16)
            fds += got
            if not data:
                return 0
            buf += data
        head, body, buf = buf.split(b"\n", 2)
        job = json.loads(body)
        keys = json.loads(head)
        mine, fds = fds[: len(keys)], fds[len(keys) :]
        if not confined:
            confine(job.get("limits"))
            confined = True
        try:
            _place_fds(job, keys, mine)
            result = work(job)
        except Exception as e:  # every failure becomes a message, never a silent exit
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            for fd in mine:
                with contextlib.suppress(OSError):
                    os.close(fd)
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


# -- in the agent -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a one-job worker left: its result, or the error that stopped it."""

    result: dict | None
    error: BaseException | None  # SandboxRefused, TimeoutError, ProtocolError or OSError
    started: bool
    code: int | None
    stderr: str


@dataclass
class Sandbox:
    """The agent's way of starting model code. ``mode`` is what it resolved to."""

    mode_setting: str = "auto"
    bwrap: str = "bwrap"
    require: bool = False
    hidden: list[str] = field(default_factory=list)
    mode: str = ""
    reason: str = ""

    def __post_init__(self):
        if self.mode_setting not in MODES:
            raise ValueError(f"sandbox must be one of {MODES}, not {self.mode_setting!r}")
        self._binds = None
        if os.geteuid() == 0:
            PidsCgroup.clean_stale()
        if self.mode_setting == "rlimits":
            self.mode, self.reason = "rlimits", "c.HandoffAgent.sandbox = 'rlimits'"
        else:
            self.reason = self._probe()
            self.mode = "bwrap" if not self.reason else "rlimits"
        if self.mode != "bwrap" and (self.require or self.mode_setting == "bwrap"):
            self.mode = "unavailable"
            log.error("%s Every check will end with this error.", self.refusal())
        elif self.mode == "rlimits" and self.mode_setting == "auto":
            log.warning(
                "bubblewrap is not available (%s): model code runs with rlimits only. It can "
                "reach the network and read what this user can. %s",
                self.reason,
                INSTALL_HINT,
            )

    def refusal(self) -> str:
        why = "central's policy requires it ([sandbox] require = true)"
        if not self.require:
            why = "c.HandoffAgent.sandbox = 'bwrap'"
        return (
            f"Model code was not run: the sandbox is required ({why}), but bubblewrap cannot "
            f"run here: {self.reason}. {INSTALL_HINT}"
        )

    def _probe(self) -> str:
        """Why bubblewrap cannot run, or '' when a sandboxed Python starts."""
        path = shutil.which(self.bwrap)
        if not path:
            return f"{self.bwrap!r} is not found (c.HandoffAgent.bwrap_path, PATH)"
        self.bwrap = path
        try:
            out = subprocess.run(
                [*self._bwrap_argv(network=False), sys.executable, "-I", "-c", "pass"],
                capture_output=True,
                timeout=60,
                env=worker_env(),
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{path} failed to start: {e}"
        if out.returncode != 0:
            return f"{path} failed: {out.stderr.decode(errors='replace').strip()[-300:]}"
        return ""

    def _python_paths(self) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-I", "-c", "import sys, json; print(json.dumps(sys.path))"],
            capture_output=True,
            timeout=60,
            env=worker_env(),
            check=True,
        )
        import handoff_agent

        paths = [p for p in json.loads(out.stdout) if p]
        paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        paths.append(str(Path(handoff_agent.__file__).parent.parent))
        return paths

    def _bind_list(self) -> list[str]:
        if self._binds is not None:
            return self._binds
        hidden = [Path(h).resolve() for h in self.hidden if h]
        wanted: set[str] = set()
        for p in self._python_paths():
            for q in {os.path.abspath(p), os.path.realpath(p)}:
                if not os.path.exists(q) or q.startswith(("/usr/", "/etc/")):
                    continue
                if any(h == Path(q) or Path(q) in h.parents for h in hidden):
                    log.warning("not binding %s into the sandbox: it holds the agent's home", q)
                    continue
                wanted.add(q)
        kept: list[str] = []
        for q in sorted(wanted, key=len):  # a parent first; its children are then redundant
            if not any(q == k or q.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(q)
        self._binds = kept
        return kept

    def _bwrap_argv(self, network: bool, tmp_size: int = 1 << 30) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        if os.geteuid() == 0:
            argv += ["--cap-drop", "ALL"]  # root keeps no capability inside, even after exec
        if network:
            argv.append("--share-net")
        argv += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for name in ETC:
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--size", str(tmp_size), "--perms", "1777", "--tmpfs", "/tmp"]
        # After the tmpfs: Python or the checkout may live under /tmp, and must stay visible.
        for path in self._bind_list():
            argv += ["--ro-bind", path, path]
        argv += ["--chdir", "/tmp"]
        argv += ["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]
        argv += ["--setenv", "MPLCONFIGDIR", "/tmp/matplotlib"]
        return argv

    async def run_once(
        self, module: str, limits: Limits, job: dict, files: dict, timeout: float, **spawn_args
    ) -> Outcome:
        """One job in a fresh worker, ended with everything it started, whatever happened."""
        worker, result, error, code, stderr = None, None, None, None, ""
        try:
            worker = await self.spawn(module, limits, **spawn_args)
            await worker.send(job, files)
            result = await worker.next_message(timeout)
        except (SandboxRefused, TimeoutError, ProtocolError, OSError) as e:
            error = e
        finally:
            if worker is not None:
                code, stderr = await worker.stop(graceful=result is not None)
        return Outcome(result, error, worker is not None, code, stderr)

    async def spawn(
        self, module: str, limits: Limits, network: bool = False, writable: tuple = ()
    ) -> Worker:
        """Start ``python -I -m MODULE`` sandboxed. It waits for its job (``Worker.send``).
        ``writable``: directories from configuration (never from input) it may write."""
        if self.mode == "unavailable":
            raise SandboxRefused(self.refusal())
        parent, child = socket.socketpair()
        cwd = None
        python = [sys.executable, "-I", "-m", module]
        if self.mode == "bwrap":
            argv = self._bwrap_argv(network, limits.file_size)
            for path in writable:
                argv += ["--bind", path, path]
            argv += python
        else:
            cwd = tempfile.TemporaryDirectory(prefix="handoff-worker-")
            argv = python
        cgroup = PidsCgroup.create(limits.processes) if os.geteuid() == 0 else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=child.fileno(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd.name if cwd else "/",
                env=worker_env(limits.threads),
                start_new_session=True,
                limit=MAX_LINE,
                preexec_fn=cgroup.join if cgroup else None,
            )
        except BaseException:
            parent.close()
            if cgroup:
                cgroup.remove()
            if cwd:
                cwd.cleanup()
            raise
        finally:
            child.close()
        return Worker(proc, parent, cwd, cgroup, self.mode, limits)


class PidsCgroup:
    """A pids cgroup for one worker, where the agent may create one (root on cgroup v1 or v2):
    it bounds processes and threads even for root, and lists every process left to kill."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        for base in _pids_hierarchies():
            path = base / f"handoff-{os.getpid()}-{os.urandom(4).hex()}"
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(max_pids))
                return cls(path)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return None

    @staticmethod
    def clean_stale() -> None:
        """Remove the cgroups of agents that died without cleaning up (kill -9)."""
        for base in _pids_hierarchies():
            for path in base.glob("handoff-*-*"):
                pid = path.name.split("-")[1]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    PidsCgroup(path).remove()

    def join(self) -> None:
        """preexec_fn: only raw syscalls, so safe in the forked child."""
        fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        self.kill()
        try:
            self.path.rmdir()
            return True
        except OSError:
            return False


def _pids_hierarchies() -> list[Path]:
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if "pids" in controllers.split(","):
            found.append(Path("/sys/fs/cgroup/pids") / rel)
        elif controllers == "":
            base = Path("/sys/fs/cgroup") / rel
            with contextlib.suppress(OSError):
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    found.append(base)
    return [p for p in found if os.access(p, os.W_OK)]


class Worker:
    """One running worker: send it a job, read its messages, and end it with everything it
    started. Nothing here waits for a pipe's EOF without a bound."""

    def __init__(self, proc, sock, cwd, cgroup, mode, limits):
        self.proc, self.sock, self.cwd, self.cgroup = proc, sock, cwd, cgroup
        self.mode, self.limits = mode, limits
        self._stderr = collections.deque()
        self._stderr_size = 0
        self._stderr_task = asyncio.ensure_future(self._read_stderr())
        self._exited = asyncio.ensure_future(proc.wait())
        self._line: asyncio.Future | None = None
        self.stopped = False

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def _read_stderr(self) -> None:
        while True:
            chunk = await self.proc.stderr.read(1 << 16)
            if not chunk:
                return
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) > STDERR_TAIL:
                self._stderr_size -= len(self._stderr.popleft())

    def stderr(self) -> str:
        return b"".join(self._stderr)[-STDERR_TAIL:].decode(errors="replace")

    async def send(self, job: dict, files: dict | None = None) -> None:
        """Send the job; ``files`` maps a dotted key of the job to (path, 'r' or 'w'), opened
        here, or to an open file (a blob store's local copy or writer); each goes as a
        descriptor."""
        files = files or {}
        job = {**job, "limits": self.limits.to_json(self.mode)}
        opened, fds = [], []
        try:
            for spec in files.values():
                if not isinstance(spec, tuple):
                    fds.append(spec.fileno())  # the caller's to close
                    continue
                path, how = spec
                flags = os.O_RDONLY if how == "r" else os.O_WRONLY | os.O_TRUNC
                opened.append(os.open(path, flags | os.O_CLOEXEC))
                fds.append(opened[-1])
            head = json.dumps(list(files)).encode() + b"\n"
            self.sock.setblocking(True)
            socket.send_fds(self.sock, [head], fds)
            self.sock.setblocking(False)
            sending = asyncio.get_running_loop().sock_sendall(self.sock, json.dumps(job).encode())
            await asyncio.wait_for(sending, SEND_TIMEOUT)  # a worker that never reads is dead
            self.sock.shutdown(socket.SHUT_WR)
        finally:
            for fd in opened:
                os.close(fd)

    async def ask(self, job: dict, files: dict, timeout: float) -> dict | None:
        """One job of many to a long-lived worker (``serve_jobs``): ``files`` maps keys of the
        job to open files, sent as descriptors. Returns its result, None when it exited;
        raises TimeoutError, ProtocolError or OSError (then stop it: it is not reusable)."""
        job = {**job, "limits": self.limits.to_json(self.mode)}
        fds = [f.fileno() for f in files.values()]
        line = json.dumps(list(files)).encode() + b"\n" + json.dumps(job).encode() + b"\n"
        if len(line) > 1 << 16:
            raise ProtocolError("a job over 64 KiB; send files, not data")
        self.sock.setblocking(True)
        self.sock.settimeout(SEND_TIMEOUT)
        try:
            socket.send_fds(self.sock, [line], fds)
        except TimeoutError as e:
            raise OSError(f"the worker did not take its job ({e})") from e
        finally:
            self.sock.settimeout(None)
            self.sock.setblocking(False)
        return await self.next_message(timeout)

    async def next_message(self, timeout: float) -> dict | None:
        """The next message, or None once the worker has exited and said everything.
        Raises asyncio.TimeoutError, or ProtocolError for anything that is not a message."""
        if self._line is None:
            self._line = asyncio.ensure_future(self.proc.stdout.readline())
        done, _ = await asyncio.wait(
            {self._line, self._exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise TimeoutError
        if self._line not in done:
            # Exited: what it wrote is in the pipe, unless an orphan keeps it open forever.
            done, _ = await asyncio.wait({self._line}, timeout=GRACE)
            if not done:
                return None
        line, self._line = self._line, None
        try:
            raw = line.result()
        except (ValueError, asyncio.LimitOverrunError) as e:
            raise ProtocolError(f"a message over {MAX_LINE >> 20} MiB ({e})") from e
        if not raw:
            return None
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            text = raw[:120].decode(errors="replace")
            raise ProtocolError(f"it wrote {text!r}, which is not a protocol message")
        return message

    async def stop(self, graceful: bool = False) -> tuple[int | None, str]:
        """End the worker and every process it started; return its exit code and stderr.
        ``graceful``: it said everything, so give it a moment to exit on its own first."""
        if not self.stopped:
            self.stopped = True
            if graceful:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exited), GRACE)
            self._kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), GRACE * 5)
            self._kill()  # children forked while it died
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), GRACE)
            for task in (self._stderr_task, self._line):
                if task is not None and not task.done():
                    task.cancel()
            self.sock.close()
            if self.cgroup is not None:
                for _ in range(50):
                    if self.cgroup.remove():
                        break
                    await asyncio.sleep(0.05)
            if self.cwd is not None:
                self.cwd.cleanup()
        return self.proc.returncode, self.stderr()

    def _kill(self) -> None:
        # bwrap: killing it takes the pid namespace down (--die-with-parent on its init).
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()
