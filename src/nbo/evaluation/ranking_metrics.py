"""Top-k ranking metrics over a full ranking of the catalogue, vectorised.

Definitions (binary relevance, k = the list length):
precision@k = hits / k; recall@k = hits / |truth|; NDCG@k = DCG / ideal DCG over
min(|truth|, k) hits; MAP@k = mean of precision at each hit / min(|truth|, k);
coverage = distinct items recommended to anyone / catalogue size.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def ranking_metrics(
    recommended: np.ndarray, truth: sp.csr_matrix, truth_sizes: np.ndarray, k: int
) -> dict[str, float]:
    """Mean metrics over the rows of ``recommended`` (n x k item indices, -1 = empty slot).

    ``truth`` holds the hittable truth per row; ``truth_sizes`` the full truth size per
    row (hittable plus items the model cannot know), used for recall and the ideal DCG.
    """
    n_rows, n_items = truth.shape
    if n_rows == 0:
        # Nobody to evaluate (e.g. no "new" purchases in the holdout): zeros, not NaN.
        zero = {f"{m}@{k}": 0.0 for m in ("precision", "recall", "ndcg", "map")}
        return {**zero, "coverage": 0.0, "customers": 0.0}
    per_row = ranking_metric_rows(recommended, truth, truth_sizes, k)
    recommended = recommended[:, :k]
    recommended_items = np.unique(recommended[recommended >= 0])
    return {
        **{name: float(np.mean(values)) for name, values in per_row.items()},
        "coverage": float(len(recommended_items) / n_items),
        "customers": float(n_rows),
    }


def ranking_metric_rows(
    recommended: np.ndarray, truth: sp.csr_matrix, truth_sizes: np.ndarray, k: int
) -> dict[str, np.ndarray]:
    """precision, recall, NDCG and MAP at ``k`` for each row (for paired comparisons)."""
    n_rows, n_items = truth.shape
    recommended = recommended[:, :k]
    valid = recommended >= 0
    keys = np.where(valid, np.arange(n_rows)[:, None] * n_items + recommended, -1)
    coo = truth.tocoo()
    truth_keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
    hits = np.isin(keys, truth_keys) & valid

    sizes = truth_sizes.astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_len = np.minimum(sizes, k).astype(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_len]
    cumulative = np.cumsum(hits, axis=1)
    precision_at_hit = np.where(hits, cumulative / np.arange(1, k + 1), 0.0)
    n_hits = hits.sum(axis=1)
    return {
        f"precision@{k}": n_hits / k,
        f"recall@{k}": n_hits / sizes,
        f"ndcg@{k}": dcg / ideal,
        f"map@{k}": precision_at_hit.sum(axis=1) / ideal_len,
    }
