"""``NBO_STORE_URL`` to a store: ``sqlite:///PATH`` (the default) or ``postgresql://...``.

The PostgreSQL driver is imported only for a PostgreSQL URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from nbo.core.erased import ErasedList
from nbo.core.errors import ConfigError, StoreUrlError
from nbo.core.pseudonyms import new_key
from nbo.store.base import Store
from nbo.store.sqlite import SQLiteStore, check_folder, sqlite_path
from nbo.store.sqlite import read_erased_list as sqlite_erased_list
from nbo.store.sqlite import read_pseudonym_key as sqlite_pseudonym_key
from nbo.store.sqlite import read_training_lists as sqlite_training_lists
from nbo.store.waiting import WaitingStore

log = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Where a store URL comes from unless a command says otherwise.
STORE_SETTING = "NBO_STORE_URL"
STORE_FLAG = "--store-url"


def store_setting(flag_value: str | None) -> str:
    """What names the store for a command with a ``--store-url`` flag: the flag when the
    user gave it, else ``NBO_STORE_URL``, so an error names what the user gave."""
    return STORE_SETTING if flag_value is None else STORE_FLAG


@contextmanager
def _said_of(setting: str) -> Iterator[None]:
    """A bad store URL's error said of ``setting`` (every message below is written of
    ``NBO_STORE_URL``)."""
    try:
        yield
    except StoreUrlError as exc:
        if exc.setting == setting:
            raise
        raise exc.named(setting) from None


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def check_store_url(url: str, setting: str = STORE_SETTING) -> None:
    """StoreUrlError (naming ``setting``) when ``url`` cannot name a store (its scheme, an
    SQLite URL's path and folder, a PostgreSQL URL's syntax), without opening it: ``nbo serve``
    checks this before the seconds its model takes to load; whether the store opens is
    known only by opening it."""
    with _said_of(setting):
        if is_postgres(url):
            from nbo.store.postgres import check_url

            check_url(url)
        else:
            # Whether a new file could be made: a look at its folder, nothing made.
            check_folder(sqlite_path(url))


def store_location(url: str) -> str:
    """Where the store a URL names is, for ``nbo serve``'s start line: the SQLite file's
    absolute path (a relative one depends on the working folder), saying when it does not
    exist yet, or the PostgreSQL URL without its password."""
    if is_postgres(url):
        from nbo.store.postgres import redacted

        return f"PostgreSQL {redacted(url)}"
    path = sqlite_path(url)
    new = "" if path.exists() else " (new: no file was there, so it starts empty)"
    return f"SQLite {path.resolve()}{new}"


def open_store(
    url: str,
    background: bool = False,
    setting: str = STORE_SETTING,
    statement_timeout_ms: int = 0,
    refusal_waits: bool = False,
) -> Store:
    """Open the store a URL names, creating (SQLite) or migrating it if needed.
    ``background`` (a service worker): a PostgreSQL server that cannot be reached now
    does not stop the start; the store opens (and migrates) once the server answers, and
    its calls answer StoreUnavailable until then. Without it (a command), that is
    ``StoreUnreachable``, at once. ``setting``: where the URL came from, for the error
    when it names no usable store. ``statement_timeout_ms`` (PostgreSQL; 0: none set):
    a statement that runs longer is cancelled and its call answers StoreUnavailable
    (``NBO_STORE_STATEMENT_TIMEOUT_MS``, the service's). ``refusal_waits`` (with
    ``background``; a worker of ``nbo serve``, which opened the store before forking): a
    server that answers and refuses (a newer schema, a changed password) does not stop the
    start either; it is logged as an error and the store opens once the refusal ends
    (SQLite too: a file several ``nbo serve`` share, migrated by a newer release).
    Without it such a refusal raises: a URL never proven good is the operator's mistake."""
    with _said_of(setting):
        if is_postgres(url):
            from nbo.store.postgres import PostgresStore

            return PostgresStore(
                url,
                background=background,
                statement_timeout_ms=statement_timeout_ms,
                refusal_waits=refusal_waits,
            )
        path = sqlite_path(url)
        try:
            return SQLiteStore(path)
        except ConfigError as exc:
            # As PostgreSQL's (above): a file proven good at ``nbo serve``'s start that
            # refuses a worker now (a newer release migrated it) must not stop gunicorn.
            if not (background and refusal_waits):
                raise
            log.error(
                "store %s refused this worker (%s): starting without it; calls that need "
                "it answer 503 until it is fixed",
                path,
                exc,
            )
            return cast(Store, WaitingStore(lambda: SQLiteStore(path), str(path), exc))


def check_store_exists(url: str, setting: str = STORE_SETTING) -> None:
    """StoreUrlError ``no store at PATH`` when ``url`` names an SQLite file that does not
    exist (a PostgreSQL server is known to hold the store only by asking it)."""
    if not is_postgres(url):
        with _said_of(setting):
            path = sqlite_path(url)
        if not path.exists():
            raise StoreUrlError(
                f"no store at {path.resolve()} (point it at the store the service records to)",
                setting,
            )


def open_existing_store(url: str, setting: str = STORE_SETTING) -> Store:
    """``open_store`` for a command that only reads what the service recorded (a
    report): an SQLite file that does not exist is ConfigError, not a new empty store
    that would report "nobody exposed" and be left behind."""
    check_store_exists(url, setting)
    return open_store(url, setting=setting)


def read_erased_list(url: str, setting: str = STORE_SETTING) -> ErasedList:
    """The erased list of the store a URL names (keyed hashes: ``nbo.core.erased``), for
    the trainer: read only, no migration; a store that does not exist yet (or predates
    erasure) has nothing erased."""
    with _said_of(setting):
        if is_postgres(url):
            from nbo.store.postgres import read_erased_list as postgres_erased_list

            return postgres_erased_list(url)
        return sqlite_erased_list(sqlite_path(url))


@dataclass(frozen=True)
class TrainingExclusions:
    """The customers the trainer leaves out, as the store a URL names holds them, and
    where that store is (``store_location``). ``found``: False when no store file is
    there (nothing erased, nothing withdrawn: most likely a wrong path or folder)."""

    location: str
    found: bool
    erased: ErasedList  # keyed hashes: which ids it holds is tested, never listed
    withdrawn: list[str]  # consent records withdrawing personalization


def read_training_exclusions(url: str, setting: str = STORE_SETTING) -> TrainingExclusions:
    """The erased list (keyed hashes) and the ids whose consent withdraws
    personalization, of the store a URL names, for the trainer: read only, no migration,
    nothing created; a store file that does not exist has none (``found`` False)."""
    with _said_of(setting):
        if is_postgres(url):
            from nbo.store.postgres import read_training_lists as postgres_training_lists

            erased, withdrawn = postgres_training_lists(url)
            return TrainingExclusions(store_location(url), True, erased, withdrawn)
        path = sqlite_path(url)
        lists = sqlite_training_lists(path)
        if lists is None:
            return TrainingExclusions(
                f"SQLite {path.resolve()}", False, ErasedList(new_key(), ()), []
            )
        return TrainingExclusions(store_location(url), True, *lists)


def read_pseudonym_key(url: str, setting: str = STORE_SETTING) -> bytes | None:
    """The pseudonym key kept in the store a URL names, for ``nbo keys pseudonym``: read
    only, no migration; None when the store does not exist or holds none yet (the
    service makes it at its first start)."""
    with _said_of(setting):
        if is_postgres(url):
            from nbo.store.postgres import read_pseudonym_key as postgres_pseudonym_key

            return postgres_pseudonym_key(url)
        return sqlite_pseudonym_key(sqlite_path(url))
