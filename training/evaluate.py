"""Offline evaluation: every method ranked on the same time split, against two truths.

``all``: every item the customer bought in the holdout. ``new``: only items they had not
bought in the suppression window before the cutoff, with those items also removed from
every method's list - what the service would actually be allowed to offer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk

from nbo.models.cf import real_candidates
from nbo.models.popularity import popularity_scores
from training.metrics import ranking_metrics
from training.split import TimeSplit

Recommender = Callable[[np.ndarray, sp.csr_matrix | None], np.ndarray]
TRUTHS = ("all", "new")


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
        n_items = model.item_factors.shape[0]
        n = min(k, n_items)
        if exclude is None:
            empty = sp.csr_matrix((len(customers), n_items), dtype=np.float32)
            ids, scores = model.recommend(customers, empty, N=n, filter_already_liked_items=False)
        else:
            ids, scores = model.recommend(customers, exclude, N=n, filter_already_liked_items=True)
        return _pad(real_candidates(ids, scores), k)

    return recommend


def popularity_recommender(popularity: np.ndarray, k: int) -> Recommender:
    """The same popular list for everyone, minus each customer's excluded items."""
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    # Rank as a one-factor "model" so implicit's top-k applies per-customer filters in C.
    rank_score = np.empty(len(popularity), dtype=np.float32)
    rank_score[order] = np.arange(len(popularity), 0, -1, dtype=np.float32)
    item_column = rank_score[:, None].copy()

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        query = np.ones((len(customers), 1), dtype=np.float32)
        n = min(k, len(item_column))
        ids, scores = topk(item_column, query, n, filter_query_items=exclude, num_threads=0)
        return _pad(real_candidates(ids, scores), k)

    return recommend


def buy_again_recommender(
    counts: sp.csr_matrix, last_purchase: sp.csr_matrix, popularity: np.ndarray, k: int
) -> Recommender:
    """The customer's own most-bought items (ties: most recent first), padded with popular."""
    popular = np.lexsort((np.arange(len(popularity)), -popularity))

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        out = np.full((len(customers), k), -1, dtype=np.int64)
        for row, customer in enumerate(customers):
            start, end = counts.indptr[customer], counts.indptr[customer + 1]
            items = counts.indices[start:end]
            order = np.lexsort((-last_purchase.data[start:end], -counts.data[start:end]))
            ranked = items[order]
            banned = (
                exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]
                if (exclude is not None)
                else np.empty(0, dtype=np.int64)
            )
            if len(banned):
                ranked = ranked[~np.isin(ranked, banned)]
            ranked = ranked[:k]
            if len(ranked) < k:
                skip = np.concatenate([ranked, banned])
                fill = popular[: k + len(skip)]
                fill = fill[~np.isin(fill, skip)][: k - len(ranked)]
                ranked = np.concatenate([ranked, fill])
            out[row, : len(ranked)] = ranked
        return out

    return recommend


def evaluate_methods(
    split: TimeSplit,
    methods: dict[str, Recommender],
    customers: np.ndarray,
    k: int,
    on_method: Callable[[str], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """metrics[truth][method][metric] for every method on the same customers and split."""
    results: dict[str, dict[str, dict[str, float]]] = {truth: {} for truth in TRUTHS}
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
