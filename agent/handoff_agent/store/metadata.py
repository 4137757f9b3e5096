"""``MetadataStore``: every SQL statement Handoff runs, behind named methods.

One implementation on SQLAlchemy Core for both backends: SQLite (the embedded default, a
file in the home) and PostgreSQL ≥ 15 (psycopg 3) for central replicas sharing a database.
Nothing outside ``handoff_agent.store`` opens a connection or writes SQL.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .access import AccessStore
from .audit import AuditStore
from .central import CentralStore
from .engine import BUSY_TIMEOUT, make_engine, redact, sqlite_url
from .events import EventStore
from .inventory import InventoryStore
from .migrations import MIGRATIONS, upgrade
from .monitor import MonitorStore
from .notices import NoticeStore
from .outbox import OutboxStore
from .retention import RetentionStore
from .serving import ServingStore
from .signing_keys import SigningKeyStore
from .validation import ValidationStore
from .versions import VersionStore
from .watches import WatchStore

log = logging.getLogger(__name__)


class MetadataStore(
    VersionStore,
    AuditStore,
    OutboxStore,
    NoticeStore,
    CentralStore,
    AccessStore,
    EventStore,
    InventoryStore,
    ServingStore,
    WatchStore,
    ValidationStore,
    MonitorStore,
    RetentionStore,
    SigningKeyStore,
):
    """Open with ``MetadataStore.open(url)``; the schema is migrated to head on open."""

    url: str = ""

    @classmethod
    def open(cls, url: str, busy_timeout: float = BUSY_TIMEOUT) -> MetadataStore:
        engine = make_engine(url, busy_timeout)
        applied = upgrade(engine)
        if applied and applied != [n for n, _ in MIGRATIONS]:  # not a fresh database
            log.info("upgraded the database's schema: %s", ", ".join(applied))
        store = cls(engine)
        store.url = redact(url)
        return store

    @classmethod
    def for_home(
        cls, home: Path | str, url: str = "", busy_timeout: float = BUSY_TIMEOUT
    ) -> MetadataStore:
        return cls.open(url or sqlite_url(Path(home) / "registry.db"), busy_timeout)
