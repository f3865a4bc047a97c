"""Two-stage offers: candidate sources, then a learned ranker over (customer, item) features.

Stage one: cheap sources each propose up to ``per_source`` items per customer: ALS, the
customer's own history ("buy again", most-ordered first), item-to-item neighbours of what
they bought (implicit's BM25 ItemKNN), recent popularity and what customers in the same
lifecycle stage buy. Stage two: a LightGBM LambdaRank model orders the union by the
features below, which include the customer's value, stage and churn risk and the price.

One code path for the trainer (many customers at once) and the service (one customer,
with purchases posted since training folded in): the caller passes the customers' own
rows (order counts, last purchase times, taste vectors), never an index into a global
matrix, so a refolded or brand-new customer is scored exactly like a trained one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.models.cf import FILTERED_SCORE
from nbo.models.lifecycle import STAGES
from nbo.models.popularity import popular_order

DAY = 86_400
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
)
# ``customer_stage`` is a category (an index into ``STAGES``), not an amount.
CATEGORICAL_FEATURES = ("customer_stage",)
SOURCES = ("als", "knn", "buy_again", "popular", "stage_popular")
SOURCE_ALS, SOURCE_KNN, SOURCE_BUY_AGAIN, SOURCE_POPULAR, SOURCE_STAGE_POPULAR = range(5)
NO_STAGE = -1
# ItemKNN proposes neighbours of the customer's most recently bought items, this many at
# most: what they buy now says more than what they bought years ago, and a wholesaler's
# thousand items would otherwise cost a thousand neighbour lists per request.
KNN_BASIS = 30
STAGE_CODE: dict[str, int] = {name: code for code, name in enumerate(STAGES)}
_COLUMN = {name: n for n, name in enumerate(FEATURES)}
_SOURCE_BITS = np.array([1 << bit for bit in range(len(SOURCES))], dtype=np.uint8)


@dataclass(frozen=True)
class ItemSide:
    """What the sources know of the items at a moment (``as_of_s``)."""

    as_of_s: int
    item_factors: np.ndarray  # ALS item factors
    similarity: sp.csr_matrix  # item x item ItemKNN (BM25) similarity
    popularity: np.ndarray  # recent distinct buyers per item
    popularity_before: np.ndarray  # the same for the window before (trend)
    cycle_days: np.ndarray | None  # learned repurchase cycle per item, NaN = none
    popular_order: np.ndarray  # items by popularity, best first
    popular_rank: np.ndarray  # inverse of popular_order (0 = most popular)
    # The similarity by column (CSC as CSR of the transpose): row j lists the items whose
    # neighbour j is, for explaining an offer by the purchase it is closest to.
    similar_to: sp.csr_matrix
    price: np.ndarray | None = None  # median unit price per item, NaN = unknown
    # Per stage (``STAGES`` order) and item: the share of that stage's customers who
    # bought it; with its per-stage order (best first) and rank. None = not known.
    stage_popularity: np.ndarray | None = None
    stage_popular_order: np.ndarray | None = None
    stage_popular_rank: np.ndarray | None = None
    # The similarity's rows padded to one width (weight 0 pads): a customer's neighbours
    # are then two fancy-indexing reads instead of a gather over CSR row spans.
    neighbour_ids: np.ndarray | None = None  # items x width, int64
    neighbour_weights: np.ndarray | None = None  # items x width, float64

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
    ) -> ItemSide:
        order = popular_order(popularity)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        stage_order = stage_rank = None
        if stage_popularity is not None:
            stage_popularity = np.asarray(stage_popularity, dtype=np.float64)
            stage_order = np.stack([popular_order(row) for row in stage_popularity])
            stage_rank = np.empty_like(stage_order)
            np.put_along_axis(
                stage_rank, stage_order, np.arange(stage_order.shape[1])[None, :], axis=1
            )
        ids, weights = _padded_rows(similarity.tocsr())
        return cls(
            as_of_s,
            np.asarray(item_factors, dtype=np.float32),
            similarity.tocsr(),
            np.asarray(popularity, dtype=np.float64),
            np.asarray(popularity_before, dtype=np.float64),
            cycle_days,
            order,
            rank,
            similarity.T.tocsr(),
            None if price is None else np.asarray(price, dtype=np.float64),
            stage_popularity,
            stage_order,
            stage_rank,
            ids,
            weights,
        )


def _padded_rows(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """A CSR matrix's rows as (column ids, values), each row padded with (0, 0.0)."""
    lengths = np.diff(matrix.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    ids = np.zeros((matrix.shape[0], width), np.int64)
    weights = np.zeros((matrix.shape[0], width), np.float64)
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    slots = np.arange(len(matrix.indices)) - np.repeat(matrix.indptr[:-1], lengths)
    ids[rows, slots] = matrix.indices
    weights[rows, slots] = matrix.data
    return ids, weights


class Rows(Protocol):
    """Row-compressed data: a scipy CSR matrix, or ``PlainRows`` (what one request needs,
    without scipy's constructor checks, which cost more than the ranking itself)."""

    @property
    def indptr(self) -> np.ndarray: ...
    @property
    def indices(self) -> np.ndarray: ...
    @property
    def data(self) -> np.ndarray: ...
    @property
    def shape(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class PlainRows:
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def one(cls, indices: np.ndarray, data: np.ndarray, n_items: int) -> PlainRows:
        """A single row."""
        return cls(np.array([0, len(indices)]), np.asarray(indices), np.asarray(data), (1, n_items))


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


# Up to this many customers, proposals are gathered one customer at a time (fewer numpy
# calls: what one request needs); more (a campaign's chunk, the trainer's window) go
# through the vectorised path. Both give the same table, tested on random data.
LOOP_BELOW = 8


def candidates(
    items: ItemSide, customers: CustomerSide, per_source: int, as_of_s: int | None = None
) -> CandidateTable:
    """Every source's top ``per_source`` items per customer (minus ``exclude``), unioned,
    with the features of each pair as of ``as_of_s`` (default: the item side's moment;
    the service passes its clock).

    The same code serves one customer per request, a campaign's chunks and the trainer's
    window: ALS's top-k runs once for all customers (implicit), the union of the sources
    is gathered per customer for a few customers and vectorised over (customer, item)
    pairs for many, and the features of all pairs are computed at once.
    """
    n_items = len(items.popularity)
    n_customers = customers.counts.shape[0]
    now_s = items.as_of_s if as_of_s is None else as_of_s
    n = min(per_source, n_items)
    factors = np.asarray(customers.user_factors, dtype=np.float32)
    exclude = customers.exclude
    filt = None if exclude is None else RowIndices(exclude)
    als_ids, als_scores = topk(
        items.item_factors, factors, n, filter_query_items=filt, num_threads=1
    )
    als_ids = np.where(als_scores > FILTERED_SCORE, als_ids, -1).astype(np.int64)
    propose = _propose_per_customer if n_customers < LOOP_BELOW else _propose_vectorised
    proposals = propose(items, customers, n, als_ids)
    traits = _traits_of(customers)
    features = _pair_features(items, now_s, proposals, factors, traits)
    return CandidateTable(proposals.rows, proposals.items, features, proposals.flags)


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
            )
        return cls(
            *(
                np.concatenate([getattr(part, name) for part in parts])
                for name in cls.__dataclass_fields__
            )
        )


def _propose_per_customer(
    items: ItemSide, customers: CustomerSide, n: int, als_ids: np.ndarray
) -> _Proposals:
    """The sources' union one customer at a time, over dense per-item buffers."""
    n_items = len(items.popularity)
    n_popular = max(10, n // 5)
    counts, last, exclude = customers.counts, customers.last, customers.exclude
    neighbour_ids, neighbour_weights = items.neighbour_ids, items.neighbour_weights
    no_scores = np.zeros(n_items)
    bought = np.zeros(n_items)
    bought_last = np.zeros(n_items)
    banned_mask = np.zeros(n_items, dtype=bool)
    no_items = np.empty(0, np.int64)
    parts = []
    for row in range(counts.shape[0]):
        start, end = counts.indptr[row], counts.indptr[row + 1]
        mine = counts.indices[start:end]
        mine_counts = np.asarray(counts.data[start:end], dtype=np.float64)
        mine_last = np.asarray(last.data[start:end], dtype=np.float64)
        banned = row_of(exclude, row) if exclude is not None else no_items
        banned_mask[banned] = True

        # ItemKNN: summed similarity of the neighbours of the customer's recent items.
        basis, basis_counts = mine, mine_counts
        if len(mine) > KNN_BASIS:
            recent = np.lexsort((np.arange(len(mine)), -mine_last))[:KNN_BASIS]
            basis, basis_counts = mine[recent], mine_counts[recent]
        if len(basis) and neighbour_ids is not None and neighbour_weights is not None:
            knn: np.ndarray = np.bincount(
                neighbour_ids[basis].ravel(),
                weights=(neighbour_weights[basis] * basis_counts[:, None]).ravel(),
                minlength=n_items,
            )
        else:
            knn = no_scores
        scored = np.flatnonzero(knn > 0)
        scored = scored[~banned_mask[scored]]
        scored = scored[np.lexsort((scored, -knn[scored]))][:n]
        from_knn = scored

        from_als = als_ids[row][als_ids[row] >= 0]
        order = np.lexsort((np.arange(len(mine)), -mine_last, -mine_counts))
        from_history = mine[order]
        from_history = from_history[~banned_mask[from_history]][:n]
        popular = items.popular_order[: n_popular + len(banned)]
        popular = popular[~banned_mask[popular]][:n_popular]
        stage = NO_STAGE if customers.stage is None else int(customers.stage[row])
        from_stage = no_items
        if stage != NO_STAGE and items.stage_popular_order is not None:
            from_stage = items.stage_popular_order[stage, : n_popular + len(banned)]
            from_stage = from_stage[~banned_mask[from_stage]][:n_popular]
        # The union, with a bit per source that proposed each item; ALS and ItemKNN
        # come first in ``proposed``, so their ranks are positions in it.
        sources = (from_als, from_knn, from_history, popular, from_stage)
        proposed = np.concatenate(sources)
        union, where = _union(proposed)
        proposed_by = np.zeros(len(union), np.uint8)
        np.bitwise_or.at(proposed_by, where, np.repeat(_SOURCE_BITS, [len(s) for s in sources]))
        als_rank = np.full(len(union), np.nan)
        als_rank[where[: len(from_als)]] = np.arange(1, len(from_als) + 1)
        knn_rank = np.full(len(union), np.nan)
        knn_rank[where[len(from_als) : len(from_als) + len(from_knn)]] = np.arange(
            1, len(from_knn) + 1
        )
        bought[mine] = mine_counts
        bought_last[mine] = mine_last
        parts.append(
            _Proposals(
                np.full(len(union), row, np.int64),
                union.astype(np.int64),
                (proposed_by[:, None] & _SOURCE_BITS) > 0,
                knn[union],
                als_rank,
                knn_rank,
                bought[union],
                bought_last[union],
            )
        )
        bought[mine] = 0.0
        bought_last[mine] = 0.0
        banned_mask[banned] = False
    return _Proposals.concatenate(parts)


def _propose_vectorised(
    items: ItemSide, customers: CustomerSide, n: int, als_ids: np.ndarray
) -> _Proposals:
    """The sources' union for many customers at once: each source is a set of (row,
    item) pairs ranked within its row by sorting, pairs matched by one integer key
    (row x catalogue size + item)."""
    n_items = len(items.popularity)
    n_customers = customers.counts.shape[0]
    n_popular = max(10, n // 5)
    counts, last, exclude = customers.counts, customers.last, customers.exclude
    all_rows = np.arange(n_customers, dtype=np.int64)

    history = _Pairs.of(counts)
    history_counts = np.asarray(counts.data, dtype=np.float64)
    history_last = np.asarray(last.data, dtype=np.float64)
    banned = _Pairs.of(exclude) if exclude is not None else _Pairs.empty()
    banned_keys = np.sort(banned.keys(n_items))

    def allowed(rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        return ~_contains(banned_keys, rows * n_items + chosen)

    # ALS: implicit's top-k, already filtered.
    valid = als_ids >= 0
    als_rows = np.broadcast_to(all_rows[:, None], als_ids.shape)[valid]
    als_items = als_ids[valid]
    als_rank = np.broadcast_to(np.arange(1, als_ids.shape[1] + 1), als_ids.shape)[valid]

    # ItemKNN over each customer's KNN_BASIS most recent items: one sparse product.
    by_recency = np.lexsort((np.arange(len(history.rows)), -history_last, history.rows))
    basis = by_recency[_rank_within(history.rows[by_recency], n_customers) < KNN_BASIS]
    knn_keys, knn_scores = _knn_scores(
        items, history.rows[basis], history.items[basis], history_counts[basis], n_customers
    )
    knn_rows, knn_items = knn_keys // n_items, knn_keys % n_items
    # The best n allowed of a row are among its best n + (its banned items): rank those
    # first, then drop the banned (cheaper than looking up every neighbour pair).
    most_banned = int(np.bincount(banned.rows).max()) if len(banned.rows) else 0
    positive = knn_scores > 0
    knn_rows, knn_items, _ = _top_per_row(
        knn_rows[positive],
        knn_items[positive],
        knn_scores[positive],
        n_customers,
        n + most_banned,
    )
    keep = allowed(knn_rows, knn_items)
    knn_rows, knn_items = knn_rows[keep], knn_items[keep]
    knn_rank = _rank_within(knn_rows, n_customers) + 1
    first = knn_rank <= n
    knn_rows, knn_items, knn_rank = knn_rows[first], knn_items[first], knn_rank[first]

    # Buy again: the customer's own items, most ordered first (ties: most recent).
    positions = np.flatnonzero(allowed(history.rows, history.items))
    order = positions[
        np.lexsort(
            (
                positions,
                -history_last[positions],
                -history_counts[positions],
                history.rows[positions],
            )
        )
    ]
    again_rows, again_items = history.rows[order], history.items[order]
    first = _rank_within(again_rows, n_customers) < n
    again_rows, again_items = again_rows[first], again_items[first]

    # Recent popularity, and popularity within each customer's stage.
    width = min(n_popular + most_banned, n_items)
    popular = np.broadcast_to(items.popular_order[:width], (n_customers, width))
    popular_rows, popular_items = _first_allowed(all_rows, popular, allowed, n_popular)
    stage = _stages(customers)
    staged = np.flatnonzero(stage != NO_STAGE)
    stage_rows = stage_items = np.empty(0, np.int64)
    if items.stage_popular_order is not None and len(staged):
        ranked = items.stage_popular_order[stage[staged], :width]
        stage_rows, stage_items = _first_allowed(staged, ranked, allowed, n_popular)

    # The union: sorted keys, a bit per source, ALS's and ItemKNN's ranks carried along.
    sources = (
        (als_rows, als_items, als_rank),
        (knn_rows, knn_items, knn_rank),
        (again_rows, again_items, None),
        (popular_rows, popular_items, None),
        (stage_rows, stage_items, None),
    )
    proposed = np.concatenate([r * n_items + i for r, i, _ in sources])
    bits = np.repeat(_SOURCE_BITS, [len(r) for r, _, _ in sources])
    order = np.argsort(proposed, kind="stable")
    proposed, bits = proposed[order], bits[order]
    empty = len(proposed) == 0
    starts = (
        np.empty(0, np.int64)
        if empty
        else np.flatnonzero(np.r_[True, proposed[1:] != proposed[:-1]])
    )
    union = proposed[starts]
    ranks = []
    for column, (rows_of_source, _, rank) in enumerate(sources[:2]):
        offset = sum(len(r) for r, _, _ in sources[:column])
        source_rank = np.full(len(order), np.inf)
        source_rank[offset : offset + len(rows_of_source)] = rank
        filled = source_rank[order]
        best_rank = np.minimum.reduceat(filled, starts) if not empty else filled
        ranks.append(np.where(np.isinf(best_rank), np.nan, best_rank))
    proposed_by = np.bitwise_or.reduceat(bits, starts) if not empty else bits
    history_keys = history.keys(n_items)
    by_key = np.argsort(history_keys, kind="stable")
    at = _positions(history_keys[by_key], union)
    bought = np.zeros(len(union))
    bought_last = np.zeros(len(union))
    found = at >= 0
    bought[found] = history_counts[by_key[at[found]]]
    bought_last[found] = history_last[by_key[at[found]]]
    at = _positions(knn_keys, union)
    knn_score = np.where(at >= 0, knn_scores[np.maximum(at, 0)] if len(knn_scores) else 0.0, 0.0)
    return _Proposals(
        union // n_items,
        union % n_items,
        (proposed_by[:, None] & _SOURCE_BITS) > 0,
        knn_score,
        ranks[0],
        ranks[1],
        bought,
        bought_last,
    )


def _top_per_row(
    rows: np.ndarray, chosen: np.ndarray, scores: np.ndarray, n_rows: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` best pairs of each row (score descending, ties by item), with their rank
    (1 = best), from pairs grouped by row with items ascending. One partition over a
    rows x longest-row table instead of sorting every pair."""
    if len(rows) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    within = _rank_within(rows, n_rows)
    width = int(within.max()) + 1
    table = np.full((n_rows, width), -np.inf)
    table[rows, within] = scores
    if width > n:
        picked = np.argpartition(-table, n - 1, axis=1)[:, :n]
    else:
        picked = np.broadcast_to(np.arange(width), (n_rows, width))
    picked_scores = np.take_along_axis(table, picked, axis=1)
    # Within each row: score descending, then position (= item ascending).
    order = np.lexsort((picked, -picked_scores), axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    picked_scores = np.take_along_axis(picked_scores, order, axis=1)
    real = np.isfinite(picked_scores)
    out_rows = np.broadcast_to(np.arange(n_rows)[:, None], picked.shape)[real]
    starts = np.searchsorted(rows, np.arange(n_rows))
    out_items = chosen[starts[out_rows] + picked[real]]
    ranks = np.broadcast_to(np.arange(1, picked.shape[1] + 1), picked.shape)[real]
    return out_rows.astype(np.int64), out_items.astype(np.int64), ranks.astype(np.int64)


def _stages(customers: CustomerSide) -> np.ndarray:
    n_customers = customers.counts.shape[0]
    if customers.stage is None:
        return np.full(n_customers, NO_STAGE, np.int64)
    return np.asarray(customers.stage, dtype=np.int64)


def _traits_of(customers: CustomerSide) -> _CustomerTraits:
    """Per customer row: orders, distinct items, last purchase, stage, risk, value."""
    counts, last = customers.counts, customers.last
    n_customers = counts.shape[0]
    indptr = np.asarray(counts.indptr)
    rows = np.repeat(np.arange(n_customers), np.diff(indptr))
    return _CustomerTraits(
        orders=np.bincount(
            rows, weights=np.asarray(counts.data, dtype=np.float64), minlength=n_customers
        ),
        distinct=np.diff(indptr),
        latest=_row_max(np.asarray(last.data, dtype=np.float64), indptr, n_customers),
        stage=_stages(customers),
        churn_risk=_or_nan(customers.churn_risk, n_customers),
        monetary=_or_nan(customers.monetary, n_customers),
    )


def _positions(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The position of each of ``keys`` in ``sorted_keys`` (-1 where absent)."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1)


@dataclass(frozen=True)
class _Pairs:
    """The nonzero (row, item) pairs of a row-compressed matrix, in its storage order."""

    rows: np.ndarray
    items: np.ndarray

    @classmethod
    def of(cls, matrix: Rows) -> _Pairs:
        indptr = np.asarray(matrix.indptr, dtype=np.int64)
        rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        return cls(rows, np.asarray(matrix.indices, dtype=np.int64))

    @classmethod
    def empty(cls) -> _Pairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64))

    def keys(self, n_items: int) -> np.ndarray:
        return self.rows * n_items + self.items


@dataclass(frozen=True)
class _CustomerTraits:
    """Per customer row: what the pair features repeat for each of their candidates."""

    orders: np.ndarray
    distinct: np.ndarray
    latest: np.ndarray  # NaN without purchases
    stage: np.ndarray
    churn_risk: np.ndarray
    monetary: np.ndarray


def _rank_within(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """For pairs sorted by row: each pair's position within its row (0 = first)."""
    if len(rows) == 0:
        return np.empty(0, np.int64)
    starts = np.searchsorted(rows, np.arange(n_rows))
    return np.arange(len(rows)) - starts[rows]


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def _knn_scores(
    items: ItemSide, rows: np.ndarray, basis: np.ndarray, weights: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Summed neighbour similarity x order count per (row, item), as sorted keys and
    scores: the customers' basis items (rows x items) times the item similarity, one
    sparse product."""
    n_items = len(items.popularity)
    if len(basis) == 0:
        return np.empty(0, np.int64), np.empty(0)
    chosen = sp.csr_matrix((weights, (rows, basis)), shape=(n_rows, n_items))
    product = (chosen @ items.similarity).tocsr()
    product.sum_duplicates()
    product.sort_indices()
    pair_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(product.indptr))
    keys = pair_rows * n_items + product.indices
    return keys, np.asarray(product.data, dtype=np.float64)


def _first_allowed(
    rows: np.ndarray,
    ranked: np.ndarray,
    allowed: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (``ranked``: one ranked item list per row), the first ``n`` allowed items."""
    if len(rows) == 0 or ranked.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    width = ranked.shape[1]
    pair_rows = np.repeat(np.asarray(rows, dtype=np.int64), width)
    pair_items = np.asarray(ranked, dtype=np.int64).ravel()
    keep = allowed(pair_rows, pair_items)
    pair_rows, pair_items = pair_rows[keep], pair_items[keep]
    # Rows are in order and each row's items keep their rank order: count within row.
    boundaries = np.r_[True, pair_rows[1:] != pair_rows[:-1]] if len(pair_rows) else keep[:0]
    starts = np.flatnonzero(boundaries)
    within = np.arange(len(pair_rows)) - np.repeat(starts, np.diff(np.r_[starts, len(pair_rows)]))
    first = within < n
    return pair_rows[first], pair_items[first]


def _row_max(values: np.ndarray, indptr: np.ndarray, n_rows: int) -> np.ndarray:
    out = np.full(n_rows, np.nan)
    lengths = np.diff(np.asarray(indptr))
    filled = np.flatnonzero(lengths > 0)
    if len(filled):
        out[filled] = np.maximum.reduceat(values, np.asarray(indptr)[filled])
    return out


def _or_nan(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)


def sparse_topk(scores: sp.csr_matrix, n: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Per row, the items of the ``n`` best positive entries (-1 pads), minus ``exclude``."""
    scores = scores.tocsr()
    if exclude is not None:
        scores = (scores - scores.multiply(exclude > 0)).tocsr()
        scores.eliminate_zeros()
    ids = np.full((scores.shape[0], n), -1, np.int64)
    for row in range(scores.shape[0]):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        data = scores.data[start:end]
        if len(data) == 0:
            continue
        take = min(n, len(data))
        best = np.argpartition(-data, take - 1)[:take]
        best = best[np.lexsort((scores.indices[start:end][best], -data[best]))]
        ids[row, :take] = scores.indices[start:end][best]
    return ids


# Reciprocal rank fusion's constant (Cormack, Clarke and Buettcher, 2009): a source's
# first proposal weighs 1/61, its tenth 1/70, so agreement between sources outweighs any
# one source's order.
FUSION_K = 60.0


def source_consensus(table: CandidateTable) -> np.ndarray:
    """Per pair, how strongly the sources agree on it: reciprocal rank fusion of each
    proposing source's rank (ALS, ItemKNN, the customer's own history by orders then
    recency, popularity, popularity in the stage).

    The ranker's scores tie where its trees put candidates in the same leaves (few
    rounds on a small shop); the sources' consensus then orders them, instead of the
    catalogue index, so the order of ties is the first stage's, on every machine.
    """
    features, flags = table.features, table.sources
    column = _COLUMN
    bought = np.nan_to_num(features[:, column["bought_orders"]].astype(np.float64))
    since = features[:, column["days_since_bought"]].astype(np.float64)
    # The history source's rank: most ordered first, then most recent, within the row.
    again = flags[:, SOURCE_BUY_AGAIN]
    positions = np.flatnonzero(again)
    order = positions[
        np.lexsort(
            (
                table.items[positions],
                np.nan_to_num(since[positions], nan=np.inf),
                -bought[positions],
                table.rows[positions],
            )
        )
    ]
    again_rank = np.full(len(table), np.nan)
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
    and the service serves."""
    return np.lexsort((table.items, -source_consensus(table), -scores, table.rows))


def ranked_top(table: CandidateTable, scores: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """Per customer row, the ``k`` candidates of highest score, best first (-1 pads)."""
    out = np.full((n_rows, k), -1, np.int64)
    order = ranked_order(table, scores)
    rows, picked = table.rows[order], table.items[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    ends = np.searchsorted(rows, np.arange(n_rows), side="right")
    for row in range(n_rows):
        chosen = picked[starts[row] : ends[row]][:k]
        out[row, : len(chosen)] = chosen
    return out


def _pair_features(
    items: ItemSide,
    now_s: int,
    proposals: _Proposals,
    factors: np.ndarray,
    traits: _CustomerTraits,
) -> np.ndarray:
    """The features of every candidate pair (``FEATURES`` order)."""
    rows, chosen = proposals.rows, proposals.items
    bought, bought_last = proposals.bought, proposals.bought_last
    # Column-major: each feature is written as one contiguous run.
    out = np.full((len(rows), len(FEATURES)), np.nan, dtype=np.float32, order="F")
    column = _COLUMN
    out[:, column["als_score"]] = np.einsum(
        "ij,ij->i", items.item_factors[chosen], factors[rows], dtype=np.float32
    )
    out[:, column["als_rank"]] = proposals.als_rank
    out[:, column["knn_score"]] = proposals.knn_score
    out[:, column["knn_rank"]] = proposals.knn_rank
    out[:, column["popularity"]] = items.popularity[chosen]
    out[:, column["popularity_rank"]] = items.popular_rank[chosen]
    out[:, column["popularity_trend"]] = (items.popularity[chosen] + 1.0) / (
        items.popularity_before[chosen] + 1.0
    )
    since = np.where(bought > 0, (now_s - bought_last) / DAY, np.nan)
    out[:, column["bought_orders"]] = bought
    out[:, column["days_since_bought"]] = since
    if items.cycle_days is not None:
        cycle = items.cycle_days[chosen]
        out[:, column["cycle_days"]] = cycle
        out[:, column["due_ratio"]] = since / cycle
    orders = traits.orders[rows]
    out[:, column["customer_orders"]] = orders
    out[:, column["customer_items"]] = traits.distinct[rows]
    out[:, column["customer_recency_days"]] = (now_s - traits.latest[rows]) / DAY
    out[:, column["share_of_customer"]] = bought / np.maximum(orders, 1.0)
    stage = traits.stage[rows]
    staged = stage != NO_STAGE
    if staged.any():
        out[staged, column["customer_stage"]] = stage[staged]
        if items.stage_popularity is not None and items.stage_popular_rank is not None:
            out[staged, column["stage_popularity"]] = items.stage_popularity[
                stage[staged], chosen[staged]
            ]
            out[staged, column["stage_popularity_rank"]] = items.stage_popular_rank[
                stage[staged], chosen[staged]
            ]
    out[:, column["churn_risk"]] = traits.churn_risk[rows]
    out[:, column["customer_monetary"]] = traits.monetary[rows]
    if items.price is not None:
        out[:, column["price"]] = items.price[chosen]
    return out


def _union(proposed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct items of ``proposed`` (sorted) and each entry's position among them:
    ``np.unique(..., return_inverse=True)`` without its fixed cost (measured 90 µs a
    call here, for a few dozen items)."""
    order = np.argsort(proposed, kind="stable")
    ordered = proposed[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    where = np.empty(len(ordered), dtype=np.int64)
    where[order] = np.cumsum(first) - 1
    return ordered[first], where


def row_of(matrix: Rows, row: int) -> np.ndarray:
    """The column indices of one row, without scipy's row slicing."""
    return matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]


class RowIndices:
    """Row access to a CSR matrix for implicit's top-k filter.

    implicit reads ``filter[row].indices`` once per customer; scipy's row slicing costs
    about 30 µs a row, which made the filtered ALS evaluation twice the unfiltered one.
    """

    def __init__(self, matrix: Rows) -> None:
        self._matrix = matrix

    def __getitem__(self, row: int) -> _Indices:
        return _Indices(row_of(self._matrix, row))


@dataclass(frozen=True)
class _Indices:
    indices: np.ndarray
