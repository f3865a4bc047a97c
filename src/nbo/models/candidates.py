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

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.core.arrays import filled
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.history import decay
from nbo.data.sparse import RowIndices, Rows, padded_rows
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
_ITEM_COLUMNS = [_COLUMN[name] for name in ITEM_FEATURES]
_CUSTOMER_COLUMNS = [_COLUMN[name] for name in CUSTOMER_FEATURES]


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


# Customers are proposed for in blocks whose customers x catalogue sheets (ItemKNN's
# summed similarity, which source proposed what, what is excluded) hold at most this
# many cells (10 bytes each, about 30 at the peak of the ItemKNN selection, which copies
# the scores twice): one block for a request, a few dozen for a campaign's chunk or the
# trainer's window.
SHEET_CELLS = 1 << 20


def candidates(
    items: ItemSide, customers: CustomerSide, per_source: int, as_of_s: int | None = None
) -> CandidateTable:
    """Every source's top ``per_source`` items per customer (minus ``exclude``), unioned,
    with the features of each pair as of ``as_of_s`` (default: the item side's moment;
    the service passes its clock).

    One path for one customer per request, a campaign's chunks and the trainer's window:
    ALS's top-k runs once for all customers (implicit), the other sources and their
    union run over blocks of customers (``SHEET_CELLS``), and the features of all pairs
    are computed at once.
    """
    now_s = items.as_of_s if as_of_s is None else as_of_s
    factors = np.asarray(customers.user_factors, dtype=np.float32)
    parts = [_propose(block) for block in _blocks(items, customers, per_source)]
    proposals = parts[0] if len(parts) == 1 else _Proposals.concatenate(parts)
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


def propose_source(
    name: str, items: ItemSide, customers: CustomerSide, per_source: int
) -> SourceProposals:
    """What the source ``name`` (one of ``SOURCES``) alone proposes to each customer, as
    ``candidates`` runs it: for tests of each source and for reports."""
    if name not in _SOURCE_FUNCTIONS:
        raise ValueError(f"source: unknown {name!r}, expected one of {', '.join(SOURCES)}")
    source = _SOURCE_FUNCTIONS[name]
    parts = [(block, source(block)) for block in _blocks(items, customers, per_source)]
    empty = np.empty(0, np.int64)
    return SourceProposals(
        customers.counts.shape[0],
        np.concatenate([made.keys // b.n_items + b.start for b, made in parts] or [empty]),
        np.concatenate([made.keys % b.n_items for b, made in parts] or [empty]),
        np.concatenate([made.ranks for _, made in parts] or [empty]).astype(np.int64),
    )


def _blocks(items: ItemSide, customers: CustomerSide, per_source: int) -> Iterator[_Block]:
    """The customers in blocks of at most ``SHEET_CELLS`` cells, each with its rows of
    ALS's top ``per_source`` (implicit's top-k runs once for all customers)."""
    n_items = len(items.popularity)
    n_customers = customers.counts.shape[0]
    n = min(per_source, n_items)
    als_ids = _als_top(items, customers, n)
    step = max(1, SHEET_CELLS // max(n_items, 1))
    for start in range(0, n_customers, step):
        yield _Block.of(items, customers, n, als_ids, start, min(start + step, n_customers))


def _als_top(items: ItemSide, customers: CustomerSide, n: int) -> np.ndarray:
    """ALS's top ``n`` per customer, never an excluded item (-1 pads): read from their
    shortlist where it holds ``n`` items not excluded, or the whole catalogue; else by
    implicit's top-k, once for all the others."""
    n_customers = customers.counts.shape[0]
    exclude = customers.exclude
    live = np.arange(n_customers)
    als_ids = filled((n_customers, n), -1, np.int64)
    if customers.shortlist is not None:
        found, complete = _shortlisted(customers.shortlist, exclude, n, len(items.popularity))
        als_ids[complete] = found[complete]
        live = (~complete).nonzero()[0]
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
    ids = np.asarray(shortlist, dtype=np.int64)
    rows = np.arange(len(ids))
    allowed = ids >= 0
    if exclude is not None and len(exclude.indices):
        indptr = exclude.indptr
        excluded = (rows * n_items).repeat(indptr[1:] - indptr[:-1]) + exclude.indices
        # (A -1 pad's key is another cell's, or the last cell's; it is not allowed
        # either way.)
        keys = (rows * n_items)[:, None] + ids
        if len(ids) * n_items <= SHEET_CELLS:
            # A flag per cell of the rows' sheet: a request's few excluded items are
            # looked up without ``np.isin``'s sorting and its Python layers.
            sheet = np.zeros(len(ids) * n_items, dtype=bool)
            sheet[excluded] = True
            allowed &= ~sheet[keys]
        else:
            allowed &= ~np.isin(keys, excluded)
    rank = allowed.cumsum(axis=1)
    taken = allowed & (rank <= n)
    found = filled((len(ids), n), -1, np.int64)
    at_row, at_column = taken.nonzero()
    found[at_row, rank[at_row, at_column] - 1] = ids[at_row, at_column]
    whole = ids.shape[1] >= n_items
    complete = (ids[:, 0] >= 0) & ((rank[:, -1] >= n) | whole)
    return found, complete


@dataclass(frozen=True)
class _Proposals:
    """The union of the sources' proposals as (row, item) pairs grouped by row, items
    ascending, with what the features need from the sources and the history."""

    rows: np.ndarray
    items: np.ndarray
    flags: np.ndarray  # pairs x len(SOURCES)
    knn_score: np.ndarray  # 0 where the item is no neighbour
    als_rank: np.ndarray  # NaN where ALS did not propose it
    knn_rank: np.ndarray  # NaN where ItemKNN did not propose it
    bought: np.ndarray  # the customer's orders of the item (0 = never)
    bought_last: np.ndarray  # their last purchase of it (unix s; 0 = never)
    # Their recency-weighted orders of it as of the item side's moment (0 = never, NaN =
    # unknown).
    bought_recent: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[_Proposals]) -> _Proposals:
        if not parts:
            empty = np.empty(0, np.int64)
            nothing = np.empty(0)
            return cls(
                empty,
                empty,
                np.empty((0, len(SOURCES)), bool),
                nothing,
                nothing,
                nothing,
                nothing,
                nothing,
                nothing,
            )
        return cls(
            *(
                np.concatenate([getattr(part, name) for part in parts])
                for name in cls.__dataclass_fields__
            )
        )


# Not frozen, nor is _Proposed: a frozen dataclass's __init__ costs about 0.1 µs a field,
# and a one-customer request's candidates take about 250 µs in all.
@dataclass(slots=True)
class _Block:
    """What every source needs of customer rows ``start`` to ``end``.

    Each (row, item) pair of the block is a cell of a customers x catalogue sheet,
    addressed by one integer, its key (row within the block x catalogue size + item): the
    history, the excluded cells and every source's proposals are keys.
    """

    items: ItemSide
    customers: CustomerSide
    start: int
    end: int
    n_rows: int
    n_items: int
    local: np.ndarray  # the rows within the block, 0..n_rows - 1
    n: int  # the most items a source proposes per customer
    # The popularity sources propose a few, whatever ``n``: the first ``n_popular``
    # allowed items of a ranked list, which lie within its first ``popular_width`` (no
    # row excludes more than ``most_banned``).
    n_popular: int
    popular_width: int
    als_ids: np.ndarray  # the block's rows of ALS's top ``n`` (-1 = none)
    # The history, one entry per (row, item) bought (``last`` shares ``counts``' pattern).
    history_rows: np.ndarray
    history_items: np.ndarray
    history_counts: np.ndarray
    history_last: np.ndarray
    history_keys: np.ndarray
    history_recent: np.ndarray | None  # recency-weighted orders (None = unknown)
    banned: np.ndarray  # one flag per cell: excluded
    banned_sheet: np.ndarray  # the same, rows x catalogue
    banned_keys: np.ndarray

    @classmethod
    def of(
        cls,
        items: ItemSide,
        customers: CustomerSide,
        n: int,
        als_ids: np.ndarray,
        start: int,
        end: int,
    ) -> _Block:
        n_items = len(items.popularity)
        n_rows = end - start
        n_popular = max(10, n // 5)
        counts, last, exclude = customers.counts, customers.last, customers.exclude
        recent = customers.recent
        local = np.arange(n_rows, dtype=np.int64)
        indptr = counts.indptr[start : end + 1]
        lo, hi = indptr[0], indptr[-1]
        # (ndarray methods, not numpy's functions: a request's block is one row, where
        # the functions' dispatch costs more than the work.)
        history_rows = local.repeat(indptr[1:] - indptr[:-1])
        history_items = np.asarray(counts.indices[lo:hi], dtype=np.int64)
        banned = np.zeros(n_rows * n_items, dtype=bool)
        banned_keys = np.empty(0, np.int64)
        most_banned = 0
        if exclude is not None:
            indptr = exclude.indptr[start : end + 1]
            lengths = indptr[1:] - indptr[:-1]
            banned_keys = (local * n_items).repeat(lengths) + exclude.indices[
                indptr[0] : indptr[-1]
            ]
            banned[banned_keys] = True
            most_banned = int(lengths.max())  # a block has a row at least
        return cls(
            items,
            customers,
            start,
            end,
            n_rows,
            n_items,
            local,
            n,
            n_popular,
            min(n_popular + most_banned, n_items),
            als_ids[start:end],
            history_rows,
            history_items,
            np.asarray(counts.data[lo:hi], dtype=np.float64),
            np.asarray(last.data[lo:hi], dtype=np.float64),
            history_rows * n_items + history_items,
            None if recent is None else np.asarray(recent.data[lo:hi], dtype=np.float64),
            banned,
            banned.reshape(n_rows, n_items),
            banned_keys,
        )


@dataclass(slots=True)
class _Proposed:
    """One source's proposals for a block: cells (``_Block`` keys) grouped by row, each
    row's in its rank order, with their ranks (1 = best)."""

    keys: np.ndarray
    ranks: np.ndarray
    # The source's score of every cell of the block, proposed or not (None: it has none);
    # the union takes the score of each of its cells as a feature.
    scores: np.ndarray | None = None


def _als(block: _Block) -> _Proposed:
    """ALS: implicit's top-k, already filtered (run once for all customers, ``_blocks``);
    its rank is the column (1 = best)."""
    rows, columns = (block.als_ids >= 0).nonzero()
    return _Proposed(rows * block.n_items + block.als_ids[rows, columns], columns + 1)


def _item_knn(block: _Block) -> _Proposed:
    """ItemKNN: summed similarity x order count of the neighbours of each customer's
    ``KNN_BASIS`` most recent items (ties: as stored), summed in catalogue order of those
    items, so that a score does not depend on how the history is stored."""
    items, n, n_rows, n_items = block.items, block.n, block.n_rows, block.n_items
    history_rows, history_keys = block.history_rows, block.history_keys
    if len(history_rows) > KNN_BASIS:
        stored = np.arange(len(history_rows))
        by_recency = np.lexsort((stored, -block.history_last, history_rows))
        recent = by_recency[_rank_within(history_rows[by_recency], n_rows) < KNN_BASIS]
        basis = recent[history_keys[recent].argsort()]
    else:
        basis = history_keys.argsort()
    basis_items = block.history_items[basis]
    knn = np.bincount(
        ((history_rows[basis] * n_items)[:, None] + items.neighbour_ids[basis_items]).ravel(),
        # In float64 whatever the table's dtype, as the scores always were.
        weights=np.multiply(
            items.neighbour_weights[basis_items],
            block.history_counts[basis, None],
            dtype=np.float64,
        ).ravel(),
        minlength=n_rows * n_items,
    )
    knn[block.banned_keys] = 0.0
    # Each row's n best positive cells: at or above its n-th highest score (all ties
    # included), then by score and item within the row. Only the cells at or above a
    # lower bound of that n-th highest are taken from the sheet (the n-th highest of the
    # row's cells among the most popular items: most items' neighbours are popular), a
    # tenth of a campaign row's thousand positive cells, and the n-th highest is looked
    # for among them, laid out one row each: partitioning the whole sheet cost a third
    # of this source, the thousand cells a row a third of what was left.
    bound = _lower_bound(knn, items.popular_order, n_rows, n)
    keys = (knn.reshape(n_rows, n_items) >= bound[:, None]).ravel().nonzero()[0]
    rows = keys // n_items
    within = _rank_within(rows, n_rows)
    width = int(within.max()) + 1 if len(within) else 0
    values = knn[keys]
    if width > n:  # else every cell taken is among its row's n best
        # Negated, padded with +inf: numpy's partition is quick for a small k. (Flat
        # indices, and each row's n-th highest read as one column: indexing the sheet by
        # row and column arrays cost as much as the partition.)
        negated = filled((n_rows, width), np.inf)
        negated.ravel()[rows * width + within] = -values
        negated.partition(n - 1, axis=1)
        at_least = values >= -negated[:, n - 1][rows]
        keys, rows, values = keys[at_least], rows[at_least], values[at_least]
    order = np.lexsort((keys, -values, rows))
    keys = keys[order]
    rank = _rank_within(rows[order], n_rows) + 1
    first = rank <= n
    return _Proposed(keys[first], rank[first], knn)


# The popular items whose cells bound each row's n-th highest ItemKNN score from below.
KNN_BOUND_ITEMS = 512
# The smallest positive float64: a cell at or above it is positive.
_SMALLEST_POSITIVE = float(np.nextafter(0.0, 1.0))


def _lower_bound(sheet: np.ndarray, popular: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """Per row of ``sheet`` (rows x catalogue, flat), a positive number no higher than the
    row's ``n``-th highest positive cell: the ``n``-th highest of its cells among the
    ``KNN_BOUND_ITEMS`` most ``popular``, or the smallest positive number."""
    sample = popular[:KNN_BOUND_ITEMS]
    if len(sample) < n:
        return filled(n_rows, _SMALLEST_POSITIVE)
    # (In float64: a block that bought nothing has an integer sheet, ``np.bincount``'s
    # type for no entries.)
    negated = np.negative(sheet.reshape(n_rows, -1).take(sample, axis=1), dtype=np.float64)
    negated.partition(n - 1, axis=1)
    bound = np.negative(negated[:, n - 1])
    return np.maximum(bound, _SMALLEST_POSITIVE, out=bound)


def _buy_again(block: _Block) -> _Proposed:
    """Buy again: the customer's own items, most ordered first (ties: most recent)."""
    history_rows = block.history_rows
    allowed = (~block.banned[block.history_keys]).nonzero()[0]
    order = allowed[
        np.lexsort(
            (
                allowed,
                -block.history_last[allowed],
                -block.history_counts[allowed],
                history_rows[allowed],
            )
        )
    ]
    within = _rank_within(history_rows[order], block.n_rows)
    first = within < block.n
    return _Proposed(block.history_keys[order[first]], within[first] + 1)


def _popular(block: _Block) -> _Proposed:
    """Recent popularity: the most popular items each customer may be offered."""
    return _first_allowed(
        block, block.local, block.items.popular_order[None, : block.popular_width]
    )


def _stage_popular(block: _Block) -> _Proposed:
    """Popularity within each customer's lifecycle stage (none without a stage)."""
    stage = _stages(block.customers)[block.start : block.end]
    staged = (stage != NO_STAGE).nonzero()[0]
    by_stage = block.items.stage_popular_order
    if by_stage is None or not len(staged):
        return _Proposed(np.empty(0, np.int64), np.empty(0, np.int64))
    return _first_allowed(block, staged, by_stage[stage[staged], : block.popular_width])


def _first_allowed(block: _Block, rows: np.ndarray, ranked: np.ndarray) -> _Proposed:
    """Per row of ``rows`` (``ranked``: one ranked item list per row, or one for all, at
    least ``popular_width`` long), the cells of its first ``n_popular`` items not
    excluded, row by row."""
    n_items, n = block.n_items, block.n_popular
    allowed = ~block.banned_sheet[rows[:, None], ranked]
    rank = allowed.cumsum(axis=1)
    allowed &= rank <= n
    return _Proposed(((rows * n_items)[:, None] + ranked)[allowed], rank[allowed])


# The candidate sources, by name: each proposes up to ``n`` items per customer of a
# block. A new source is a function of a ``_Block`` and an entry here; the order is
# ``SOURCES``' and so the columns of ``CandidateTable.sources``.
_SOURCE_FUNCTIONS: dict[str, Callable[[_Block], _Proposed]] = {
    "als": _als,
    "knn": _item_knn,
    "buy_again": _buy_again,
    "popular": _popular,
    "stage_popular": _stage_popular,
}
SOURCES = tuple(_SOURCE_FUNCTIONS)
SOURCE_ALS, SOURCE_KNN, SOURCE_BUY_AGAIN, SOURCE_POPULAR, SOURCE_STAGE_POPULAR = (
    SOURCES.index(name) for name in ("als", "knn", "buy_again", "popular", "stage_popular")
)
_SOURCE_BITS = np.array([1 << bit for bit in range(len(SOURCES))], dtype=np.uint8)


def _propose(block: _Block) -> _Proposals:
    """The sources' union for a block: each source sets its bit in the cells it proposes
    (a customers x catalogue sheet), and the union is that sheet's nonzero cells, in
    order, with the ranks and scores the features take from ALS and ItemKNN."""
    n_items = block.n_items
    proposed = np.zeros(block.n_rows * n_items, dtype=np.uint8)
    made = {}
    for bit, (name, source) in zip(_SOURCE_BITS, _SOURCE_FUNCTIONS.items(), strict=True):
        made[name] = source(block)
        proposed[made[name].keys] |= bit
    union = _union(proposed, [made[name].keys for name in made])
    als, knn = made["als"], made["knn"]
    assert knn.scores is not None
    als_rank = filled(len(union), np.nan)
    als_rank[union.searchsorted(als.keys)] = als.ranks
    knn_rank = filled(len(union), np.nan)
    knn_rank[union.searchsorted(knn.keys)] = knn.ranks
    history_keys = block.history_keys
    bought = np.zeros(len(union))
    bought_last = np.zeros(len(union))
    recent = block.history_recent
    bought_recent = filled(len(union), np.nan) if recent is None else np.zeros(len(union))
    if len(union):
        at = np.minimum(union.searchsorted(history_keys), len(union) - 1)
        found = union[at] == history_keys
        bought[at[found]] = block.history_counts[found]
        bought_last[at[found]] = block.history_last[found]
        if recent is not None:
            bought_recent[at[found]] = recent[found]
    return _Proposals(
        union // n_items + block.start,
        union % n_items,
        (proposed[union, None] & _SOURCE_BITS) > 0,
        knn.scores[union],
        als_rank,
        knn_rank,
        bought,
        bought_last,
        bought_recent,
    )


# Above this many sheet cells per proposed cell, the union is taken by sorting the
# proposals rather than scanning the sheet: a campaign's block of 52 customers x 20,000
# items proposes about 5,000 of its million cells, and scanning them all was 15% of the
# candidates' time; a request's sheet of a few thousand cells is quicker to scan.
UNION_BY_SORT_ABOVE = 16


def _union(proposed: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    """The cells any source proposed (``proposed``'s nonzero cells), ascending."""
    total = sum(len(k) for k in keys)
    if total * UNION_BY_SORT_ABOVE < len(proposed):
        # Sorted, then each key unlike the one before it: ``np.unique``'s result without
        # its Python layers (a request's few hundred keys cost less than its overhead).
        joined = np.concatenate(keys).astype(np.int64, copy=False)
        joined.sort()
        first = np.empty(len(joined), dtype=bool)
        first[:1] = True
        np.not_equal(joined[1:], joined[:-1], out=first[1:])
        return joined[first]
    return proposed.nonzero()[0]


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
    counts, last = customers.counts, customers.last
    n_customers = counts.shape[0]
    indptr = np.asarray(counts.indptr)
    distinct = indptr[1:] - indptr[:-1]
    rows = np.arange(n_customers).repeat(distinct)
    latest = filled(n_customers, np.nan)
    buyers = distinct.nonzero()[0]
    if len(buyers):
        latest[buyers] = np.maximum.reduceat(np.asarray(last.data, np.float64), indptr[buyers])
    stage = _stages(customers)
    features = filled((n_customers, len(CUSTOMER_FEATURES)), np.nan)
    features[:, 0] = np.bincount(
        rows, weights=np.asarray(counts.data, dtype=np.float64), minlength=n_customers
    )
    features[:, 1] = distinct
    features[:, 2] = (now_s - latest) / DAY
    if customers.monetary is not None:
        features[:, 3] = customers.monetary
    features[:, 4] = np.where(stage != NO_STAGE, stage, np.nan)
    if customers.churn_risk is not None:
        features[:, 5] = customers.churn_risk
    repeated = np.bincount(
        rows, weights=(np.asarray(counts.data) >= 2).astype(np.float64), minlength=n_customers
    )
    features[:, 6] = np.divide(
        repeated, distinct, out=filled(n_customers, np.nan), where=distinct > 0
    )
    if customers.baskets is not None:
        features[:, 7] = customers.baskets
    if customers.gap_days is not None:
        features[:, 8] = customers.gap_days
    recent_orders = filled(n_customers, np.nan)
    if customers.recent_orders is not None:
        recent_orders = np.asarray(customers.recent_orders, dtype=np.float64) * fade
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
    """The features of every candidate pair (``FEATURES`` order); ``fade`` carries the
    recency-weighted counts from the item side's moment to ``now_s``."""
    rows, chosen = proposals.rows, proposals.items
    bought, bought_last = proposals.bought, proposals.bought_last
    # Column-major: each feature is written as one contiguous run.
    out = filled((len(rows), len(FEATURES)), np.nan, np.float32, order="F")
    column = _COLUMN
    of_item = items.item_features[chosen]
    of_customer = traits.features[rows]
    out[:, _ITEM_COLUMNS] = of_item
    out[:, _CUSTOMER_COLUMNS] = of_customer
    out[:, column["als_score"]] = np.einsum(
        "ij,ij->i", items.item_factors[chosen], factors[rows], dtype=np.float32
    )
    out[:, column["als_rank"]] = proposals.als_rank
    out[:, column["knn_score"]] = proposals.knn_score
    out[:, column["knn_rank"]] = proposals.knn_rank
    since = np.where(bought > 0, (now_s - bought_last) / DAY, np.nan)
    out[:, column["bought_orders"]] = bought
    out[:, column["days_since_bought"]] = since
    out[:, column["due_ratio"]] = since / of_item[:, ITEM_FEATURES.index("cycle_days")]
    out[:, column["share_of_customer"]] = bought / np.maximum(of_customer[:, 0], 1.0)
    baskets = of_customer[:, CUSTOMER_FEATURES.index("customer_baskets")]
    gap = of_customer[:, CUSTOMER_FEATURES.index("customer_gap_days")]
    # (No orders, or orders a second apart: the ratios are unknown, not infinite.)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, column["basket_share"]] = np.where(
            baskets > 0, np.minimum(bought / baskets, 1.0), np.nan
        )
        out[:, column["gaps_since_bought"]] = np.where(gap > 0, since / gap, np.nan)
        recent = proposals.bought_recent * fade
        out[:, column["recent_orders"]] = recent
        weighted = traits.recent_orders[rows]
        out[:, column["recent_basket_share"]] = np.where(
            weighted > 0, np.minimum(recent / weighted, 1.0), np.nan
        )
    if items.stage_popularity is not None and items.stage_popular_rank is not None:
        stage = traits.stage[rows]
        staged = (stage != NO_STAGE).nonzero()[0]
        at = (stage[staged], chosen[staged])
        out[staged, column["stage_popularity"]] = items.stage_popularity[at]
        out[staged, column["stage_popularity_rank"]] = items.stage_popular_rank[at]
    return out
