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

import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from nbo.documents import read_document
from nbo.errors import CatalogError

log = logging.getLogger(__name__)

Stage = Literal["new", "active", "at_risk", "lapsed", "loyal"]
ChannelName = Literal["email", "app"]
OfferKind = Literal["product", "incentive"]
IncentiveKind = Literal["percent_off", "points_multiplier", "free_shipping"]

STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
CHANNELS: Final[tuple[ChannelName, ...]] = get_args(ChannelName)
KIND_PRODUCT: Final = "product"
KIND_INCENTIVE: Final = "incentive"
PERCENT_OFF: Final = "percent_off"
POINTS_MULTIPLIER: Final = "points_multiplier"
FREE_SHIPPING: Final = "free_shipping"

DEFAULT_FINGERPRINT: Final = "default"
PRODUCT_OFFER_PREFIX: Final = "product:"
OFFER_ITEM_SEPARATOR: Final = ":"
"""Joins a category offer's id and one of its items (``christmas-2011:22086``): an
``offer_id`` names one offer within an answer, and a category offer is one per item. No
offer id in the file may hold it, so a joined id never collides with one."""
FALLBACK_VALUE: Final = 1.0
"""The value of a product sale when neither the item's price nor the model's typical
line value is known: every product then counts the same, so products rank by
propensity alone (scaled by margin and lever), as they did before the catalogue."""


# --- the file's schema --------------------------------------------------------------


def _as_text(value: Any) -> Any:
    """YAML reads ``item_id: 22423`` as a number; an id is text, whatever it looks like."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _in_utc(value: datetime) -> datetime:
    """A time without a zone is UTC: the service's clock is UTC, and so is the data."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _date_as_midnight(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


Id = Annotated[str, BeforeValidator(_as_text), Field(min_length=1)]
UtcTime = Annotated[datetime, BeforeValidator(_date_as_midnight), AfterValidator(_in_utc)]
Money = Annotated[float, Field(ge=0)]
Weight = Annotated[float, Field(ge=0)]


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
    margin: float = Field(1.0, ge=0, description="share of the price or line value kept")
    lever: Weight = Field(1.0, description="the marketer's weight; 0 never wins, 2 doubles")
    stages: tuple[Stage, ...] = Field(STAGES, min_length=1)
    channels: tuple[ChannelName, ...] = Field(CHANNELS, min_length=1)
    cap_per_customer: int | None = Field(
        None, ge=1, description="impressions per customer in cap_days; null = no cap"
    )
    cap_days: float = Field(30.0, gt=0)


class ItemOverride(ProductDefaults):
    """Per-item product terms: only the fields written here replace the ``products`` ones."""

    item_id: Id
    exclude: bool = Field(False, description="never offer this item")


class CatalogOffer(_Strict):
    """One offer of the file: an incentive, or product terms for one item or a category.

    On a product offer, the terms not written come from ``products`` (filled at load);
    ``value`` is always set on an incentive (checked at load).
    """

    id: Id
    kind: OfferKind
    title: str | None = None
    incentive: IncentiveKind | None = None
    amount: float | None = Field(
        None, gt=0, description="percent off, or the points multiplier; null for free_shipping"
    )
    item_id: Id | None = None
    category: Id | None = None
    value: Money | None = None
    price_weighted: bool = False
    margin: float = Field(1.0, ge=0)
    response_rate: float = Field(
        0.05, ge=0, le=1, description="share of customers who take an incentive up"
    )
    stages: tuple[Stage, ...] = Field(STAGES, min_length=1)
    channels: tuple[ChannelName, ...] = Field(CHANNELS, min_length=1)
    valid_from: UtcTime | None = None
    valid_to: UtcTime | None = None
    cap_per_customer: int | None = Field(None, ge=1)
    cap_days: float = Field(30.0, gt=0)
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
    categories: dict[Id, tuple[Id, ...]] = Field(default_factory=dict)
    offers: tuple[CatalogOffer, ...] = ()
    stage_weights: dict[Stage, StageWeights] = Field(default_factory=dict)


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
        return np.full(len(prices), float(terms.value))
    fallback = resolve_value(replace(terms, price_weighted=False), None, typical_line_value)
    if not terms.price_weighted:
        return np.full(len(prices), fallback)
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
        self._named = self._excluded | frozenset(self._bases) | frozenset(self._campaigns)
        # Whether any product terms weigh their value by the item's price.
        self.uses_prices: bool = (
            self._default.terms.price_weighted
            or any(base.terms.price_weighted for base in self._bases.values())
            or any(c.terms.price_weighted for cs in self._campaigns.values() for c in cs)
        )
        self._incentives = tuple(o for o in self.offers if isinstance(o, IncentiveOffer))
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


# --- loading ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """Every item a product offer on the default terms, no incentives: the behaviour
    without ``NBO_CATALOG``."""
    return Catalog(CatalogFile(version=1))


def load_catalog(path: Path) -> Catalog:
    """Read, validate and index a catalogue file; CatalogError names what to fix."""
    source = str(path)
    raw, content = read_document(
        path,
        "a catalogue",
        "version, products, offers, ...",
        CatalogError,
        missing_hint="set NBO_CATALOG to a catalogue file, or unset it",
    )
    try:
        document = CatalogFile.model_validate(raw)
    except ValidationError as exc:
        raise _explain(source, exc, raw) from None
    _check(source, document)
    return Catalog(document, source=path, fingerprint=hashlib.sha256(content).hexdigest())


def _explain(source: str, exc: ValidationError, raw: Any) -> CatalogError:
    """The first validation error as one line naming the entry and field; the count of
    any others, so a marketer knows another round may follow."""
    errors = exc.errors()
    first = errors[0]
    entry, field = _locate(first["loc"], raw)
    # Tuples are how the schema stores lists; the marketer wrote a list.
    problem = str(first["msg"]).replace("valid tuple", "valid list").replace("Tuple", "List")
    if first["type"] == "extra_forbidden":
        problem = "not a known field (a typo?)"
    elif first["type"] != "missing" and isinstance(first.get("input"), str | int | float):
        problem += f" (got {first['input']!r})"
    # A bad list element also fails its list: that is the same problem, not another one.
    others = [e for e in errors[1:] if tuple(first["loc"][: len(e["loc"])]) != e["loc"]]
    if others:
        problem += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})"
    return CatalogError(source, " ".join(problem.split()), entry, field)


def _locate(loc: tuple[int | str, ...], raw: Any) -> tuple[str | None, str | None]:
    """(entry, field) for a pydantic error location, in the file's own words."""
    section = str(loc[0]) if loc else ""
    rest = [str(part) for part in loc[2:] if not isinstance(part, int)]
    field = ".".join(rest) or None
    if section in ("offers", "items") and len(loc) > 1 and isinstance(loc[1], int):
        noun, key = ("offer", "id") if section == "offers" else ("item override", "item_id")
        entries = raw.get(section) if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(name, str | int) and not isinstance(name, bool):
            return f"{noun} '{name}'", field
        return f"{noun} #{loc[1] + 1}", field
    if section == "categories" and len(loc) > 1:
        return f"category '{loc[1]}'", None
    if section == "stage_weights" and len(loc) > 1:
        if field == "[key]":
            return f"stage_weights '{loc[1]}'", None
        return f"stage_weights '{loc[1]}'", field
    if section == "products" and len(loc) > 1:
        return "products", ".".join(str(p) for p in loc[1:] if not isinstance(p, int))
    return None, ".".join(str(p) for p in loc if not isinstance(p, int)) or None


_PRODUCT_ONLY = ("item_id", "category", "price_weighted", "margin")
_INCENTIVE_ONLY = ("incentive", "amount", "response_rate")


def _check(source: str, document: CatalogFile) -> None:
    """The rules that span fields or sections, which field types cannot say."""
    seen_items: set[str] = set()
    for item in document.items:
        if item.item_id in seen_items:
            entry = f"item override '{item.item_id}'"
            raise CatalogError(source, "listed twice; one override per item", entry, "item_id")
        seen_items.add(item.item_id)
    seen_offers: set[str] = set()
    for offer in document.offers:
        if offer.id in seen_offers:
            found: tuple[str, str] | None = ("id", "duplicate id; every offer needs its own")
        elif offer.kind == KIND_INCENTIVE:
            found = _incentive_problem(offer)
        else:
            found = _product_problem(offer, document.categories)
        found = found or _common_problem(offer)
        if found is not None:
            field, problem = found
            raise CatalogError(source, problem, f"offer '{offer.id}'", field)
        seen_offers.add(offer.id)


def _common_problem(offer: CatalogOffer) -> tuple[str, str] | None:
    if offer.id.startswith(PRODUCT_OFFER_PREFIX):
        return "id", f"ids starting '{PRODUCT_OFFER_PREFIX}' name the default product terms"
    if OFFER_ITEM_SEPARATOR in offer.id:
        return "id", (
            f"'{OFFER_ITEM_SEPARATOR}' is reserved: it joins a category offer's id and an "
            "item in the offers nbo answers"
        )
    if offer.valid_from and offer.valid_to and offer.valid_to <= offer.valid_from:
        return "valid_to", f"must be after valid_from ({offer.valid_from.isoformat()})"
    return None


def _incentive_problem(offer: CatalogOffer) -> tuple[str, str] | None:
    for name in _PRODUCT_ONLY:
        if name in offer.model_fields_set:
            return name, "only for product offers (kind: product)"
    if offer.incentive is None:
        return "incentive", "an incentive needs 'incentive': " + ", ".join(get_args(IncentiveKind))
    if offer.value is None:
        return "value", "an incentive needs its value to the business (money per redemption)"
    if offer.incentive == FREE_SHIPPING:
        return ("amount", "free_shipping takes no amount") if offer.amount is not None else None
    if offer.amount is None:
        what = "the percent off" if offer.incentive == PERCENT_OFF else "the points multiplier"
        return "amount", f"{offer.incentive} needs amount ({what})"
    if offer.incentive == PERCENT_OFF and offer.amount > 100:
        return "amount", "a percent off is at most 100"
    if offer.incentive == POINTS_MULTIPLIER and offer.amount <= 1:
        return "amount", "a points multiplier must be above 1 to reward anything"
    return None


def _product_problem(
    offer: CatalogOffer, categories: Mapping[str, tuple[str, ...]]
) -> tuple[str, str] | None:
    for name in _INCENTIVE_ONLY:
        if name in offer.model_fields_set:
            return name, "only for incentives (kind: incentive)"
    if offer.item_id is None and offer.category is None:
        return "item_id", "a product offer needs item_id (one item) or category (a group)"
    if offer.item_id is not None and offer.category is not None:
        return "category", "give item_id or category, not both"
    if offer.category is not None and offer.category not in categories:
        known = ", ".join(sorted(categories)) or "none defined"
        return "category", f"'{offer.category}' is not in categories (known: {known})"
    return None


# --- serving the live file ----------------------------------------------------------

_Stamp = tuple[int, int, int]


def _stamp_of(path: Path) -> _Stamp | None:
    """What tells a changed file apart cheaply: mtime, size and inode (a file swapped in
    by rename changes inode even when its mtime is old). None when the file is gone."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


class CatalogHolder:
    """The catalogue being served, re-read when its file changes, without a restart.

    ``current()`` looks at the file at most once per ``check_every_s`` (one ``os.stat``), so
    it is cheap on the request path. A changed file is loaded whole and swapped in as
    one reference; a bad one is refused, logged once, and kept in ``last_error`` while
    the old catalogue serves on. A request never waits for a reload: while one thread
    reloads, the others keep the catalogue they have.

    A missing or bad file at start raises CatalogError: the service refuses to start.
    """

    def __init__(self, path: Path | None, check_every_s: float = 1.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        if path is None:
            self._catalog = default_catalog()
            self._seen: _Stamp | None = None
        else:
            # Stat before reading: a write racing the read shows as a change next time.
            self._seen = _stamp_of(path)
            self._catalog = load_catalog(path)
            log.info(
                "catalogue %s loaded: %s, %d offers",
                path,
                self._catalog.fingerprint[:12],
                self._catalog.offer_count,
            )
        self._next_check = time.monotonic() + check_every_s

    def current(self) -> Catalog:
        """The catalogue to use now; looks at the file when ``check_every_s`` has passed."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._check(force=False)
        return self._catalog

    def refresh(self) -> Catalog:
        """Look at the file now, whatever the interval (waits for a reload in progress)."""
        if self.path is not None:
            self._check(force=True)
        return self._catalog

    def _check(self, force: bool) -> None:
        if not self._lock.acquire(blocking=force):
            return  # another thread is looking; serve what we have
        try:
            if not force and time.monotonic() < self._next_check:
                return
            self._next_check = time.monotonic() + self.check_every_s
            assert self.path is not None
            stamp = _stamp_of(self.path)
            if stamp == self._seen:
                return
            self._seen = stamp
            if stamp is None:
                self._refuse(f"{self.path}: the file is gone")
                return
            try:
                catalog = load_catalog(self.path)
            except CatalogError as exc:
                self._refuse(str(exc))
                return
            self.last_error = self.last_error_at = None
            if catalog.fingerprint != self._catalog.fingerprint:
                self._catalog = catalog
                log.info(
                    "catalogue %s loaded: %s, %d offers",
                    self.path,
                    catalog.fingerprint[:12],
                    catalog.offer_count,
                )
        finally:
            self._lock.release()

    def _refuse(self, problem: str) -> None:
        self.last_error = problem
        self.last_error_at = time.time()
        log.error(
            "catalogue refused, still serving %s: %s", self._catalog.fingerprint[:12], problem
        )

    def status(self) -> dict[str, Any]:
        """What is live and whether the file on disk was refused, for operators."""
        catalog = self._catalog
        return {
            "source": None if catalog.source is None else str(catalog.source),
            "fingerprint": catalog.fingerprint,
            "loaded_at": _iso(catalog.loaded_at),
            "offers": catalog.offer_count,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }
