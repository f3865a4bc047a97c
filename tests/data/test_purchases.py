"""read_purchases: canonical columns, exact cleaning counts, id and time handling, errors.

Every test builds its own small file in ``tmp_path`` so the expected answer is known by
construction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from support import write

from nbo.core import columns as col
from nbo.core.checksums import sha256_file
from nbo.core.errors import PurchaseDataError
from nbo.data.mapping import ColumnMapping, load_mapping
from nbo.data.purchases import (
    DROP_BAD_PRICE,
    DROP_CANCELLED,
    DROP_DUPLICATE,
    DROP_MISSING_ID,
    DROP_MISSING_TIMESTAMP,
    DROP_NON_PRODUCT,
    DROP_REFUSED_ID,
    DROP_REPEATED_HEADER,
    DROP_RETURN,
    DROP_RETURNED,
    FILL_PRICE,
    FILL_QUANTITY,
    RETURNED_UNITS,
    dataset_files,
    fingerprint,
    net_of_returns,
    read_purchases,
)

ONLINE_RETAIL_HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]

# (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country)
# and why each row must be kept or dropped. Rules apply in order: missing id, missing
# timestamp, cancelled, return, non-product, price, duplicate; a row is counted once, under
# the first rule that drops it.
DIRTY_ROWS = [
    # kept
    ("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850", "UK"),
    ("536365", "71053", "LANTERN", "6", "2010-12-01 08:26:00", "3.39", "17850", "UK"),
    ("536407", "00123", "ZEROS", "1", "2010-12-03 09:00:00", "2.00", "01234", "UK"),
    # missing customer or item: 2
    ("536366", "22633", "WARMER", "6", "2010-12-01 08:28:00", "1.85", "", "UK"),
    ("536367", "", "NOTHING", "6", "2010-12-01 08:34:00", "1.85", "13047", "UK"),
    # missing timestamp: 1
    ("536368", "22004", "NO TIME", "1", "", "2.00", "12583", "FR"),
    # cancelled (prefix C): 2 - the first is also a return and a non-product code
    ("C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.50", "14527", "UK"),
    ("C536383", "35004C", "SET", "-1", "2010-12-01 09:49:00", "4.65", "15311", "UK"),
    # return (quantity <= 0) without the prefix: 2
    ("536400", "22000", "RETURNED", "-3", "2010-12-02 10:00:00", "1.00", "12345", "UK"),
    ("536401", "22001", "ZERO QTY", "0", "2010-12-02 10:01:00", "1.00", "12345", "UK"),
    # non-product codes: 3
    ("536402", "POST", "POSTAGE", "3", "2010-12-02 11:00:00", "18.00", "12583", "FR"),
    ("536403", "M", "Manual", "1", "2010-12-02 11:01:00", "0.85", "12583", "FR"),
    ("536404", "BANK CHARGES", "Bank", "1", "2010-12-02 11:02:00", "15.00", "12583", "FR"),
    # price <= 0: 2
    ("536405", "22002", "FREE", "2", "2010-12-02 12:00:00", "0.00", "12583", "FR"),
    ("536406", "22003", "NEGATIVE", "2", "2010-12-02 12:01:00", "-1.50", "12583", "FR"),
    # exact duplicates of the first row: 2
    ("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850", "UK"),
    ("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850", "UK"),
]

EXPECTED_DROPPED = {
    DROP_REPEATED_HEADER: 0,
    DROP_MISSING_ID: 2,
    DROP_REFUSED_ID: 0,
    DROP_MISSING_TIMESTAMP: 1,
    DROP_CANCELLED: 2,
    DROP_RETURN: 2,
    DROP_NON_PRODUCT: 3,
    DROP_BAD_PRICE: 2,
    DROP_DUPLICATE: 2,
    DROP_RETURNED: 0,
}


def _dirty_frame() -> pd.DataFrame:
    return pd.DataFrame(DIRTY_ROWS, columns=ONLINE_RETAIL_HEADER)


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _simple_canonical(**overrides: list[object]) -> pd.DataFrame:
    data: dict[str, list[object]] = {
        "customer_id": ["c1", "c2"],
        "item_id": ["i1", "i2"],
        "timestamp": ["2024-01-01 10:00:00", "2024-01-02 11:00:00"],
        "quantity": ["1", "2"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


# --- reading and cleaning -------------------------------------------------------------


def test_csv_cleaning_report_counts_every_drop_reason(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "retail.csv", _dirty_frame())

    frame, report = read_purchases(path, load_mapping("online-retail"))

    assert report.rows_read == 17
    assert report.dropped == EXPECTED_DROPPED
    assert report.rows_kept == 3 == 17 - sum(EXPECTED_DROPPED.values())
    assert report.customers == 2
    assert report.items == 3
    assert report.first_purchase == "2010-12-01T08:26:00+00:00"
    assert report.last_purchase == "2010-12-03T09:00:00+00:00"
    assert report.path == str(path)
    assert len(frame) == 3


def test_csv_output_has_canonical_columns_sorted_by_time(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "retail.csv", _dirty_frame())

    frame, _ = read_purchases(path, load_mapping("online-retail"))

    # Canonical names in canonical order; the unmapped "Country" column is not carried.
    assert list(frame.columns) == list(col.ALL_COLUMNS)
    assert frame[col.ORDER_ID].tolist() == ["536365", "536365", "536407"]
    assert frame[col.ITEM_ID].tolist() == ["85123A", "71053", "00123"]
    assert frame[col.CUSTOMER_ID].tolist() == ["17850", "17850", "01234"]
    assert frame[col.ITEM_NAME].tolist() == ["HEART", "LANTERN", "ZEROS"]
    assert frame[col.QUANTITY].tolist() == [6.0, 6.0, 1.0]
    assert frame[col.PRICE].tolist() == [2.55, 3.39, 2.0]
    assert frame[col.TIMESTAMP].tolist() == [
        pd.Timestamp("2010-12-01 08:26:00"),
        pd.Timestamp("2010-12-01 08:26:00"),
        pd.Timestamp("2010-12-03 09:00:00"),
    ]
    assert frame[col.TIMESTAMP].dtype == np.dtype("datetime64[ns]")
    assert frame[col.QUANTITY].dtype == np.float64
    assert frame.index.tolist() == [0, 1, 2]


def test_csv_ids_stay_strings_with_leading_zeros(tmp_path: Path) -> None:
    frame = _simple_canonical(customer_id=["007", "7"], item_id=["00123", "123"])
    path = _write_csv(tmp_path / "ids.csv", frame)

    out, report = read_purchases(path, load_mapping("canonical"))

    # "007" and "7" are different customers; "00123" and "123" different items.
    assert out[col.CUSTOMER_ID].tolist() == ["007", "7"]
    assert out[col.ITEM_ID].tolist() == ["00123", "123"]
    assert report.customers == 2
    assert report.items == 2


def test_csv_timezone_offsets_become_naive_utc(tmp_path: Path) -> None:
    frame = _simple_canonical(timestamp=["2024-03-01T10:00:00+02:00", "2024-03-01T10:00:00-05:00"])
    path = _write_csv(tmp_path / "tz.csv", frame)

    out, _ = read_purchases(path, load_mapping("canonical"))

    assert out[col.TIMESTAMP].dt.tz is None
    assert out[col.TIMESTAMP].tolist() == [
        pd.Timestamp("2024-03-01 08:00:00"),
        pd.Timestamp("2024-03-01 15:00:00"),
    ]


def test_blank_quantities_and_prices_of_kept_rows_are_counted(tmp_path: Path) -> None:
    """A blank quantity counts as 1 and a blank price takes the item's median: rows kept
    with a value nbo made up, which the report did not mention (it counted drops only).
    A blank in a row dropped for another reason is not counted."""
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4", "c5"],
            "item_id": ["i1", "i2", "i3", "i4", "i5"],
            "timestamp": ["2024-01-01 10:00:00"] * 4 + [""],
            "quantity": ["", "2", "", "1", ""],
            "price": ["1.5", "", "", "2.0", ""],
        }
    )
    path = _write_csv(tmp_path / "blanks.csv", frame)

    _, report = read_purchases(path, load_mapping("canonical"))

    assert report.rows_kept == 4 and report.dropped[DROP_MISSING_TIMESTAMP] == 1
    assert report.filled == {FILL_QUANTITY: 2, FILL_PRICE: 2}
    assert report.to_dict()["filled"] == {FILL_QUANTITY: 2, FILL_PRICE: 2}

    without_prices = _write_csv(tmp_path / "no-price.csv", frame.drop(columns="price"))
    assert read_purchases(without_prices, load_mapping("canonical"))[1].filled == {FILL_QUANTITY: 2}


def test_parquet_cleaning_report_matches_csv(tmp_path: Path) -> None:
    """The same dirty rows as Parquet with real types: float customer ids with NaN (what
    the Online Retail export looks like), numeric quantity/price, tz-aware timestamps."""
    raw = _dirty_frame()
    typed = pd.DataFrame(
        {
            "InvoiceNo": raw["InvoiceNo"],
            "StockCode": raw["StockCode"].replace("", None),
            "Description": raw["Description"],
            "Quantity": raw["Quantity"].astype(int),
            "InvoiceDate": pd.to_datetime(raw["InvoiceDate"].replace("", None)).dt.tz_localize(
                "UTC"
            ),
            "UnitPrice": raw["UnitPrice"].astype(float),
            "CustomerID": pd.to_numeric(raw["CustomerID"].replace("", None)).astype(float),
            "Country": raw["Country"],
        }
    )
    assert typed["CustomerID"].dtype == np.float64
    assert typed["CustomerID"].iloc[0] == 17850.0
    path = tmp_path / "retail.parquet"
    typed.to_parquet(path, index=False)

    frame, report = read_purchases(path, load_mapping("online-retail"))

    assert report.rows_read == 17
    assert report.dropped == EXPECTED_DROPPED
    assert report.rows_kept == 3
    assert list(frame.columns) == list(col.ALL_COLUMNS)
    # 17850.0 -> "17850" (no ".0"); "01234" went through a float, so it is 1234 now.
    assert frame[col.CUSTOMER_ID].tolist() == ["17850", "17850", "1234"]
    assert frame[col.ITEM_ID].tolist() == ["85123A", "71053", "00123"]
    assert frame[col.TIMESTAMP].dt.tz is None
    assert frame[col.TIMESTAMP].tolist() == [
        pd.Timestamp("2010-12-01 08:26:00"),
        pd.Timestamp("2010-12-01 08:26:00"),
        pd.Timestamp("2010-12-03 09:00:00"),
    ]


def test_parquet_float_ids_lose_dot_zero_and_strings_keep_zeros(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": [17850.0, np.nan, 13047.0],
            "item_id": ["00123", "X1", "0042"],
            "timestamp": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-02 10:00", "2024-01-03 10:00"]
            ),
        }
    )
    path = tmp_path / "ids.parquet"
    frame.to_parquet(path, index=False)

    out, report = read_purchases(path, load_mapping("canonical"))

    assert out[col.CUSTOMER_ID].tolist() == ["17850", "13047"]
    assert out[col.ITEM_ID].tolist() == ["00123", "0042"]
    assert report.dropped[DROP_MISSING_ID] == 1
    assert report.rows_kept == 2


def test_ids_the_service_refuses_are_dropped_and_counted(tmp_path: Path) -> None:
    """A customer or item id no API path could name ("12347/consent" is read as the
    consent route of "12347"; '/' at an end; a control character) is dropped, so no
    model knows a customer whose offers, data or erasure cannot be asked for; an id
    holding '/' elsewhere, or a suffix's word alone, stays."""
    customers = ["12347/consent", "c1", "/c2", "c\x013", "shop/4", "data", "c5"]
    items = ["i1", "i2/offers", "i3", "i4", "i5", "i6", "sku/7"]
    frame = _simple_canonical(
        customer_id=customers,
        item_id=items,
        timestamp=["2024-01-01 10:00:00"] * 7,
        quantity=["1"] * 7,
    )
    frame.to_parquet(tmp_path / "ids.parquet", index=False)

    out, report = read_purchases(tmp_path / "ids.parquet", load_mapping("canonical"))

    assert out[col.CUSTOMER_ID].tolist() == ["shop/4", "data", "c5"]
    assert out[col.ITEM_ID].tolist() == ["i5", "i6", "sku/7"]
    assert report.dropped[DROP_REFUSED_ID] == 4
    assert report.rows_kept == 3 and report.customers == 3


def test_parquet_non_integral_float_ids_keep_their_decimals(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": [1.5, 2.0],
            "item_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 10:00"]),
        }
    )
    path = tmp_path / "floats.parquet"
    frame.to_parquet(path, index=False)

    out, _ = read_purchases(path, load_mapping("canonical"))

    assert out[col.CUSTOMER_ID].tolist() == ["1.5", "2.0"]


def test_parquet_timezone_aware_timestamps_become_naive_utc(tmp_path: Path) -> None:
    local = pd.to_datetime(["2024-07-01 10:00", "2024-01-15 10:00"]).tz_localize("Europe/Berlin")
    frame = pd.DataFrame({"customer_id": ["c1", "c2"], "item_id": ["i1", "i2"], "timestamp": local})
    path = tmp_path / "tz.pq"
    frame.to_parquet(path, index=False)

    out, report = read_purchases(path, load_mapping("canonical"))

    assert out[col.TIMESTAMP].dt.tz is None
    # File order is kept: July (UTC+2, summer time), then January (UTC+1).
    assert out[col.CUSTOMER_ID].tolist() == ["c1", "c2"]
    assert out[col.TIMESTAMP].tolist() == [
        pd.Timestamp("2024-07-01 08:00:00"),
        pd.Timestamp("2024-01-15 09:00:00"),
    ]
    assert report.first_purchase == "2024-01-15T09:00:00+00:00"
    assert report.last_purchase == "2024-07-01T08:00:00+00:00"  # labelled UTC


def test_canonical_mapping_has_no_cancel_or_non_product_rules(tmp_path: Path) -> None:
    """Under the canonical mapping "C..." orders and "POST" are ordinary purchases."""
    frame = _simple_canonical(item_id=["POST", "i2"])
    frame["order_id"] = ["C1", "o2"]
    path = _write_csv(tmp_path / "plain.csv", frame)

    out, report = read_purchases(path, load_mapping("canonical"))

    assert report.rows_kept == 2
    assert sum(report.dropped.values()) == 0
    assert out[col.ITEM_ID].tolist() == ["POST", "i2"]


def test_only_required_columns_is_enough(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"customer_id": ["c1"], "item_id": ["i1"], "timestamp": ["2024-01-01 10:00:00"]}
    )
    path = _write_csv(tmp_path / "minimal.csv", frame)

    out, report = read_purchases(path, load_mapping("canonical"))

    assert list(out.columns) == [col.CUSTOMER_ID, col.ITEM_ID, col.TIMESTAMP]
    assert report.rows_kept == 1


def test_report_to_dict_round_trips_the_counts(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "retail.csv", _dirty_frame())

    _, report = read_purchases(path, load_mapping("online-retail"))

    assert report.to_dict() == {
        "rows_read": 17,
        "rows_kept": 3,
        "dropped": EXPECTED_DROPPED,
        "filled": {FILL_QUANTITY: 0, FILL_PRICE: 0},
        "partly_returned": 0,
        "case_variants": {col.CUSTOMER_ID: 0, col.ITEM_ID: 0},
        "case_examples": [],
        "customers": 2,
        "items": 3,
        "first_purchase": "2010-12-01T08:26:00+00:00",
        "last_purchase": "2010-12-03T09:00:00+00:00",
    }


# --- returns and cancellations netted off the purchases ---------------------------------


def _retail_csv(tmp_path: Path, rows: list[tuple[str, str, int, str, float, str]]) -> Path:
    """An Online Retail file of (InvoiceNo, StockCode, Quantity, InvoiceDate, UnitPrice,
    CustomerID) rows."""
    frame = pd.DataFrame(
        [(o, i, "x", q, t, p, c, "UK") for o, i, q, t, p, c in rows],
        columns=ONLINE_RETAIL_HEADER,
    )
    return _write_csv(tmp_path / "retail.csv", frame)


def test_an_order_cancelled_in_full_is_no_purchase(tmp_path: Path) -> None:
    # Customer 12346 of the Online Retail file: 74,215 units ordered, the order cancelled
    # sixteen minutes later. Another customer buys the same item and keeps it.
    path = _retail_csv(
        tmp_path,
        [
            ("541431", "23166", 74215, "2011-01-18 10:01", 1.04, "12346"),
            ("C541433", "23166", -74215, "2011-01-18 10:17", 1.04, "12346"),
            ("541500", "23166", 12, "2011-01-18 11:00", 1.04, "12347"),
        ],
    )

    frame, report = read_purchases(path, load_mapping("online-retail"))

    assert frame[col.CUSTOMER_ID].tolist() == ["12347"]
    assert report.dropped[DROP_CANCELLED] == 1 and report.dropped[DROP_RETURNED] == 1
    assert report.customers == 1 and report.rows_kept == 1 and report.partly_returned == 0
    assert report.returns is not None
    assert report.returns[RETURNED_UNITS].tolist() == [74215.0]


def test_returned_units_take_back_the_latest_units_bought_before_them(tmp_path: Path) -> None:
    path = _retail_csv(
        tmp_path,
        [
            # Item A: 5 in January, 5 in March; 7 returned in April take back March's 5
            # and 2 of January's.
            ("1", "A", 5, "2011-01-10 10:00", 2.0, "7"),
            ("2", "A", 5, "2011-03-10 10:00", 2.0, "7"),
            ("C3", "A", -7, "2011-04-10 10:00", 2.0, "7"),
            # Item E: 3 returned before any was bought (bought before the file starts)
            # take nothing back from the 2 bought later.
            ("C4", "E", -3, "2011-01-05 10:00", 1.0, "7"),
            ("5", "E", 2, "2011-02-10 10:00", 1.0, "7"),
            # Item F: bought and returned at the same moment: nothing left.
            ("6", "F", 4, "2011-05-01 10:00", 1.0, "7"),
            ("7", "F", -4, "2011-05-01 10:00", 1.0, "7"),
            # Another customer's return of item A changes nothing of customer 7's.
            ("8", "A", 1, "2011-01-01 10:00", 2.0, "8"),
            ("C9", "A", -1, "2011-06-01 10:00", 2.0, "8"),
        ],
    )

    frame, report = read_purchases(path, load_mapping("online-retail"))

    kept = {
        (c, o, i): q
        for c, o, i, q in zip(
            frame[col.CUSTOMER_ID].astype(str),
            frame[col.ORDER_ID].astype(str),
            frame[col.ITEM_ID].astype(str),
            frame[col.QUANTITY],
            strict=True,
        )
    }
    assert kept == {("7", "1", "A"): 3.0, ("7", "5", "E"): 2.0}
    assert report.dropped[DROP_RETURNED] == 3  # March's A, F, customer 8's A
    assert report.partly_returned == 1


def _net_one_by_one(purchases: pd.DataFrame, returns: pd.DataFrame) -> list[float]:
    """The units each purchase line keeps, by the rule written out: returns in time
    order, each taking its units from the newest units of the customer's item bought at
    or before it."""
    left = purchases[col.QUANTITY].astype(float).tolist()
    for _, ret in returns.sort_values(col.TIMESTAMP, kind="stable").iterrows():
        units = float(ret[RETURNED_UNITS])
        mine = purchases[
            (purchases[col.CUSTOMER_ID] == ret[col.CUSTOMER_ID])
            & (purchases[col.ITEM_ID] == ret[col.ITEM_ID])
            & (purchases[col.TIMESTAMP] <= ret[col.TIMESTAMP])
        ]
        for line in mine.sort_values(col.TIMESTAMP, kind="stable").index[::-1]:
            taken = min(units, left[line])
            left[line] -= taken
            units -= taken
    return left


@pytest.mark.parametrize("seed", range(5))
def test_netting_matches_returning_the_newest_units_one_return_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")

    def lines(n: int, most: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                col.CUSTOMER_ID: pd.Categorical(rng.choice(["c1", "c2"], n), ["c1", "c2"]),
                col.ITEM_ID: pd.Categorical(rng.choice(["i1", "i2", "i3"], n), ["i1", "i2", "i3"]),
                # Few distinct days, so returns and purchases share moments.
                col.TIMESTAMP: start + pd.to_timedelta(rng.integers(0, 12, n), unit="D"),
                col.QUANTITY: rng.integers(1, most, n).astype(float),
            }
        )

    purchases = lines(40, 6)
    returns = lines(15, 9).rename(columns={col.QUANTITY: RETURNED_UNITS})

    out, taken_whole, partly = net_of_returns(purchases, returns)

    expected = _net_one_by_one(purchases, returns)
    kept = np.where(taken_whole, 0.0, out[col.QUANTITY].to_numpy())
    assert kept.tolist() == expected
    assert partly == sum(0 < e < q for e, q in zip(expected, purchases[col.QUANTITY], strict=True))


def test_without_quantities_a_cancelled_line_takes_back_one_line(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c1"],
            "item_id": ["i1", "i1", "i2", "i1"],
            "timestamp": [
                "2024-01-01 10:00",
                "2024-02-01 10:00",
                "2024-02-01 10:00",
                "2024-02-02 10:00",
            ],
            "order_id": ["o1", "o2", "o2", "X-o2"],
        }
    )
    path = _write_csv(tmp_path / "plain.csv", frame)
    mapping = load_mapping("canonical")
    mapping = replace(mapping, cleaning=replace(mapping.cleaning, cancelled_order_prefix="X-"))

    out, report = read_purchases(path, mapping)

    # The cancellation takes back February's i1; January's and February's i2 stay.
    orders = out[col.ORDER_ID].astype(str).tolist()
    assert list(zip(orders, out[col.ITEM_ID].astype(str), strict=True)) == [
        ("o1", "i1"),
        ("o2", "i2"),
    ]
    assert report.dropped[DROP_RETURNED] == 1


# --- errors ---------------------------------------------------------------------------


def test_missing_required_column_names_file_and_source_column(tmp_path: Path) -> None:
    frame = _dirty_frame().drop(columns=["CustomerID"])
    path = _write_csv(tmp_path / "no_customer.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("online-retail"))

    assert caught.value.path == str(path)
    assert caught.value.column == "CustomerID"
    message = str(caught.value)
    assert message.startswith(f"{path}: column 'CustomerID': missing required column")
    assert "customer_id" in message


def test_a_file_that_fits_a_shipped_mapping_names_its_columns_and_that_mapping(
    tmp_path: Path,
) -> None:
    """The Online Retail columns read without --mapping: the error lists the file's
    columns (not the empty list of the columns it found for the mapping) and suggests
    the shipped mapping whose columns are all there."""
    path = _write_csv(tmp_path / "retail.csv", _dirty_frame())

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert caught.value.column == "customer_id"
    assert "found []" not in message
    assert "also missing: item_id, timestamp" in message
    assert f"the file's columns are {', '.join(ONLINE_RETAIL_HEADER)};" in message
    assert message.endswith("(7 of its 7 columns are there): add --mapping online-retail")
    assert "\n" not in message


def test_the_canonical_mapping_is_suggested_for_a_canonical_file(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "canonical.csv", _simple_canonical())

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("online-retail"))

    assert caught.value.column == "CustomerID"
    assert "add --mapping canonical" in str(caught.value)


def test_a_file_that_fits_no_mapping_gets_column_flags_for_look_alikes(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "Customer Id": ["c1"],
            "order_ref": ["o1"],
            "SKU": ["i1"],
            "order_date": ["2024-01-01"],
            "qty": ["1"],
        }
    )
    path = _write_csv(tmp_path / "shop.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert "the file's columns are Customer Id, order_ref, SKU, order_date, qty;" in message
    assert (
        "try --column 'customer_id=Customer Id' --column item_id=SKU "
        "--column timestamp=order_date (chosen by their names: check them)"
    ) in message
    assert "mapping" not in message.split("; try")[1]  # no shipped mapping fits it


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_a_file_with_another_delimiter_is_said_so(tmp_path: Path, sep: str, name: str) -> None:
    """Read with commas, the header of a semicolon-delimited export is one column: the
    error says what the file seems to be instead of offering the header as a column."""
    path = tmp_path / "export.csv"
    _simple_canonical().to_csv(path, sep=sep, index=False)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert caught.value.column == "customer_id"
    assert f"the file looks {name}-delimited, and nbo reads comma-delimited CSV" in message
    assert "--column" not in message
    assert "\n" not in message


def test_a_required_column_nothing_looks_like_is_said_so(tmp_path: Path) -> None:
    frame = pd.DataFrame({"customer_id": ["c1"], "when": ["2024-01-01"], "colour": ["red"]})
    path = _write_csv(tmp_path / "odd.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert caught.value.column == "item_id"
    assert "the file's columns are customer_id, when, colour;" in message
    assert "no column looks like item_id or timestamp" in message
    assert "--column item_id=COLUMN or a mapping file (--mapping FILE)" in message


def test_a_wide_file_lists_its_first_columns_only(tmp_path: Path) -> None:
    frame = pd.DataFrame({f"extra{n:02d}": ["x"] for n in range(30)})
    path = _write_csv(tmp_path / "wide.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert "extra19, ... (10 more);" in message
    assert "extra20" not in message


def test_missing_required_column_canonical_mapping(tmp_path: Path) -> None:
    frame = _simple_canonical().drop(columns=["item_id"])
    path = _write_csv(tmp_path / "no_item.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.column == "item_id"
    assert str(path) in str(caught.value)
    assert "'item_id'" in str(caught.value)


def test_unparseable_timestamp_names_file_column_and_value(tmp_path: Path) -> None:
    frame = _simple_canonical(timestamp=["2024-01-01 10:00:00", "not a date"])
    path = _write_csv(tmp_path / "bad_time.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.path == str(path)
    assert caught.value.column == "timestamp"
    assert str(caught.value) == (
        f"{path}: column 'timestamp': 1 value(s) are not timestamps in the column's format, "
        "ISO 8601 (e.g. 'not a date' on line 3); nbo reads one format per column: give the "
        "column's format with timestamp_format in the mapping's [cleaning] table or "
        "--timestamp-format, e.g. '%d/%m/%Y %H:%M'"
    )


def test_unparseable_timestamp_uses_the_source_column_name(tmp_path: Path) -> None:
    frame = _dirty_frame()
    frame.loc[0, "InvoiceDate"] = "yesterday-ish"
    path = _write_csv(tmp_path / "bad_time.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("online-retail"))

    assert caught.value.column == "InvoiceDate"
    assert "yesterday-ish" in str(caught.value)


def test_non_numeric_quantity_names_file_and_column(tmp_path: Path) -> None:
    frame = _dirty_frame()
    frame.loc[3, "Quantity"] = "six"
    frame.loc[4, "Quantity"] = "a dozen"
    path = _write_csv(tmp_path / "bad_qty.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("online-retail"))

    assert caught.value.path == str(path)
    assert caught.value.column == "Quantity"
    assert str(caught.value) == (
        f"{path}: column 'Quantity': 2 value(s) are not numbers (e.g. 'six' on line 5)"
    )


def test_non_numeric_price_in_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "item_id": ["i1", "i2"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "price": ["1.5", "free"],
        }
    )
    path = tmp_path / "bad_price.parquet"
    frame.to_parquet(path, index=False)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.column == "price"
    assert "'free'" in str(caught.value)


def test_empty_after_cleaning_lists_the_reasons(tmp_path: Path) -> None:
    frame = _dirty_frame().iloc[6:10]  # 2 cancelled + 2 returns
    path = _write_csv(tmp_path / "only_returns.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("online-retail"))

    assert caught.value.path == str(path)
    assert str(caught.value) == (
        f"{path}: no purchases left after cleaning (2 {DROP_CANCELLED}, 2 {DROP_RETURN})"
    )


def test_header_only_csv_is_empty_after_cleaning(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("customer_id,item_id,timestamp\n", encoding="utf-8")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert str(caught.value) == f"{path}: no purchases left after cleaning (no rows)"


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: file not found"


def test_folder_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "data.csv"
    folder.mkdir()

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, load_mapping("canonical"))

    assert str(folder) in str(caught.value)
    assert "folder" in str(caught.value)


@pytest.mark.parametrize("suffix", [".xlsx", ".json", ".txt", ""])
def test_unsupported_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"purchases{suffix}"
    path.write_text("customer_id,item_id,timestamp\nc,i,2024-01-01\n", encoding="utf-8")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.path == str(path)
    assert f"unsupported file type '{suffix}'" in str(caught.value)


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "PURCHASES.CSV", _simple_canonical())

    _, report = read_purchases(path, load_mapping("canonical"))

    assert report.rows_kept == 2


@pytest.mark.parametrize("name", ["garbage.parquet", "garbage.pq"])
def test_garbage_bytes_in_parquet(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"PAR1 this is \x00\x01\x02 not a parquet file at all")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: not a readable Parquet file")


def test_csv_that_is_parquet_bytes_or_binary(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x82garbage\n\xff")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert str(caught.value).startswith(f"{path}: not a readable CSV file")


def test_zero_byte_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert str(caught.value).startswith(f"{path}: not a readable CSV file")


def test_csv_ids_written_from_a_float_column_lose_their_dot_zero(tmp_path: Path) -> None:
    path = tmp_path / "floats.csv"
    path.write_text(
        "customer_id,item_id,timestamp\n17850.0,85123A,2011-01-01\n13047.0,71053,2011-01-02\n"
    )
    frame, _ = read_purchases(path, load_mapping("canonical"))
    assert sorted(frame[col.CUSTOMER_ID]) == ["13047", "17850"]


def test_csv_ids_keep_dot_zero_when_not_every_id_has_it(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("customer_id,item_id,timestamp\n1.0,A,2011-01-01\nX7,B,2011-01-02\n")
    frame, _ = read_purchases(path, load_mapping("canonical"))
    assert sorted(frame[col.CUSTOMER_ID]) == ["1.0", "X7"]


# --- partitioned Parquet datasets (a folder, as Spark writes one) -----------------------


def _write_spark_like(folder: Path, frame: pd.DataFrame, by: str) -> Path:
    """``frame`` as Spark lays a dataset out: one hive folder per value of ``by``
    (``by=value/part-0.parquet``, the column kept only in the folder names), plus the
    bookkeeping files Spark leaves beside the data."""
    folder.mkdir()
    for value, part in frame.groupby(by, sort=True):
        partition = folder / f"{by}={value}"
        partition.mkdir()
        part.drop(columns=[by]).to_parquet(partition / "part-00000.snappy.parquet", index=False)
        (partition / ".part-00000.snappy.parquet.crc").write_bytes(b"not parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_temporary").mkdir()
    (folder / "_temporary" / "part-9.parquet").write_bytes(b"half-written, not parquet")
    return folder


def _typed_dirty_frame() -> pd.DataFrame:
    raw = _dirty_frame()
    return raw.assign(
        Quantity=raw["Quantity"].astype(int),
        UnitPrice=raw["UnitPrice"].astype(float),
        InvoiceDate=pd.to_datetime(raw["InvoiceDate"].replace("", None)),
        CustomerID=raw["CustomerID"].replace("", None),
        StockCode=raw["StockCode"].replace("", None),
    )


def test_a_partitioned_dataset_reads_as_the_same_rows_in_one_file(tmp_path: Path) -> None:
    typed = _typed_dirty_frame()
    single = tmp_path / "retail.parquet"
    typed.to_parquet(single, index=False)
    folder = _write_spark_like(tmp_path / "retail", typed, by="Country")
    mapping = load_mapping("online-retail")

    frame, report = read_purchases(folder, mapping)
    expected, expected_report = read_purchases(single, mapping)

    assert report.rows_read == 17
    assert report.dropped == EXPECTED_DROPPED
    assert report.path == str(folder)
    assert report.to_dict() == expected_report.to_dict()
    # Partitions come back one after the other (FR before UK), not in file order.
    key = [col.CUSTOMER_ID, col.ITEM_ID, col.TIMESTAMP]
    assert (
        frame[key].astype(str).sort_values(key).values.tolist()
        == expected[key].astype(str).sort_values(key).values.tolist()
    )


def test_a_hive_partition_value_can_be_a_mapped_column(tmp_path: Path) -> None:
    """The customer id lives only in the folder names (``customer_id=c1``)."""
    frame = _simple_canonical(customer_id=["c1", "c2"])
    folder = _write_spark_like(tmp_path / "by_customer", frame, by="customer_id")

    purchases, report = read_purchases(folder, load_mapping("canonical"))

    assert report.rows_kept == 2
    assert sorted(purchases[col.CUSTOMER_ID].astype(str)) == ["c1", "c2"]


def test_a_dataset_reads_only_the_mapped_columns(tmp_path: Path) -> None:
    """A column the mapping does not name is never read: here it has a different type
    in each file, which pyarrow refuses to read as one column."""
    folder = tmp_path / "wide"
    folder.mkdir()
    _simple_canonical().assign(comment=[1.5, 2.5]).to_parquet(folder / "a.parquet", index=False)
    _simple_canonical(customer_id=["c3", "c4"]).assign(comment=["late", "x"]).to_parquet(
        folder / "b.parquet", index=False
    )
    with pytest.raises(Exception, match=r"late|double|string"):
        ds.dataset(folder, format="parquet").to_table()

    _, report = read_purchases(folder, load_mapping("canonical"))

    assert report.rows_kept == 4
    assert report.customers == 4


def test_a_folder_without_parquet_files_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    _write_csv(folder / "purchases.csv", _simple_canonical())
    (folder / "_SUCCESS").write_bytes(b"")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, load_mapping("canonical"))

    assert caught.value.path == str(folder)
    assert str(caught.value) == (
        f"{folder}: is a folder without .parquet files (expected a .csv or .parquet file, "
        "or a folder of Parquet files)"
    )


def test_a_dataset_missing_a_required_column_names_the_folder_and_column(
    tmp_path: Path,
) -> None:
    frame = _simple_canonical().drop(columns=["item_id"])
    folder = _write_spark_like(tmp_path / "no_item", frame, by="quantity")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, load_mapping("canonical"))

    message = str(caught.value)
    assert caught.value.path == str(folder)
    assert caught.value.column == "item_id"
    assert "missing required column" in message
    assert "customer_id, timestamp, quantity" in message  # the dataset's columns
    assert "\n" not in message


@pytest.mark.parametrize("column", ["customer_id", "quantity"])
def test_a_dataset_whose_later_part_lacks_a_column_names_the_part(
    tmp_path: Path, column: str
) -> None:
    """pyarrow takes the schema from the first part and reads the column as empty in a
    part without it: rows silently dropped (a required column) or read without their
    quantity (an optional one). Every part is checked instead."""
    folder = tmp_path / "export"
    early = folder / "month=2024-01"
    late = folder / "month=2024-02"
    early.mkdir(parents=True)
    late.mkdir()
    _simple_canonical().to_parquet(early / "part-0.parquet", index=False)
    _simple_canonical().drop(columns=[column]).to_parquet(late / "part-0.parquet", index=False)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, load_mapping("canonical"))

    assert caught.value.path == str(folder)
    assert caught.value.column == column
    assert str(caught.value) == (
        f"{folder}: column '{column}': missing from part "
        f"{Path('month=2024-02', 'part-0.parquet')}, though other parts have it: every part "
        "needs the mapped columns"
    )


def test_a_partition_folder_counts_as_a_column_of_every_part_below_it(tmp_path: Path) -> None:
    """A mapped column kept only in the hive folder names is in every part."""
    folder = _write_spark_like(tmp_path / "by_customer", _simple_canonical(), by="customer_id")

    frame, _ = read_purchases(folder, load_mapping("canonical"))

    assert sorted(frame[col.CUSTOMER_ID]) == ["c1", "c2"]


def test_a_dataset_with_a_broken_part_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    _simple_canonical().to_parquet(folder / "part-0.parquet", index=False)
    (folder / "part-1.parquet").write_bytes(b"PAR1 this is not a parquet file")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, load_mapping("canonical"))

    assert str(caught.value).startswith(
        f"{folder}: not a readable Parquet dataset: part part-1.parquet ("
    )
    assert "\n" not in str(caught.value)


def test_a_datasets_fingerprint_follows_its_files_not_its_place(tmp_path: Path) -> None:
    first = _write_spark_like(tmp_path / "a", _simple_canonical(), by="customer_id")
    copy = _write_spark_like(tmp_path / "b", _simple_canonical(), by="customer_id")
    before = fingerprint(first)

    assert fingerprint(copy) == before
    assert fingerprint(first) != sha256_file(next(iter(dataset_files(first))))
    (first / "_SUCCESS").write_bytes(b"bookkeeping, not data")
    assert fingerprint(first) == before
    (first / "customer_id=c1" / "part-00000.snappy.parquet").rename(
        first / "customer_id=c2" / "part-00001.snappy.parquet"
    )
    assert fingerprint(first) != before


# --- timestamps: one format for the whole column -------------------------------------


def _dated_csv(path: Path, *timestamps: str) -> Path:
    """Customer c1 buying item i<n> at each of ``timestamps``, as written."""
    return write(
        path,
        "customer_id,item_id,timestamp\n"
        + "".join(f"c1,i{n},{stamp}\n" for n, stamp in enumerate(timestamps)),
    )


def _read_times(path: Path, mapping: ColumnMapping | None = None) -> list[str]:
    purchases, _ = read_purchases(path, mapping or load_mapping("canonical"))
    return [t.isoformat() for t in purchases[col.TIMESTAMP]]


def test_day_first_dates_are_read_day_first_for_the_whole_column(tmp_path: Path) -> None:
    """13/07 can only be day-first, so 03/07 is 3 July too (value by value it was 7 March)."""
    path = _dated_csv(tmp_path / "dmy.csv", "03/07/2023 10:00", "13/07/2023 10:00")

    purchases, report = read_purchases(path, load_mapping("canonical"))

    assert [t.isoformat() for t in purchases[col.TIMESTAMP]] == [
        "2023-07-03T10:00:00",
        "2023-07-13T10:00:00",
    ]
    assert report.timestamp_format == "%d/%m/%Y %H:%M"


def test_month_first_dates_are_read_month_first_for_the_whole_column(tmp_path: Path) -> None:
    """As the original Online Retail export writes them (M/D/YYYY H:MM)."""
    path = _dated_csv(tmp_path / "mdy.csv", "12/1/2010 8:26", "3/7/2011 10:00", "7/13/2011 9:05")

    assert _read_times(path) == [
        "2010-12-01T08:26:00",
        "2011-03-07T10:00:00",
        "2011-07-13T09:05:00",
    ]


def test_iso_timestamps_are_read_as_before(tmp_path: Path) -> None:
    path = _dated_csv(
        tmp_path / "iso.csv", "2023-07-03", "2023-07-13T10:00:00Z", "2023-07-14 12:00"
    )

    purchases, report = read_purchases(path, load_mapping("canonical"))

    assert [t.isoformat() for t in purchases[col.TIMESTAMP]] == [
        "2023-07-03T00:00:00",
        "2023-07-13T10:00:00",
        "2023-07-14T12:00:00",
    ]
    assert report.timestamp_format == "ISO8601"


def test_slash_dates_no_day_above_12_are_refused_without_a_format(tmp_path: Path) -> None:
    """03/07 and 04/07 read as March or as July alike: nothing in the file says which."""
    path = _dated_csv(tmp_path / "ambiguous.csv", "03/07/2023 10:00", "04/07/2023 10:00")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.column == "timestamp"
    message = str(caught.value)
    assert "'03/07/2023 10:00' on line 2" in message
    assert "%m/%d/%Y %H:%M and %d/%m/%Y %H:%M" in message
    assert "timestamp_format" in message and "--timestamp-format" in message


def test_slash_dates_whose_readings_agree_are_read(tmp_path: Path) -> None:
    """Every day equal to its month: both readings give the same dates, nothing to ask."""
    path = _dated_csv(tmp_path / "same.csv", "03/03/2023 10:00", "04/04/2023 10:00")

    assert _read_times(path) == ["2023-03-03T10:00:00", "2023-04-04T10:00:00"]


def test_a_given_format_reads_dates_the_file_leaves_ambiguous(tmp_path: Path) -> None:
    path = _dated_csv(tmp_path / "ambiguous.csv", "03/07/2023 10:00", "04/07/2023 10:00")
    mapping = load_mapping("canonical").with_overrides(timestamp_format="%d/%m/%Y %H:%M")

    purchases, report = read_purchases(path, mapping)

    assert [t.isoformat() for t in purchases[col.TIMESTAMP]] == [
        "2023-07-03T10:00:00",
        "2023-07-04T10:00:00",
    ]
    assert report.timestamp_format == "%d/%m/%Y %H:%M"


def test_a_mapping_files_timestamp_format_is_applied(tmp_path: Path) -> None:
    path = _dated_csv(tmp_path / "ambiguous.csv", "03/07/2023 10:00", "04/07/2023 10:00")
    mapping = write(tmp_path / "shop.toml", '[cleaning]\ntimestamp_format = "%m/%d/%Y %H:%M"\n')

    assert _read_times(path, load_mapping(str(mapping))) == [
        "2023-03-07T10:00:00",
        "2023-04-07T10:00:00",
    ]


def test_a_value_not_in_the_given_format_names_its_line(tmp_path: Path) -> None:
    path = _dated_csv(tmp_path / "dmy.csv", "03/07/2023 10:00", "2023-07-13 10:00")
    mapping = load_mapping("canonical").with_overrides(timestamp_format="%d/%m/%Y %H:%M")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, mapping)

    assert str(caught.value) == (
        f"{path}: column 'timestamp': 1 value(s) are not timestamps in the format given, "
        "%d/%m/%Y %H:%M (e.g. '2023-07-13 10:00' on line 3); check the format given "
        "(timestamp_format in the mapping, or --timestamp-format)"
    )


def test_a_value_in_another_format_than_the_columns_is_refused(tmp_path: Path) -> None:
    """Slash dates, then an ISO one: each was read in its own format; now the column has
    one (inferred from its first value) and the odd value out is named with its line."""
    path = _dated_csv(
        tmp_path / "mixed.csv", "13/07/2023 10:00", "14/07/2023 10:00", "2023-07-15 10:00"
    )

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert caught.value.column == "timestamp"
    assert "1 value(s) are not timestamps in the column's format, %d/%m/%Y %H:%M" in message
    assert "(inferred from its first value, '13/07/2023 10:00')" in message
    assert "(e.g. '2023-07-15 10:00' on line 4)" in message
    assert "--timestamp-format" in message


@pytest.mark.parametrize(
    ("stamps", "given"),
    [
        (("1689242400", "1689328800.5"), "unix_s"),
        (("1689242400000", "1689328800500"), "unix_ms"),
    ],
)
def test_epoch_numbers_are_read_in_the_unit_given(
    tmp_path: Path, stamps: tuple[str, str], given: str
) -> None:
    """Seconds or milliseconds since 1970 were refused as "not a timestamp nbo can read",
    with no way to read them but converting the file."""
    path = _dated_csv(tmp_path / "epoch.csv", *stamps, "")
    mapping = load_mapping("canonical").with_overrides(timestamp_format=given)

    purchases, report = read_purchases(path, mapping)

    assert [t.isoformat() for t in purchases[col.TIMESTAMP]] == [
        "2023-07-13T10:00:00",
        "2023-07-14T10:00:00.500000",
    ]
    assert report.timestamp_format == given
    assert report.dropped[DROP_MISSING_TIMESTAMP] == 1


def test_epoch_numbers_in_a_parquet_integer_column_and_a_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "epoch.parquet"
    pd.DataFrame(
        {"customer_id": ["c1", "c2"], "item_id": ["i1", "i2"], "ts": [1689242400, 1689328800]}
    ).to_parquet(path)
    mapping = write(
        tmp_path / "shop.toml",
        '[columns]\ntimestamp = "ts"\n[cleaning]\ntimestamp_format = "unix_s"\n',
    )

    assert _read_times(path, load_mapping(str(mapping))) == [
        "2023-07-13T10:00:00",
        "2023-07-14T10:00:00",
    ]


@pytest.mark.parametrize("stamps", [("1689242400", "1689328800"), ("20230713", "20230714")])
def test_numbers_without_a_format_are_refused_naming_the_option(
    tmp_path: Path, stamps: tuple[str, str]
) -> None:
    """Seconds, milliseconds and dates written as digits look alike: nothing is guessed
    (20230713 was read as a date, 1689242400 refused without a word of the epochs)."""
    path = _dated_csv(tmp_path / "numbers.csv", *stamps)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert caught.value.column == "timestamp"
    assert str(caught.value) == (
        f"{path}: column 'timestamp': its first value, '{stamps[0]}' on line 2, is a number, "
        "and a number does not say what it counts: give timestamp_format in the mapping's "
        "[cleaning] table or --timestamp-format: unix_s for seconds since 1970-01-01 UTC, "
        "unix_ms for milliseconds, or a format such as '%Y%m%d' for dates written as "
        "digits (20230713)"
    )


def test_digits_read_as_dates_with_a_strptime_format(tmp_path: Path) -> None:
    path = _dated_csv(tmp_path / "ymd.csv", "20230713", "20230714")
    mapping = load_mapping("canonical").with_overrides(timestamp_format="%Y%m%d")

    assert _read_times(path, mapping) == ["2023-07-13T00:00:00", "2023-07-14T00:00:00"]


@pytest.mark.parametrize(
    ("stamps", "given", "message"),
    [
        (
            ("1689242400000",),
            "unix_s",
            "'1689242400000' read as numbers of seconds since 1970 (unix_s) is past what a "
            "timestamp holds (1677 to 2262): are the values unix_ms?",
        ),
        (
            ("1689242400", "1689328800"),
            "unix_ms",
            "every value read as numbers of milliseconds since 1970 (unix_ms) falls before "
            "March 1973 (the largest, '1689328800', is 1970-01-20): are they seconds "
            "(unix_s)?",
        ),
        (
            ("1689242400", "2023-07-14"),
            "unix_s",
            "1 value(s) are not numbers of seconds since 1970 (unix_s) (e.g. '2023-07-14' on "
            "line 3)",
        ),
    ],
)
def test_epoch_numbers_in_the_wrong_unit_or_not_numbers_are_refused(
    tmp_path: Path, stamps: tuple[str, ...], given: str, message: str
) -> None:
    """Milliseconds read as seconds came out in 1720 (pandas wraps past 2262 around);
    seconds read as milliseconds would all be in January 1970."""
    path = _dated_csv(tmp_path / "epoch.csv", *stamps)
    mapping = load_mapping("canonical").with_overrides(timestamp_format=given)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, mapping)

    assert str(caught.value) == f"{path}: column 'timestamp': {message}"


def test_a_first_value_that_is_no_timestamp_is_named_with_its_line(tmp_path: Path) -> None:
    path = _dated_csv(tmp_path / "words.csv", "yesterday", "2023-07-15 10:00")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert "its first value, 'yesterday' on line 2, is not a timestamp" in str(caught.value)


def test_a_parquet_value_out_of_format_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "dmy.parquet"
    _simple_canonical(timestamp=["13/07/2023", "2023-07-14"]).to_parquet(path, index=False)

    with pytest.raises(PurchaseDataError, match=r"'2023-07-14' on row 2\)"):
        read_purchases(path, load_mapping("canonical"))


# --- every column a mapping names is in the file -------------------------------------


def _shop_csv(path: Path) -> Path:
    return write(
        path,
        "member,sku,ts,qty,amount,receipt\n"
        "m1,s1,2023-07-01 10:00,2,1.50,R1\n"
        "m1,s2,2023-07-02 10:00,-1,1.50,R2\n"
        "m2,s1,2023-07-03 10:00,1,1.50,CX3\n",
    )


SHOP_COLUMNS = (
    '[columns]\ncustomer_id = "member"\nitem_id = "sku"\ntimestamp = "ts"\n'
    'price = "amount"\norder_id = "receipt"\n'
)


def test_a_mapped_optional_column_missing_from_the_file_is_refused(tmp_path: Path) -> None:
    """quantity = "Qty" for the file's "qty": the returns were trained on as purchases."""
    path = _shop_csv(tmp_path / "shop.csv")
    mapping = write(tmp_path / "shop.toml", SHOP_COLUMNS + 'quantity = "Qty"\n')

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping(str(mapping)))

    assert str(caught.value) == (
        f"{path}: column 'Qty': mapped as quantity by the mapping {mapping}, but the file has "
        "no such column (is it 'qty'?); the file's columns are member, sku, ts, qty, "
        "amount, receipt"
    )


def test_a_column_override_missing_from_the_file_is_refused(tmp_path: Path) -> None:
    """--column order_id=Receipt for the file's "receipt": the cancellations were kept."""
    path = _shop_csv(tmp_path / "shop.csv")
    mapping = load_mapping(str(write(tmp_path / "shop.toml", SHOP_COLUMNS))).with_overrides(
        columns={"order_id": "Receipt"}, cancelled_order_prefix="CX"
    )

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, mapping)

    assert caught.value.column == "Receipt"
    assert "mapped as order_id by --column order_id=Receipt" in str(caught.value)
    assert "(is it 'receipt'?)" in str(caught.value)


def test_an_override_to_a_column_nothing_looks_like_is_refused(tmp_path: Path) -> None:
    path = _shop_csv(tmp_path / "shop.csv")
    mapping = load_mapping(str(write(tmp_path / "shop.toml", SHOP_COLUMNS))).with_overrides(
        columns={"item_name": "nonexistent"}
    )

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, mapping)

    assert "mapped as item_name by --column item_name=nonexistent" in str(caught.value)
    assert "(is it" not in str(caught.value)


def test_a_cancelled_prefix_without_order_ids_is_refused(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "plain.csv", _simple_canonical())
    mapping = load_mapping("canonical").with_overrides(cancelled_order_prefix="C")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, mapping)

    assert caught.value.column == "order_id"
    assert "the cancelled-order prefix 'C' is read from the order ids" in str(caught.value)


def test_the_mapping_that_fits_reads_and_records_its_columns(tmp_path: Path) -> None:
    path = _shop_csv(tmp_path / "shop.csv")
    mapping = load_mapping(str(write(tmp_path / "shop.toml", SHOP_COLUMNS))).with_overrides(
        columns={"quantity": "qty"}, cancelled_order_prefix="CX"
    )

    _, report = read_purchases(path, mapping)

    assert report.rows_kept == 1
    assert report.dropped[DROP_CANCELLED] == 1 and report.dropped[DROP_RETURN] == 1
    assert report.columns == {
        "customer_id": "member",
        "item_id": "sku",
        "timestamp": "ts",
        "quantity": "qty",
        "price": "amount",
        "order_id": "receipt",
    }


def test_the_canonical_mapping_reads_the_optional_columns_the_file_has(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "plain.csv", _simple_canonical())

    _, report = read_purchases(path, load_mapping("canonical"))

    assert report.columns == {c: c for c in ("customer_id", "item_id", "timestamp", "quantity")}


def test_a_dataset_missing_a_mapped_optional_column_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    _simple_canonical().to_parquet(folder / "a.parquet", index=False)
    mapping = load_mapping("canonical").with_overrides(columns={"price": "UnitPrice"})

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(folder, mapping)

    assert caught.value.path == str(folder)
    assert caught.value.column == "UnitPrice"
    assert "mapped as price by --column price=UnitPrice" in str(caught.value)


def test_the_odd_value_out_is_named_when_no_reading_fits_every_value(tmp_path: Path) -> None:
    """01/02 reads either way and 13/04 only day-first: the column is day-first and the
    ISO date is the one out of format. The column had been read month-first because no
    format fitted every value, and 13/04/2023 was named as the misfit."""
    path = _dated_csv(tmp_path / "mixed.csv", "01/02/2023", "13/04/2023", "2023-01-01")

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    assert str(caught.value) == (
        f"{path}: column 'timestamp': 1 value(s) are not timestamps in the column's format, "
        "%d/%m/%Y (as '13/04/2023' on line 3 reads, and no other way) (e.g. '2023-01-01' "
        "on line 4); nbo reads one format per column: give the column's format with "
        "timestamp_format in the mapping's [cleaning] table or --timestamp-format, e.g. "
        "'%d/%m/%Y %H:%M'"
    )


def test_the_item_column_hint_prefers_the_sku_to_the_product_name(tmp_path: Path) -> None:
    """A subscription brand's export with SKU and product_name was told
    'try ... --column item_id=product_name': "product" was tried before "sku", and a
    column of names could be proposed for the ids."""
    frame = pd.DataFrame(
        {
            "Member_ID": ["M-1"],
            "product_name": ["Coffee box monthly"],
            "SKU": ["SUB-COF-M"],
            "ordered_at": ["2024-01-01"],
        }
    )
    path = _write_csv(tmp_path / "orders.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert (
        "try --column customer_id=Member_ID --column item_id=SKU --column "
        "timestamp=ordered_at (chosen by their names: check them)"
    ) in message
    # A column of names alone is never proposed for the ids.
    path = _write_csv(tmp_path / "names.csv", frame.drop(columns="SKU"))
    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))
    assert "item_id=product_name" not in str(caught.value)
    assert "no column looks like item_id" in str(caught.value)


def test_a_decimal_comma_price_is_said_to_be_one(tmp_path: Path) -> None:
    """A European export's prices, quoted "29,90", stopped the read with "5215 value(s)
    are not numbers (e.g. '29,90' on line 2)" and nothing on why."""
    frame = _simple_canonical(price=["29,90", "1.234,50"])
    path = _write_csv(tmp_path / "eu.csv", frame)

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert (
        "value(s) are not numbers (e.g. '29,90' on line 2); it looks like a decimal comma"
        in message
    )
    assert "numbers are read with a decimal point ('29.90')" in message
    # Not numbers for another reason: no such guess.
    frame.loc[0, "price"] = "n/a"
    path = _write_csv(tmp_path / "odd.csv", frame)
    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))
    assert "decimal comma" not in str(caught.value)


# --- lines that do not fit the header ---------------------------------------------------


def test_csv_lines_with_a_column_added_in_the_middle_are_refused(tmp_path: Path) -> None:
    """One day's export gained a column before the order ids: read with the header's
    names, its lines had the store as order id and the invoice as item. Refused, naming
    the first such line and its field count, before any column is parsed."""
    path = tmp_path / "purchases.csv"
    path.write_text(
        "customer_id,order_id,item_id,timestamp\n"
        "c1,o1,A,2024-01-01\n"
        "c2,o2,B,2024-01-02\n"
        "c3,web,o3,C,2024-01-03\n"
        "c4,web,o4,D,2024-01-04\n",
        encoding="utf-8",
    )

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert message.startswith(f"{path}: 2 line(s) with more fields than the header's 4 ")
    assert "(line 4 has 5)" in message


def test_csv_field_count_error_counts_lines_as_written(tmp_path: Path) -> None:
    """A quoted value over two lines moves the line numbers on; a line before the
    timestamp with an extra field is named as such, not as a bad timestamp."""
    path = tmp_path / "purchases.csv"
    path.write_text(
        'customer_id,item_name,item_id,timestamp\nc1,"two\nlines",A,2024-01-01\n'
        "c2,shop,B,x,2024-01-02\nc3,C\n",
        encoding="utf-8",
    )

    with pytest.raises(PurchaseDataError) as caught:
        read_purchases(path, load_mapping("canonical"))

    message = str(caught.value)
    assert "1 line(s) with more, 1 line(s) with fewer fields than the header's 4" in message
    assert "(line 4 has 5)" in message
    assert "timestamp" not in message


def test_csv_header_lines_inside_the_file_are_dropped_and_counted(tmp_path: Path) -> None:
    """Days joined with ``cat day.csv >> purchases.csv`` repeat the header: those lines
    are no purchases (dropped and counted, as a duplicate is), not timestamps that need
    a format, and every day's purchases are kept."""
    header = "customer_id,item_id,timestamp,quantity\n"
    path = tmp_path / "purchases.csv"
    path.write_text(
        header
        + "c1,A,01/02/2024 10:00,1\nc2,B,13/02/2024 10:00,2\n"
        + header
        + "c3,C,14/02/2024 10:00,3\n"
        + header,
        encoding="utf-8",
    )

    frame, report = read_purchases(path, load_mapping("canonical"))

    assert report.rows_read == 5
    assert report.dropped[DROP_REPEATED_HEADER] == 2
    assert report.rows_kept == 3
    assert sorted(frame[col.CUSTOMER_ID]) == ["c1", "c2", "c3"]
    assert frame[col.QUANTITY].tolist() == [1.0, 2.0, 3.0]
    assert frame[col.TIMESTAMP].max() == pd.Timestamp("2024-02-14 10:00")


def test_a_line_holding_only_some_header_names_is_not_a_header(tmp_path: Path) -> None:
    path = tmp_path / "purchases.csv"
    path.write_text(
        "customer_id,item_id,timestamp\nc1,A,2024-01-01\ncustomer_id,item_id,2024-01-02\n",
        encoding="utf-8",
    )

    frame, report = read_purchases(path, load_mapping("canonical"))

    assert report.dropped[DROP_REPEATED_HEADER] == 0
    assert sorted(frame[col.ITEM_ID]) == ["A", "item_id"]


def test_ids_alike_but_for_case_are_counted_not_merged(tmp_path: Path) -> None:
    """One day's export wrote the item ids in lower case: ids are case-sensitive, so the
    items stay apart (nothing is merged silently), and the report counts the ids that
    match another only by case, with the items named (customers only counted)."""
    path = tmp_path / "purchases.csv"
    path.write_text(
        "customer_id,item_id,timestamp\n"
        "C1,85123A,2024-01-01\nc1,85123a,2024-01-02\nC1,22423,2024-01-02\n"
        "C2,straße,2024-01-03\nC2,STRASSE,2024-01-03\nC2,Bag,2024-01-04\n",
        encoding="utf-8",
    )

    frame, report = read_purchases(path, load_mapping("canonical"))

    assert report.items == 6
    assert report.case_variants == {col.CUSTOMER_ID: 2, col.ITEM_ID: 4}
    assert report.case_examples == [["85123A", "85123a"], ["STRASSE", "straße"]]
    assert "c1" not in str(report.to_dict())
    assert sorted(frame[col.ITEM_ID].unique()) == sorted(
        ["85123A", "85123a", "22423", "straße", "STRASSE", "Bag"]
    )
