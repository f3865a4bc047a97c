"""The event store: what the service learns between trainings, kept on disk.

SQLite by default (WAL mode, synchronous=FULL so an event is on disk before the answer),
with a versioned schema migrated at start. The service talks to the ``Store`` protocol
only, so a server database can replace SQLite later without touching the routes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nbo.errors import ConfigError
from nbo.events import CLICK, CONVERSION, IMPRESSION, Event, PurchaseEvent
from nbo.policies import Contact, ContactHistory

SQLITE_PREFIX = "sqlite:///"

# Each migration moves the schema one version up; applied in order, once, at start.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        event_id    TEXT PRIMARY KEY,
        type        TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        item_id     TEXT,
        channel     TEXT,
        request_id  TEXT,
        revenue     REAL,
        payload     TEXT NOT NULL
    );
    CREATE INDEX events_by_customer ON events (customer_id, type, occurred_at);
    CREATE TABLE purchase_lines (
        event_id    TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
        customer_id TEXT NOT NULL,
        item_id     TEXT NOT NULL,
        quantity    REAL NOT NULL,
        price       REAL,
        order_id    TEXT,
        occurred_at INTEGER NOT NULL
    );
    CREATE INDEX purchase_lines_by_customer ON purchase_lines (customer_id, occurred_at);
    """,
)


@dataclass(frozen=True)
class StoredPurchase:
    """One purchased item from a posted purchase event."""

    item_id: str
    quantity: float
    occurred_at: int
    order_id: str | None
    event_id: str


@dataclass
class AddResult:
    accepted: list[str]
    duplicates: list[str]


class Store(Protocol):
    """What the service needs from a store."""

    schema_version: int

    def add_events(self, events: Sequence[Event]) -> AddResult: ...

    def purchases_of(self, customer_id: str, since: int | None = None) -> list[StoredPurchase]: ...

    def event_count(self) -> int: ...

    def contacts_of(self, customer_id: str, since: int) -> ContactHistory: ...

    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """Open the store a URL names (``sqlite:///path/to/file.db``), creating it if needed."""
    if not url.startswith(SQLITE_PREFIX):
        raise ConfigError(f"setting NBO_STORE_URL: unsupported store '{url}' (use sqlite:///PATH)")
    location = url.removeprefix(SQLITE_PREFIX)
    if not location:
        raise ConfigError("setting NBO_STORE_URL: sqlite:/// needs a file path")
    return SQLiteStore(Path(location))


class SQLiteStore:
    """SQLite: one writer connection behind a lock (serialised, durable commits) and one
    reader connection per thread, so an offers call never waits for a write's fsync (WAL
    lets readers see the last commit while a writer works)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"setting NBO_STORE_URL: cannot open {path} ({exc})") from None
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self.schema_version = self._migrate()

    def _migrate(self) -> int:
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            current = int(row[0])
            if current > len(MIGRATIONS):
                raise ConfigError(
                    f"store {self.path}: schema version {current} is newer than this nbo "
                    f"understands ({len(MIGRATIONS)}); upgrade nbo"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, int(time.time())),
                )
        return len(MIGRATIONS)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_events(self, events: Sequence[Event]) -> AddResult:
        """Store new events in one transaction; an id seen before (in the store or earlier
        in this batch) is a duplicate and is not stored again."""
        result = AddResult(accepted=[], duplicates=[])
        received = int(time.time())
        with self._transaction() as db:
            for event in events:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, type, customer_id, occurred_at, "
                    "received_at, item_id, channel, request_id, revenue, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.event_id,
                        event.type,
                        event.customer_id,
                        event.occurred_at,
                        received,
                        getattr(event, "item_id", None),
                        getattr(event, "channel", None),
                        getattr(event, "request_id", None),
                        getattr(event, "revenue", None),
                        event.model_dump_json(),
                    ),
                ).rowcount
                if not inserted:
                    result.duplicates.append(event.event_id)
                    continue
                result.accepted.append(event.event_id)
                if isinstance(event, PurchaseEvent):
                    db.executemany(
                        "INSERT INTO purchase_lines (event_id, customer_id, item_id, quantity, "
                        "price, order_id, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                event.event_id,
                                event.customer_id,
                                line.item_id,
                                line.quantity,
                                line.price,
                                event.order_id,
                                event.occurred_at,
                            )
                            for line in event.items
                        ],
                    )
        return result

    def _reader(self) -> sqlite3.Connection:
        reader: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if reader is None:
            # Used by this thread only; not tied to it, so close() can close it.
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA query_only=ON")
            self._readers.db = reader
            with self._lock:
                self._all_readers.append(reader)
        return reader

    def purchases_of(self, customer_id: str, since: int | None = None) -> list[StoredPurchase]:
        """A customer's posted purchase lines, oldest first (``since``: unix seconds)."""
        rows = self._reader().execute(
            "SELECT item_id, quantity, occurred_at, order_id, event_id FROM purchase_lines "
            "WHERE customer_id = ? AND occurred_at >= ? ORDER BY occurred_at",
            (customer_id, since if since is not None else -(2**62)),
        )
        return [StoredPurchase(*row) for row in rows.fetchall()]

    def events_of(self, customer_id: str) -> list[dict[str, object]]:
        """Every stored event of a customer, as posted (for export and tests)."""
        rows = self._reader().execute(
            "SELECT payload FROM events WHERE customer_id = ? ORDER BY occurred_at, event_id",
            (customer_id,),
        )
        return [json.loads(row[0]) for row in rows.fetchall()]

    def event_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def contacts_of(self, customer_id: str, since: int) -> ContactHistory:
        """The customer's offer impressions and responses (clicks, conversions) since
        ``since`` (unix seconds): what the contact policies look at."""
        rows = (
            self._reader()
            .execute(
                "SELECT type, item_id, channel, COALESCE(request_id, event_id), occurred_at "
                "FROM events WHERE customer_id = ? AND type IN (?, ?, ?) AND occurred_at > ?",
                (customer_id, IMPRESSION, CLICK, CONVERSION, since),
            )
            .fetchall()
        )
        impressions = [Contact(*row[1:]) for row in rows if row[0] == IMPRESSION]
        responses = [Contact(*row[1:]) for row in rows if row[0] != IMPRESSION]
        return ContactHistory(impressions=impressions, responses=responses)

    def close(self) -> None:
        with self._lock:
            for reader in self._all_readers:
                # Safe at shutdown, the only time close is called: no request runs.
                reader.close()
            self._db.close()
