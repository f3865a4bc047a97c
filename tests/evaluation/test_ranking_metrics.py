"""ranking_metrics on tiny cases computed by hand (the arithmetic is written out)."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest
import scipy.sparse as sp

from nbo.evaluation.ranking_metrics import ranking_metrics


def _truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary customer x item truth from per-row item lists."""
    data, indices, indptr = [], [], [0]
    for items in rows:
        indices.extend(items)
        data.extend([1.0] * len(items))
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices), np.array(indptr)),
        shape=(len(rows), n_items),
    )


def _recommended(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def test_one_row_one_hit_in_second_place() -> None:
    # 5 items, k = 3: list [0, 2, 4], truth {2, 3}: one hit at rank 2.
    metrics = ranking_metrics(_recommended([[0, 2, 4]]), _truth([[2, 3]], 5), np.array([2]), 3)

    assert metrics == pytest.approx(
        {
            "precision@3": 1 / 3,
            "recall@3": 1 / 2,
            # DCG = 1/log2(3); ideal = two hits at ranks 1, 2 = 1/log2(2) + 1/log2(3)
            "ndcg@3": (1 / log2(3)) / (1 / log2(2) + 1 / log2(3)),
            # precision at the hit = 1/2; divided by min(|truth|, k) = 2
            "map@3": (1 / 2) / 2,
            # 3 distinct items recommended out of 5
            "coverage": 3 / 5,
            "customers": 1.0,
        }
    )


def test_perfect_list() -> None:
    metrics = ranking_metrics(_recommended([[3, 1]]), _truth([[1, 3]], 4), np.array([2]), 2)

    assert metrics == pytest.approx(
        {
            "precision@2": 1.0,
            "recall@2": 1.0,
            "ndcg@2": 1.0,
            "map@2": 1.0,
            "coverage": 2 / 4,
            "customers": 1.0,
        }
    )


def test_two_rows_with_empty_slots_and_unknown_truth_items() -> None:
    # 6 items, k = 4.
    # row 0: [1, 5, 3, -1], truth {1, 3}, size 2 -> hits at ranks 1 and 3.
    # row 1: [0, 2, -1, -1], truth {2}, size 3 (two truth items the catalogue does not
    #        know) -> one hit at rank 2.
    recommended = _recommended([[1, 5, 3, -1], [0, 2, -1, -1]])
    truth = _truth([[1, 3], [2]], 6)
    sizes = np.array([2, 3])

    metrics = ranking_metrics(recommended, truth, sizes, 4)

    precision = [2 / 4, 1 / 4]
    recall = [2 / 2, 1 / 3]
    ndcg = [
        (1 / log2(2) + 1 / log2(4)) / (1 / log2(2) + 1 / log2(3)),
        # the ideal list has min(3, 4) = 3 hits, unknown items included
        (1 / log2(3)) / (1 / log2(2) + 1 / log2(3) + 1 / log2(4)),
    ]
    average_precision = [
        (1 / 1 + 2 / 3) / 2,
        (1 / 2) / 3,
    ]
    assert metrics == pytest.approx(
        {
            "precision@4": sum(precision) / 2,
            "recall@4": sum(recall) / 2,
            "ndcg@4": sum(ndcg) / 2,
            "map@4": sum(average_precision) / 2,
            # items 0, 1, 2, 3, 5 recommended; -1 is not an item
            "coverage": 5 / 6,
            "customers": 2.0,
        }
    )


def test_empty_slot_never_hits_the_previous_rows_last_item() -> None:
    # 3 items, k = 2. A naive key row * n_items + item makes row 1's -1 equal to
    # row 0's item 2; it must not count as a hit.
    recommended = _recommended([[2, 0], [-1, -1]])
    truth = _truth([[2], [0]], 3)

    metrics = ranking_metrics(recommended, truth, np.array([1, 1]), 2)

    assert metrics == pytest.approx(
        {
            "precision@2": (1 / 2 + 0) / 2,
            "recall@2": (1 / 1 + 0) / 2,
            "ndcg@2": (1.0 + 0) / 2,
            "map@2": (1 / 1 + 0) / 2,
            "coverage": 2 / 3,
            "customers": 2.0,
        }
    )


def test_hit_in_another_rows_truth_does_not_count() -> None:
    # Row 0 recommends item 1, which only row 1 bought.
    recommended = _recommended([[1, 2]])
    truth = _truth([[0]], 3)

    metrics = ranking_metrics(recommended, truth, np.array([1]), 2)

    assert metrics["precision@2"] == 0.0
    assert metrics["recall@2"] == 0.0
    assert metrics["ndcg@2"] == 0.0
    assert metrics["map@2"] == 0.0


def test_only_unknown_truth_items_scores_zero_not_nan() -> None:
    # Truth of size 2, none of it in the catalogue: nothing is hittable.
    recommended = _recommended([[0, 1, 2]])
    truth = _truth([[]], 4)

    metrics = ranking_metrics(recommended, truth, np.array([2]), 3)

    assert metrics == {
        "precision@3": 0.0,
        "recall@3": 0.0,
        "ndcg@3": 0.0,
        "map@3": 0.0,
        "coverage": 3 / 4,
        "customers": 1.0,
    }


def test_truth_larger_than_k_caps_the_ideal_at_k() -> None:
    # k = 2, truth {0, 1, 2, 3} (size 4): ideal DCG has min(4, 2) = 2 hits.
    recommended = _recommended([[0, 9]])
    truth = _truth([[0, 1, 2, 3]], 10)

    metrics = ranking_metrics(recommended, truth, np.array([4]), 2)

    assert metrics == pytest.approx(
        {
            "precision@2": 1 / 2,
            "recall@2": 1 / 4,
            "ndcg@2": (1 / log2(2)) / (1 / log2(2) + 1 / log2(3)),
            "map@2": (1 / 1) / 2,
            "coverage": 2 / 10,
            "customers": 1.0,
        }
    )


def test_columns_beyond_k_are_ignored() -> None:
    # The hit is in column 3, but k = 2.
    recommended = _recommended([[0, 1, 2]])
    truth = _truth([[2]], 3)

    metrics = ranking_metrics(recommended, truth, np.array([1]), 2)

    assert metrics["precision@2"] == 0.0
    assert metrics["recall@2"] == 0.0
    assert metrics["ndcg@2"] == 0.0
    assert metrics["coverage"] == pytest.approx(2 / 3)


def test_all_empty_lists() -> None:
    recommended = _recommended([[-1, -1], [-1, -1]])
    truth = _truth([[0], [1]], 2)

    metrics = ranking_metrics(recommended, truth, np.array([1, 1]), 2)

    assert metrics == {
        "precision@2": 0.0,
        "recall@2": 0.0,
        "ndcg@2": 0.0,
        "map@2": 0.0,
        "coverage": 0.0,
        "customers": 2.0,
    }


def test_coverage_counts_distinct_items_across_rows() -> None:
    # Both rows recommend items 0 and 1; item 2 appears once: 3 distinct of 4.
    recommended = _recommended([[0, 1], [1, 0], [2, 0]])
    truth = _truth([[0], [0], [0]], 4)

    metrics = ranking_metrics(recommended, truth, np.array([1, 1, 1]), 2)

    assert metrics["coverage"] == pytest.approx(3 / 4)
    # row 0: hit at 1; row 1: hit at 2; row 2: hit at 2
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / log2(3) + 1 / log2(3)) / 3)
    assert metrics["map@2"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
