"""The store's schema, one numbered migration at a time, for SQLite and PostgreSQL.

Each migration moves the schema one version up and is applied once, in order, at start
(``apply_migrations``); the applied versions are kept in ``schema_migrations``. A version
means the same tables and columns on both backends: each step is written once per
backend, side by side, where the two SQL dialects differ:

- PostgreSQL keeps the order rows were stored in a column of their own (``events.seq``,
  ``purchase_lines.line``) where SQLite has its implicit ``rowid``;
- times are BIGINT (unix seconds), reals DOUBLE PRECISION, bytes BYTEA, flags BOOLEAN;
- ids compare and sort byte by byte on both (SQLite's BINARY, PostgreSQL's "C"
  collation), so lists come back in the same order from either, whatever the
  database's locale.

A later migration is added to both at once; ``tests/store`` checks that the two
backends end with the same tables and columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nbo.core.erased import ERASED_KEY, id_hash
from nbo.core.errors import ConfigError
from nbo.core.pseudonyms import new_key


class _Executes(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...


Dialect = Literal["sqlite", "postgres"]


@dataclass(frozen=True)
class Migration:
    """One version's step: its SQL per dialect, then ``rows`` (when given), for what SQL
    alone cannot do (a keyed hash), run in the same transaction with the dialect."""

    sqlite: str
    postgres: str
    rows: Callable[[_Executes, Dialect], None] | None = None


# A parameter as each dialect writes it.
_PARAMETER = {"sqlite": "?", "postgres": "%s"}


def _hash_erased_ids(db: _Executes, dialect: Dialect) -> None:
    """Migration 9's rows: make the erased list's key (random, 256 bits, kept in
    ``deployment_keys`` beside the log pseudonym key but not it), put the keyed hash of
    each erased id in ``erased`` with its time, and drop the old table of ids in clear,
    so no erased id is left in the store (SQLite's secure_delete zeroes its pages)."""
    mark = _PARAMETER[dialect]
    db.execute(
        "INSERT INTO deployment_keys (name, value, created_at) "
        f"VALUES ({mark}, {mark}, {mark}) ON CONFLICT (name) DO NOTHING",
        (ERASED_KEY, new_key(), int(time.time())),
    )
    row = db.execute(
        f"SELECT value FROM deployment_keys WHERE name = {mark}", (ERASED_KEY,)
    ).fetchone()
    key = bytes(row[0])
    for customer_id, erased_at in db.execute(
        "SELECT customer_id, erased_at FROM erased_clear"
    ).fetchall():
        db.execute(
            f"INSERT INTO erased (id_hash, erased_at) VALUES ({mark}, {mark})",
            (id_hash(key, customer_id), erased_at),
        )
    db.execute("DROP TABLE erased_clear")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        sqlite="""
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
        postgres="""
        CREATE TABLE events (
            event_id    TEXT COLLATE "C" PRIMARY KEY,
            type        TEXT NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL,
            occurred_at BIGINT NOT NULL,
            received_at BIGINT NOT NULL,
            item_id     TEXT COLLATE "C",
            channel     TEXT,
            request_id  TEXT COLLATE "C",
            revenue     DOUBLE PRECISION,
            payload     TEXT NOT NULL,
            seq         BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX events_by_customer ON events (customer_id, type, occurred_at);
        CREATE TABLE purchase_lines (
            event_id    TEXT COLLATE "C" NOT NULL
                        REFERENCES events (event_id) ON DELETE CASCADE,
            customer_id TEXT COLLATE "C" NOT NULL,
            item_id     TEXT COLLATE "C" NOT NULL,
            quantity    DOUBLE PRECISION NOT NULL,
            price       DOUBLE PRECISION,
            order_id    TEXT COLLATE "C",
            occurred_at BIGINT NOT NULL,
            line        BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX purchase_lines_by_customer
            ON purchase_lines (customer_id, occurred_at, line);
        """,
    ),
    # 2: consent and erasure. The erased list holds the id and the time, nothing else
    # (until 9, which keeps a keyed hash of the id instead).
    # The index on purchase_lines.event_id keeps the ON DELETE CASCADE of an erasure from
    # scanning every purchase line once per deleted event.
    Migration(
        sqlite="""
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
        postgres="""
        CREATE TABLE consent (
            customer_id     TEXT COLLATE "C" PRIMARY KEY,
            personalization BOOLEAN NOT NULL,
            channels        TEXT NOT NULL, /* JSON object, channel -> bool */
            updated_at      BIGINT NOT NULL
        );
        CREATE TABLE erased (
            customer_id TEXT COLLATE "C" PRIMARY KEY,
            erased_at   BIGINT NOT NULL
        );
        CREATE INDEX purchase_lines_by_event ON purchase_lines (event_id);
        """,
    ),
    # 3: the experiment and variant an offer event belongs to (A/B tests of models).
    Migration(
        sqlite="""
        ALTER TABLE events ADD COLUMN experiment TEXT;
        ALTER TABLE events ADD COLUMN variant TEXT;
        CREATE INDEX events_by_experiment ON events (experiment, type);
        """,
        postgres="""
        ALTER TABLE events ADD COLUMN experiment TEXT COLLATE "C";
        ALTER TABLE events ADD COLUMN variant TEXT COLLATE "C";
        CREATE INDEX events_by_experiment ON events (experiment, type);
        """,
    ),
    # 4: the campaign files ``nbo batch`` wrote and still manages, so an erasure can reach
    # them (absolute paths; ``rows`` as last written or rewritten).
    Migration(
        sqlite="""
        CREATE TABLE batch_outputs (
            path       TEXT PRIMARY KEY,
            written_at INTEGER NOT NULL,
            run_id     TEXT NOT NULL,
            rows       INTEGER NOT NULL,
            format     TEXT NOT NULL
        );
        """,
        postgres="""
        CREATE TABLE batch_outputs (
            path       TEXT COLLATE "C" PRIMARY KEY,
            written_at BIGINT NOT NULL,
            run_id     TEXT NOT NULL,
            rows       BIGINT NOT NULL,
            format     TEXT NOT NULL
        );
        """,
    ),
    # 5: the deployment's keys kept with its data: the key of the customer pseudonyms in
    # logs (``nbo.core.pseudonyms``), made once, so restarts and replicas sharing the store
    # agree.
    Migration(
        sqlite="""
        CREATE TABLE deployment_keys (
            name       TEXT PRIMARY KEY,
            value      BLOB NOT NULL,
            created_at INTEGER NOT NULL
        );
        """,
        postgres="""
        CREATE TABLE deployment_keys (
            name       TEXT COLLATE "C" PRIMARY KEY,
            value      BYTEA NOT NULL,
            created_at BIGINT NOT NULL
        );
        """,
    ),
    # 6: the campaigns being delivered now (``nbo batch --record``), until their file is
    # in place: a run whose process died (SIGKILL, a lost machine) is found by the next
    # ``nbo batch``, which takes its impressions back (``nbo.campaigns.recovery``).
    Migration(
        sqlite="""
        CREATE TABLE delivering_runs (
            run_id     TEXT PRIMARY KEY,
            started_at INTEGER NOT NULL,
            process    TEXT NOT NULL,
            partial    TEXT NOT NULL
        );
        """,
        postgres="""
        CREATE TABLE delivering_runs (
            run_id     TEXT COLLATE "C" PRIMARY KEY,
            started_at BIGINT NOT NULL,
            process    TEXT NOT NULL,
            partial    TEXT NOT NULL
        );
        """,
    ),
    # 7: when each run being delivered was last heard from (a heartbeat every
    # ``nbo.campaigns.recovery.HEARTBEAT_S``): a run silent for long is taken for dead by
    # the next ``nbo batch`` on any machine, not only its own (a container's host name
    # changes from one run to the next).
    Migration(
        sqlite="""
        ALTER TABLE delivering_runs ADD COLUMN heard_at INTEGER NOT NULL DEFAULT 0;
        UPDATE delivering_runs SET heard_at = started_at;
        """,
        postgres="""
        ALTER TABLE delivering_runs ADD COLUMN heard_at BIGINT NOT NULL DEFAULT 0;
        UPDATE delivering_runs SET heard_at = started_at;
        """,
    ),
    # 8: consent history and retention. Every consent change is appended to
    # ``consent_history`` (when, from where: the API or the command line) beside the
    # record in force (``consent``), so nbo can show when consent was given or withdrawn
    # (GDPR Art. 7(1)); the records already there start it, as "migrated" (their last
    # change, its source unknown). The index on (type, occurred_at) lets a retention purge
    # (``nbo store purge``) take the oldest events of a type batch by batch, without a
    # scan of the whole table per batch.
    Migration(
        sqlite="""
        CREATE TABLE consent_history (
            id              INTEGER PRIMARY KEY,
            customer_id     TEXT NOT NULL,
            personalization INTEGER NOT NULL,
            channels        TEXT NOT NULL, /* JSON object, channel -> bool: the record after */
            changed_at      INTEGER NOT NULL,
            source          TEXT NOT NULL /* api, cli, migrated */
        );
        CREATE INDEX consent_history_by_customer ON consent_history (customer_id, id);
        CREATE INDEX consent_history_by_time ON consent_history (changed_at);
        INSERT INTO consent_history (customer_id, personalization, channels, changed_at, source)
            SELECT customer_id, personalization, channels, updated_at, 'migrated' FROM consent
            ORDER BY customer_id;
        CREATE INDEX events_by_type_time ON events (type, occurred_at);
        """,
        postgres="""
        CREATE TABLE consent_history (
            id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            customer_id     TEXT COLLATE "C" NOT NULL,
            personalization BOOLEAN NOT NULL,
            channels        TEXT NOT NULL, /* JSON object, channel -> bool: the record after */
            changed_at      BIGINT NOT NULL,
            source          TEXT NOT NULL /* api, cli, migrated */
        );
        CREATE INDEX consent_history_by_customer ON consent_history (customer_id, id);
        CREATE INDEX consent_history_by_time ON consent_history (changed_at);
        INSERT INTO consent_history (customer_id, personalization, channels, changed_at, source)
            SELECT customer_id, personalization, channels, updated_at, 'migrated' FROM consent
            ORDER BY customer_id;
        CREATE INDEX events_by_type_time ON events (type, occurred_at);
        """,
    ),
    # 9: the erased list keeps a keyed hash of each erased id, not the id
    # (``nbo.core.erased``): the store, which also holds the log pseudonym key, could
    # otherwise pick an erased customer's log lines out. ``_hash_erased_ids`` makes the
    # list's key, hashes the rows there and drops the table of ids in clear.
    Migration(
        sqlite="""
        ALTER TABLE erased RENAME TO erased_clear;
        CREATE TABLE erased (
            id_hash   BLOB PRIMARY KEY, /* HMAC-SHA256 of the id, key erased_ids */
            erased_at INTEGER NOT NULL
        );
        """,
        postgres="""
        ALTER TABLE erased RENAME TO erased_clear;
        ALTER INDEX erased_pkey RENAME TO erased_clear_pkey;
        CREATE TABLE erased (
            id_hash   BYTEA PRIMARY KEY, /* HMAC-SHA256 of the id, key erased_ids */
            erased_at BIGINT NOT NULL
        );
        """,
        rows=_hash_erased_ids,
    ),
    # 10: what each campaign file is: the channel it went out on (a consent withdrawn for
    # that channel takes the customer out of it), whether its run was delivered
    # (``--record``), and how many of its customers were recorded and frequency-capped: a
    # delivered run whose every customer was capped recorded nothing, and was told from
    # a preview by nothing else. Null on files registered before (not known).
    Migration(
        sqlite="""
        ALTER TABLE batch_outputs ADD COLUMN channel TEXT;
        ALTER TABLE batch_outputs ADD COLUMN delivered INTEGER;
        ALTER TABLE batch_outputs ADD COLUMN recorded_customers INTEGER;
        ALTER TABLE batch_outputs ADD COLUMN capped_customers INTEGER;
        """,
        postgres="""
        ALTER TABLE batch_outputs ADD COLUMN channel TEXT;
        ALTER TABLE batch_outputs ADD COLUMN delivered BOOLEAN;
        ALTER TABLE batch_outputs ADD COLUMN recorded_customers BIGINT;
        ALTER TABLE batch_outputs ADD COLUMN capped_customers BIGINT;
        """,
    ),
)


log = logging.getLogger(__name__)

# The table of applied versions.
_VERSIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
}


def apply_migrations(db: _Executes, dialect: Dialect, where: str) -> int:
    """Bring the schema of ``db`` to the last migration, inside the caller's transaction
    (which must keep other processes from migrating at the same time); refuse a store
    whose schema is newer than this nbo knows. Answers the version."""
    db.execute(_VERSIONS_TABLE[dialect])
    row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    current = int(row[0])
    if current > len(MIGRATIONS):
        raise ConfigError(
            f"store {where}: schema version {current} is newer than this nbo "
            f"understands ({len(MIGRATIONS)}); upgrade nbo"
        )
    latest = len(MIGRATIONS)
    if current == latest:
        log.info("schema of store %s: version %d, up to date", where, current)
        return latest
    # Said before and after each step: a migration holds the store (and, on PostgreSQL,
    # the other replicas starting) while it runs, which on a large store may be long. A
    # new store's schema, made at once, is one line.
    if current:
        log.info("schema of store %s: version %d, migrating to %d", where, current, latest)
    mark = _PARAMETER[dialect]
    made = time.perf_counter()
    for version in range(current + 1, latest + 1):
        started = time.perf_counter()
        step = MIGRATIONS[version - 1]
        for statement in getattr(step, dialect).split(";"):
            if statement.strip():
                db.execute(statement)
        if step.rows is not None:
            step.rows(db, dialect)
        db.execute(
            f"INSERT INTO schema_migrations (version, applied_at) VALUES ({mark}, {mark})",
            (version, int(time.time())),
        )
        if current:
            took_ms = (time.perf_counter() - started) * 1000
            log.info("schema of store %s: migration %d applied in %.0f ms", where, version, took_ms)
    if not current:
        took_ms = (time.perf_counter() - made) * 1000
        log.info("schema of store %s: made at version %d in %.0f ms", where, latest, took_ms)
    return latest
