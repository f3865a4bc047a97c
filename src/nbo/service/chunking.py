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
one by one, so only the call that fails gets the error. Deliveries (``?record=true``)
are not chunked: each is decided and recorded under its customer's lock
(``nbo.runtime.deliver``).
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from dataclasses import dataclass, field

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
        chunk = self._waiting.pop(key, None)
        if chunk is None:
            return
        # A call whose client went away was cancelled: nothing to decide for it.
        calls = [(customer, answer) for customer, answer in chunk.calls if not answer.done()]
        if not calls:
            return
        self._observe(len(calls))
        try:
            self._decide_calls(chunk, calls)
        except Exception as exc:
            # A loop callback's exception reaches no caller: the calls get it instead,
            # none is left waiting.
            for _, answer in calls:
                if not answer.done():
                    answer.set_exception(exc)
        finally:
            if len(calls) > 1:
                self._last_shared = asyncio.get_running_loop().time()
                self._shared_sizes.append(len(calls))

    def _decide_calls(
        self, chunk: _Chunk, calls: list[tuple[str, asyncio.Future[Decided]]]
    ) -> None:
        try:
            decided = decide_customers(chunk.context, [c for c, _ in calls], chunk.occasion)
        except Exception as exc:
            if len(calls) == 1:
                calls[0][1].set_exception(exc)
                return
            for customer, answer in calls:
                try:
                    (one,) = decide_customers(chunk.context, [customer], chunk.occasion)
                except Exception as alone:
                    answer.set_exception(alone)
                else:
                    answer.set_result(one)
            return
        if len(decided) != len(calls):
            raise RuntimeError(f"{len(decided)} decisions for {len(calls)} offers calls")
        for (_, answer), one in zip(calls, decided, strict=True):
            answer.set_result(one)
