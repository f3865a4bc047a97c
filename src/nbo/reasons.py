"""An offer's reason in words: one wording for API answers and batch files alike."""

from __future__ import annotations

from nbo.model import ServingModel
from nbo.ranking import (
    SOURCE_ALSO_BOUGHT,
    SOURCE_BUY_AGAIN,
    SOURCE_CATALOG,
    SOURCE_CF,
    SOURCE_POPULAR_IN_STAGE,
    Offer,
)

STAGE_WORDS = {
    "new": "new customers",
    "active": "active customers",
    "at_risk": "customers at risk of leaving",
    "lapsed": "customers who have not bought for a while",
    "loyal": "loyal customers",
}


def reason_text(model: ServingModel, offer: Offer, stage: str) -> str:
    """The reason for ``offer``, for a marketer or a customer, from the source it is
    credited to and the purchases behind it (item names where the model knows them)."""
    names = model.item_names
    item = offer.item_id
    source, because = offer.reason.source, offer.reason.because
    if source == SOURCE_CF and because:
        others = [i for i in because if i != item]
        bought = ", ".join(names.get(i, i) for i in others)
        again = item in because
        if again and others:
            return f"you bought this before; it goes with {bought}"
        if again:
            return "you bought this before"
        return f"customers who bought what you bought ({bought}) also buy this"
    if source == SOURCE_CF:
        return "matches your purchase history"
    if source == SOURCE_BUY_AGAIN and item is not None:
        cycle = model.cycle_days_of(item)
        if cycle is not None and offer.reason.orders > 1:
            return f"you buy this about every {cycle:.0f} days"
        if cycle is not None:
            return f"you bought this before; customers buy it again about every {cycle:.0f} days"
        return "you bought this before"
    if source == SOURCE_ALSO_BOUGHT and because:
        bought = ", ".join(names.get(i, i) for i in because)
        return f"customers who bought {bought} also bought this"
    if source == SOURCE_POPULAR_IN_STAGE:
        return "popular with customers like you"
    if source == SOURCE_CATALOG:
        return f"{offer.title or offer.offer_id}: an offer for {STAGE_WORDS.get(stage, stage)}"
    return "popular this month"
