"""The PostgreSQL store: one database server shared by every replica of the service and
every campaign (``NBO_STORE_URL=postgresql://USER:PASSWORD@HOST:PORT/DATABASE``).

psycopg 3, with a pool of connections per process (psycopg_pool) in autocommit mode: a
read is one statement and one round trip, seeing the last commit of any replica; writes
run in explicit transactions, durable when answered (the server's default
``synchronous_commit``). Migrations run when the store opens, under an advisory lock, so
replicas starting together migrate once; a service worker's store whose server cannot be
reached at its start opens (and migrates) in the background once it answers.

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
import itertools
import logging
import math
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from nbo.core.erased import ErasedList
from nbo.core.errors import ConfigError, StoreUrlError
from nbo.core.pseudonyms import new_key
from nbo.offers.state import PostedPurchase
from nbo.store.base import StoreUnavailable, StoreUnreachable
from nbo.store.migrations import apply_migrations
from nbo.store.sql import PSEUDONYM_KEY, Database, SQLStore, erased_list_of

log = logging.getLogger(__name__)

# Connections per process: the service makes its calls in the thread pool (each offers
# chunk, profile and write holds one while it runs). Replicas x processes x this must
# stay under the server's max_connections (100 by default).
POOL_SIZE = 8
CONNECT_SECONDS = 10
# How long a call waits for one of the pool's connections (psycopg_pool's default is 30 s):
# a pool whose every connection waits on a slow server answers 503 soon rather than late.
POOL_WAIT_SECONDS = 3.0
# TCP keepalives for every connection unless the URL sets its own: a server that vanished
# without closing (a partition, packets dropped rather than refused; a host that died) is
# found within about 25 s, idle connection or call waiting on its answer alike, where the
# operating system's defaults take two hours (keepalives) or a quarter of an hour
# (retransmissions, which tcp_user_timeout bounds). libpq ignores what the platform lacks.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "25000",
}
# After the server was found unreachable, calls answer StoreUnavailable at once (the
# 503's Retry-After is 1 s) instead of each waiting on the pool, and a thread of the
# store's own tries the server again this often until it answers: a worker stays
# responsive through an outage, and no call waits on the pool for a server that is away.
DOWN_SECONDS = 1.0
# A pool whose every connection is out with a call (a slow server) is said at most this
# often: each call that waited for one in vain would otherwise log a line.
REPEAT_BUSY_SECONDS = 10.0
# How often a store whose server refuses it (not one away) says so again (seconds).
REPEAT_SECONDS = 60.0
# A pool connection that sat unused this long is checked (one empty round trip) before a
# call gets it: a server restarted meanwhile closed it, and the call would answer 503
# for a server that is back. Connections in steady use are never checked.
IDLE_CHECK_SECONDS = 1.0
# A store no call has used for this long asks the server itself (a store thread's
# ``SELECT 1``): an idle replica's readiness says "store": "unavailable" during an
# outage, and its connections closed by a restart are replaced before calls need them.
PROBE_SECONDS = 5.0
# A server that hangs (stopped, SIGSTOP; a host frozen while its kernel still answers
# TCP) never answers, not even with its own statement timeout's cancel, and keepalives
# see nothing wrong: a call waited for as long as it hung. So the client keeps deadlines
# of its own (``_Watchdog``): a call past the statement timeout plus this margin, and the
# probe's or a pool check's round trip past ``ROUND_TRIP_SECONDS``, has its connection
# cut (its socket shut down), and the call answers StoreUnavailable. The probe's cut
# counts the server away. The watchdog looks every ``WATCH_SECONDS``.
DEADLINE_MARGIN_SECONDS = 2.0
ROUND_TRIP_SECONDS = 3.0
WATCH_SECONDS = 0.5
# The recovery thread's connect (is the server back?) is bounded by the probe's round
# trip, not CONNECT_SECONDS: a hung server accepts the connection and never answers its
# startup, so each try waited the full 10 s (measured: 10.0 s a try, 3.0 s now), and a
# server that came back elsewhere at the same address (a standby taking the address of
# a host that stays frozen) was found up to 10 s late. libpq waits at least 2 s.


class _Userinfo(NamedTuple):
    """Where a URL's user name and password lie, in every reading of it."""

    start: int  # just after '://'
    read: int  # where libpq ends them: the first '@' when no '/' comes before it, else -1
    latest: int  # the latest they may end: the URL's last '@' (-1 when none)
    # Whether an '@' before the query is not where libpq ends them: a raw '@' or '/' in
    # the user name or password (or an '@' in the database name) makes libpq misread them.
    misread: bool


def _userinfo(url: str) -> _Userinfo | None:
    """The one reading of a URL's credentials that both ``check_url`` (which refuses a
    URL libpq would misread) and ``redacted`` (which hides all that may be a password)
    use; None without '://'. libpq ends the user and password at the first '@' before
    any '/', and reads a raw '?' before that '@' as theirs, so the query starts at the
    first '?' after it; a password with a raw '@' or '/' moves their end as late as the
    last '@'."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    first = url.find("@", start)
    slash = url.find("/", start)
    read = first if first >= 0 and (slash < 0 or first < slash) else -1
    query = url.find("?", max(read, start))
    before_query = url.rfind("@", start, len(url) if query < 0 else query)
    return _Userinfo(start, read, url.rfind("@", start), before_query not in (-1, read))


@lru_cache(maxsize=1)
def _libpq_keywords() -> frozenset[str]:
    """The connection parameters libpq knows (its own list): the names of a query."""
    return frozenset(o.keyword.decode("ascii") for o in psycopg.pq.Conninfo.get_defaults())


# A URL's hosts and ports as libpq reads them when no user name comes first: hosts
# without ':', '@', '/' or '?', each with an optional port of digits, comma-separated.
_HOSTS = re.compile(r"[^:@/?,]*(?::\d*)?(?:,[^:@/?,]*(?::\d*)?)*")


def _query_holds_the_ats(url: str, userinfo: _Userinfo) -> int | None:
    """Where the user name and password end (their '@', -1 for none) when every '@' after
    them is a query's: the query is libpq's ``key=value`` pairs of parameters it knows,
    and (without a user name libpq reads) what comes before the path is hosts and ports.
    None when in doubt: a password holding a raw '?' or '/' and '@' reads so too."""
    query = url.find("?", max(userinfo.read, userinfo.start))
    if query < 0 or userinfo.latest < query:
        return None
    pairs = [pair.partition("=") for pair in url[query + 1 :].split("&")]
    if not all(eq and unquote(key) in _libpq_keywords() for key, eq, _ in pairs):
        return None
    end = url.rfind("@", userinfo.start, query)
    if userinfo.read < 0:
        slash = url.find("/", userinfo.start)
        hosts = url[userinfo.start : query if slash < 0 else min(slash, query)]
        if end >= 0 or not _HOSTS.fullmatch(hosts):
            return None
    return end


def _credentials(url: str) -> tuple[int, int] | None:
    """Where a URL's password may be: from the user name's ':' (the whole stretch when the
    user name is not a plain one) to the last '@' (``_userinfo``: it covers every
    reading), or to the last before the query when the query's own '@'s are plainly its
    (``application_name=me@work``: the host and database were hidden with it)."""
    userinfo = _userinfo(url)
    if userinfo is None or userinfo.latest < 0:
        return None
    start, end = userinfo.start, userinfo.latest
    in_query = _query_holds_the_ats(url, userinfo)
    if in_query is not None:
        if in_query < 0:
            return None
        end = in_query
    user, colon, _ = url[start:end].partition(":")
    if not colon:
        return None if re.fullmatch(r"[^/?#]*", user) else (start, end)
    if re.search(r"[/?#]", user):
        return (start, end)
    return (start + len(user) + 1, end)


_QUERY_PASSWORD = re.compile(r"(password=)([^&]*)")


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs: when in doubt (a password
    with a raw '@' or '/'), everything between '://' and the last '@' is hidden."""
    span = _credentials(url)
    if span is not None:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _scrubbed(text: str, url: str) -> str:
    """``text`` (libpq's words about ``url``) without anything that may be its password:
    the password as given and percent-decoded anywhere, and the pieces libpq cuts one
    with a raw '@', '/', ':' or ',' into (which its messages name as a host, a port or a
    database) wherever one stands on its own."""
    span = _credentials(url)
    given = [url[span[0] : span[1]]] if span is not None else []
    given += [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    whole = {t for secret in given for t in (secret, unquote(secret)) if t}
    pieces = {
        p
        for secret in given
        for piece in re.split(r"[@/:,?#]", secret)
        for p in (piece, unquote(piece))
        if p and p not in whole
    }
    for secret in sorted(whole, key=len, reverse=True):
        text = text.replace(secret, "***")
    for piece in sorted(pieces, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(piece)}(?![\w.-])", "***", text)
    return text


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


def _reason(exc: BaseException, url: str) -> str:
    """An error's line for a one-line message (libpq's run to several): the server's own
    (FATAL) line when one answered, which is not always first (libpq lists every address
    it tried), else the first; its type when it has no text. Without ``url``'s password,
    which libpq quotes when it cannot read the URL (a raw '%', '@' or '/' in it)."""
    lines = _scrubbed(str(exc), url).strip().splitlines()
    answered = [line.strip() for line in lines if "FATAL:" in line]
    return answered[0] if answered else lines[0] if lines else type(exc).__name__


def check_url(url: str) -> None:
    """StoreUrlError when libpq cannot parse ``url``, or its port is no port; no
    connection is made. (libpq reads the port only when it connects: a mistyped one was
    taken for a server that is away, and the service ran on 503s for good.) A raw '@' or
    '/' in the password is refused before libpq reads it: libpq would take a piece of the
    password for the host, the port or the database and name it in its messages."""
    userinfo = _userinfo(url)
    if userinfo is not None and userinfo.misread:
        raise StoreUrlError(
            f"{redacted(url)} is not valid (a '@' or '/' in the password, the user name or "
            "the database name must be percent-encoded: %40, %2F)"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        reason = _reason(exc, url)
        raise StoreUrlError(f"{redacted(url)} is not valid ({reason})") from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65_535):
            problem = _scrubbed(f"port {port!r} is not a number from 1 to 65535", url)
            raise StoreUrlError(f"{redacted(url)} is not valid ({problem})")


# The server's own words when it answers "not now" (SQLSTATE 57P03 cannot_connect_now:
# starting up, shutting down, in recovery; 53300 too_many_connections). psycopg gives no
# SQLSTATE for a connection that failed (there is no result to read it from: every such
# error has ``sqlstate`` None), only libpq's text, where a server that answered says FATAL.
_NOT_NOW = ("the database system is", "too many clients", "connection slots are reserved")


def _away(exc: psycopg.Error) -> bool:
    """Whether a failed connection means the server cannot be reached now (down, starting
    up, shutting down), rather than that it answered and refused (a password, a database
    or role that does not exist): no server answered, or the one that did said "not
    now"."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate is not None:  # a driver that reads it
        return exc.sqlstate in ("57P03", "53300")
    text = str(exc)
    return "FATAL:" not in text or any(words in text for words in _NOT_NOW)


def _connection_settings(url: str) -> dict[str, Any]:
    """What every connection is opened with beside the URL: autocommit, the connect
    timeout, ``KEEPALIVES`` and UTF8 as the client encoding, each unless the URL sets it
    (libpq's own parameters, an operator's choice, win). UTF8: on a database in
    SQL_ASCII (a bare ``initdb`` with locale C makes one) psycopg otherwise reads text as
    bytes, and ids read back went out again as bytea (``nbo store purge`` failed there)."""
    given = conninfo_to_dict(url)
    defaults = {
        "connect_timeout": str(CONNECT_SECONDS),
        "client_encoding": "UTF8",
        **KEEPALIVES,
    }
    return {"autocommit": True} | {k: v for k, v in defaults.items() if k not in given}


def _connect(url: str, timeout_s: float | None = None) -> psycopg.Connection[Any]:
    """A connection, or StoreUrlError with the server's reason (``StoreUnreachable`` when
    the server cannot be reached now); a URL ``check_url`` refuses is refused unread.
    ``timeout_s``: the connect's own bound, over the URL's and ``CONNECT_SECONDS`` (whole
    seconds, at least libpq's 2)."""
    check_url(url)
    settings = _connection_settings(url)
    if timeout_s is not None:
        settings["connect_timeout"] = str(max(2, math.ceil(timeout_s)))
    try:
        return psycopg.connect(url, **settings)
    except psycopg.Error as exc:
        reason = _reason(exc, url)
        problem = f"cannot connect to {redacted(url)} ({reason})"
        if _away(exc):
            raise StoreUnreachable(problem, reason) from None
        raise StoreUrlError(problem) from None


def _check_writable(db: Database) -> None:
    """One round trip: ReadOnlySqlTransaction when the server takes no writes (a hot
    standby, or ``default_transaction_read_only`` on), which ``SELECT 1`` would not tell;
    the service's writes would fail there, so it counts as away."""
    row = db.execute("SELECT current_setting('transaction_read_only')").fetchone()
    if row is not None and row[0] == "on":
        raise psycopg.errors.ReadOnlySqlTransaction(
            "the server is read-only (a standby, or default_transaction_read_only on)"
        )


class _NoAnswer(psycopg.OperationalError):
    """A connection cut by the client's own deadline (``_Watchdog``)."""


class _Watchdog:
    """Client-side deadlines: a connection whose block outlives its deadline is cut
    (its socket shut down, which ends libpq's wait with an error in the thread that
    waits; the pool then discards the connection). A cancel request would not do: a hung
    server does not answer it either, and libpq sends it blocking. Arming is a dict
    entry; one thread (``PostgresStore._watching``) calls ``sweep``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._tokens = itertools.count()

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    @contextmanager
    def deadline(self, db: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        """The block, with ``db`` cut if it runs past ``seconds``: its error then says
        so (OperationalError, as a lost connection's)."""
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = (time.monotonic() + seconds, db)
        try:
            yield
        except psycopg.OperationalError:
            with self._lock:
                cut = self._armed.pop(token, None) is None
            if cut:
                raise _NoAnswer(
                    f"no answer from the server within {seconds:g} s (it hangs?)"
                ) from None
            raise
        finally:
            # Under the lock: once the block is over, its connection (back in the
            # pool, maybe another call's) is never cut.
            with self._lock:
                self._armed.pop(token, None)

    def sweep(self) -> None:
        """Cut every connection past its deadline."""
        now = time.monotonic()
        with self._lock:
            for token, (deadline, db) in list(self._armed.items()):
                if deadline <= now:
                    del self._armed[token]
                    _cut(db)


def _saturated(pool: ConnectionPool[psycopg.Connection[Any]]) -> bool:
    """Whether every connection the pool may hold is made and out with a call: a call
    that waited in vain then waited for slow calls, not for a server that is away (whose
    lost connections the pool would be replacing, its size below the most)."""
    stats = pool.get_stats()
    return stats["pool_size"] >= stats["pool_max"] and stats["pool_available"] == 0


def _cut(db: psycopg.Connection[Any]) -> None:
    """Shut ``db``'s socket down (not closed: the fd stays libpq's, and the pool closes
    it): a thread waiting on its answer gets an error at once."""
    try:
        fd = db.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # closed meanwhile: nothing left to cut


class PostgresStore(SQLStore):
    """PostgreSQL: a pool of autocommit connections; see the module docstring.

    While the server is away (``_down``), every call answers StoreUnavailable at once and
    one thread of the store's own (``_recover``) tries the server again every
    ``DOWN_SECONDS``: no call after the one that found it gone waits for it, and the
    first call after it is back finds a connection ready. With ``background``, a server that
    cannot be reached at the start is waited for the same way: the store starts closed,
    and that thread migrates the schema and opens the pool once the server answers.
    """

    _STORED_ORDER = "seq"
    remote = True

    def __init__(
        self,
        url: str,
        pool_size: int = POOL_SIZE,
        background: bool = False,
        statement_timeout_ms: int = 0,
        refusal_waits: bool = False,
    ) -> None:
        self.where = redacted(url)
        self._url, self._pool_size = url, pool_size
        # The server cancels a statement of the pool's connections that runs longer (the
        # call answers StoreUnavailable); 0: none set here (the server's, the role's or
        # the URL's applies). Not on the connection that migrates, which may wait for
        # another replica's migration or build an index.
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        # 0 until the schema is migrated (a store started without its server).
        self.schema_version = 0
        # Whether the server counts as away (every call answers StoreUnavailable at once),
        # why, and since when (time.monotonic).
        self._down = False
        self._down_reason = ""
        self._down_since = 0.0
        self._state = threading.Lock()
        self._recovery: threading.Thread | None = None
        self._stopping = threading.Event()
        # When each pool connection was last handed back (``_returned``), and when a call
        # last got through (``_used``, time.monotonic), for ``_check`` and ``_probing``.
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._used = 0.0
        # When a pool busy with slow calls was last said (``_unavailable``).
        self._busy_said = -REPEAT_BUSY_SECONDS
        self._probe: threading.Thread | None = None
        self._watchdog = _Watchdog()
        self._watch: threading.Thread | None = None
        # A call's own deadline (``_Watchdog``): none without a statement timeout.
        self._call_seconds = (
            statement_timeout_ms / 1000 + DEADLINE_MARGIN_SECONDS if statement_timeout_ms else 0.0
        )
        # Callbacks waiting for the store to be available (``when_available``), run by
        # the recovery thread.
        self._on_available: list[Callable[[], None]] = []
        try:
            self._open()
        except StoreUnreachable as exc:
            if not background:
                raise
            log.warning(
                "store %s not reachable (%s): starting without it; calls that need it "
                "answer 503 until it answers",
                self.where,
                exc.reason,
            )
            self._went_down(exc.reason)
        except ConfigError as exc:
            # A server that answers and refuses (a schema a newer release migrated to, a
            # password changed) when the URL was already proven good (``refusal_waits``:
            # ``nbo serve`` opened it before forking): a worker gunicorn starts in place of
            # a dead one must not fail to boot, which stops the whole service, its healthy
            # workers included. It starts without its store, said as an error (again every
            # REPEAT_SECONDS by the recovery thread), and opens it if the refusal ends.
            if not (background and refusal_waits):
                raise
            reason = _reason(exc, url)
            log.error(
                "store %s refused this worker (%s): starting without it; calls that need "
                "it answer 503 until it is fixed",
                self.where,
                reason,
            )
            self._went_down(reason)

    def _open(self, connect_s: float | None = None) -> None:
        """Migrate the schema and open the pool. The first connection migrates and proves
        the URL, with the driver's own message when it cannot (a pool would only time
        out); replicas opening together migrate once, under the advisory lock.
        ``connect_s`` bounds that first connect (``_connect``)."""
        with _connect(self._url, connect_s) as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self.schema_version = apply_migrations(db, "postgres", self.where)
        self._pool = self._open_pool()

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            kwargs=_connection_settings(self._url),
            configure=self._configure if self._statement_timeout_ms else None,
            check=self._check,
            reset=self._reset,
            name="nbo-store",
            timeout=POOL_WAIT_SECONDS,
            open=False,
        )
        try:
            pool.open(wait=True, timeout=CONNECT_SECONDS)
        except PoolTimeout:
            pool.close()
            raise
        self._start_probe()
        return pool

    def _check(self, db: psycopg.Connection[Any]) -> None:
        """Before a call gets ``db``: checked when it sat unused ``IDLE_CHECK_SECONDS``
        (the pool replaces it when the check raises)."""
        if time.monotonic() - self._returned.get(db, 0.0) > IDLE_CHECK_SECONDS:
            try:
                with self._watchdog.deadline(db, ROUND_TRIP_SECONDS):
                    ConnectionPool.check_connection(db)
            except _NoAnswer:
                raise
            except Exception:
                # Dropped (a restart, pg_terminate_backend): so, most likely, are the
                # other idle ones. The pool would find them dead one at a time, backing
                # off between them (1 s, then 2 s), and the call would time out after
                # POOL_WAIT_SECONDS though new connections were made meanwhile: check
                # them all now (a dropped one fails at once), so the call gets a new one.
                if self._pool is not None:
                    self._pool.check()
                raise

    def _reset(self, db: psycopg.Connection[Any]) -> None:
        """``db`` handed back to the pool: when, for ``_check``."""
        self._returned[db] = time.monotonic()

    def _start_probe(self) -> None:
        with self._state:
            # None while the store is stopping (``close``, ``paused``): a pool opened by
            # a recovery try meanwhile gets its probe from ``paused`` or none at all.
            if self._stopping.is_set() or (self._probe is not None and self._probe.is_alive()):
                return
            self._probe = threading.Thread(
                target=self._probing, name="nbo-store-probe", daemon=True
            )
            self._probe.start()
            if self._watch is None or not self._watch.is_alive():
                self._watch = threading.Thread(
                    target=self._watching, name="nbo-store-watchdog", daemon=True
                )
                self._watch.start()

    def _watching(self) -> None:
        """Cut the connections past their deadlines (``_Watchdog``), until the store
        stops and no block is armed (a probe or call in flight when it stopped)."""
        while True:
            stopping = self._stopping.wait(WATCH_SECONDS)
            self._watchdog.sweep()
            if stopping and not self._watchdog.armed:
                return

    def _probing(self) -> None:
        """Every ``PROBE_SECONDS`` that no call used the store, one ``SELECT 1``: a
        failure counts the server away as a call's would (the recovery thread then
        tries it); while it is away, the recovery thread alone tries it."""
        while not self._stopping.wait(PROBE_SECONDS):
            if self._down or time.monotonic() - self._used < PROBE_SECONDS:
                continue
            try:
                with self._unavailable() as pool, pool.connection() as db:
                    try:
                        with self._watchdog.deadline(db, ROUND_TRIP_SECONDS):
                            _check_writable(db)
                    except _NoAnswer as exc:
                        # One round trip that did not come back: the server hangs, and
                        # counts as away (a call's cut is its call's only: a call may
                        # rightly take long).
                        raise psycopg.OperationalError(str(exc)) from None
            except StoreUnavailable:
                pass  # counted away, and said, by ``_unavailable``

    def _configure(self, db: psycopg.Connection[Any]) -> None:
        """A new pool connection's statement timeout (the session's, as SET would)."""
        timeout = f"{self._statement_timeout_ms}ms"
        db.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))

    @property
    def available(self) -> bool:
        """Whether calls reach the server now (False while it counts as away); no I/O."""
        return not self._down

    def when_available(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now if the store is available, else once it is (in the
        recovery thread); one that raises StoreUnavailable (the server away again) runs
        again on the next recovery."""
        while True:
            with self._state:
                if self._down:
                    self._on_available.append(callback)
                    return
            try:
                callback()
                return
            except StoreUnavailable:
                continue  # the call that failed counted the server away: queued above

    def _went_down(self, reason: str) -> None:
        """Count the server as away (calls answer at once) and start the thread that
        finds it again, unless one runs."""
        with self._state:
            self._down_reason = reason
            if not self._down:
                self._down = True
                self._down_since = time.monotonic()
            if self._stopping.is_set() or (
                self._recovery is not None and self._recovery.is_alive()
            ):
                return
            self._recovery = threading.Thread(
                target=self._recover, name="nbo-store-recovery", daemon=True
            )
            self._recovery.start()

    def _recover(self) -> None:
        """Try the server every ``DOWN_SECONDS`` until it answers: open the store (a
        start without it: migrations first) or connect, check the pool (its dropped
        connections replaced) and take one connection from it; then count it back and
        run the ``when_available`` callbacks. Runs in a thread: a try may wait on the
        network."""
        reason, said_at = "", 0.0
        while not self._stopping.wait(DOWN_SECONDS):
            try:
                if self._pool is None:
                    self._open(ROUND_TRIP_SECONDS)
                    if self._stopping.is_set() and self._pool is not None:
                        self._pool.close()  # closed meanwhile
                        return
                else:
                    # One connection of its own first: while the server refuses them,
                    # that fails at once where the pool would wait POOL_WAIT_SECONDS;
                    # while it hangs, within the probe's round trip.
                    _connect(self._url, ROUND_TRIP_SECONDS).close()
                    self._pool.check()
                    with self._pool.connection(timeout=POOL_WAIT_SECONDS) as db:
                        _check_writable(db)
            except (psycopg.Error, PoolTimeout, ConfigError) as exc:
                reason = (
                    exc.reason if isinstance(exc, StoreUnreachable) else _reason(exc, self._url)
                )
                # A server that answers and refuses (a password changed, a schema newer
                # than this nbo) is an operator's to fix: said as an error, and again
                # every REPEAT_SECONDS, not once among the warnings of an outage.
                refused = isinstance(exc, ConfigError) and not isinstance(exc, StoreUnreachable)
                now = time.monotonic()
                if reason != self._down_reason or (refused and now - said_at >= REPEAT_SECONDS):
                    level = logging.ERROR if refused else logging.WARNING
                    log.log(level, "store %s still unavailable: %s", self.where, reason)
                    said_at = now
                self._down_reason = reason
                continue
            except Exception as exc:
                # Not the server's answer but a bug, ours or a library's. The thread
                # ended here once, and the store stayed away for good with nothing said:
                # said now in one line (once while it repeats alike) and tried again on
                # schedule, as any failed try.
                reason = f"{type(exc).__name__}: {_reason(exc, self._url)}"
                if reason != self._down_reason:
                    log.error(
                        "store %s: a try to find it again failed unexpectedly (%s); "
                        "trying again every %g s",
                        self.where,
                        reason,
                        DOWN_SECONDS,
                    )
                self._down_reason = reason
                continue
            with self._state:
                self._down = False
                self._recovery = None  # a failure from here on starts another
                callbacks, self._on_available = self._on_available, []
                away = time.monotonic() - self._down_since
            log.info("store %s available again after %.0f s", self.where, away)
            for callback in callbacks:
                try:
                    self.when_available(callback)
                except Exception:
                    # One that fails otherwise (the server back as a read-only standby,
                    # say) must not take the others with it, nor end in silence.
                    log.exception("store %s: a step waiting for it failed", self.where)
            return

    def _stop_recovery(self) -> None:
        """Stop the recovery and probe threads (waiting for a try in progress) and let a
        later failure start another, and a new pool another probe."""
        self._stopping.set()
        # Until none runs: a recovery try in progress may open a pool, and so start a
        # probe, after the first look (``_start_probe`` starts none once stopping).
        while running := [
            t for t in (self._recovery, self._probe, self._watch) if t is not None and t.is_alive()
        ]:
            for thread in running:
                thread.join()
        self._stopping.clear()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The pool closed (its threads joined, its connections closed) while the block
        runs, and a new one opened after: a pool cannot be opened again once closed, and
        a process must not fork while its threads run (``nbo batch`` forks its workers
        here; each opens a store of its own)."""
        self._stop_recovery()
        if self._pool is not None:
            self._pool.close()
        try:
            yield
        finally:
            if self._pool is not None:
                try:
                    self._pool = self._open_pool()
                except PoolTimeout:
                    # The server went away during the block: the store starts closed,
                    # as one started without its server, and opens once it answers.
                    self._pool = None
                    self._went_down(f"no connection within {CONNECT_SECONDS} s")
            if self._down:
                self._went_down(self._down_reason)

    def _q(self, sql: str) -> str:
        return _with_psycopg_marks(sql)

    def _json_text(self, column: str, field: str) -> str:
        return f"({column}::json ->> '{field}')"

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        with self._unavailable() as pool, pool.connection() as db, self._deadline(db):
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        with (
            self._unavailable() as pool,
            pool.connection() as db,
            self._deadline(db),
            db.transaction(),
        ):
            yield db

    def _deadline(self, db: psycopg.Connection[Any]) -> AbstractContextManager[None]:
        """A call's own deadline: the statement timeout and a margin (none without one)."""
        if not self._call_seconds:
            return nullcontext()
        return self._watchdog.deadline(db, self._call_seconds)

    @contextmanager
    def _unavailable(self) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
        """The pool, and a lost server or connection as ``StoreUnavailable``. Once lost,
        calls answer so at once (no wait on the pool) until the recovery thread finds the
        server again: no call waits for a server that is away. A statement the server
        cancelled (the statement timeout) is StoreUnavailable for its call only: the
        server is there, and the connection goes back to the pool usable."""
        pool = self._pool
        if self._down or pool is None:
            raise StoreUnavailable(f"the store is unavailable ({self._down_reason})")
        try:
            yield pool
            self._used = time.monotonic()
        except (psycopg.errors.QueryCanceled, _NoAnswer) as exc:
            reason = _reason(exc, self._url)
            what = "a call was cut" if isinstance(exc, _NoAnswer) else "a statement was cancelled"
            log.warning("store %s: %s: %s", self.where, what, reason)
            raise StoreUnavailable(
                f"the store did not answer in time ({reason})", "the store did not answer in time"
            ) from None
        except PoolTimeout as exc:
            if not _saturated(pool):
                self._lost(exc)
            # Every connection is out, each with a call the server is answering, slowly
            # (a lock held by a migration or another session, a saturated disk): the
            # server is there, so this call only answers 503, as a cancelled statement's
            # does. Counted away, every call of the worker answered 503 and readiness
            # said "unavailable", calls that need no slow statement included.
            now = time.monotonic()
            if now - self._busy_said >= REPEAT_BUSY_SECONDS:
                log.warning(
                    "store %s busy: all %d connections in use by calls for over %g s "
                    "(a slow server, or a lock held)",
                    self.where,
                    self._pool_size,
                    POOL_WAIT_SECONDS,
                )
                self._busy_said = now
            raise StoreUnavailable(
                "the store is busy: no connection free", "the store is busy"
            ) from None
        except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction) as exc:
            # OperationalError: the connection lost, the server shutting down (57P01 admin,
            # 57P02 crash, 57P03 cannot connect now) among them. ReadOnlySqlTransaction
            # (25006): the server answers but takes no writes (a standby after a failover,
            # default_transaction_read_only on): away for a store that must write, until
            # the recovery thread finds it writable again.
            self._lost(exc)

    def _lost(self, exc: BaseException) -> NoReturn:
        """Count the server away for ``exc`` (said once), and raise StoreUnavailable."""
        reason = _reason(exc, self._url)
        log.warning("store %s unavailable: %s", self.where, reason)
        self._went_down(reason)
        raise StoreUnavailable(f"the store is unavailable ({reason})") from None

    def _lock_customers(self, db: Database, customer_ids: Sequence[str]) -> None:
        keys = sorted({customer_lock(c) for c in customer_ids})
        if len(keys) == 1:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (keys[0],))
        elif keys:
            # unnest hands the keys over in the array's order: always ascending.
            db.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (keys,))

    def _id_lists(
        self, customer_ids: Sequence[str] | Sequence[bytes]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
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
        # For good. A recovery try in progress ends after it, on its own (it may wait on
        # the network); the probe is waited for, a SELECT 1 at most, so that no thread of
        # the store's outlives it on a server that is there (``nbo serve`` forks its
        # workers after closing the store it checked).
        self._stopping.set()
        for thread in (self._probe, self._watch):
            if thread is not None:
                thread.join(ROUND_TRIP_SECONDS + POOL_WAIT_SECONDS + 1.0)
        if self._pool is not None:
            self._pool.close()


def read_erased_list(url: str) -> ErasedList:
    """The erased list, read only (no migration); empty when the schema is not there yet."""
    return read_training_lists(url)[0]


def read_training_lists(url: str) -> tuple[ErasedList, list[str]]:
    """What the trainer leaves out: the erased list and the ids whose consent record
    withdraws personalization. Read only (no migration); none when the schema is not
    there yet."""
    with _connect(url) as db:
        if db.execute("SELECT to_regclass('erased')").fetchone() == (None,):
            return ErasedList(new_key(), ()), []
        hashed = db.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'erased' AND column_name = 'id_hash'"
        ).fetchone()
        erased = erased_list_of(db, "%s", hashed is not None)
        withdrawn = db.execute(
            "SELECT customer_id FROM consent WHERE NOT personalization ORDER BY customer_id"
        ).fetchall()
    return erased, [row[0] for row in withdrawn]


def read_pseudonym_key(url: str) -> bytes | None:
    """The pseudonym key, read only (no migration); None when there is none yet."""
    with _connect(url) as db:
        if db.execute("SELECT to_regclass('deployment_keys')").fetchone() == (None,):
            return None
        row = db.execute(
            "SELECT value FROM deployment_keys WHERE name = %s", (PSEUDONYM_KEY,)
        ).fetchone()
    return None if row is None else bytes(row[0])
