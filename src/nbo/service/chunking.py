"""Offers calls in flight at one moment, decided as one chunk.

``decide_customers`` costs far less per customer in a chunk than alone: the fixed cost of
its numpy, LightGBM and store calls is paid once per chunk. CPU per customer, with the
explanations, one customer at a time against eight at once: 1.9 ms and 0.66 ms on
Online Retail, 2.1 ms and 0.70 ms on the synthetic 100k x 20k. So an offers preview does
not decide the moment its route runs: it joins a chunk. A call that comes alone (the
worker idle, or one client calling again as soon as it has its answer) is decided on
the loop's next turn, with the calls the loop took in on the same turn. Under load (a
chunk of more than one call was done within ``BUSY_S``) a new chunk waits
for the calls that follow, until none has joined for ``GATHER_S`` (1.5 ms) and at most
``GATHER_MAX_S`` (4 ms), or until it holds as many calls as the largest of the last
``RECENT_CHUNKS`` chunks of more than one: the answers of a chunk go out one after the
other and their clients' next calls come back as spread out.

A chunk holds the calls of one occasion (channel, offer count, second of the clock) made
with the same served models and catalogue, so each call gets the decision it would get
alone: ``decide`` treats every customer of a chunk independently, as a campaign's chunk
(tests hold this for concurrent calls). If deciding a chunk raises, its calls are decided
one by one, so only the call that fails gets the error.

Where a chunk is decided depends on the store (``Store.remote``). SQLite's reads take
microseconds: the chunk is decided on the event loop, as a loop callback. PostgreSQL's
are round trips to its server (about four per chunk, 0.6-0.9 ms each on loopback, as
long as the server takes when it is slow or away): the chunk is decided in the thread
pool, so the loop goes on answering every other call, ``/health/live`` included, and
takes in the next calls while a chunk waits on the server. One chunk at a time there, as
on the loop: the calls that come meanwhile make one chunk, which gathers from the
moment the first is done (its clients call again then). Deliveries (``?record=true``)
are not chunked: each is decided and recorded under its customer's lock
(``nbo.runtime.deliver``).
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from nbo.offers.decision import Occasion
from nbo.runtime.decide import Context, Decided, decide_customers

# Under load a new chunk waits for more calls before it is decided: until no call has
# joined it for GATHER_S, and never longer than GATHER_MAX_S after it opened (seconds).
# The answers of one chunk go out one after the other (each is built and sent in turn),
# and their clients' next calls come back as spread out; without the wait the first of
# them made a chunk of its own (with wrk's 8 connections, chunks of 3 on average). On
# uvloop the answers go out sooner and the calls come back more spread out: with 0.3 and
# 2 ms the chunks held 4.6-5.2 calls of wrk's 8, with 1.5 and 4 ms all 8, and one worker
# answered 12% more offers at 100k x 20k (median of 15 rounds) and 24% more on Online
# Retail (9 rounds), with the p99 lower on both (docs/benchmarks.md, eighth round).
GATHER_S = 0.0015
GATHER_MAX_S = 0.004
# Under load means: a chunk of more than one call was decided this recently (seconds),
# whatever the chunks since held (one straggler alone must not end the waits that
# gather the others). A client alone, calling again as soon as it has its answer, makes
# chunks of one and never waits.
BUSY_S = 0.01
# How many of the last chunks of more than one call tell how many calls to expect.
RECENT_CHUNKS = 8


def _unobserved(size: int) -> None:
    """No metrics."""


@dataclass
class _Chunk:
    """The calls waiting to be decided together, with what they are decided with."""

    context: Context
    occasion: Occasion
    opened: float  # the loop's clock
    calls: list[tuple[str, asyncio.Future[Decided]]] = field(default_factory=list)
    last_joined: float = 0.0
    waiting: bool = False  # on its timer (``Chunker._gathered``)


class Chunker:
    """Decides the offers previews of one event loop in chunks (see the module).

    ``observe`` is told the size of every chunk decided (the metrics' histogram).
    """

    def __init__(self, observe: Callable[[int], None] = _unobserved) -> None:
        self._waiting: dict[tuple[int, int, Occasion], _Chunk] = {}
        self._observe = observe
        # When the last chunk of more than one call was done (the loop's clock), and the
        # sizes of the last few such chunks: a waiting chunk as large as the largest of
        # them is decided at once (its clients are all in; waiting on would leave the
        # worker idle, the timer rounded up to epoll's millisecond).
        self._last_shared = -math.inf
        self._shared_sizes: collections.deque[int] = collections.deque(maxlen=RECENT_CHUNKS)
        # The chunk being decided in the thread pool (a remote store's), if any, and the
        # chunks that wait for it to be done: one at a time, as on the loop, so the calls
        # that come meanwhile join one chunk rather than each making one of their own.
        self._off_loop: asyncio.Task[None] | None = None
        self._after_off_loop: list[tuple[int, int, Occasion]] = []

    async def decide(self, context: Context, customer_id: str, occasion: Occasion) -> Decided:
        """The customer's decision on ``occasion``, made in a chunk with the other calls
        of this turn of the loop."""
        if occasion.delivery:
            raise ValueError("a delivery is decided and recorded by deliver_customers")
        loop = asyncio.get_running_loop()
        # The chunk's context and occasion are the first call's: another call joins only
        # when its context serves the same models and catalogue (the rest of a context
        # comes from the settings, the same for every call of the app).
        key = (id(context.models), id(context.catalog), occasion)
        chunk = self._waiting.get(key)
        if chunk is None:
            now = loop.time()
            chunk = self._waiting[key] = _Chunk(context, occasion, now)
            busy = now - self._last_shared < BUSY_S
            if busy:
                chunk.waiting = True
                loop.call_later(GATHER_S, self._gathered, key)
            else:
                # After the callbacks already due on this turn: the other calls read on it.
                loop.call_soon(self._decide, key)
        answer: asyncio.Future[Decided] = loop.create_future()
        chunk.calls.append((customer_id, answer))
        chunk.last_joined = loop.time()
        if chunk.waiting and len(chunk.calls) >= max(self._shared_sizes, default=0):
            chunk.waiting = False
            loop.call_soon(self._decide, key)
        return await answer

    def _gathered(self, key: tuple[int, int, Occasion]) -> None:
        """A waiting chunk's timer: decide it, unless a call joined it in the last
        ``GATHER_S`` and it may still wait (then look again when that has passed)."""
        chunk = self._waiting.get(key)
        if chunk is None or not chunk.waiting:
            return  # decided already: it filled up
        loop = asyncio.get_running_loop()
        now = loop.time()
        until = min(chunk.last_joined + GATHER_S, chunk.opened + GATHER_MAX_S)
        if until > now:
            loop.call_later(until - now, self._gathered, key)
        else:
            self._decide(key)

    def _decide(self, key: tuple[int, int, Occasion]) -> None:
        chunk = self._waiting.get(key)
        if chunk is None:
            return
        if chunk.context.store.remote and self._off_loop is not None:
            # Decided once the chunk in the thread pool is done; calls join it meanwhile.
            chunk.waiting = False
            if key not in self._after_off_loop:
                self._after_off_loop.append(key)
            return
        del self._waiting[key]
        # A call whose client went away was cancelled: nothing to decide for it.
        calls = [(customer, answer) for customer, answer in chunk.calls if not answer.done()]
        if not calls:
            return
        self._observe(len(calls))
        customers = [customer for customer, _ in calls]
        if chunk.context.store.remote:
            # Its reads are round trips to a server: in the thread pool, so the loop goes
            # on answering (health checks included) while they wait, however long.
            loop = asyncio.get_running_loop()
            self._off_loop = loop.create_task(self._decide_off_loop(chunk, calls))
            return
        try:
            outcomes: list[Decided | Exception] | Exception = _decisions(chunk, customers)
        except Exception as exc:
            outcomes = exc
        self._answer(calls, outcomes)

    async def _decide_off_loop(
        self, chunk: _Chunk, calls: list[tuple[str, asyncio.Future[Decided]]]
    ) -> None:
        try:
            try:
                outcomes: list[Decided | Exception] | Exception = await run_in_threadpool(
                    _decisions, chunk, [customer for customer, _ in calls]
                )
            except Exception as exc:
                outcomes = exc
            self._answer(calls, outcomes)
        finally:
            self._off_loop = None
            after, self._after_off_loop = self._after_off_loop, []
            for key in after:
                self._gather_again(key)

    def _gather_again(self, key: tuple[int, int, Occasion]) -> None:
        """A chunk that waited for the one in the thread pool gathers from now on, as a
        new chunk under load does: the clients of the chunk just answered call again
        now. Decided at once when it holds as many calls as the last chunks did."""
        chunk = self._waiting.get(key)
        if chunk is None:
            return
        loop = asyncio.get_running_loop()
        chunk.opened = chunk.last_joined = loop.time()
        if len(chunk.calls) >= max(self._shared_sizes, default=0):
            loop.call_soon(self._decide, key)
        else:
            chunk.waiting = True
            loop.call_later(GATHER_S, self._gathered, key)

    def _answer(
        self,
        calls: list[tuple[str, asyncio.Future[Decided]]],
        outcomes: list[Decided | Exception] | Exception,
    ) -> None:
        """Each call its decision or its error (on the loop: futures are not
        thread-safe); every call gets ``outcomes`` when it is one error. A call
        cancelled meanwhile (its client went away) gets nothing."""
        if not isinstance(outcomes, Exception) and len(outcomes) != len(calls):
            outcomes = RuntimeError(f"{len(outcomes)} decisions for {len(calls)} offers calls")
        for position, (_, answer) in enumerate(calls):
            if answer.done():
                continue
            one = outcomes if isinstance(outcomes, Exception) else outcomes[position]
            if isinstance(one, Exception):
                answer.set_exception(one)
            else:
                answer.set_result(one)
        if len(calls) > 1:
            self._last_shared = asyncio.get_running_loop().time()
            self._shared_sizes.append(len(calls))


def _decisions(chunk: _Chunk, customers: list[str]) -> list[Decided | Exception]:
    """Each customer's decision, in their order: the chunk's decided at once, or, if
    that raises, one by one, so only the customer that fails gets the error. Touches no
    future: it may run in a thread."""
    try:
        decided: list[Decided | Exception] = list(
            decide_customers(chunk.context, customers, chunk.occasion)
        )
    except Exception as exc:
        if len(customers) == 1:
            return [exc]
        outcomes: list[Decided | Exception] = []
        for customer in customers:
            try:
                (one,) = decide_customers(chunk.context, [customer], chunk.occasion)
            except Exception as alone:
                outcomes.append(alone)
            else:
                outcomes.append(one)
        return outcomes
    return decided
