"""Arbitration: which offers win, by expected value under the catalogue's rules.

Every eligible offer gets

    priority = propensity x value x stage weight x lever

- propensity: probability the customer takes it up (``nbo.propensity`` for products,
  calibrated on the holdout; the catalogue's ``response_rate`` for incentives);
- value: what one take-up is worth to the business (the catalogue's terms);
- stage weight: the stage policy's weight for the customer's lifecycle stage and the
  offer's kind;
- lever: the marketer's weight for the offer.

Products and incentives compete on that one scale. What the catalogue does not allow
never appears: offers outside their dates, for another stage or channel, excluded items,
and offers the customer has already been shown ``cap_per_customer`` times in
``cap_days`` days. Ties keep the candidate order of the source (so with uniform values
the products come out in the model's own order).

Pure: the caller passes the candidates, the catalogue and the customer's impressions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nbo.catalog import PRODUCT_OFFER_PREFIX, Catalog, ProductTerms, resolve_value, resolve_values
from nbo.policies import DAY, Contact

KIND_PRODUCT = "product"
KIND_INCENTIVE = "incentive"
RULE_INELIGIBLE = "ineligible"
RULE_OFFER_CAP = "offer_cap"


@dataclass(frozen=True)
class ProductCandidates:
    """The items the candidate sources proposed, in order (the order breaks ties), as
    arrays: arbitration treats the many plain items at once."""

    items: np.ndarray  # catalogue indices in the served model
    sources: list[str]  # per item: "cf" or "popular"
    scores: np.ndarray  # the source's own score (ALS score, popularity)
    propensity: np.ndarray  # probability of purchase

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Components:
    """The factors of an offer's priority, so a marketer can see why it won."""

    propensity: float
    value: float
    stage_weight: float
    lever: float

    @property
    def priority(self) -> float:
        return self.propensity * self.value * self.stage_weight * self.lever


@dataclass(frozen=True)
class Choice:
    """One arbitrated offer: a product (``item``, its source and score) or an incentive."""

    offer_id: str
    kind: str
    components: Components
    item: int | None = None
    item_id: str | None = None
    source: str | None = None
    score: float = 0.0
    title: str | None = None
    incentive: str | None = None  # percent_off, points_multiplier, free_shipping
    amount: float | None = None

    @property
    def priority(self) -> float:
        return self.components.priority


def arbitrate(
    candidates: ProductCandidates,
    item_ids: Sequence[str],
    catalog: Catalog,
    stage: str,
    channel: str,
    now_s: int,
    impressions: Sequence[Contact],
    item_price: np.ndarray | None,
    typical_line_value: float | None,
    k: int,
) -> tuple[list[Choice], dict[str, int]]:
    """The ``k`` offers of highest priority, and how many candidates each rule removed
    (``ineligible``: not allowed for this stage, channel or date, or excluded;
    ``offer_cap``: shown too often). ``item_ids``: external id per catalogue index."""
    removed = {RULE_INELIGIBLE: 0, RULE_OFFER_CAP: 0}
    shown = _ShownCounts(impressions, now_s)
    n = len(candidates)
    ids = [item_ids[item] for item in candidates.items.tolist()]
    prices = _prices(candidates.items, item_price, catalog)

    # Plain items (the file names none of them) share the default terms: their values
    # and levers at once; named items one by one.
    default = catalog.default_terms(stage, channel)
    named = catalog.named_items
    terms: list[ProductTerms | None] = [
        catalog.product_terms(item_id, stage, channel, now_s) if item_id in named else default
        for item_id in ids
    ]
    is_default = np.fromiter((t is default for t in terms), dtype=bool, count=n)
    keep = np.fromiter((t is not None for t in terms), dtype=bool, count=n)
    removed[RULE_INELIGIBLE] = int(n - keep.sum())
    values = np.zeros(n)
    levers = np.zeros(n)
    if default is not None and is_default.any():
        values[is_default] = resolve_values(default, prices[is_default], typical_line_value)
        levers[is_default] = default.lever
    for row in np.flatnonzero(keep & ~is_default).tolist():
        t = terms[row]
        assert t is not None
        price = float(prices[row])
        values[row] = resolve_value(t, price if math.isfinite(price) else None, typical_line_value)
        levers[row] = t.lever
    for row in np.flatnonzero(keep).tolist():
        t = terms[row]
        assert t is not None
        if t.cap_per_customer is not None and (
            shown.count(ids[row], t.cap_days) >= t.cap_per_customer
        ):
            keep[row] = False
            removed[RULE_OFFER_CAP] += 1
    weight = catalog.stage_weight(stage, KIND_PRODUCT)
    priority = candidates.propensity * values * weight * levers

    incentives = []
    for offer in catalog.incentives_for(stage, channel, now_s):
        if offer.cap_per_customer is not None and (
            shown.count(offer.id, offer.cap_days) >= offer.cap_per_customer
        ):
            removed[RULE_OFFER_CAP] += 1
            continue
        incentives.append(offer)
    incentive_weight = catalog.stage_weight(stage, KIND_INCENTIVE)
    incentive_priority = np.asarray(
        [o.response_rate * o.value * incentive_weight * o.lever for o in incentives], dtype=float
    )

    rows = np.flatnonzero(keep)
    all_priority = np.concatenate([priority[rows], incentive_priority])
    # Highest priority first; ties keep the candidates' order, incentives after products.
    order = np.lexsort((np.arange(len(all_priority)), -all_priority))[:k]
    choices = []
    for position in order.tolist():
        if position < len(rows):
            row = int(rows[position])
            t = terms[row]
            assert t is not None
            offer_id = PRODUCT_OFFER_PREFIX + ids[row] if t is default else t.offer_id
            choices.append(
                Choice(
                    offer_id,
                    KIND_PRODUCT,
                    Components(
                        float(candidates.propensity[row]),
                        float(values[row]),
                        weight,
                        float(levers[row]),
                    ),
                    item=int(candidates.items[row]),
                    item_id=ids[row],
                    source=candidates.sources[row],
                    score=float(candidates.scores[row]),
                )
            )
        else:
            offer = incentives[position - len(rows)]
            choices.append(
                Choice(
                    offer.id,
                    KIND_INCENTIVE,
                    Components(offer.response_rate, offer.value, incentive_weight, offer.lever),
                    title=offer.title,
                    incentive=offer.incentive,
                    amount=offer.amount,
                )
            )
    return choices, removed


def _prices(items: np.ndarray, item_price: np.ndarray | None, catalog: Catalog) -> np.ndarray:
    """Each candidate's median price, NaN where unknown (all NaN when no terms of the
    catalogue weigh by price: nothing reads them then)."""
    if item_price is None or not catalog.uses_prices:
        return np.full(len(items), np.nan)
    return np.asarray(item_price, dtype=np.float64)[items]


class _ShownCounts:
    """Impressions per offer key (item id, or incentive id) within a number of days."""

    def __init__(self, impressions: Sequence[Contact], now_s: int) -> None:
        self._times: dict[str, list[int]] = {}
        for contact in impressions:
            self._times.setdefault(contact.item_id, []).append(contact.at)
        self._now = now_s

    def count(self, key: str, days: float) -> int:
        times = self._times.get(key)
        if not times:
            return 0
        since = self._now - days * DAY
        return sum(1 for at in times if since < at <= self._now)
