"""The candidate stage's per-customer loops, compiled with numba (``nbo.models.candidates``
holds the contract and the Python side; these are its only implementation).

Why compiled: a request's candidates were about a third of ``decide`` on Online Retail,
some 300 numpy calls of a microsecond each on a few hundred numbers (the sources' sheets,
their union, the features of a hundred pairs). One pass per customer row over their
history, their excluded items and their neighbours does the same work without the calls,
and a campaign's chunk or the trainer's window is the same loop over more rows, with
scratch arrays the size of the catalogue, not customers x catalogue sheets.

Compiled when the model loads (``nbo.models.warmup``), cached on disk by numba
(``nbo.core.compiled``). Floats are
computed in the order the numpy code did (each neighbour's weight in float64, summed item
by item in catalogue order), so the scores are the same to the bit. ``error_model``
"numpy": a division by zero gives inf or NaN, as numpy's did, not an exception.
"""

from __future__ import annotations

import numpy as np

from nbo.core.compiled import kernel

# The fewest items the popularity sources propose, whatever ``n`` (``n // 5`` above it).
POPULAR_FLOOR = 10
# Bits of the sources in a pair's flags, in ``candidates.SOURCES`` order.
BIT_ALS, BIT_KNN, BIT_BUY_AGAIN, BIT_POPULAR, BIT_STAGE_POPULAR = 1, 2, 4, 8, 16
N_SOURCES = 5


@kernel
def shortlisted(  # pragma: no cover - compiled
    shortlist: np.ndarray,
    exclude_indptr: np.ndarray,
    exclude_indices: np.ndarray,
    n: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``n`` shortlisted items not excluded (-1 pads) and whether they
    are its top ``n`` (``candidates._shortlisted``)."""
    n_rows, width = shortlist.shape
    found = np.full((n_rows, n), -1, np.int64)
    complete = np.zeros(n_rows, np.bool_)
    banned = np.zeros(n_items, np.bool_)
    for r in range(n_rows):
        lo, hi = exclude_indptr[r], exclude_indptr[r + 1]
        for e in range(lo, hi):
            banned[exclude_indices[e]] = True
        taken = 0
        for c in range(width):
            item = np.int64(shortlist[r, c])
            if item < 0 or banned[item]:
                continue
            if taken < n:
                found[r, taken] = item
            taken += 1
        complete[r] = width > 0 and shortlist[r, 0] >= 0 and (taken >= n or width >= n_items)
        for e in range(lo, hi):
            banned[exclude_indices[e]] = False
    return found, complete


@kernel
def _before(
    first: np.ndarray, second: np.ndarray, third: np.ndarray, i: np.int64, j: np.int64
) -> bool:  # pragma: no cover - compiled
    """Whether position ``i`` sorts before ``j``: higher ``first``, then higher
    ``second``, then lower ``third``."""
    if first[i] != first[j]:
        return bool(first[i] > first[j])
    if second[i] != second[j]:
        return bool(second[i] > second[j])
    return bool(third[i] < third[j])


@kernel
def _nth_highest(values: np.ndarray, k: int) -> float:  # pragma: no cover - compiled
    """The ``k``-th highest of ``values`` (0 = the highest; no NaN), by quickselect:
    ``np.partition`` compiled for twenty seconds on a loaded machine, this in one."""
    a = values.copy()
    lo, hi = 0, len(a) - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return float(a[k])
    return float(a[lo])


@kernel
def _ordered(
    positions: np.ndarray, first: np.ndarray, second: np.ndarray, third: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """``positions`` (into the three keys) highest ``first`` first, then highest
    ``second``, then lowest ``third`` (unique: no ties left). One merge sort for every
    order the sources need: numba's own sorts compile once per key type and kind, and
    made this module's compilation four times as long."""
    n = len(positions)
    out = positions.copy()
    spare = np.empty(n, positions.dtype)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if _before(first, second, third, out[j], out[i]):
                    spare[k] = out[j]
                    j += 1
                else:
                    spare[k] = out[i]
                    i += 1
                k += 1
            while i < mid:
                spare[k] = out[i]
                i += 1
                k += 1
            while j < hi:
                spare[k] = out[j]
                j += 1
                k += 1
        out, spare = spare, out
        width *= 2
    return out


@kernel
def _joined(
    item: np.int64,
    source: int,
    rank: int,
    slot: np.ndarray,
    union: np.ndarray,
    ranks: np.ndarray,
    n_union: int,
) -> int:  # pragma: no cover - compiled
    """``item`` proposed by ``source`` at ``rank`` (from 1): joined to the union if no
    source proposed it yet (its ranks zeroed), its rank from that source set; returns the
    union's new size."""
    if slot[item] < 0:
        slot[item] = n_union
        union[n_union] = item
        ranks[n_union, :] = 0
        n_union += 1
    ranks[slot[item], source] = rank
    return n_union


@kernel
def propose(  # pragma: no cover - compiled
    n_items: int,
    n: int,
    als_ids: np.ndarray,
    counts_indptr: np.ndarray,
    counts_indices: np.ndarray,
    counts: np.ndarray,
    last: np.ndarray,
    recent: np.ndarray,
    has_recent: bool,
    exclude_indptr: np.ndarray,
    exclude_indices: np.ndarray,
    stage: np.ndarray,
    popular_order: np.ndarray,
    stage_popular_order: np.ndarray,
    neighbour_ids: np.ndarray,
    neighbour_weights: np.ndarray,
    knn_basis: int,
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
]:
    """The sources' union per customer row (``candidates._Proposals``' columns), and
    each pair's rank in every source (0 = not proposed by it), rows in order, items
    ascending within a row.

    Returns rows, items, flags (pairs x sources, bool), ranks (pairs x sources, int64),
    knn_score, bought, bought_last, bought_recent (NaN without ``has_recent``)."""
    n_rows = als_ids.shape[0]
    width = neighbour_ids.shape[1]
    n_popular = max(POPULAR_FLOOR, n // 5)
    per_row = als_ids.shape[1] + 2 * n + 2 * n_popular
    total = n_rows * per_row
    out_rows = np.empty(total, np.int64)
    out_items = np.empty(total, np.int64)
    out_flags = np.zeros((total, N_SOURCES), np.bool_)
    out_ranks = np.zeros((total, N_SOURCES), np.int64)
    out_knn = np.zeros(total, np.float64)
    out_bought = np.zeros(total, np.float64)
    out_last = np.zeros(total, np.float64)
    out_recent = np.zeros(total, np.float64)
    # Scratch the size of the catalogue, cleared cell by cell after each row.
    knn = np.zeros(n_items, np.float64)
    touched = np.zeros(n_items, np.bool_)
    touched_items = np.empty(n_items, np.int64)
    banned = np.zeros(n_items, np.bool_)
    slot = np.full(n_items, -1, np.int64)
    held = np.full(n_items, -1, np.int64)
    union = np.empty(per_row, np.int64)
    ranks = np.zeros((per_row, N_SOURCES), np.int64)
    has_stages = stage_popular_order.shape[0] > 0
    # Keys of the history's entries for ``_ordered``: none, and their stored position.
    no_key = np.zeros(len(counts), np.float64)
    stored = np.arange(len(counts))
    size = 0
    for r in range(n_rows):
        lo, hi = counts_indptr[r], counts_indptr[r + 1]
        ex_lo, ex_hi = exclude_indptr[r], exclude_indptr[r + 1]
        for e in range(ex_lo, ex_hi):
            banned[exclude_indices[e]] = True
        for h in range(lo, hi):
            held[counts_indices[h]] = h
        n_union = 0

        # ALS: its top-k, already filtered; the rank is the column.
        for c in range(als_ids.shape[1]):
            item = als_ids[r, c]
            if item >= 0:
                n_union = _joined(item, 0, c + 1, slot, union, ranks, n_union)

        # ItemKNN: the neighbours of the knn_basis most recent items (ties: as stored),
        # weighted by their orders, summed in catalogue order of those items.
        length = hi - lo
        basis = np.arange(lo, hi)
        if length > knn_basis:
            basis = _ordered(basis, last, no_key, stored)[:knn_basis]
        # In catalogue order (a row's items are distinct: each is found by ``held``).
        basis = held[np.sort(counts_indices[basis])]
        n_touched = 0
        for h in basis:
            item = counts_indices[h]
            weight = np.float64(counts[h])
            for j in range(width):
                neighbour = np.int64(neighbour_ids[item, j])
                knn[neighbour] += np.float64(neighbour_weights[item, j]) * weight
                if not touched[neighbour]:
                    touched[neighbour] = True
                    touched_items[n_touched] = neighbour
                    n_touched += 1
        m = 0
        for t in range(n_touched):
            item = touched_items[t]
            if banned[item]:
                knn[item] = 0.0
            elif knn[item] > 0.0:
                m += 1
        positive_items = np.empty(m, np.int64)
        positive = np.empty(m, np.float64)
        m = 0
        for t in range(n_touched):
            item = touched_items[t]
            if knn[item] > 0.0:
                positive_items[m] = item
                positive[m] = knn[item]
                m += 1
        # At or above the n-th highest (ties included), then the n best of those.
        at_least = _nth_highest(positive, n - 1) if m > n else 0.0
        order = _ordered(np.flatnonzero(positive >= at_least), positive, positive, positive_items)
        for rank in range(min(n, len(order))):
            item = positive_items[order[rank]]
            n_union = _joined(item, 1, rank + 1, slot, union, ranks, n_union)

        # Buy again: their own items, most ordered first, then most recent, then as stored.
        allowed = np.empty(length, np.int64)
        a = 0
        for h in range(lo, hi):
            if not banned[counts_indices[h]]:
                allowed[a] = h
                a += 1
        allowed = _ordered(allowed[:a], counts, last, stored)
        for rank in range(min(n, a)):
            item = np.int64(counts_indices[allowed[rank]])
            n_union = _joined(item, 2, rank + 1, slot, union, ranks, n_union)

        # Popularity, and popularity in the customer's lifecycle stage: the first
        # n_popular items of the ranked list not excluded.
        for source in range(3, 5):
            if source == 4 and (not has_stages or stage[r] < 0):
                continue
            taken = 0
            for p in range(n_items):
                if taken >= n_popular:
                    break
                if source == 3:
                    item = np.int64(popular_order[p])
                else:
                    item = np.int64(stage_popular_order[stage[r], p])
                if banned[item]:
                    continue
                taken += 1
                n_union = _joined(item, source, taken, slot, union, ranks, n_union)

        # The union, items ascending.
        chosen = np.sort(union[:n_union])
        for item in chosen:
            s = slot[item]
            out_rows[size] = r
            out_items[size] = item
            for source in range(N_SOURCES):
                out_ranks[size, source] = ranks[s, source]
                out_flags[size, source] = ranks[s, source] > 0
            out_knn[size] = knn[item]
            h = held[item]
            if h >= 0:
                out_bought[size] = counts[h]
                out_last[size] = last[h]
                out_recent[size] = recent[h] if has_recent else np.nan
            else:
                out_recent[size] = 0.0 if has_recent else np.nan
            size += 1

        # Clear the scratch.
        for item in chosen:
            slot[item] = -1
        for t in range(n_touched):
            item = touched_items[t]
            knn[item] = 0.0
            touched[item] = False
        for e in range(ex_lo, ex_hi):
            banned[exclude_indices[e]] = False
        for h in range(lo, hi):
            held[counts_indices[h]] = -1
    return (
        out_rows[:size],
        out_items[:size],
        out_flags[:size],
        out_ranks[:size],
        out_knn[:size],
        out_bought[:size],
        out_last[:size],
        out_recent[:size],
    )


# The named columns ``pair_features`` writes, in this order in its ``named`` argument.
NAMED_COLUMNS = (
    "als_score",
    "als_rank",
    "knn_score",
    "knn_rank",
    "bought_orders",
    "days_since_bought",
    "due_ratio",
    "share_of_customer",
    "basket_share",
    "gaps_since_bought",
    "recent_orders",
    "recent_basket_share",
    "stage_popularity",
    "stage_popularity_rank",
)


@kernel
def customer_traits(  # pragma: no cover - compiled
    now_s: int,
    day: int,
    fade: float,
    counts_indptr: np.ndarray,
    counts: np.ndarray,
    last: np.ndarray,
    stage: np.ndarray,
    monetary: np.ndarray,
    churn_risk: np.ndarray,
    baskets: np.ndarray,
    gap_days: np.ndarray,
    recent_orders: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per customer row, ``candidates.CUSTOMER_FEATURES`` (rows x 9, NaN = unknown) and
    their recency-weighted orders carried to the clock (``candidates._traits_of``)."""
    n_rows = len(counts_indptr) - 1
    features = np.full((n_rows, 9), np.nan)
    weighted = np.full(n_rows, np.nan)
    for r in range(n_rows):
        lo, hi = counts_indptr[r], counts_indptr[r + 1]
        orders = 0.0
        repeated = 0.0
        latest = -np.inf
        for h in range(lo, hi):
            count = np.float64(counts[h])
            orders += count
            if count >= 2:
                repeated += 1.0
            latest = max(latest, np.float64(last[h]))
        distinct = hi - lo
        features[r, 0] = orders
        features[r, 1] = distinct
        if distinct > 0:
            features[r, 2] = (now_s - latest) / day
            features[r, 6] = repeated / distinct
        features[r, 3] = monetary[r]
        if stage[r] >= 0:
            features[r, 4] = stage[r]
        features[r, 5] = churn_risk[r]
        features[r, 7] = baskets[r]
        features[r, 8] = gap_days[r]
        weighted[r] = recent_orders[r] * fade
    return features, weighted


@kernel
def _at_most_one(value: float) -> float:  # pragma: no cover - compiled
    """``np.minimum(value, 1.0)``: NaN stays NaN."""
    return value if value < 1.0 or np.isnan(value) else 1.0


@kernel
def pair_features(  # pragma: no cover - compiled
    now_s: int,
    day: int,
    fade: float,
    n_features: int,
    rows: np.ndarray,
    items: np.ndarray,
    ranks: np.ndarray,
    knn_score: np.ndarray,
    bought: np.ndarray,
    bought_last: np.ndarray,
    bought_recent: np.ndarray,
    als_score: np.ndarray,
    item_features: np.ndarray,
    item_columns: np.ndarray,
    cycle_at: int,
    traits: np.ndarray,
    customer_columns: np.ndarray,
    baskets_at: int,
    gap_at: int,
    weighted: np.ndarray,
    stage: np.ndarray,
    stage_popularity: np.ndarray,
    stage_popular_rank: np.ndarray,
    named: np.ndarray,
) -> np.ndarray:
    """The features of every pair, float32, column-major (``candidates._pair_features``):
    computed in float64 and rounded once, as the numpy code did."""
    n_pairs = len(rows)
    out = np.full((n_features, n_pairs), np.nan, np.float32)
    has_stages = stage_popularity.shape[0] > 0
    for p in range(n_pairs):
        r, item = rows[p], items[p]
        for f in range(len(item_columns)):
            out[item_columns[f], p] = item_features[item, f]
        for f in range(len(customer_columns)):
            out[customer_columns[f], p] = traits[r, f]
        out[named[0], p] = als_score[p]
        if ranks[p, 0] > 0:
            out[named[1], p] = ranks[p, 0]
        out[named[2], p] = knn_score[p]
        if ranks[p, 1] > 0:
            out[named[3], p] = ranks[p, 1]
        orders = bought[p]
        since = (now_s - bought_last[p]) / day if orders > 0 else np.nan
        out[named[4], p] = orders
        out[named[5], p] = since
        out[named[6], p] = since / item_features[item, cycle_at]
        out[named[7], p] = orders / max(traits[r, 0], 1.0)
        baskets = traits[r, baskets_at]
        if baskets > 0:
            out[named[8], p] = _at_most_one(orders / baskets)
        gap = traits[r, gap_at]
        if gap > 0:
            out[named[9], p] = since / gap
        recent = bought_recent[p] * fade
        out[named[10], p] = recent
        if weighted[r] > 0:
            out[named[11], p] = _at_most_one(recent / weighted[r])
        if has_stages and stage[r] >= 0:
            out[named[12], p] = stage_popularity[stage[r], item]
            out[named[13], p] = stage_popular_rank[stage[r], item]
    return out.T
