"""The command line: status, serve's help, and the runtime file it leaves for the kernel."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from agent_support import NO_CHECKS
from support import handoff_cli


def handoff(*args, runtime_dir, timeout=60):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime_dir)}
    return handoff_cli(env, *args, timeout=timeout)


def test_status_json_with_a_running_agent(agent):
    p = handoff("status", "--json", runtime_dir=agent.runtime_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    info = json.loads(p.stdout)
    assert info["running"] is True and info["role"] == "local" and "local_running" not in info
    assert info["url"] == agent.url
    assert info["token"] == agent.token
    assert info["pid"] == agent.proc.pid
    assert info["home"] == str(agent.home)
    # what stops stages coming back, as the text's last lines say it: nothing here
    assert (info["problems"], info["deliveries"]) == ([], {"refused": 0, "waiting": 0})


def test_status_text_with_a_running_agent(agent):
    p = handoff("status", runtime_dir=agent.runtime_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"Local agent at {agent.url}: running (pid {agent.pid}, ")
    assert agent.token in p.stdout


def test_status_without_an_agent_exits_1_with_a_hint(tmp_path):
    p = handoff("status", runtime_dir=tmp_path / "empty-runtime")
    assert p.returncode == 1
    assert "No agent is running" in p.stdout
    assert "jupyter handoff serve" in p.stdout
    p = handoff("status", "--json", runtime_dir=tmp_path / "empty-runtime")
    assert p.returncode == 1
    assert json.loads(p.stdout)["running"] is False
    assert "role" not in p.stdout  # neither one runs
    p = handoff("status", "--role", "central", runtime_dir=tmp_path / "empty-runtime")
    assert p.returncode == 1 and p.stdout == (
        "No central agent is running. Start one with `jupyter handoff serve --role central`.\n"
    )


def test_status_after_kill_9_ignores_the_stale_runtime_file(agent_factory):
    a = agent_factory(NO_CHECKS)
    a.kill9()
    assert a.runtime_file.exists()  # a killed agent cannot clean up after itself
    p = handoff("status", "--json", runtime_dir=a.runtime_dir)
    assert p.returncode == 1
    assert json.loads(p.stdout)["running"] is False


def test_status_of_a_stopped_agent_says_it_runs_but_does_not_answer(agent_factory):
    """SIGSTOPped (or its loop blocked): not 'No agent is running', which sends the user to
    a `serve` the home's lock then refuses."""
    a = agent_factory(NO_CHECKS)
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        p = handoff("status", runtime_dir=a.runtime_dir)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert p.returncode == 1
    assert p.stdout == (
        f"The local agent runs (pid {a.proc.pid}, home {a.home}) but does not answer at {a.url}: "
        "it is stopped or busy. Wait, or restart it: `jupyter handoff stop`, then "
        "`jupyter handoff serve`.\n"
    )


def test_runtime_file_is_private_and_removed_on_stop(agent_factory):
    a = agent_factory(NO_CHECKS)
    mode = stat.S_IMODE(a.runtime_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    info = json.loads(a.runtime_file.read_text())
    assert {"url", "token", "pid", "home", "version", "role"} <= set(info)
    a.stop()
    assert not a.runtime_file.exists()


def test_stop_says_which_agent_it_stops_and_which_one_runs_instead(agent_factory):
    # Given only a central on this machine
    central = agent_factory(NO_CHECKS, "--role", "central")
    # When IT runs `status`: it reports on central, saying so, and that no local agent runs
    p = handoff("status", runtime_dir=central.runtime_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == [
        "No local agent is running (`jupyter handoff serve` starts one).",
        f"Central agent at {central.url}: running (pid {central.pid}, home {central.home})",
    ], p.stdout
    p = handoff("status", "--json", runtime_dir=central.runtime_dir)
    info = json.loads(p.stdout)
    assert (info["role"], info["local_running"], info["url"]) == ("central", False, central.url)
    assert (info["problems"], info["deliveries"]) == ([], {"refused": 0, "waiting": 0})
    # and asked for central, it reports on central alone
    p = handoff("status", "--json", "--role", "central", runtime_dir=central.runtime_dir)
    assert json.loads(p.stdout)["role"] == "central" and "local_running" not in p.stdout
    # When IT runs `stop`, which means the local agent: nothing stops, and it says how
    p = handoff("stop", runtime_dir=central.runtime_dir)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == (
        f"No local agent is running. A central one is (pid {central.proc.pid}): "
        "`jupyter handoff stop --role central` stops it."
    )
    assert central.proc.poll() is None
    # Then `stop --role central` stops central, which removes its runtime file
    p = handoff("stop", "--role", "central", runtime_dir=central.runtime_dir)
    assert p.stdout.strip() == f"Stopped the central agent (pid {central.proc.pid}).", p.stderr
    assert central.proc.poll() is not None  # said once it has exited, not on the signal
    assert not central.runtime_file.exists()


def test_a_second_agent_on_a_served_home_is_refused_and_the_first_serves_on(agent, tmp_path):
    """Two agents on one home would share its agent id: the second would take over the
    first's running checks and claims. It stops at once instead, naming the first."""
    p = handoff("serve", "--home", str(agent.home), "--port", "0", runtime_dir=tmp_path / "rt2")
    assert p.returncode == 2, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert f"Another agent (pid {agent.pid}) serves {agent.home}." in last, p.stderr
    assert agent.alive() and agent.request("GET", "/api/v1/health")[0] == 200


def test_serve_refuses_a_check_lease_that_would_lapse_at_once(tmp_path):
    p = handoff(
        "serve", "--home", str(tmp_path / "h"), "--HandoffAgent.check_lease=0", runtime_dir=tmp_path
    )
    assert p.returncode != 0
    assert "c.HandoffAgent.check_lease must be more than 0, not 0." in p.stdout + p.stderr


def test_serve_settings_it_cannot_run_with_are_one_line_and_nothing_listens(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    home = ["--home", str(tmp_path / "h")]
    for args, said in [
        ([*home, "--role", "Central"], "--role 'Central': expected any of ['local', 'central']."),
        ([*home, "--port", "99999"], "should not be greater than 65535"),
        ([*home, "--port", "-1"], "should not be less than 0"),
        ([*home, "--ip", "999.1.1.1"], "Cannot listen on 999.1.1.1 port 0: "),
        ([*home, "--ip="], "c.HandoffAgent.ip is empty: give the interface to listen on"),
        (
            [*home, "--HandoffAgent.trust_poll_interval=0"],
            "c.HandoffAgent.trust_poll_interval must be more than 0, not 0.",
        ),
        (
            [*home, "--HandoffAgent.forward_backoff=0"],
            "c.HandoffAgent.forward_backoff must be more than 0, not 0.",
        ),
        (
            [*home, "--HandoffAgent.retrain_poll=-1"],
            "c.HandoffAgent.retrain_poll must be more than 0, not -1.",
        ),
        (
            [*home, "--HandoffAgent.database_busy_timeout=inf"],
            "c.HandoffAgent.database_busy_timeout must be a finite number, not inf.",
        ),
        (
            [*home, "--HandoffAgent.check_timeout=nan"],
            "c.HandoffAgent.check_timeout must be a finite number, not nan.",
        ),
        (
            [*home, "--Serving.sample_rate=1.5"],
            "c.Serving.sample_rate must be from 0 to 1, not 1.5.",
        ),
        (
            [*home, "--Serving.max_test_slots=0"],
            "c.Serving.max_test_slots must be at least 1 (validation load-tests each version",
        ),
        (["--home", str(afile)], f"--home {afile} is a file, not a directory."),
        (
            [*home, f"--database-url=sqlite:///{tmp_path / 'nodir' / 'r.db'}"],
            f"No directory {tmp_path / 'nodir'} for the SQLite database",
        ),
    ]:
        p = handoff("serve", *args, runtime_dir=tmp_path / "rt")
        assert p.returncode == 2, (args, p.stdout + p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert said in last and "Traceback" not in p.stderr, (args, p.stderr)
        assert not (tmp_path / "rt").exists() or not list((tmp_path / "rt").iterdir())


def test_serve_generate_config_writes_the_file_serve_reads_and_starts_nothing(tmp_path):
    """``serve --generate-config`` started an agent; now it writes the config file and exits."""
    config_dir, home, rt = tmp_path / "cfg", tmp_path / "h", tmp_path / "rt"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_RUNTIME_DIR": str(rt)}
    path = config_dir / "jupyter_handoff_serve_config.py"
    serve = ["serve", "--home", str(home)]
    # When a user generates the config file
    p = handoff_cli(env, *serve, "--generate-config", timeout=60)
    # Then it is written, every setting commented out with its help, and nothing started
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == f"Writing default config to: {str(path)!r}", p.stdout
    text = path.read_text()
    assert "# c.HandoffAgent.workers = " in text and "# c.GatePolicy." in text
    assert not home.exists() and not rt.exists()
    # and a second run neither asks (no terminal) nor replaces it: one line, exit 2
    p = handoff_cli(env, *serve, "--generate-config", timeout=60)
    assert p.returncode == 2 and p.stderr == (
        f"{path} exists: `jupyter handoff serve --generate-config -y` replaces it.\n"
    ), p.stderr
    assert path.read_text() == text
    # When a setting the agent cannot run with is set in it, serve reads it and refuses
    path.write_text(text + "c.HandoffAgent.workers = 0\n")
    p = handoff_cli(env, *serve, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.endswith("c.HandoffAgent.workers must be more than 0, not 0."), p.stderr
    assert "Traceback" not in p.stderr and not rt.exists()


def test_serve_with_an_empty_home_is_refused_before_it_takes_any_directory(tmp_path):
    """``--home=`` put the registry in the current directory but took the home lock of the
    default home: two agents could open one registry."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    p = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "serve", "--home="],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.splitlines()[0] == (
        "c.HandoffAgent.home (--home) is empty: give the agent's directory, or leave it out "
        "for the default, <jupyter data dir>/handoff."
    ), p.stderr
    assert "Traceback" not in p.stderr and sorted(os.listdir(tmp_path)) == []


def test_serve_help_all_documents_the_agent_options(tmp_path):
    p = handoff("serve", "--help-all", runtime_dir=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for option, text in [
        ("--HandoffAgent.max_bundle_size", "Largest bundle accepted"),
        ("--HandoffAgent.token", "API token"),
        ("--HandoffAgent.allowed_hosts", "DNS-rebinding"),
        ("--HandoffAgent.allowed_origins", "Browser origins"),
        ("--HandoffAgent.checks", "Checks run on every push"),
        ("--HandoffAgent.check_timeout", "Seconds one check may run"),
        ("--HandoffAgent.check_lease", "claim on a check run holds"),
        ("--HandoffAgent.home", "Directory for the registry"),
    ]:
        assert option in out, option
        assert text in out, text


def test_short_help_of_each_subcommand_works(tmp_path):
    """Every subcommand the CLI lists (token, audit and monitor once crashed on --help)."""
    from handoff_agent.cli import HandoffApp

    for sub in [*HandoffApp.subcommands, "token create", "audit verify", "dossier verify"]:
        p = handoff(*sub.split(), "--help", runtime_dir=tmp_path)
        assert p.returncode == 0, (sub, p.stderr)
        assert "Traceback" not in p.stderr, (sub, p.stderr)
    p = handoff("fsck", "--help", runtime_dir=tmp_path)
    assert "--home" in p.stdout


def test_a_mistyped_option_or_value_is_one_line_and_exit_2_before_anything_runs(tmp_path):
    """traitlets warned that an unknown option "will have no effect" and went on: a
    ``signoff --too approved`` signed off without its guard. Now no command runs with one."""
    from handoff_agent.cli import HandoffApp

    for sub in HandoffApp.subcommands:
        p = handoff(sub, "--bogus", "x", runtime_dir=tmp_path)
        assert p.returncode == 2, (sub, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert lines[0] == "Unknown option --bogus." and len(lines) <= 4, (sub, p.stderr)
        assert p.stdout == "" and "Traceback" not in p.stderr, (sub, p.stdout, p.stderr)
    for args, said in (
        (("outbox", "--agent", "bogus"), "--agent 'bogus': expected any of ['local', 'central']."),
        (("inventory", "--format", "xml"), "--format 'xml': expected any of"),
        (("prune", "churn", "--keep", "abc"), "--keep 'abc': expected an int."),
        (("signoff", "churn:1", "--too", "approved"), "Unknown option --too."),
        (("signoff", "churn:1", "-m"), "-m needs a value."),
        (("deployment", "--url"), "--url needs a value."),
        (
            ("fsck", "--sweep", "--older-than", "-1h"),
            "--older-than -1h: a period must be positive, written with its unit, e.g. 30m, "
            "24h, 7d.\n",
        ),
        (
            ("token", "create", "--user", "a", "--role", "reviewer", "--expires", "-1d"),
            "--expires -1d: a period must be positive",
        ),
    ):
        p = handoff(*args, runtime_dir=tmp_path)
        assert p.returncode == 2 and p.stderr.startswith(said), (args, p.stderr)
        assert "Usage: jupyter handoff" in p.stderr or "--help" in p.stderr, p.stderr


def test_fsck_of_a_home_with_no_registry_says_so_and_creates_nothing(tmp_path):
    """A mistyped --home is not an empty registry that checks out."""
    typo = tmp_path / "hoem"
    p = handoff("fsck", "--home", str(typo), runtime_dir=tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        f"No registry at {typo}. Pass --home, or start the agent once."
    )
    assert "OK" not in p.stdout and not typo.exists()


def test_top_level_without_subcommand_lists_subcommands(tmp_path):
    p = handoff(runtime_dir=tmp_path)
    assert p.returncode == 2
    assert "serve" in p.stdout and "fsck" in p.stdout and "status" in p.stdout


def test_report_command_saves_the_report(agent_factory, tmp_path):
    from support import bundle_bytes

    agent = agent_factory("--HandoffAgent.checks=[]", "--HandoffAgent.forward_to=[]")
    agent.push_bytes("carded", bundle_bytes("carded"))
    out = handoff_cli(agent.env, "report", "carded", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    saved = Path(out.stdout.strip().rsplit(": ", 1)[1])
    assert (
        saved.read_text().startswith("<!doctype html>") and oct(saved.stat().st_mode)[-3:] == "600"
    )
    card = handoff_cli(agent.env, "report", "carded:1", "--format", "md", timeout=60)
    assert card.stdout.startswith("# Model card: carded version 1")
    bad = handoff_cli(agent.env, "report", "carded:x", timeout=60)
    assert bad.returncode == 2 and "NAME:N" in bad.stderr and not bad.stdout


def test_stop_after_a_crash_never_signals_the_process_that_took_the_agents_pid(tmp_path):
    """After a kill -9 the runtime file stays; its pid may since be another program's.
    `stop` and `status` treat the file as stale and that program lives on."""
    import subprocess
    import sys

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runtime = tmp_path / "rt"
        runtime.mkdir()
        stale = {"url": "http://127.0.0.1:9", "token": "t", "pid": stranger.pid, "role": "local"}
        (runtime / "handoff-local.json").write_text(json.dumps(stale))
        p = handoff("stop", runtime_dir=runtime)
        assert (p.returncode, p.stdout.strip()) == (0, "No local agent is running."), p.stderr
        p = handoff("status", runtime_dir=runtime)
        assert "No agent is running" in p.stdout + p.stderr, p.stdout + p.stderr
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_database_url_with_a_wrong_password_or_name_says_to_check_it(postgres, tmp_path):
    """Waiting will not fix a wrong password or database name: the line says to check the
    URL (it said to start the database and run the command again), and shows no password."""
    from backends import HOST, ROLE, pg_url

    for url in (
        f"postgresql://{ROLE}:not-the-password@{HOST}:5432/postgres",
        pg_url("no_such_database_here"),
    ):
        p = handoff(
            "token", "create", "--user", "x", "--role", "analyst", "--database-url", url,
            "--home", str(tmp_path / "h"), runtime_dir=tmp_path,
        )  # fmt: skip
        assert p.returncode == 1, p.stdout + p.stderr
        line = p.stderr.strip()
        assert line.startswith("The database refused the connection (") and "\n" not in line
        assert line.endswith("check the URL's user, password and database name (--database-url).")
        assert "not-the-password" not in line


def test_a_database_url_that_is_no_url_is_one_line_that_does_not_repeat_it(tmp_path):
    # e.g. a password pasted where the URL goes
    p = handoff(
        "token", "create", "--user", "x", "--role", "analyst",
        "--database-url", "SuperSecretPw123", "--home", str(tmp_path / "h"), runtime_dir=tmp_path,
    )  # fmt: skip
    assert p.returncode != 0
    assert p.stderr.strip() == (
        "The database URL is not a URL: use sqlite:///PATH or "
        "postgresql://USER@HOST/DATABASE (--database-url, c.HandoffAgent.database_url)."
    )
    assert "SuperSecretPw123" not in p.stdout + p.stderr
    # and a URL of a database Handoff does not run on is the same one line, not a traceback
    p = handoff(
        "token", "create", "--user", "x", "--role", "analyst",
        "--database-url", "mysql://u@h/db", "--home", str(tmp_path / "h"), runtime_dir=tmp_path,
    )  # fmt: skip
    assert (p.returncode, p.stderr.strip()) == (
        2,
        "Unsupported database URL mysql://u@h/db: use sqlite:///PATH or postgresql://…",
    )


def test_serve_given_a_password_on_the_command_line_warns_without_showing_it(tmp_path):
    """``ps`` shows every process's arguments to every local user: serve says so in one log
    line, before it connects (the database here answers nobody), and names the variable to
    use; the password is in none of its output. Without a password, no warning."""
    said = "--database-url holds a password, visible to every user of this machine in the "
    for url, warned in (
        ("postgresql://handoff:Pw-in-argv-42@127.0.0.1:1/handoff", True),
        ("postgresql://handoff@127.0.0.1:1/handoff", False),
    ):
        p = handoff(
            "serve", "--role", "central", "--home", str(tmp_path / "h"), "--database-url", url,
            runtime_dir=tmp_path,
        )  # fmt: skip
        out = p.stdout + p.stderr
        assert p.returncode == 1, out  # nothing listens on port 1
        assert (said in out) == warned, out
        assert "Pw-in-argv-42" not in out
        if warned:
            (line,) = [x for x in out.splitlines() if said in x]
            assert line.endswith(
                "process list (ps): set HANDOFF_DATABASE_URL instead (the agent reads it and "
                "drops it from its environment at start)."
            )


def test_token_revoke_without_a_user_is_refused(tmp_path):
    from handoff_agent.store.metadata import MetadataStore

    (tmp_path / "h").mkdir()
    MetadataStore.for_home(tmp_path / "h").close()
    p = handoff("token", "revoke", "--home", str(tmp_path / "h"), runtime_dir=tmp_path)
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert p.stderr.splitlines()[0] == "Whose tokens? token revoke needs --user.", p.stderr


def test_tokens_are_listed_without_their_secret_and_one_can_be_revoked(tmp_path):
    """IT lists the tokens in force (never the tokens themselves) and revokes one of a
    user's two (a lost laptop), keeping the other."""
    from handoff_agent.store.metadata import MetadataStore

    home = tmp_path / "h"
    home.mkdir()
    MetadataStore.for_home(home).close()

    def token(*args):
        return handoff("token", *args, "--home", str(home), runtime_dir=tmp_path)

    laptop = token("create", "--user", "eve", "--role", "reviewer").stdout.strip()
    desktop = token("create", "--user", "eve", "--role", "reviewer").stdout.strip()
    token("create", "--user", "bob", "--role", "admin")
    listed = token("list").stdout.splitlines()
    assert [line.split()[1:3] for line in listed] == [
        ["bob", "admin"],
        ["eve", "reviewer"],
        ["eve", "reviewer"],
    ]
    assert laptop not in "".join(listed) and desktop not in "".join(listed)
    laptop_id = hashlib.sha256(laptop.encode()).hexdigest()[:8]
    assert laptop_id in {line.split()[0] for line in listed}
    out = token("revoke", "--user", "eve", "--id", laptop_id)
    assert (out.returncode, out.stdout) == (0, "Revoked 1 token(s) of eve.\n"), out.stderr
    assert [line.split()[1] for line in token("list").stdout.splitlines()] == ["bob", "eve"]
    bad = token("revoke", "--user", "eve", "--id", "zz")
    assert bad.returncode == 2 and "is not a token id" in bad.stderr, bad.stderr
    # A name counts case-insensitively, as at sign-off: `--user EVE` is eve
    out = token("revoke", "--user", "EVE")
    assert (out.returncode, out.stdout) == (0, "Revoked 1 token(s) of EVE.\n"), out.stderr
    # and revoking what is not in force says so, never "Revoked 0" taken for done
    again = token("revoke", "--user", "eve")
    assert (again.returncode, again.stdout) == (2, ""), again
    assert again.stderr.splitlines()[0] == "No token of eve is in force; nothing was revoked."


def test_a_url_that_is_no_handoff_agent_is_one_line(tmp_path):
    """--url at another web server (a typo, a proxy's login page): said, never a traceback."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 404 if "deployment" in self.path else 200
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>Sign in</body></html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**os.environ, "HANDOFF_TOKEN": "t" * 43, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    try:
        for args, code in ((["reviews"], ""), (["deployment", "churn"], " (HTTP 404 Not Found)")):
            p = handoff_cli(env, *args, "--url", url)
            assert p.returncode == 1, p.stdout + p.stderr
            assert p.stderr.strip() == (
                f"{url} does not answer as a Handoff agent does: check --url.{code}"
            ), p.stderr
    finally:
        server.shutdown()


def test_a_damaged_registry_or_a_home_that_is_a_file_is_one_line(tmp_path):
    from handoff_agent.store.metadata import MetadataStore

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "registry.db").write_bytes(b"not a database, " * 512)
    for args in (["fsck"], ["audit", "verify"]):
        p = handoff(*args, "--home", str(damaged), runtime_dir=tmp_path)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.strip() == (
            "The database cannot be read (file is not a database). Nothing was changed: "
            "restore the home from a backup (`jupyter handoff backup --verify DIR`, then "
            "`restore DIR --force`)."
        ), p.stderr

    good = tmp_path / "good"
    good.mkdir()
    MetadataStore.for_home(good).close()
    made = handoff("backup", str(tmp_path / "b"), "--home", str(good), runtime_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    p = handoff("restore", str(tmp_path / "b"), "--home", str(afile), runtime_dir=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == f"restore: --home {afile} is a file, not a directory."


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path):
    """`jupyter handoff deployment --json | head`: the pipe closes before the answer is
    written; the command ends quietly (exit 141, as a shell tool killed by SIGPIPE)."""
    from handoff_agent.store.metadata import MetadataStore

    MetadataStore.for_home(tmp_path).close()
    p = subprocess.Popen(
        [sys.executable, "-m", "handoff_agent", "audit", "verify", "--home", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.close()  # the reader is gone before a byte is written
    assert (p.stderr.read(), p.wait(timeout=60)) == ("", 141)


def test_a_relative_home_works_for_every_command_that_reads_stores(tmp_path):
    """`--home central` typed from the directory that holds it (it was 'relative path can't
    be expressed as a file URI' for fsck and backup)."""
    from handoff_agent.store.metadata import MetadataStore

    (tmp_path / "central").mkdir()
    MetadataStore.for_home(tmp_path / "central").close()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    for args in (["fsck"], ["audit", "verify"], ["backup", "bk"]):
        out = handoff_cli(env, *args, "--home", "central", cwd=tmp_path)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    assert (tmp_path / "bk" / "manifest.json").is_file()
