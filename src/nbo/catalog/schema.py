"""The offer catalogue: what may be offered, to whom, when, and what it is worth.

A marketer edits one file (YAML or JSON, by extension; path from ``NBO_CATALOG``). It is
validated whole at load: a typo or an impossible term refuses the file with one line
naming the file, the offer and the field, because a half-understood catalogue would
silently offer the wrong thing. The service re-reads the file when it changes
(``CatalogHolder``); a bad new file is refused and the old catalogue keeps serving.

Arbitration (in ranking) multiplies propensity x value x stage weight x lever; this
module only answers the catalogue's part of it, cheaply, from maps built at load:

- every item the model knows is a *product offer* on the ``products`` terms, changed per
  item by ``items`` overrides (or excluded), and by a live ``kind: product`` offer for the
  item or its category;
- *incentives* (percent off, points multiplier, free shipping) compete with products,
  with ``response_rate`` as their propensity and ``value`` in money.

This module knows no HTTP and no model: stage and channel names are defined here, and
the service's ``Channel`` enum must match ``CHANNELS``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)

from nbo.core.documents import document_time, plain_number, plain_text
from nbo.core.ids import check_id, check_path_id
from nbo.core.vocabulary import CHANNELS, STAGES, ChannelName, OfferKind, Stage

log = logging.getLogger(__name__)

IncentiveKind = Literal["percent_off", "points_multiplier", "free_shipping"]

PERCENT_OFF: Final = "percent_off"
POINTS_MULTIPLIER: Final = "points_multiplier"
FREE_SHIPPING: Final = "free_shipping"

DEFAULT_FINGERPRINT: Final = "default"
PRODUCT_OFFER_PREFIX: Final = "product:"
OFFER_ITEM_SEPARATOR: Final = ":"
"""Joins a category offer's id and one of its items (``christmas-2011:22086``): an
``offer_id`` names one offer within an answer, and a category offer is one per item. No
offer id in the file may hold it, so a joined id never collides with one."""
DEFAULT_RESPONSE_RATE: Final = 0.05
"""An incentive's propensity when the file gives no ``response_rate``: one customer in
twenty, a guess in the range of email offers' redemption; the docs say to write one."""
FALLBACK_VALUE: Final = 1.0
"""The value of a product sale when neither the item's price nor the model's typical
line value is known: every product then counts the same, so products rank by
propensity alone (scaled by margin and lever), as they did before the catalogue."""


# --- the file's schema --------------------------------------------------------------


def _as_text(value: Any, info: ValidationInfo) -> str:
    """YAML reads ``item_id: 22423`` as a number; an id is text, whatever it looks like:
    as it was written (``0123`` is the id '0123', not YAML's octal 83), since the loader
    keeps an integer's text. Any other value that is not text (``yes``, ``1.50``,
    ``1:30.5``) has lost its text: refused, saying what YAML read it as (``plain_text``),
    never turned into 'True' or '1.5'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return getattr(value, "written", str(value))
    return plain_text(value, info)


# Ids follow the API's rules (``nbo.core.ids``): an offer id is recorded as an
# impression's item_id and a category name is written beside it, so a catalogue id the
# API would refuse ("new-welcome " with its space) made recorded answers fail (500).
Id = Annotated[str, BeforeValidator(_as_text), Field(min_length=1), AfterValidator(check_id)]
# An item id also names a route's path (``/v1/items/{id}/similar``), as in purchases.
ItemId = Annotated[
    str, BeforeValidator(_as_text), Field(min_length=1), AfterValidator(check_path_id)
]
# ISO 8601 text (a date alone is its midnight), no zone = UTC; a number is refused, not
# read as unix seconds: the experiments' rule (``nbo.core.documents.document_time``).
UtcTime = Annotated[datetime, BeforeValidator(document_time)]
# Every number field refuses YAML's octal (``010`` is 8), hex and base-60 integers
# (``nbo.core.documents.plain_number``).
Number = Annotated[float, BeforeValidator(plain_number)]
Count = Annotated[int, BeforeValidator(plain_number)]
Money = Annotated[Number, Field(ge=0)]
# A share is a fraction, 0 to 1: `margin: 25` (meant 25%) would make values 100x.
Share = Annotated[Number, Field(ge=0, le=1)]
Weight = Annotated[Number, Field(ge=0)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt field is an error, never a silently ignored term.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProductDefaults(_Strict):
    """The terms every product offer has unless an item override or an offer says otherwise."""

    value: Money | None = Field(
        None, description="money per sale; null = the model's typical line value"
    )
    price_weighted: bool = Field(
        False, description="value = margin x the item's own median price, not a flat value"
    )
    margin: Share = Field(1.0, description="share of the price or line value kept")
    lever: Weight = Field(1.0, description="the marketer's weight; 0 never wins, 2 doubles")
    stages: tuple[Stage, ...] = Field(STAGES, min_length=1)
    channels: tuple[ChannelName, ...] = Field(CHANNELS, min_length=1)
    cap_per_customer: Count | None = Field(
        None, ge=1, description="impressions per customer in cap_days; null = no cap"
    )
    cap_days: Number = Field(30.0, gt=0)


class ItemOverride(ProductDefaults):
    """Per-item product terms: only the fields written here replace the ``products`` ones."""

    item_id: ItemId
    exclude: bool = Field(False, description="never offer this item")


class CatalogOffer(_Strict):
    """One offer of the file: an incentive, or product terms for one item or a category.

    On a product offer, the terms not written come from ``products`` (filled at load);
    ``value`` is always set on an incentive (checked at load).
    """

    id: Id
    kind: OfferKind
    title: Annotated[str, BeforeValidator(_as_text)] | None = None
    incentive: IncentiveKind | None = None
    amount: Number | None = Field(
        None, gt=0, description="percent off, or the points multiplier; null for free_shipping"
    )
    item_id: ItemId | None = None
    category: Id | None = None
    value: Money | None = None
    price_weighted: bool = False
    margin: Share = 1.0
    response_rate: Share = Field(
        DEFAULT_RESPONSE_RATE, description="share of customers who take an incentive up"
    )
    stages: tuple[Stage, ...] = Field(STAGES, min_length=1)
    channels: tuple[ChannelName, ...] = Field(CHANNELS, min_length=1)
    valid_from: UtcTime | None = None
    valid_to: UtcTime | None = None
    cap_per_customer: Count | None = Field(None, ge=1)
    cap_days: Number = Field(30.0, gt=0)
    lever: Weight = 1.0

    def is_valid_at(self, now_s: int) -> bool:
        """``valid_from <= now < valid_to``; a missing bound does not bound."""
        return (self.valid_from is None or self.valid_from.timestamp() <= now_s) and (
            self.valid_to is None or now_s < self.valid_to.timestamp()
        )


class IncentiveOffer(CatalogOffer):
    """An incentive as served: checked at load, so its kind and value are always set."""

    incentive: IncentiveKind
    value: Money


class StageWeights(_Strict):
    """How much a stage favours each kind of offer; 1.0 is neutral."""

    incentive: Weight = 1.0
    product: Weight = 1.0


class CatalogFile(_Strict):
    """The whole file, version 1."""

    version: Literal[1]
    products: ProductDefaults = Field(default_factory=ProductDefaults)
    items: tuple[ItemOverride, ...] = ()
    categories: dict[Id, tuple[ItemId, ...]] = Field(default_factory=dict)
    offers: tuple[CatalogOffer, ...] = ()
    stage_weights: dict[Stage, StageWeights] = Field(default_factory=dict)
    max_incentives: Count | None = Field(
        1,
        ge=0,
        description="incentives one answer may carry: those of highest priority (expected "
        "value) among the customer's eligible ones; null = no limit",
    )
