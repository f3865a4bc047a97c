"""The PostgreSQL store: one database server shared by every replica of the service and
every campaign (``NBO_STORE_URL=postgresql://USER:PASSWORD@HOST:PORT/DATABASE``).

psycopg 3, with a pool of connections per process (psycopg_pool) in autocommit mode: a
read is one statement and one round trip, seeing the last commit of any replica; writes
run in explicit transactions, durable when answered (the server's default
``synchronous_commit``). Migrations run at start under an advisory lock, so replicas
starting together migrate once.

A customer's lock (``deliver``, ``set_consent``, ``erase``) is a transaction-level
advisory lock on a 64-bit hash of the id, taken in one order (sorted keys) so two
transactions locking overlapping customers never deadlock; a hash shared by two ids
only makes them wait for each other.

Erasure deletes the rows in one transaction as on SQLite, but PostgreSQL keeps the old
row versions in the table files until VACUUM reuses the space, and in its write-ahead
log until the log is recycled: it has no secure_delete. docs/operations.md says what an
operator does about that.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from nbo.core.errors import StoreUrlError
from nbo.offers.state import PostedPurchase
from nbo.store.base import StoreUnavailable
from nbo.store.migrations import apply_migrations
from nbo.store.sql import PSEUDONYM_KEY, Database, SQLStore

log = logging.getLogger(__name__)

# Connections per process: the offers route reads on the event loop (one at a time),
# writes run in the thread pool. Replicas x processes x this must stay under the
# server's max_connections (100 by default).
POOL_SIZE = 8
CONNECT_SECONDS = 10
# How long a call waits for one of the pool's connections (psycopg_pool's default is 30 s).
# Reads wait on a worker's event loop: a long wait there stalls every call of the worker,
# health checks included, and gunicorn kills a worker it has not heard from.
POOL_WAIT_SECONDS = 3.0
# After the server was found unreachable, calls answer StoreUnavailable at once for this
# long (the 503's Retry-After) instead of each waiting on the pool: a worker stays
# responsive through an outage, and tries the server again once per period. The period
# doubles while the server stays away (each try may wait POOL_WAIT_SECONDS on the
# pool), up to DOWN_MAX_SECONDS.
DOWN_SECONDS = 1.0
DOWN_MAX_SECONDS = 8.0
# While a store waits for a server it cannot reach at its start (``wait_seconds``), it
# tries again this often.
STARTUP_RETRY_SECONDS = 2.0


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    url = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


def customer_lock(customer_id: str) -> int:
    """The advisory lock key of a customer: the same in every process (Python's hash()
    is not)."""
    digest = hashlib.blake2b(customer_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Held while the schema is migrated, so replicas starting together migrate once.
MIGRATION_LOCK = customer_lock("nbo: schema migrations")


@lru_cache(maxsize=256)
def _with_psycopg_marks(sql: str) -> str:
    return sql.replace("?", "%s")


def _reason(exc: BaseException) -> str:
    """An error's first line for a one-line message (libpq's run to several), or its
    type when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_url(url: str) -> None:
    """StoreUrlError when libpq cannot parse ``url``; no connection is made."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        reason = _reason(exc)
        raise StoreUrlError(f"{redacted(url)} is not valid ({reason})") from None


def _connect(url: str, wait_seconds: float = 0.0) -> psycopg.Connection[Any]:
    """A connection, or StoreUrlError with the server's reason. ``wait_seconds``: how long
    to keep trying while the server cannot be reached at all or is starting up (a worker
    started during an outage, or beside a database still starting); a server that
    answers and refuses (a password, a database that does not exist) is not waited for."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS)
        except psycopg.Error as exc:
            reason = _reason(exc)
            away = isinstance(exc, psycopg.OperationalError) and exc.sqlstate in (
                None,
                "57P03",  # cannot_connect_now: starting up, shutting down
            )
            if not away or time.monotonic() >= deadline:
                raise StoreUrlError(f"cannot connect to {redacted(url)} ({reason})") from None
            log.warning(
                "store %s not reachable (%s): trying again for %.0f s",
                redacted(url),
                reason,
                deadline - time.monotonic(),
            )
            time.sleep(min(STARTUP_RETRY_SECONDS, max(deadline - time.monotonic(), 0.0)))


class PostgresStore(SQLStore):
    """PostgreSQL: a pool of autocommit connections; see the module docstring."""

    _STORED_ORDER = "seq"

    def __init__(self, url: str, pool_size: int = POOL_SIZE, wait_seconds: float = 0.0) -> None:
        self.where = redacted(url)
        # The first connection migrates and proves the URL, with the driver's own
        # message when it cannot (a pool would only time out).
        with _connect(url, wait_seconds) as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self.schema_version = apply_migrations(db, "postgres", self.where)
        self._url, self._pool_size = url, pool_size
        self._pool = self._open_pool()
        # Until when (time.monotonic) the server counts as unreachable, why, and how
        # many tries in a row found it so.
        self._down_until = 0.0
        self._down_reason = ""
        self._failures = 0

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_SECONDS},
            name="nbo-store",
            timeout=POOL_WAIT_SECONDS,
            open=False,
        )
        pool.open(wait=True, timeout=CONNECT_SECONDS)
        return pool

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The pool closed (its threads joined, its connections closed) while the block
        runs, and a new one opened after: a pool cannot be opened again once closed, and
        a process must not fork while its threads run (``nbo batch`` forks its workers
        here; each opens a store of its own)."""
        self._pool.close()
        try:
            yield
        finally:
            self._pool = self._open_pool()

    def _q(self, sql: str) -> str:
        return _with_psycopg_marks(sql)

    def _json_text(self, column: str, field: str) -> str:
        return f"({column}::json ->> '{field}')"

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        with self._unavailable(), self._pool.connection() as db:
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        with self._unavailable(), self._pool.connection() as db, db.transaction():
            yield db

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A lost server or connection as ``StoreUnavailable``. Once lost, calls answer
        so at once for ``DOWN_SECONDS``, doubling while it stays lost (no wait on the
        pool), and the pool's idle connections are checked: those the server dropped (a
        restart) are replaced rather than handed to the next calls one by one."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"the store is unavailable ({self._down_reason})")
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            reason = _reason(exc)
            log.warning("store %s unavailable: %s", self.where, reason)
            self._down_reason = reason
            down = min(DOWN_SECONDS * 2**self._failures, DOWN_MAX_SECONDS)
            self._failures += 1
            self._down_until = time.monotonic() + down
            # In a thread: a check on a server that no longer answers may wait on the
            # network, and this may be a worker's event loop.
            threading.Thread(target=self._check_pool, name="nbo-store-check", daemon=True).start()
            raise StoreUnavailable(f"the store is unavailable ({reason})") from None
        else:
            self._failures = 0

    def _check_pool(self) -> None:
        with suppress(Exception):  # a pool closed meanwhile, a server still away
            self._pool.check()

    def _lock_customers(self, db: Database, customer_ids: Sequence[str]) -> None:
        keys = sorted({customer_lock(c) for c in customer_ids})
        if len(keys) == 1:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (keys[0],))
        elif keys:
            # unnest hands the keys over in the array's order: always ascending.
            db.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (keys,))

    def _id_lists(self, customer_ids: Sequence[str]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        if customer_ids:
            yield "= ANY(%s)", (list(dict.fromkeys(customer_ids)),)

    def purchases_of(
        self, customer_id: str, since: int | None = None, limit: int | None = None
    ) -> list[PostedPurchase]:
        """A customer's posted purchase lines, oldest first (``since``: unix seconds);
        ``limit``: only the most recent that many (the index is walked from the newest)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT item_id, quantity, occurred_at, order_id, event_id, price FROM "
                "(SELECT item_id, quantity, occurred_at, order_id, event_id, price, line "
                "FROM purchase_lines WHERE customer_id = %s AND occurred_at >= %s "
                "ORDER BY occurred_at DESC, line DESC LIMIT %s) AS newest "
                "ORDER BY occurred_at, line",
                (customer_id, since if since is not None else -(2**62), limit),
            ).fetchall()
        return [PostedPurchase(*row) for row in rows]

    def _purchases(
        self, db: Database, customer_ids: Sequence[str], limit: int | None
    ) -> dict[str, list[PostedPurchase]]:
        """One query: for each customer, the index (customer_id, occurred_at, line) walked
        backwards from the newest line, ``limit`` lines at most (LIMIT NULL: all)."""
        found: dict[str, list[PostedPurchase]] = {}
        if not customer_ids:
            return found
        rows = db.execute(
            "SELECT w.customer, p.item_id, p.quantity, p.occurred_at, p.order_id, "
            "p.event_id, p.price FROM unnest(%s::text[]) WITH ORDINALITY AS w(customer, n) "
            "CROSS JOIN LATERAL (SELECT item_id, quantity, occurred_at, order_id, event_id, "
            "price, line FROM purchase_lines WHERE customer_id = w.customer "
            "ORDER BY occurred_at DESC, line DESC LIMIT %s) AS p "
            "ORDER BY w.n, p.occurred_at, p.line",
            (list(dict.fromkeys(customer_ids)), limit),
        ).fetchall()
        for row in rows:
            found.setdefault(row[0], []).append(PostedPurchase(*row[1:]))
        return found

    def close(self) -> None:
        self._pool.close()


def read_erased_ids(url: str) -> list[str]:
    """The erased ids, read only (no migration); none when the schema is not there yet."""
    with _connect(url) as db:
        if db.execute("SELECT to_regclass('erased')").fetchone() == (None,):
            return []
        rows = db.execute("SELECT customer_id FROM erased ORDER BY customer_id").fetchall()
    return [row[0] for row in rows]


def read_pseudonym_key(url: str) -> bytes | None:
    """The pseudonym key, read only (no migration); None when there is none yet."""
    with _connect(url) as db:
        if db.execute("SELECT to_regclass('deployment_keys')").fetchone() == (None,):
            return None
        row = db.execute(
            "SELECT value FROM deployment_keys WHERE name = %s", (PSEUDONYM_KEY,)
        ).fetchone()
    return None if row is None else bytes(row[0])
