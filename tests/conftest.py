"""Fixtures: a real agent process on a free port with its own home and runtime dir.

Every test that uses an agent fixture (or asks for ``backend``) runs once per metadata
backend: ``sqlite`` with blob files in the home (the defaults), and ``postgresql+s3`` (a fresh
database and a bucket of its own for each agent, on a real PostgreSQL and seaweedfs). The
tests whose subject does not depend on the storage (``DEFAULTS_ONLY``) run on the defaults.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
import support
from backends import Backend, start_postgres
from s3_support import S3Server, start_s3_server
from support import RunningAgent

BACKENDS = ["sqlite", "postgresql+s3"]
# Run on the defaults only: where what is tested does not depend on where the agent stores
# things. The notebook side talks HTTP to its agent; these agent modules test model families,
# the sandbox, the checks, the HTTP surface, a destination, and the flows built on the store
# (stage rules, validation, guardrails, triggers), not the store. What the agent stores where
# runs on both backends: versions, push and intake, blobs, audit, durability, backup and
# migration, serving with its prediction log (a push through central to production, served),
# monitoring, watches, replicas, the inventory. test_blobs_s3 sets up its own S3 agents.
DEFAULTS_ONLY = (
    "tests/extension/",
    *(
        f"tests/agent/{m}.py"
        for m in (
            "test_trust", "test_sandbox", "test_hostile_models", "test_text_and_array_models",
            "test_parallel_checks", "test_checks_pipeline", "test_check_errors", "test_plugins",
            "test_reports", "test_forward_mlflow", "test_error_shape", "test_http_hardening",
            "test_openapi_fuzz", "test_pipeline_central", "test_watch_revalidate",
            "test_http_server",
            "test_watch_retrain", "test_monitor_retrain", "serving/test_validation",
            "serving/test_guardrails_live", "serving/test_deployment_events",
            "serving/test_monitor_rollback", "serving/test_watch_canary", "test_blobs_s3",
            "serving/test_deploy_cli", "serving/test_central_refusals", "test_disk_room",
            "test_pipeline_webhook_audit", "test_hostile_text", "test_gate_at_central",
            "test_spool",  # the spool is the files backend's: on S3 every test skipped
            "test_security",  # the request rules (token, Host, Origin), before any store
            "test_query_parameters",  # refused in prepare, before any store
            # alerts' ways out; one alert per change on both backends: test_watch_concurrent
            "test_watch_alerts",
            # the longest PostgreSQL runs, kept to the defaults for CI's time (an import's
            # transaction still runs on both in test_monitor_backfill)
            "test_inventory_dossier", "test_backfill_kill",
            # refused before anything is stored (tar members, names, secrets at start, a
            # watch's input and its source's rows), the event stream, the commands' words:
            # the blobs' own damage runs on both in serving/test_unloadable and test_blobs_s3
            "test_intake_hardening", "test_ingest_errors", "test_events", "test_cli",
            "test_outbox_cli", "test_watch_unreadable", "test_watch_row_cap",
            "test_watch_register_input",
            # sign-off withdrawal over HTTP and the CLI; its race, in the store, runs on
            # both in test_stages
            "test_stages_withdraw",
        )
    ),
)  # fmt: skip
# What a module calls when it starts agent processes of its own.
AGENT_STARTERS = ("RunningAgent(", "start_pair(", "churn_at_central(", "local_and_central(")


def pytest_sessionstart(session):
    """Bytecode for the project's modules, written once before any worker starts: every agent,
    command and sandboxed worker is a fresh Python that imports them, and where
    PYTHONDONTWRITEBYTECODE is set (these machines) none writes it, so each would compile
    them all again (an agent's start: 1.35 s of CPU, 0.7 s with the bytecode)."""
    if hasattr(session.config, "workerinput"):
        return
    import compileall

    root = Path(__file__).resolve().parents[1]
    for package in ("agent", "extension"):
        compileall.compile_dir(root / package, quiet=1)


def pytest_generate_tests(metafunc):
    """Agent tests run on every backend: those using the agent fixtures, and those of any
    module that starts a ``RunningAgent`` itself, directly or through a helper that does
    (``start_pair``): it picks up the current backend."""
    source = inspect.getsource(metafunc.module)
    starts_agents = any(s in source for s in AGENT_STARTERS)
    if "backend" in metafunc.fixturenames or starts_agents:
        if "backend" not in metafunc.fixturenames:
            metafunc.fixturenames.append("backend")
        path = metafunc.module.__file__
        backends = BACKENDS[:1] if any(d in path for d in DEFAULTS_ONLY) else BACKENDS
        metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def postgres():
    pg = start_postgres()
    yield pg
    pg.close()


@pytest.fixture(autouse=True)
def _no_browser_loop_outside_the_browser_tests(request):
    """pytest-playwright's sync API keeps an asyncio loop marked running on the main thread for
    the rest of the session, so a later test's ``asyncio.run`` on that worker would refuse.
    Outside tests/browser the mark is lifted for the test and put back after."""
    loop = asyncio.events._get_running_loop()
    if loop is None or "/tests/browser/" in str(request.path):
        yield
        return
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)


@pytest.fixture(autouse=True)
def _defaults_unless_a_backend_is_asked(request):
    """A test that asks for no backend (its module starts no agent itself, e.g. it borrows
    another module's helpers) runs on the defaults, not on whatever backend ran before it."""
    if "backend" in request.fixturenames:
        yield
        return
    saved, support.CURRENT_BACKEND = support.CURRENT_BACKEND, None
    yield
    support.CURRENT_BACKEND = saved


@pytest.fixture(scope="session")
def backend(request):
    name = getattr(request, "param", "sqlite")
    on_servers = name == "postgresql+s3"
    pg = request.getfixturevalue("postgres") if on_servers else None
    s3 = request.getfixturevalue("s3_server") if on_servers else None
    support.CURRENT_BACKEND = Backend(name, pg, s3)
    yield support.CURRENT_BACKEND
    support.CURRENT_BACKEND = None


@pytest.fixture
def agent_factory(tmp_path, backend):
    started: list[RunningAgent] = []

    def make(
        *args: str, home=None, plugins: dict | None = None, database_url=None, env=None
    ) -> RunningAgent:
        """``plugins``: ``{kind: {name: "module:attr"}}`` this agent registers; ``env``: extra
        environment (S3 credentials: ``s3_support.s3_agent_args``)."""
        a = RunningAgent(
            home or tmp_path / f"home{len(started)}",
            tmp_path / "rt",
            list(args),
            plugins,
            database_url=database_url or backend.database_url(),  # None: SQLite in the home
            env=env,
        )
        a.start()
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()


@pytest.fixture
def agent(agent_factory) -> RunningAgent:
    """A fresh agent for one test."""
    return agent_factory()


@pytest.fixture
def agent_in_process(tmp_path):
    """``make(**traits)``: a HandoffAgent built in this process, not started (no HTTP), for
    fast tests of what it wires together. It sees the built-in plugins and those passed as
    ``plugin_registry=``, never installed entry points."""
    from handoff_agent.agent import HandoffAgent

    made = []

    def make(**traits):
        traits.setdefault("entry_point_plugins", False)
        a = HandoffAgent(home=str(tmp_path / f"inproc{len(made)}"), **traits)
        made.append(a)
        return a

    yield make
    for a in made:
        a._io.shutdown(wait=True)
        a._db.submit(a.registry.close).result()
        a._db.shutdown(wait=True)


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory, backend):
    """One agent for a module's read-mostly tests."""
    root = tmp_path_factory.mktemp("shared")
    a = RunningAgent(root / "home", root / "rt", [], database_url=backend.database_url())
    a.start()
    yield a
    a.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """A real S3-compatible server (seaweedfs) on loopback, one per test process (xdist-safe).
    Skips without `weed`, fails under CI. ``s3_server.new_bucket()`` gives each agent its own."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def pytest_fixture_setup(fixturedef, request):
    """A module-wide fixture that starts agents must ask for ``backend``: without it, pytest
    keeps the first backend's agents for the second backend's tests."""
    if fixturedef.scope not in ("module", "package", "class") or "backend" in fixturedef.argnames:
        return
    try:
        source = inspect.getsource(fixturedef.func)
    except (OSError, TypeError):
        return
    if any(s in source for s in AGENT_STARTERS) or "agent_factory" in fixturedef.argnames:
        raise pytest.UsageError(f"fixture {fixturedef.argname!r} starts agents: add `backend`")
