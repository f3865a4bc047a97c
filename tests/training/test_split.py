"""The time split: both truths, the suppression window at its boundaries, and a holdout
longer than the data refused."""

from __future__ import annotations

import pandas as pd
import pytest
import scipy.sparse as sp

from nbo.core.errors import ConfigError
from training.split import time_split


def _split_frame() -> pd.DataFrame:
    """holdout_days=10: last purchase 2024-01-31 00:00, so the cutoff is 2024-01-21 00:00."""
    rows = [
        # c1 before the cutoff: X 3 days before, V exactly 5 days before, Y 20 days before.
        ("c1", "X", "2024-01-18 00:00"),
        ("c1", "V", "2024-01-16 00:00"),
        ("c1", "Y", "2024-01-01 00:00"),
        # c1 in the holdout: X, Y, Z, V and W (W is unknown to the training catalogue).
        ("c1", "X", "2024-01-25 00:00"),
        ("c1", "Y", "2024-01-26 00:00"),
        ("c1", "Z", "2024-01-27 00:00"),
        ("c1", "V", "2024-01-27 00:00"),
        ("c1", "W", "2024-01-28 00:00"),
        # c2: Z long before; Y exactly at the cutoff (holdout) and Z on the last day.
        ("c2", "Z", "2024-01-05 00:00"),
        ("c2", "Y", "2024-01-21 00:00"),
        ("c2", "Z", "2024-01-31 00:00"),
        # c3: only before the cutoff.
        ("c3", "Y", "2024-01-10 00:00"),
        # c9: only in the holdout (cold start).
        ("c9", "X", "2024-01-22 00:00"),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def _rows(matrix: sp.csr_matrix, items: list[str]) -> list[set[str]]:
    return [
        {items[j] for j in matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]]}
        for r in range(matrix.shape[0])
    ]


def test_time_split_truths_and_suppression_window() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=5)

    assert split.cutoff == pd.Timestamp("2024-01-21 00:00")
    assert split.train.customers.ids.tolist() == ["c1", "c2", "c3"]
    items = split.train.items.ids.tolist()
    assert items == ["V", "X", "Y", "Z"]
    # Training history: only purchases strictly before the cutoff.
    assert _rows(split.train.counts, items) == [{"X", "V", "Y"}, {"Z"}, {"Y"}]
    assert _rows(split.truth_all, items) == [{"V", "X", "Y", "Z"}, {"Y", "Z"}, set()]
    # Window [cutoff - 5 days, cutoff): X (3 days) and V (exactly 5 days) are suppressed.
    assert _rows(split.suppressed, items) == [{"X", "V"}, set(), set()]
    assert _rows(split.truth_new, items) == [{"Y", "Z"}, {"Y", "Z"}, set()]
    assert split.unknown_all.tolist() == [1, 0, 0]
    assert split.unknown_new.tolist() == [1, 0, 0]
    assert split.holdout_rows == 8
    assert split.cold_start_customers == 1


def test_time_split_suppress_everything_ever_bought() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=None)
    items = split.train.items.ids.tolist()

    assert _rows(split.suppressed, items) == [{"X", "V", "Y"}, {"Z"}, {"Y"}]
    assert _rows(split.truth_new, items) == [{"Z"}, {"Y"}, set()]


def test_time_split_zero_day_window_suppresses_nothing() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=0)
    items = split.train.items.ids.tolist()

    assert split.suppressed.nnz == 0
    assert _rows(split.truth_new, items) == _rows(split.truth_all, items)


def test_time_split_window_of_one_day_less_drops_the_boundary_item() -> None:
    # 4 days: V (bought exactly 5 days before the cutoff) is no longer suppressed.
    split = time_split(_split_frame(), holdout_days=10, suppression_days=4)
    items = split.train.items.ids.tolist()

    assert _rows(split.suppressed, items) == [{"X"}, set(), set()]
    assert _rows(split.truth_new, items) == [{"V", "Y", "Z"}, {"Y", "Z"}, set()]


def test_time_split_refuses_a_holdout_longer_than_the_data() -> None:
    # The data spans 30 days; a 100-day holdout leaves nothing to train on.
    with pytest.raises(ConfigError, match="holdout_days=100 leaves no training data"):
        time_split(_split_frame(), holdout_days=100, suppression_days=5)
