"""The SQLite store: the embedded default, one file (``NBO_STORE_URL=sqlite:///PATH``).

A store that does not exist yet is made only in a folder that exists, or in the default's
folder (``var/`` under the working folder, made if missing): a URL naming a folder that
does not exist is a typo, or a service started from another folder, and a fresh empty
store there would silently forget every consent and erasure of the real one.

WAL mode, synchronous=FULL so an event is on disk before the answer, deleted rows
overwritten (secure_delete) and the write-ahead log truncated after an erasure. Several
processes may share the file (the service and ``nbo batch``, or replicas on one machine):
SQLite's own file locks keep their transactions apart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from nbo.core.erased import ErasedList
from nbo.core.errors import StoreUrlError
from nbo.core.outputs import OWNER_ONLY
from nbo.core.pseudonyms import new_key
from nbo.offers.state import PostedPurchase
from nbo.settings import DEFAULT_STORE_URL
from nbo.store.base import StoreUnavailable
from nbo.store.migrations import MIGRATIONS as STEPS
from nbo.store.migrations import apply_migrations
from nbo.store.sql import PSEUDONYM_KEY, Database, SQLStore, erased_list_of

SQLITE_PREFIX = "sqlite:///"
# SQLite's name of a database held in memory, gone with its connection.
IN_MEMORY = ":memory:"

log = logging.getLogger(__name__)

# The SQLite text of each migration (``nbo.store.migrations``).
MIGRATIONS: tuple[str, ...] = tuple(step.sqlite for step in STEPS)


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///PATH`` URL names."""
    if not url.startswith(SQLITE_PREFIX):
        raise StoreUrlError(f"unsupported store '{url}' (use sqlite:///PATH or postgresql://...)")
    location = url.removeprefix(SQLITE_PREFIX)
    if not location:
        raise StoreUrlError("sqlite:/// needs a file path")
    if location == IN_MEMORY:
        # Each connection would get a database of its own, and everything would be lost
        # at exit: the events, the erased list and the consent records.
        raise StoreUrlError(
            f"{url} keeps nothing (an in-memory database is lost at "
            "exit); name a file, e.g. sqlite:///var/nbo.db"
        )
    return Path(location)


# The default store's folder, the one folder made for a new store.
DEFAULT_FOLDER = Path(DEFAULT_STORE_URL.removeprefix(SQLITE_PREFIX)).parent


def check_folder(path: Path, make: bool = False) -> None:
    """StoreUrlError unless the store file ``path`` exists or may be made: its folder
    exists, or is the default's (``DEFAULT_FOLDER``: made when ``make``). Names what is in
    the way when a file is where a folder should be."""
    folder = path.parent
    if path.exists() or folder.is_dir():
        return
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise StoreUrlError(f"{in_the_way} is a file, not a folder")
    if folder != DEFAULT_FOLDER:
        raise StoreUrlError(
            f"no folder {folder.absolute()} for the store {path.name}: a new store is made "
            "only in a folder that exists (make it, or correct the path)"
        )
    if make:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUrlError(
                f"cannot make the folder {folder.absolute()} ({exc.strerror or exc})"
            ) from None


def read_erased_list(path: Path) -> ErasedList:
    """The erased list of the store file, for the trainer: read only, no migration, and
    a store file that does not exist (or predates erasure) has nothing erased, unless
    its folder does not exist either (``check_folder``: the path is wrong)."""
    lists = read_training_lists(path)
    return ErasedList(new_key(), ()) if lists is None else lists[0]


def read_training_lists(path: Path) -> tuple[ErasedList, list[str]] | None:
    """What the trainer leaves out, from the store file: the erased list and the ids
    whose consent record withdraws personalization. Read only, no migration; None when
    there is no store file (unless its folder does not exist either: ``check_folder``,
    the path is wrong), nothing for a store that predates erasure and consent."""
    check_folder(path)
    if not path.is_file():
        return None
    with _read_only(path, f"cannot read the erased customers of {path}") as db:
        tables = {
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('erased', 'consent')"
            ).fetchall()
        }
        if not tables:
            return ErasedList(new_key(), ()), []
        columns = {row[1] for row in db.execute("PRAGMA table_info(erased)").fetchall()}
        erased = erased_list_of(db, "?", "id_hash" in columns)
        withdrawn = db.execute(
            "SELECT customer_id FROM consent WHERE personalization = 0 ORDER BY customer_id"
        ).fetchall()
    return erased, [row[0] for row in withdrawn]


def read_pseudonym_key(path: Path) -> bytes | None:
    """The pseudonym key kept in the store file, for ``nbo keys pseudonym``: read only,
    no migration; None when the store does not exist or holds none yet (the service
    makes it at its first start); StoreUrlError when its folder does not exist either."""
    check_folder(path)
    if not path.is_file():
        return None
    with _read_only(path, f"cannot read the pseudonym key of {path}") as db:
        has_table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deployment_keys'"
        ).fetchone()
        if not has_table:
            return None
        row = db.execute(
            "SELECT value FROM deployment_keys WHERE name = ?", (PSEUDONYM_KEY,)
        ).fetchone()
    return None if row is None else bytes(row[0])


def _check_is_store(path: Path, db: sqlite3.Connection) -> None:
    """StoreUrlError when the database at ``path`` (``db``, open on it) holds tables but
    not nbo's: another application's database, which nbo would otherwise add its tables
    to, and record erasures and consent in that no service reads. An empty database (no
    tables: a new or empty file) is a store to be. sqlite3.DatabaseError when the file
    is no SQLite database (the caller says what it was doing)."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    ]
    if tables and "schema_migrations" not in tables:
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise StoreUrlError(
            f"{path.absolute()} is not an nbo store: an SQLite database with other tables "
            f"({shown}); point it at the store the service records to"
        )


def _check_existing_store(path: Path) -> None:
    """``_check_is_store`` for a file that exists, on a connection of its own (read only),
    before anything is changed, the file's permissions included."""
    with _read_only(path, f"cannot use {path} as the store"):
        pass


@contextmanager
def _read_only(path: Path, doing: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection on the store file at ``path``, checked to hold nbo's tables
    (``_check_is_store``) and closed after; a database error while it is used is a
    StoreUrlError that starts with ``doing``. One way for the commands that read a store
    without migrating it (the trainer's lists, the pseudonym key) and for the check
    before a command changes an existing file."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUrlError(f"cannot open {path} ({exc})") from None
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("PRAGMA busy_timeout=5000")
        _check_is_store(path, db)
        yield db
    except sqlite3.DatabaseError as exc:
        raise StoreUrlError(f"{doing} ({exc})") from None
    finally:
        db.close()


# What SQLite keeps beside the store file (WAL mode): made with the file's mode.
SIDE_FILES = ("-wal", "-shm")


def _keep_private(path: Path) -> None:
    """A new store file is made its owner's alone (0600) before SQLite opens it, and so
    are the write-ahead log and shared memory files SQLite makes beside it (with the
    file's mode): the store holds customers' events and consent, and the pseudonym key.
    A store file made before that keeps its group's permissions (a deployment may share
    it between users of one group) but loses any for others."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        for file in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
            with suppress(OSError):  # not there, or not ours: SQLite says what matters
                status = file.stat()
                mode = stat.S_IMODE(status.st_mode)
                if stat.S_ISREG(status.st_mode) and mode & 0o007:
                    os.chmod(file, mode & ~0o007)
                    log.info("store file %s: no longer readable by others", file)
        return
    except OSError:
        return  # SQLite names the problem when it opens the path
    os.close(descriptor)


class SQLiteStore(SQLStore):
    """SQLite: one writer connection behind a lock (serialised, durable commits) and one
    reader connection per thread, so an offers call never waits for a write's fsync (WAL
    lets readers see the last commit while a writer works). A transaction starts with
    BEGIN IMMEDIATE, the file's write lock: it is every customer's lock at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_folder(path, make=True)
        if path.exists():
            _check_existing_store(path)
        _keep_private(path)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise StoreUrlError(f"cannot open {path} ({exc})") from None
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        try:
            self._prepare()
        except sqlite3.DatabaseError as exc:
            # The file's first read is here: another kind of file, a read-only one.
            self._db.close()
            raise StoreUrlError(f"cannot use {path} as the store ({exc})") from None
        except BaseException:
            self._db.close()
            raise

    def _prepare(self) -> None:
        """The writer connection's settings, and the schema migrated."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        # Deleted rows are overwritten with zeros, not left in free pages: an erasure
        # leaves nothing readable in the file.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._transaction() as db:
            self.schema_version = apply_migrations(db, "sqlite", str(self.path))

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                # Another process held the write lock past busy_timeout (a campaign
                # recording a large chunk): the caller may try again, nothing was done.
                log.warning("store %s busy: %s", self.path, exc)
                raise StoreUnavailable(f"the store is busy ({exc})", "the store is busy") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if _disk_full(exc):
                    # A 503 with Retry-After, as a PostgreSQL server that is away: nothing
                    # of the call was stored, and it may succeed once space is freed.
                    message = (
                        f"the store's disk is full ({self.path}): nothing was stored; free "
                        "space on its file system"
                    )
                    log.error("%s", message)
                    raise StoreUnavailable(
                        message, "the store's disk is full: nothing was stored"
                    ) from None
                raise

    def _lock_customers(self, db: Database, customer_ids: Sequence[str]) -> None:
        """Nothing more to take: BEGIN IMMEDIATE holds the file's write lock."""

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

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        yield self._reader()

    def _id_lists(
        self, customer_ids: Sequence[str] | Sequence[bytes]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for part in _parts_of(customer_ids):
            yield f"IN ({_marks(part)})", part

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

    def _purchases(
        self, db: Database, customer_ids: Sequence[str], limit: int | None
    ) -> dict[str, list[PostedPurchase]]:
        """The newest ``limit`` lines of each customer (``_NEWEST_LINES``)."""
        found: dict[str, list[PostedPurchase]] = {}
        for part in _parts_of(customer_ids):
            if limit is None:
                rows = db.execute(
                    "SELECT customer_id, item_id, quantity, occurred_at, order_id, event_id, "
                    f"price FROM purchase_lines WHERE customer_id IN ({_marks(part)}) "
                    "ORDER BY occurred_at, rowid",
                    part,
                )
            else:
                newest = _NEWEST_LINES.format(customers=_rows(part))
                rows = db.execute(newest, (*part, limit, limit))
            for row in rows.fetchall():
                found.setdefault(row[0], []).append(PostedPurchase(*row[1:]))
        return found

    def _json_text(self, column: str, field: str) -> str:
        return f"json_extract({column}, '$.{field}')"

    def _after_erasure(self) -> None:
        """Copy the write-ahead log into the file and truncate it, so the log keeps no
        old copy of erased rows (the erasure is committed; only the clean-up of the log
        can be left undone, and later commits overwrite it anyway)."""
        with self._lock:
            self._truncate_log("after an erasure")

    def close(self) -> None:
        """Close every connection, the write-ahead log first copied into the file and
        truncated. The last connection to close deletes the log, but two processes that
        close at the same moment (workers stopping together) can each find the other
        still open, and then neither deletes it: truncated, it holds nothing either way."""
        with self._lock:
            for reader in self._all_readers:
                # Safe at shutdown, the only time close is called: no request runs.
                reader.close()
            self._truncate_log("at close")
            self._db.close()

    def _truncate_log(self, when: str) -> None:
        """Checkpoint the write-ahead log into the file and truncate it; the caller holds
        the lock. Best effort, waiting at most a quarter second for readers (writers wait
        behind it): a reader in the middle of a statement can hold it back."""
        self._db.execute("PRAGMA busy_timeout=250")
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("store %s: checkpoint %s failed (%s)", self.path, when, exc)
        finally:
            self._db.execute("PRAGMA busy_timeout=5000")


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


K = TypeVar("K")


def _parts_of(customer_ids: Sequence[K]) -> Iterator[tuple[K, ...]]:
    ids = tuple(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), _IDS_PER_QUERY):
        yield ids[start : start + _IDS_PER_QUERY]


def _marks(part: Sequence[object]) -> str:
    return ", ".join("?" * len(part))


def _rows(part: Sequence[str]) -> str:
    """One-column VALUES rows: ``(?), (?), ...``."""
    return ", ".join("(?)" for _ in part)


def _disk_full(exc: BaseException) -> bool:
    """Whether SQLite stopped because its file system (or ``max_page_count``) is full."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )
