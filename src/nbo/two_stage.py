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

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.lifecycle import STAGES
from nbo.models.cf import FILTERED_SCORE
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
STAGE_CODE = {name: code for code, name in enumerate(STAGES)}
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


def candidates(
    items: ItemSide, customers: CustomerSide, per_source: int, as_of_s: int | None = None
) -> CandidateTable:
    """Every source's top ``per_source`` items per customer (minus ``exclude``), unioned,
    with the features of each pair as of ``as_of_s`` (default: the item side's moment;
    the service passes its clock).

    One customer at a time over dense per-item buffers (reset after each customer):
    the same code serves one customer per request and the trainer's thousands, with no
    sparse-matrix construction per customer.
    """
    n_items = len(items.popularity)
    n_customers = customers.counts.shape[0]
    now_s = items.as_of_s if as_of_s is None else as_of_s
    n = min(per_source, n_items)
    exclude = customers.exclude
    factors = np.asarray(customers.user_factors, dtype=np.float32)
    filt = None if exclude is None else RowIndices(exclude)
    als_ids, als_scores = topk(
        items.item_factors, factors, n, filter_query_items=filt, num_threads=1
    )
    als_ids = np.where(als_scores > FILTERED_SCORE, als_ids, -1)
    n_popular = max(10, n // 5)
    neighbour_ids, neighbour_weights = items.neighbour_ids, items.neighbour_weights
    counts, last = customers.counts, customers.last
    # Dense buffers over the catalogue, written for one customer and reset after it.
    no_scores = np.zeros(n_items)
    bought = np.zeros(n_items)
    bought_last = np.zeros(n_items)
    banned_mask = np.zeros(n_items, dtype=bool)
    no_items = np.empty(0, np.int64)

    rows_out, items_out, flags_out, features_out = [], [], [], []
    for row in range(n_customers):
        start, end = counts.indptr[row], counts.indptr[row + 1]
        mine = counts.indices[start:end]
        mine_counts = np.asarray(counts.data[start:end], dtype=np.float64)
        mine_last = np.asarray(last.data[start:end], dtype=np.float64)
        banned = row_of(exclude, row) if exclude is not None else np.empty(0, np.int32)
        banned_mask[banned] = True

        # ItemKNN: summed similarity of the neighbours of the customer's recent items.
        basis, basis_counts = mine, mine_counts
        if len(mine) > KNN_BASIS:
            recent = np.argpartition(-mine_last, KNN_BASIS - 1)[:KNN_BASIS]
            basis, basis_counts = mine[recent], mine_counts[recent]
        if len(basis):
            assert neighbour_ids is not None and neighbour_weights is not None
            knn: np.ndarray = np.bincount(
                neighbour_ids[basis].ravel(),
                weights=(neighbour_weights[basis] * basis_counts[:, None]).ravel(),
                minlength=n_items,
            )
        else:
            knn = no_scores
        scored = np.flatnonzero(knn > 0)
        scored = scored[~banned_mask[scored]]
        if len(scored) > n:
            best = np.argpartition(-knn[scored], n - 1)[:n]
            scored = scored[best]
        from_knn = scored[np.lexsort((scored, -knn[scored]))]

        from_als = als_ids[row][als_ids[row] >= 0]
        order = np.lexsort((-mine_last, -mine_counts))
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
        flags = (proposed_by[:, None] & _SOURCE_BITS) > 0
        als_rank = np.full(len(union), np.nan, np.float32)
        als_rank[where[: len(from_als)]] = np.arange(1, len(from_als) + 1)
        knn_rank = np.full(len(union), np.nan, np.float32)
        knn_rank[where[len(from_als) : len(from_als) + len(from_knn)]] = np.arange(
            1, len(from_knn) + 1
        )

        bought[mine] = mine_counts
        bought_last[mine] = mine_last
        features_out.append(
            _features(
                items,
                now_s,
                union,
                factors[row],
                knn[union],
                als_rank,
                knn_rank,
                bought[union],
                bought_last[union],
                float(mine_counts.sum()),
                len(mine),
                float(mine_last.max()) if len(mine) else None,
                stage,
                _value_of(customers.churn_risk, row),
                _value_of(customers.monetary, row),
            )
        )
        rows_out.append(np.full(len(union), row, np.int64))
        items_out.append(union)
        flags_out.append(flags)
        # Reset what this customer wrote.
        bought[mine] = 0.0
        bought_last[mine] = 0.0
        banned_mask[banned] = False

    if not rows_out:
        empty = np.empty(0, np.int64)
        return CandidateTable(
            empty,
            empty,
            np.empty((0, len(FEATURES)), np.float32),
            np.empty((0, len(SOURCES)), bool),
        )
    return CandidateTable(
        np.concatenate(rows_out),
        np.concatenate(items_out),
        np.concatenate(features_out),
        np.concatenate(flags_out),
    )


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


def ranked_top(table: CandidateTable, scores: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """Per customer row, the ``k`` candidates of highest score, best first (-1 pads)."""
    out = np.full((n_rows, k), -1, np.int64)
    order = np.lexsort((table.items, -scores, table.rows))
    rows, picked = table.rows[order], table.items[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    ends = np.searchsorted(rows, np.arange(n_rows), side="right")
    for row in range(n_rows):
        chosen = picked[starts[row] : ends[row]][:k]
        out[row, : len(chosen)] = chosen
    return out


def _features(
    items: ItemSide,
    now_s: int,
    union: np.ndarray,
    factors: np.ndarray,
    knn_score: np.ndarray,
    als_rank: np.ndarray,
    knn_rank: np.ndarray,
    bought: np.ndarray,
    bought_last: np.ndarray,
    orders: float,
    distinct: int,
    latest: float | None,
    stage: int,
    churn_risk: float,
    monetary: float,
) -> np.ndarray:
    """The features of one customer's candidates (``FEATURES`` order)."""
    # Column-major: each feature is written as one contiguous run.
    out = np.full((len(union), len(FEATURES)), np.nan, dtype=np.float32, order="F")
    column = _COLUMN
    out[:, column["als_score"]] = items.item_factors[union] @ factors
    out[:, column["als_rank"]] = als_rank
    out[:, column["knn_score"]] = knn_score
    out[:, column["knn_rank"]] = knn_rank
    out[:, column["popularity"]] = items.popularity[union]
    out[:, column["popularity_rank"]] = items.popular_rank[union]
    out[:, column["popularity_trend"]] = (items.popularity[union] + 1.0) / (
        items.popularity_before[union] + 1.0
    )
    since = np.where(bought > 0, (now_s - bought_last) / DAY, np.nan)
    out[:, column["bought_orders"]] = bought
    out[:, column["days_since_bought"]] = since
    if items.cycle_days is not None:
        cycle = items.cycle_days[union]
        out[:, column["cycle_days"]] = cycle
        out[:, column["due_ratio"]] = since / cycle
    out[:, column["customer_orders"]] = orders
    out[:, column["customer_items"]] = distinct
    if latest is not None:
        out[:, column["customer_recency_days"]] = (now_s - latest) / DAY
    out[:, column["share_of_customer"]] = bought / max(orders, 1.0)
    if stage != NO_STAGE:
        out[:, column["customer_stage"]] = stage
        if items.stage_popularity is not None and items.stage_popular_rank is not None:
            out[:, column["stage_popularity"]] = items.stage_popularity[stage, union]
            out[:, column["stage_popularity_rank"]] = items.stage_popular_rank[stage, union]
    out[:, column["churn_risk"]] = churn_risk
    out[:, column["customer_monetary"]] = monetary
    if items.price is not None:
        out[:, column["price"]] = items.price[union]
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


def _value_of(values: np.ndarray | None, row: int) -> float:
    """One customer's figure (NaN when unknown)."""
    return float("nan") if values is None else float(values[row])


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
