"""The catalogue being served, re-read when its file changes, without a restart."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.catalog.terms import Catalog
from nbo.core.errors import CatalogError

log = logging.getLogger(__name__)

# --- serving the live file ----------------------------------------------------------

_Stamp = tuple[int, int, int]


def _stamp_of(path: Path) -> _Stamp | None:
    """What tells a changed file apart cheaply: mtime, size and inode (a file swapped in
    by rename changes inode even when its mtime is old). None when the file is gone."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


class CatalogHolder:
    """The catalogue being served, re-read when its file changes, without a restart.

    ``current()`` looks at the file at most once per ``check_every_s`` (one ``os.stat``), so
    it is cheap on the request path. A changed file is loaded whole and swapped in as
    one reference; a bad one is refused, logged once, and kept in ``last_error`` while
    the old catalogue serves on. A request never waits for a reload: while one thread
    reloads, the others keep the catalogue they have.

    A missing or bad file at start raises CatalogError: the service refuses to start.
    """

    def __init__(self, path: Path | None, check_every_s: float = 1.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        # Why the file on disk was refused, on one line (an API field shown as it is),
        # and its problems one by one; None while it serves.
        self.last_error: str | None = None
        self.last_problems: list[str] | None = None
        self.last_error_at: float | None = None
        if path is None:
            self._catalog = default_catalog()
            self._seen: _Stamp | None = None
        else:
            # Stat before reading: a write racing the read shows as a change next time.
            self._seen = _stamp_of(path)
            self._catalog = load_catalog(path)
            log.info(
                "catalogue %s loaded: %s, %d offers",
                path,
                self._catalog.fingerprint[:12],
                self._catalog.offer_count,
            )
        self._next_check = time.monotonic() + check_every_s
        # Called with each catalogue a look at the file swaps in (not the first one).
        self.on_load: Callable[[Catalog], None] | None = None

    @property
    def serving(self) -> Catalog:
        """The catalogue serving now, without a look at the file."""
        return self._catalog

    def current(self) -> Catalog:
        """The catalogue to use now; looks at the file when ``check_every_s`` has passed."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._check(force=False)
        return self._catalog

    def refresh(self) -> Catalog:
        """Look at the file now, whatever the interval (waits for a reload in progress)."""
        if self.path is not None:
            self._check(force=True)
        return self._catalog

    def _check(self, force: bool) -> None:
        if not self._lock.acquire(blocking=force):
            return  # another thread is looking; serve what we have
        try:
            if not force and time.monotonic() < self._next_check:
                return
            self._next_check = time.monotonic() + self.check_every_s
            assert self.path is not None
            stamp = _stamp_of(self.path)
            if stamp == self._seen:
                return
            self._seen = stamp
            if stamp is None:
                self._refuse(f"{self.path}: the file is gone")
                return
            try:
                catalog = load_catalog(self.path)
            except CatalogError as exc:
                self._refuse(exc.one_line(), exc.listed())
                return
            except Exception as exc:
                # The stamp is already seen: a failure not kept here would leave the file
                # unread until its next edit, with last_error null and a 500 now.
                problem = f"{self.path}: could not be read ({type(exc).__name__}: {exc})"
                self._refuse(problem, with_traceback=True)
                return
            self.last_error = self.last_error_at = self.last_problems = None
            if catalog.fingerprint != self._catalog.fingerprint:
                self._catalog = catalog
                log.info(
                    "catalogue %s loaded: %s, %d offers",
                    self.path,
                    catalog.fingerprint[:12],
                    catalog.offer_count,
                )
                if self.on_load is not None:
                    self.on_load(catalog)
        finally:
            self._lock.release()

    def _refuse(
        self, problem: str, problems: list[str] | None = None, with_traceback: bool = False
    ) -> None:
        """Keep why the file was refused: ``problem`` on one line, ``problems`` one by
        one (logged so, a line each)."""
        self.last_error = problem
        self.last_problems = [problem] if problems is None else problems
        self.last_error_at = time.time()
        log.error(
            "catalogue refused, still serving %s: %s",
            self._catalog.fingerprint[:12],
            "\n".join(self.last_problems),
            exc_info=with_traceback,
        )

    def status(self) -> dict[str, Any]:
        """What is live and whether the file on disk was refused, for operators."""
        catalog = self._catalog
        return {
            "source": None if catalog.source is None else str(catalog.source),
            "fingerprint": catalog.fingerprint,
            "loaded_at": _iso(catalog.loaded_at),
            "offers": catalog.offer_count,
            "last_error": self.last_error,
            "last_error_problems": self.last_problems,
            "last_error_at": _iso(self.last_error_at),
        }
