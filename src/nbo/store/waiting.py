"""A store that refused a worker at its start, opened once the refusal ends.

``nbo serve`` opens the store before it forks its workers, so a refusal a worker meets
later (a rolling upgrade's newer release migrated the schema of an SQLite file several
``nbo serve`` share; the file made unreadable) is the store's state of the moment, not
a wrong URL. A worker gunicorn starts in place of a dead one must not fail to boot then:
gunicorn stops the whole service when one does, its healthy workers and the models they
hold with it. PostgreSQL's store waits for its server itself (``PostgresStore``'s
recovery thread); SQLite's has no thread of its own, so this one holds its place: every
call answers StoreUnavailable at once (a 503 ``store_unavailable``), the refusal is
logged as an error and again every ``REPEAT_SECONDS``, and the store is opened again
every ``RETRY_SECONDS``; once it opens, every call goes to it and the steps waiting for
it (``when_available``) run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nbo.core.errors import ConfigError
from nbo.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

# How often the store is opened again while it refuses (a migration check: one read).
RETRY_SECONDS = 1.0
# How often a refusal that lasts is said again, as an error.
REPEAT_SECONDS = 60.0


class WaitingStore:
    """``opener``'s store once it stops refusing (ConfigError); until then every call
    answers StoreUnavailable. ``where``: the store as the log names it. ``refusal``: the
    error the first open raised, already logged by the caller."""

    remote = False

    def __init__(self, opener: Callable[[], Store], where: str, refusal: ConfigError) -> None:
        self._opener = opener
        self.where = where
        self._reason = str(refusal)
        self._inner: Store | None = None
        self._state = threading.Lock()
        self._on_available: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._retry, name="nbo-store-retry", daemon=True)
        self._thread.start()

    @property
    def available(self) -> bool:
        """Whether the store opened; no I/O."""
        return self._inner is not None

    def when_available(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now if the store is open, else once it opens (in the retry
        thread)."""
        with self._state:
            if self._inner is None:
                self._on_available.append(callback)
                return
            inner = self._inner
        inner.when_available(callback)

    @contextmanager
    def paused(self) -> Iterator[None]:
        inner = self._inner
        if inner is None:
            yield
            return
        with inner.paused():
            yield

    def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if self._inner is not None:
            self._inner.close()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is not None:
            return getattr(inner, name)
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            # Looked up at the call: a caller may keep this function (``TimedStore``
            # keeps each method it wraps) past the store's opening.
            opened = self._inner
            if opened is None:
                raise StoreUnavailable(f"store {self.where} refused this worker ({self._reason})")
            return getattr(opened, name)(*args, **kwargs)

        return call

    def _retry(self) -> None:
        said_at = 0.0
        waited = 0.0
        while not self._stopping.wait(RETRY_SECONDS):
            waited += RETRY_SECONDS
            try:
                store = self._opener()
            except ConfigError as exc:
                reason = str(exc)
                if reason != self._reason or waited - said_at >= REPEAT_SECONDS:
                    log.error("store %s still refuses this worker: %s", self.where, reason)
                    said_at = waited
                self._reason = reason
                continue
            except Exception:  # a bug, not a refusal: said, and tried again on schedule
                log.exception("store %s: opening it again failed unexpectedly", self.where)
                continue
            if self._stopping.is_set():
                store.close()  # closed meanwhile
                return
            with self._state:
                self._inner = store
                callbacks, self._on_available = self._on_available, []
            log.info("store %s opened after %.0f s refusing this worker", self.where, waited)
            for callback in callbacks:
                try:
                    store.when_available(callback)
                except Exception:
                    log.exception("store %s: a step waiting for it failed", self.where)
            return
