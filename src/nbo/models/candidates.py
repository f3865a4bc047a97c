"""The candidate sources, their union and the features the ranker orders it by.

Cheap sources each propose up to ``per_source`` items per customer: ALS, the customer's
own history ("buy again", most-ordered first), item-to-item neighbours of what they
bought (implicit's BM25 ItemKNN), recent popularity and what customers in the same
lifecycle stage buy. The ranker (a LightGBM LambdaRank model, ``nbo.models.ranker``)
then orders the union by the features below, which include the customer's value,
lifecycle stage and churn risk and the price. "Stage" here is always the lifecycle's.

One code path for the trainer (many customers at once), a campaign's chunks and the
service (one customer, with purchases posted since training folded in): the caller
passes the customers' own rows (order counts, last purchase times, taste vectors),
never an index into a global matrix, so a refolded or brand-new customer is scored
exactly like a trained one.

Each source is one function of a block of customers (``_Block``: their history, what is
excluded for them, ALS's top-k), registered in ``_SOURCE_FUNCTIONS``, whose order is
``SOURCES``'; the union runs them all, ``propose_source`` one alone (for its tests and
for reports). A new source is a function and an entry there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.core.arrays import filled
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.history import decay
from nbo.data.sparse import RowIndices, Rows, padded_rows
from nbo.models import candidate_kernels as kernels
from nbo.models.cf import real_candidates
from nbo.models.popularity import popular_order

FEATURES = (
    "als_score",
    "als_rank",
    "knn_score",
    "knn_rank",
    "popularity",
    "popularity_rank",
    "popularity_trend",
    "bought_orders",
    "days_since_bought",
    "cycle_days",
    "due_ratio",
    "customer_orders",
    "customer_items",
    "customer_recency_days",
    "share_of_customer",
    "stage_popularity",
    "stage_popularity_rank",
    "customer_monetary",
    "customer_stage",
    "churn_risk",
    "price",
    "item_repeat_rate",
    "customer_repeat_share",
    "customer_baskets",
    "customer_gap_days",
    "basket_share",
    "gaps_since_bought",
    "recent_orders",
    "recent_basket_share",
    "popularity_recent_rank",
)
# The features of the item alone, and of the customer alone, among ``FEATURES``.
ITEM_FEATURES = (
    "popularity",
    "popularity_rank",
    "popularity_trend",
    "cycle_days",
    "price",
    "item_repeat_rate",
    "popularity_recent_rank",
)
CUSTOMER_FEATURES = (
    "customer_orders",
    "customer_items",
    "customer_recency_days",
    "customer_monetary",
    "customer_stage",
    "churn_risk",
    "customer_repeat_share",
    "customer_baskets",
    "customer_gap_days",
)
# Features that carry over between shops (shares and ratios rather than counts of one
# shop): ``item_repeat_rate`` (the share of the item's buyers who bought it on two or more
# days), ``customer_repeat_share`` (the share of the customer's items they bought in two
# or more orders), ``customer_gap_days`` (their mean days between orders), ``basket_share``
# (the share of their orders that held the item) and ``gaps_since_bought`` (days since
# they bought the item over their own mean gap between orders: how many of their orders
# have gone by without it). ``customer_baskets`` is their orders placed.
# Recency-weighted (``nbo.data.history.RecentOrders``: an order weighs half as much every
# ``ItemSide.half_life_days``): ``recent_orders`` (the customer's weighted orders that
# held the item) and ``recent_basket_share`` (that over all their weighted orders: the
# item's share of their recent baskets). Their weighted orders alone are no feature: a
# count of the customer orders no candidate against another, and with it the ranker of
# a small shop's validation window lost to ItemKNN (tests/training/test_ranker.py's
# weekly staple). ``popularity_recent_rank``: the item's rank by distinct buyers in the last
# ``RECENT_POPULARITY_DAYS`` (0 = most bought; what is popular this fortnight, beside the
# 90 days). A rank, not the count: the count follows how busy the shop was in each
# training window, and as a count it cost the drifting small catalogue a tenth of its
# served NDCG@10 (as a rank it gained; docs/training.md, "What each change bought").
# ``customer_stage`` is a category (an index into ``STAGES``), not an amount.
CATEGORICAL_FEATURES = ("customer_stage",)
NO_STAGE = -1
# ItemKNN proposes neighbours of the customer's most recently bought items, this many at
# most: what they buy now says more than what they bought years ago, and a wholesaler's
# thousand items would otherwise cost a thousand neighbour lists per request.
KNN_BASIS = 30
# The short popularity window of ``popularity_recent`` (days), and the default half-life
# of the recency-weighted counts (days).
RECENT_POPULARITY_DAYS = 14
HALF_LIFE_DAYS = 60.0
STAGE_CODE: dict[str, int] = {name: code for code, name in enumerate(STAGES)}
_COLUMN = {name: n for n, name in enumerate(FEATURES)}
_ITEM_COLUMNS = np.array([_COLUMN[name] for name in ITEM_FEATURES], np.int64)
_CUSTOMER_COLUMNS = np.array([_COLUMN[name] for name in CUSTOMER_FEATURES], np.int64)


@dataclass(frozen=True)
class ItemSide:
    """What the sources know of the items at a moment (``as_of_s``)."""

    as_of_s: int
    item_factors: np.ndarray  # ALS item factors
    # The same, laid out column-major, for ALS's top-k: OpenBLAS multiplies a few
    # customers' factors by the item factors' transpose about twice as fast when that
    # transpose is contiguous (at 20,000 items, chunks of 8 customers: 140 -> 77 µs a
    # customer, the same items and scores); rows are gathered from ``item_factors``.
    item_factors_column_major: np.ndarray
    similarity: sp.csr_matrix  # item x item ItemKNN (BM25) similarity
    popularity: np.ndarray  # recent distinct buyers per item
    popularity_before: np.ndarray  # the same for the window before (trend)
    cycle_days: np.ndarray | None  # learned repurchase cycle per item, NaN = none
    popular_order: np.ndarray  # items by popularity, best first
    popular_rank: np.ndarray  # inverse of popular_order (0 = most popular)
    # The similarity by column (CSC as CSR of the transpose): row j lists the items whose
    # neighbour j is, for explaining an offer by the purchase it is closest to.
    similar_to: sp.csr_matrix
    # The similarity's rows padded to one width (weight 0 pads): the neighbours of many
    # customers' items are then two fancy-indexing reads and one ``bincount``.
    neighbour_ids: np.ndarray  # items x width, int32 (int64 past 2^31 items)
    neighbour_weights: np.ndarray  # items x width, the similarity's dtype
    # Per item, its features that do not depend on the customer (``ITEM_FEATURES``
    # order): one gather gives them for every candidate pair.
    item_features: np.ndarray  # items x len(ITEM_FEATURES), float64, NaN = unknown
    price: np.ndarray | None = None  # median unit price per item, NaN = unknown
    # Per stage (``STAGES`` order) and item: the share of that stage's customers who
    # bought it; with its per-stage order (best first) and rank. None = not known.
    stage_popularity: np.ndarray | None = None
    stage_popular_order: np.ndarray | None = None
    stage_popular_rank: np.ndarray | None = None
    # The half-life of the customers' recency-weighted counts (``CustomerSide.recent``).
    half_life_days: float = HALF_LIFE_DAYS

    @classmethod
    def build(
        cls,
        as_of_s: int,
        item_factors: np.ndarray,
        similarity: sp.csr_matrix,
        popularity: np.ndarray,
        popularity_before: np.ndarray,
        cycle_days: np.ndarray | None,
        price: np.ndarray | None = None,
        stage_popularity: np.ndarray | None = None,
        repeat_rate: np.ndarray | None = None,
        popularity_recent: np.ndarray | None = None,
        half_life_days: float = HALF_LIFE_DAYS,
        similar_to: sp.csr_matrix | None = None,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
        item_factors_column_major: np.ndarray | None = None,
    ) -> ItemSide:
        """``repeat_rate``: per item, the share of its buyers who bought it on two or
        more days (``nbo.models.cycles.Repurchase``; None or NaN = unknown);
        ``popularity_recent``: its distinct buyers in the last ``RECENT_POPULARITY_DAYS``
        (None = unknown; the feature is its rank). ``similar_to``, ``neighbours`` and
        ``item_factors_column_major``: the similarity by column, its padded rows
        (``padded_rows``) and the item factors column-major, when the artifact holds
        them (memory maps every serving process shares); else built here."""
        order = popular_order(popularity)
        rank = _ranks(order)
        stage_order = stage_rank = None
        if stage_popularity is not None:
            stage_popularity = np.asarray(stage_popularity, dtype=np.float64)
            stage_order = np.stack([popular_order(row) for row in stage_popularity])
            stage_rank = np.empty_like(stage_order)
            np.put_along_axis(
                stage_rank, stage_order, np.arange(stage_order.shape[1])[None, :], axis=1
            )
        ids, weights = padded_rows(similarity.tocsr()) if neighbours is None else neighbours
        popularity = np.asarray(popularity, dtype=np.float64)
        popularity_before = np.asarray(popularity_before, dtype=np.float64)
        price = None if price is None else np.asarray(price, dtype=np.float64)
        unknown = np.full(len(popularity), np.nan)
        per_item = {
            "popularity": popularity,
            "popularity_rank": rank,
            "popularity_trend": (popularity + 1.0) / (popularity_before + 1.0),
            "cycle_days": unknown if cycle_days is None else cycle_days,
            "price": unknown if price is None else price,
            "item_repeat_rate": unknown if repeat_rate is None else repeat_rate,
            "popularity_recent_rank": unknown
            if popularity_recent is None
            else _ranks(popular_order(np.asarray(popularity_recent, dtype=np.float64))),
        }
        factors = np.asarray(item_factors, dtype=np.float32)
        return cls(
            as_of_s,
            factors,
            np.asfortranarray(factors)
            if item_factors_column_major is None
            else item_factors_column_major,
            similarity.tocsr(),
            popularity,
            popularity_before,
            cycle_days,
            order,
            rank,
            similarity.T.tocsr() if similar_to is None else similar_to,
            ids,
            weights,
            np.stack([per_item[name] for name in ITEM_FEATURES], axis=1).astype(np.float64),
            price,
            stage_popularity,
            stage_order,
            stage_rank,
            float(half_life_days),
        )


def _ranks(order: np.ndarray) -> np.ndarray:
    """Each item's position in ``order`` (items best first): the inverse permutation."""
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


@dataclass(frozen=True)
class CustomerSide:
    """The customers being served, one row each (rows of ``counts`` and ``last`` share
    their sparsity pattern)."""

    user_factors: np.ndarray  # customers x factors
    counts: Rows  # customers x items, order counts
    last: Rows  # customers x items, last purchase (unix s)
    exclude: Rows | None = None  # items never to propose (suppressed)
    # Per customer, from the lifecycle profile (None = unknown for all): the stage as an
    # index into ``STAGES`` (``NO_STAGE`` = unknown), churn risk and total value.
    stage: np.ndarray | None = None
    churn_risk: np.ndarray | None = None
    monetary: np.ndarray | None = None
    # Per customer, from the same profile (NaN = unknown): orders placed, and the mean
    # days between two of them (NaN with fewer than two orders).
    baskets: np.ndarray | None = None
    gap_days: np.ndarray | None = None
    # Recency-weighted orders as of the item side's moment (``ItemSide.as_of_s``; the
    # features decay them to the clock): per (customer, item), with ``counts``' pattern,
    # and per customer (``nbo.data.history.RecentOrders``). None = unknown.
    recent: Rows | None = None
    recent_orders: np.ndarray | None = None
    # Per customer, ALS's best items with nothing excluded (``als_shortlist``, made from
    # the same taste vector as ``user_factors``' row), -1 rows for those without one;
    # None = none has one. ALS's source reads its top-k from it when it reaches far
    # enough past what is excluded, and asks implicit for the others.
    shortlist: np.ndarray | None = None


# A shortlist holds this many items past a source's ``per_source``: room for what a
# request excludes (the items just bought and those the customer is tired of) among the
# customer's best. A customer with more of those among them is scored by implicit.
SHORTLIST_SPARE = 32


def shortlist_width(per_source: int) -> int:
    """The items a shortlist holds per customer for sources of ``per_source``."""
    return per_source + SHORTLIST_SPARE


# Customers per top-k call when making shortlists: bounded memory, the top-k's pace.
_SHORTLIST_BLOCK = 4096


def als_shortlist(
    item_factors: np.ndarray,
    user_factors: np.ndarray,
    width: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Each customer's ``width`` best items by ALS, best first, nothing excluded (-1
    pads a catalogue smaller than ``width``), in the smallest integer type that holds
    the catalogue. ``rows``: only those customers' (the others' rows all -1, scored by
    the top-k when served); None: everyone's.

    Made once per training, because a trained customer's taste vector and the item
    factors change only then: ALS's top-k over the whole catalogue was a tenth of an
    offers call at 20,000 items and a sixth of a campaign's time, and what a request
    excludes is mostly a few of the items near the top of the list. Scored in the
    layout the service uses (``ItemSide.item_factors_column_major``).
    """
    items = np.asfortranarray(item_factors, dtype=np.float32)
    users = np.asarray(user_factors, dtype=np.float32)
    n_items = items.shape[0]
    dtype = np.int16 if n_items <= np.iinfo(np.int16).max else np.int32
    out = np.full((users.shape[0], width), -1, dtype=dtype)
    n = min(width, n_items)
    wanted = np.arange(users.shape[0]) if rows is None else np.asarray(rows, np.int64)
    for start in range(0, len(wanted), _SHORTLIST_BLOCK):
        block = wanted[start : start + _SHORTLIST_BLOCK]
        ids, scores = topk(items, users[block], n, num_threads=1)
        out[block, :n] = real_candidates(ids, scores)
    return out


def stage_codes(stages: np.ndarray) -> np.ndarray:
    """Stage names -> indices into ``STAGES`` (``NO_STAGE`` for anything else)."""
    names = np.asarray(stages).astype(str)
    codes = np.full(len(names), NO_STAGE, np.int64)
    for code, name in enumerate(STAGES):
        codes[names == name] = code
    return codes


@dataclass(frozen=True)
class CandidateTable:
    """Candidate (customer row, item) pairs with their features, grouped by row."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray  # pairs x len(FEATURES), float32, NaN = not applicable
    sources: np.ndarray  # pairs x len(SOURCES), bool: which sources proposed the item

    def __len__(self) -> int:
        return len(self.rows)


def candidates(
    items: ItemSide, customers: CustomerSide, per_source: int, as_of_s: int | None = None
) -> CandidateTable:
    """Every source's top ``per_source`` items per customer (minus ``exclude``), unioned,
    with the features of each pair as of ``as_of_s`` (default: the item side's moment;
    the service passes its clock).

    One path for one customer per request, a campaign's chunks and the trainer's window:
    ALS's top-k runs once for all customers (implicit), the other sources, their union
    and the features run customer by customer in compiled loops
    (``nbo.models.candidate_kernels``).
    """
    now_s = items.as_of_s if as_of_s is None else as_of_s
    factors = np.asarray(customers.user_factors, dtype=np.float32)
    proposals = _propose(items, customers, per_source)
    # The recency-weighted counts, carried from the item side's moment to the clock.
    fade = float(decay(now_s - items.as_of_s, items.half_life_days))
    traits = _traits_of(customers, now_s, fade)
    features = _pair_features(items, now_s, proposals, factors, traits, fade)
    return CandidateTable(proposals.rows, proposals.items, features, proposals.flags)


@dataclass(frozen=True)
class SourceProposals:
    """One source's proposals for customer rows 0..``n_customers`` - 1: (row, item, rank)
    triples grouped by row, each row's in rank order (1 = best)."""

    n_customers: int
    rows: np.ndarray
    items: np.ndarray
    ranks: np.ndarray

    def per_customer(self) -> list[np.ndarray]:
        """Per customer row, its items best first."""
        order = np.lexsort((self.ranks, self.rows))
        bounds = self.rows[order].searchsorted(np.arange(self.n_customers + 1))
        items = self.items[order]
        return [items[bounds[r] : bounds[r + 1]] for r in range(self.n_customers)]


# The candidate sources, in the order of ``CandidateTable.sources``' columns (and of the
# kernel's ranks): ALS, ItemKNN, buy again, popular, popular in the lifecycle stage. A
# new source is a step of ``candidate_kernels.propose`` and a name here.
SOURCES = ("als", "knn", "buy_again", "popular", "stage_popular")
SOURCE_ALS, SOURCE_KNN, SOURCE_BUY_AGAIN, SOURCE_POPULAR, SOURCE_STAGE_POPULAR = range(len(SOURCES))


def propose_source(
    name: str, items: ItemSide, customers: CustomerSide, per_source: int
) -> SourceProposals:
    """What the source ``name`` (one of ``SOURCES``) alone proposes to each customer, as
    ``candidates`` runs it (the same pass, read for one source): for tests of each
    source and for reports."""
    if name not in SOURCES:
        raise ValueError(f"source: unknown {name!r}, expected one of {', '.join(SOURCES)}")
    source = SOURCES.index(name)
    proposals = _propose(items, customers, per_source)
    mine = proposals.flags[:, source].nonzero()[0]
    ranks = proposals.ranks[mine, source]
    order = mine[np.lexsort((ranks, proposals.rows[mine]))]
    return SourceProposals(
        customers.counts.shape[0],
        proposals.rows[order],
        proposals.items[order],
        proposals.ranks[order, source],
    )


def _als_top(items: ItemSide, customers: CustomerSide, n: int) -> np.ndarray:
    """ALS's top ``n`` per customer, never an excluded item (-1 pads): read from their
    shortlist where it holds ``n`` items not excluded, or the whole catalogue; else by
    implicit's top-k, once for all the others."""
    n_customers = customers.counts.shape[0]
    exclude = customers.exclude
    live: np.ndarray = np.arange(n_customers)
    if customers.shortlist is not None:
        als_ids, complete = _shortlisted(customers.shortlist, exclude, n, len(items.popularity))
        live = (~complete).nonzero()[0]
    else:
        als_ids = filled((n_customers, n), -1, np.int64)
    if len(live):
        factors = np.asarray(customers.user_factors, dtype=np.float32)
        if len(live) < n_customers:
            factors = factors[live]
        filt = None if exclude is None else RowIndices(exclude, live)
        ids, scores = topk(
            items.item_factors_column_major, factors, n, filter_query_items=filt, num_threads=1
        )
        als_ids[live] = real_candidates(ids, scores)
    return als_ids


def _shortlisted(
    shortlist: np.ndarray, exclude: Rows | None, n: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``n`` items of its shortlist not excluded (-1 pads), and
    whether those are its top ``n``: the row has a shortlist, and it held ``n`` such
    items or every item of the catalogue. Any item after the shortlist scores no higher
    than its last, so its first ``n`` allowed are ALS's filtered top ``n``."""
    indptr, indices = _excluded(exclude, len(shortlist))
    return kernels.shortlisted(np.asarray(shortlist), indptr, indices, n, n_items)


def _excluded(exclude: Rows | None, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``exclude``'s row pointers and items as the kernels take them (none: empty rows)."""
    if exclude is None:
        return np.zeros(n_rows + 1, np.int64), np.empty(0, np.int64)
    return (
        np.asarray(exclude.indptr, dtype=np.int64),
        np.asarray(exclude.indices, dtype=np.int64),
    )


@dataclass(frozen=True)
class _Proposals:
    """The union of the sources' proposals as (row, item) pairs grouped by row, items
    ascending, with what the features need from the sources and the history."""

    rows: np.ndarray
    items: np.ndarray
    flags: np.ndarray  # pairs x len(SOURCES), bool: which sources proposed the item
    ranks: np.ndarray  # pairs x len(SOURCES): its rank in each (1 = best, 0 = not)
    knn_score: np.ndarray  # 0 where the item is no neighbour
    bought: np.ndarray  # the customer's orders of the item (0 = never)
    bought_last: np.ndarray  # their last purchase of it (unix s; 0 = never)
    # Their recency-weighted orders of it as of the item side's moment (0 = never, NaN =
    # unknown).
    bought_recent: np.ndarray


def _history(customers: CustomerSide) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The customers' history as the kernels take it: row pointers, items, orders and
    last purchases (float64, as the features are computed)."""
    counts = customers.counts
    return (
        np.asarray(counts.indptr, dtype=np.int64),
        np.asarray(counts.indices, dtype=np.int64),
        np.asarray(counts.data, dtype=np.float64),
        np.asarray(customers.last.data, dtype=np.float64),
    )


def _propose(items: ItemSide, customers: CustomerSide, per_source: int) -> _Proposals:
    """The sources' union for all customers: ALS's top-k (``_als_top``), then one
    compiled pass per customer row for the other sources and the union."""
    n_items = len(items.popularity)
    n = min(per_source, n_items)
    als_ids = _als_top(items, customers, n)
    indptr, indices, counts, last = _history(customers)
    recent = customers.recent
    exclude_indptr, exclude_indices = _excluded(customers.exclude, len(indptr) - 1)
    by_stage = items.stage_popular_order
    rows, chosen, flags, ranks, knn_score, bought, bought_last, bought_recent = kernels.propose(
        n_items,
        n,
        als_ids,
        indptr,
        indices,
        counts,
        last,
        _NO_VALUES if recent is None else np.asarray(recent.data, dtype=np.float64),
        recent is not None,
        exclude_indptr,
        exclude_indices,
        _stages(customers),
        items.popular_order,
        _NO_STAGE_ORDER if by_stage is None else by_stage,
        items.neighbour_ids,
        items.neighbour_weights,
        KNN_BASIS,
    )
    return _Proposals(rows, chosen, flags, ranks, knn_score, bought, bought_last, bought_recent)


_NO_VALUES = np.empty(0, np.float64)
_NO_STAGE_ORDER = np.empty((0, 0), np.int64)


def _stages(customers: CustomerSide) -> np.ndarray:
    n_customers = customers.counts.shape[0]
    if customers.stage is None:
        return filled(n_customers, NO_STAGE, np.int64)
    return np.asarray(customers.stage, dtype=np.int64)


@dataclass(frozen=True)
class _CustomerTraits:
    """Per customer row: their stage, their features (``CUSTOMER_FEATURES``) and their
    recency-weighted orders as of the clock (NaN = unknown)."""

    stage: np.ndarray
    features: np.ndarray  # customers x len(CUSTOMER_FEATURES), float64, NaN = unknown
    recent_orders: np.ndarray


def _traits_of(customers: CustomerSide, now_s: int, fade: float) -> _CustomerTraits:
    """Per customer row: orders, distinct items, days since the last purchase (NaN
    without one), value, stage (NaN = unknown), churn risk, the share of their items
    bought in two or more orders, orders placed, mean days between orders and
    recency-weighted orders (times ``fade``, which carries them to the clock), as of
    ``now_s``."""
    indptr, _, counts, last = _history(customers)
    n_customers = len(indptr) - 1
    stage = _stages(customers)

    def per_customer(values: np.ndarray | None) -> np.ndarray:
        if values is None:
            return filled(n_customers, np.nan)
        return np.asarray(values, dtype=np.float64)

    features, recent_orders = kernels.customer_traits(
        now_s,
        DAY,
        fade,
        indptr,
        counts,
        last,
        stage,
        per_customer(customers.monetary),
        per_customer(customers.churn_risk),
        per_customer(customers.baskets),
        per_customer(customers.gap_days),
        per_customer(customers.recent_orders),
    )
    return _CustomerTraits(stage, features, recent_orders)


def _rank_within(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """For pairs sorted by row: each pair's position within its row (0 = first)."""
    if len(rows) == 0:
        return np.empty(0, np.int64)
    starts = rows.searchsorted(np.arange(n_rows))
    return np.arange(len(rows)) - starts[rows]


# Reciprocal rank fusion's constant (Cormack, Clarke and Buettcher, 2009): a source's
# first proposal weighs 1/61, its tenth 1/70, so agreement between sources outweighs any
# one source's order.
FUSION_K = 60.0


def source_consensus(table: CandidateTable) -> np.ndarray:
    """Per pair, how strongly the sources agree on it: reciprocal rank fusion of each
    proposing source's rank (ALS, ItemKNN, the customer's own history by orders then
    recency, popularity, popularity in the lifecycle stage).

    The ranker's scores tie where its trees put candidates in the same leaves (few
    rounds on a small shop); the sources' consensus then orders them, instead of the
    catalogue index, so tied candidates keep the sources' order, on every machine.
    """
    features, flags = table.features, table.sources
    column = _COLUMN
    # (NaN set by masks, not ``np.nan_to_num``: a tenth of the cost on one customer's
    # candidates; neither column holds an infinity.)
    again = flags[:, SOURCE_BUY_AGAIN]
    positions = np.flatnonzero(again)
    bought = features[positions, column["bought_orders"]].astype(np.float64)
    bought[np.isnan(bought)] = 0.0
    since = features[positions, column["days_since_bought"]].astype(np.float64)
    since[np.isnan(since)] = np.inf
    # The history source's rank: most ordered first, then most recent, within the row.
    order = positions[np.lexsort((table.items[positions], since, -bought, table.rows[positions]))]
    again_rank = filled(len(table), np.nan)
    n_rows = int(table.rows.max()) + 1 if len(table) else 0
    again_rank[order] = _rank_within(table.rows[order], n_rows) + 1
    ranks = (
        (SOURCE_ALS, features[:, column["als_rank"]]),
        (SOURCE_KNN, features[:, column["knn_rank"]]),
        (SOURCE_BUY_AGAIN, again_rank),
        (SOURCE_POPULAR, features[:, column["popularity_rank"]] + 1.0),
        (SOURCE_STAGE_POPULAR, features[:, column["stage_popularity_rank"]] + 1.0),
    )
    fused = np.zeros(len(table))
    for source, rank in ranks:
        proposed = flags[:, source] & np.isfinite(rank)
        fused[proposed] += 1.0 / (FUSION_K + rank[proposed].astype(np.float64))
    return fused


def ranked_order(table: CandidateTable, scores: np.ndarray) -> np.ndarray:
    """The pairs by row, then by the ranker's score, best first; ties by the sources'
    consensus (``source_consensus``), then by item. The one order the trainer evaluates
    and the service serves.

    The consensus is computed only for the customers with two candidates of one score
    (or a NaN score), and only the runs of one score (NaN with NaN) within a row are
    sorted again by it: elsewhere row and score alone decide the order. Most offers calls
    on Online Retail have none (93%); at 100k x 20k (the bench's model) 94% of the
    customers have such a tie, alone or in a campaign's chunk, so the consensus is on
    most calls' path there, but the runs hold a sixth of the pairs.
    """
    by_score = _by_row_then_score(table.rows, scores)
    rows, ranked = table.rows[by_score], scores[by_score]
    unsure = np.isnan(ranked)
    # Each pair with the score of the one before it in its row.
    same = (rows[1:] == rows[:-1]) & (ranked[1:] == ranked[:-1])
    unsure[1:] |= same
    if not unsure.any():
        return by_score
    # A customer's pairs all or none: the consensus ranks within each customer.
    # (Rows are sorted: a mask by row, not ``np.isin``, which sorts them again.)
    tied = np.zeros(int(rows[-1]) + 1, dtype=bool)
    tied[rows[unsure]] = True
    at = np.flatnonzero(tied[rows])
    mine = by_score[at]
    consensus = source_consensus(
        CandidateTable(
            table.rows[mine], table.items[mine], table.features[mine], table.sources[mine]
        )
    )
    order = by_score.copy()
    if len(by_score) < _SORT_RUNS_FROM:
        # A request's few pairs: one sort of the tied customers' pairs costs less than
        # finding the runs.
        order[at] = mine[
            np.lexsort((table.items[mine], -consensus, -scores[mine], table.rows[mine]))
        ]
        return order
    # The places of each run of one score (NaN with NaN, as the sort has them) within a
    # row, sorted by consensus then item within the run (the run's number first, so each
    # run keeps its places); the others stay.
    missing = np.isnan(ranked)
    same |= (rows[1:] == rows[:-1]) & missing[1:] & missing[:-1]
    in_run = np.zeros(len(by_score), dtype=bool)
    in_run[1:] = same
    in_run[:-1] |= same
    places = np.flatnonzero(in_run)
    first = np.ones(len(places), dtype=bool)
    first[1:] = ~same[places[1:] - 1]
    run = first.cumsum()
    runs = by_score[places]
    agreed = filled(len(by_score), 0.0)
    agreed[at] = consensus
    order[places] = runs[np.lexsort((table.items[runs], -agreed[places], run))]
    return order


# From this many pairs (a campaign chunk's tens of thousands; a request has about a
# hundred), ``ranked_order`` sorts only the runs of one score again, and
# ``_by_row_then_score`` sorts row by row: each costs a dozen numpy calls more than a
# sort of the whole, which a request's table does not repay (55 -> 78 µs a request at
# 100k x 20k; a chunk's 1,000 customers 32 -> 13 ms).
_SORT_RUNS_FROM = 2048


# The most cells (rows x the longest row's pairs) of the sheet ``_by_row_then_score``
# sorts row by row; a larger table is sorted as a whole.
_SORT_SHEET_CELLS = 1 << 22


def _by_row_then_score(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The pairs by row, then by score, best first (NaN last), in their order on a tie:
    ``np.lexsort((-scores, rows))``. Rows in order (the candidates' tables) are laid out
    one a line and each line sorted on its own: a campaign chunk's pairs in half the
    time of the two whole-table sorts."""
    n = len(rows)
    if n < _SORT_RUNS_FROM or (rows[1:] < rows[:-1]).any():
        return np.lexsort((-scores, rows))
    n_rows = int(rows[-1]) + 1
    lengths = np.bincount(rows, minlength=n_rows)
    width = int(lengths.max())
    if n_rows * width > _SORT_SHEET_CELLS:
        return np.lexsort((-scores, rows))
    starts = np.zeros(n_rows, dtype=np.int64)
    lengths[:-1].cumsum(out=starts[1:])
    # Padded with NaN, which sorts last, after the row's own (a stable sort keeps a
    # row's NaN scores before the pads).
    sheet = filled((n_rows, width), np.nan)
    sheet.ravel()[rows * width + (np.arange(n) - starts[rows])] = -scores
    order = sheet.argsort(axis=1, kind="stable")
    return (starts[:, None] + order)[np.arange(width) < lengths[:, None]]


def ranked_top(table: CandidateTable, scores: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """Per customer row, the ``k`` candidates of highest score, best first (-1 pads)."""
    out = np.full((n_rows, k), -1, np.int64)
    order = ranked_order(table, scores)
    rows = table.rows[order]
    within = _rank_within(rows, n_rows)
    top = within < k
    out[rows[top], within[top]] = table.items[order][top]
    return out


def _pair_features(
    items: ItemSide,
    now_s: int,
    proposals: _Proposals,
    factors: np.ndarray,
    traits: _CustomerTraits,
    fade: float,
) -> np.ndarray:
    """The features of every candidate pair (``FEATURES`` order, column-major: each
    feature one contiguous run); ``fade`` carries the recency-weighted counts from the
    item side's moment to ``now_s``. ALS's score is numpy's einsum, outside the kernel:
    a plain loop sums the float32 products in another order (other last bits)."""
    rows, chosen = proposals.rows, proposals.items
    als_score = np.einsum("ij,ij->i", items.item_factors[chosen], factors[rows], dtype=np.float32)
    stage_popularity, stage_rank = items.stage_popularity, items.stage_popular_rank
    if stage_popularity is None or stage_rank is None:
        stage_popularity, stage_rank = _NO_STAGE_VALUES, _NO_STAGE_ORDER
    return kernels.pair_features(
        now_s,
        DAY,
        fade,
        len(FEATURES),
        rows,
        chosen,
        proposals.ranks,
        proposals.knn_score,
        proposals.bought,
        proposals.bought_last,
        proposals.bought_recent,
        als_score,
        items.item_features,
        _ITEM_COLUMNS,
        ITEM_FEATURES.index("cycle_days"),
        traits.features,
        _CUSTOMER_COLUMNS,
        CUSTOMER_FEATURES.index("customer_baskets"),
        CUSTOMER_FEATURES.index("customer_gap_days"),
        traits.recent_orders,
        traits.stage,
        stage_popularity,
        stage_rank,
        _NAMED_COLUMNS,
    )


_NO_STAGE_VALUES = np.empty((0, 0), np.float64)
_NAMED_COLUMNS = np.array([_COLUMN[name] for name in kernels.NAMED_COLUMNS], np.int64)
