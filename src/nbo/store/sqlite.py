"""The event store: what the service learns between trainings, kept on disk.

SQLite by default (WAL mode, synchronous=FULL so an event is on disk before the answer),
with a versioned schema migrated at start. The service talks to the ``Store`` protocol
only, so a server database can replace SQLite later without touching the routes.

Consent and erasure live here too:

- **Consent**: one record per customer, a personalization flag and a flag per channel.
  No record, or a channel the record does not name, means consent (the default for a
  customer who never said otherwise; see ``Consent.allows``).
- **Erasure** (``erase``) deletes everything the store holds on a customer (events, their
  purchase lines, the consent record) in one transaction and keeps only the id and the
  time on the ``erased`` list, which the service applies to every model it loads and the
  trainer applies to its input file.
- **Events after erasure** are accepted and stored like any other: erasure is not a block
  list, and a returning customer's new purchases are theirs to use (offers personalize
  from them as for any customer the model does not know). The id stays on the erased list
  for good: the model row learned before the erasure is never served again, and the
  trainer drops *every* row of an erased id from its input file, since a file cannot be
  trusted to tell old rows from new ones. Erasing again deletes the new events too.
- **Batch outputs**: the campaign files ``nbo batch`` wrote and still manages are
  registered here (``batch_outputs``: paths, not rows), so an erasure can find them and
  take the customer out of them too (``nbo.campaigns.files``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nbo.core.errors import ConfigError
from nbo.core.pseudonyms import new_key
from nbo.core.vocabulary import DAY
from nbo.data.events import CLICK, CONVERSION, EVENT_TYPES, IMPRESSION, Event, PurchaseEvent
from nbo.offers.state import Consent, Contact, ContactHistory, PostedPurchase
from nbo.store.base import (
    AddResult,
    BatchOutput,
    DeliveryCount,
    ErasureReceipt,
    ExperimentLog,
    OfferActivity,
    ResponseCount,
    Store,
    StoredEvent,
    TaggedEvent,
)

SQLITE_PREFIX = "sqlite:///"

_TYPES = {"impression": IMPRESSION, "click": CLICK, "conversion": CONVERSION}
# Impressions per day, channel and what the answer said (kind, source, stage), each
# checked for a later answer of the same customer to the same offer through the
# customer index (customer_id, type, occurred_at).
_ANSWERED = (
    "EXISTS (SELECT 1 FROM events r WHERE r.customer_id = i.customer_id AND r.type = {} "
    "AND r.occurred_at >= i.occurred_at AND r.occurred_at < :until AND r.item_id = i.item_id)"
)
_DELIVERIES = (
    "SELECT i.occurred_at / :day, i.channel, json_extract(i.payload, '$.kind'), "
    "json_extract(i.payload, '$.source'), json_extract(i.payload, '$.stage'), COUNT(*), "
    f"SUM({_ANSWERED.format(':click')}), SUM({_ANSWERED.format(':conversion')}) "
    "FROM events i WHERE i.type = :impression AND i.occurred_at >= :since "
    "AND i.occurred_at < :until GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
)

log = logging.getLogger(__name__)

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
    # 2: consent and erasure. The erased list holds the id and the time, nothing else.
    # The index on purchase_lines.event_id keeps the ON DELETE CASCADE of an erasure from
    # scanning every purchase line once per deleted event.
    """
    CREATE TABLE consent (
        customer_id     TEXT PRIMARY KEY,
        personalization INTEGER NOT NULL,
        channels        TEXT NOT NULL, /* JSON object, channel -> bool */
        updated_at      INTEGER NOT NULL
    );
    CREATE TABLE erased (
        customer_id TEXT PRIMARY KEY,
        erased_at   INTEGER NOT NULL
    );
    CREATE INDEX purchase_lines_by_event ON purchase_lines (event_id);
    """,
    # 3: the experiment and variant an offer event belongs to (A/B tests of models).
    """
    ALTER TABLE events ADD COLUMN experiment TEXT;
    ALTER TABLE events ADD COLUMN variant TEXT;
    CREATE INDEX events_by_experiment ON events (experiment, type);
    """,
    # 4: the campaign files ``nbo batch`` wrote and still manages, so an erasure can reach
    # them (absolute paths; ``rows`` as last written or rewritten).
    """
    CREATE TABLE batch_outputs (
        path       TEXT PRIMARY KEY,
        written_at INTEGER NOT NULL,
        run_id     TEXT NOT NULL,
        rows       INTEGER NOT NULL,
        format     TEXT NOT NULL
    );
    """,
    # 5: the deployment's keys kept with its data: the key of the customer pseudonyms in
    # logs (``nbo.core.pseudonyms``), made once, so restarts and replicas sharing the store
    # agree.
    """
    CREATE TABLE deployment_keys (
        name       TEXT PRIMARY KEY,
        value      BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
)

# The name of the pseudonym key in ``deployment_keys``.
PSEUDONYM_KEY = "log_pseudonyms"


def open_store(url: str) -> Store:
    """Open the store a URL names (``sqlite:///path/to/file.db``), creating it if needed."""
    return SQLiteStore(_sqlite_path(url))


def _sqlite_path(url: str) -> Path:
    if not url.startswith(SQLITE_PREFIX):
        raise ConfigError(f"setting NBO_STORE_URL: unsupported store '{url}' (use sqlite:///PATH)")
    location = url.removeprefix(SQLITE_PREFIX)
    if not location:
        raise ConfigError("setting NBO_STORE_URL: sqlite:/// needs a file path")
    return Path(location)


def read_erased_ids(url: str) -> list[str]:
    """The erased ids of the store a URL names, for the trainer: read only, no migration,
    and a store file that does not exist (or predates erasure) has nothing erased."""
    path = _sqlite_path(url)
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"store {path}: cannot open ({exc})") from None
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("PRAGMA busy_timeout=5000")
        has_table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'erased'"
        ).fetchone()
        if not has_table:
            return []
        rows = db.execute("SELECT customer_id FROM erased ORDER BY customer_id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"store {path}: cannot read the erased customers ({exc})") from None
    finally:
        db.close()
    return [row[0] for row in rows]


def read_pseudonym_key(url: str) -> bytes | None:
    """The pseudonym key kept in the store a URL names, for ``nbo keys pseudonym``: read
    only, no migration; None when the store does not exist or holds none yet (the
    service makes it at its first start)."""
    path = _sqlite_path(url)
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"store {path}: cannot open ({exc})") from None
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("PRAGMA busy_timeout=5000")
        has_table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deployment_keys'"
        ).fetchone()
        if not has_table:
            return None
        row = db.execute(
            "SELECT value FROM deployment_keys WHERE name = ?", (PSEUDONYM_KEY,)
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"store {path}: cannot read the pseudonym key ({exc})") from None
    finally:
        db.close()
    return None if row is None else bytes(row[0])


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
        # Deleted rows are overwritten with zeros, not left in free pages: an erasure
        # leaves nothing readable in the file.
        self._db.execute("PRAGMA secure_delete=ON")
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
                    "received_at, item_id, channel, request_id, revenue, payload, experiment, "
                    "variant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        getattr(event, "experiment", None),
                        getattr(event, "variant", None),
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

    def purchases_of(
        self, customer_id: str, since: int | None = None, limit: int | None = None
    ) -> list[PostedPurchase]:
        """A customer's posted purchase lines, oldest first (``since``: unix seconds);
        ``limit``: only the most recent that many, so what a request costs is bounded
        whatever a client posted (the index is walked from the newest line)."""
        rows = self._reader().execute(
            "SELECT * FROM (SELECT item_id, quantity, occurred_at, order_id, event_id, price, "
            "rowid AS line FROM purchase_lines WHERE customer_id = ? AND occurred_at >= ? "
            "ORDER BY occurred_at DESC, rowid DESC LIMIT ?) ORDER BY occurred_at, line",
            (customer_id, since if since is not None else -(2**62), -1 if limit is None else limit),
        )
        return [PostedPurchase(*row[:-1]) for row in rows.fetchall()]

    def purchases_of_many(
        self, customer_ids: Sequence[str], limit: int | None = None
    ) -> dict[str, list[PostedPurchase]]:
        """``purchases_of`` many customers, in a few queries: those with none are absent;
        ``limit`` applies to each customer, at a cost that grows with it, not with what a
        customer posted (``_NEWEST_LINES``)."""
        found: dict[str, list[PostedPurchase]] = {}
        for part in _parts_of(customer_ids):
            if limit is None:
                rows = self._reader().execute(
                    "SELECT customer_id, item_id, quantity, occurred_at, order_id, event_id, "
                    f"price FROM purchase_lines WHERE customer_id IN ({_marks(part)}) "
                    "ORDER BY occurred_at, rowid",
                    part,
                )
            else:
                newest = _NEWEST_LINES.format(customers=_rows(part))
                rows = self._reader().execute(newest, (*part, limit, limit))
            for row in rows.fetchall():
                found.setdefault(row[0], []).append(PostedPurchase(*row[1:]))
        return found

    def events_of(self, customer_id: str) -> list[dict[str, object]]:
        """Every stored event of a customer, as posted (for export and tests)."""
        rows = self._reader().execute(
            "SELECT payload FROM events WHERE customer_id = ? ORDER BY occurred_at, event_id",
            (customer_id,),
        )
        return [json.loads(row[0]) for row in rows.fetchall()]

    def stored_events_of(self, customer_id: str) -> list[StoredEvent]:
        """Every stored event of a customer with the time it was received (the export)."""
        rows = self._reader().execute(
            "SELECT event_id, type, occurred_at, received_at, payload FROM events "
            "WHERE customer_id = ? ORDER BY occurred_at, event_id",
            (customer_id,),
        )
        return [
            StoredEvent(event_id, kind, occurred, received, json.loads(payload))
            for event_id, kind, occurred, received, payload in rows.fetchall()
        ]

    def customers_with_purchases(self) -> list[str]:
        """Every customer with a posted purchase, sorted (new customers included)."""
        rows = self._reader().execute(
            "SELECT DISTINCT customer_id FROM purchase_lines ORDER BY customer_id"
        )
        return [row[0] for row in rows.fetchall()]

    def experiment_log(self, experiment: str) -> ExperimentLog:
        """The events of an experiment's report: its tagged events per customer and
        variant, and every conversion of the customers it exposed."""
        db = self._reader()
        tagged = db.execute(
            "SELECT customer_id, variant, type, MIN(occurred_at) FROM events "
            "WHERE experiment = ? GROUP BY customer_id, variant, type",
            (experiment,),
        ).fetchall()
        conversions = db.execute(
            "SELECT customer_id, occurred_at, COALESCE(revenue, 0) FROM events "
            "WHERE type = ? AND customer_id IN (SELECT customer_id FROM events "
            "WHERE experiment = ? AND type = ?)",
            (CONVERSION, experiment, IMPRESSION),
        ).fetchall()
        return ExperimentLog(
            tagged=[TaggedEvent(*row) for row in tagged],
            conversions=[(str(c), int(t), float(r)) for c, t, r in conversions],
        )

    def offer_activity(self, since: int, until: int) -> OfferActivity:
        """Offer events from ``since`` to before ``until`` (unix seconds), counted per day
        (``DeliveryCount``, ``ResponseCount``): a few hundred rows for any number of
        events, so a dashboard never reads the events themselves."""
        db = self._reader()
        deliveries = db.execute(
            _DELIVERIES, {"since": since, "until": until, "day": DAY, **_TYPES}
        ).fetchall()
        responses = db.execute(
            "SELECT occurred_at / :day, type, channel, COUNT(*), SUM(COALESCE(revenue, 0)) "
            "FROM events WHERE type IN (:click, :conversion) AND occurred_at >= :since "
            "AND occurred_at < :until GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            {"since": since, "until": until, "day": DAY, **_TYPES},
        ).fetchall()
        return OfferActivity(
            deliveries=[DeliveryCount(*row) for row in deliveries],
            responses=[
                ResponseCount(day, kind, channel, count, float(revenue))
                for day, kind, channel, count, revenue in responses
            ],
        )

    def event_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def set_consent(
        self, customer_id: str, personalization: bool, channels: dict[str, bool]
    ) -> Consent:
        """Store a customer's consent and answer the stored record.

        ``channels`` names the channels to set; channels it does not name keep their
        stored value (consented when never set), so withdrawing one channel never grants
        another. Channel names are the caller's to check.
        """
        now = int(time.time())
        with self._transaction() as db:
            row = db.execute(
                "SELECT channels FROM consent WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **channels}
            merged = {name: bool(merged[name]) for name in sorted(merged)}
            db.execute(
                "INSERT INTO consent (customer_id, personalization, channels, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET "
                "personalization = excluded.personalization, channels = excluded.channels, "
                "updated_at = excluded.updated_at",
                (customer_id, int(personalization), json.dumps(merged), now),
            )
        return Consent(personalization=bool(personalization), channels=merged, updated_at=now)

    def consent_of(self, customer_id: str) -> Consent | None:
        """The customer's stored consent; None when there is no record, which means
        consent to everything (``DEFAULT_CONSENT``)."""
        return self.consents_of([customer_id]).get(customer_id)

    def consents_of(self, customer_ids: Sequence[str]) -> dict[str, Consent]:
        """``consent_of`` many customers: those without a record are absent."""
        found = {}
        for part in _parts_of(customer_ids):
            rows = self._reader().execute(
                "SELECT customer_id, personalization, channels, updated_at FROM consent "
                f"WHERE customer_id IN ({_marks(part)})",
                part,
            )
            for row in rows.fetchall():
                found[row[0]] = Consent(
                    personalization=bool(row[1]), channels=json.loads(row[2]), updated_at=row[3]
                )
        return found

    def erase(self, customer_id: str) -> ErasureReceipt:
        """Delete everything stored on a customer, in one transaction: their events (and
        so their purchase lines) and their consent record; put the id on the erased list
        (the id and the time only). Idempotent: erasing again answers zeros (or what was
        posted since) with ``already_erased``. Events posted after an erasure are stored
        as usual; see the module docstring."""
        now = int(time.time())
        with self._transaction() as db:
            already = (
                db.execute("SELECT 1 FROM erased WHERE customer_id = ?", (customer_id,)).fetchone()
                is not None
            )
            events = dict.fromkeys(EVENT_TYPES, 0)
            for kind, count in db.execute(
                "SELECT type, COUNT(*) FROM events WHERE customer_id = ? GROUP BY type",
                (customer_id,),
            ):
                events[kind] = int(count)
            lines = int(
                db.execute(
                    "SELECT COUNT(*) FROM purchase_lines WHERE event_id IN "
                    "(SELECT event_id FROM events WHERE customer_id = ?)",
                    (customer_id,),
                ).fetchone()[0]
            )
            # The purchase lines go with their events (ON DELETE CASCADE).
            db.execute("DELETE FROM events WHERE customer_id = ?", (customer_id,))
            consent = db.execute("DELETE FROM consent WHERE customer_id = ?", (customer_id,))
            db.execute(
                "INSERT INTO erased (customer_id, erased_at) VALUES (?, ?) "
                "ON CONFLICT (customer_id) DO UPDATE SET erased_at = excluded.erased_at",
                (customer_id, now),
            )
            consent_records = consent.rowcount
        self._checkpoint()
        return ErasureReceipt(
            customer_id=customer_id,
            erased_at=now,
            events=events,
            purchase_lines=lines,
            consent_records=consent_records,
            already_erased=already,
        )

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the file and truncate it, so the log keeps no
        old copy of erased rows. Best effort, waiting at most a quarter second for readers
        (writers wait behind it): a reader in the middle of a statement can hold it back,
        and the log is overwritten by later commits anyway."""
        with self._lock:
            self._db.execute("PRAGMA busy_timeout=250")
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                # The erasure is committed; only the clean-up of the log is left undone.
                log.warning("store %s: checkpoint after an erasure failed (%s)", self.path, exc)
            finally:
                self._db.execute("PRAGMA busy_timeout=5000")

    def is_erased(self, customer_id: str) -> bool:
        """Whether the id is on the erased list (it stays there for good)."""
        row = (
            self._reader()
            .execute("SELECT 1 FROM erased WHERE customer_id = ?", (customer_id,))
            .fetchone()
        )
        return row is not None

    def erased_ids(self) -> list[str]:
        """Every erased id, sorted."""
        rows = self._reader().execute("SELECT customer_id FROM erased ORDER BY customer_id")
        return [row[0] for row in rows.fetchall()]

    def erased_at(self, customer_id: str) -> int | None:
        """When the id was last erased (unix seconds); None when it never was."""
        row = (
            self._reader()
            .execute("SELECT erased_at FROM erased WHERE customer_id = ?", (customer_id,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def pseudonym_key(self) -> bytes:
        """The key of the customer pseudonyms in logs, made (random, 256 bits) by the
        first caller and the same for every later one, here or in another process on
        this store."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO deployment_keys (name, value, created_at) VALUES (?, ?, ?)",
                (PSEUDONYM_KEY, new_key(), int(time.time())),
            )
            row = db.execute(
                "SELECT value FROM deployment_keys WHERE name = ?", (PSEUDONYM_KEY,)
            ).fetchone()
        return bytes(row[0])

    def register_batch_output(self, output: BatchOutput) -> None:
        """Record a finished campaign file; a file written again at the same path
        replaces its record."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO batch_outputs (path, written_at, run_id, rows, format) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                "written_at = excluded.written_at, run_id = excluded.run_id, "
                "rows = excluded.rows, format = excluded.format",
                (output.path, output.written_at, output.run_id, output.rows, output.format),
            )

    def batch_outputs(self) -> list[BatchOutput]:
        """Every managed campaign file, by path."""
        rows = self._reader().execute(
            "SELECT path, written_at, run_id, rows, format FROM batch_outputs ORDER BY path"
        )
        return [BatchOutput(*row) for row in rows.fetchall()]

    def set_batch_output_rows(self, path: str, rows: int) -> None:
        """The rows a managed file holds after an erasure rewrote it."""
        with self._transaction() as db:
            db.execute("UPDATE batch_outputs SET rows = ? WHERE path = ?", (rows, path))

    def unregister_batch_output(self, path: str) -> None:
        """Stop managing a file (``nbo batch --unmanaged`` wrote over it)."""
        with self._transaction() as db:
            db.execute("DELETE FROM batch_outputs WHERE path = ?", (path,))

    def contacts_of(self, customer_id: str, since: int) -> ContactHistory:
        """The customer's offer impressions and responses (clicks, conversions) since
        ``since`` (unix seconds): what the contact policies look at."""
        return self.contacts_of_many([customer_id], since).get(customer_id, ContactHistory())

    def contacts_of_many(
        self, customer_ids: Sequence[str], since: int
    ) -> dict[str, ContactHistory]:
        """``contacts_of`` many customers: those with no contact since are absent."""
        found: dict[str, ContactHistory] = {}
        for part in _parts_of(customer_ids):
            rows = self._reader().execute(
                "SELECT customer_id, type, item_id, channel, COALESCE(request_id, event_id), "
                f"occurred_at FROM events WHERE customer_id IN ({_marks(part)}) "
                "AND type IN (?, ?, ?) AND occurred_at > ? ORDER BY rowid",
                (*part, IMPRESSION, CLICK, CONVERSION, since),
            )
            for row in rows.fetchall():
                history = found.setdefault(row[0], ContactHistory(impressions=[], responses=[]))
                kind = history.impressions if row[1] == IMPRESSION else history.responses
                kind.append(Contact(*row[2:]))
        return found

    def close(self) -> None:
        with self._lock:
            for reader in self._all_readers:
                # Safe at shutdown, the only time close is called: no request runs.
                reader.close()
            self._db.close()


# The newest ``limit`` purchase lines of each customer, oldest first, at a cost that grows
# with ``limit``, not with what a customer posted: for each customer the first line left
# out (the ``limit``-th newest, counting from 0) is found by walking the index
# (customer_id, occurred_at, then rowid) backwards, and its time bounds an index range of
# the lines after it. The cut is materialized (SQLite 3.35+) so it is looked up once per
# customer, not once per line. A customer with ``limit`` lines or fewer has no cut: all.
_NEWEST_LINES = """
WITH wanted(customer) AS (VALUES {customers}),
cut AS MATERIALIZED (
    SELECT customer,
        (SELECT occurred_at FROM purchase_lines WHERE customer_id = customer
         ORDER BY occurred_at DESC, rowid DESC LIMIT 1 OFFSET ?) AS at,
        (SELECT rowid FROM purchase_lines WHERE customer_id = customer
         ORDER BY occurred_at DESC, rowid DESC LIMIT 1 OFFSET ?) AS line
    FROM wanted
)
SELECT p.customer_id, p.item_id, p.quantity, p.occurred_at, p.order_id, p.event_id, p.price
FROM cut CROSS JOIN purchase_lines AS p
WHERE p.customer_id = cut.customer
    AND p.occurred_at >= COALESCE(cut.at, -4611686018427387904)
    AND (cut.at IS NULL OR p.occurred_at > cut.at OR p.rowid > cut.line)
ORDER BY p.occurred_at, p.rowid
"""

# Ids per query of the bulk reads: well under SQLite's limit of bound parameters.
_IDS_PER_QUERY = 500


def _parts_of(customer_ids: Sequence[str]) -> Iterator[tuple[str, ...]]:
    ids = tuple(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), _IDS_PER_QUERY):
        yield ids[start : start + _IDS_PER_QUERY]


def _marks(part: Sequence[str]) -> str:
    return ", ".join("?" * len(part))


def _rows(part: Sequence[str]) -> str:
    """One-column VALUES rows: ``(?), (?), ...``."""
    return ", ".join("(?)" for _ in part)
