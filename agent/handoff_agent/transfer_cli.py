"""``jupyter handoff backup|restore|migrate``: a whole home's stores, copied and checked.

The work is in ``store.transfer``; these apps open the stores the agent of a home would use
(``--home``, ``--database-url``, ``--blob-url``, as ``serve`` takes them), print one line of
result, and exit 0 (done and verified), 1 (a verify failed) or 2 (refused: nothing changed).
URLs are printed without their passwords.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets import Bool, Unicode

from ._version import __version__
from .cli import STORE_ALIASES
from .command import Command
from .shell import complain


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


class _StoresApp(Command):
    version = __version__
    flags = {}

    @property
    def classes(self):
        from .agent import HandoffAgent

        return [type(self), HandoffAgent]  # --help describes the store aliases

    def _database_url(self) -> str:
        return self.config.HandoffAgent.get("database_url") or os.environ.get(
            "HANDOFF_DATABASE_URL", ""
        )

    def _home_stores(self, create: bool = False):
        """The home's metadata and blob stores, as its agent opens them."""
        from .cli import _blob_store, _home
        from .store.transfer import TransferError, open_home_metadata

        home, url = _home(self.config), self._database_url()
        # An existing home's registry first, so a wrong --home makes nothing; a new home is
        # made by its blob store, then holds its registry.
        meta = None if create else open_home_metadata(home, url)
        try:
            blobs = _blob_store(self.config)
        except ValueError as e:
            if meta is not None:
                meta.close()
            raise TransferError(str(e)) from None
        return meta or open_home_metadata(home, url, create=True), blobs

    def _run(self, work) -> None:
        """Run ``work()``; a refusal is one line and exit 2, never a traceback."""
        from .store.transfer import TransferError

        try:
            code = work()
        except TransferError as e:
            complain(f"{self.name.removeprefix('jupyter-handoff-')}: {e}")
            self.exit(2)
        except KeyboardInterrupt:
            complain("Interrupted: nothing was committed to the target; run it again to resume.")
            self.exit(130)
        self.exit(code)


class BackupApp(_StoresApp):
    name = "jupyter-handoff-backup"
    description = (
        "backup DEST: write the home's metadata and blobs to a new directory, verified; "
        "backup --verify DEST checks one."
    )
    check = Bool(False, help="Check an existing backup instead of writing one.").tag(config=True)
    aliases = STORE_ALIASES
    flags = {"verify": ({"BackupApp": {"check": True}}, "Check the backup at DEST.")}

    def start(self):
        if len(self.extra_args) != 1:
            complain(
                "Usage: jupyter handoff backup DEST [--home DIR] [--database-url URL]",
                "       jupyter handoff backup --verify DEST",
            )
            self.exit(2)
        dest = self.extra_args[0]
        self._run(lambda: self._verify(dest) if self.check else self._backup(dest))

    def _verify(self, dest: str) -> int:
        from .store.backup import verify_backup
        from .store.transfer import TransferError, one_line

        try:
            manifest, problems = verify_backup(dest)
        except TransferError as e:  # no backup, or one past reading: the verdict all the same
            print(f"backup {dest}: FAILED: {e}")
            return 1
        if problems:
            print(f"backup {dest}: FAILED: {one_line(problems)}")
            return 1
        print(f"backup {dest}: OK ({manifest.summary()})")
        return 0

    def _backup(self, dest: str) -> int:
        from .store.backup import backup, leftovers

        earlier = leftovers(Path(dest))
        meta, blobs = self._home_stores()
        try:
            manifest = backup(meta, blobs, dest, progress=_say)
        finally:
            meta.close()
        print(f"backup {dest}: written and verified ({manifest.summary()})")
        for path in earlier:
            complain(
                f"{path} is left from a backup to {dest} that did not finish (it holds a copy "
                "of the registry, token hashes too): remove it."
            )
        return 0


class RestoreApp(_StoresApp):
    name = "jupyter-handoff-restore"
    description = (
        "restore SRC: copy a backup into the home's stores (--database-url, --blob-url), "
        "then verify them; refuses a target holding data unless --force."
    )
    force = Bool(False, help="Replace whatever the target already holds.").tag(config=True)
    aliases = STORE_ALIASES
    flags = {"force": ({"RestoreApp": {"force": True}}, "Replace what the target holds.")}

    def start(self):
        if len(self.extra_args) != 1:
            complain(
                "Usage: jupyter handoff restore SRC [--home DIR] [--database-url URL] [--force]"
            )
            self.exit(2)
        self._run(lambda: self._restore(self.extra_args[0]))

    def _restore(self, src: str) -> int:
        from .cli import _agent_serving, _home
        from .homes import directory, hold
        from .store.backup import check_database, restore
        from .store.transfer import TransferError, one_line

        # a wrong or damaged SRC is refused before the target is touched (and read once)
        checked = check_database(src)
        try:
            home = directory(_home(self.config))
            # an agent on this home or database would go on from stores replaced under it
            running = _agent_serving(home, self._database_url())
            if running:
                raise TransferError(f"{running}, then restore; nothing was changed.")
            # the home's registry: its agent must not be running, or it would go on from
            # stores replaced under it
            lock = None if self._database_url() else hold(home)
        except ValueError as e:
            raise TransferError(str(e).replace("this one", "the restore")) from None
        try:
            meta, blobs = self._home_stores(create=True)
            try:
                manifest, problems = restore(
                    src, meta, blobs, force=self.force, progress=_say, checked=checked
                )
            finally:
                meta.close()
        finally:
            if lock is not None:
                os.close(lock)
        where = f"{meta.url} + {blobs.url}"
        if problems:
            complain(f"restore into {where}: FAILED verify: {one_line(problems)}")
            return 1
        print(f"restore into {where}: OK ({manifest.summary()})")
        return 0


class MigrateApp(_StoresApp):
    name = "jupyter-handoff-migrate"
    description = (
        "migrate --to postgresql://… --blobs s3://…: copy this home's central to other stores "
        "and verify them there."
    )
    to = Unicode(
        "",
        help="Target database URL, e.g. postgresql://USER@HOST/DB. Leave the password out and "
        "give it through PGPASSWORD or ~/.pgpass to keep it off the command line.",
    ).tag(config=True)
    blobs = Unicode(
        "",
        help="Target blob URL: s3://bucket/prefix or file:///path. Empty: the blobs stay "
        "where they are.",
    ).tag(config=True)
    force = Bool(False, help="Replace whatever the target database already holds.").tag(config=True)
    aliases = {**STORE_ALIASES, "to": "MigrateApp.to", "blobs": "MigrateApp.blobs"}
    flags = {"force": ({"MigrateApp": {"force": True}}, "Replace what the target holds.")}

    def start(self):
        if not self.to or self.extra_args:
            complain(
                "Usage: jupyter handoff migrate --to postgresql://USER@HOST/DB --blobs s3://B/P"
            )
            self.exit(2)
        self._run(self._migrate)

    def _migrate(self) -> int:
        from .cli import _home
        from .store.blobs import open_blob_store
        from .store.engine import redact
        from .store.transfer import TransferError, migrate, one_line, open_metadata

        src_meta, src_blobs = self._home_stores()
        try:
            if redact(self.to) == src_meta.url:
                raise TransferError("--to names the database the home already uses.")
            given = self.config.HandoffAgent
            endpoint = given.get("s3_endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", "")
            try:
                dst_blobs = (
                    open_blob_store(self.blobs, _home(self.config), endpoint)
                    if self.blobs
                    else src_blobs
                )
            except ValueError as e:
                raise TransferError(str(e)) from None
            dst_meta = open_metadata(self.to)
            try:
                manifest, problems = migrate(
                    src_meta, src_blobs, dst_meta, dst_blobs, force=self.force, progress=_say
                )
            finally:
                dst_meta.close()
        finally:
            src_meta.close()
        where = f"{dst_meta.url} + {dst_blobs.url}"
        if problems:
            complain(f"migrate to {where}: FAILED verify: {one_line(problems)}")
            return 1
        print(
            f"migrate to {where}: OK ({manifest.summary()}). Start central with "
            f"--database-url {dst_meta.url} --blob-url {dst_blobs.url}"
        )
        return 0
