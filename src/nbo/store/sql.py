"""The store contract in SQL, written once for SQLite and PostgreSQL.

Both backends speak the same SQL for nearly everything nbo asks of a store (events,
consent, erasure, campaign files, keys), so ``SQLStore`` holds those statements and the
code around them once. A backend (``nbo.store.sqlite``, ``nbo.store.postgres``) brings
what differs: its connections, how it writes a parameter and a list of ids, the column
that keeps the order rows were stored in, the lock that keeps two deliveries to one
customer apart, and the purchase read of an offers call, the one query each answers its
own fastest way.

The statements are written with SQLite's ``?`` parameters; a backend whose driver writes
them otherwise rewrites them once (``_q``). None of them holds a literal ``?`` or ``%``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar

from nbo.core.erased import ERASED_KEY, ErasedList, id_hash
from nbo.core.errors import StoreUrlError
from nbo.core.pseudonyms import new_key
from nbo.core.vocabulary import DAY
from nbo.data.events import CLICK, CONVERSION, EVENT_TYPES, IMPRESSION, Event, PurchaseEvent
from nbo.offers.state import Consent, Contact, ContactHistory, PostedPurchase
from nbo.store.base import (
    CONSENT_FROM_API,
    PURGE_CONSENT_HISTORY,
    PURGE_DELIVERING_RUNS,
    PURGE_KINDS,
    PURGE_PURCHASES,
    AddResult,
    BatchOutput,
    ConsentChange,
    DeliveringRun,
    Delivery,
    DeliveryCount,
    ErasureReceipt,
    ExperimentLog,
    ModelShown,
    OfferActivity,
    Purged,
    ReplicaReload,
    ResponseCount,
    StoredEvent,
    TaggedEvent,
)

T = TypeVar("T")

# Rows a purge deletes per transaction: each batch's locks are let go within
# milliseconds, so the service's writes and deliveries go on between them.
PURGE_BATCH = 1000

# A store whose erased list lost its key (a row deleted by hand): no erased customer can
# be recognised, so nothing that needs the list goes on (the trainer would learn them).
MISSING_ERASED_KEY = (
    f"the store's erased list has no key (deployment_keys '{ERASED_KEY}' is missing): "
    "restore the store, or that row, from a backup; without it no erased customer is "
    "recognised"
)
# The name of the pseudonym key in ``deployment_keys``.
PSEUDONYM_KEY = "log_pseudonyms"
# The fingerprints of the settings replicas must share, as the last ``nbo serve`` to start
# on the store recorded them (``nbo.service.shared``), in ``deployment_keys`` too.
SHARED_SETTINGS = "shared_settings"
# The latest reload asked for every replica (``SQLStore.request_reload``), in
# ``deployment_keys`` too: one small row the replicas' workers poll, no migration.
RELOAD_REQUEST = "reload_request"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A connection of either driver (sqlite3, psycopg): what the shared code calls."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


_INSERT_EVENT = (
    "INSERT INTO events (event_id, type, customer_id, occurred_at, received_at, item_id, "
    "channel, request_id, revenue, payload, experiment, variant) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_LINE = (
    "INSERT INTO purchase_lines (event_id, customer_id, item_id, quantity, price, order_id, "
    "occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

# Whether the customer of impression ``i`` answered it: a later event of the given type
# (click, conversion) on the same offer before the end of the period, to which ``i`` is
# the last delivery of that offer to the customer (on any channel; of two at the same
# second, the one stored last), so an answer is credited to one delivery only: an email
# and two app deliveries of one item before one conversion counted three take-ups.
# Found through the customer index (customer_id, type, occurred_at). Parameters: the
# type, the period's end. ``{order}``: the backend's column of the stored order.
_ANSWERED = (
    "CASE WHEN EXISTS (SELECT 1 FROM events r WHERE r.customer_id = i.customer_id "
    "AND r.type = ? AND r.occurred_at >= i.occurred_at AND r.occurred_at < ? "
    "AND r.item_id = i.item_id AND NOT EXISTS (SELECT 1 FROM events j "
    "WHERE j.customer_id = i.customer_id AND j.type = i.type AND j.item_id = i.item_id "
    "AND j.occurred_at <= r.occurred_at AND (j.occurred_at > i.occurred_at "
    "OR (j.occurred_at = i.occurred_at AND j.{order} > i.{order})))) THEN 1 ELSE 0 END"
)


def _same_event(stored: str, posted: str) -> bool:
    """Whether two events' payloads are the same event: the same fields and values,
    a field one lacks counted as null (a payload stored by an older release lacks the
    fields added since), and a purchase's lines in any order (an order system that
    reads an order's lines again for a retry, without an ``ORDER BY``, may send them in
    another order: the same purchase, whose retry was refused as another event)."""
    if stored == posted:
        return True
    return _comparable(json.loads(stored)) == _comparable(json.loads(posted))


def _comparable(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload as ``_same_event`` compares it: no null field, lines in one order."""
    fields = {k: v for k, v in payload.items() if v is not None}
    lines = fields.get("items")
    if isinstance(lines, list):
        fields["items"] = sorted(lines, key=lambda line: json.dumps(line, sort_keys=True))
    return fields


def _nulls_first(row: Sequence[Any]) -> list[tuple[bool, Any]]:
    """A sort key of a row of names that may be NULL: NULL first, then byte order (the
    same from either backend, whatever PostgreSQL's locale)."""
    return [(value is not None, value) for value in row]


class SQLStore:
    """The ``Store`` contract on a SQL database; see the module docstring for what a
    backend adds."""

    schema_version: int
    # Whether calls are round trips to a server (``Store.remote``).
    remote = False
    # The column that orders rows as they were stored (SQLite's rowid).
    _STORED_ORDER = "rowid"
    # The erased list's key, once read (``_erased_key``).
    _erased_key_value: bytes | None = None

    # -- what a backend supplies -------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[Database]:
        """A connection for reads outside a transaction (each read sees the last commit)."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Database]:
        """A connection in a transaction, committed when the block ends without an error
        and rolled back when it raises; writes are durable when it returns."""
        raise NotImplementedError

    def _lock_customers(self, db: Database, customer_ids: Sequence[str]) -> None:
        """Hold, until the transaction of ``db`` ends, a lock per customer that any other
        transaction locking one of them (here or in another process) waits for."""
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        """The statement in the driver's parameter style."""
        return sql

    def paused(self) -> AbstractContextManager[None]:
        """No thread to stop (SQLite's connections are plain handles a child never uses)."""
        return nullcontext()

    @property
    def available(self) -> bool:
        """Always (an embedded file); a server's store answers whether it reaches it."""
        return True

    def when_available(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now: an embedded file is always available."""
        callback()

    def _id_lists(
        self, customer_ids: Sequence[str] | Sequence[bytes]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``customer_id <clause>`` and its parameters, matching the (distinct) ids (or
        the erased list's hashes), in as many parts as the driver needs."""
        raise NotImplementedError

    def _purchases(
        self, db: Database, customer_ids: Sequence[str], limit: int | None
    ) -> dict[str, list[PostedPurchase]]:
        """``purchases_of_many`` on ``db``."""
        raise NotImplementedError

    def _json_text(self, column: str, field: str) -> str:
        """The SQL of a top-level field of the JSON text in ``column``, as text."""
        raise NotImplementedError

    def _after_erasure(self) -> None:
        """Clean-up once an erasure (or a purge) is committed (SQLite: its write-ahead
        log)."""

    def close(self) -> None:
        raise NotImplementedError

    # -- events ------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> AddResult:
        """Store new events in one transaction; an id seen before (in the store or earlier
        in this batch) is a duplicate and is not stored again."""
        with self._transaction() as db:
            return self._add_events(db, events)

    def _add_events(self, db: Database, events: Sequence[Event]) -> AddResult:
        result = AddResult(accepted=[], duplicates=[])
        received = int(time.time())
        insert_event, insert_line = self._q(_INSERT_EVENT), self._q(_INSERT_LINE)
        stored_payload = self._q("SELECT payload FROM events WHERE event_id = ?")
        for position, event in enumerate(events):
            payload = event.model_dump_json()
            inserted = db.execute(
                insert_event,
                (
                    event.event_id,
                    event.type,
                    event.customer_id,
                    event.occurred_at,
                    received,
                    getattr(event, "item_id", None),
                    getattr(event, "channel", None),
                    getattr(event, "request_id", None),
                    getattr(event, "revenue", None),
                    payload,
                    getattr(event, "experiment", None),
                    getattr(event, "variant", None),
                ),
            ).rowcount
            if not inserted:
                (stored,) = db.execute(stored_payload, (event.event_id,)).fetchone()
                if _same_event(stored, payload):
                    result.duplicates.append(event.event_id)
                else:
                    result.conflicts.append(position)
                continue
            result.accepted.append(event.event_id)
            if isinstance(event, PurchaseEvent):
                for line in event.items:
                    db.execute(
                        insert_line,
                        (
                            event.event_id,
                            event.customer_id,
                            line.item_id,
                            line.quantity,
                            line.price,
                            event.order_id,
                            event.occurred_at,
                        ),
                    )
        return result

    def purchases_of_many(
        self, customer_ids: Sequence[str], limit: int | None = None
    ) -> dict[str, list[PostedPurchase]]:
        """``purchases_of`` many customers, oldest first, in a few queries: those with
        none are absent; ``limit`` applies to each customer, at a cost that grows with it,
        not with what a customer posted."""
        with self._reading() as db:
            return self._purchases(db, customer_ids, limit)

    def events_of(self, customer_id: str) -> list[dict[str, object]]:
        """Every stored event of a customer, as posted (for export and tests)."""
        with self._reading() as db:
            rows = db.execute(
                self._q(
                    "SELECT payload FROM events WHERE customer_id = ? "
                    "ORDER BY occurred_at, event_id"
                ),
                (customer_id,),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def stored_events_of(self, customer_id: str) -> list[StoredEvent]:
        """Every stored event of a customer with the time it was received (the export)."""
        with self._reading() as db:
            rows = db.execute(
                self._q(
                    "SELECT event_id, type, occurred_at, received_at, payload FROM events "
                    "WHERE customer_id = ? ORDER BY occurred_at, event_id"
                ),
                (customer_id,),
            ).fetchall()
        return [
            StoredEvent(event_id, kind, occurred, received, json.loads(payload))
            for event_id, kind, occurred, received, payload in rows
        ]

    def customers_with_purchases(self) -> list[str]:
        """Every customer with a posted purchase, sorted (new customers included)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT DISTINCT customer_id FROM purchase_lines ORDER BY customer_id"
            ).fetchall()
        return [row[0] for row in rows]

    def experiment_log(self, experiment: str, since: int, until: int) -> ExperimentLog:
        """The events of an experiment's report from ``since`` to before ``until`` (unix
        seconds: the experiment's run): its tagged events per customer and variant, and
        the conversions of the customers it exposed then, and its impressions per
        customer, variant and the model version that decided them (the payload's
        ``model_version``: NULL for one recorded before nbo kept it). An event outside
        the run (an impression tagged before the start, say) is not the experiment's to
        count."""
        model = self._json_text("payload", "model_version")
        with self._reading() as db:
            tagged = db.execute(
                self._q(
                    "SELECT customer_id, variant, type, MIN(occurred_at) FROM events "
                    "WHERE experiment = ? AND occurred_at >= ? AND occurred_at < ? "
                    "GROUP BY customer_id, variant, type"
                ),
                (experiment, since, until),
            ).fetchall()
            conversions = db.execute(
                self._q(
                    "SELECT customer_id, occurred_at, COALESCE(revenue, 0) FROM events "
                    "WHERE type = ? AND occurred_at >= ? AND occurred_at < ? "
                    "AND customer_id IN (SELECT customer_id FROM events "
                    "WHERE experiment = ? AND type = ? AND occurred_at >= ? AND occurred_at < ?)"
                ),
                (CONVERSION, since, until, experiment, IMPRESSION, since, until),
            ).fetchall()
            shown = db.execute(
                self._q(
                    f"SELECT customer_id, variant, {model}, MIN(occurred_at), MAX(occurred_at), "
                    "COUNT(*) "
                    "FROM events WHERE experiment = ? AND type = ? AND occurred_at >= ? "
                    "AND occurred_at < ? GROUP BY 1, 2, 3"
                ),
                (experiment, IMPRESSION, since, until),
            ).fetchall()
        return ExperimentLog(
            tagged=[TaggedEvent(*row) for row in tagged],
            conversions=[(str(c), int(t), float(r)) for c, t, r in conversions],
            shown=[ModelShown(c, v, m, int(f), int(t), int(n)) for c, v, m, f, t, n in shown],
        )

    def offer_activity(self, since: int, until: int) -> OfferActivity:
        """Offer events from ``since`` to before ``until`` (unix seconds), counted per day
        (``DeliveryCount``, ``ResponseCount``), in the order of their names (NULL
        first): a few hundred rows for any number of events, so a dashboard never reads
        the events themselves. A click or conversion is credited to one impression: the
        customer's last delivery of its offer before it, on any channel. The kind,
        source and stage of an impression are what the answer said (its payload);
        impressions recorded before they were kept have none."""
        kind, source, stage = (self._json_text("i.payload", f) for f in ("kind", "source", "stage"))
        answered = _ANSWERED.format(order=self._STORED_ORDER)
        with self._reading() as db:
            deliveries = db.execute(
                self._q(
                    f"SELECT i.occurred_at / {DAY}, i.channel, {kind}, {source}, {stage}, "
                    f"COUNT(*), SUM({answered}), SUM({answered}) FROM events i "
                    "WHERE i.type = ? AND i.occurred_at >= ? AND i.occurred_at < ? "
                    "GROUP BY 1, 2, 3, 4, 5"
                ),
                (CLICK, until, CONVERSION, until, IMPRESSION, since, until),
            ).fetchall()
            responses = db.execute(
                self._q(
                    f"SELECT occurred_at / {DAY}, type, channel, COUNT(*), "
                    "SUM(COALESCE(revenue, 0)) FROM events WHERE type IN (?, ?) "
                    "AND occurred_at >= ? AND occurred_at < ? GROUP BY 1, 2, 3"
                ),
                (CLICK, CONVERSION, since, until),
            ).fetchall()
        return OfferActivity(
            deliveries=[
                DeliveryCount(int(day), channel, kind, source, stage, int(n), int(c), int(v))
                for day, channel, kind, source, stage, n, c, v in sorted(
                    deliveries, key=lambda row: _nulls_first(row[:5])
                )
            ],
            responses=[
                ResponseCount(int(day), kind, channel, int(count), float(revenue))
                for day, kind, channel, count, revenue in sorted(
                    responses, key=lambda row: _nulls_first(row[:3])
                )
            ],
        )

    def event_count(self) -> int:
        with self._reading() as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- consent -----------------------------------------------------------------------------

    def set_consent(
        self,
        customer_id: str,
        personalization: bool,
        channels: dict[str, bool],
        source: str = CONSENT_FROM_API,
    ) -> Consent:
        """Store a customer's consent, append the change to their history (the record
        after it, now, ``source``) in the same transaction, and answer the stored record.

        ``channels`` names the channels to set; channels it does not name keep their
        stored value (consented when never set), so withdrawing one channel never grants
        another, even when two such changes arrive at once. Channel names are the
        caller's to check.
        """
        now = int(time.time())
        with self._transaction() as db:
            self._lock_customers(db, [customer_id])
            row = db.execute(
                self._q("SELECT channels FROM consent WHERE customer_id = ?"), (customer_id,)
            ).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **channels}
            merged = {name: bool(merged[name]) for name in sorted(merged)}
            db.execute(
                self._q(
                    "INSERT INTO consent (customer_id, personalization, channels, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET "
                    "personalization = excluded.personalization, "
                    "channels = excluded.channels, updated_at = excluded.updated_at"
                ),
                (customer_id, bool(personalization), json.dumps(merged), now),
            )
            db.execute(
                self._q(
                    "INSERT INTO consent_history (customer_id, personalization, channels, "
                    "changed_at, source) VALUES (?, ?, ?, ?, ?)"
                ),
                (customer_id, bool(personalization), json.dumps(merged), now, source),
            )
        return Consent(personalization=bool(personalization), channels=merged, updated_at=now)

    def consent_history_of(self, customer_id: str) -> list[ConsentChange]:
        """Every stored change of the customer's consent, oldest first (the last one is
        the record in force); empty when they never changed it or were erased since."""
        with self._reading() as db:
            rows = db.execute(
                self._q(
                    "SELECT personalization, channels, changed_at, source FROM consent_history "
                    "WHERE customer_id = ? ORDER BY id"
                ),
                (customer_id,),
            ).fetchall()
        return [
            ConsentChange(bool(personal), json.loads(channels), int(at), source)
            for personal, channels, at, source in rows
        ]

    def consent_changed_since(self, since: int) -> list[str]:
        """The customers whose consent changed at or after ``since`` (unix seconds), in id
        order: what a campaign run checks at its end (``nbo.campaigns.batch``), through the
        history's index on the time, so a run in which nobody changed it reads nothing."""
        with self._reading() as db:
            # Neither DISTINCT nor ORDER BY: with them SQLite's planner scanned the whole
            # history through the customer index (11 ms at 100k changes, none since: thread
            # time, best of 20) instead of searching the time index (4 us).
            rows = db.execute(
                self._q("SELECT customer_id FROM consent_history WHERE changed_at >= ?"),
                (since,),
            ).fetchall()
        return sorted({row[0] for row in rows})

    def consent_of(self, customer_id: str) -> Consent | None:
        """The customer's stored consent; None when there is no record, which means
        consent to everything (``DEFAULT_CONSENT``)."""
        return self.consents_of([customer_id]).get(customer_id)

    def consents_of(self, customer_ids: Sequence[str]) -> dict[str, Consent]:
        """``consent_of`` many customers: those without a record are absent."""
        with self._reading() as db:
            return self._consents(db, customer_ids)

    def _consents(self, db: Database, customer_ids: Sequence[str]) -> dict[str, Consent]:
        found = {}
        for clause, params in self._id_lists(customer_ids):
            rows = db.execute(
                self._q(
                    "SELECT customer_id, personalization, channels, updated_at FROM consent "
                    f"WHERE customer_id {clause}"
                ),
                params,
            ).fetchall()
            for row in rows:
                found[row[0]] = Consent(
                    personalization=bool(row[1]), channels=json.loads(row[2]), updated_at=row[3]
                )
        return found

    # -- contacts ----------------------------------------------------------------------------

    def contacts_of(self, customer_id: str, since: int) -> ContactHistory:
        """The customer's offer impressions and responses (clicks, conversions) since
        ``since`` (unix seconds): what the contact policies look at."""
        return self.contacts_of_many([customer_id], since).get(customer_id, ContactHistory())

    def contacts_of_many(
        self, customer_ids: Sequence[str], since: int
    ) -> dict[str, ContactHistory]:
        """``contacts_of`` many customers: those with no contact since are absent."""
        with self._reading() as db:
            return self._contacts(db, customer_ids, since)

    def _contacts(
        self, db: Database, customer_ids: Sequence[str], since: int
    ) -> dict[str, ContactHistory]:
        found: dict[str, ContactHistory] = {}
        for clause, params in self._id_lists(customer_ids):
            rows = db.execute(
                self._q(
                    "SELECT customer_id, type, item_id, channel, COALESCE(request_id, "
                    f"event_id), occurred_at FROM events WHERE customer_id {clause} "
                    "AND type IN (?, ?, ?) AND occurred_at > ? "
                    f"ORDER BY {self._STORED_ORDER}"
                ),
                (*params, IMPRESSION, CLICK, CONVERSION, since),
            ).fetchall()
            for row in rows:
                history = found.setdefault(row[0], ContactHistory(impressions=[], responses=[]))
                kind = history.impressions if row[1] == IMPRESSION else history.responses
                kind.append(Contact(*row[2:]))
        return found

    # -- deliveries --------------------------------------------------------------------------

    def deliver(self, customer_ids: Sequence[str], record: Callable[[Delivery], T]) -> T:
        """Run ``record`` in one transaction that holds each customer's lock: no other
        delivery to (nor consent change or erasure of) any of them, in this process or
        another on the same store, runs meanwhile. What ``record`` reads through the
        ``Delivery`` is the last commit; what it adds commits with the transaction, or not
        at all when it raises."""
        with self._transaction() as db:
            self._lock_customers(db, customer_ids)
            return record(_Delivery(self, db))

    def remove_impressions(self, deliveries: Sequence[tuple[str, str]]) -> int:
        """Delete the impressions of deliveries that did not happen after all (customer
        id, request id): a campaign that failed before its file was put in place, or the
        rows of customers erased while it ran. Answers how many were deleted."""
        deleted = 0
        with self._transaction() as db:
            statement = self._q(
                "DELETE FROM events WHERE customer_id = ? AND type = ? AND request_id = ?"
            )
            for customer_id, request_id in deliveries:
                deleted += db.execute(statement, (customer_id, IMPRESSION, request_id)).rowcount
        return deleted

    # -- erasure -----------------------------------------------------------------------------

    def erase(self, customer_id: str) -> ErasureReceipt:
        """Delete everything stored on a customer, in one transaction: their events (and
        so their purchase lines) and their consent record; put the id on the erased list
        (its keyed hash and the time only: ``nbo.core.erased``). Idempotent: erasing
        again answers zeros (or what was posted since) with ``already_erased``. Events
        posted after an erasure are stored as usual (``nbo.store``)."""
        now = int(time.time())
        with self._transaction() as db:
            self._lock_customers(db, [customer_id])
            hashed = id_hash(self._erased_key(db), customer_id)
            already = (
                db.execute(self._q("SELECT 1 FROM erased WHERE id_hash = ?"), (hashed,)).fetchone()
                is not None
            )
            events = dict.fromkeys(EVENT_TYPES, 0)
            for kind, count in db.execute(
                self._q("SELECT type, COUNT(*) FROM events WHERE customer_id = ? GROUP BY type"),
                (customer_id,),
            ).fetchall():
                events[kind] = int(count)
            lines = int(
                db.execute(
                    self._q(
                        "SELECT COUNT(*) FROM purchase_lines WHERE event_id IN "
                        "(SELECT event_id FROM events WHERE customer_id = ?)"
                    ),
                    (customer_id,),
                ).fetchone()[0]
            )
            # The purchase lines go with their events (ON DELETE CASCADE).
            db.execute(self._q("DELETE FROM events WHERE customer_id = ?"), (customer_id,))
            consent = db.execute(
                self._q("DELETE FROM consent WHERE customer_id = ?"), (customer_id,)
            )
            consent_records = consent.rowcount
            changes = db.execute(
                self._q("DELETE FROM consent_history WHERE customer_id = ?"), (customer_id,)
            ).rowcount
            db.execute(
                self._q(
                    "INSERT INTO erased (id_hash, erased_at) VALUES (?, ?) "
                    "ON CONFLICT (id_hash) DO UPDATE SET erased_at = excluded.erased_at"
                ),
                (hashed, now),
            )
        self._after_erasure()
        return ErasureReceipt(
            customer_id=customer_id,
            erased_at=now,
            events=events,
            purchase_lines=lines,
            consent_records=consent_records,
            already_erased=already,
            consent_changes=changes,
        )

    def _erased_key(self, db: Database | None = None) -> bytes:
        """The erased list's key, made by migration 9 and never changed (a new key would
        unlist every erased customer): read once per store object (on ``db`` when
        given: the caller's connection)."""
        key = self._erased_key_value
        if key is None:
            with nullcontext(db) if db is not None else self._reading() as reader:
                row = reader.execute(
                    self._q("SELECT value FROM deployment_keys WHERE name = ?"), (ERASED_KEY,)
                ).fetchone()
            if row is None:
                raise StoreUrlError(MISSING_ERASED_KEY)
            key = bytes(row[0])
            self._erased_key_value = key
        return key

    def is_erased(self, customer_id: str) -> bool:
        """Whether the id is on the erased list (it stays there for good)."""
        return self.erased_at(customer_id) is not None

    def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        """Which of the customers are on the erased list."""
        with self._reading() as db:
            return self._erased_among(db, customer_ids)

    def _erased_among(self, db: Database, customer_ids: Sequence[str]) -> set[str]:
        key = self._erased_key(db)
        by_hash = {id_hash(key, c): c for c in dict.fromkeys(customer_ids)}
        found: set[str] = set()
        for clause, params in self._id_lists(list(by_hash)):
            rows = db.execute(
                self._q(f"SELECT id_hash FROM erased WHERE id_hash {clause}"), params
            ).fetchall()
            found.update(by_hash[bytes(row[0])] for row in rows)
        return found

    def erased_list(self) -> ErasedList:
        """The whole erased list, to test many ids at once (a model's customers): the key
        and the hashes, no id."""
        with self._reading() as db:
            key = self._erased_key(db)
            rows = db.execute("SELECT id_hash FROM erased").fetchall()
        return ErasedList(key, (row[0] for row in rows))

    def erased_at(self, customer_id: str) -> int | None:
        """When the id was last erased (unix seconds); None when it never was."""
        with self._reading() as db:
            hashed = id_hash(self._erased_key(db), customer_id)
            row = db.execute(
                self._q("SELECT erased_at FROM erased WHERE id_hash = ?"), (hashed,)
            ).fetchone()
        return None if row is None else int(row[0])

    # -- retention ---------------------------------------------------------------------------

    def purge(self, kind: str, before: int, dry_run: bool = False) -> Purged:
        """Delete the rows of ``kind`` older than ``before`` (unix seconds), ``PURGE_BATCH``
        rows per transaction (``Store.purge``); ``dry_run``: count them only.

        Events go by when they happened (a purchase with its lines, by the cascade);
        consent changes by when they were made, but never a customer's latest (the
        consent in force, and when it was given); campaign runs being delivered by when
        they were last heard from (one silent that long died, and its impressions are
        as old). Deleted rows are overwritten on SQLite (secure_delete) and its log
        truncated after, as after an erasure."""
        if kind not in PURGE_KINDS:
            raise ValueError(f"unknown kind to purge: {kind!r}")
        if kind == PURGE_CONSENT_HISTORY:
            # Older than the cutoff, and not the customer's latest change.
            where = (
                "changed_at < ? AND EXISTS (SELECT 1 FROM consent_history n "
                "WHERE n.customer_id = h.customer_id AND n.id > h.id)"
            )
            table, key = "consent_history h", "h.id"
            params: tuple[Any, ...] = (before,)
        elif kind == PURGE_DELIVERING_RUNS:
            table, key, where, params = "delivering_runs", "run_id", "heard_at < ?", (before,)
        else:
            table, key = "events", "event_id"
            where, params = "type = ? AND occurred_at < ?", (kind, before)
        if dry_run:
            with self._reading() as db:
                rows = int(
                    db.execute(
                        self._q(f"SELECT COUNT(*) FROM {table} WHERE {where}"), params
                    ).fetchone()[0]
                )
                lines = 0
                if kind == PURGE_PURCHASES:
                    # A line's time is its purchase event's.
                    lines = int(
                        db.execute(
                            self._q("SELECT COUNT(*) FROM purchase_lines WHERE occurred_at < ?"),
                            (before,),
                        ).fetchone()[0]
                    )
            return Purged(kind, rows, lines)
        rows = lines = 0
        plain = table.split()[0]
        column = key.split(".")[-1]
        # The consent history is walked forward by id: the changes it keeps (each
        # customer's latest) are not read again by every batch.
        after = -1
        walk = " AND h.id > ? ORDER BY h.id" if kind == PURGE_CONSENT_HISTORY else ""
        while True:
            with self._transaction() as db:
                keys = [
                    row[0]
                    for row in db.execute(
                        self._q(f"SELECT {key} FROM {table} WHERE {where}{walk} LIMIT ?"),
                        (*params, *((after,) if walk else ()), PURGE_BATCH),
                    ).fetchall()
                ]
                if walk and keys:
                    after = max(keys)
                for clause, part in self._id_lists(keys):
                    if kind == PURGE_PURCHASES:
                        lines += int(
                            db.execute(
                                self._q(
                                    f"SELECT COUNT(*) FROM purchase_lines WHERE event_id {clause}"
                                ),
                                part,
                            ).fetchone()[0]
                        )
                    rows += db.execute(
                        self._q(f"DELETE FROM {plain} WHERE {column} {clause}"), part
                    ).rowcount
            if len(keys) < PURGE_BATCH:
                break
        if rows:
            self._after_erasure()
        return Purged(kind, rows, lines)

    # -- deployment keys ---------------------------------------------------------------------

    def pseudonym_key(self) -> bytes:
        """The key of the customer pseudonyms in logs, made (random, 256 bits) by the
        first caller and the same for every later one, here or in another process on
        this store."""
        with self._transaction() as db:
            db.execute(
                self._q(
                    "INSERT INTO deployment_keys (name, value, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (PSEUDONYM_KEY, new_key(), int(time.time())),
            )
            row = db.execute(
                self._q("SELECT value FROM deployment_keys WHERE name = ?"), (PSEUDONYM_KEY,)
            ).fetchone()
        return bytes(row[0])

    def swap_shared_settings(
        self, fingerprints: dict[str, str]
    ) -> tuple[dict[str, str], int] | None:
        """Record ``fingerprints`` (a setting's name: a digest of its value) as the shared
        settings of the latest service to start on this store, and return those recorded
        before with when (unix seconds), or None the first time."""
        with self._transaction() as db:
            row = db.execute(
                self._q("SELECT value, created_at FROM deployment_keys WHERE name = ?"),
                (SHARED_SETTINGS,),
            ).fetchone()
            db.execute(
                self._q(
                    "INSERT INTO deployment_keys (name, value, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                    "created_at = excluded.created_at"
                ),
                (
                    SHARED_SETTINGS,
                    json.dumps(fingerprints, sort_keys=True).encode(),
                    int(time.time()),
                ),
            )
        return None if row is None else _fingerprints(bytes(row[0]), int(row[1]))

    def shared_settings(self) -> tuple[dict[str, str], int] | None:
        """The fingerprints the latest service to start on this store recorded, and when
        (unix seconds); None before the first. Read only: a running replica compares
        them with its own (``nbo.service.shared.SharedSettingsWatch``)."""
        with self._reading() as db:
            row = db.execute(
                self._q("SELECT value, created_at FROM deployment_keys WHERE name = ?"),
                (SHARED_SETTINGS,),
            ).fetchone()
        return None if row is None else _fingerprints(bytes(row[0]), int(row[1]))

    # -- reloads of every replica --------------------------------------------------------------

    def request_reload(self, version: str, force: bool, origin: str) -> int:
        """Record a reload of ``version`` for every replica on this store to follow
        (``nbo.service.reload``), asked by the replica ``origin``; answers its number,
        one more than the last one's. Two replicas asking at once get two numbers: the
        row is read and written under a lock (the file's write lock on SQLite, an
        advisory lock on PostgreSQL)."""
        with self._transaction() as db:
            self._lock_customers(db, ["nbo: reload request"])  # as the migrations' lock
            row = db.execute(
                self._q("SELECT value FROM deployment_keys WHERE name = ?"), (RELOAD_REQUEST,)
            ).fetchone()
            before = None if row is None else _replica_reload(bytes(row[0]))
            number = 1 if before is None else before.number + 1
            value = {"number": number, "version": version, "force": force, "origin": origin}
            db.execute(
                self._q(
                    "INSERT INTO deployment_keys (name, value, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                    "created_at = excluded.created_at"
                ),
                (RELOAD_REQUEST, json.dumps(value, sort_keys=True).encode(), int(time.time())),
            )
        return number

    def reload_request(self) -> ReplicaReload | None:
        """The latest reload recorded for every replica; None before the first (or a
        row this nbo cannot read)."""
        with self._reading() as db:
            row = db.execute(
                self._q("SELECT value, created_at FROM deployment_keys WHERE name = ?"),
                (RELOAD_REQUEST,),
            ).fetchone()
        if row is None:
            return None
        request = _replica_reload(bytes(row[0]))
        if request is None:
            return None
        return ReplicaReload(
            request.number, request.version, request.force, request.origin, int(row[1])
        )

    # -- campaign files ----------------------------------------------------------------------

    def register_batch_output(self, output: BatchOutput) -> None:
        """Record a finished campaign file; a file written again at the same path
        replaces its record."""
        with self._transaction() as db:
            db.execute(
                self._q(
                    "INSERT INTO batch_outputs (path, written_at, run_id, rows, format, "
                    "channel, delivered, recorded_customers, capped_customers) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                    "written_at = excluded.written_at, run_id = excluded.run_id, "
                    "rows = excluded.rows, format = excluded.format, "
                    "channel = excluded.channel, delivered = excluded.delivered, "
                    "recorded_customers = excluded.recorded_customers, "
                    "capped_customers = excluded.capped_customers"
                ),
                (
                    output.path,
                    output.written_at,
                    output.run_id,
                    output.rows,
                    output.format,
                    output.channel,
                    output.delivered,
                    output.recorded_customers,
                    output.capped_customers,
                ),
            )

    def batch_outputs(self) -> list[BatchOutput]:
        """Every managed campaign file, by path."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT path, written_at, run_id, rows, format, channel, delivered, "
                "recorded_customers, capped_customers FROM batch_outputs ORDER BY path"
            ).fetchall()
        # SQLite answers a flag as 0 or 1.
        return [
            BatchOutput(
                path,
                written_at,
                run_id,
                count,
                fmt,
                channel,
                None if delivered is None else bool(delivered),
                recorded,
                capped,
            )
            for (path, written_at, run_id, count, fmt, channel, delivered, recorded, capped) in rows
        ]

    def set_batch_output_rows(self, path: str, rows: int) -> None:
        """The rows a managed file holds after an erasure rewrote it."""
        with self._transaction() as db:
            db.execute(self._q("UPDATE batch_outputs SET rows = ? WHERE path = ?"), (rows, path))

    def unregister_batch_output(self, path: str) -> None:
        """Stop managing a file (``nbo batch --unmanaged`` wrote over it)."""
        with self._transaction() as db:
            db.execute(self._q("DELETE FROM batch_outputs WHERE path = ?"), (path,))

    # -- campaigns being delivered -----------------------------------------------------------

    def begin_delivering(self, run: DeliveringRun) -> None:
        """Record a campaign run before it records its first impression."""
        with self._transaction() as db:
            db.execute(
                self._q(
                    "INSERT INTO delivering_runs (run_id, started_at, process, partial, heard_at) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                (run.run_id, run.started_at, run.process, run.partial, run.heard_at),
            )

    def hear_from_delivering(self, run_id: str, at: int) -> bool:
        """The run is still delivering at ``at`` (its heartbeat). False when it is no
        longer on record: ended, or taken for dead by another run, which took its
        impressions back."""
        with self._transaction() as db:
            return (
                db.execute(
                    self._q("UPDATE delivering_runs SET heard_at = ? WHERE run_id = ?"),
                    (at, run_id),
                ).rowcount
                > 0
            )

    def end_delivering(self, run_id: str) -> bool:
        """The run's file is about to be put in place, or its impressions were taken back.
        False when it was no longer on record (taken for dead by another run)."""
        with self._transaction() as db:
            return (
                db.execute(
                    self._q("DELETE FROM delivering_runs WHERE run_id = ?"), (run_id,)
                ).rowcount
                > 0
            )

    def delivering_runs(self) -> list[DeliveringRun]:
        """Every campaign run recorded as being delivered, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT run_id, started_at, process, partial, heard_at FROM delivering_runs "
                "ORDER BY started_at, run_id"
            ).fetchall()
        return [DeliveringRun(*row) for row in rows]

    def remove_run_impressions(self, run_id: str) -> int:
        """Delete every impression a campaign run recorded, whatever the customer: for a
        run whose process died, whose customers are not known any more. A run's
        impressions have event ids and request ids "{run_id}-..." (``nbo.campaigns.batch``):
        the event ids' range is read from the primary key, not by a scan of every event.
        Answers how many were deleted."""
        where, params = _run_impressions(run_id)
        with self._transaction() as db:
            return int(db.execute(self._q(f"DELETE FROM events WHERE {where}"), params).rowcount)

    def count_run_impressions(self, run_id: str) -> int:
        """How many impressions a campaign run recorded (and still has): whether the
        file it wrote is what was sent (``nbo batch`` refuses to replace such a file
        unless told to). The same impressions as ``remove_run_impressions``."""
        where, params = _run_impressions(run_id)
        with self._reading() as db:
            row = db.execute(
                self._q(f"SELECT COUNT(*) FROM events WHERE {where}"), params
            ).fetchone()
        return int(row[0])


def _run_impressions(run_id: str) -> tuple[str, tuple[Any, ...]]:
    """The condition (and its parameters) on ``events`` of a campaign run's impressions:
    event ids and request ids "{run_id}-..." (``nbo.campaigns.batch``), the event ids'
    range read from the primary key, not by a scan of every event. Ids compare byte by
    byte on both backends: "{run_id}-" up to "{run_id}." (the next character) is exactly
    the ids that start with the prefix."""
    prefix = f"{run_id}-"
    return (
        "event_id >= ? AND event_id < ? AND type = ? AND substr(request_id, 1, ?) = ?",
        (prefix, f"{run_id}.", IMPRESSION, len(prefix), prefix),
    )


def erased_list_of(db: Database, mark: str, hashed: bool) -> ErasedList:
    """The erased list, for a reader that does not migrate (the trainer): ``hashed``
    when the store's schema keeps hashes (migration 9); a store from before keeps the
    ids in clear, which are hashed here under a key of this read's own, so the caller
    tests ids the same way on either."""
    if not hashed:
        rows = db.execute("SELECT customer_id FROM erased").fetchall()
        return ErasedList.of_ids(new_key(), (row[0] for row in rows))
    key = db.execute(
        f"SELECT value FROM deployment_keys WHERE name = {mark}", (ERASED_KEY,)
    ).fetchone()
    if key is None:
        raise StoreUrlError(MISSING_ERASED_KEY)
    hashes = db.execute("SELECT id_hash FROM erased").fetchall()
    return ErasedList(bytes(key[0]), (row[0] for row in hashes))


class _Delivery:
    """The reads and writes of ``SQLStore.deliver``'s transaction."""

    def __init__(self, store: SQLStore, db: Database) -> None:
        self._store = store
        self._db = db

    def consents_of(self, customer_ids: Sequence[str]) -> dict[str, Consent]:
        return self._store._consents(self._db, customer_ids)

    def contacts_of_many(
        self, customer_ids: Sequence[str], since: int
    ) -> dict[str, ContactHistory]:
        return self._store._contacts(self._db, customer_ids, since)

    def purchases_of_many(
        self, customer_ids: Sequence[str], limit: int | None = None
    ) -> dict[str, list[PostedPurchase]]:
        return self._store._purchases(self._db, customer_ids, limit)

    def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        return self._store._erased_among(self._db, customer_ids)

    def add_events(self, events: Sequence[Event]) -> AddResult:
        return self._store._add_events(self._db, events)


def _replica_reload(value: bytes) -> ReplicaReload | None:
    """A reload request's row, or None when it is not one this nbo wrote."""
    try:
        data = json.loads(value)
        return ReplicaReload(
            int(data["number"]),
            str(data["version"]),
            bool(data["force"]),
            str(data["origin"]),
            0,
        )
    except (ValueError, TypeError, KeyError):
        return None


def _fingerprints(value: bytes, at: int) -> tuple[dict[str, str], int] | None:
    """A shared-settings row as recorded, or None when it is not one this nbo wrote."""
    try:
        recorded = json.loads(value)
    except ValueError:
        return None
    if not isinstance(recorded, dict):
        return None
    return {str(k): str(v) for k, v in recorded.items()}, at
