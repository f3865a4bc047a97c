"""Offers for one customer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from nbo.model import ServingModel
from nbo.ranking import SOURCE_CF, Offer, RecentPurchase, rank_offers
from nbo.service.deps import ModelDep, SettingsDep, StoreDep
from nbo.service.schemas import Channel, OfferOut, OffersResponse, ReasonOut

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
) -> OffersResponse:
    """Ranked offers for a customer; never an item bought inside the suppression window.

    ``async def`` on purpose: scoring takes well under a millisecond, and measured with wrk
    on loopback (one worker, 16 connections) this served 727 req/s against 432 req/s as a
    plain ``def`` run in the thread pool.
    """
    now = settings.now()
    # Purchases posted since training count at once (a read on this thread's own
    # connection: it never waits for a write).
    recent = [
        RecentPurchase(p.item_id, p.occurred_at, p.order_id or p.event_id)
        for p in store.purchases_of(customer_id)
    ]
    ranking = rank_offers(model, customer_id, k, int(now.timestamp()), settings.suppression, recent)
    return OffersResponse(
        customer_id=customer_id,
        model_version=model.version,
        channel=channel,
        personalized=ranking.personalized,
        profile=ranking.profile,
        suppressed_items=ranking.suppressed_items,
        as_of=now.isoformat(),
        offers=[_offer_out(model, offer) for offer in ranking.offers],
    )


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
