"""``jupyter handoff inventory`` and ``jupyter handoff dossier``: the risk team's commands.

``inventory`` and ``dossier NAME:N`` ask a running agent (central by default: its runtime
file, or ``--url`` with the token in ``HANDOFF_TOKEN``). ``dossier verify`` needs no agent.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from traitlets import Enum, Unicode

from . import keys, runtime
from ._version import __version__
from .cli_hints import Asked, cli_hint
from .command import Command
from .shell import complain, save_dossier, visible

AGENT_HELP = "Which running agent to ask: central (default) or local."


class Unreachable(Exception):
    pass


def env_token() -> str:
    """HANDOFF_TOKEN, "" when unset. A token is printable ASCII without spaces: a line break
    or a pasted character in it failed the request with a traceback that printed the token.
    One line (a usage mistake, exit 2) that shows none of it."""
    token = os.environ.get("HANDOFF_TOKEN", "")
    if token and not all("!" <= c <= "~" for c in token):
        complain(
            "HANDOFF_TOKEN holds a character no token has (a space, a line break or a "
            "non-ASCII one): set it to the token alone, e.g. "
            "export HANDOFF_TOKEN=\"$(tr -d '[:space:]' < token.txt)\"."
        )
        raise SystemExit(2)
    return token


def _checked_url(url: str) -> str:
    """``url`` when it is an agent's http(s) URL; else one line that says what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        ok = False
    if not ok:
        raise Unreachable(f"--url {url!r} is not an agent's URL, e.g. http://central.example:8890.")
    return url.rstrip("/")


def _target(role: str, url: str) -> tuple[str, str]:
    if url:
        url = _checked_url(url)
        token = env_token()
        if not token:
            raise Unreachable(
                f"No token for {url}: set HANDOFF_TOKEN to one of that agent's tokens "
                "(`jupyter handoff token create --user U --role R` makes one there)."
            )
        return url, token
    info = runtime.read(role)
    if not (info and runtime.healthy(info["url"])):
        central = runtime.read("central") if role == "local" else None
        if central and runtime.healthy(central["url"]):  # on central's machine, --agent left out
            raise Unreachable(
                "No local agent is running here, but a central one is: add --agent central."
            )
        serve = "jupyter handoff serve" + (" --role central" if role == "central" else "")
        raise Unreachable(
            f"No {role} agent is running here. Start one with `{serve}`"
            ", or pass --url URL (the token in HANDOFF_TOKEN)."
        )
    # HANDOFF_TOKEN, when set, speaks for whoever runs the command (a reviewer signs off as
    # themselves); else the runtime file's token, the agent owner's
    return info["url"], env_token() or info["token"]


def _request(
    role: str,
    url: str,
    path: str,
    body: dict | None = None,
    timeout: float = 180,
    method: str | None = None,
) -> tuple[bytes, dict]:
    """GET ``path`` at the agent (POST ``body`` as JSON when given; else ``method``); its
    JSON error, or its silence, becomes one ``Unreachable`` line."""
    base, token = _target(role, url)
    headers = {"Authorization": f"token {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method or ("GET" if body is None else "POST"),
    )
    not_handoff = f"{base} does not answer as a Handoff agent does: check --url."
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if r.headers.get_content_type() == "text/html":  # the API never answers a page
                raise Unreachable(not_handoff)
            return r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read() or b"{}").get("error")
        except (ValueError, AttributeError):
            err = None
        if not isinstance(err, dict) or "message" not in err:  # another server's error page
            raise Unreachable(f"{not_handoff} (HTTP {e.code} {e.reason})") from None
        # a refusal may quote what a model raised or an analyst named: one inert line each;
        # its hint in a shell's words (a command, not a route)
        hint = cli_hint(err.get("code", ""), err.get("hint", ""), Asked(role, url))
        message, hint = visible(err["message"]), visible(hint)
        raise Unreachable(f"{message}\n{hint}".strip()) from None
    except OSError as e:
        raise Unreachable(f"The agent at {base} is not answering ({e}).") from None


def every_page(get: Callable[[str], dict], path: str, key: str) -> list:
    """The ``key`` items of every page of a listing (``get(path)`` answers one page; its
    ``next`` is the ``after`` of the following one)."""
    sep = "&" if "?" in path else "?"
    page = get(path)
    items = list(page[key])
    while "next" in page:
        page = get(f"{path}{sep}after={urllib.parse.quote(str(page['next']))}")
        items += page[key]
    return items


def cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts like a formula (``=``, ``+``,
    ``-``, ``@``, tab, CR), e.g. a column named ``=HYPERLINK(...)``, gets a leading ``'``."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _get(role: str, url: str, path: str) -> tuple[bytes, dict]:
    return _request(role, url, path)


class InventoryApp(Command):
    name = "jupyter-handoff-inventory"
    description = (
        "Every model at central: owner, stage, data, sensitive attributes, fairness and "
        "drift, sign-off, risk tags. Filter with --tag, --stage, --owner, --dataset, --sensitive."
    )
    version = __version__
    fmt = Enum(["table", "json", "csv"], "table", help="Output: table, json or csv.").tag(
        config=True
    )
    tag = Unicode("", help="A risk tag (e.g. uses_sensitive_attributes) or KEY=VALUE.").tag(
        config=True
    )
    stage = Unicode("", help="Only models whose version shown is in this stage.").tag(config=True)
    owner = Unicode("", help="Only this owner's models.").tag(config=True)
    dataset = Unicode("", help="Only models using this data fingerprint (8+ hex digits).").tag(
        config=True
    )
    sensitive = Unicode("", help="Only models checked on this sensitive attribute.").tag(
        config=True
    )
    agent = Enum(["central", "local"], "central", help=AGENT_HELP).tag(config=True)
    url = Unicode("", help="Agent URL instead of the runtime file; token in HANDOFF_TOKEN.").tag(
        config=True
    )
    aliases = {
        "format": "InventoryApp.fmt",
        **{k: f"InventoryApp.{k}" for k in ("tag", "stage", "owner", "dataset", "sensitive")},
        "agent": "InventoryApp.agent",
        "url": "InventoryApp.url",
    }
    flags = {}

    def start(self):
        from .inventory import CSV_COLUMNS, FILTERS, flat

        query = {k: getattr(self, k) for k in FILTERS if getattr(self, k)}
        path = "/api/v1/inventory" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            doc = json.loads(_get(self.agent, self.url, path)[0])
        except Unreachable as e:
            complain(e)
            self.exit(1)
        if self.fmt == "json":
            print(json.dumps(doc, indent=1))
            return
        rows = [flat(r) for r in doc["models"]]
        if self.fmt == "csv":
            w = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows({k: cell(v) for k, v in r.items()} for r in rows)
            return
        cols = ("name", "owner", "version", "stage", "serving", "sensitive_attributes")
        cols += ("fairness", "drift", "alerts", "last_signoff", "risk_tags")
        widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
        print(f"{len(rows)} model(s). {doc['monitoring']['note']}. {doc['data_sources']['note']}.")


USAGE = """Usage: jupyter handoff dossier NAME:N [--out FILE] [--agent central|local] [--url URL]
       jupyter handoff dossier verify FILE [--key PUBKEY]
       jupyter handoff dossier key [--out FILE]
       jupyter handoff dossier key rotate [--home DIR | --agent-role central]"""


class DossierApp(Command):
    name = "jupyter-handoff-dossier"
    description = (
        "dossier NAME:N: save a version's signed dossier (zip). dossier verify FILE: check "
        "its signature, every digest and its audit rows offline. dossier key: central's "
        "public keys (current first, then retired). dossier key rotate: central (stopped) "
        "signs with a new key from its next start; the old one stays published as retired."
    )
    version = __version__
    out = Unicode("", help="Where to write (default: dossier-NAME-N.zip here).").tag(config=True)
    key = Unicode(
        "", help="verify: central's public key, a file (PEM, or the JSON of GET /api/v1/keys)."
    ).tag(config=True)
    agent = Enum(["central", "local"], "central", help=AGENT_HELP).tag(config=True)
    url = Unicode("", help="Agent URL instead of the runtime file; token in HANDOFF_TOKEN.").tag(
        config=True
    )
    aliases = {
        "out": "DossierApp.out",
        "key": "DossierApp.key",
        "agent": "DossierApp.agent",
        "url": "DossierApp.url",
        # dossier key rotate: which central home (and database) holds the key
        "home": "HandoffAgent.home",
        "agent-role": "HandoffAgent.role",
        "database-url": "HandoffAgent.database_url",
    }
    flags = {}

    @property
    def classes(self):
        from .agent import HandoffAgent

        return [type(self), HandoffAgent]

    def start(self):
        args = self.extra_args
        if args[:1] == ["verify"] and len(args) == 2:
            self.exit(self.verify(args[1]))
        if args[:1] == ["key"] and len(args) == 1:
            self.exit(self.save_key())
        if args == ["key", "rotate"]:
            self.exit(self.rotate())
        if len(args) != 1 or ":" not in args[0]:
            complain(USAGE)
            self.exit(2)
        self.exit(self.fetch(args[0]))

    def fetch(self, ref: str) -> int:
        from .names import typed_ref

        try:
            name, number = typed_ref(ref)
        except ValueError as e:
            complain(e)
            return 2
        try:
            data, headers = _get(
                self.agent, self.url, f"/api/v1/models/{name}/versions/{number}/dossier"
            )
        except Unreachable as e:
            complain(e)
            return 1
        disposition = headers.get("Content-Disposition", "")
        default = (
            disposition.partition('filename="')[2].rstrip('"') or f"dossier-{name}-{number}.zip"
        )
        out = Path(self.out or Path(default).name)
        try:
            save_dossier(out, data)
        except ValueError as e:
            complain(e)
            return 2
        print(
            f"Dossier of {name}:{number}: {out} ({len(data)} bytes). Check it with "
            f"`jupyter handoff dossier verify {out} --key central.pub`."
        )
        return 0

    def save_key(self) -> int:
        try:
            doc = json.loads(_get(self.agent, self.url, "/api/v1/keys")[0])
        except Unreachable as e:
            complain(e)
            return 1
        # every key, current first: a dossier signed before a rotation verifies against it
        pem = "".join(k["pem"] for k in doc["keys"])
        if self.out:
            out = Path(self.out)
            # replaces central's keys saved before (after a rotation), never another file
            if out.is_file() and not out.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----"):
                complain(
                    f"{out} exists and is not a public key; nothing was written.",
                    "Give --out a new file name (keys saved there before are replaced).",
                )
                return 2
            out.write_text(pem)
            retired = len(doc["keys"]) - 1
            also = f" (and {retired} retired)" if retired else ""
            print(f"Central's public key {doc['keys'][0]['key_id']}{also}: {self.out}")
        else:
            print(pem, end="")
        return 0

    def rotate(self) -> int:
        """A new key in central's home; the old public key is kept as retired, with an audit
        row. Offline (central stopped), so no replica signs with a key it no longer has."""
        from .cli import _agent_serving, _home, _open_db
        from .shell import os_user

        if self.config.HandoffAgent.get("signing_key_file"):
            return self._refuse_file()
        if not self.config.HandoffAgent.get("home"):  # only central has a key
            self.config.HandoffAgent.role = "central"
        home = _home(self.config)
        path = home / keys.KEY_FILE
        if not path.is_file():
            return self._refuse_file(home)
        running = _agent_serving(home)  # the rule restore --force refuses by
        if running:
            complain(f"{running}, then rotate and start it again, so it signs with the new key.")
            return 2
        try:
            db = _open_db(self.config)
        except SystemExit as e:
            complain(e)
            return 2
        try:
            old = keys.load_or_create(home).public_key()
            current = [k["key_id"] for k in db.signing_key_list() if not k["retired"]]
            if current and keys.key_id(old) not in current:  # it signs with another key
                return self._refuse_file(home, current[0])
            key, new_path = keys.replace_in_home(home)
            new = key.public_key()
            db.signing_key_rotate(
                (keys.key_id(old), keys.public_b64(old)),
                (keys.key_id(new), keys.public_b64(new)),
                os_user(),
            )
            keys.commit_new(new_path)
        finally:
            db.close()
        print(
            f"Central's signing key is now {keys.key_id(new)} (from its next start); "
            f"{keys.key_id(old)} is retired and stays listed at GET /api/v1/keys."
        )
        return 0

    def _refuse_file(self, home: Path | None = None, current: str = "") -> int:
        where = f"{home} holds no {keys.KEY_FILE}: " if home and not current else ""
        if current:
            where = f"central signs with key {current}, not {home / keys.KEY_FILE}'s: "
        complain(
            f"{where}central reads its key from c.HandoffAgent.signing_key_file, so rotating "
            "is the operator's: put a new ed25519 key in that file and restart each replica "
            "(the old key stays listed as retired)."
        )
        return 2

    def verify(self, path: str) -> int:
        from .dossier_verify import Failed, verify

        key_text = None
        if self.key:
            p = Path(self.key)
            if not p.is_file():
                try:
                    keys.from_raw_b64(self.key)
                except keys.BadKey:
                    print(f"FAILED key: no file at {self.key} (nor is it a base64 public key)")
                    return 1
            try:
                key_text = p.read_text() if p.is_file() else self.key
            except OSError as e:
                complain(f"FAILED key: cannot read {self.key} ({e})")
                return 1
        try:
            s = verify(path, key_text)
        except Failed as e:  # it quotes the file, whoever made it: no ESC/CR may forge an OK
            print(f"FAILED {visible(e.what)}: {visible(e.why)}")
            return 1
        pinned = (
            "" if s["pinned"] else " (the key the dossier carries; pass --key to pin central's)"
        )
        print(
            f"OK {s['subject']}: ed25519 signature of key {s['key_id']}{pinned}; {s['files']} "
            f"file digests; {s['audit_entries']} audit entries up to central's head "
            f"{s['head']['seq']}."
        )
        return 0
