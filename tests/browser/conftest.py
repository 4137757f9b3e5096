"""Real JupyterLab in real Chromium (Debian's, driven by Playwright).

Reusable fixtures:
- ``jupyterlab``: a session-wide JupyterLab server (``LabServer``: url, token, root_dir,
  runtime_dir, env; ``run_in_kernel(code)`` runs code in a real kernel that sees the same
  Handoff agent as the server). It has no central agent: the user is an analyst.
- ``lab_factory``: start more servers, e.g. one configured for a central agent.
- ``lab_page(lab=None)``: a Playwright page with JupyterLab loaded and the shell ready.
- ``screenshot(page, name)``: save into tests/browser/artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
SHELL = ".jp-LabShell"


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main
    thread until the session ends, and tests that run their own loop (pytest-jupyter's)
    cannot start one after that."""
    here = Path(__file__).parent
    items.sort(key=lambda item: Path(item.path).is_relative_to(here))  # stable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ],
    }  # fmt: skip


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {
        **browser_context_args,
        "viewport": {"width": 1400, "height": 900},
        "service_workers": "block",  # so page.route sees every request
    }


class LabServer:
    """One ``jupyter lab`` process with its own config, data, runtime and settings dirs."""

    def __init__(self, base: Path, args: list[str] | None = None, env: dict | None = None):
        self.base = base
        self.root_dir = base / "notebooks"
        self.runtime_dir = base / "runtime"
        self.settings_dir = base / "settings"
        for d in (self.root_dir, self.runtime_dir, self.settings_dir, base / "config"):
            d.mkdir(parents=True, exist_ok=True)
        news = self.settings_dir / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        self.port = free_port()
        self.token = f"test-{os.urandom(8).hex()}"
        self.url = f"http://127.0.0.1:{self.port}/"
        self.asked_to_stop = False
        self.args = args or []
        self.env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTER_DATA_DIR": str(base / "data"),
            "JUPYTER_CONFIG_DIR": str(base / "config"),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def write_settings(self, plugin: str, values: dict) -> None:
        """User settings, e.g. ("jupyter-handoff/plugin", {"refresh": "poll"})."""
        path = self.settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    def start(self, timeout: float = 60) -> LabServer:
        self.log = open(self.base / "lab.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root_dir}",
                f"--LabApp.user_settings_dir={self.settings_dir}",
                f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
                *self.args,
            ],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited:\n{self.read_log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}api/status?token={self.token}", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"JupyterLab did not start:\n{self.read_log()[-3000:]}")

    def read_log(self) -> str:
        return (self.base / "lab.log").read_text(errors="replace")

    def lab_url(self, path: str = "lab") -> str:
        """``reset``: each page starts from the default layout, not the last test's."""
        return f"{self.url}{path}?reset&token={self.token}"

    def agent_info(self) -> dict | None:
        """The local agent this server (and its kernels) use, once one runs."""
        try:
            return json.loads((self.runtime_dir / "handoff-local.json").read_text())
        except (OSError, ValueError):
            return None

    def agent_get(self, path: str) -> dict:
        info = self.agent_info()
        req = urllib.request.Request(
            info["url"] + path, headers={"Authorization": f"token {info['token']}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def run_in_kernel(self, *cells: str, timeout: int = 300) -> nbformat.NotebookNode:
        """Run code cells in a fresh real kernel that finds this server's agent."""
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(self.root_dir)}},
        )  # fmt: skip
        client.execute(env=self.env)
        return nb

    def stop(self) -> None:
        self.ask_to_stop()
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def ask_to_stop(self) -> None:
        if self.proc and self.proc.poll() is None and not self.asked_to_stop:
            self.proc.send_signal(signal.SIGTERM)
            self.asked_to_stop = True
        info = self.agent_info()  # an agent the panel or a kernel started on demand
        if info:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(info["pid"]), signal.SIGTERM)


@pytest.fixture(scope="session")
def lab_factory(tmp_path_factory):
    started: list[LabServer] = []

    def make(args=None, env=None, settings=None, prepare=None) -> LabServer:
        """``prepare(lab)`` runs before the server starts, e.g. to start agents in its dirs
        and add ``lab.args``."""
        lab = LabServer(tmp_path_factory.mktemp("lab"), args, env)
        for plugin, values in (settings or {}).items():
            lab.write_settings(plugin, values)
        started.append(lab)
        if prepare:
            prepare(lab)
        return lab.start()

    yield make
    for lab in started:  # all shut their kernels down at once, then each is waited for
        lab.ask_to_stop()
    for lab in started:
        lab.stop()


@pytest.fixture(scope="session")
def jupyterlab(lab_factory) -> LabServer:
    """The analyst's JupyterLab: no central agent configured."""
    return lab_factory()


@pytest.fixture
def lab_page(page, jupyterlab):
    """``lab_page()`` loads JupyterLab (``jupyterlab`` unless another server is given)."""

    def load(lab: LabServer | None = None):
        lab = lab or jupyterlab
        page.goto(lab.lab_url())
        page.wait_for_selector(SHELL, timeout=60_000)
        return page

    return load


@pytest.fixture
def screenshot():
    ARTIFACTS.mkdir(exist_ok=True)

    def save(page_or_locator, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page_or_locator.screenshot(path=str(path))
        return path

    return save
