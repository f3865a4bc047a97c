"""Popularity: the honest baseline and the cold-start fallback."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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
        recent = last_purchase.data > as_of - window_days * 86_400
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
