"""Ranking: the customer's history -> scores -> suppression -> top k with reasons.

Pure: the caller (the API, later batch runs and experiments) passes the model, the
customer, the purchases the service heard of since training, and the clock; ranking
never reaches for HTTP, files or the store, so every path that produces offers shares
this one function.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial

import numpy as np
import scipy.sparse as sp

from nbo.catalog.loading import default_catalog
from nbo.catalog.terms import Catalog
from nbo.core.arrays import filled
from nbo.core.vocabulary import DAY, KIND_PRODUCT
from nbo.data.history import decay
from nbo.data.sparse import Rows
from nbo.models.candidates import (
    NO_STAGE,
    STAGE_CODE,
    CustomerSide,
    candidates,
    ranked_order,
)
from nbo.models.candidates import SOURCE_ALS as SOURCE_ALS_COLUMN
from nbo.models.candidates import SOURCE_BUY_AGAIN as SOURCE_BUY_AGAIN_COLUMN
from nbo.models.candidates import SOURCE_KNN as SOURCE_KNN_COLUMN
from nbo.models.candidates import SOURCE_POPULAR as SOURCE_POPULAR_COLUMN
from nbo.models.candidates import SOURCE_STAGE_POPULAR as SOURCE_STAGE_POPULAR_COLUMN
from nbo.models.cf import FILTERED_SCORE, confidence_of_counts
from nbo.models.policy import LISTED_RULES, POLICY_ALS, POLICY_ITEMKNN, POLICY_RANKER, rule_lists
from nbo.models.served import ServingModel
from nbo.offers.arbitration import (
    RULE_INELIGIBLE,
    RULE_OFFER_CAP,
    Choices,
    Components,
    Contest,
    ProductCandidates,
    arbitrate,
)
from nbo.offers.explanations import (
    EXPLAINED_BY,
    SOURCE_ALSO_BOUGHT,
    SOURCE_BUY_AGAIN,
    SOURCE_CATALOG,
    SOURCE_CF,
    SOURCE_POPULAR,
    SOURCE_POPULAR_IN_STAGE,
    Bought,
    Explanations,
    credited_sources,
    explain,
)
from nbo.offers.policies import RULE_FATIGUE, RULE_JUST_BOUGHT
from nbo.offers.state import Contact, PostedPurchase
from nbo.offers.suppression import SuppressionWindow

__all__ = [
    "EXPLAINED_BY",
    "REMOVAL_RULES",
    "SOURCE_ALSO_BOUGHT",
    "SOURCE_BUY_AGAIN",
    "SOURCE_CATALOG",
    "SOURCE_CF",
    "SOURCE_POPULAR",
    "SOURCE_POPULAR_IN_STAGE",
    "CustomerHistory",
    "Offer",
    "OfferRequest",
    "OfferTable",
    "Ranking",
    "Reason",
    "customer_history",
    "rank_offers",
]

# The rules that take candidates out, in the order they apply: every answer counts each
# (an answer withheld by consent or a frequency cap counts zeros).
REMOVAL_RULES = (RULE_JUST_BOUGHT, RULE_FATIGUE, RULE_INELIGIBLE, RULE_OFFER_CAP)

# Product candidates the sources propose before arbitration: more than k, so a lever or
# a value can lift an item the model ranks a little lower, and eligibility rules still
# leave k to choose from.
MIN_CANDIDATES = 50

# Where the customer's taste vector came from (the answer's ``profile`` field).
TASTE_TRAINED = "trained"  # the model's own factors
TASTE_UPDATED = "updated"  # refolded with purchases posted since the training data ended
TASTE_LIVE = "live"  # unknown to the model; folded in from purchases posted since
TASTE_NONE = "none"  # nothing known: popular items


@dataclass(frozen=True)
class Reason:
    """Where an offer came from: the CF model (and the purchases behind it) or popularity."""

    source: str
    because: tuple[str, ...] = ()
    # For buy-again offers: the orders of the item the customer made (the reason says
    # "you buy this every N days" only of an item they bought more than once).
    orders: int = 0
    text: str = ""  # the reason in words (``nbo.offers.explanations``)


@dataclass(frozen=True)
class Offer:
    """A ranked offer: a product (``item_id``) or an incentive (``item_id`` None)."""

    item_id: str | None
    score: float  # the source's own score (ALS score, popularity; 0 for incentives)
    rank: int
    reason: Reason
    offer_id: str = ""
    kind: str = KIND_PRODUCT
    components: Components | None = None
    title: str | None = None
    incentive: str | None = None
    amount: float | None = None

    @property
    def priority(self) -> float:
        return 0.0 if self.components is None else self.components.priority


@dataclass(frozen=True)
class OfferTable:
    """The ranked offers of many customers as columns: arbitration's choices and their
    explanations. Batch files are written from it; ``Ranking.offers`` reads one
    customer's as ``Offer`` objects.

    The explanations are worked out when first read: what is offered never depends on
    them, and a caller that only needs the choices (the trainer's served evaluation, a
    decision whose offers are not answered) does not pay for them (about an eighth of
    an offers decision on Online Retail)."""

    choices: Choices
    explained: Callable[[], Explanations] = field(repr=False, compare=False)

    @cached_property
    def explanations(self) -> Explanations:
        """Per chosen offer, the source credited, the items behind it and the reason."""
        return self.explained()

    @cached_property
    def sources(self) -> np.ndarray:
        """Per chosen offer, the source credited (``explanations.source``), without
        working out the rest of the explanations."""
        return credited_sources(self.choices)

    def offers(self, customer: int) -> list[Offer]:
        """Customer ``customer``'s offers, best first."""
        c, e = self.choices, self.explanations
        out = []
        start = int(c.starts[customer])
        for n in range(start, int(c.starts[customer + 1])):
            offer = c.offer[n]
            out.append(
                Offer(
                    item_id=c.item_id[n],
                    score=float(c.score[n]),
                    rank=n - start + 1,
                    reason=Reason(e.source[n], e.because[n], int(e.orders[n]), e.text[n]),
                    offer_id=c.offer_id[n],
                    kind=c.kind[n],
                    components=Components(
                        float(c.propensity[n]),
                        float(c.value[n]),
                        float(c.stage_weight[n]),
                        float(c.lever[n]),
                    ),
                    title=c.title[n],
                    incentive=None if offer is None else offer.incentive,
                    amount=None if offer is None else offer.amount,
                )
            )
        return out


@dataclass(frozen=True)
class Ranking:
    """The ranked offers for one customer, and how they were produced."""

    customer_id: str
    personalized: bool
    taste: str  # TASTE_*: where the taste vector came from
    suppressed_items: int
    # Catalogue items each rule took out of the candidates, in rule order (an item is
    # counted under the first rule that removed it).
    removed: dict[str, int]
    # The offers of the ``rank_offers`` call this ranking came from, and the
    # customer's position in it.
    table: OfferTable = field(repr=False, compare=False)
    position: int = 0

    @property
    def has_offers(self) -> bool:
        """Whether any offer was chosen (without building them)."""
        starts = self.table.choices.starts
        return bool(starts[self.position + 1] > starts[self.position])

    @cached_property
    def offers(self) -> list[Offer]:
        """The ranked offers, best first."""
        return self.table.offers(self.position)

    @property
    def offer_sources(self) -> list[str]:
        """Each offer's reason source, best first (``offers``' ``reason.source``), read
        from the table's columns without building the offers."""
        starts = self.table.choices.starts
        start, end = int(starts[self.position]), int(starts[self.position + 1])
        return self.table.sources[start:end].tolist()


@dataclass(frozen=True)
class CustomerHistory:
    """What is known of a customer: the model's history merged with posted purchases."""

    index: int | None
    items: np.ndarray
    confidence: np.ndarray
    last_purchase: np.ndarray
    has_new_orders: bool
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    # Recency-weighted orders as of the model's ``trained_until_s`` (posted orders since
    # then weigh more than 1 there): per item, aligned with ``items``, and in all. None
    # when the model has none (older artifacts, or no ranker to read them).
    recent: np.ndarray | None = None
    recent_orders: float | None = None

    @property
    def trained_taste(self) -> bool:
        """Whether the customer is served with their trained taste vector (and ALS
        shortlist): known to the model, with no purchase posted since training."""
        return self.index is not None and not self.has_new_orders


def customer_history(
    model: ServingModel, customer_id: str, recent: Sequence[PostedPurchase] = ()
) -> CustomerHistory:
    """Merge the trained history with posted purchases of catalogue items.

    A posted purchase always counts for suppression. For a customer the model knows, it
    adds to the order counts (and so to the taste vector) only when it happened after the
    training data ended, since earlier ones are already in the model. For a customer the
    model does not know (new, or erased and back) every posted purchase adds, whenever it
    happened: none of them can be in the model (a till's late order, yesterday's import).
    The lifecycle profile counts posted orders by the same rule
    (``nbo.offers.profiles.customer_profiles``); so do the recency-weighted orders, each
    new order weighted by when it was placed (its first line).
    """
    index = model.customers.get(customer_id)
    weighted = _weighs_recency(model)
    recent_items: np.ndarray | None = None
    recent_orders: float | None = None
    if index is not None:
        items, confidence, last = model.history_of(index)
        counts = model.counts_of(index)
        if weighted:
            known = model.recent_of(index)
            if known is not None:
                recent_items, recent_orders = known
    else:
        items = np.empty(0, dtype=np.int32)
        counts = confidence = np.empty(0, dtype=np.float32)
        last = np.empty(0, dtype=np.int64)
    if weighted and recent_items is None:
        recent_items, recent_orders = np.zeros(len(items)), 0.0
    plain = CustomerHistory(
        index, items, confidence, last, False, counts, recent_items, recent_orders
    )
    if not recent:
        return plain

    positions = {}
    # Per new order (by key): when it was placed, and the catalogue items it held.
    new_orders: dict[int, set[str]] = {}
    placed: dict[str, int] = {}
    latest: dict[int, int] = {}
    for purchase in recent:
        new = index is None or purchase.occurred_at > model.trained_until_s
        if new:
            # Every new order counts among the customer's orders, as the trainer counts
            # them, even one of items the catalogue does not hold.
            key = purchase.order_key
            placed[key] = min(placed.get(key, purchase.occurred_at), purchase.occurred_at)
        item = model.items.get(purchase.item_id)
        if item is None:
            continue  # not in the catalogue: cannot be offered or scored
        latest[item] = max(latest.get(item, purchase.occurred_at), purchase.occurred_at)
        if new:
            new_orders.setdefault(item, set()).add(purchase.order_key)
    if not latest:
        return replace(plain, recent_orders=_with_orders(model, recent_orders, placed))

    positions = {int(item): row for row, item in enumerate(items.tolist())}
    extra = [item for item in latest if item not in positions]
    merged_items = np.concatenate([items, np.asarray(extra, dtype=items.dtype)])
    merged_counts = np.concatenate([counts, np.zeros(len(extra), dtype=np.float32)])
    merged_last = np.concatenate([last, np.zeros(len(extra), dtype=np.int64)])
    rows = {**positions, **{item: len(items) + j for j, item in enumerate(extra)}}
    for item, when in latest.items():
        merged_last[rows[item]] = max(int(merged_last[rows[item]]), when)
    for item, orders in new_orders.items():
        merged_counts[rows[item]] += len(orders)
    if new_orders:
        merged_confidence = confidence_of_counts(merged_counts, model.params)
    else:
        merged_confidence = np.concatenate([confidence, np.zeros(len(extra), np.float32)])
    merged_recent = None
    if recent_items is not None and recent_orders is not None:
        assert model.item_side is not None
        half_life, until = model.item_side.half_life_days, model.trained_until_s
        merged_recent = np.concatenate([recent_items, np.zeros(len(extra))])
        for item, orders in new_orders.items():
            times = np.fromiter((placed[key] for key in orders), np.int64, len(orders))
            merged_recent[rows[item]] += float(decay(until - times, half_life).sum())
        recent_orders = _with_orders(model, recent_orders, placed)
    return CustomerHistory(
        index,
        merged_items,
        merged_confidence,
        merged_last,
        has_new_orders=bool(new_orders),
        counts=merged_counts,
        recent=merged_recent,
        recent_orders=recent_orders,
    )


def _with_orders(
    model: ServingModel, recent_orders: float | None, placed: dict[str, int]
) -> float | None:
    """``recent_orders`` (as of the end of the training data) plus the weight of each
    new order, by when it was placed; None stays None (the model has no such counts)."""
    if recent_orders is None or not placed:
        return recent_orders
    assert model.item_side is not None
    times = np.fromiter(placed.values(), np.int64, len(placed))
    weights = decay(model.trained_until_s - times, model.item_side.half_life_days)
    return recent_orders + float(weights.sum())


def _weighs_recency(model: ServingModel) -> bool:
    """Whether ranking reads the customers' recency-weighted orders: the ranker does
    (its features), and only when the model holds them."""
    return (
        model.ranker is not None
        and model.item_side is not None
        and model.history_recent is not None
    )


@dataclass(frozen=True)
class OfferRequest:
    """One customer's ranking request: what ``rank_offers`` takes besides the model, the
    clock, the suppression window and the catalogue."""

    customer_id: str
    k: int
    recent: Sequence[PostedPurchase] = ()
    fatigued: Collection[str] = ()
    personalize: bool = True
    stage: str = "active"
    channel: str = "email"
    impressions: Sequence[Contact] = ()
    churn_risk: float | None = None
    monetary: float | None = None
    # Orders placed and mean days between orders (the profile's frequency and
    # gap_mean_days; None = unknown): features of the ranker that carry over between shops.
    baskets: int | None = None
    gap_days: float | None = None
    # The fewest days a purchase is held back, whatever the item's learned dead time (the
    # contact policy's minimum hold-back for the channel; 0 = the dead times alone).
    hold_days: float = 0.0


def rank_offers(
    model: ServingModel,
    requests: Sequence[OfferRequest],
    now_s: int,
    window: SuppressionWindow,
    catalog: Catalog | None = None,
) -> list[Ranking]:
    """The top ``k`` offers of each request at unix time ``now_s``: each customer's
    history, suppression and fatigue; the candidates and ranker scores of all of them in
    one pass (``nbo.models.candidates``, one LightGBM call); then arbitration under the
    catalogue and explanations, all at once. An API call is a chunk of one.

    Known customers get candidates over the whole catalogue minus what they bought
    inside the suppression window. Posted purchases count at once: they are suppressed,
    and purchases made after training refold the customer's taste vector (implicit's
    ``recalculate_user``); a customer the model has never seen is personalized from
    their first posted purchase, whenever it was made (``customer_history``). Customers
    with no known purchase get the popular items, labelled as such; short candidate lists
    are filled from popular.

    ``fatigued`` items (the contact policy's offer fatigue) are removed like suppressed
    ones; ``personalize=False`` (no consent to personalization, or an experiment's
    control group) proposes popular items alone while still never offering what was just
    bought.

    Candidates and the catalogue's incentives are arbitrated for each customer's
    ``stage`` and ``channel`` (``nbo.offers.arbitration``); without a catalogue every item
    is a product offer of uniform value, so products rank by propensity, i.e. in the
    model's order. Offers from the model are explained by the purchases behind them. The
    stage, ``churn_risk``, ``monetary`` value, ``baskets`` (orders placed) and
    ``gap_days`` (mean days between orders), from the customer's profile, are also
    features of the ranker (None: unknown).
    """
    catalog = catalog or default_catalog()
    prepared = _prepare_many(model, requests, now_s, window)
    ranked = _Stacked.empty()
    chosen = [n for n, p in enumerate(prepared) if p.personalized]
    if model.policy == POLICY_RANKER:
        ranked = _ranked_candidates_many(model, [prepared[n] for n in chosen], now_s)
    elif model.policy in LISTED_RULES:
        ranked = _rule_candidates_many(model, [prepared[n] for n in chosen])
    # The rows as positions among all the requests (``dataclasses.replace`` cost about
    # 3 us here for this one field).
    ranked = _Stacked(
        np.asarray(chosen, dtype=np.int64)[ranked.rows],
        ranked.items,
        ranked.sources,
        ranked.scores,
        ranked.propensity,
    )
    return _finish_many(model, prepared, ranked, catalog, now_s)


@dataclass(frozen=True)
class _Prepared:
    """A request with the customer's history and what the rules hold back."""

    request: OfferRequest
    history: CustomerHistory
    # The history's items with a confidence: what the customer bought, as
    # the sources, the taste vector and the explanations read it, with the last purchase
    # and recency-weighted orders of each (None: the model has none). Taken once: the
    # history itself when every item is known (a customer without posted purchases).
    bought: Bought
    bought_last: np.ndarray
    bought_recent: np.ndarray | None
    just_bought: np.ndarray
    suppressed: np.ndarray  # just bought and fatigued
    removed: dict[str, int]
    personalized: bool
    n_candidates: int


# Candidate items, the source each is credited to, their scores and probabilities.
_Scored = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Stacked:
    """Candidates of many requests, each request's together and best first: the request
    (``rows``), items, the source each is credited to, scores and probabilities."""

    rows: np.ndarray
    items: np.ndarray
    sources: np.ndarray
    scores: np.ndarray
    propensity: np.ndarray

    @classmethod
    def empty(cls) -> _Stacked:
        nothing = np.empty(0)
        return cls(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, object), nothing, nothing
        )


def _prepare_many(
    model: ServingModel, requests: Sequence[OfferRequest], now_s: int, window: SuppressionWindow
) -> list[_Prepared]:
    """Each request's history and what the rules hold back: what was just bought (one
    pass over all the histories) and what the customer is tired of."""
    histories = [customer_history(model, r.customer_id, r.recent) for r in requests]
    lengths = np.fromiter((len(h.items) for h in histories), dtype=np.int64, count=len(histories))
    starts = np.zeros(len(histories) + 1, dtype=np.int64)
    lengths.cumsum(out=starts[1:])
    items = _joined([h.items for h in histories], np.int32)
    last_purchase = _joined([h.last_purchase for h in histories], np.int64)
    suppressed = _suppressed(
        model,
        items,
        last_purchase,
        _joined([h.counts for h in histories], np.float32),
        now_s,
        window,
    )
    holds = [r.hold_days for r in requests]
    if any(holds):
        # The minimum hold-back: no learned dead time shortens it.
        held = np.repeat(np.asarray(holds, dtype=np.float64), lengths)
        suppressed |= (held > 0) & (now_s - last_purchase <= held * DAY)
    known = _joined([h.confidence for h in histories], np.float32) > 0
    # Per request, where its just-bought items lie among all of them.
    owner = np.arange(len(histories)).repeat(lengths)
    per_request = np.bincount(owner[suppressed], minlength=len(histories))
    cut = np.zeros(len(histories) + 1, dtype=np.int64)
    per_request.cumsum(out=cut[1:])
    just_bought_all = items[suppressed]
    prepared = []
    for n, (request, history) in enumerate(zip(requests, histories, strict=True)):
        just_bought = just_bought_all[cut[n] : cut[n + 1]]
        rested = _fatigued(model, request.fatigued, just_bought)
        mine = known[starts[n] : starts[n + 1]]
        recent = history.recent
        if mine.all():
            bought_last = history.last_purchase
            bought = Bought(history.items, history.counts, history.confidence, bought_last)
        else:
            bought_last = history.last_purchase[mine]
            bought = Bought(
                history.items[mine], history.counts[mine], history.confidence[mine], bought_last
            )
            recent = None if recent is None else recent[mine]
        prepared.append(
            _Prepared(
                request,
                history,
                bought,
                bought_last,
                None if recent is None else np.asarray(recent, dtype=np.float64),
                just_bought,
                np.concatenate([just_bought, rested]) if len(rested) else just_bought,
                {RULE_JUST_BOUGHT: len(just_bought), RULE_FATIGUE: len(rested)},
                request.personalize and len(bought.items) > 0,
                max(MIN_CANDIDATES, 2 * request.k),
            )
        )
    return prepared


def _joined(parts: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def _finish_many(
    model: ServingModel,
    prepared: Sequence[_Prepared],
    ranked: _Stacked,
    catalog: Catalog,
    now_s: int,
) -> list[Ranking]:
    """Each request's product candidates (the ranker's ``ranked``, or ALS's without a
    ranker, filled from popular where short), then arbitration and explanations of all
    of them at once."""
    n_requests = len(prepared)
    wanted = np.fromiter((p.n_candidates for p in prepared), dtype=np.int64, count=n_requests)
    have = np.bincount(ranked.rows, minlength=n_requests)
    ranked_starts = ranked.rows.searchsorted(np.arange(n_requests + 1))
    # Requests the ranker did not fill (none ranked, or fewer than wanted) are completed
    # one by one and replace their ranked rows.
    short = (have < wanted).nonzero()[0]
    rows: list[np.ndarray] = []
    items: list[np.ndarray] = []
    sources: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    propensity: list[np.ndarray] = []
    for n in short.tolist():
        mine = slice(int(ranked_starts[n]), int(ranked_starts[n + 1]))
        # A request the policy ranked keeps its candidates, however few (none: all
        # suppressed; the popularity rule ranks none), filled from popular; the others
        # are ALS's (its policy) or popular (cold).
        scored = (
            (ranked.items[mine], ranked.sources[mine], ranked.scores[mine], ranked.propensity[mine])
            if model.policy != POLICY_ALS and prepared[n].personalized
            else None
        )
        part = _product_candidates(model, prepared[n], scored)
        rows.append(filled(len(part[0]), n, np.int64))
        for column, values in zip((items, sources, scores, propensity), part, strict=True):
            column.append(values)
    if not len(short) and not (ranked.rows[1:] < ranked.rows[:-1]).any():
        # Every request filled by the ranker (most offers calls): its rows, in order, as
        # they are (what stacking and sorting them would give).
        stacked = ProductCandidates(
            ranked.items.astype(np.int64, copy=False),
            ranked.sources.astype(object, copy=False),
            ranked.scores.astype(np.float64, copy=False),
            ranked.propensity.astype(np.float64, copy=False),
            rows=ranked.rows,
        )
    else:
        # (A flag per request, not ``np.isin``, which sorts both sides.)
        is_short = np.zeros(n_requests, dtype=bool)
        is_short[short] = True
        keep = ~is_short[ranked.rows]
        stacked_rows = np.concatenate([ranked.rows[keep], *rows])
        order = stacked_rows.argsort(kind="stable")
        stacked = ProductCandidates(
            np.concatenate([ranked.items[keep], *items]).astype(np.int64)[order],
            np.concatenate([ranked.sources[keep], *sources]).astype(object)[order],
            np.concatenate([ranked.scores[keep], *scores]).astype(np.float64)[order],
            np.concatenate([ranked.propensity[keep], *propensity]).astype(np.float64)[order],
            rows=stacked_rows[order],
        )
    requests = [p.request for p in prepared]
    choices = arbitrate(
        _unconditional(model, stacked, requests),
        [Contest(r.stage, r.channel, r.k, r.impressions) for r in requests],
        model.item_id_array,
        catalog,
        now_s,
        model.item_price,
        model.typical_line_value,
    )
    bought = [p.bought for p in prepared]
    table = OfferTable(
        choices, partial(explain, model, bought, choices, [r.stage for r in requests], now_s)
    )
    rankings = []
    for n, p in enumerate(prepared):
        if not p.personalized:
            taste = TASTE_NONE
        elif p.history.index is None:
            taste = TASTE_LIVE
        else:
            taste = TASTE_UPDATED if p.history.has_new_orders else TASTE_TRAINED
        removed = {
            **p.removed,
            RULE_INELIGIBLE: int(choices.ineligible[n]),
            RULE_OFFER_CAP: int(choices.offer_cap[n]),
        }
        rankings.append(
            Ranking(
                p.request.customer_id,
                p.personalized,
                taste,
                len(p.just_bought),
                removed,
                table,
                n,
            )
        )
    return rankings


def _unconditional(
    model: ServingModel, stacked: ProductCandidates, requests: Sequence[OfferRequest]
) -> ProductCandidates:
    """The candidates' propensities as the chance of buying the item: the curves give it
    given that the customer buys something within the horizon (they are fitted on such
    customers), times the customer's chance of buying anything, from their churn risk
    (``Propensity.of_buying``; 1 for a customer without a risk or a model without the
    curve). One factor per customer: the products' order within a customer is kept."""
    if model.propensity.buying is None or not len(stacked):
        return stacked
    risks = np.array([np.nan if r.churn_risk is None else r.churn_risk for r in requests])
    factor = model.propensity.of_buying(risks)
    rows = np.zeros(len(stacked), np.int64) if stacked.rows is None else stacked.rows
    return replace(stacked, propensity=stacked.propensity * factor[rows])


def _product_candidates(
    model: ServingModel, prepared: _Prepared, scored: _Scored | None
) -> _Scored:
    """One request's product candidates in order: items, the source each is credited to,
    the source's scores and the probabilities of purchase. The ranker's (``scored``), or
    ALS's without one; filled from the popular items the customer may be offered when
    short."""
    history = prepared.history
    suppressed, n_candidates = prepared.suppressed, prepared.n_candidates
    curves = model.propensity
    if scored is not None:
        ids, sources, source_scores, propensity = scored
    else:
        ids = np.empty(0, dtype=np.int64)
        scores = np.empty(0, dtype=np.float32)
        if prepared.personalized:
            ids, scores = _cf_candidates(model, history, prepared.bought, suppressed, n_candidates)
        sources = filled(len(ids), SOURCE_CF, object)
        propensity = curves.of_scores(scores)
        source_scores = np.asarray(scores, dtype=np.float64)
    if len(ids) < n_candidates:
        # A flag per catalogue item, not ``np.isin`` (which sorts both sides, about 60
        # µs on Online Retail): first what may not be offered, then also what is already
        # proposed. The fill lies among the first n_candidates + suppressed popular
        # items (at most that many of them are suppressed or proposed), so only those
        # are looked at.
        taken = np.zeros(len(model.popularity), dtype=bool)
        taken[suppressed] = True
        popular = model.popular_order[: n_candidates + len(suppressed)]
        allowed = popular[~taken[popular]]
        taken[ids] = True
        fill_ranks = (~taken[allowed]).nonzero()[0][: n_candidates - len(ids)]
        fill = allowed[fill_ranks]
        ids = np.concatenate([np.asarray(ids, dtype=np.int64), fill])
        sources = np.concatenate([sources, filled(len(fill), SOURCE_POPULAR, object)])
        # Propensity by the item's rank among what this customer may be offered.
        propensity = np.concatenate([propensity, curves.of_popular_ranks(fill_ranks + 1)])
        source_scores = np.concatenate([source_scores, model.popularity[fill]])
    return np.asarray(ids, dtype=np.int64), sources, source_scores, propensity


# The reason an item proposed by several sources is given: the most personal first.
_CREDIT_ORDER = (
    (SOURCE_BUY_AGAIN_COLUMN, SOURCE_BUY_AGAIN),
    (SOURCE_KNN_COLUMN, SOURCE_ALSO_BOUGHT),
    (SOURCE_ALS_COLUMN, SOURCE_CF),
    (SOURCE_STAGE_POPULAR_COLUMN, SOURCE_POPULAR_IN_STAGE),
    (SOURCE_POPULAR_COLUMN, SOURCE_POPULAR),
)
_CREDIT_COLUMNS = np.array([column for column, _ in _CREDIT_ORDER])
_CREDIT_NAMES = np.array([name for _, name in _CREDIT_ORDER], dtype=object)


def _ranked_candidates_many(
    model: ServingModel, prepared: Sequence[_Prepared], now_s: int
) -> _Stacked:
    """The best ``n_candidates`` ranker's candidates (``nbo.models.candidates``) of each
    prepared request, best first, stacked (``rows``: positions in ``prepared``): items,
    the source each is credited to, the ranker's scores and their probabilities. One
    candidate pass and one ranker call for all of them."""
    assert model.ranker is not None and model.item_side is not None
    if not prepared:
        return _Stacked.empty()
    n_items = len(model.items)
    # The customers served with their trained taste vector (and ALS shortlist).
    trained = np.fromiter(
        (p.history.trained_taste for p in prepared), dtype=bool, count=len(prepared)
    )
    known = np.fromiter(
        (-1 if p.history.index is None else p.history.index for p in prepared),
        dtype=np.int64,
        count=len(prepared),
    )[trained]
    factors = _tastes(model, prepared, trained, known)
    counts = _stacked(
        [p.bought.items for p in prepared], [p.bought.counts for p in prepared], n_items
    )
    last = _same_pattern(counts, [p.bought_last for p in prepared], np.float64)
    exclude = _stacked([p.suppressed for p in prepared], None, n_items)
    shortlist = _shortlists(model, trained, known)
    recent = recent_orders = None
    weighted = [p.bought_recent for p in prepared if p.bought_recent is not None]
    if len(weighted) == len(prepared):
        recent = _same_pattern(counts, weighted, np.float64)
        recent_orders = np.array([p.history.recent_orders for p in prepared], dtype=np.float64)
    request = [p.request for p in prepared]
    risk = [np.nan if r.churn_risk is None else r.churn_risk for r in request]
    table = candidates(
        model.item_side,
        CustomerSide(
            factors,
            counts,
            last,
            exclude,
            stage=np.array([STAGE_CODE.get(r.stage, NO_STAGE) for r in request]),
            churn_risk=np.array(risk),
            monetary=np.array([np.nan if r.monetary is None else r.monetary for r in request]),
            baskets=np.array([np.nan if r.baskets is None else r.baskets for r in request]),
            gap_days=np.array([np.nan if r.gap_days is None else r.gap_days for r in request]),
            recent=recent,
            recent_orders=recent_orders,
            shortlist=shortlist,
        ),
        model.ranker_per_source,
        as_of_s=now_s,
    )
    scores = model.ranker.predict(table.features)
    order = ranked_order(table, scores)
    rows = table.rows[order]
    wanted = np.fromiter((p.n_candidates for p in prepared), dtype=np.int64, count=len(prepared))
    starts = rows.searchsorted(np.arange(len(prepared)))
    # Each request's best n_candidates.
    chosen = order[np.arange(len(rows)) - starts[rows] < wanted[rows]]
    # Each item is credited to the first of its sources in _CREDIT_ORDER.
    flags = table.sources[chosen][:, _CREDIT_COLUMNS]
    ranked = scores[chosen]
    return _Stacked(
        table.rows[chosen].astype(np.int64),
        table.items[chosen].astype(np.int64),
        _CREDIT_NAMES[flags.argmax(axis=1)],
        ranked,
        model.propensity.of_ranker_scores(ranked),
    )


def _shortlists(model: ServingModel, trained: np.ndarray, known: np.ndarray) -> np.ndarray | None:
    """Each request's ALS shortlist, for the customers served with their trained taste
    vector (``trained``; ``known``: their rows in the model, as ``_tastes`` reads them);
    -1 rows for the others; None when the model has none."""
    saved = model.als_shortlist
    if saved is None:
        return None
    if len(known) == len(trained):
        return saved[known]
    out = filled((len(trained), saved.shape[1]), -1, saved.dtype)
    out[trained] = saved[known]
    return out


def _rule_candidates_many(model: ServingModel, prepared: Sequence[_Prepared]) -> _Stacked:
    """Each prepared request's ``n_candidates`` under the model's simple rule
    (``nbo.models.policy.rule_lists``: its own items, then popular), stacked: items, the
    source each is credited to, the rule's scores and their probabilities. One pass for
    all of them."""
    if not prepared:
        return _Stacked.empty()
    n_items = len(model.items)
    counts = _stacked(
        [p.bought.items for p in prepared], [p.bought.counts for p in prepared], n_items
    )
    last = _same_pattern(counts, [p.bought_last for p in prepared], np.float64)
    exclude = _stacked([p.suppressed for p in prepared], None, n_items)
    n = max(p.n_candidates for p in prepared)
    policy = str(model.policy)
    similarity = None if model.item_side is None else model.item_side.similarity
    lists = rule_lists(
        policy, counts, last, exclude, model.popularity, model.popular_order, n, similarity
    )
    # Read from each item's own score or its place before suppression (its place for
    # the popular fill), never rising down the list (``Propensity.of_rule_lists``).
    propensity = model.propensity.of_rule_lists(lists.scores, lists.filled, lists.places)
    wanted = np.fromiter((p.n_candidates for p in prepared), dtype=np.int64, count=len(prepared))
    rows, positions = np.nonzero((lists.items >= 0) & (np.arange(n)[None, :] < wanted[:, None]))
    own = SOURCE_ALSO_BOUGHT if policy == POLICY_ITEMKNN else SOURCE_BUY_AGAIN
    sources = np.where(lists.filled[rows, positions], SOURCE_POPULAR, own).astype(object)
    return _Stacked(
        rows.astype(np.int64),
        lists.items[rows, positions],
        sources,
        lists.scores[rows, positions],
        propensity[rows, positions],
    )


def _tastes(
    model: ServingModel, prepared: Sequence[_Prepared], trained: np.ndarray, known: np.ndarray
) -> np.ndarray:
    """Each customer's ALS taste vector: the trained one (``trained``; ``known``: their
    rows in the model), taken for all of them at once, or refolded from their history
    when purchases were posted since training (or the model never saw them)."""
    user_factors = model.als.user_factors
    if len(known) == len(prepared):
        # All trained (an offers call's usual case): one gather, no sheet to fill.
        return np.asarray(user_factors[known], dtype=np.float32)
    out = np.empty((len(prepared), user_factors.shape[1]), dtype=np.float32)
    out[trained] = user_factors[known]
    n_items = len(model.items)
    for n in (~trained).nonzero()[0].tolist():
        bought = prepared[n].bought
        confidence = sp.csr_matrix(
            (bought.confidence, bought.items, [0, len(bought.items)]), shape=(1, n_items)
        )
        out[n] = np.asarray(model.als.recalculate_user(0, confidence), np.float32).reshape(-1)
    return out


def _stacked(
    indices: Sequence[np.ndarray], data: Sequence[np.ndarray] | None, n_items: int
) -> Rows:
    """Rows (one per customer) as row-compressed arrays; ``data`` None: float32 ones."""
    lengths = np.fromiter(map(len, indices), dtype=np.int64, count=len(indices))
    indptr = np.zeros(len(indices) + 1, dtype=np.int64)
    lengths.cumsum(out=indptr[1:])
    values: np.ndarray
    if data is None:
        values = np.ones(int(indptr[-1]), np.float32)
    else:
        values = np.concatenate(data) if data else np.empty(0)
    return Rows(
        indptr,
        np.concatenate(indices).astype(np.int64) if indices else np.empty(0, np.int64),
        values,
        (len(indices), n_items),
    )


def _same_pattern(rows: Rows, data: Sequence[np.ndarray], dtype: type) -> Rows:
    """Other values on the pattern of ``rows`` (aligned with the indices it was stacked
    from), as ``dtype``."""
    values: np.ndarray = (
        np.concatenate(data).astype(dtype, copy=False) if data else np.empty(0, dtype)
    )
    return Rows(rows.indptr, rows.indices, values, rows.shape)


def _cf_candidates(
    model: ServingModel,
    history: CustomerHistory,
    bought: Bought,
    suppressed: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """ALS's top ``n`` items for the customer, never a suppressed one."""
    n_items = len(model.items)
    # Never ask for more than can be offered: implicit pads a short list with filtered
    # items (score = lowest float32) or repeats of item 0.
    wanted = min(n, n_items - len(suppressed))
    if wanted <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    # Suppressed items as a plain filter list: for one customer this is the same filter
    # as a one-row liked-items matrix without building and slicing a CSR.
    filter_items = suppressed if len(suppressed) else None
    if history.index is None or history.has_new_orders:
        row = sp.csr_matrix(
            (bought.confidence, bought.items, [0, len(bought.items)]),
            shape=(1, n_items),
        )
        ids, scores = model.als.recommend(
            0,
            row,
            N=wanted,
            filter_already_liked_items=False,
            filter_items=filter_items,
            recalculate_user=True,
        )
    else:
        ids, scores = model.als.recommend(
            history.index,
            None,
            N=wanted,
            filter_already_liked_items=False,
            filter_items=filter_items,
        )
    valid = (ids >= 0) & (scores > FILTERED_SCORE)
    return ids[valid], scores[valid]


def _suppressed(
    model: ServingModel,
    items: np.ndarray,
    last_purchase: np.ndarray,
    counts: np.ndarray,
    now_s: int,
    window: SuppressionWindow,
) -> np.ndarray:
    """Which purchased ``items`` (with their last purchase and the customer's orders of
    them) were bought too recently to offer: within the item's learned dead time (capped
    at the window, ``nbo.models.cycles``) when the model learned them, else within the
    window."""
    windows = model.suppression_windows(window.days)
    if windows is not None:
        return windows.suppressed(items, last_purchase, counts, now_s)
    earliest = window.earliest_suppressed(now_s)
    if earliest is None:
        return np.zeros(len(items), dtype=bool)
    return np.asarray(last_purchase >= earliest)


def _fatigued(model: ServingModel, fatigued: Collection[str], taken: np.ndarray) -> np.ndarray:
    """Catalogue indices of fatigued items not already removed as just bought."""
    if not fatigued:
        return np.empty(0, dtype=np.int32)
    indices = [model.items.get(item) for item in fatigued]
    known = np.asarray([i for i in indices if i is not None], dtype=np.int32)
    return known[~np.isin(known, taken)]
