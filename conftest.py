"""Session-wide isolation: tests and example notebooks never touch the user's real agent."""

import os
import signal
import tempfile

import pytest

_root = tempfile.mkdtemp(prefix="handoff-test-")
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(_root, "runtime")
os.environ["JUPYTER_DATA_DIR"] = os.path.join(_root, "data")
os.environ.pop("HANDOFF_TOKEN", None)


@pytest.fixture(scope="session", autouse=True)
def _stop_auto_started_agents():
    """Notebooks start a detached agent on first push; stop it when the session ends."""
    yield
    from handoff_agent import runtime

    info = runtime.read()
    if info:
        os.kill(int(info["pid"]), signal.SIGTERM)
