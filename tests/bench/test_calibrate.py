"""The figures the wholesale regime is fitted to the shared file by (bench/calibrate.py),
on a table small enough to count by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.calibrate import STATISTICS, distance, shop_statistics

START = pd.Timestamp("2024-01-01")


def _table(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [START + pd.Timedelta(days=r[2]) for r in rows],
            "order_id": [r[3] for r in rows],
        }
    )


def test_shop_statistics_count_repeats_new_items_and_orders() -> None:
    # The last line is on day 100: the test window is days 70-100, "recent" 40-70.
    table = _table(
        [
            ("a", "x", 10, "o1"),
            ("a", "y", 10, "o1"),
            ("a", "x", 50, "o2"),
            ("a", "x", 80, "o3"),
            ("a", "y", 80, "o3"),
            ("a", "z", 80, "o3"),
            ("a", "z", 80, "o3"),  # the same item twice in one order: one line
            ("b", "x", 20, "o4"),
            ("c", "w", 100, "o5"),  # new in the test window: not among its pairs
        ]
    )
    figures = shop_statistics(table)
    assert set(figures) == set(STATISTICS)
    # a's x (o2 and o3) and y (o3) reorder, of 8 distinct lines.
    assert figures["line_repeat"] == pytest.approx(3 / 8)
    # a's next items x, y, z: x and y bought before; y and z not in the 30 days before,
    # and of those y before them.
    assert figures["next_repeat"] == pytest.approx(2 / 3)
    assert figures["next_new"] == pytest.approx(2 / 3)
    assert figures["new_from_before"] == pytest.approx(1 / 2)
    assert figures["items_per_customer"] == 1
    assert figures["lines_per_order"] == 1
    assert figures["one_order"] == pytest.approx(2 / 3)
    assert figures["orders_per_customer"] == pytest.approx(5 / 3)
    assert figures["gap_days"] == 35
    assert figures["buying_now"] == pytest.approx(1 / 3)


def test_distance_is_zero_for_the_same_figures_and_weighs_double_like_half() -> None:
    target = dict.fromkeys(STATISTICS, 0.4)
    assert distance(target, target) == 0
    double = {**target, "line_repeat": 0.8}
    half = {**target, "line_repeat": 0.2}
    assert distance(double, target) == pytest.approx(math.log(2))
    assert distance(half, target) == pytest.approx(distance(double, target))
