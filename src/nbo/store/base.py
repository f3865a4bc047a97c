"""The store contract: what the service, campaigns and trainer need from a store, and the
records it answers with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from nbo.core.erased import ErasedList
from nbo.core.errors import EXIT_TEMPFAIL, NboError, StoreUrlError
from nbo.data.events import Event
from nbo.offers.state import Consent, ContactHistory, PostedPurchase


class StoreUnavailable(NboError):
    """The store's server cannot be reached or dropped the connection (PostgreSQL): the
    service answers 503 and the caller may try again; nothing of the call was stored.

    The message (for the log and a command's line) may name the server's host and port
    or the store file's path; ``public`` is what an API client is told, naming neither.
    """

    exit_code = EXIT_TEMPFAIL  # a command: try again later

    def __init__(self, message: str, public: str = "the store is unavailable") -> None:
        super().__init__(message)
        self.public = public


class StoreUnreachable(StoreUrlError):
    """The store's server cannot be reached now (down, starting up, shutting down), as
    opposed to one that answered and refused: a command stops with this one line (naming
    the flag or setting the URL came from), a service worker starts without its store and
    opens it once the server answers. ``reason``: the driver's, for the worker's log."""

    exit_code = EXIT_TEMPFAIL  # a command: try again later

    def __init__(self, problem: str, reason: str, setting: str = "NBO_STORE_URL") -> None:
        super().__init__(problem, setting)
        self.reason = reason

    def named(self, setting: str) -> StoreUnreachable:
        return StoreUnreachable(self.problem, self.reason, setting)

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # type: ignore[override]
        return type(self), (self.problem, self.reason, self.setting)


@dataclass(frozen=True)
class TaggedEvent:
    """A customer's first event of one type in one variant of an experiment."""

    customer_id: str
    variant: str | None
    type: str
    first_at: int


@dataclass(frozen=True)
class ModelShown:
    """A customer's impressions in one variant of an experiment decided by one model
    version: the first and the last one's times and how many. ``model_version`` None: not known (an
    impression recorded before nbo kept it, or posted without it)."""

    customer_id: str
    variant: str | None
    model_version: str | None
    first_at: int
    last_at: int
    impressions: int


@dataclass(frozen=True)
class ExperimentLog:
    tagged: list[TaggedEvent]
    conversions: list[tuple[str, int, float]]  # customer, when, revenue
    # The impressions per customer, variant and model version that decided them.
    shown: list[ModelShown] = field(default_factory=list)


@dataclass(frozen=True)
class DeliveryCount:
    """Recorded offer impressions of one day, channel, kind, source and stage, and how
    many of them the customer answered: an impression counts as clicked (converted) when
    the same customer posted a click (conversion) on the same offer at or after it and
    before the end of the period read."""

    day: int  # days since 1970-01-01, UTC
    channel: str | None
    kind: str | None  # None: an impression recorded without it (posted, or before)
    source: str | None
    stage: str | None
    impressions: int
    clicked: int
    converted: int


@dataclass(frozen=True)
class ResponseCount:
    """Posted clicks or conversions of one day and channel, and their revenue."""

    day: int  # days since 1970-01-01, UTC
    type: str  # offer_click or offer_conversion
    channel: str | None
    events: int
    revenue: float


@dataclass(frozen=True)
class OfferActivity:
    """The offers that went out in a period and what came of them (the dashboard's)."""

    deliveries: list[DeliveryCount]
    responses: list[ResponseCount]


@dataclass(frozen=True)
class StoredEvent:
    """One stored event of a customer, for the data export: the payload as posted
    (validated) and when the store received it."""

    event_id: str
    type: str
    occurred_at: int  # unix seconds
    received_at: int  # unix seconds
    payload: dict[str, object]


@dataclass(frozen=True)
class BatchOutput:
    """A campaign file ``nbo batch`` wrote and still manages (an erasure rewrites it)."""

    path: str  # absolute
    written_at: int  # unix seconds
    run_id: str
    rows: int
    format: str  # "parquet", "csv", or "parquet-parts" (a folder of parts: --engine spark)
    # The run's channel, whether it was delivered (--record), and its customers recorded
    # (given offers) and frequency-capped; None: registered before nbo kept them.
    channel: str | None = None
    delivered: bool | None = None
    recorded_customers: int | None = None
    capped_customers: int | None = None


@dataclass(frozen=True)
class DeliveringRun:
    """A campaign being delivered (``nbo batch --record``): recorded before its first
    impression, removed just before its file is put in place or once its impressions are
    taken back. One left behind is a run whose process died in between."""

    run_id: str  # its impressions' request ids start with "{run_id}-"
    started_at: int  # unix seconds
    process: str  # nbo.core.processes.process_token of the process delivering it
    partial: str  # the temporary file (or folder) its rows were written to
    heard_at: int  # unix seconds: its last heartbeat (its start, before the first)


@dataclass(frozen=True)
class ReplicaReload:
    """The latest reload asked for every replica on the store (``Store.request_reload``):
    its number (one more than the one before), the version each loads, whether forced,
    the replica that took it (``origin``: it applied it already) and when (unix s)."""

    number: int
    version: str
    force: bool
    origin: str
    at: int


# Where a consent change came from (``ConsentChange.source``): the API's PUT, the
# command line, or the record in force when the history began (migration 8).
CONSENT_FROM_API = "api"
CONSENT_FROM_CLI = "cli"
CONSENT_MIGRATED = "migrated"


@dataclass(frozen=True)
class ConsentChange:
    """One change of a customer's consent, as appended to their history: the record as it
    stood after the change, when, and where it came from (``CONSENT_FROM_API``, ...)."""

    personalization: bool
    channels: dict[str, bool]
    changed_at: int  # unix seconds
    source: str


# What a retention purge (``Store.purge``) deletes, one kind at a time: the offer events
# and purchases by when they happened (a purchase with its lines), the consent history by
# when each change was made (each customer's latest change always kept: it is the consent
# in force), campaign runs by when they were last heard from.
PURGE_IMPRESSIONS = "offer_impression"
PURGE_CLICKS = "offer_click"
PURGE_CONVERSIONS = "offer_conversion"
PURGE_PURCHASES = "purchase"
PURGE_CONSENT_HISTORY = "consent_history"
PURGE_DELIVERING_RUNS = "delivering_runs"
PURGE_KINDS = (
    PURGE_IMPRESSIONS,
    PURGE_CLICKS,
    PURGE_CONVERSIONS,
    PURGE_PURCHASES,
    PURGE_CONSENT_HISTORY,
    PURGE_DELIVERING_RUNS,
)


@dataclass(frozen=True)
class Purged:
    """What a purge of one kind deleted (or, in a dry run, would delete): rows of the
    kind, and for purchases the purchase lines that went with them."""

    kind: str
    rows: int
    lines: int = 0


@dataclass
class AddResult:
    """What ``add_events`` did: event ids stored, event ids of events already stored
    (a retry: the same event), and the positions in the events given of those whose id
    already names another stored event (another customer, type or payload: stored
    nothing; event ids are unique across customers and types)."""

    accepted: list[str]
    duplicates: list[str]
    conflicts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ErasureReceipt:
    """What one ``erase`` deleted. ``already_erased``: the id was on the erased list
    before this call (the counts are then what arrived since, usually zeros)."""

    customer_id: str
    erased_at: int  # unix seconds
    events: dict[str, int]  # per event type, every type listed
    purchase_lines: int
    consent_records: int
    already_erased: bool
    consent_changes: int = 0  # rows of the consent history

    @property
    def total(self) -> int:
        """Every deleted record: events, purchase lines, consent records and changes."""
        return (
            sum(self.events.values())
            + self.purchase_lines
            + self.consent_records
            + self.consent_changes
        )


T = TypeVar("T")


class StateReader(Protocol):
    """The reads that make a customer's state (``nbo.runtime.decide.read_states``), and
    which of them are erased (another process may have erased them since this one
    loaded its models): the store's, or those of a delivery's transaction."""

    def consents_of(self, customer_ids: Sequence[str]) -> dict[str, Consent]: ...

    def contacts_of_many(
        self, customer_ids: Sequence[str], since: int
    ) -> dict[str, ContactHistory]: ...

    def purchases_of_many(
        self, customer_ids: Sequence[str], limit: int | None = None
    ) -> dict[str, list[PostedPurchase]]: ...

    def erased_among(self, customer_ids: Sequence[str]) -> set[str]: ...


class Delivery(StateReader, Protocol):
    """Inside ``Store.deliver``: reads of the last commit, and events recorded with the
    delivery's transaction."""

    def add_events(self, events: Sequence[Event]) -> AddResult: ...


class Store(StateReader, Protocol):
    """What the service, campaigns and the trainer need from a store."""

    schema_version: int
    # Whether its calls are round trips to a server (PostgreSQL: a millisecond on
    # loopback, as long as the server takes when it is slow): the service makes them in
    # the thread pool, never on a worker's event loop. An embedded store's (SQLite) take
    # microseconds and are made in place.
    remote: bool

    def add_events(self, events: Sequence[Event]) -> AddResult: ...

    def deliver(self, customer_ids: Sequence[str], record: Callable[[Delivery], T]) -> T:
        """Run ``record`` in one transaction holding each customer's lock, so that no two
        deliveries to a customer interleave (in one process or several on the store)."""
        ...

    def remove_impressions(self, deliveries: Sequence[tuple[str, str]]) -> int: ...

    def purchases_of(
        self, customer_id: str, since: int | None = None, limit: int | None = None
    ) -> list[PostedPurchase]: ...

    def event_count(self) -> int: ...

    def customers_with_purchases(self) -> list[str]: ...

    def experiment_log(self, experiment: str, since: int, until: int) -> ExperimentLog: ...

    def offer_activity(self, since: int, until: int) -> OfferActivity: ...

    def contacts_of(self, customer_id: str, since: int) -> ContactHistory: ...

    def set_consent(
        self,
        customer_id: str,
        personalization: bool,
        channels: dict[str, bool],
        source: str = CONSENT_FROM_API,
    ) -> Consent: ...

    def consent_of(self, customer_id: str) -> Consent | None: ...

    def consent_history_of(self, customer_id: str) -> list[ConsentChange]: ...

    def consent_changed_since(self, since: int) -> list[str]: ...

    def purge(self, kind: str, before: int, dry_run: bool = False) -> Purged:
        """Delete the rows of ``kind`` (``PURGE_KINDS``) older than ``before`` (unix
        seconds), in batches of a transaction each, so a large purge never holds a lock
        for long; ``dry_run``: count them only. The caller checks that nothing a rule
        still reads is that old (``nbo.runtime.retention``)."""
        ...

    def erase(self, customer_id: str) -> ErasureReceipt: ...

    def is_erased(self, customer_id: str) -> bool: ...

    def erased_list(self) -> ErasedList:
        """The erased list (keyed hashes, no id), to test many ids at once."""
        ...

    def erased_at(self, customer_id: str) -> int | None: ...

    def events_of(self, customer_id: str) -> list[dict[str, object]]: ...

    def stored_events_of(self, customer_id: str) -> list[StoredEvent]: ...

    def pseudonym_key(self) -> bytes: ...

    def swap_shared_settings(
        self, fingerprints: dict[str, str]
    ) -> tuple[dict[str, str], int] | None: ...

    def shared_settings(self) -> tuple[dict[str, str], int] | None:
        """The shared settings the latest service to start recorded, and when; read only."""
        ...

    def request_reload(self, version: str, force: bool, origin: str) -> int:
        """Record a reload for every replica on this store to follow; its number."""
        ...

    def reload_request(self) -> ReplicaReload | None:
        """The latest reload recorded for the replicas; None before the first."""
        ...

    def register_batch_output(self, output: BatchOutput) -> None: ...

    def batch_outputs(self) -> list[BatchOutput]: ...

    def set_batch_output_rows(self, path: str, rows: int) -> None: ...

    def unregister_batch_output(self, path: str) -> None: ...

    def begin_delivering(self, run: DeliveringRun) -> None: ...

    def hear_from_delivering(self, run_id: str, at: int) -> bool: ...

    def end_delivering(self, run_id: str) -> bool: ...

    def delivering_runs(self) -> list[DeliveringRun]: ...

    def remove_run_impressions(self, run_id: str) -> int: ...

    def count_run_impressions(self, run_id: str) -> int: ...

    @property
    def available(self) -> bool:
        """Whether calls reach the store now, known without I/O: False while its server
        is away (PostgreSQL), when every call answers StoreUnavailable at once."""
        ...

    def when_available(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the store is available: now when it is, else (a server
        away) when it comes back, in a thread of the store's; one that raises
        StoreUnavailable (the server away again) runs again on the next recovery."""
        ...

    def paused(self) -> AbstractContextManager[None]:
        """While the block runs this store runs no thread of its own, so the process may
        fork (children open stores of their own and never use this one); after it, the
        store serves as before."""
        ...

    def close(self) -> None: ...
