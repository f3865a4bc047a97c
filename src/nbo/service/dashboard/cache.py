"""The dashboard's figures, computed at most once a minute per process and never on the
event loop.

Each figure is keyed by what it depends on (the page, the model version, its
parameters) and kept for ``TTL_SECONDS``: a model swap makes a new key at once, and
events or the clock move a figure within the minute. The work runs in the thread pool,
so the event loop keeps answering offers while a figure is drawn; requests that want a
figure being computed wait for that one computation instead of starting their own.

Per process, on purpose: with several workers (``nbo serve --workers``) each keeps its
own, and none depends on another's (they read the same store and models). Entries are
few and small (a page's figures, not customers' answers: a customer's page is never
cached), and expired ones are dropped when a new one is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

TTL_SECONDS = 60.0
# More keys than any page makes in a minute (pages x model versions x parameters).
MAX_ENTRIES = 256

T = TypeVar("T")


class FigureCache:
    """Values computed in the thread pool, kept ``ttl`` seconds per key."""

    def __init__(
        self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}
        # How many times a value was computed (for the tests and the curious).
        self.computed = 0

    async def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of ``key``: the kept one while fresh, else ``compute()`` run once in
        the thread pool (a failure is not kept: the next request tries again)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            value: T = await asyncio.shield(entry[1])
            return value
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._forget_expired(now)
        self._entries[key] = (now + self.ttl, future)
        try:
            result = await run_in_threadpool(compute)
        except BaseException as exc:
            self._entries.pop(key, None)
            future.set_exception(exc)
            # Retrieved here, so a failure nobody else awaited is not logged as lost.
            future.exception()
            raise
        self.computed += 1
        future.set_result(result)
        return result

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
