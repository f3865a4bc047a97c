"""Arbitration: which offers win, by expected value under the catalogue's rules.

Every eligible offer gets

    priority = propensity x value x stage weight x lever

- propensity: probability the customer takes it up (``nbo.models.propensity`` for products,
  calibrated on the holdout; the catalogue's ``response_rate`` for incentives);
- value: what one take-up is worth to the business (the catalogue's terms);
- stage weight: the stage policy's weight for the customer's lifecycle stage and the
  offer's kind;
- lever: the marketer's weight for the offer.

Products and incentives compete on that one scale, each customer's incentives limited to
the catalogue's ``max_incentives`` of highest priority. What the catalogue does not allow
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

from nbo.catalog.schema import PRODUCT_OFFER_PREFIX, IncentiveOffer
from nbo.catalog.terms import Catalog, ProductTerms, resolve_value, resolve_values
from nbo.core.arrays import filled
from nbo.core.vocabulary import DAY, KIND_INCENTIVE, KIND_PRODUCT
from nbo.offers.state import Contact

RULE_INELIGIBLE = "ineligible"
RULE_OFFER_CAP = "offer_cap"


@dataclass(frozen=True)
class ProductCandidates:
    """The items the candidate sources proposed, in order (the order breaks ties), as
    arrays: arbitration treats the many plain items at once. Candidates of many customers
    are stacked, each customer's together and in order: ``rows`` names the customer of
    each (None: all belong to one customer)."""

    items: np.ndarray  # catalogue indices in the served model
    sources: (
        Sequence[str] | np.ndarray
    )  # per item: the source it is credited to ("cf", "popular", ...)
    scores: np.ndarray  # the source's own score (ALS score, popularity)
    propensity: np.ndarray  # probability of purchase
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Contest:
    """Who the offers compete for: one customer's stage, channel, offer count and the
    impressions they were shown (for the offer caps)."""

    stage: str
    channel: str
    k: int
    impressions: Sequence[Contact] = ()


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
class Choices:
    """The offers arbitration chose for many customers, as columns: each customer's
    together, best first (``starts``: where customer n's begin). A product has its
    catalogue ``item``; an incentive has ``item`` -1 and its catalogue ``offer``."""

    starts: np.ndarray  # customers + 1 offsets
    kind: np.ndarray  # KIND_PRODUCT / KIND_INCENTIVE
    offer_id: np.ndarray
    item: np.ndarray  # catalogue index, -1 for incentives
    item_id: np.ndarray  # None for incentives
    source: np.ndarray  # None for incentives
    score: np.ndarray
    propensity: np.ndarray
    value: np.ndarray
    stage_weight: np.ndarray
    lever: np.ndarray
    offer: np.ndarray  # the IncentiveOffer, None for products
    # The catalogue offer's title: an incentive's, or a product or category offer's
    # (None for an item offered on its own terms, or an offer without one).
    title: np.ndarray
    # Per customer: candidates removed as ineligible, and as shown too often.
    ineligible: np.ndarray
    offer_cap: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def rank(self) -> np.ndarray:
        """Each offer's rank (1 = best) among its customer's."""
        counts = self.starts[1:] - self.starts[:-1]
        return np.arange(len(self)) - self.starts[:-1].repeat(counts) + 1

    @property
    def customer(self) -> np.ndarray:
        """The customer (position) of each offer."""
        return np.arange(len(self.starts) - 1).repeat(self.starts[1:] - self.starts[:-1])


def arbitrate(
    candidates: ProductCandidates,
    contests: Sequence[Contest],
    item_ids: np.ndarray,
    catalog: Catalog,
    now_s: int,
    item_price: np.ndarray | None,
    typical_line_value: float | None,
) -> Choices:
    """The offers of highest priority for each contest (a customer: ``candidates.rows``
    is the position in ``contests`` of each candidate's customer), and how many
    candidates each rule removed (``ineligible``: products not allowed for this stage,
    channel or date, or excluded, and incentives for the customer's stage not allowed on
    this channel or at this date; ``offer_cap``: shown too often). ``item_ids``: external id per
    catalogue index, as an object array. An API call is a contest of one.

    Plain items take the default terms of their customer's stage and channel, all at
    once; items the catalogue names and customers with impressions (the offer caps) are
    looked at one by one, as are the incentives of customers shown some before. A
    campaign of a thousand customers costs a few array operations more than one
    customer does.
    """
    n_customers = len(contests)
    n = len(candidates)
    rows = (
        np.zeros(n, dtype=np.int64)
        if candidates.rows is None
        else np.asarray(candidates.rows, dtype=np.int64)
    )
    items = np.asarray(candidates.items, dtype=np.int64)
    starts = rows.searchsorted(np.arange(n_customers + 1))
    ids = item_ids[items]
    prices = _prices(items, item_price, catalog)

    # The (stage, channel) pairs of the customers: their terms, weights and incentives.
    pairs: dict[tuple[str, str], int] = {}
    pair_of_customer = np.fromiter(
        (pairs.setdefault((c.stage, c.channel), len(pairs)) for c in contests),
        dtype=np.int64,
        count=n_customers,
    )
    defaults = [catalog.default_terms(stage, channel) for stage, channel in pairs]
    product_weight = np.asarray([catalog.stage_weight(stage, KIND_PRODUCT) for stage, _ in pairs])
    pair = pair_of_customer[rows]

    named = catalog.named_items
    is_named = (
        np.fromiter((item_id in named for item_id in ids.tolist()), dtype=bool, count=n)
        if named
        else np.zeros(n, dtype=bool)
    )
    keep = np.zeros(n, dtype=bool)
    values = np.zeros(n)
    levers = np.zeros(n)
    for p, default in enumerate(defaults):
        if default is None:
            continue
        plain = (pair == p) & ~is_named if named else pair == p
        keep[plain] = True
        values[plain] = resolve_values(default, prices[plain], typical_line_value)
        levers[plain] = default.lever
    named_terms: dict[int, ProductTerms] = {}
    pair_names = list(pairs)
    for position in is_named.nonzero()[0].tolist():
        stage, channel = pair_names[pair[position]]
        t = catalog.product_terms(ids[position], stage, channel, now_s)
        if t is None:
            continue
        keep[position] = True
        named_terms[position] = t
        price = float(prices[position])
        values[position] = resolve_value(
            t, price if math.isfinite(price) else None, typical_line_value
        )
        levers[position] = t.lever
    ineligible = np.bincount(rows[~keep], minlength=n_customers)

    # Offer caps: only customers shown something can have reached one.
    offer_cap = np.zeros(n_customers, dtype=np.int64)
    shown_to = [c for c, contest in enumerate(contests) if contest.impressions]
    shown_counts = {c: _ShownCounts(contests[c].impressions, now_s) for c in shown_to}
    for c in shown_to:
        default = defaults[pair_of_customer[c]]
        for position in range(int(starts[c]), int(starts[c + 1])):
            if not keep[position]:
                continue
            t = named_terms.get(position, default)
            assert t is not None
            if t.cap_per_customer is not None and (
                shown_counts[c].count(ids[position], t.cap_days) >= t.cap_per_customer
            ):
                keep[position] = False
                offer_cap[c] += 1
    priority = candidates.propensity * values * product_weight[pair] * levers

    ineligible, incentives = _incentives(
        catalog, contests, pairs, pair_of_customer, now_s, shown_counts, ineligible, offer_cap
    )

    # One contest per customer: its kept products in candidate order, then its
    # incentives in file order; highest priority first, ties keep that order.
    kept = keep.nonzero()[0]
    kept_rows = rows[kept]
    option_rows = kept_rows
    within = kept - starts[kept_rows]
    option_priority = priority[kept]
    if len(incentives.rows):
        per_customer = incentives.per_customer
        option_rows = np.concatenate([kept_rows, incentives.rows])
        within = np.concatenate(
            [
                within,
                (starts[1:] - starts[:-1])[incentives.rows]
                + np.arange(len(incentives.rows))
                - (per_customer.cumsum() - per_customer).repeat(per_customer),
            ]
        )
        option_priority = np.concatenate([option_priority, incentives.priority])
    order = np.lexsort((within, -option_priority, option_rows))
    ordered_rows = option_rows[order]
    option_starts = ordered_rows.searchsorted(np.arange(n_customers + 1))
    place = np.arange(len(order)) - option_starts[ordered_rows]
    k = np.fromiter((c.k for c in contests), dtype=np.int64, count=n_customers)
    chosen = order[place < k[ordered_rows]]
    chosen_starts = option_rows[chosen].searchsorted(np.arange(n_customers + 1))

    # The chosen options' columns: a product is candidate ``kept[i]``, an incentive
    # option ``len(kept) + j`` is ``incentives.offers[j]``. Without a chosen incentive
    # (most answers) each column is the products' alone.
    is_product = chosen < len(kept)
    product = kept[chosen[is_product]]
    incentive = chosen[~is_product] - len(kept)
    chosen_offers = incentives.offers[incentive].tolist()

    def column(of_products: np.ndarray, of_incentives: object, dtype: type) -> np.ndarray:
        if not len(incentive):
            return np.asarray(of_products, dtype=dtype)
        out: np.ndarray = np.empty(len(chosen), dtype=dtype)
        out[is_product] = of_products
        out[~is_product] = of_incentives
        return out

    product_ids = ids[product]
    # Each chosen product's offer id and title: its catalogue offer's where one names it,
    # else its own terms' (``product:<item>``, no title).
    product_offer_ids = np.empty(len(product), dtype=object)
    product_titles = filled(len(product), None, object)
    for n, (position, item_id) in enumerate(
        zip(product.tolist(), product_ids.tolist(), strict=True)
    ):
        catalogued = named_terms.get(position)
        if catalogued is None:
            product_offer_ids[n] = PRODUCT_OFFER_PREFIX + item_id
        else:
            product_offer_ids[n], product_titles[n] = catalogued.offer_id, catalogued.title
    return Choices(
        chosen_starts,
        column(filled(len(product), KIND_PRODUCT, object), KIND_INCENTIVE, object),
        column(product_offer_ids, [o.id for o in chosen_offers], object),
        column(items[product], -1, np.int64),
        column(product_ids, None, object),
        column(np.asarray(candidates.sources, dtype=object)[product], None, object),
        column(np.asarray(candidates.scores)[product], 0.0, np.float64),
        column(
            np.asarray(candidates.propensity)[product],
            [o.response_rate for o in chosen_offers],
            np.float64,
        ),
        column(values[product], [o.value for o in chosen_offers], np.float64),
        column(
            product_weight[pair[product]],
            incentives.weight[incentives.rows[incentive]],
            np.float64,
        ),
        column(levers[product], [o.lever for o in chosen_offers], np.float64),
        column(filled(len(product), None, object), incentives.offers[incentive], object),
        column(product_titles, [o.title for o in chosen_offers], object),
        ineligible,
        offer_cap,
    )


@dataclass(frozen=True)
class _Incentives:
    """The incentives competing, as options: the customer (position) each is offered
    to, the offer, its priority; per customer, how many; and the weight of each
    customer's incentives for their stage."""

    rows: np.ndarray
    offers: np.ndarray  # IncentiveOffer objects
    priority: np.ndarray
    per_customer: np.ndarray
    weight: np.ndarray  # per customer


def _incentives(
    catalog: Catalog,
    contests: Sequence[Contest],
    pairs: dict[tuple[str, str], int],
    pair_of_customer: np.ndarray,
    now_s: int,
    shown_counts: dict[int, _ShownCounts],
    ineligible: np.ndarray,
    offer_cap: np.ndarray,
) -> tuple[np.ndarray, _Incentives]:
    """Each pair's eligible incentives, less those a shown customer reached the cap of
    (counted in ``offer_cap``, in place), and ``ineligible`` with the customers'
    incentives the channel or date rules out. A catalogue without incentives (the
    default one) costs nothing here."""
    n_customers = len(contests)
    all_incentives = [o for o in catalog.offers if isinstance(o, IncentiveOffer)]
    if not all_incentives:
        return ineligible, _Incentives(
            np.empty(0, np.int64),
            np.empty(0, dtype=object),
            np.empty(0),
            np.zeros(n_customers, np.int64),
            np.empty(0),
        )
    pair_incentives = [catalog.incentives_for(stage, channel, now_s) for stage, channel in pairs]
    incentive_weight = np.asarray(
        [catalog.stage_weight(stage, KIND_INCENTIVE) for stage, _ in pairs]
    )
    # An incentive for the customer's stage that this channel or date rules out is one
    # of theirs the catalogue removed: ``ineligible`` counts it, as it counts products.
    # One for another stage is not their offer at all and is not counted (else every
    # answer would count the other stages' incentives). A count per pair, so a chunk
    # of many customers pays for its few pairs.
    ruled_out = np.asarray(
        [
            sum(1 for o in all_incentives if stage in o.stages) - len(eligible)
            for (stage, _), eligible in zip(pairs, pair_incentives, strict=True)
        ],
        dtype=np.int64,
    )
    ineligible = ineligible + ruled_out[pair_of_customer]
    offered: list[list[IncentiveOffer]] = [[] for _ in range(n_customers)]
    for c in range(n_customers):
        eligible = pair_incentives[pair_of_customer[c]]
        if c in shown_counts:
            allowed = []
            for offer in eligible:
                if offer.cap_per_customer is not None and (
                    shown_counts[c].count(offer.id, offer.cap_days) >= offer.cap_per_customer
                ):
                    offer_cap[c] += 1
                    continue
                allowed.append(offer)
            offered[c] = allowed
        else:
            offered[c] = eligible
    per_customer = np.fromiter((len(o) for o in offered), dtype=np.int64, count=n_customers)
    incentive_rows = np.arange(n_customers).repeat(per_customer)
    incentives = np.empty(len(incentive_rows), dtype=object)
    incentives[:] = [offer for mine in offered for offer in mine]
    weight = incentive_weight[pair_of_customer]
    incentive_priority = (
        np.fromiter(
            (o.response_rate * o.value * o.lever for o in incentives.tolist()),
            dtype=np.float64,
            count=len(incentives),
        )
        * weight[incentive_rows]
    )
    limit = catalog.max_incentives
    if limit is not None and (per_customer > limit).any():
        # One answer carries at most ``limit`` incentives: each customer's of highest
        # priority (expected value; ties in file order), so an email never offers 20%
        # off, 10% off and free shipping at once.
        order = np.lexsort((np.arange(len(incentive_rows)), -incentive_priority, incentive_rows))
        firsts = per_customer.cumsum() - per_customer
        place = np.empty(len(order), dtype=np.int64)
        place[order] = np.arange(len(order)) - firsts[incentive_rows[order]]
        best = place < limit
        incentive_rows, incentives = incentive_rows[best], incentives[best]
        incentive_priority = incentive_priority[best]
        per_customer = np.minimum(per_customer, limit)
    return ineligible, _Incentives(
        incentive_rows, incentives, incentive_priority, per_customer, weight
    )


def _prices(items: np.ndarray, item_price: np.ndarray | None, catalog: Catalog) -> np.ndarray:
    """Each candidate's median price, NaN where unknown (all NaN when no terms of the
    catalogue weigh by price: nothing reads them then)."""
    if item_price is None or not catalog.uses_prices:
        return filled(len(items), np.nan)
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
