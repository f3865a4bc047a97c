"""Offers for one customer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from nbo.config import Settings
from nbo.events import ImpressionEvent
from nbo.model import ServingModel
from nbo.policies import (
    DAY,
    REASON_FREQUENCY_CAP,
    ContactHistory,
    check_frequency_cap,
    fatigued_items,
)
from nbo.ranking import PROFILE_NONE, SOURCE_CF, Offer, Ranking, RecentPurchase, rank_offers
from nbo.service.deps import ModelDep, SettingsDep, StoreDep
from nbo.service.schemas import Channel, OfferOut, OffersResponse, ReasonOut
from nbo.store import DEFAULT_CONSENT, Store

# The customer withdrew consent to be contacted on this channel: no offers for it.
REASON_NO_CHANNEL_CONSENT = "no_channel_consent"

router = APIRouter(prefix="/v1/customers", tags=["offers"])

CustomerId = Annotated[str, Path(min_length=1, max_length=256, description="your customer id")]


@router.get("/{customer_id}/offers", response_model=OffersResponse)
async def get_offers(
    customer_id: CustomerId,
    model: ModelDep,
    settings: SettingsDep,
    store: StoreDep,
    k: Annotated[int, Query(ge=1, le=100, description="how many offers")] = 10,
    channel: Annotated[
        Channel, Query(description="where the offers will be shown")
    ] = Channel.email,
    record: Annotated[
        bool,
        Query(
            description="the offers will be delivered: apply the channel's frequency cap "
            "and record the impressions (for caps and offer fatigue)"
        ),
    ] = False,
) -> OffersResponse:
    """Ranked offers for a customer; never an item bought inside the suppression window,
    nor one the customer is tired of; within the channel's frequency cap when recorded.

    ``async def`` on purpose: scoring takes well under a millisecond, and measured with wrk
    on loopback (one worker, 16 connections) this served 727 req/s against 432 req/s as a
    plain ``def`` run in the thread pool. Store reads use this thread's own connection
    and never wait for a write; recording (a durable write) runs in the thread pool.
    """
    now = settings.now()
    now_s = int(now.timestamp())
    request_id = uuid.uuid4().hex
    answer = OffersResponse(
        customer_id=customer_id,
        model_version=model.version,
        channel=channel,
        request_id=request_id,
        personalized=False,
        profile=PROFILE_NONE,
        suppressed_items=0,
        as_of=now.isoformat(),
        offers=[],
    )
    consent = store.consent_of(customer_id) or DEFAULT_CONSENT
    if not consent.allows(channel.value):
        answer.suppressed_reason = REASON_NO_CHANNEL_CONSENT
        return answer
    contacts = contact_history(store, customer_id, now_s, settings)
    if record:
        decision = check_frequency_cap(
            settings.frequency_caps.get(channel.value), contacts, channel.value, now_s
        )
        if not decision.allowed:
            answer.suppressed_reason = REASON_FREQUENCY_CAP
            if decision.next_allowed_at is not None:
                answer.next_allowed_at = datetime.fromtimestamp(
                    decision.next_allowed_at, UTC
                ).isoformat()
            return answer
    recent = [
        RecentPurchase(p.item_id, p.occurred_at, p.order_id or p.event_id)
        for p in store.purchases_of(customer_id)
    ]
    ranking = rank_offers(
        model,
        customer_id,
        k,
        now_s,
        settings.suppression,
        recent,
        fatigued=fatigued_items(settings.fatigue, contacts, now_s),
        personalize=consent.personalization,
    )
    answer.personalized = ranking.personalized
    answer.profile = ranking.profile
    answer.suppressed_items = ranking.suppressed_items
    answer.removed = ranking.removed
    answer.offers = [_offer_out(model, offer) for offer in ranking.offers]
    if record and ranking.offers:
        await run_in_threadpool(
            store.add_events, impressions(customer_id, channel.value, request_id, now, ranking)
        )
        answer.recorded = True
    return answer


def impressions(
    customer_id: str, channel: str, request_id: str, now: datetime, ranking: Ranking
) -> list[ImpressionEvent]:
    """The impressions of a delivered answer, one per offer, keyed by request id and rank."""
    return [
        ImpressionEvent(
            type="offer_impression",
            event_id=f"{request_id}-{offer.rank}",
            customer_id=customer_id,
            timestamp=now,
            item_id=offer.item_id,
            channel=channel,
            request_id=request_id,
        )
        for offer in ranking.offers
    ]


def contact_history(
    store: Store, customer_id: str, now_s: int, settings: Settings
) -> ContactHistory:
    """The customer's impressions and responses as far back as any policy looks."""
    days = [cap.days for cap in settings.frequency_caps.values()]
    if settings.fatigue is not None:
        days.append(settings.fatigue.days)
    if not days:
        return ContactHistory()
    return store.contacts_of(customer_id, since=int(now_s - max(days) * DAY))


def _offer_out(model: ServingModel, offer: Offer) -> OfferOut:
    names = model.item_names
    if offer.reason.source == SOURCE_CF and offer.reason.because:
        others = [i for i in offer.reason.because if i != offer.item_id]
        bought = ", ".join(names.get(i, i) for i in others)
        again = offer.item_id in offer.reason.because
        if again and others:
            text = f"you bought this before; it goes with {bought}"
        elif again:
            text = "you bought this before"
        else:
            text = f"customers who bought what you bought ({bought}) also buy this"
    elif offer.reason.source == SOURCE_CF:
        text = "matches your purchase history"
    else:
        text = "popular with customers right now"
    return OfferOut(
        item_id=offer.item_id,
        item_name=names.get(offer.item_id),
        score=offer.score,
        rank=offer.rank,
        reason=ReasonOut(source=offer.reason.source, because=list(offer.reason.because), text=text),
    )
