"""The methods the evaluation compares, as recommenders, and how they are scored: every
method ranked on the same time split, against two truths.

``all``: every item the customer bought in the holdout. ``new``: only items they had not
bought in the suppression window before the cutoff, with those items also removed from
every method's list - what the service would actually be allowed to offer.

``als_cycles`` is ALS with the service's suppression at the cutoff: its lists also leave
out every item the customer bought within its learned dead time (``nbo.models.cycles``;
the default window where the item is not rebought), on both truths. On ``all`` that shows
what suppressing costs against everything customers bought (plain ``als`` suppresses
nothing there); on ``new`` its lists leave out the union of the default window and the
dead times, since the truth already drops the window's items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk

from nbo.data.sparse import RowIndices, row_of
from nbo.evaluation.ranking_metrics import ranking_metrics
from nbo.models.cf import real_candidates
from nbo.models.cycles import ItemWindows, Repurchase
from nbo.models.popularity import popular_order, popularity_scores
from training.split import TimeSplit

Recommender = Callable[[np.ndarray, sp.csr_matrix | None], np.ndarray]
TRUTHS = ("all", "new")
# truth -> method -> metric -> value (the manifest's ``metrics``).
Metrics = dict[str, dict[str, dict[str, float]]]


def evaluation_customers(split: TimeSplit, max_customers: int | None, seed: int) -> np.ndarray:
    """Training customers with at least one holdout purchase; a seeded sample if capped."""
    sizes = np.diff(split.truth_all.indptr) + split.unknown_all
    customers = np.flatnonzero(sizes > 0)
    if max_customers is not None and len(customers) > max_customers:
        rng = np.random.default_rng(seed)
        customers = np.sort(rng.choice(customers, size=max_customers, replace=False))
    return customers


def als_recommender(model: AlternatingLeastSquares, k: int) -> Recommender:
    """ALS over the full catalogue; ``exclude`` rows are filtered like liked items."""

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        n = min(k, model.item_factors.shape[0])
        ids, scores = topk(
            model.item_factors,
            model.user_factors[customers],
            n,
            filter_query_items=None if exclude is None else RowIndices(exclude),
            num_threads=model.num_threads,
        )
        return _pad(real_candidates(ids, scores), k)

    return recommend


def popularity_recommender(popularity: np.ndarray, k: int) -> Recommender:
    """The same popular list for everyone, minus each customer's excluded items."""
    order = popular_order(popularity)

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        if exclude is None:
            return _pad(np.tile(order[:k], (len(customers), 1)), k)
        return first_allowed(order, exclude, k)

    return recommend


def first_allowed(order: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Per row of ``exclude``: the first ``k`` items of the global ``order`` it does not
    exclude (-1 where the catalogue runs out)."""
    rank = _ranks(order)
    out = np.full((exclude.shape[0], k), -1, dtype=np.int64)
    for row in range(exclude.shape[0]):
        picked = _take_allowed(order, rank, row_of(exclude, row), k)
        out[row, : len(picked)] = picked
    return out


def _take_allowed(order: np.ndarray, rank: np.ndarray, banned: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` items of ``order`` (``rank`` is its inverse) not in ``banned``."""
    if len(banned) == 0:
        return order[:k]
    window = order[: k + len(banned)]
    banned_ranks = rank[banned]
    keep = np.ones(len(window), dtype=bool)
    keep[banned_ranks[banned_ranks < len(window)]] = False
    return window[keep][:k]


def _ranks(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def buy_again_recommender(
    counts: sp.csr_matrix, last_purchase: sp.csr_matrix, popularity: np.ndarray, k: int
) -> Recommender:
    """The customer's own most-bought items (ties: most recent first), padded with popular."""
    popular = popular_order(popularity)
    popular_rank = _ranks(popular)
    nothing = np.empty(0, dtype=np.int64)

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        out = np.full((len(customers), k), -1, dtype=np.int64)
        for row, customer in enumerate(customers):
            start, end = counts.indptr[customer], counts.indptr[customer + 1]
            items = counts.indices[start:end]
            order = np.lexsort((-last_purchase.data[start:end], -counts.data[start:end]))
            ranked = items[order]
            banned = nothing if exclude is None else row_of(exclude, row)
            if len(banned):
                ranked = ranked[~np.isin(ranked, banned)]
            ranked = ranked[:k]
            if len(ranked) < k:
                skip = np.concatenate([ranked, banned])
                fill = _take_allowed(popular, popular_rank, skip, k - len(ranked))
                ranked = np.concatenate([ranked, fill])
            out[row, : len(ranked)] = ranked
        return out

    return recommend


def excluding(recommend: Recommender, always: sp.csr_matrix) -> Recommender:
    """``recommend`` that also leaves out ``always`` (rows: training customers) from every
    list, on top of whatever the evaluation excludes."""

    def wrapped(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        rows = always[customers]
        if exclude is not None:
            rows = rows.maximum(exclude).tocsr()
        return recommend(customers, rows)

    return wrapped


def cycle_suppressed(split: TimeSplit, windows: ItemWindows) -> sp.csr_matrix:
    """What a service at the cutoff suppresses when each item has its own windows
    (``nbo.models.cycles.ItemWindows``: one for a customer who bought it once, one for a
    customer who bought it in two or more orders), binary float32."""
    last, counts = split.train.last_purchase, split.train.counts
    cutoff_s = int(split.cutoff.value // 1_000_000_000)
    mask = windows.suppressed(last.indices, last.data, counts.data, cutoff_s)
    suppressed = sp.csr_matrix(
        (mask.astype(np.float32), last.indices.copy(), last.indptr.copy()), shape=last.shape
    )
    suppressed.eliminate_zeros()
    return suppressed


def suppressed_at_cutoff(
    split: TimeSplit, repurchase: Repurchase | None, default_days: int | None
) -> sp.csr_matrix:
    """What the service would suppress at the cutoff: each item for its learned dead
    time (capped at ``default_days``, ``Repurchase.windows``) when learned, the plain
    window of the split otherwise."""
    if repurchase is None:
        return split.suppressed
    return cycle_suppressed(split, repurchase.windows(default_days))


def evaluate_methods(
    split: TimeSplit,
    methods: dict[str, Recommender],
    customers: np.ndarray,
    k: int,
    on_method: Callable[[str], None] | None = None,
) -> Metrics:
    """metrics[truth][method][metric] for every method on the same customers and split."""
    results: Metrics = {truth: {} for truth in TRUTHS}
    exclude_new = split.suppressed[customers]
    truth_rows = {"all": split.truth_all[customers], "new": split.truth_new[customers]}
    sizes = {
        "all": np.diff(truth_rows["all"].indptr) + split.unknown_all[customers],
        "new": np.diff(truth_rows["new"].indptr) + split.unknown_new[customers],
    }
    for name, recommend in methods.items():
        for truth in TRUTHS:
            keep = sizes[truth] > 0
            exclude = exclude_new[keep] if truth == "new" else None
            recommended = recommend(customers[keep], exclude)
            results[truth][name] = ranking_metrics(
                recommended, truth_rows[truth][keep], sizes[truth][keep], k
            )
        if on_method is not None:
            on_method(name)
    return results


def split_popularity(split: TimeSplit, window_days: int | None) -> np.ndarray:
    """Popularity as known at the cutoff (never after it)."""
    cutoff_s = int(split.cutoff.value // 1_000_000_000)
    return popularity_scores(split.train.counts, split.train.last_purchase, cutoff_s, window_days)


def _pad(ids: np.ndarray, k: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.shape[1] < k:
        ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
    return ids
