"""Two-stage offers: candidate sources, then a learned ranker over (customer, item) features.

Stage one: cheap sources each propose up to ``per_source`` items per customer: ALS, the
customer's own history ("buy again", most-ordered first), item-to-item neighbours of what
they bought (implicit's BM25 ItemKNN) and recent popularity. Stage two: a LightGBM
LambdaRank model orders the union by the features below.

One code path for the trainer (many customers at once) and the service (one customer,
with purchases posted since training folded in): the caller passes the customers' own
rows (order counts, last purchase times, taste vectors), never an index into a global
matrix, so a refolded or brand-new customer is scored exactly like a trained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.models.cf import FILTERED_SCORE

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
)
SOURCES = ("als", "knn", "buy_again", "popular")
SOURCE_ALS, SOURCE_KNN, SOURCE_BUY_AGAIN, SOURCE_POPULAR = range(4)


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

    @classmethod
    def build(
        cls,
        as_of_s: int,
        item_factors: np.ndarray,
        similarity: sp.csr_matrix,
        popularity: np.ndarray,
        popularity_before: np.ndarray,
        cycle_days: np.ndarray | None,
    ) -> ItemSide:
        order = np.lexsort((np.arange(len(popularity)), -popularity))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return cls(
            as_of_s,
            np.asarray(item_factors, dtype=np.float32),
            similarity.tocsr(),
            np.asarray(popularity, dtype=np.float64),
            np.asarray(popularity_before, dtype=np.float64),
            cycle_days,
            order,
            rank,
        )


@dataclass(frozen=True)
class CustomerSide:
    """The customers being served, one row each (rows of ``counts`` and ``last`` share
    their sparsity pattern)."""

    user_factors: np.ndarray  # customers x factors
    counts: sp.csr_matrix  # customers x items, order counts
    last: sp.csr_matrix  # customers x items, last purchase (unix s)
    exclude: sp.csr_matrix | None = None  # items never to propose (suppressed)


@dataclass(frozen=True)
class CandidateTable:
    """Candidate (customer row, item) pairs with their features, grouped by row."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray  # pairs x len(FEATURES), float32, NaN = not applicable
    sources: np.ndarray  # pairs x len(SOURCES), bool: which sources proposed the item

    def __len__(self) -> int:
        return len(self.rows)


def candidates(items: ItemSide, customers: CustomerSide, per_source: int) -> CandidateTable:
    """Every source's top ``per_source`` items per customer (minus ``exclude``), unioned,
    with the features of each pair."""
    n_items = len(items.popularity)
    n_customers = customers.counts.shape[0]
    n = min(per_source, n_items)
    exclude = customers.exclude
    filt = None if exclude is None else _RowIndices(exclude)
    als_ids, als_scores = topk(
        items.item_factors,
        np.asarray(customers.user_factors, dtype=np.float32),
        n,
        filter_query_items=filt,
        num_threads=1,
    )
    als_ids = np.where(als_scores > FILTERED_SCORE, als_ids, -1)
    knn_all = (customers.counts @ items.similarity).tocsr()
    knn_ids = sparse_topk(knn_all, n, exclude)
    n_popular = max(10, n // 5)

    rows_out, items_out, flags_out = [], [], []
    own, own_last = customers.counts, customers.last
    for row in range(n_customers):
        banned = _row(exclude, row) if exclude is not None else np.empty(0, np.int32)
        from_als = als_ids[row][als_ids[row] >= 0]
        from_knn = knn_ids[row][knn_ids[row] >= 0]
        start, end = own.indptr[row], own.indptr[row + 1]
        order = np.lexsort((-own_last.data[start:end], -own.data[start:end]))
        mine = own.indices[start:end][order]
        if len(banned):
            mine = mine[~np.isin(mine, banned)]
        mine = mine[:n]
        popular = items.popular_order[: n_popular + len(banned)]
        if len(banned):
            popular = popular[~np.isin(popular, banned)]
        popular = popular[:n_popular]
        proposed = (from_als, from_knn, mine, popular)
        union = np.unique(np.concatenate(proposed).astype(np.int64))
        flags = np.stack([np.isin(union, source) for source in proposed], axis=1)
        rows_out.append(np.full(len(union), row, np.int64))
        items_out.append(union)
        flags_out.append(flags)
    rows = np.concatenate(rows_out) if rows_out else np.empty(0, np.int64)
    picked = np.concatenate(items_out) if items_out else np.empty(0, np.int64)
    flags = np.concatenate(flags_out) if flags_out else np.empty((0, len(SOURCES)), bool)
    features = _features(items, customers, rows, picked, als_ids, knn_ids, knn_all)
    return CandidateTable(rows, picked, features, flags)


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
    customers: CustomerSide,
    rows: np.ndarray,
    picked: np.ndarray,
    als_ids: np.ndarray,
    knn_ids: np.ndarray,
    knn_all: sp.csr_matrix,
) -> np.ndarray:
    out = np.full((len(rows), len(FEATURES)), np.nan, dtype=np.float32)
    if len(rows) == 0:
        return out
    column = {name: i for i, name in enumerate(FEATURES)}
    factors = np.asarray(customers.user_factors, dtype=np.float32)
    out[:, column["als_score"]] = np.einsum("ij,ij->i", factors[rows], items.item_factors[picked])
    out[:, column["als_rank"]] = _rank_in(als_ids, rows, picked)
    out[:, column["knn_score"]] = _lookup(knn_all, rows, picked)
    out[:, column["knn_rank"]] = _rank_in(knn_ids, rows, picked)
    out[:, column["popularity"]] = items.popularity[picked]
    out[:, column["popularity_rank"]] = items.popular_rank[picked]
    out[:, column["popularity_trend"]] = (items.popularity[picked] + 1.0) / (
        items.popularity_before[picked] + 1.0
    )
    bought = _lookup(customers.counts, rows, picked)
    last = _lookup(customers.last, rows, picked)
    since = np.where(bought > 0, (items.as_of_s - last) / DAY, np.nan)
    out[:, column["bought_orders"]] = bought
    out[:, column["days_since_bought"]] = since
    if items.cycle_days is not None:
        cycle = items.cycle_days[picked]
        out[:, column["cycle_days"]] = cycle
        out[:, column["due_ratio"]] = since / cycle
    orders = np.asarray(customers.counts.sum(axis=1), dtype=np.float64).ravel()
    distinct = np.diff(customers.counts.indptr)
    latest = _row_max(customers.last)
    out[:, column["customer_orders"]] = orders[rows]
    out[:, column["customer_items"]] = distinct[rows]
    out[:, column["customer_recency_days"]] = np.where(
        latest[rows] > 0, (items.as_of_s - latest[rows]) / DAY, np.nan
    )
    out[:, column["share_of_customer"]] = bought / np.maximum(orders[rows], 1.0)
    return out


def _lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[i], cols[i]] as float64 (0 where absent), without scipy's fancy
    indexing per pair."""
    coo = matrix.tocoo()
    width = matrix.shape[1]
    keys = coo.row.astype(np.int64) * width + coo.col
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], np.asarray(coo.data, dtype=np.float64)[order]
    wanted = rows.astype(np.int64) * width + cols
    out = np.zeros(len(wanted))
    if len(keys) == 0:
        return out
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = keys[pos] == wanted
    out[hit] = values[pos[hit]]
    return out


def _row_max(matrix: sp.csr_matrix) -> np.ndarray:
    out = np.zeros(matrix.shape[0])
    nonempty = np.diff(matrix.indptr) > 0
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(
            np.asarray(matrix.data, dtype=np.float64), matrix.indptr[:-1][nonempty]
        )
    return out


def _rank_in(ids: np.ndarray, rows: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The 1-based position of each (row, item) in the rows of ``ids``; NaN if absent."""
    n = ids.shape[1]
    flat_rows = np.repeat(np.arange(ids.shape[0], dtype=np.int64), n)
    flat_items = ids.ravel()
    ranks = np.tile(np.arange(1, n + 1), ids.shape[0])
    valid = flat_items >= 0
    width = int(max(picked.max(initial=0), flat_items.max(initial=0))) + 1
    keys = flat_rows[valid] * width + flat_items[valid]
    order = np.argsort(keys)
    keys, ranks = keys[order], ranks[valid][order]
    out = np.full(len(rows), np.nan, np.float32)
    if len(keys) == 0:
        return out
    wanted = rows.astype(np.int64) * width + picked
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = keys[pos] == wanted
    out[hit] = ranks[pos[hit]]
    return out


def _row(matrix: sp.csr_matrix, row: int) -> np.ndarray:
    return matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]


class _RowIndices:
    """Row access for implicit's top-k filter without scipy's slow row slicing."""

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self._matrix = matrix

    def __getitem__(self, row: int) -> _Indices:
        return _Indices(_row(self._matrix, row))


@dataclass(frozen=True)
class _Indices:
    indices: np.ndarray
