"""Popularity: the honest baseline and the cold-start fallback."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from nbo.core.vocabulary import DAY


def popularity_scores(
    counts: sp.csr_matrix, last_purchase: sp.csr_matrix, as_of: int, window_days: int | None
) -> np.ndarray:
    """Per item: how many distinct customers bought it in the last ``window_days`` (all time
    when None) before ``as_of`` (unix seconds). Distinct buyers, not units, so one
    wholesaler's pallet does not make an item popular.
    """
    n_items = counts.shape[1]
    if window_days is None:
        recent = last_purchase.data > np.iinfo(np.int64).min
    else:
        recent = last_purchase.data > as_of - window_days * DAY
    buyers = np.bincount(last_purchase.indices[recent], minlength=n_items)
    return buyers.astype(np.float32)


def popular_order(scores: np.ndarray) -> np.ndarray:
    """Every item index, most popular first, ties by index (deterministic)."""
    return np.lexsort((np.arange(len(scores)), -scores))


def top_popular(scores: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` most popular items, best first, ties by index (deterministic)."""
    order = popular_order(scores)
    if exclude is not None and len(exclude):
        order = order[~np.isin(order, exclude)]
    return order[:n]


def group_popularity(counts: sp.csr_matrix, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (row) and item: the share of the group's customers who ever bought the
    item. ``groups`` holds each customer's group, -1 for none (left out).

    A share rather than a count, so a small group (the new customers) and a large one
    (the lapsed) give comparable figures to the ranker.
    """
    groups = np.asarray(groups, dtype=np.int64)
    member = np.flatnonzero(groups >= 0)
    indicator = sp.csr_matrix(
        (np.ones(len(member)), (groups[member], member)), shape=(n_groups, counts.shape[0])
    )
    bought = counts.tocsr().copy()
    bought.data = (bought.data > 0).astype(np.float64)
    buyers = np.asarray((indicator @ bought).todense(), dtype=np.float64)
    sizes = np.bincount(groups[member], minlength=n_groups).astype(np.float64)
    return (buyers / np.maximum(sizes, 1.0)[:, None]).astype(np.float32)
