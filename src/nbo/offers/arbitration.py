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
from typing import TYPE_CHECKING

import numpy as np

from nbo.catalog.schema import PRODUCT_OFFER_PREFIX, CatalogFile, IncentiveOffer
from nbo.catalog.terms import Catalog, ProductTerms, resolve_value
from nbo.core.arrays import filled
from nbo.core.compiled import kernel
from nbo.core.vocabulary import DAY, KIND_INCENTIVE, KIND_PRODUCT
from nbo.models.warmup import register_warm_up
from nbo.offers.state import Contact

if TYPE_CHECKING:
    from nbo.models.served import ServingModel

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
    # The pairs' default terms as columns (NaN value: none set), for the plain items.
    terms = np.asarray(
        [
            (np.nan, 0.0, 0.0, 0.0, 0.0, 0.0)
            if default is None
            else (
                1.0,
                np.nan if default.value is None else float(default.value),
                float(default.price_weighted),
                default.margin,
                resolve_value(default, None, typical_line_value),
                default.lever,
            )
            for default in defaults
        ],
        dtype=np.float64,
    ).reshape(len(defaults), 6)
    keep, values, levers = _plain_terms(pair, is_named, terms, prices)
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
    ineligible, incentives = _incentives(
        catalog, contests, pairs, pair_of_customer, now_s, shown_counts, ineligible, offer_cap
    )

    # One contest per customer: its kept products in candidate order, then its
    # incentives in file order; highest priority first, ties keep that order.
    k = np.fromiter((c.k for c in contests), dtype=np.int64, count=n_customers)
    limit = catalog.max_incentives
    chosen, chosen_starts = _choose(
        starts,
        keep,
        np.asarray(candidates.propensity, dtype=np.float64),
        values,
        product_weight[pair],
        levers,
        incentives.starts,
        incentives.priority,
        -1 if limit is None else limit,
        k,
    )

    # The chosen options' columns: a product option is its candidate's position, an
    # incentive option ``n + j`` is ``incentives.offers[j]``. Without a chosen incentive
    # (most answers) each column is the products' alone.
    is_product = chosen < n
    product = chosen[is_product]
    incentive = chosen[~is_product] - n
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
    """The incentives eligible, as options: the customer (position) each is offered
    to, the offer, its priority; where each customer's begin (``starts``, customers + 1;
    the catalogue's ``max_incentives`` is applied when they compete, ``_choose``); and
    the weight of each customer's incentives for their stage."""

    rows: np.ndarray
    offers: np.ndarray  # IncentiveOffer objects
    priority: np.ndarray
    starts: np.ndarray
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
            np.zeros(n_customers + 1, np.int64),
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
    starts = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(per_customer, out=starts[1:])
    return ineligible, _Incentives(incentive_rows, incentives, incentive_priority, starts, weight)


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


@kernel
def _plain_terms(  # pragma: no cover - compiled
    pair: np.ndarray, is_named: np.ndarray, terms: np.ndarray, prices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether each candidate is kept on its pair's default terms, and its value and
    lever on them (``resolve_values``' arithmetic; 0 where not kept). ``terms``: per
    pair, whether it has default terms (NaN: none), the explicit value (NaN: none),
    price weighted (1.0), margin, the value without a price, and the lever. Items the
    catalogue names are left to the caller (not kept here)."""
    n = len(pair)
    keep = np.zeros(n, np.bool_)
    values = np.zeros(n, np.float64)
    levers = np.zeros(n, np.float64)
    for position in range(n):
        p = pair[position]
        if is_named[position] or np.isnan(terms[p, 0]):
            continue
        keep[position] = True
        levers[position] = terms[p, 5]
        price = prices[position]
        if not np.isnan(terms[p, 1]):
            values[position] = terms[p, 1]
        elif terms[p, 2] != 0.0 and np.isfinite(price) and price > 0:
            values[position] = terms[p, 3] * price
        else:
            values[position] = terms[p, 4]
    return keep, values, levers


@kernel
def _choose(  # pragma: no cover - compiled
    starts: np.ndarray,
    keep: np.ndarray,
    propensity: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    levers: np.ndarray,
    incentive_starts: np.ndarray,
    incentive_priority: np.ndarray,
    limit: int,
    k: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's ``k[c]`` options of highest priority, best first, and where each
    customer's begin: a product option is its candidate's position, incentive ``j`` is
    ``len(keep) + j``. The options compete in candidate order, then the incentives in
    file order, each customer's ``limit`` incentives of highest priority among them
    (-1: all); ties keep that order, NaN comes last (numpy's stable sort's order).

    Compiled: the stable sort of one customer's few dozen options was some twenty numpy
    calls; a top-``k`` insertion per customer is one."""
    n = len(keep)
    n_customers = len(starts) - 1
    chosen = np.empty(n + len(incentive_priority), np.int64)
    chosen_starts = np.zeros(n_customers + 1, np.int64)
    best = np.empty(n + len(incentive_priority), np.int64)
    best_priority = np.empty(n + len(incentive_priority), np.float64)
    retained = np.ones(len(incentive_priority), np.bool_)
    taken = 0
    for c in range(n_customers):
        first_incentive, end_incentive = incentive_starts[c], incentive_starts[c + 1]
        if limit >= 0 and end_incentive - first_incentive > limit:
            top = _top(
                incentive_priority, first_incentive, end_incentive, limit, best, best_priority
            )
            retained[first_incentive:end_incentive] = False
            for i in range(top):
                retained[best[i]] = True
        size = 0
        room = k[c]
        for option in range(starts[c], starts[c + 1] + end_incentive - first_incentive):
            if option < starts[c + 1]:
                if not keep[option]:
                    continue
                priority = propensity[option] * values[option] * weights[option] * levers[option]
                index = option
            else:
                j = first_incentive + option - starts[c + 1]
                if not retained[j]:
                    continue
                priority = incentive_priority[j]
                index = n + j
            size = _insert(index, priority, best, best_priority, size, room)
        chosen[taken : taken + size] = best[:size]
        taken += size
        chosen_starts[c + 1] = taken
    return chosen[:taken], chosen_starts


@kernel
def _top(  # pragma: no cover - compiled
    priority: np.ndarray,
    start: int,
    end: int,
    limit: int,
    best: np.ndarray,
    best_priority: np.ndarray,
) -> int:
    """The ``limit`` options ``start:end`` of highest ``priority`` (in ``best``, best
    first; ties in order); how many."""
    size = 0
    for option in range(start, end):
        size = _insert(option, priority[option], best, best_priority, size, limit)
    return size


@kernel
def _insert(  # pragma: no cover - compiled
    option: int,
    priority: float,
    best: np.ndarray,
    best_priority: np.ndarray,
    size: int,
    room: int,
) -> int:
    """Put ``option`` into the ``size`` best so far (best first, at most ``room``)
    after every one it does not beat (ties: the earlier first; NaN beats nothing);
    the new size."""
    at = size
    while at > 0 and (
        priority > best_priority[at - 1]
        or (np.isnan(best_priority[at - 1]) and not np.isnan(priority))
    ):
        at -= 1
    if at >= room:
        return size
    last = min(size, room - 1)
    for i in range(last, at, -1):
        best[i] = best[i - 1]
        best_priority[i] = best_priority[i - 1]
    best[at] = option
    best_priority[at] = priority
    return min(size + 1, room)


@register_warm_up
def _warm_up(model: ServingModel) -> None:
    """The arbitration's kernels compiled at model load (``nbo.models.warmup``): one
    customer's two candidates and an incentive on the demo's terms, the array types of
    a request."""
    n = min(2, len(model.items))
    incentive = {"id": "warm-up", "kind": KIND_INCENTIVE, "incentive": "free_shipping", "value": 1}
    catalog = Catalog(CatalogFile.model_validate({"version": 1, "offers": [incentive]}))
    arbitrate(
        ProductCandidates(
            np.arange(n, dtype=np.int64),
            np.full(n, "popular", dtype=object),
            np.ones(n),
            np.full(n, 0.5),
        ),
        [Contest("active", "email", 3)],
        model.item_id_array,
        catalog,
        model.trained_until_s,
        model.item_price,
        model.typical_line_value,
    )
