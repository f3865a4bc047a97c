"""Offers calls in flight at once are decided together (``nbo.service.chunking``), and each
gets the answer it would get alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import CLOCK

from nbo.offers.decision import Occasion
from nbo.runtime import decide as runtime_decide
from nbo.service import chunking
from nbo.service.app import create_app
from nbo.service.chunking import Chunker
from nbo.settings import Settings


def _calls(app: Any, paths: list[str]) -> tuple[list[httpx.Response], list[httpx.Response], str]:
    """Each path's answer asked alone (one after the other), then all at once; and the
    metrics after."""

    async def run() -> tuple[list[httpx.Response], list[httpx.Response], str]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://nbo") as client:
                headers = {"X-Request-ID": "same"}
                alone = [await client.get(path, headers=headers) for path in paths]
                together = await asyncio.gather(
                    *(client.get(path, headers=headers) for path in paths)
                )
                metrics = (await client.get("/metrics")).text
        return alone, list(together), metrics

    return asyncio.run(run())


def _context(remote: bool) -> Any:
    """A stand-in for a ``Context``: what the chunker reads of one (the decision is
    replaced in these tests). ``remote``: its store's calls are round trips to a server
    (PostgreSQL)."""
    store = type("Store", (), {"remote": remote})()
    return type("Context", (), {"models": object(), "catalog": object(), "store": store})()


def _chunk_sizes(metrics: str) -> dict[str, float]:
    family = next(
        f for f in text_string_to_metric_families(metrics) if f.name == "nbo_offers_chunk_size"
    )
    return {
        sample.name.removeprefix("nbo_offers_chunk_size_")
        + sample.labels.get("le", ""): sample.value
        for sample in family.samples
    }


def test_calls_in_flight_at_once_are_one_chunk_and_answer_as_alone(models_dir: Path) -> None:
    """Known customers, one asked twice, one the model does not know, and calls of
    another offer count and channel, all in flight at once: every answer is byte for
    byte the one the same call got alone, and the calls of one occasion were decided as
    one chunk (the metric counts the chunks and their sizes)."""
    app = create_app(Settings(models_dir=models_dir, clock=CLOCK))
    customers = ["a00", "a01", "a02", "b00", "b01", "a00", "nobody-known"]
    paths = [f"/v1/customers/{c}/offers?k=5&channel=app" for c in customers]
    paths += ["/v1/customers/a01/offers?k=3&channel=app", "/v1/customers/b00/offers?k=5"]
    alone, together, metrics = _calls(app, paths)
    for one, other in zip(alone, together, strict=True):
        assert one.status_code == other.status_code == 200, other.text
        assert one.content == other.content
    assert together[0].json()["offers"] and together[6].json()["personalized"] is False
    sizes = _chunk_sizes(metrics)
    # Alone: one chunk of one per call. At once: one chunk per occasion (7 + 1 + 1 calls).
    assert sizes["count"] == len(paths) + 3
    assert sizes["sum"] == 2 * len(paths)
    assert sizes["bucket1.0"] == len(paths) + 2


def test_a_chunk_that_fails_is_decided_call_by_call(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When deciding a chunk raises, its calls are decided one at a time: the call that
    fails gets a 500, the others their offers."""
    decide = runtime_decide.decide_customers

    def failing(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        if "a02" in customer_ids:
            raise RuntimeError("a bug")
        return decide(context, customer_ids, occasion, stage)

    monkeypatch.setattr(chunking, "decide_customers", failing)
    app = create_app(Settings(models_dir=models_dir, clock=CLOCK))
    paths = [f"/v1/customers/{c}/offers?k=5" for c in ("a00", "a01", "a02", "b00")]

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://nbo") as client:
                return list(await asyncio.gather(*(client.get(path) for path in paths)))

    answers = asyncio.run(run())
    assert [a.status_code for a in answers] == [200, 200, 500, 200]
    assert answers[2].json()["error"] == "internal_error"
    assert all(a.json()["offers"] for a in (answers[0], answers[1], answers[3]))


def test_a_delivery_is_not_chunked() -> None:
    """Deliveries are decided and recorded under the customer's lock, never in a chunk."""

    async def run() -> None:
        await Chunker().decide(None, "a00", Occasion("email", 5, 0, delivery=True))  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="deliver_customers"):
        asyncio.run(run())


@pytest.mark.parametrize("remote", [False, True], ids=["embedded store", "remote store"])
def test_under_load_a_chunk_waits_for_the_next_calls(
    monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """After a chunk of more than one call, a new chunk waits (``GATHER_S``) for the calls
    that follow (the clients of the last chunk calling again), and is decided as soon as
    it holds as many as the last chunks did; a client alone (chunks of one) is decided
    on the loop's next turn, without waiting. The waits are made long here so that the
    test does not depend on the machine's speed."""
    chunks: list[list[str]] = []

    def decided(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        chunks.append(list(customer_ids))
        return [f"decided {c}" for c in customer_ids]

    monkeypatch.setattr(chunking, "decide_customers", decided)
    monkeypatch.setattr(chunking, "GATHER_S", 0.2)
    monkeypatch.setattr(chunking, "GATHER_MAX_S", 0.5)
    monkeypatch.setattr(chunking, "BUSY_S", 60.0)
    context: Any = _context(remote)
    occasion = Occasion("app", 5, 0)

    async def run() -> None:
        chunker = Chunker()
        call = chunker.decide
        # A client alone: decided at once, whatever the wait would be.
        assert await asyncio.wait_for(call(context, "a", occasion), 0.1) == "decided a"
        assert await asyncio.wait_for(call(context, "b", occasion), 0.1) == "decided b"
        # Two at once: one chunk; the next call then waits for company.
        await asyncio.gather(call(context, "c", occasion), call(context, "d", occasion))
        first = asyncio.ensure_future(call(context, "e", occasion))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not first.done()
        # As many calls as the last chunks held: decided at once, not after the wait.
        second = call(context, "f", occasion)
        both = await asyncio.wait_for(asyncio.gather(first, second), 0.1)
        assert both == ["decided e", "decided f"]
        # Fewer: the chunk waits, then is decided with the calls it has.
        alone = asyncio.ensure_future(call(context, "g", occasion))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not alone.done()
        assert await alone == "decided g"

    asyncio.run(run())
    assert chunks == [["a"], ["b"], ["c", "d"], ["e", "f"], ["g"]]


@pytest.mark.parametrize("remote", [False, True], ids=["embedded store", "remote store"])
def test_no_call_is_left_waiting_when_a_chunk_answers_wrongly(
    monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """A chunk whose decision does not answer every call (a broken contract) fails its
    calls rather than leaving them waiting for ever."""

    def short(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        return ["only one answer"]

    monkeypatch.setattr(chunking, "decide_customers", short)
    context: Any = _context(remote)
    occasion = Occasion("app", 5, 0)

    async def run() -> list[object]:
        chunker = Chunker()
        calls = (chunker.decide(context, c, occasion) for c in ("a", "b"))
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)

    answers = asyncio.run(run())
    assert all(isinstance(a, Exception) for a in answers)


@pytest.mark.parametrize("remote", [False, True], ids=["embedded store", "remote store"])
def test_a_remote_stores_chunk_is_decided_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """With a store whose calls are round trips to a server (PostgreSQL), a chunk is
    decided in the thread pool: while its decision waits (on the server, here on an
    event), the loop goes on running other work, and the calls in flight are still
    decided as one chunk. An embedded store's chunk (SQLite) is decided on the loop's
    own thread, as before. Before, every chunk was decided on the loop: a slow server
    held every call of the worker."""
    release = threading.Event()
    chunks: list[tuple[list[str], int]] = []

    def decided(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        chunks.append((list(customer_ids), threading.get_ident()))
        if remote:
            assert release.wait(30), "never released"
        return [f"decided {c}" for c in customer_ids]

    monkeypatch.setattr(chunking, "decide_customers", decided)
    occasion = Occasion("app", 5, 0)

    async def run() -> tuple[list[str], int, bool]:
        chunker, context = Chunker(), _context(remote)
        calls = asyncio.gather(*(chunker.decide(context, c, occasion) for c in "abc"))
        # Turns of the loop while the chunk is being decided: with the decision on the
        # loop (and waiting), none of these would run until it is done.
        for _ in range(20):
            await asyncio.sleep(0.01)
        waiting = not calls.done()
        release.set()
        return await asyncio.wait_for(calls, 30), threading.get_ident(), waiting

    answers, loop_thread, waiting = asyncio.run(run())
    assert answers == ["decided a", "decided b", "decided c"]
    assert [customers for customers, _ in chunks] == [["a", "b", "c"]]
    decided_on_loop = chunks[0][1] == loop_thread
    assert decided_on_loop is not remote
    assert waiting is remote


def test_a_remote_stores_chunk_is_answered_even_when_its_callers_went_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call cancelled (its client gone) while its chunk is decided in the thread pool
    is left alone; the other calls of the chunk get their answers."""
    release = threading.Event()

    def decided(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        assert release.wait(30), "never released"
        return [f"decided {c}" for c in customer_ids]

    monkeypatch.setattr(chunking, "decide_customers", decided)
    occasion = Occasion("app", 5, 0)

    async def run() -> list[object]:
        chunker, context = Chunker(), _context(True)
        gone = asyncio.ensure_future(chunker.decide(context, "a", occasion))
        stays = asyncio.ensure_future(chunker.decide(context, "b", occasion))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0)
        release.set()
        return [await asyncio.wait_for(stays, 30), gone.cancelled()]

    assert asyncio.run(run()) == ["decided b", True]


def test_a_remote_stores_calls_that_come_while_a_chunk_is_decided_make_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One chunk at a time in the thread pool, as on the loop: the calls that come while
    a chunk waits on the server join one chunk, decided once the first is done, rather
    than each making a chunk (and a thread, and a connection) of its own."""
    release = threading.Event()
    chunks: list[list[str]] = []

    def decided(context: Any, customer_ids: Any, occasion: Occasion, stage: Any = None) -> Any:
        chunks.append(list(customer_ids))
        assert release.wait(30), "never released"
        return [f"decided {c}" for c in customer_ids]

    monkeypatch.setattr(chunking, "decide_customers", decided)
    occasion = Occasion("app", 5, 0)

    async def run() -> list[str]:
        chunker, context = Chunker(), _context(True)
        first = asyncio.ensure_future(chunker.decide(context, "a", occasion))
        await asyncio.sleep(0.05)  # "a" is being decided
        later = []
        for customer in "bcd":
            later.append(asyncio.ensure_future(chunker.decide(context, customer, occasion)))
            await asyncio.sleep(0.02)
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(first, *later), 30))

    assert asyncio.run(run()) == ["decided a", "decided b", "decided c", "decided d"]
    assert chunks == [["a"], ["b", "c", "d"]]
