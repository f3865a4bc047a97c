"""Prometheus metrics of one app: requests, offers served, suppressions, events, the model
and the store.

Each app has its own ``CollectorRegistry`` (kept on ``app.state.metrics``), never the
process-wide default: tests build many apps in one process, and two apps must not add
to each other's counts or refuse each other's metric names.

Label values come from bounded sets the code defines (route templates, HTTP methods,
offer sources, rule names, event types, channels, model versions), never from a request:
a customer id in a label would be personal data and an unbounded number of series.

``NBO_METRICS=false`` gives ``Metrics``, whose methods do nothing, so routes record
unconditionally and a load test can compare the cost of metrics on and off.

With workers (``nbo serve``), prometheus-client's multiprocess mode: each worker writes
its counters and histograms to files of its own in ``PROMETHEUS_MULTIPROC_DIR`` (set by
``nbo serve`` before this library is imported), and whichever worker answers a scrape
adds up every worker's, those of workers that have exited included, so a count never
drops when a worker is replaced. The model's series come from the workers' board
instead, one set per live worker (``pid`` label): a multiprocess gauge cannot drop a
label set, so a swapped-out version would stay behind at 0.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nbo.data.events import Event
from nbo.offers.decision import Decision
from nbo.runtime.workers import WorkerBoard
from nbo.service.state import ModelHolder
from nbo.store.base import AddResult, Store

# The route label of a request no route matched (its raw path could hold anything).
UNMATCHED = "unmatched"
# Methods kept as label values; any other becomes "other" (a client may send any token).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Offers calls take about a millisecond in-process; slow ones (a cold store) tens of ms.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# SQLite reads on a warm page cache are tens of microseconds; a durable commit waits on
# the disk (milliseconds); an erasure checkpoints the log (more).
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
# Offers calls decided together (``nbo.service.chunking``): one when calls come one at a
# time, about the connections in flight per worker under load.
CHUNK_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _ProcessId:
    """This process's id, for prometheus-client's multiprocess values, which ask for it
    on every increment to notice a fork: ``os.getpid`` is a system call each time, about
    0.9 of an increment's 1.6 µs here, and an offers call makes about twenty increments. Read
    once, and again in the child after every fork (``os.register_at_fork``), so a forked
    worker still writes files of its own."""

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self._refresh)

    def _refresh(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value


# Before any metric exists: each value is made by the class current at its creation.
if getattr(values.ValueClass, "_multiprocess", False):
    values.ValueClass = values.MultiProcessValue(process_identifier=_ProcessId())


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class Metrics:
    """No metrics: every method does nothing (``NBO_METRICS=false``)."""

    registry: CollectorRegistry | None = None

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered (``route``: the path template, or ``UNMATCHED``)."""

    def record_decision(self, decision: Decision, channel: str) -> None:
        """An offers answer: its offers by source, what the rules removed or withheld."""

    def record_events(self, events: Sequence[Event], result: AddResult, rejected: int) -> None:
        """A ``POST /v1/events``: stored and duplicate events by type, and the rejected."""

    def record_unknown_items(self, lines: int, case_slips: int) -> None:
        """Posted purchase lines of items the model does not know, ``case_slips`` of them
        differing from a known item only by case."""

    def observe_chunk(self, size: int) -> None:
        """Offers calls decided together as one chunk (``nbo.service.chunking``)."""

    def record_reload_refused(self) -> None:
        """A reload of the model refused (the last good one serves on)."""

    def observe_store(self, store: Store) -> Store:
        """The store the routes use: timed per operation when metrics are on."""
        return store


class PrometheusMetrics(Metrics):
    """The service's metrics in their own registry (``generate_latest(registry)``).
    With ``multiprocess_dir``, ``registry`` is the scrape's: every worker's files added
    up, and the model of every worker on ``board``."""

    def __init__(
        self,
        models: ModelHolder,
        board: WorkerBoard | None = None,
        multiprocess_dir: Path | None = None,
    ) -> None:
        own = CollectorRegistry(auto_describe=True)
        if multiprocess_dir is None:
            self.registry = own
        else:
            # This worker's metrics are read from their files, with everyone else's.
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=str(multiprocess_dir))
        self._requests = Counter(
            "nbo_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=own,
        )
        self._latency = Histogram(
            "nbo_http_request_duration_seconds",
            "time from request to the end of the response, by route template, method and status",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=own,
        )
        self._offers = Counter(
            "nbo_offers_served",
            "offers returned by the offers route, by reason source and channel",
            ["source", "channel"],
            registry=own,
        )
        self._suppressions = Counter(
            "nbo_suppressions",
            "candidates removed per ranking rule (just_bought, fatigue, ineligible, "
            "offer_cap) and whole answers withheld (no_channel_consent, frequency_cap)",
            ["rule"],
            registry=own,
        )
        self._events = Counter(
            "nbo_events_ingested",
            "posted events by type: outcome accepted (stored) or duplicate (not stored again)",
            ["type", "outcome"],
            registry=own,
        )
        self._rejected = Counter(
            "nbo_events_rejected",
            "posted events refused as invalid (no type label: an invalid event's type is "
            "whatever the client sent)",
            registry=own,
        )
        self._unknown_items = Counter(
            "nbo_events_unknown_items",
            "posted purchase lines (of events stored) whose item the served model does not "
            "know, by match: case (a known item differs only by case: 85123a for 85123A, "
            "which suppresses nothing) or none",
            ["match"],
            registry=own,
        )
        self._store = Histogram(
            "nbo_store_seconds",
            "time of the event store's operations the service makes, by operation",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=own,
        )
        self._chunks = Histogram(
            "nbo_offers_chunk_size",
            "offers calls decided together as one chunk (the calls in flight at once)",
            buckets=CHUNK_BUCKETS,
            registry=own,
        )
        self._reload_failures = Counter(
            "nbo_model_reload_failures",
            "reloads of the model refused (a version that does not load or check, or a "
            "CURRENT naming none): the last good model serves on, and a restart would fail",
            registry=own,
        )
        self.registry.register(ModelCollector(models, board))
        self._store_state = StoreCollector()
        self.registry.register(self._store_state)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._suppression_children: dict[str, Counter] = {}
        self._offer_children: dict[tuple[str, str], Counter] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # The labelled children of each (route, method, status), looked up once: ``labels``
        # takes a lock and builds a key on every call, on the path of every request.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self._requests.labels(route, method, str(status)),
                self._latency.labels(route, method, str(status)),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_decision(self, decision: Decision, channel: str) -> None:
        ranking = decision.ranking
        if ranking is None:
            if decision.suppressed_reason is not None:
                self._suppression(decision.suppressed_reason).inc()
            return
        for rule, count in ranking.removed.items():
            # Every rule's series shows from the first answer, zero or not (the child
            # is made); a zero adds nothing, and with workers each ``inc`` is a write
            # to the worker's metrics file.
            child = self._suppression(rule)
            if count:
                child.inc(count)
        # Counted per source from the answer's columns: building the offers as objects
        # only to count them cost as much as answering them.
        for source, count in collections.Counter(ranking.offer_sources).items():
            key = (source, channel)
            offers = self._offer_children.get(key)
            if offers is None:
                offers = self._offer_children[key] = self._offers.labels(source, channel)
            offers.inc(count)

    def _suppression(self, rule: str) -> Counter:
        """The rule's child of ``nbo_suppressions``, looked up once (``labels`` takes a
        lock and builds a key: four rules and a source or two on every offers call
        were 3% of an offers call's server time, profiled with py-spy)."""
        child = self._suppression_children.get(rule)
        if child is None:
            child = self._suppression_children[rule] = self._suppressions.labels(rule)
        return child

    def record_events(self, events: Sequence[Event], result: AddResult, rejected: int) -> None:
        type_of = {event.event_id: event.type for event in events}
        for outcome, ids in (("accepted", result.accepted), ("duplicate", result.duplicates)):
            for event_id in ids:
                self._events.labels(type_of[event_id], outcome).inc()
        if rejected:
            self._rejected.inc(rejected)

    def record_unknown_items(self, lines: int, case_slips: int) -> None:
        if case_slips:
            self._unknown_items.labels("case").inc(case_slips)
        if lines > case_slips:
            self._unknown_items.labels("none").inc(lines - case_slips)

    def observe_chunk(self, size: int) -> None:
        self._chunks.observe(size)

    def record_reload_refused(self) -> None:
        self._reload_failures.inc()

    def observe_store(self, store: Store) -> Store:
        self._store_state.store = store
        return cast(Store, TimedStore(store, self._store.labels))


class StoreCollector(Collector):
    """``nbo_store_available``, read at scrape time from the scraped worker's store (no
    I/O: what its calls, probe and recovery thread found last), as ``/health/ready``'s
    ``store`` says it. A gauge an alert can use: the 503 counter stays flat on a replica
    no call reaches, and readiness's JSON is not a Prometheus series. No series until
    the worker has opened its store."""

    def __init__(self) -> None:
        self.store: Store | None = None

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        if self.store is not None:
            family.add_metric([], 1.0 if self.store.available else 0.0)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "nbo_store_available",
            "1 when the event store answers this process's calls, 0 while its server "
            "counts as away (PostgreSQL: a restart, an outage, a refusal)",
        )


class TimedStore:
    """The store with each method call timed under its name, in ``nbo_store_seconds``.

    A proxy rather than timing calls in every route: every store operation a route makes
    is measured, including methods added to the store later, and ``store.py`` keeps its
    SQL free of metrics. Wrappers are made once per method and kept on the proxy.
    """

    def __init__(self, store: Store, histogram: Callable[[str], Histogram]) -> None:
        self._inner = store
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute
        observe = self._histogram(name).observe

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)

        setattr(self, name, timed)
        return timed


class ModelCollector(Collector):
    """The served model, read at scrape time: from the holder (one process), always the
    version serving now, whichever way it was loaded or swapped, with nothing to keep in
    step; or with ``board``, from every live worker's status there, each under its pid."""

    def __init__(self, models: ModelHolder, board: WorkerBoard | None = None) -> None:
        self._models = models
        self._board = board

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        info, loaded_at, load_seconds = self._families()
        if self._board is None:
            serving = self._models.serving
            if serving is not None:
                current = serving.current.version
                info.add_metric([current, "current"], 1)
                for version in dict.fromkeys(m.version for m in serving.models()):
                    if version != current:
                        info.add_metric([version, "experiment"], 1)
                loaded_at.add_metric([], serving.current.loaded_at)
            if self._models.load_seconds is not None:
                load_seconds.add_metric([], self._models.load_seconds)
            return iter((info, loaded_at, load_seconds))
        for status in self._board.statuses():
            pid = str(status.pid)
            for version, role in status.models:
                info.add_metric([version, role, pid], 1)
            if status.loaded_at is not None:
                loaded_at.add_metric([pid], status.loaded_at)
            if status.load_seconds is not None:
                load_seconds.add_metric([pid], status.load_seconds)
        return iter((info, loaded_at, load_seconds))

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        worker = [] if self._board is None else ["pid"]
        return (
            GaugeMetricFamily(
                "nbo_model_info",
                "1 for each model version serving: the current one and experiment variants'",
                labels=["version", "role", *worker],
            ),
            GaugeMetricFamily(
                "nbo_model_loaded_timestamp_seconds",
                "when the current model was loaded (unix seconds)",
                labels=worker,
            ),
            GaugeMetricFamily(
                "nbo_model_load_seconds",
                "how long the last successful model load took",
                labels=worker,
            ),
        )


def build_metrics(
    enabled: bool,
    models: ModelHolder,
    board: WorkerBoard | None = None,
    multiprocess_dir: Path | None = None,
) -> Metrics:
    """The app's metrics: Prometheus in a registry of its own (or, with workers, every
    worker's added up), or none."""
    return PrometheusMetrics(models, board, multiprocess_dir) if enabled else Metrics()
