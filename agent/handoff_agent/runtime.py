"""Public: where a running agent says how to reach it, and how to start one detached.

The runtime file (url, token, pid; mode 0600) lives in the Jupyter runtime dir, like a
Jupyter server's. The notebook side reads it; it never needs the agent's internals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

# The local hand-over: a kernel on the agent's machine writes the bundle into the spool the
# runtime file names, and the request's body names the entry, in a type of its own (so a
# JSON body sent by mistake is still a 415). With the header, the entry is named as the
# request starts and the agent reads it while the kernel writes it.
SPOOL_TYPE = "application/vnd.handoff.spool+json"
SPOOL_FOLLOW_HEADER = "X-Handoff-Spool-Follow"


def runtime_file(role: str = "local") -> Path:
    return Path(jupyter_runtime_dir()) / f"handoff-{role}.json"


def write(info: dict, role: str = "local") -> Path:
    path = runtime_file(role)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)
    return path


def remove(pid: int, role: str = "local") -> None:
    info = read(role, check_alive=False)
    if info and info.get("pid") == pid:
        runtime_file(role).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running Handoff agent. After a kill -9 or a crash the runtime
    file stays and its pid may be reused by another process: where /proc tells, that one
    is no agent (``stop`` must never signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"handoff" in f.read()
    except OSError:  # no /proc (macOS), or it ended meanwhile
        return True


def read(role: str = "local", check_alive: bool = True) -> dict | None:
    """The running agent's info, or None when there is none (a stale file counts as none)."""
    try:
        info = json.loads(runtime_file(role).read_text())
    except (OSError, ValueError):
        return None
    if check_alive and not _alive(int(info.get("pid", -1))):
        return None
    return info


def stop(info: dict, timeout: float = 30.0) -> bool:
    """SIGTERM the agent ``info`` names and wait until it has exited: True once it has,
    False if it still runs after ``timeout``. Saying "stopped" before it has would let a
    start right after it find the old agent still answering (and start nothing)."""
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended since the runtime file was read
        return True
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def health(url: str, timeout: float = 1.0) -> dict | None:
    """The agent's health answer, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=timeout) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def disk_line(answer: dict) -> str:
    """What the health answer says of the agent's disk when it is not ok, for people; ''."""
    disk = answer.get("disk")
    if disk in (None, "ok"):
        return ""
    return (
        f"Disk: {disk} (pushes are refused once it is full; free room with "
        "`jupyter handoff prune --keep 5` or `%mlops prune NAME --keep 5`)"
    )


def outbox_state(info: dict, timeout: float = 2.0) -> dict | None:
    """Deliveries refused and waiting, and ``problems``: what stops stages coming back
    (central refusing this agent's token), for ``status`` (asked with the agent's token: the
    health answer is public and says nothing of them); None when there is no answer."""
    req = urllib.request.Request(
        f"{info['url']}/api/v1/outbox", headers={"Authorization": f"token {info['token']}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer = json.loads(r.read())
            rows = answer["outbox"]
        return {
            "refused": sum(r["n"] for r in rows if r["state"] == "dead"),
            "waiting": sum(r["n"] for r in rows if r["state"] == "pending"),
            "problems": list(answer.get("problems") or []),
        }
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return None


def outbox_line(state: dict | None) -> str:
    """``outbox_state`` for people; '' when nothing waits, nothing is wrong, or no answer."""
    if not state:
        return ""
    counts = ((state["refused"], "refused"), (state["waiting"], "waiting"))
    said = [f"{n} {word}" for n, word in counts if n]
    lines = [f"Deliveries: {', '.join(said)} (`jupyter handoff outbox` says why)"] if said else []
    return "\n".join([*lines, *state["problems"]])


def healthy(url: str, timeout: float = 1.0) -> bool:
    return health(url, timeout) is not None


SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "PRIVATE_KEY")


def agent_env() -> dict[str, str]:
    """The caller's environment without what looks like a secret (HANDOFF_TOKEN, a hub's API
    token, cloud keys): an agent keeps no secret in its environment. Its token is random, or
    set by configuration, and is published in the 0600 runtime file."""
    return {k: v for k, v in os.environ.items() if not any(w in k.upper() for w in SECRET_WORDS)}


def start_detached(
    home: str | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
    role: str = "local",
    args: tuple[str, ...] = (),
) -> dict:
    """Start an agent that outlives this process (and the kernel), and wait until it answers."""
    cmd = [sys.executable, "-m", "handoff_agent", "serve", "--role", role, *args]
    if home:
        cmd += ["--home", str(home)]
    log_path = log_path or runtime_file(role).with_name(f"handoff-{role}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=agent_env(),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read(role)
        if info and info.get("pid") == proc.pid and healthy(info["url"]):
            info["log"] = str(log_path)
            return info
        if proc.poll() is not None:
            raise RuntimeError(
                f"The agent exited at start (code {proc.returncode}). See {log_path}."
            )
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"The agent did not answer within {timeout:.0f} s. See {log_path}.")
