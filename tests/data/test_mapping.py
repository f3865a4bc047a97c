"""Column mappings: shipped names, files by path, validation, command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbo.core import columns as col
from nbo.core.errors import MappingError
from nbo.data.mapping import (
    CleaningRules,
    ColumnMapping,
    load_mapping,
    parse_column_overrides,
    shipped_mappings,
)

ONLINE_RETAIL_NON_PRODUCTS = (
    "POST",
    "D",
    "M",
    "DOT",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "C2",
    "PADS",
    "B",
    "S",
    "m",
)


def _write(tmp_path: Path, text: str, name: str = "mapping.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- shipped mappings -----------------------------------------------------------------


def test_online_retail_mapping_columns() -> None:
    mapping = load_mapping("online-retail")

    assert mapping.name == "online-retail"
    assert mapping.source(col.CUSTOMER_ID) == "CustomerID"
    assert mapping.source(col.ITEM_ID) == "StockCode"
    assert mapping.source(col.TIMESTAMP) == "InvoiceDate"
    assert mapping.source(col.QUANTITY) == "Quantity"
    assert mapping.source(col.PRICE) == "UnitPrice"
    assert mapping.source(col.ORDER_ID) == "InvoiceNo"
    assert mapping.source(col.ITEM_NAME) == "Description"


def test_online_retail_mapping_cleaning_rules() -> None:
    cleaning = load_mapping("online-retail").cleaning

    assert cleaning.cancelled_order_prefix == "C"
    assert len(cleaning.non_product_items) == 12
    assert cleaning.non_product_items == ONLINE_RETAIL_NON_PRODUCTS


def test_canonical_mapping_is_identity_without_rules() -> None:
    mapping = load_mapping("canonical")

    assert {c: mapping.source(c) for c in col.ALL_COLUMNS} == {c: c for c in col.ALL_COLUMNS}
    assert mapping.cleaning == CleaningRules(cancelled_order_prefix="", non_product_items=())


def test_default_mapping_is_canonical() -> None:
    assert load_mapping(None) == load_mapping("canonical")
    assert load_mapping("") == load_mapping("canonical")


def test_shipped_mappings_lists_both() -> None:
    names = shipped_mappings()

    assert {"canonical", "online-retail"} <= set(names)
    assert names == sorted(names)


def test_unknown_mapping_name_lists_the_shipped_ones() -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping("no-such-mapping")

    message = str(caught.value)
    assert "'no-such-mapping'" in message
    assert "canonical" in message
    assert "online-retail" in message


# --- mapping files --------------------------------------------------------------------


def test_mapping_file_by_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[columns]
customer_id = "member"
item_id = "sku"

[cleaning]
cancelled_order_prefix = "X-"
non_product_items = ["FEE", "SHIP"]
""",
    )

    mapping = load_mapping(str(path))

    assert mapping.name == str(path)
    assert mapping.columns == {"customer_id": "member", "item_id": "sku"}
    assert mapping.source(col.CUSTOMER_ID) == "member"
    assert mapping.source(col.ITEM_ID) == "sku"
    # Unmapped canonical columns keep their own name.
    assert mapping.source(col.TIMESTAMP) == "timestamp"
    assert mapping.cleaning == CleaningRules(
        cancelled_order_prefix="X-", non_product_items=("FEE", "SHIP")
    )


def test_mapping_file_without_sections_is_canonical(tmp_path: Path) -> None:
    path = _write(tmp_path, "# nothing to map\n")

    mapping = load_mapping(str(path))

    assert mapping.columns == {}
    assert mapping.cleaning == CleaningRules()
    assert mapping.source(col.ITEM_ID) == "item_id"


def test_missing_mapping_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(MappingError) as caught:
        load_mapping(str(missing))

    assert str(missing) in str(caught.value)


def test_a_mapping_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_bytes(b'[columns]\ncustomer_id = "Kunde"\nitem_id = "Artikel\xfc"\n')

    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))

    assert str(caught.value) == f"mapping {path}: not UTF-8 text (byte 50)"


def test_a_mapping_that_is_a_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping(str(tmp_path))

    assert str(caught.value) == f"mapping {tmp_path}: is a directory, not a mapping file (TOML)"


def test_bad_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "[columns\ncustomer_id = \n")

    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))

    assert str(caught.value).startswith(f"mapping {path}: not valid TOML")


def test_unknown_canonical_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '[columns]\nsku = "StockCode"\n')

    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))

    message = str(caught.value)
    assert message.startswith(f"mapping {path}: unknown canonical column 'sku'")
    for name in col.ALL_COLUMNS:
        assert name in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[columns]\ncustomer_id = "CustomerID"\n[cleanng]\ncancelled_order_prefix = "C"\n',
            "unknown section 'cleanng' (known: columns, cleaning)",
        ),
        (
            'cancelled_order_prefix = "C"\n',
            "unknown section 'cancelled_order_prefix' (known: columns, cleaning)",
        ),
        (
            '[cleaning]\ncancelled_prefix = "C"\n',
            "unknown key 'cancelled_prefix' in [cleaning] "
            "(known: cancelled_order_prefix, non_product_items, timestamp_format)",
        ),
    ],
)
def test_a_misspelt_section_or_key_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))

    assert str(caught.value) == f"mapping {path}: {expected}"


def test_every_shipped_mapping_loads() -> None:
    for name in shipped_mappings():
        assert load_mapping(name).name == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('columns = "CustomerID"\n', "[columns] must map canonical names to strings"),
        ("[columns]\ncustomer_id = 5\n", "[columns] must map canonical names to strings"),
        ('[columns]\nitem_id = ["a", "b"]\n', "[columns] must map canonical names to strings"),
        (
            "[cleaning]\ncancelled_order_prefix = 1\n",
            "cleaning.cancelled_order_prefix must be a string",
        ),
        (
            '[cleaning]\nnon_product_items = "POST"\n',
            "cleaning.non_product_items must be a list of strings",
        ),
        (
            '[cleaning]\nnon_product_items = ["POST", 7]\n',
            "cleaning.non_product_items must be a list of strings",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))

    assert str(caught.value) == f"mapping {path}: {expected}"


@pytest.mark.parametrize("text", ["cleaning = 5\n", 'cleaning = "C"\n'])
def test_cleaning_that_is_not_a_table(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(MappingError):
        load_mapping(str(path))


# --- command-line overrides -----------------------------------------------------------


def test_parse_column_overrides() -> None:
    assert parse_column_overrides([]) == {}
    assert parse_column_overrides(["item_id=sku", "customer_id=member"]) == {
        "item_id": "sku",
        "customer_id": "member",
    }
    # Only the first "=" splits: a source column may contain one.
    assert parse_column_overrides(["item_name=a=b"]) == {"item_name": "a=b"}
    # The last one wins.
    assert parse_column_overrides(["item_id=a", "item_id=b"]) == {"item_id": "b"}


@pytest.mark.parametrize("pair", ["item_id", "=sku", "item_id=", "", "="])
def test_parse_column_overrides_rejects_malformed_pairs(pair: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_column_overrides([pair])

    assert str(caught.value) == (f"--column '{pair}': expected CANONICAL=SOURCE, e.g. item_id=sku")


def test_parse_column_overrides_rejects_unknown_canonical() -> None:
    with pytest.raises(MappingError) as caught:
        parse_column_overrides(["sku=StockCode"])

    assert str(caught.value).startswith("--column: unknown canonical column 'sku'")


def test_with_overrides_merges_on_top_and_leaves_original() -> None:
    base = load_mapping("online-retail")

    changed = base.with_overrides(
        columns={"item_id": "sku", "price": "Price"}, cancelled_order_prefix="X"
    )

    assert changed.source(col.ITEM_ID) == "sku"
    assert changed.source(col.PRICE) == "Price"
    assert changed.source(col.CUSTOMER_ID) == "CustomerID"
    assert changed.cleaning.cancelled_order_prefix == "X"
    assert changed.cleaning.non_product_items == ONLINE_RETAIL_NON_PRODUCTS
    assert changed.name == "online-retail"
    # Frozen and copied: the original is untouched.
    assert base.source(col.ITEM_ID) == "StockCode"
    assert base.cleaning.cancelled_order_prefix == "C"


def test_with_overrides_none_changes_nothing() -> None:
    base = load_mapping("online-retail")

    assert base.with_overrides() == base
    assert base.with_overrides(columns={}, cancelled_order_prefix=None) == base


def test_with_overrides_can_clear_the_prefix() -> None:
    changed = load_mapping("online-retail").with_overrides(cancelled_order_prefix="")

    assert changed.cleaning.cancelled_order_prefix == ""


def test_with_overrides_rejects_unknown_canonical() -> None:
    mapping = ColumnMapping(name="m")

    with pytest.raises(MappingError) as caught:
        mapping.with_overrides(columns={"sku": "x"})

    assert str(caught.value).startswith("m: unknown canonical column 'sku'")


def test_two_canonical_columns_from_one_source_column_are_refused(tmp_path: Path) -> None:
    """customer_id and item_id both read from CustomerID would train on nonsense."""
    path = tmp_path / "twice.toml"
    path.write_text(
        '[columns]\ncustomer_id = "CustomerID"\nitem_id = "CustomerID"\n', encoding="utf-8"
    )
    with pytest.raises(MappingError, match="'customer_id' and 'item_id' both read the column"):
        load_mapping(str(path))
    # The same through the command line's overrides.
    with pytest.raises(MappingError, match="both read the column 'StockCode'"):
        load_mapping("online-retail").with_overrides({"customer_id": "StockCode"})


# --- the timestamps' format, and the record of how a file is read -------------------


def test_a_mapping_file_gives_the_timestamp_format(tmp_path: Path) -> None:
    path = _write(tmp_path, '[cleaning]\ntimestamp_format = "%d/%m/%Y %H:%M"\n')

    assert load_mapping(str(path)).cleaning.timestamp_format == "%d/%m/%Y %H:%M"
    assert load_mapping("canonical").cleaning.timestamp_format == ""


@pytest.mark.parametrize("text", ["unix_s", "unix_ms"])
def test_an_epoch_is_a_timestamp_format(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, f'[cleaning]\ntimestamp_format = "{text}"\n')

    assert load_mapping(str(path)).cleaning.timestamp_format == text
    overridden = load_mapping("canonical").with_overrides(timestamp_format=text)
    assert overridden.cleaning.timestamp_format == text
    assert overridden.overrides == (f"--timestamp-format {text}",)


@pytest.mark.parametrize("text", ["%H:%M", "dd/mm/yyyy", "%d/%m %H:%M", "unix", "unix_us"])
def test_a_timestamp_format_without_day_month_and_year_is_refused(
    tmp_path: Path, text: str
) -> None:
    path = _write(tmp_path, f'[cleaning]\ntimestamp_format = "{text}"\n')

    with pytest.raises(MappingError, match=r"cleaning\.timestamp_format .*: not a strptime format"):
        load_mapping(str(path))
    with pytest.raises(MappingError, match=r"^--timestamp-format .*: not a strptime format"):
        load_mapping("canonical").with_overrides(timestamp_format=text)


def test_overrides_are_recorded_as_the_flags_given() -> None:
    base = load_mapping("canonical")
    changed = base.with_overrides(
        columns={"customer_id": "member", "order_id": "Receipt No"},
        cancelled_order_prefix="CX",
        timestamp_format="%d/%m/%Y %H:%M",
    )

    assert base.described == "canonical"
    assert changed.described == (
        "canonical with --column customer_id=member --column 'order_id=Receipt No' "
        "--cancelled-prefix CX --timestamp-format '%d/%m/%Y %H:%M'"
    )
    assert changed.origin("customer_id") == "--column customer_id=member"
    assert changed.origin("item_id") == "the mapping canonical"
    assert changed.cleaning.to_dict() == {
        "cancelled_order_prefix": "CX",
        "non_product_items": [],
        "timestamp_format": "%d/%m/%Y %H:%M",
    }
