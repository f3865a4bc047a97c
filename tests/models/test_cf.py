"""ALS explanations: ``explain_items`` and ``AlsExplainer`` agree with implicit's own
``explain``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from nbo.models.cf import PARTITION_ABOVE, AlsExplainer, AlsParams, explain_items, new_als
from nbo.models.served import ServingModel


@pytest.mark.learned
@pytest.mark.parametrize("customer", ["a00", "a13", "b03", "b29"])
def test_explain_items_matches_implicit_explain(served: ServingModel, customer: str) -> None:
    index = served.customers.get(customer)
    assert index is not None
    items, confidence, _ = served.history_of(index)
    items = np.asarray(items)
    confidence = np.asarray(confidence)
    # implicit's explain indexes its matrix by userid: give it a one-row matrix and userid 0.
    row = sp.csr_matrix(
        (confidence, items, [0, len(items)]), shape=(1, len(served.items)), dtype=np.float32
    )
    targets = np.arange(len(served.items))
    for top in (1, 3, 7):
        ours = explain_items(served.als, items, confidence, targets, top=top)
        assert len(ours) == len(targets)
        for target, explanation in zip(targets.tolist(), ours, strict=True):
            _, theirs, _ = served.als.explain(0, row, target, N=top)
            assert [i for i, _ in explanation] == [int(i) for i, _ in theirs]
            # Two float32 computations of the same sums in different orders (and BLAS
            # kernels): relative to the largest contribution, not to each one, since a
            # contribution near zero carries the others' rounding error.
            expected = [v for _, v in theirs]
            scale = max((abs(v) for v in expected), default=0.0)
            assert np.allclose([v for _, v in explanation], expected, rtol=1e-4, atol=1e-4 * scale)


def test_explain_items_with_no_history_or_no_targets(served: ServingModel) -> None:
    empty = np.array([], dtype=np.int32)
    assert explain_items(served.als, empty, np.array([], np.float32), np.arange(3)) == [[], [], []]
    assert explain_items(served.als, np.array([0]), np.array([1.0], np.float32), empty) == []


def test_explanations_of_a_heavy_buyer_match_implicit_explain() -> None:
    """Above PARTITION_ABOVE purchased items the explainer partitions instead of sorting;
    the answer must not change. Random factors, 2,000 items, a buyer of 600."""
    rng = np.random.default_rng(3)
    als = new_als(AlsParams(factors=16, regularization=0.1, alpha=2.0))
    als.user_factors = rng.normal(size=(1, 16)).astype(np.float32)
    als.item_factors = rng.normal(size=(2000, 16)).astype(np.float32)
    bought = np.sort(rng.choice(2000, size=PARTITION_ABOVE * 3, replace=False))
    confidence = rng.uniform(1.0, 5.0, size=len(bought)).astype(np.float32)
    row = sp.csr_matrix((confidence, bought, [0, len(bought)]), shape=(1, 2000))
    targets = rng.choice(2000, size=10, replace=False)
    ours = AlsExplainer(als).explain(bought, confidence, targets, top=3)
    for target, explanation in zip(targets.tolist(), ours, strict=True):
        _, theirs, _ = als.explain(0, row, target, N=3)
        assert [i for i, _ in explanation] == [int(i) for i, _ in theirs]
        assert np.allclose([v for _, v in explanation], [v for _, v in theirs], rtol=1e-4)
