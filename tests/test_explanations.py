"""Explanations of many offers at once equal the same reasoning done offer by offer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from nbo.explanations import Bought, _closest_bought, _OrderCounts


def test_closest_bought_is_the_purchase_adding_most_to_the_neighbour_score() -> None:
    rng = np.random.default_rng(3)
    n_items, n_customers = 30, 8
    similar = sp.random(n_items, n_items, density=0.2, random_state=4, format="csr")
    similar.data = np.round(similar.data, 1)  # ties happen: the first neighbour wins
    model = SimpleNamespace(item_side=SimpleNamespace(similar_to=similar))
    bought = []
    for _ in range(n_customers):
        items = rng.choice(n_items, size=int(rng.integers(0, 10)), replace=False)
        counts = rng.integers(1, 4, len(items)).astype(np.float32)
        bought.append(Bought(items, counts, counts))
    customers = np.repeat(np.arange(n_customers), 5)
    items = rng.integers(0, n_items, len(customers))
    closest = _closest_bought(model, _OrderCounts(bought, n_items), customers, items)  # type: ignore[arg-type]
    for c, item, found in zip(customers, items, closest, strict=True):
        dense = np.zeros(n_items)
        dense[bought[c].items] = bought[c].counts
        start, end = similar.indptr[item], similar.indptr[item + 1]
        neighbours = similar.indices[start:end]
        contribution = similar.data[start:end] * dense[neighbours]
        if len(contribution) == 0 or contribution.max() <= 0:
            assert found == -1
        else:
            assert found == neighbours[int(np.argmax(contribution))]
    assert (closest >= 0).any() and (closest == -1).any()


def test_order_counts_look_up_each_customers_own_purchases() -> None:
    bought = [
        Bought(np.array([4, 1]), np.array([2.0, 5.0]), np.ones(2)),
        Bought(np.array([], dtype=np.int64), np.array([]), np.array([])),
        Bought(np.array([1]), np.array([7.0]), np.ones(1)),
    ]
    lookup = _OrderCounts(bought, n_items=6)
    got = lookup.at(np.array([0, 0, 0, 1, 2, 2]), np.array([4, 1, 5, 1, 1, 4]))
    assert got.tolist() == [2.0, 5.0, 0.0, 0.0, 7.0, 0.0]
