"""Deliveries: offers that will be shown, decided and recorded as one step per customer.

A delivery is checked against the customer's contacts (the channel's frequency cap, the
offer caps, fatigue) and its impressions are then what the next check counts. Read,
decide and record as three separate steps, two deliveries to one customer (two API
calls, a call and a campaign, two replicas) can both pass a cap that allows one. So
``deliver_customers`` records inside ``Store.deliver``, the store's transaction that holds
each customer's lock, and re-reads the contacts there:

1. the customers are decided on their state read without any lock (cheap; other
   deliveries go on meanwhile), as ``decide_customers`` does;
2. holding their locks, their contacts are read again; a customer whose contacts changed
   in between (a delivery elsewhere, a click) is decided again on the state read under
   the lock; then every decided customer's impressions are recorded, in the same
   transaction.

The API's ``?record=true`` and ``nbo batch --record`` both come here, each naming its
impressions (``impressions``: the event ids and request id it tags them with). The request
id names one delivery: it is what the frequency cap counts as one, so a delivery whose
request id already names one of the customer's recorded deliveries is refused
(``DeliveryRepeated``), and nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from nbo.core.errors import NboError
from nbo.core.vocabulary import ChannelName, OfferKind, Stage
from nbo.data.events import ImpressionEvent
from nbo.offers.decision import Occasion
from nbo.offers.state import ContactHistory
from nbo.runtime.decide import (
    Context,
    Decided,
    decide_states,
    read_and_decide,
    read_states,
)
from nbo.store.base import Delivery

# A decided customer's impressions (none when the customer gets no offers).
Impressions = Callable[[Decided], list[ImpressionEvent]]


class DeliveryRepeated(NboError):
    """A delivery tagged with the request id of one already recorded for the customer.
    The frequency cap counts a customer's impressions by request id, one delivery each:
    recorded under a request id used before, a second delivery would count as the first
    and pass the cap (a client that sends a fixed ``X-Request-ID``, say)."""

    def __init__(self, customer_id: str, request_id: str) -> None:
        self.customer_id = customer_id
        self.request_id = request_id
        super().__init__(
            f"request id {request_id!r} already names a delivery recorded for customer "
            f"{customer_id!r}: each delivery needs a request id of its own (send a new "
            "X-Request-ID, or none to have one made); nothing was recorded"
        )


@dataclass(frozen=True)
class Delivered:
    """The decisions of a delivery, in the customers' order (without those a stage
    selection left out), and the impressions it stored."""

    decided: list[Decided]
    recorded: int


def deliver_customers(
    context: Context,
    customer_ids: Sequence[str],
    occasion: Occasion,
    impressions: Impressions,
    stage: str | None = None,
    request_id: str | None = None,
) -> Delivered:
    """Decide ``customer_ids`` for a delivery on ``occasion`` and record their
    impressions, so that no other delivery to any of them passes between the check and
    the record (see the module docstring). ``request_id``: the id every impression of
    this delivery carries, when one id names it for every customer (the API's): refused
    when it names a recorded delivery of one of them, whether or not this one has
    anything to record (a retry held back by the cap its first try filled)."""
    if not occasion.delivery:
        raise ValueError("a preview is not delivered: use decide_customers")
    read = read_and_decide(context, customer_ids, occasion, stage)
    since, states, decided = read.since, read.states, read.decided

    def record(delivery: Delivery) -> Delivered:
        contacts = delivery.contacts_of_many(customer_ids, since)
        if request_id is not None:
            _refuse_repeated_id(customer_ids, request_id, contacts)
        changed = [
            n
            for n, (customer, state) in enumerate(zip(customer_ids, states, strict=True))
            if contacts.get(customer, ContactHistory()) != state.contacts
        ]
        if changed:
            again = [customer_ids[n] for n in changed]
            fresh = read_states(delivery, again, since, context.max_posted_lines)
            for n, one in zip(
                changed, decide_states(context, again, fresh, occasion, stage), strict=True
            ):
                decided[n] = one
        final = [one for one in decided if one is not None]
        events = [event for one in final for event in impressions(one)]
        _refuse_repeated(events, contacts)
        recorded = len(delivery.add_events(events).accepted) if events else 0
        return Delivered(final, recorded)

    return context.store.deliver(customer_ids, record)


def _refuse_repeated(
    events: Sequence[ImpressionEvent], contacts: dict[str, ContactHistory]
) -> None:
    """Raise ``DeliveryRepeated`` when an impression's request id names a delivery
    already among the customer's contacts (read under the lock, as far back as any rule
    looks: an older one no longer counts against a cap)."""
    used: dict[str, set[str]] = {}
    for event in events:
        if event.request_id is None:
            continue
        if event.customer_id not in used:
            history = contacts.get(event.customer_id, ContactHistory())
            used[event.customer_id] = {contact.delivery for contact in history.impressions}
        if event.request_id in used[event.customer_id]:
            raise DeliveryRepeated(event.customer_id, event.request_id)


def _refuse_repeated_id(
    customer_ids: Sequence[str], request_id: str, contacts: dict[str, ContactHistory]
) -> None:
    """Raise ``DeliveryRepeated`` when ``request_id`` names a delivery already among a
    customer's contacts."""
    for customer in customer_ids:
        history = contacts.get(customer, ContactHistory())
        if any(contact.delivery == request_id for contact in history.impressions):
            raise DeliveryRepeated(customer, request_id)


def delivery_preview(
    context: Context, customer_ids: Sequence[str], occasion: Occasion
) -> list[Decided]:
    """What a delivery on ``occasion`` would answer now, recorded nowhere and under no
    lock: whether the channel's frequency cap would hold it back, and when it allows the
    next (the dashboard's customer page). A delivery that goes out is decided again by
    ``deliver_customers``, under the customers' locks."""
    if not occasion.delivery:
        raise ValueError("a preview of a delivery needs a delivery occasion")
    decided = read_and_decide(context, customer_ids, occasion).decided
    return [one for one in decided if one is not None]


def impressions_of(
    decided: Decided, channel: str, at: datetime, delivery_id: str, request_id: str
) -> list[ImpressionEvent]:
    """The impressions of one delivered answer, one per offer (event id
    ``{delivery_id}-{rank}``), tagged with ``request_id`` (what the frequency cap counts
    as one delivery), the experiment and variant that answered and the model version that
    decided (the answer's ``model_version``: an experiment's outcomes are broken down by
    it, the data export says it), and the offer's kind and source and the customer's
    stage (what the dashboard counts offers going out by)."""
    ranking = decided.decision.ranking
    if ranking is None or not ranking.has_offers:
        return []
    assignment = decided.assignment
    stage = cast(Stage | None, decided.decision.profile.stage)
    return [
        ImpressionEvent(
            type="offer_impression",
            event_id=f"{delivery_id}-{offer.rank}",
            customer_id=decided.customer_id,
            timestamp=at,
            item_id=offer.item_id or offer.offer_id,
            channel=cast(ChannelName, channel),
            request_id=request_id,
            experiment=assignment.experiment,
            variant=assignment.variant,
            kind=cast(OfferKind, offer.kind),
            source=offer.reason.source,
            stage=stage,
            model_version=assignment.model.version,
        )
        for offer in ranking.offers
    ]
