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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nbo.catalog import Catalog, resolve_value
from nbo.policies import DAY, Contact

KIND_PRODUCT = "product"
KIND_INCENTIVE = "incentive"
RULE_INELIGIBLE = "ineligible"
RULE_OFFER_CAP = "offer_cap"


@dataclass(frozen=True)
class ProductCandidate:
    """An item a candidate source proposed, with its probability of purchase."""

    item: int  # catalogue index in the served model
    item_id: str
    source: str  # "cf" or "popular"
    score: float  # the source's own score (ALS score, popularity)
    propensity: float
    position: int  # 0-based order among all candidates (the tie-break)


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
    """One arbitrated offer: a product (``candidate``) or an incentive."""

    offer_id: str
    kind: str
    components: Components
    candidate: ProductCandidate | None = None
    title: str | None = None
    incentive: str | None = None  # percent_off, points_multiplier, free_shipping
    amount: float | None = None

    @property
    def priority(self) -> float:
        return self.components.priority

    @property
    def item_id(self) -> str | None:
        return None if self.candidate is None else self.candidate.item_id


def arbitrate(
    candidates: Sequence[ProductCandidate],
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
    ``offer_cap``: shown too often)."""
    removed = {RULE_INELIGIBLE: 0, RULE_OFFER_CAP: 0}
    shown = _ShownCounts(impressions, now_s)
    scored: list[tuple[float, int, Choice]] = []
    for candidate in candidates:
        terms = catalog.product_terms(candidate.item_id, stage, channel, now_s)
        if terms is None:
            removed[RULE_INELIGIBLE] += 1
            continue
        if terms.cap_per_customer is not None and (
            shown.count(candidate.item_id, terms.cap_days) >= terms.cap_per_customer
        ):
            removed[RULE_OFFER_CAP] += 1
            continue
        price = None
        if item_price is not None and candidate.item < len(item_price):
            value = float(item_price[candidate.item])
            price = value if np.isfinite(value) else None
        components = Components(
            propensity=candidate.propensity,
            value=resolve_value(terms, price, typical_line_value),
            stage_weight=catalog.stage_weight(stage, KIND_PRODUCT),
            lever=terms.lever,
        )
        choice = Choice(terms.offer_id, KIND_PRODUCT, components, candidate=candidate)
        scored.append((components.priority, candidate.position, choice))
    after = len(candidates)
    for n, offer in enumerate(catalog.incentives_for(stage, channel, now_s)):
        if offer.cap_per_customer is not None and (
            shown.count(offer.id, offer.cap_days) >= offer.cap_per_customer
        ):
            removed[RULE_OFFER_CAP] += 1
            continue
        components = Components(
            propensity=offer.response_rate,
            value=offer.value,
            stage_weight=catalog.stage_weight(stage, KIND_INCENTIVE),
            lever=offer.lever,
        )
        choice = Choice(
            offer.id,
            KIND_INCENTIVE,
            components,
            title=offer.title,
            incentive=offer.incentive,
            amount=offer.amount,
        )
        scored.append((components.priority, after + n, choice))
    scored.sort(key=lambda entry: (-entry[0], entry[1]))
    return [choice for _, _, choice in scored[:k]], removed


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
