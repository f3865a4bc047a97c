"""The terms ranking asks for: each item's and offer's eligibility, value and lever, built
once per catalogue (``Catalog``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import get_args

import numpy as np

from nbo.catalog.schema import (
    DEFAULT_FINGERPRINT,
    FALLBACK_VALUE,
    OFFER_ITEM_SEPARATOR,
    PRODUCT_OFFER_PREFIX,
    CatalogFile,
    CatalogOffer,
    IncentiveOffer,
    ItemOverride,
    ProductDefaults,
)
from nbo.core.arrays import filled
from nbo.core.errors import MAX_LISTED_PROBLEMS
from nbo.core.vocabulary import CHANNELS, KIND_INCENTIVE, KIND_PRODUCT, STAGES, OfferKind

log = logging.getLogger(__name__)

# --- what the ranking asks ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductTerms:
    """The terms one item is offered on, for one stage, channel and time.

    ``offer_id`` names the one offer these terms make: the id of the catalogue's product
    offer for the item, ``<offer id>:<item_id>`` for an item of a category offer, or
    ``product:<item_id>`` for the item's own terms.
    """

    offer_id: str
    value: float | None
    price_weighted: bool
    margin: float
    lever: float
    cap_per_customer: int | None
    cap_days: float
    # The catalogue offer's title (a product or category offer's; None for the item's
    # own terms), shown with each offer it makes.
    title: str | None = None


def resolve_value(
    terms: ProductTerms, item_price: float | None, typical_line_value: float | None
) -> float:
    """The money one sale of the product offer is worth to the business.

    - an explicit ``value`` is taken as is (it is already the business's share);
    - ``price_weighted``: ``margin x item_price`` (the item's own median price);
    - otherwise, or when the price is unknown: ``margin x typical_line_value`` (the median
      purchase line from training), so products are on the same money scale as incentives;
    - when nothing is known: ``margin x 1.0``, so products rank by propensity alone.

    Unknown, non-finite or non-positive prices count as unknown.
    """
    if terms.value is not None:
        return terms.value
    if terms.price_weighted and _known(item_price):
        return terms.margin * float(item_price)  # type: ignore[arg-type]
    if _known(typical_line_value):
        return terms.margin * float(typical_line_value)  # type: ignore[arg-type]
    return terms.margin * FALLBACK_VALUE


def resolve_values(
    terms: ProductTerms, item_prices: np.ndarray, typical_line_value: float | None
) -> np.ndarray:
    """``resolve_value`` for many items on the same terms (prices: NaN = unknown)."""
    prices = np.asarray(item_prices, dtype=np.float64)
    if terms.value is not None:
        return filled(len(prices), float(terms.value))
    # Without a price, price_weighted terms fall back as plain ones do.
    fallback = resolve_value(terms, None, typical_line_value)
    if not terms.price_weighted:
        return filled(len(prices), fallback)
    with np.errstate(invalid="ignore"):
        known = np.isfinite(prices) & (prices > 0)
    return np.where(known, terms.margin * np.where(known, prices, 0.0), fallback)


def _known(amount: float | None) -> bool:
    return amount is not None and amount > 0 and amount != float("inf")


@dataclass(frozen=True, slots=True)
class _Base:
    """An item's own product terms (defaults plus override), eligibility included."""

    stages: frozenset[str]
    channels: frozenset[str]
    terms: ProductTerms


@dataclass(frozen=True, slots=True)
class _Campaign:
    """A ``kind: product`` offer, precomputed for the per-item lookup."""

    starts_s: float
    ends_s: float
    stages: frozenset[str]
    channels: frozenset[str]
    terms: ProductTerms


def _seconds(moment: datetime | None, missing: float) -> float:
    return missing if moment is None else moment.timestamp()


def _terms_of(offer_id: str, source: ProductDefaults | CatalogOffer) -> ProductTerms:
    return ProductTerms(
        offer_id=offer_id,
        value=source.value,
        price_weighted=source.price_weighted,
        margin=source.margin,
        lever=source.lever,
        cap_per_customer=source.cap_per_customer,
        cap_days=source.cap_days,
        title=source.title if isinstance(source, CatalogOffer) else None,
    )


class Catalog:
    """A validated catalogue, with the lookups ranking needs built once at load.

    Immutable by convention: a reload builds a new one and swaps the reference.
    """

    def __init__(
        self,
        document: CatalogFile,
        source: Path | None = None,
        fingerprint: str = DEFAULT_FINGERPRINT,
        loaded_at: float | None = None,
    ) -> None:
        self.document = document
        self.source = source
        self.fingerprint = fingerprint
        self.loaded_at = time.time() if loaded_at is None else loaded_at
        self.products = document.products
        self.offers: tuple[CatalogOffer, ...] = tuple(
            _as_served(offer, document.products) for offer in document.offers
        )
        self.categories: Mapping[str, tuple[str, ...]] = document.categories
        self._default = _Base(
            frozenset(self.products.stages),
            frozenset(self.products.channels),
            _terms_of(PRODUCT_OFFER_PREFIX, self.products),
        )
        self._excluded = frozenset(item.item_id for item in document.items if item.exclude)
        self._bases = {
            item.item_id: _base_of(item, self.products)
            for item in document.items
            if not item.exclude
        }
        self._campaigns = self._build_campaigns()
        # Product offers' ids: a category offer's (joined with an item in answers) and
        # an offer naming one item's (``item_of_offer``).
        products = [offer for offer in self.offers if offer.kind == KIND_PRODUCT]
        self._category_offers = frozenset(o.id for o in products if o.category is not None)
        self._item_offers = {o.id: o.item_id for o in products if o.item_id is not None}
        self._named = self._excluded | frozenset(self._bases) | frozenset(self._campaigns)
        # Every item the file names, a category's members too when no offer uses it.
        self.item_ids: frozenset[str] = self._named | frozenset(
            item for items in self.categories.values() for item in items
        )
        # Whether any product terms weigh their value by the item's price.
        self.uses_prices: bool = (
            self._default.terms.price_weighted
            or any(base.terms.price_weighted for base in self._bases.values())
            or any(c.terms.price_weighted for cs in self._campaigns.values() for c in cs)
        )
        self._incentives = tuple(o for o in self.offers if isinstance(o, IncentiveOffer))
        # How many incentives one answer may carry (None: no limit).
        self.max_incentives: int | None = document.max_incentives
        self._weights: dict[tuple[str, str], float] = {
            (stage, kind): getattr(weights, kind)
            for stage, weights in document.stage_weights.items()
            for kind in get_args(OfferKind)
        }
        caps = [
            (terms.cap_per_customer, terms.cap_days)
            for terms in (self._default.terms, *(base.terms for base in self._bases.values()))
        ] + [(offer.cap_per_customer, offer.cap_days) for offer in self.offers]
        # How far back a caller must read impressions to check every cap.
        self.max_cap_days: float = max((days for cap, days in caps if cap is not None), default=0.0)

    def _build_campaigns(self) -> dict[str, tuple[_Campaign, ...]]:
        """Item id -> its product offers: offers naming the item first, then categories,
        each in file order; the first live one gives the item's terms."""
        by_item: dict[str, list[_Campaign]] = {}
        for pass_ in ("item", "category"):
            for offer in self.offers:
                if offer.kind != KIND_PRODUCT:
                    continue
                if pass_ == "item" and offer.item_id is not None:
                    items: Sequence[str] = (offer.item_id,)
                elif pass_ == "category" and offer.category is not None:
                    items = self.categories[offer.category]
                else:
                    continue
                campaign = _Campaign(
                    _seconds(offer.valid_from, float("-inf")),
                    _seconds(offer.valid_to, float("inf")),
                    frozenset(offer.stages),
                    frozenset(offer.channels),
                    _terms_of(offer.id, offer),
                )
                for item_id in items:
                    mine = campaign
                    if pass_ == "category":
                        # One offer per item of the category, each with its own id.
                        each = f"{offer.id}{OFFER_ITEM_SEPARATOR}{item_id}"
                        mine = replace(campaign, terms=replace(campaign.terms, offer_id=each))
                    by_item.setdefault(item_id, []).append(mine)
        return {item_id: tuple(campaigns) for item_id, campaigns in by_item.items()}

    def item_of_offer(self, offer_or_item: str) -> str:
        """The id an impression of ``offer_or_item`` stores (``impressions_of``): the
        item of a product offer's id as an offers answer names it (``product:22423``, a
        category offer's ``christmas-2011:22086``, a product offer's own id naming one
        item), anything else (an item id, an incentive's id) as it is. What a posted
        click or conversion is matched to its impressions by, whichever id it names.

        A category offer's id is recognised while the catalogue holds the offer; an id
        starting ``product:`` is always a product offer's (an item id that starts so is
        read as one)."""
        if offer_or_item.startswith(PRODUCT_OFFER_PREFIX):
            item = offer_or_item[len(PRODUCT_OFFER_PREFIX) :]
            return item or offer_or_item
        head, separator, item = offer_or_item.partition(OFFER_ITEM_SEPARATOR)
        if separator and item and head in self._category_offers:
            return item
        return self._item_offers.get(offer_or_item, offer_or_item)

    @property
    def offer_count(self) -> int:
        return len(self.offers)

    def incentives_for(self, stage: str, channel: str, now_s: int) -> list[IncentiveOffer]:
        """Incentives eligible for the stage and channel and valid at ``now_s``, in file order."""
        return [
            offer
            for offer in self._incentives
            if stage in offer.stages and channel in offer.channels and offer.is_valid_at(now_s)
        ]

    def incentive_overlaps(self) -> list[str]:
        """A line per group of incentives eligible together (for one stage and channel,
        their dates overlapping) beyond ``max_incentives``: an answer carries only the
        limit's of highest priority, and the rest of the group never goes out beside
        them, which a marketer who wrote them all may not expect. Every such group is
        named (two offers that never run at once make two groups, and either may be the
        one the marketer did not expect), the first ``MAX_LISTED_PROBLEMS`` and then how
        many more."""
        if self.max_incentives is None:
            return []
        limit = self.max_incentives
        where: dict[tuple[str, ...], list[str]] = {}
        for stage in STAGES:
            for channel in CHANNELS:
                eligible = [
                    o for o in self._incentives if stage in o.stages and channel in o.channels
                ]
                for together in _groups_at_once(eligible, limit):
                    where.setdefault(tuple(o.id for o in together), []).append(
                        f"{stage} on {channel}"
                    )
        lines = [
            f"incentives {', '.join(ids)} are eligible together ({'; '.join(places)}) and "
            f"max_incentives is {limit}: an answer carries only the {limit} of highest "
            "priority (expected value)"
            for ids, places in where.items()
        ]
        if len(lines) > MAX_LISTED_PROBLEMS:
            left = len(lines) - MAX_LISTED_PROBLEMS
            lines = lines[:MAX_LISTED_PROBLEMS]
            lines.append(
                f"and {left} more group{'s' if left > 1 else ''} of incentives eligible "
                f"together beyond max_incentives ({limit})"
            )
        return lines

    def product_terms(
        self, item_id: str, stage: str, channel: str, now_s: int
    ) -> ProductTerms | None:
        """The item's terms now, or None when it may not be offered: excluded, or not for
        this stage or channel under the terms that hold now.

        The first live product offer covering the item (offers naming it, then category
        offers, each in file order) sets its terms, eligibility included: a category offer
        for the app only keeps its items off email while it runs. With no live offer (none,
        not started, or over) the item's own terms hold again.
        """
        if item_id in self._excluded:
            return None
        for campaign in self._campaigns.get(item_id, ()):
            if campaign.starts_s <= now_s < campaign.ends_s:
                if stage in campaign.stages and channel in campaign.channels:
                    return campaign.terms
                return None
        base = self._bases.get(item_id, self._default)
        if stage not in base.stages or channel not in base.channels:
            return None
        if base is self._default:
            return replace(base.terms, offer_id=PRODUCT_OFFER_PREFIX + item_id)
        return base.terms

    @property
    def named_items(self) -> frozenset[str]:
        """Items the file says something about (excluded, overridden, or in a product
        offer): every other item has the default terms (``default_terms``)."""
        return self._named

    def default_terms(self, stage: str, channel: str) -> ProductTerms | None:
        """The terms of every item not in ``named_items`` (their ``offer_id`` is the
        prefix alone: add the item id), or None when such items may not be offered for
        this stage and channel. Lets a caller treat the many plain items at once."""
        if stage not in self._default.stages or channel not in self._default.channels:
            return None
        return self._default.terms

    def stage_weight(self, stage: str, kind: str) -> float:
        """The stage policy's weight for a kind of offer; 1.0 when the file says nothing."""
        return float(self._weights.get((stage, kind), 1.0))


def _as_served(offer: CatalogOffer, products: ProductDefaults) -> CatalogOffer:
    """An incentive as an IncentiveOffer; a product offer with its unwritten terms taken
    from ``products`` (item overrides do not apply to it: an offer states its own terms)."""
    if offer.kind == KIND_INCENTIVE:
        return IncentiveOffer.model_validate(offer.model_dump(exclude_unset=True))
    inherited = {
        name: getattr(products, name)
        for name in (
            "value",
            "price_weighted",
            "margin",
            "lever",
            "stages",
            "channels",
            "cap_per_customer",
            "cap_days",
        )
        if name not in offer.model_fields_set
    }
    return offer.model_copy(update=inherited)


def _base_of(item: ItemOverride, products: ProductDefaults) -> _Base:
    written = item.model_dump(exclude_unset=True, exclude={"item_id", "exclude"})
    terms = products.model_copy(update=written)
    return _Base(
        frozenset(terms.stages),
        frozenset(terms.channels),
        _terms_of(PRODUCT_OFFER_PREFIX + item.item_id, terms),
    )


def _groups_at_once(offers: Sequence[IncentiveOffer], limit: int) -> list[list[IncentiveOffer]]:
    """The groups of ``offers`` valid at one moment that are larger than ``limit``, each
    in file order, earliest first: the offers valid when one of them starts (or before
    any date bounds them), leaving out a group that another holds whole."""
    starts = sorted({float("-inf"), *(_seconds(o.valid_from, float("-inf")) for o in offers)})
    found: list[list[IncentiveOffer]] = []
    for at in starts:
        live = [
            o
            for o in offers
            if _seconds(o.valid_from, float("-inf")) <= at < _seconds(o.valid_to, float("inf"))
        ]
        if len(live) > limit:
            found.append(live)
    ids = [{id(o) for o in group} for group in found]
    kept: list[list[IncentiveOffer]] = []
    for n, group in enumerate(found):
        within = any(
            ids[n] < other or (ids[n] == other and m < n) for m, other in enumerate(ids) if m != n
        )
        if not within:
            kept.append(group)
    return kept
