"""Customer order tables and features: hand-computed values, no leakage, one code path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbo.core import columns as col
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY
from nbo.data.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    OrderTable,
    build_order_table,
    customer_features,
    item_prices,
    line_values,
    typical_line_value,
)
from nbo.data.mapping import load_mapping
from nbo.data.purchases import read_purchases

AS_OF = pd.Timestamp("2026-06-30 00:00:00")
AS_OF_S = int(AS_OF.timestamp())


def _line(
    customer: str, item: str, days_before: float, order: str, quantity: float, price: float
) -> dict[str, object]:
    return {
        col.CUSTOMER_ID: customer,
        col.ITEM_ID: item,
        col.TIMESTAMP: AS_OF - pd.Timedelta(days=days_before),
        col.QUANTITY: quantity,
        col.PRICE: price,
        col.ORDER_ID: order,
    }


def _hand_built() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer "c": orders 100, 60, 40 and 10 days before AS_OF worth 10, 20, 30, 40,
    with 1, 2, 1 and 3 lines over items A, B, C, D (A twice), one line returned 50 days
    before; customer "d": one order 200 days before, and one order after AS_OF."""
    lines = [
        _line("c", "A", 100, "o1", 2, 5.0),  # 10
        _line("c", "A", 60, "o2", 1, 5.0),  # 5 + 15 = 20
        _line("c", "B", 60, "o2", 3, 5.0),
        _line("c", "C", 40, "o3", 6, 5.0),  # 30
        _line("c", "A", 10, "o4", 2, 5.0),  # 10 + 20 + 10 = 40
        _line("c", "D", 10, "o4", 4, 5.0),
        _line("c", "B", 10, "o4", 2, 5.0),
        _line("d", "A", 200, "o5", 1, 7.0),
        _line("d", "Z", -5, "o6", 1, 100.0),  # after AS_OF
    ]
    returns = pd.DataFrame(
        {col.CUSTOMER_ID: ["c", "c"], col.TIMESTAMP: [AS_OF - pd.Timedelta(days=50), AS_OF]}
    )
    return pd.DataFrame(lines), returns


def _features_of(table: OrderTable, customer: int, as_of_s: int = AS_OF_S) -> dict[str, float]:
    row = customer_features(table, as_of_s)[customer]
    return dict(zip(FEATURE_NAMES, row.tolist(), strict=True))


def test_features_of_a_hand_built_customer_equal_hand_computed_values() -> None:
    purchases, returns = _hand_built()
    table = build_order_table(purchases, IdMap(["c", "d"]), returns)

    got = _features_of(table, 0)

    # Gaps 40, 20, 30 days: mean 30, deviations 10, -10, 0.
    expected = {
        "recency_days": 10.0,
        "frequency": 4.0,
        "monetary": 100.0,
        "avg_order_value": 25.0,
        "tenure_days": 100.0,
        "gap_mean_days": 30.0,
        "gap_std_days": math.sqrt(200 / 3),
        # Recency over the rhythm: (90 days from first to last + 90 prior) / 4 orders.
        "recency_over_rhythm": 10 / (180 / 4),
        # Last 90 days: orders at 60, 40, 10; the 90 before: the one at 100.
        "orders_recent": 3.0,
        "orders_half_year": 4.0,
        "trend": math.log(4 / 2),
        "distinct_items": 4.0,
        # 1 returned line (the one at AS_OF is not before it) against 7 bought.
        "return_rate": 1 / 8,
    }
    assert set(got) == set(FEATURE_NAMES)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_a_single_order_leaves_gap_features_undefined() -> None:
    purchases, returns = _hand_built()
    table = build_order_table(purchases, IdMap(["c", "d"]), returns)

    got = _features_of(table, 1)

    assert got["frequency"] == 1 and got["monetary"] == 7.0 and got["recency_days"] == 200.0
    assert got["tenure_days"] == 200.0 and got["distinct_items"] == 1
    for name in ("gap_mean_days", "gap_std_days"):
        assert math.isnan(got[name]), name
    # The rhythm of one order is the prior gap alone: 200 days over 90.
    assert got["recency_over_rhythm"] == 200 / 90
    assert got["return_rate"] == 0.0
    # No order in the last 90 days nor in the 90 before (the one is older): no trend.
    assert got["orders_recent"] == 0 and got["trend"] == 0.0
    assert got["orders_half_year"] == 0


def test_two_orders_have_a_mean_gap_but_no_spread() -> None:
    purchases, _ = _hand_built()
    table = build_order_table(purchases, IdMap(["c"]))

    got = _features_of(table, 0, AS_OF_S - 50 * DAY)  # orders at 100 and 60 days before

    assert got["frequency"] == 2 and got["gap_mean_days"] == 40.0
    assert math.isnan(got["gap_std_days"])
    assert got["recency_days"] == 10.0
    assert got["recency_over_rhythm"] == pytest.approx(10 / ((40 + 90) / 2), rel=1e-12)


def test_a_customer_without_orders_before_the_cutoff() -> None:
    purchases, returns = _hand_built()
    table = build_order_table(purchases, IdMap(["c", "d", "nobody"]), returns)

    early = _features_of(table, 0, AS_OF_S - 150 * DAY)
    nobody = _features_of(table, 2)

    for got in (early, nobody):
        assert got["frequency"] == 0 and got["monetary"] == 0 and got["distinct_items"] == 0
        for name in ("recency_days", "tenure_days", "gap_mean_days", "trend", "orders_recent"):
            assert math.isnan(got[name]), name
        assert math.isnan(got["return_rate"])


def test_orders_are_lines_sharing_an_order_id_else_a_timestamp() -> None:
    purchases, _ = _hand_built()
    table = build_order_table(purchases, IdMap(["c", "d"]))
    assert table.indptr.tolist() == [0, 4, 6]
    assert table.lines.tolist() == [1, 2, 1, 3, 1, 1]
    assert table.value.tolist() == [10.0, 20.0, 30.0, 40.0, 7.0, 100.0]
    # New items per order: A; B; C; D (A and B seen before); then d's A and Z.
    assert table.new_items.tolist() == [1, 1, 1, 1, 1, 1]

    without_ids = purchases.drop(columns=[col.ORDER_ID, col.PRICE])
    by_time = build_order_table(without_ids, IdMap(["c", "d"]))
    assert by_time.indptr.tolist() == [0, 4, 6]
    # Without prices an order's value is its units.
    assert by_time.value.tolist() == [2.0, 4.0, 6.0, 8.0, 1.0, 1.0]


def test_time_order_within_a_customer_whatever_the_line_order() -> None:
    purchases, returns = _hand_built()
    shuffled = purchases.sample(frac=1.0, random_state=3).reset_index(drop=True)
    expected = build_order_table(purchases, IdMap(["c", "d"]), returns)

    table = build_order_table(shuffled, IdMap(["c", "d"]), returns.iloc[::-1])

    for name, array in expected.to_arrays().items():
        assert np.array_equal(array, table.to_arrays()[name]), name
    table.check(2)


def test_an_order_after_the_cutoff_never_changes_the_features() -> None:
    table = _random_table(seed=5, customers=200)
    as_of = int(np.median(table.time))
    before = customer_features(table, as_of)

    # Drop everything at or after the cutoff: the same features.
    keep = table.time < as_of
    kept_returns = table.return_time < as_of
    truncated = OrderTable(
        indptr=_indptr_of(table.indptr, keep),
        time=table.time[keep],
        value=table.value[keep],
        lines=table.lines[keep],
        new_items=table.new_items[keep],
        returns_indptr=_indptr_of(table.returns_indptr, kept_returns),
        return_time=table.return_time[kept_returns],
    )
    # And replace what is after the cutoff with wild values: still the same.
    wild = OrderTable(
        indptr=table.indptr,
        time=table.time,
        value=np.where(keep, table.value, 1e9),
        lines=np.where(keep, table.lines, 999).astype(np.int32),
        new_items=np.where(keep, table.new_items, 999).astype(np.int32),
        returns_indptr=table.returns_indptr,
        return_time=table.return_time,
    )

    assert np.array_equal(customer_features(truncated, as_of), before, equal_nan=True)
    assert np.array_equal(customer_features(wild, as_of), before, equal_nan=True)


def test_one_customer_alone_gets_exactly_the_features_it_gets_among_all() -> None:
    table = _random_table(seed=11, customers=300)
    for as_of in (int(table.time.min()), int(np.median(table.time)), int(table.time.max()) + 1):
        together = customer_features(table, as_of)
        alone = np.vstack(
            [customer_features(table.of_customer(c), as_of) for c in range(table.n_customers)]
        )
        rebuilt = np.vstack(
            [
                customer_features(
                    OrderTable.single(
                        one.time, one.value, one.lines, one.new_items, one.return_time
                    ),
                    as_of,
                )
                for one in (table.of_customer(c) for c in range(table.n_customers))
            ]
        )
        assert np.array_equal(together, alone, equal_nan=True)
        assert np.array_equal(together, rebuilt, equal_nan=True)


def test_features_of_no_customers_and_of_a_table_without_orders() -> None:
    empty = OrderTable.single(
        np.empty(0, np.int64), np.empty(0), np.empty(0, np.int32), np.empty(0, np.int32)
    )
    row = customer_features(empty, AS_OF_S)[0]
    assert row[FEATURE_INDEX["frequency"]] == 0 and math.isnan(row[FEATURE_INDEX["recency_days"]])
    nobody = build_order_table(_hand_built()[0], IdMap(np.array([], dtype=str)))
    assert customer_features(nobody, AS_OF_S).shape == (0, len(FEATURE_NAMES))


def test_an_inconsistent_table_is_refused() -> None:
    table = build_order_table(_hand_built()[0], IdMap(["c", "d"]))
    with pytest.raises(ValueError, match="one segment per customer"):
        table.check(3)
    unsorted = OrderTable(**{**table.__dict__, "time": table.time[::-1].copy()})
    with pytest.raises(ValueError, match="time order"):
        unsorted.check(2)
    assert OrderTable.from_arrays({"order_time": table.time}, 2) is None
    loaded = OrderTable.from_arrays(table.to_arrays(), 2)
    assert loaded is not None
    for name, array in table.to_arrays().items():
        assert np.array_equal(loaded.to_arrays()[name], array), name
    with pytest.raises(ValueError, match="one segment per customer"):
        OrderTable.from_arrays(table.to_arrays(), 5)


def test_line_values_prices_and_the_typical_line() -> None:
    purchases, _ = _hand_built()
    purchases.loc[1, col.PRICE] = np.nan  # item A's price is 5 elsewhere
    values = line_values(purchases)
    assert values[1] == 5.0  # one unit at A's median price
    prices = item_prices(purchases, IdMap(["A", "B", "Q", "Z"]))
    assert prices[:2].tolist() == [5.0, 5.0] and math.isnan(prices[2]) and prices[3] == 100.0
    assert typical_line_value(purchases) == float(np.median(values))
    assert typical_line_value(purchases.drop(columns=[col.PRICE])) is None
    assert np.isnan(item_prices(purchases.drop(columns=[col.PRICE]), IdMap(["A"]))).all()


def test_cleaning_keeps_the_returned_product_lines_aside(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "InvoiceNo": ["1", "C2", "C3", "4", "5"],
            # (Not "B": a non-product code in this data set.)
            "StockCode": ["A", "A", "POST", "X", "X"],
            "InvoiceDate": [
                "2011-01-01 10:00",
                "2011-01-02 10:00",
                "2011-01-02 10:00",
                "2011-01-03 10:00",
                "2011-01-04 10:00",
            ],
            "Quantity": [1, -1, -1, -2, 3],
            "UnitPrice": [1.0, 1.0, 5.0, 1.0, 1.0],
            "CustomerID": [7.0, 7.0, 7.0, 8.0, 8.0],
            "Description": ["a", "a", "post", "b", "b"],
        }
    )
    path = tmp_path / "retail.csv"
    frame.to_csv(path, index=False)

    purchases, report = read_purchases(path, load_mapping("online-retail"))

    assert report.returns is not None
    returns = report.returns.astype({col.CUSTOMER_ID: str})
    # The cancelled product line and the negative quantity; not the cancelled postage.
    assert returns[col.CUSTOMER_ID].tolist() == ["7", "8"]
    assert returns[col.TIMESTAMP].tolist() == [
        pd.Timestamp("2011-01-02 10:00"),
        pd.Timestamp("2011-01-03 10:00"),
    ]
    assert "returns" not in report.to_dict()
    table = build_order_table(purchases, IdMap(["7", "8"]), report.returns)
    assert table.returns_indptr.tolist() == [0, 1, 2]


# --- helpers -----------------------------------------------------------------------------


def _indptr_of(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept = np.concatenate([[0], np.cumsum(keep)])
    return kept[indptr].astype(np.int64)


def _random_table(seed: int, customers: int) -> OrderTable:
    """Random purchase lines of many customers (some with one order, some with none
    in a window), built through the same code as the trainer's."""
    rng = np.random.default_rng(seed)
    rows = []
    order = 0
    for c in range(customers):
        for _ in range(int(rng.integers(1, 12))):
            order += 1
            when = AS_OF - pd.Timedelta(seconds=int(rng.integers(0, 400 * DAY)))
            for _line_number in range(int(rng.integers(1, 4))):
                rows.append(
                    {
                        col.CUSTOMER_ID: f"c{c:03d}",
                        col.ITEM_ID: f"i{int(rng.integers(0, 30))}",
                        col.TIMESTAMP: when,
                        col.QUANTITY: float(rng.integers(1, 5)),
                        col.PRICE: float(rng.choice([0.5, 1.25, 3.0, 9.99])),
                        col.ORDER_ID: f"o{order}",
                    }
                )
    purchases = pd.DataFrame(rows)
    # Some lines come back up to a month later.
    returned = purchases.sample(frac=0.05, random_state=seed)
    returns = pd.DataFrame(
        {
            col.CUSTOMER_ID: returned[col.CUSTOMER_ID].to_numpy(),
            col.TIMESTAMP: returned[col.TIMESTAMP].to_numpy()
            + pd.to_timedelta(rng.integers(0, 30, len(returned)), unit="D").to_numpy(),
        }
    )
    ids = IdMap(sorted({f"c{c:03d}" for c in range(customers)}))
    return build_order_table(purchases, ids, returns)


def test_orders_of_many_customers_are_their_own_orders_in_the_order_asked() -> None:
    table = OrderTable(
        indptr=np.array([0, 2, 2, 5]),
        time=np.array([10, 20, 30, 40, 50]),
        value=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        lines=np.array([1, 1, 2, 2, 3], dtype=np.int32),
        new_items=np.array([1, 0, 2, 1, 0], dtype=np.int32),
        returns_indptr=np.array([0, 0, 1, 3]),
        return_time=np.array([15, 45, 55]),
    )
    asked = np.array([2, -1, 0, 1, 2])  # -1: a customer the model does not know
    many = table.of_customers(asked)
    assert many.indptr.tolist() == [0, 3, 3, 5, 5, 8]
    assert many.time.tolist() == [30, 40, 50, 10, 20, 30, 40, 50]
    assert many.returns_indptr.tolist() == [0, 2, 2, 2, 3, 5]
    assert many.return_time.tolist() == [45, 55, 15, 45, 55]
    one_by_one = OrderTable.concatenate(
        [table.of_customer(int(c)) if c >= 0 else table.of_customers(np.array([-1])) for c in asked]
    )
    for name in ("indptr", "time", "value", "lines", "new_items", "returns_indptr", "return_time"):
        assert getattr(many, name).tolist() == getattr(one_by_one, name).tolist()


def test_a_long_history_sums_as_numpy_sums_it() -> None:
    # The compiled features add a customer's order values as numpy's reductions do
    # (pairwise above eight values), so the features the churn model learned from the
    # numpy code's come out the same to the bit; a plain running sum would not.
    rng = np.random.default_rng(5)
    n = 300
    values = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 6, n)
    times = np.cumsum(rng.integers(1, 20 * DAY, n)).astype(np.int64)
    table = OrderTable.single(times, values, np.ones(n, np.int32), np.ones(n, np.int32))
    for orders in (3, 9, 40, 200, n):
        as_of = int(times[orders - 1]) + 1
        row = customer_features(table, as_of)[0]
        numpy_sum = float(np.add.reduceat(np.append(values[:orders], 0.0), [0, orders])[0])
        assert row[FEATURE_INDEX["monetary"]] == numpy_sum
        gaps = np.diff(times[:orders]) / DAY
        deviation = np.concatenate(
            [[0.0], gaps - (times[orders - 1] - times[0]) / DAY / (orders - 1)]
        )
        spread = float(np.add.reduceat(np.append(deviation**2, 0.0), [0, orders])[0])
        assert row[FEATURE_INDEX["gap_std_days"]] == math.sqrt(spread / (orders - 1))
    running = 0.0
    for value in values:
        running += value
    assert running != float(np.add.reduceat(np.append(values, 0.0), [0, n])[0])
