"""``jupyter handoff …``: serve, status, stop, fsck, demo; the rest in their own modules."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from traitlets import Bool, Enum, List, TraitError, Unicode

from . import logs, runtime
from ._version import __version__
from .command import Command
from .logs import InertFormatter
from .shell import complain, os_user, visible
from .vocabulary import SWEEP_GRACE

# How the commands that read a home's stores name them (fsck, backup, restore, migrate).
STORE_ALIASES = {
    "home": "HandoffAgent.home",
    "role": "HandoffAgent.role",  # central: the default central home
    "agent-role": "HandoffAgent.role",
    "database-url": "HandoffAgent.database_url",
    "blob-url": "HandoffAgent.blob_url",
    "s3-endpoint": "HandoffAgent.s3_endpoint_url",
}


def _home(config) -> Path:
    """--home; else the home of the agent of that role running here (it may have been
    started with its own --home); else that role's default home."""
    from .agent import absolute_home, default_home
    from .homes import central_home

    home = config.HandoffAgent.get("home")
    if home:
        return Path(absolute_home(home))
    central = config.HandoffAgent.get("role") == "central"
    running = runtime.read("central" if central else "local")
    if running and running.get("home"):
        return Path(running["home"])
    return central_home() if central else default_home()


def _running_on(config) -> dict | None:
    """The runtime file of the agent of this command's role running on its home, if any."""
    running = runtime.read("central" if config.HandoffAgent.get("role") == "central" else "local")
    home = _home(config)
    if running and running.get("home") and Path(running["home"]).resolve() == home.resolve():
        return running
    return None


def _agent_serving(home: Path, database_url: str = "") -> str | None:
    """Which agent runs on ``home`` (it holds the home's lock, ``homes.holder``) or, on this
    machine, on the database ``database_url``, in one line: "The central agent at URL (pid N)
    runs on HOME: stop it first (`jupyter handoff stop --role central`)"; None for none. Its
    URL is its runtime file's. Replicas on other hosts are not seen. The one check of the
    commands an agent must not run under (restore --force, dossier key rotate); each adds
    what comes after the stop."""
    from .homes import holder
    from .store.engine import redact

    pid = holder(home) if home.is_dir() else None
    shown = redact(database_url) if database_url else None
    for role in ("local", "central"):
        info = runtime.read(role)
        if not info:
            continue
        on_home = pid is not None and str(info.get("pid")) == pid
        if on_home or (shown is not None and info.get("database") == shown):
            stop = "jupyter handoff stop" + (" --role central" if role == "central" else "")
            return (
                f"The {role} agent at {info.get('url')} (pid {info.get('pid')}) runs on "
                f"{home if on_home else shown}: stop it first (`{stop}`)"
            )
    if pid is not None:
        return f"An agent (pid {pid}) runs on {home}: stop it first (`jupyter handoff stop`)"
    return None


def _not_the_running_stores(config, key: str, option: str, ours: str) -> None:
    """A command given no ``option`` reads the home's own store (``ours``: its URL's start);
    the agent running on that home may keep it elsewhere (PostgreSQL, S3): then the home's
    files are not its stores, and the command would read an empty registry ("No registry"),
    write a token central never sees, or call every blob missing. One line naming the
    option (exit 2); the runtime file holds the URL with its password redacted."""
    running = _running_on(config)
    where = str((running or {}).get(key) or "")
    if where and not where.startswith(ours):
        role = running.get("role") or "local"
        what = "metadata" if key == "database" else "blobs"
        print(
            f"The {role} agent running on {running['home']} (pid {running.get('pid')}) keeps "
            f"its {what} in {where}, not in its home: pass {option}, the URL it was started "
            "with.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _blob_store(config):
    """The blob store the agent with this configuration uses (same traits, same defaults)."""
    from .agent import HandoffAgent
    from .store.blobs import open_blob_store

    traits = HandoffAgent.class_traits()
    given = config.HandoffAgent
    if not given.get("blob_url"):
        _not_the_running_stores(config, "blobs", "--blob-url", "file://")
    endpoint = given.get("s3_endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", "")
    threshold = given.get("s3_multipart_threshold", traits["s3_multipart_threshold"].default())
    return open_blob_store(given.get("blob_url", ""), _home(config), endpoint, threshold)


def _database_url(config) -> str:
    """--database-url (or HANDOFF_DATABASE_URL); without one, "" for the home's SQLite
    registry, which must exist: a mistyped --home would get a new, empty one."""
    from .store.engine import existing

    url = config.HandoffAgent.get("database_url") or os.environ.get("HANDOFF_DATABASE_URL")
    home = _home(config)
    if not url:
        _not_the_running_stores(config, "database", "--database-url", "sqlite:")
    if not url and not (home / "registry.db").exists():
        raise SystemExit(f"No registry at {home}. Pass --home, or start the agent once.")
    return existing(url) if url else ""


def _open_db(config):
    """The metadata store the agent of this home (or --database-url) uses."""
    from .store.metadata import MetadataStore

    url = _database_url(config)
    _not_under_an_older_agent(_home(config), url)
    return MetadataStore.open(url) if url else MetadataStore.for_home(_home(config))


def _policy_file(config) -> Path | None:
    """The policy the central agent of this home reads: --policy; else the one the central
    running on this home was started with (its runtime file says); else <home>/policy.toml,
    the embedded central's. None: no policy (a local agent's home)."""
    given = config.HandoffAgent.get("policy_file")
    if given:
        if not Path(given).is_file():
            raise SystemExit(f"--policy {given}: no such file.")
        return Path(given)
    home = _home(config)
    running = runtime.read("central")
    if running and running.get("policy") and Path(running["home"]).resolve() == home.resolve():
        return Path(running["policy"])
    return home / "policy.toml" if (home / "policy.toml").is_file() else None


def _not_under_an_older_agent(home: Path, url: str) -> None:
    """Opening a store migrates it: never under an agent of an older Handoff serving it, which
    would go on writing rows of its own schema (and refuse its own backups after)."""
    from . import homes
    from .store.engine import make_engine, sqlite_url
    from .store.migrations import pending

    pid = homes.holder(home)
    if pid is None:
        return
    engine = make_engine(url or sqlite_url(home / "registry.db"))
    try:
        behind = pending(engine)
    finally:
        engine.dispose()
    if behind:
        raise SystemExit(
            f"The agent serving {home} (pid {pid}) runs an older Handoff: its schema lacks "
            f"{behind[-1]}. Stop it and start it with this Handoff, which upgrades the schema, "
            "then run this again. Nothing was changed."
        )


class ServeApp(Command):
    name = "jupyter-handoff-serve"
    description = "Run the agent in the foreground. Ctrl-C stops it."
    version = __version__
    aliases = {
        "home": "HandoffAgent.home",
        "database-url": "HandoffAgent.database_url",
        "blob-url": "HandoffAgent.blob_url",
        "port": "HandoffAgent.port",
        "ip": "HandoffAgent.ip",
        "role": "HandoffAgent.role",
        "policy": "HandoffAgent.policy_file",
        "signing-key-file": "HandoffAgent.signing_key_file",
        "forward-to": "HandoffAgent.forward_to",
        "log-level": "Application.log_level",
    }
    flags = {
        "generate-config": (
            {"JupyterApp": {"generate_config": True}},
            "Write jupyter_handoff_serve_config.py, every setting in it commented out, to the "
            "Jupyter config directory (`jupyter --config-dir`), where serve reads it; start "
            "nothing.",
        ),
        "y": (
            {"JupyterApp": {"answer_yes": True}},
            "With --generate-config: replace that file if it exists.",
        ),
    }
    _log_formatter_cls = InertFormatter  # its own log lines, as the agent's (logs.py)

    @property
    def classes(self):
        from .agent import HandoffAgent
        from .gate import GatePolicy
        from .plugins import default_registry

        # The app itself too: its aliases (log-level) name Application, and --help needs it.
        # Destinations too, so their list settings parse from the command line.
        destinations = default_registry().load_all("destination").values()
        from .serving.settings import Serving
        from .serving.validation import Validation

        return [type(self), HandoffAgent, GatePolicy, Serving, Validation, *destinations]

    def start(self):
        from .agent import HandoffAgent
        from .homes import hold

        if self.generate_config:
            self._write_config()
            return
        logs.configure(
            self.log_level
        )  # --log-level governs the agent's lines too, not only serve's
        self._warn_password_in_argv()
        if self.config.HandoffAgent.get("role") == "central" and not self.config.HandoffAgent.get(
            "home"
        ):
            from .homes import central_home

            self.config.HandoffAgent.home = str(central_home())
        home = _home(self.config)
        try:
            self.home_lock = hold(home)
            agent = HandoffAgent(config=self.config, parent=self)
        except (ValueError, TraitError) as e:  # a policy or secret the agent must not run with
            from .command import _value_line

            line = _value_line(e, self.aliases) if isinstance(e, TraitError) else str(e)
            self.log.critical("%s", line)
            self.exit(2)
        try:
            asyncio.run(self._serve(agent))
        except OSError as e:
            if e.filename is not None:
                raise
            # the address: a name that does not resolve, one not on this machine, a port taken
            self.log.critical(
                "Cannot listen on %s port %s: %s.", agent.ip, agent.port, e.strerror or e
            )
            self.exit(2)

    def _warn_password_in_argv(self) -> None:
        """A password in --database-url is in this process's command line, which every local
        user reads (``ps``); the environment variable is read and dropped at start."""
        from .redaction import redact_urls

        given = self.cli_config.get("HandoffAgent", {}).get("database_url") or ""
        if given and redact_urls(given) != given:
            self.log.warning(
                "--database-url holds a password, visible to every user of this machine in "
                "the process list (ps): set HANDOFF_DATABASE_URL instead (the agent reads it "
                "and drops it from its environment at start)."
            )

    def _write_config(self) -> None:
        """The file serve reads, with every setting's help; an existing one is replaced only
        when asked (-y, or yes at the prompt): it holds someone's settings."""
        path = Path(self.config_file or Path(self.config_dir, self.config_file_name + ".py"))
        if path.exists() and not self.answer_yes and not sys.stdin.isatty():
            complain(f"{path} exists: `jupyter handoff serve --generate-config -y` replaces it.")
            self.exit(2)
        self.write_default_config()

    async def _serve(self, agent) -> None:
        stop = asyncio.Event()  # before the runtime file: a SIGTERM right after it is handled
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        port = await agent.start()
        host = f"[{agent.ip}]" if ":" in agent.ip else agent.ip
        url = f"http://{host}:{port}"
        other = runtime.read(agent.role)
        if other and other.get("home") != agent.home and other.get("pid") != os.getpid():
            self.log.warning(
                "Another %s agent (pid %s, home %s) runs: kernels and commands on this machine "
                "now reach this one (home %s) instead. `jupyter handoff stop` stops one.",
                agent.role,
                other.get("pid"),
                other.get("home"),
                agent.home,
            )
        path = runtime.write(
            {
                "url": url,
                "token": agent.token,
                "pid": os.getpid(),
                "home": agent.home,
                "version": __version__,
                "role": agent.role,
                "sandbox": agent.model_sandbox.mode,
                "database": agent.registry.url,  # password redacted
                "blobs": agent.store.url,
                "spool": agent.ingest.spool,  # a local kernel hands bundles over here
                "serving_url": agent.serving_url,
                "policy": agent.policy_path,  # central: `token create` applies its [tokens]
            },
            agent.role,
        )
        self.log.info("Handoff agent %s listening on %s (home %s)", __version__, url, agent.home)
        self.log.info("Metadata: %s", agent.registry.url)
        self.log.info("Runtime file: %s", path)
        try:
            await stop.wait()
        finally:
            runtime.remove(os.getpid(), agent.role)
            await agent.stop()
            self.log.info("Handoff agent stopped")


class StatusApp(Command):
    name = "jupyter-handoff-status"
    description = (
        "Say whether an agent is running, which one (local, else central), where, and with "
        "which token."
    )
    version = __version__
    json_output = Bool(False, help="Print JSON.").tag(config=True)
    role = Unicode(
        "",
        help="Which agent: 'local' or 'central'. Default: the local agent, else the central "
        "one (whose status includes the model server's serving_url).",
    ).tag(config=True)
    flags = {"json": ({"StatusApp": {"json_output": True}}, "Print JSON.")}
    aliases = {"role": "StatusApp.role"}

    def start(self):
        role = self.role or "local"
        info = runtime.read(role)
        if info is None and not self.role and (central := runtime.read("central")):
            info, role = central, "central"
        # which agent this reports on, said plainly: without --role, central only stands in
        # for a local agent that is not running, and the user must not take one for the other
        local_down = not self.role and role == "central"
        answer = runtime.health(info["url"], timeout=3.0) if info else None
        up = answer is not None
        silent = info is not None and not up  # its process lives: stopped, or its loop blocked
        state = runtime.outbox_state(info) if up else None
        if self.json_output:
            more = {"not_answering": True} if silent else {}
            if up:  # what the text's last lines say: stable keys, [] / 0 when all is well
                more["problems"] = state["problems"] if state else []
                more["deliveries"] = {k: state[k] if state else 0 for k in ("refused", "waiting")}
            if local_down:
                more["local_running"] = False
            said = {"role": role} if info or self.role else {}
            print(json.dumps({"running": up, **more, **(info or {}), **said}))
            self.exit(0 if up else 1)
        flag = " --role central" if role == "central" else ""
        if local_down:
            print("No local agent is running (`jupyter handoff serve` starts one).")
        if silent:
            print(
                f"The {role} agent runs (pid {info['pid']}, home {info['home']}) but does not "
                f"answer at {info['url']}: it is stopped or busy. Wait, or restart it: "
                f"`jupyter handoff stop{flag}`, then `jupyter handoff serve{flag}`."
            )
        elif up:
            where = f"(pid {info['pid']}, home {info['home']})"
            print(f"{role.capitalize()} agent at {info['url']}: running {where}")
            print(f"Token: {info['token']}")
            if info.get("serving_url"):
                print(f"Model server: {info['serving_url']}")
            if disk := runtime.disk_line(answer):
                print(disk)
            if deliveries := runtime.outbox_line(state):
                print(deliveries)
        elif self.role:
            print(f"No {self.role} agent is running. Start one with `jupyter handoff serve{flag}`.")
        else:
            print("No agent is running. Start one with `jupyter handoff serve`.")
        self.exit(0 if up else 1)


class StopApp(Command):
    name = "jupyter-handoff-stop"
    description = "Stop the running agent (--role central: the central one)."
    version = __version__
    role = Enum(["local", "central"], "local", help="Which agent: local or central.").tag(
        config=True
    )
    flags = {}
    aliases = {"role": "StopApp.role"}

    def start(self):
        info = runtime.read(self.role)
        if not info:
            other = "central" if self.role == "local" else "local"
            hint = ""
            if there := runtime.read(other):
                hint = (
                    f" A {other} one is (pid {there['pid']}): "
                    f"`jupyter handoff stop --role {other}` stops it."
                )
            print(f"No {self.role} agent is running.{hint}")
            return
        if not runtime.stop(info):
            complain(
                f"The {self.role} agent (pid {info['pid']}) is still finishing 30 s after it "
                "was asked to stop; `jupyter handoff status` says when it has."
            )
            self.exit(1)
        print(f"Stopped the {self.role} agent (pid {info['pid']}).")


SWEEP_HELP = (
    "Then remove the unreferenced blobs (an upload or conversion interrupted before it was "
    "recorded) older than --older-than, with one audit row."
)
DRY_RUN_HELP = "With --sweep: list what would be swept; remove nothing."


class FsckApp(Command):
    name = "jupyter-handoff-fsck"
    description = (
        "Re-hash every blob and check that the registry and the store agree; --sweep then "
        "removes the orphan blobs older than --older-than."
    )
    usage = "jupyter handoff fsck [--sweep [--older-than 24h] [--dry-run]] [--home DIR] ..."
    version = __version__
    sweep = Bool(False, help=SWEEP_HELP).tag(config=True)
    older_than = Unicode(
        SWEEP_GRACE,
        help="With --sweep: the grace period (30m, 24h, 7d, or seconds). A younger blob may be "
        "an upload or another replica's write about to be recorded, so it stays; 0 only with "
        "no agent writing to these stores.",
    ).tag(config=True)
    dry_run = Bool(False, help=DRY_RUN_HELP).tag(config=True)
    aliases = {**STORE_ALIASES, "older-than": "FsckApp.older_than"}
    flags = {
        "sweep": ({"FsckApp": {"sweep": True}}, SWEEP_HELP),
        "dry-run": ({"FsckApp": {"dry_run": True}}, DRY_RUN_HELP),
    }
    classes = ServeApp.classes  # --help describes the --home alias through HandoffAgent

    def start(self):
        from .fsck import Sweep, fsck
        from .vocabulary import period_seconds

        sweep = None
        if self.sweep:
            seconds = period_seconds(self.older_than, unit=True)  # 0, or with its unit
            if seconds is None:
                said = f"--older-than {self.older_than!r} is not a period with its unit: "
                said += "write e.g. 24h, 7d (or 0)."
                complain(said, f"Usage: {self.usage}")
                self.exit(2)
            sweep = Sweep(seconds, self.older_than, self.dry_run, os_user())
        elif self.dry_run or "older_than" in self.config.FsckApp:
            complain("--dry-run and --older-than go with --sweep.", f"Usage: {self.usage}")
            self.exit(2)
        url = _database_url(self.config)
        try:
            store = _blob_store(self.config)
        except ValueError as e:
            self.log.critical("%s", e)
            self.exit(2)
        _not_under_an_older_agent(_home(self.config), url)
        report = fsck(_home(self.config), store, url, sweep)
        for line in report.lines():
            print(line)
        if report.sweep is not None and report.sweep.refused:
            complain(f"fsck --sweep refused: {report.sweep.refused} Nothing was swept.")
            self.exit(1)
        self.exit(0 if report.ok else 1)


class DemoApp(Command):
    name = "jupyter-handoff-demo"
    description = (
        "Start central and a local agent if none runs, execute the quickstart notebook in a "
        "real kernel, sign its version off, then canary, promote and watch the guardrails "
        "roll a bad version back at central. Exits 1 with the reason if a step fails."
    )
    version = __version__
    notebook = Unicode("", help="Notebook to run. Default: examples/quickstart.ipynb.").tag(
        config=True
    )
    aliases = {"notebook": "DemoApp.notebook"}
    flags = {}

    def start(self):
        from .demo import run_demo

        sys.exit(run_demo(self.notebook or None))


class ReportApp(Command):
    name = "jupyter-handoff-report"
    description = "Fetch a version's report (NAME or NAME:N); --open shows it in a browser."
    version = __version__
    fmt = Unicode("html", help="Report format: html, md or json.").tag(config=True)
    open_browser = Bool(False, help="Open the HTML report in a web browser.").tag(config=True)
    aliases = {"format": "ReportApp.fmt"}
    flags = {"open": ({"ReportApp": {"open_browser": True}}, "Open it in a web browser.")}

    def start(self):
        from .report_cli import fetch_report

        if len(self.extra_args) != 1:
            complain("Usage: jupyter handoff report NAME[:N] [--open] [--format html|md|json]")
            self.exit(2)
        self.exit(fetch_report(self.extra_args[0], self.fmt, self.open_browser))


TOKEN_JSON_HELP = "list: JSON lines, one token each, for scripts."


class TokenApp(Command):
    name = "jupyter-handoff-token"
    description = (
        "Create, list or revoke API tokens with roles: token create --user U --role R "
        "[--expires 90d]; token list [--all] [--json]; token revoke --user U [--id ID]."
    )
    version = __version__
    user = Unicode("", help="User the token belongs to.").tag(config=True)
    token_id = Unicode("", help="revoke: only the token with this id (from token list).").tag(
        config=True
    )
    roles = List(
        Unicode(), help="Roles: analyst, reviewer, admin, or consumer (repeat --role)."
    ).tag(config=True)
    models = List(
        Unicode(),
        help="For a consumer token: the models it may call on the model server (repeat "
        "--models, or separate names with commas).",
    ).tag(config=True)
    expires = Unicode(
        "",
        help="create: the token stops working after this period (30m, 24h, 7d, 90d). "
        "Default: central's policy [tokens] max_age, else never; longer than max_age is "
        "refused.",
    ).tag(config=True)
    all_tokens = Bool(False, help="list: revoked tokens too.").tag(config=True)
    json_lines = Bool(False, help=TOKEN_JSON_HELP).tag(config=True)
    classes = ServeApp.classes  # --help describes the aliases through HandoffAgent
    aliases = {
        "home": "HandoffAgent.home",
        "role": "TokenApp.roles",
        "models": "TokenApp.models",
        "user": "TokenApp.user",
        "id": "TokenApp.token_id",
        "expires": "TokenApp.expires",
        "agent-role": "HandoffAgent.role",
        "database-url": "HandoffAgent.database_url",
        "policy": "HandoffAgent.policy_file",
    }
    flags = {
        "all": ({"TokenApp": {"all_tokens": True}}, "list: revoked tokens too."),
        "json": ({"TokenApp": {"json_lines": True}}, TOKEN_JSON_HELP),
    }

    def start(self):
        from . import tokens
        from .errors import HandoffError

        action = self.extra_args[0] if self.extra_args else ""
        if action not in ("create", "list", "revoke"):
            complain(
                "Usage: jupyter handoff token create --user alice --role reviewer "
                "[--expires 90d] [--home DIR]",
                "       jupyter handoff token create --role consumer --models churn",
                "       jupyter handoff token list [--all] [--json] [--home DIR]",
                "       jupyter handoff token revoke --user alice [--id ID] [--home DIR]",
            )
            self.exit(2)
        max_age = self._max_age() if action in ("create", "list") else ""
        registry = _open_db(self.config)
        try:
            if action == "list":
                self._list(registry.tokens(revoked=self.all_tokens), max_age)
            elif action == "create":
                models = [m for given in self.models for m in given.split(",") if m] or None
                user = self.user or ("consumer" if "consumer" in self.roles else "")
                roles, expires = list(self.roles), self.expires or None
                made = tokens.issue(registry, user, roles, "cli", models, expires, max_age)
                print(made["token"])
            elif not self.user:
                raise HandoffError(
                    "Whose tokens? token revoke needs --user.",
                    "e.g. jupyter handoff token revoke --user alice",
                )
            else:
                n = tokens.revoke(registry, self.user, token_id=self.token_id)
                print(f"Revoked {n} token(s) of {self.user}.")
        except HandoffError as e:
            complain(f"{e.message}\n{e.hint}")
            self.exit(2)
        finally:
            registry.close()

    def _max_age(self) -> str:
        """[tokens] max_age of the policy the central of this home reads ("": none)."""
        from .policy import Policy

        try:
            return Policy.load(_policy_file(self.config)).token_max_age
        except ValueError as e:  # the agent would refuse to start on it, too
            complain(str(e))
            self.exit(2)

    def _list(self, rows: list[dict], max_age: str) -> None:
        """One line a token: id, user, roles, created, expires, last used, and its state
        when it is not in force (expired, revoked). The expiry is the one in force: central's
        ``[tokens] max_age`` from its creation when that comes first (``(max_age)``)."""
        from datetime import UTC, datetime

        from .tokens import expiry
        from .vocabulary import when_text

        moment = datetime.now(UTC)
        for k in rows:
            expires, by_policy = expiry(k["expires"], k["created"], max_age)
            expired = bool(expires) and datetime.fromisoformat(expires) <= moment
            if self.json_lines:
                shown = {**k, "expires": expires, "by_max_age": by_policy, "expired": expired}
                print(json.dumps(shown))
                continue
            state = "  revoked" if k["revoked"] else "  expired" if expired else ""
            scope = f"  models: {','.join(k['models'])}" if k["models"] else ""
            bound = " (max_age)" if by_policy else ""
            line = (
                f"{k['id']}  {k['user']}  {','.join(k['roles'])}  "
                f"created {when_text(k['created'])}  expires {when_text(expires)}{bound}  "
                f"last used {when_text(k['last_used'])}{state}"
            )
            print(visible(line + scope))


class HandoffApp(Command):
    name = "jupyter-handoff"
    description = "Handoff: hand models from notebooks to IT. The agent and its tools."
    version = __version__
    subcommands = {
        "serve": (ServeApp, ServeApp.description),
        "status": (StatusApp, StatusApp.description),
        "stop": (StopApp, StopApp.description),
        "fsck": (FsckApp, FsckApp.description),
        "demo": (DemoApp, DemoApp.description),
        "report": (ReportApp, ReportApp.description),
        "token": (TokenApp, TokenApp.description),
        "audit": ("handoff_agent.audit_cli.AuditApp", "Verify the audit chain; read, export it."),
        "prune": ("handoff_agent.retention_cli.PruneApp", "Remove old versions' bundles (admin)."),
        "outbox": ("handoff_agent.outbox_cli.OutboxApp", "Deliveries: waiting, refused, done."),
        "trust": ("handoff_agent.trust_cli.TrustApp", "Trust exact types for skops loading."),
        "inventory": ("handoff_agent.inventory_cli.InventoryApp", "Every model, with risk tags."),
        "dossier": ("handoff_agent.inventory_cli.DossierApp", "Signed dossiers; verify."),
        "backup": ("handoff_agent.transfer_cli.BackupApp", "Back up metadata and blobs; --verify."),
        "restore": ("handoff_agent.transfer_cli.RestoreApp", "Restore a backup, then verify."),
        "migrate": ("handoff_agent.transfer_cli.MigrateApp", "Move central to other stores."),
        "deployment": (
            "handoff_agent.deploy_cli.DeploymentApp",
            "Where each version serves at central.",
        ),
        "reviews": ("handoff_agent.deploy_cli.ReviewsApp", "What waits for a sign-off."),
        "signoff": (
            "handoff_agent.deploy_cli.SignoffApp",
            "Approve or reject a version's stage; --withdraw.",
        ),
        "stage": ("handoff_agent.deploy_cli.StageApp", "Move a version to a stage (admin)."),
        "traffic": ("handoff_agent.deploy_cli.TrafficApp", "The canary's share (admin)."),
        "rollback": ("handoff_agent.deploy_cli.RollbackApp", "Previous production serves again."),
        "watch": ("handoff_agent.watch_cli.WatchApp", "Watch a data source for a model."),
        "lineage": ("handoff_agent.watch_cli.LineageApp", "The lineage graph, json or dot."),
        "monitor": ("handoff_agent.monitor_cli.MonitorApp", "Backfill a log; evaluate windows."),
    }

    def start(self):
        if self.subapp is None:
            self.print_help()
            print("\nSubcommands: " + ", ".join(self.subcommands))
            self.exit(2)
        from .store.engine import BadDatabaseURL, outage_line, unreadable_line
        from .store.migrations import SchemaNewer

        try:
            super().start()
            sys.stdout.flush()  # a reader gone away shows here, not in the exit's own flush
        except BadDatabaseURL as e:
            complain(str(e))
            self.exit(2)
        except SchemaNewer as e:
            complain(str(e))
            self.exit(1)
        except BrokenPipeError:  # `... | head` stopped reading: the answer was taken, quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.exit(141)
        except OSError as e:
            if e.filename is None:
                raise
            # a path given on the command line: missing, a directory, not writable
            complain(f"{e.filename}: {e.strerror or e}.")
            self.exit(1)
        except Exception as e:  # PostgreSQL down, a lock held, a damaged file: one line
            line = outage_line(e) or unreadable_line(e)
            if line is None:
                raise
            complain(line)
            self.exit(1)


main = HandoffApp.launch_instance
