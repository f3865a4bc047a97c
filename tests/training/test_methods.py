"""The methods the evaluation compares: recommenders never repeat or return excluded
items; cycle-aware suppression at the cutoff; exclusions added to the evaluation's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from support import small_training_config

from nbo.models.cf import fit_als
from nbo.models.cycles import ItemWindows, learn_repurchase
from training.methods import als_recommender, cycle_suppressed, excluding, popularity_recommender
from training.split import time_split


def _split_rows() -> pd.DataFrame:
    """holdout_days=10: last purchase 2024-03-31, cutoff 2024-03-21 00:00. Five customers
    buy K every 7 days until 2024-03-15 (6 days before the cutoff: due again 1 day after
    it), and L on 2024-03-13 (8 days before the cutoff, L has no cycle)."""
    rows = []
    for c in range(5):
        for day in pd.date_range("2024-02-02", "2024-03-15", freq="7D"):
            rows.append((f"c{c}", "K", day))
        rows.append((f"c{c}", "L", pd.Timestamp("2024-03-13")))
    rows.append(("c0", "K", pd.Timestamp("2024-03-31")))
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])


def _sets(matrix: sp.csr_matrix, items: list[str]) -> list[set[str]]:
    return [
        {items[j] for j in matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]]}
        for r in range(matrix.shape[0])
    ]


@pytest.mark.parametrize("days", [0, 5, 8, 30, None])
def test_cycle_suppression_at_the_cutoff(days: int | None) -> None:
    split = time_split(_split_rows(), holdout_days=10, suppression_days=days)
    items = split.train.items.ids.tolist()
    learned = learn_repurchase(split.train_lines, min_repeat_buyers=5)
    assert items == ["K", "L"]
    assert learned.cycle_days[0] == 7.0 and np.isnan(learned.cycle_days[1])
    assert learned.dead_days[0] == 7.0 and learned.rebought.tolist() == [True, False]

    suppressed = cycle_suppressed(split, learned.windows(days))
    without = cycle_suppressed(split, ItemWindows.of_cycles(np.full(2, np.nan), days))

    # K (bought 6 days before the cutoff, every gap 7 days: dead time 7) is suppressed
    # when the window, capped by its dead time, reaches 6 days; L (8 days before, bought
    # once by everyone: not rebought) keeps the window, so only a default window of 8
    # days or more suppresses it.
    k_suppressed = days is None or days >= 6
    l_suppressed = days is None or days >= 8
    expected = {name for name, on in (("K", k_suppressed), ("L", l_suppressed)) if on}
    assert _sets(suppressed, items) == [expected] * 5
    # Without cycles it is exactly the split's own suppression window.
    assert _sets(without, items) == _sets(split.suppressed, items)


def test_excluding_adds_to_what_the_evaluation_excludes() -> None:
    recommend = popularity_recommender(np.array([4.0, 3.0, 2.0, 1.0]), 4)
    always = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    window = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    wrapped = excluding(recommend, always)
    customers = np.array([0, 1])

    assert wrapped(customers, None).tolist() == [[1, 2, 3, -1], [0, 1, 2, 3]]
    assert wrapped(customers, window).tolist() == [[2, 3, -1, -1], [0, 1, 3, -1]]
    # Rows follow the customers asked for.
    assert wrapped(np.array([1]), None).tolist() == [[0, 1, 2, 3]]


def test_recommenders_never_repeat_or_return_excluded_items() -> None:
    counts = sp.csr_matrix(np.ones((3, 4), dtype=np.float32))
    model = fit_als(counts, small_training_config().als.params())
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    customers = np.array([0, 1])
    popularity = np.array([3.0, 2.0, 1.0, 0.5], dtype=np.float32)

    for recommend in (als_recommender(model, 6), popularity_recommender(popularity, 6)):
        for ids in (recommend(customers, None), recommend(customers, exclude)):
            for row in ids:
                real = row[row >= 0]
                assert len(real) == len(set(real.tolist()))
                assert (row[len(real) :] == -1).all()
        with_exclude = recommend(customers, exclude)
        assert 0 not in with_exclude[0].tolist()
        assert sorted(with_exclude[0][with_exclude[0] >= 0].tolist()) == [1, 2, 3]
