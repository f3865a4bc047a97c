"""Reading, validating and cleaning purchase history.

Shared by the trainer and (later) the service, so a purchase means the same thing
everywhere. Bad input raises ``PurchaseDataError`` naming the file, the column and
the problem; rows that are simply not purchases (returns, fees, duplicates) are
dropped and counted in a ``CleaningReport`` instead.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pandas.tseries.api import guess_datetime_format

from nbo.core import columns as col
from nbo.core.checksums import sha256_file, sha256_files
from nbo.core.errors import PurchaseDataError
from nbo.core.ids import path_id_problem
from nbo.core.vocabulary import iso_utc
from nbo.data.mapping import EPOCH_FORMATS, ColumnMapping, look_alike, suggest_mapping

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")

# Delimiters spreadsheets use instead of commas (a semicolon where the comma is the
# decimal mark), named for the error that says a file seems to use one.
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}

# Reasons a row is dropped, in the order the rules are applied.
# A line repeating the header (files joined with ``cat``, each with its header).
DROP_REPEATED_HEADER = "repeated header line"
DROP_MISSING_ID = "missing customer or item"
DROP_REFUSED_ID = "customer or item id the service refuses"
DROP_MISSING_TIMESTAMP = "missing timestamp"
DROP_CANCELLED = "cancelled order"
DROP_RETURN = "return (quantity <= 0)"
DROP_NON_PRODUCT = "non-product item code"
DROP_BAD_PRICE = "price <= 0"
DROP_DUPLICATE = "exact duplicate line"
# Last: purchase lines a later return or cancellation of the item by the same customer
# took back whole (``net_of_returns``).
DROP_RETURNED = "returned or cancelled in full"

# The returned units of a line at most this small a share of it leave nothing (float
# quantities: 0.1 + 0.2 returned of 0.3 bought).
_NOTHING_LEFT = 1e-9

# Blanks a kept row has filled (``nbo.data.features.line_values``), counted as the drops
# are: a shop whose quantities are mostly blank values every line at one unit.
FILL_QUANTITY = "blank quantity (counted as 1)"
FILL_PRICE = "blank price (the item's median price)"


@dataclass
class CleaningReport:
    """What went in, what came out, and why each dropped row was dropped."""

    path: str
    rows_read: int
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    # Kept rows with a blank filled, per FILL_* reason (a row may count under both).
    filled: dict[str, int] = field(default_factory=dict)
    customers: int = 0
    items: int = 0
    first_purchase: str | None = None
    last_purchase: str | None = None
    # How the file was read: canonical column -> the file's column, for every column read,
    # and the timestamps' format (a strptime format, ISO_8601, or TYPED_TIMESTAMPS for a
    # column already holding datetimes).
    columns: dict[str, str] = field(default_factory=dict)
    timestamp_format: str = ""
    # Purchase lines a later return took part of back: their quantity is what was kept.
    partly_returned: int = 0
    # Per id column (customer_id, item_id), the kept ids that match another kept id only
    # by case ("85123a" beside "85123A"): ids are case-sensitive, so each is learned as
    # its own customer or item; an export that changed the case splits one in two. A
    # few item examples (``CASE_EXAMPLES`` groups) name them; customers are only counted,
    # so the summary stays free of customer ids.
    case_variants: dict[str, int] = field(default_factory=dict)
    case_examples: list[list[str]] = field(default_factory=list)
    # The dropped returns and cancellations of products (customer_id, item_id, timestamp
    # and the units returned, ``RETURNED_UNITS``; one row per line): not purchases, but
    # they are netted off the purchases (``net_of_returns``) and a customer's return rate
    # is a churn signal. Not part of the report's summary (``to_dict``), which stays small
    # and free of customer ids.
    returns: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "filled": dict(self.filled),
            "partly_returned": self.partly_returned,
            "case_variants": dict(self.case_variants),
            "case_examples": [list(group) for group in self.case_examples],
            "customers": self.customers,
            "items": self.items,
            "first_purchase": self.first_purchase,
            "last_purchase": self.last_purchase,
        }


def read_purchases(path: str | Path, mapping: ColumnMapping) -> tuple[pd.DataFrame, CleaningReport]:
    """Read a CSV or Parquet purchase file, or a folder of Parquet files (a partitioned
    dataset as Spark writes it), into canonical columns, cleaned.

    Returns the purchases (one row per purchase line, in file order) and a report of
    what was dropped. Raises ``PurchaseDataError`` for anything a user must fix.
    """
    path = Path(path)
    raw = _read_raw(path, mapping)
    headers = _blank_repeated_headers(raw)
    frame, timestamp_format = _to_canonical(raw, path, mapping)
    purchases, report = _clean(frame, path, mapping, headers)
    report.columns = {c: mapping.source(c) for c in col.ALL_COLUMNS if c in frame}
    report.timestamp_format = timestamp_format
    return purchases, report


def _read_raw(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    if not path.exists():
        raise PurchaseDataError(str(path), "file not found")
    if path.is_dir():
        return _read_dataset(path, mapping)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise PurchaseDataError(
            str(path), f"unsupported file type '{suffix}' (use {', '.join(SUPPORTED_SUFFIXES)})"
        )
    wanted = {mapping.source(c): c for c in col.ALL_COLUMNS}
    if suffix == ".csv":
        names = _csv_columns(path)
        _check_mapped(path, names, mapping)
        return _read_csv(path, names, [name for name in names if name in wanted])
    names = _parquet_columns(path)
    _check_mapped(path, names, mapping)
    return _read_parquet(path, [name for name in names if name in wanted])


def _check_mapped(path: Path, names: list[str], mapping: ColumnMapping) -> None:
    """The required columns, then every column the mapping names, and the order ids when
    a cancelled-order prefix is set, are in the file: a mapped column the file lacks was
    silently not read, and with it the rule that needs it (returns trained on as
    purchases without their quantities, cancellations without their order ids)."""
    _check_required(path, names, mapping)
    for canonical, source in mapping.columns.items():
        if source in names:
            continue
        guess = look_alike(
            canonical, [n for n in names if n not in mapping.columns.values()], source
        )
        hint = f" (is it '{guess}'?)" if guess else ""
        raise PurchaseDataError(
            str(path),
            f"mapped as {canonical} by {mapping.origin(canonical)}, but the file has no such "
            f"column{hint}; the file's columns are {_listed(names)}",
            source,
        )
    prefix = mapping.cleaning.cancelled_order_prefix
    if prefix and mapping.source(col.ORDER_ID) not in names:
        raise PurchaseDataError(
            str(path),
            f"not in the file, and the cancelled-order prefix '{prefix}' is read from the "
            f"order ids ({col.ORDER_ID}); the file's columns are "
            f"{_listed(names)}: map the order ids (--column {col.ORDER_ID}=COLUMN), or "
            "give no prefix (--cancelled-prefix '')",
            mapping.source(col.ORDER_ID),
        )


def _check_required(path: Path, names: list[str], mapping: ColumnMapping) -> None:
    """Every required column is in the file, checked on its header before any row is read;
    otherwise the error names the file's columns and the mapping that would fit them."""
    missing = [c for c in col.REQUIRED_COLUMNS if mapping.source(c) not in names]
    if not missing:
        return
    source = mapping.source(missing[0])
    hint = "" if source == missing[0] else f" (mapped from '{missing[0]}')"
    others = [mapping.source(c) for c in missing[1:]]
    also = f" (also missing: {', '.join(others)})" if others else ""
    delimiter = _other_delimiter(names) if path.suffix.lower() == ".csv" else None
    if delimiter:
        # The whole header read as one column: a mapping cannot fix that, and the
        # look-alike advice would offer the header itself as a column name.
        raise PurchaseDataError(
            str(path),
            f"missing required column{hint}{also}; the header is one column, "
            f"'{_shortened(names[0])}': the file looks {delimiter}-delimited, and nbo reads "
            "comma-delimited CSV (save it with commas, or as Parquet)",
            source,
        )
    raise PurchaseDataError(
        str(path),
        f"missing required column{hint}{also}; the file's columns are {_listed(names)}; "
        + suggest_mapping(names, mapping),
        source,
    )


def _other_delimiter(names: list[str]) -> str | None:
    """The delimiter a header of one column seems to use instead of commas, by name."""
    if len(names) != 1:
        return None
    for char, name in OTHER_DELIMITERS.items():
        if char in names[0]:
            return name
    return None


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(names: list[str], limit: int = 20) -> str:
    """The file's column names for a one-line message: at most ``limit`` of them."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def _csv_columns(path: Path) -> list[str]:
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PurchaseDataError(str(path), f"not a readable CSV file ({exc})") from None
    return [str(name) for name in header.columns]


def _read_csv(path: Path, names: list[str], present: list[str]) -> pd.DataFrame:
    """The ``present`` columns of a CSV file, as strings; PurchaseDataError naming the
    first line whose fields do not match the header's.

    Read by pyarrow's parser, which checks every line's field count: pandas' own, given
    ``usecols``, reads a line with more fields than the header without a word, its values
    shifted into the wrong columns (a column added in the middle of one day's export:
    the store read as the order id, the invoice number as the item)."""
    # Ids stay strings: "00123" and "123" are different products.
    try:
        return pd.read_csv(
            path,
            engine="pyarrow",
            usecols=present,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        if "Expected" in str(exc) and "columns, got" in str(exc):
            raise _wrong_field_count(path, len(names)) from None
        raise PurchaseDataError(str(path), f"not a readable CSV file ({exc})") from None


def _wrong_field_count(path: Path, width: int) -> PurchaseDataError:
    """The error for lines whose field count is not the header's ``width``: how many, and
    the first with its line and count as the csv module reads them (a quoted value over
    several lines counts its lines). Read again only on this error's path."""
    longer = shorter = 0
    first = ""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for values in reader:
            if len(values) == width or not values:
                continue
            if len(values) > width:
                longer += 1
            else:
                shorter += 1
            if not first:
                first = f"line {reader.line_num} has {len(values)}"
    counts = ", ".join(
        f"{n} line(s) {what}" for n, what in ((longer, "with more"), (shorter, "with fewer")) if n
    )
    return PurchaseDataError(
        str(path),
        f"{counts} fields than the header's {width} ({first}): their values would be read "
        "in the wrong columns (a column added to or left out of the export, or a value "
        "holding a comma without quotes?); give the file one header naming every column, "
        "or quote the value",
    )


def _blank_repeated_headers(raw: pd.DataFrame) -> pd.Series:
    """Lines that repeat the header (every column read holds its own name: files joined
    with ``cat``, each with its header), blanked in place so no column's parsing trips on
    them; the mask, which cleaning drops and counts. Only a frame of text can hold one:
    a typed Parquet column cannot, and costs nothing here."""
    found = pd.Series(False, index=raw.index)
    if raw.empty or not all(
        pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)
        for _name, values in raw.items()
    ):
        return found
    for name, values in raw.items():
        # The line as written: the header's own text in every column, compared exactly
        # (one vectorised pass over the first column; the others only where it matched).
        candidates = found.index[found] if found.any() else slice(None)
        matches = (values.loc[candidates] == name).fillna(False).to_numpy(dtype=bool)
        if not matches.any():
            return pd.Series(False, index=raw.index)
        found.loc[candidates] = matches
    if found.any():
        raw.loc[found.to_numpy(), :] = None
    return found


def _parquet_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PurchaseDataError(str(path), f"not a readable Parquet file ({exc})") from None


def _read_parquet(path: Path, present: list[str]) -> pd.DataFrame:
    try:
        table = pq.read_table(path, columns=present)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PurchaseDataError(str(path), f"not a readable Parquet file ({exc})") from None
    return table.to_pandas()


def fingerprint(path: Path) -> str:
    """The sha256 that names the data a model learned from: the file's own, or for a
    partitioned dataset one over its Parquet files (paths and contents)."""
    if path.is_dir():
        return sha256_files(path, dataset_files(path))
    return sha256_file(path)


def dataset_files(folder: Path) -> list[Path]:
    """The Parquet files of a partitioned dataset, in a stable order.

    As Spark and pyarrow lay one out: files ending in .parquet or .pq anywhere below the
    folder (hive partition folders such as ``month=2023-01``), skipping the names those
    writers use for bookkeeping (``_SUCCESS``, ``_metadata``, ``.part-0.crc``, staging
    folders starting with ``_`` or ``.``).
    """
    found = []
    for file in folder.rglob("*"):
        parts = file.relative_to(folder).parts
        if any(part.startswith(("_", ".")) for part in parts):
            continue
        if file.suffix.lower() in (".parquet", ".pq") and file.is_file():
            found.append(file)
    return sorted(found)


def _read_dataset(folder: Path, mapping: ColumnMapping) -> pd.DataFrame:
    """A partitioned Parquet dataset through pyarrow datasets: only the mapped columns
    are read from disk (the rest of a wide export never reaches memory), and hive
    partition values (``country=FR``) count as columns, so a mapping may name them."""
    files = dataset_files(folder)
    if not files:
        raise PurchaseDataError(
            str(folder),
            "is a folder without .parquet files (expected a .csv or .parquet "
            "file, or a folder of Parquet files)",
        )
    mapped = _check_parts(folder, files, mapping)
    try:
        dataset = ds.dataset(
            [str(f) for f in files],
            format="parquet",
            partitioning="hive",
            partition_base_dir=str(folder),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise PurchaseDataError(str(folder), f"not a readable Parquet dataset ({exc})") from None
    try:
        table = dataset.to_table(columns=mapped)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise PurchaseDataError(str(folder), f"not a readable Parquet dataset ({exc})") from None
    return table.to_pandas()


def _check_parts(folder: Path, files: list[Path], mapping: ColumnMapping) -> list[str]:
    """The dataset's mapped columns (the ones to read, in its order), once every part's
    footer has been read and holds every mapped column the dataset has.

    pyarrow takes a dataset's schema from its first part and reads a column a later part
    lacks as empty: a part without customer ids would be dropped row by row as "missing
    customer or item", one without order ids would keep its cancelled orders. Only the
    footers are read, so checking costs a file open per part.
    """
    parts: dict[Path, list[str]] = {}
    for file in files:
        relative = file.relative_to(folder)
        try:
            physical = list(pq.read_schema(file).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise PurchaseDataError(
                str(folder), f"not a readable Parquet dataset: part {relative} ({exc})"
            ) from None
        # Hive partition folders (month=2011-01) are columns of every file below them.
        keys = [part.partition("=")[0] for part in relative.parts[:-1] if "=" in part]
        parts[file] = physical + [key for key in keys if key not in physical]
    names = list(dict.fromkeys(name for columns in parts.values() for name in columns))
    _check_mapped(folder, names, mapping)
    wanted = {mapping.source(c) for c in col.ALL_COLUMNS}
    mapped = [name for name in names if name in wanted]
    for file, columns in parts.items():
        lacking = [name for name in mapped if name not in columns]
        if lacking:
            also = f" (also missing there: {', '.join(lacking[1:])})" if lacking[1:] else ""
            raise PurchaseDataError(
                str(folder),
                f"missing from part {file.relative_to(folder)}{also}, though other parts "
                "have it: every part needs the mapped columns",
                lacking[0],
            )
    return mapped


def _to_canonical(
    raw: pd.DataFrame, path: Path, mapping: ColumnMapping
) -> tuple[pd.DataFrame, str]:
    """The canonical columns the file has (``_check_mapped`` made sure it has every one
    the mapping names), and the format its timestamps were read with."""
    out = pd.DataFrame(index=raw.index)
    timestamp_format = TYPED_TIMESTAMPS
    for canonical in col.ALL_COLUMNS:
        source = mapping.source(canonical)
        if source not in raw.columns:
            continue
        series = raw[source]
        if canonical in (col.CUSTOMER_ID, col.ITEM_ID):
            out[canonical] = _as_id_strings(series, sort=True)
        elif canonical in (col.ORDER_ID, col.ITEM_NAME):
            out[canonical] = _as_id_strings(series, sort=False)
        elif canonical == col.TIMESTAMP:
            out[canonical], timestamp_format = _as_timestamps(
                series, path, source, mapping.cleaning.timestamp_format
            )
        else:
            out[canonical] = _as_numbers(series, path, source)
    return out, timestamp_format


def _factorize(series: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(codes, distinct values): the expensive per-row work happens once, here; every
    check and conversion after it runs on the distinct values only (a few thousand
    items or customers instead of millions of lines)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, pd.Series(uniques, dtype=object if len(uniques) == 0 else None)


def _as_id_strings(series: pd.Series, sort: bool) -> pd.Series:
    """Ids as a categorical of stripped strings, empty -> missing.

    Integral floats (ids that went through a nullable column) lose '.0'; so do ids in a
    CSV exported from a float column, but only when every id has the form, so real ids
    such as "1.0" among "A1" stay as they are. ``sort`` orders the categories (customer
    and item ids, whose order becomes the model's id order); order ids and names, with
    up to one distinct value per line, skip that sort.
    """
    if pd.api.types.is_float_dtype(series):
        values = series.dropna()
        if len(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
            series = series.astype("Int64")
    codes, uniques = _factorize(series)
    strings = uniques.astype("string").str.strip()
    strings = strings.mask(strings == "")
    present = strings.dropna()
    if len(present) and present.str.fullmatch(r"-?\d+\.0").all():
        strings = strings.str.removesuffix(".0")
    # Stripping can make two distinct raw ids equal: factorize the cleaned values again.
    remap, categories = pd.factorize(strings, sort=sort, use_na_sentinel=True)
    remap = np.append(remap, -1)
    categories = pd.Index(np.asarray(categories, dtype=object))
    return pd.Series(pd.Categorical.from_codes(remap[codes], categories=categories))


def _distinct_text(series: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(codes, distinct values as stripped strings, empty -> missing)."""
    codes, uniques = _factorize(series)
    text = uniques.astype("string").str.strip()
    return codes, text.mask(text == "")


def _refuse_unparsed(
    codes: np.ndarray,
    text: pd.Series,
    parsed: pd.Series,
    path: Path,
    source: str,
    what: str,
    advice: str,
) -> None:
    """Stop the read if a distinct value did not parse: how many lines hold such values,
    the first of them and where it is, and ``advice`` after a semicolon."""
    bad = (parsed.isna() & text.notna()).to_numpy(dtype=bool)
    if not bad.any():
        return
    rows = np.flatnonzero(bad[codes] & (codes >= 0))
    example = text.iloc[int(codes[rows[0]])]
    raise PurchaseDataError(
        str(path),
        f"{len(rows)} value(s) {what} (e.g. '{example}' on {_where(path, int(rows[0]))})"
        + (f"; {advice}" if advice else ""),
        source,
    )


def _where(path: Path, row: int) -> str:
    """Where row ``row`` (from 0) of a file is, for a message: a CSV's line (its first line
    is the header), a Parquet file's or dataset's row."""
    return f"line {row + 2}" if path.suffix.lower() == ".csv" else f"row {row + 1}"


def _gather(values: np.ndarray, codes: np.ndarray, missing: object, index: pd.Index) -> pd.Series:
    """Per-line values from per-distinct ones; code -1 (an empty cell) becomes ``missing``."""
    padded = np.append(values, np.array([missing], dtype=values.dtype))
    return pd.Series(padded[codes], index=index)


# How a timestamp column read as datetimes, or as ISO 8601 text, is recorded.
TYPED_TIMESTAMPS = "datetime column"
ISO_8601 = "ISO8601"
GIVE_FORMAT = (
    "give the column's format with timestamp_format in the mapping's [cleaning] table or "
    "--timestamp-format, e.g. '%d/%m/%Y %H:%M'"
)
GIVE_EPOCH = (
    "give timestamp_format in the mapping's [cleaning] table or --timestamp-format: "
    "unix_s for seconds since 1970-01-01 UTC, unix_ms for milliseconds, or a format "
    "such as '%Y%m%d' for dates written as digits (20230713)"
)
# A timestamp written as a plain number (digits, a sign, a decimal part).
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")
# Milliseconds since 1970 below this (1e11) are all before 1973-03-03: seconds, surely.
_EPOCH_MS_SECONDS_BELOW = 1e11


def _as_timestamps(
    series: pd.Series, path: Path, source: str, given: str = ""
) -> tuple[pd.Series, str]:
    """(timestamps as naive UTC, the format they were read with).

    Text is read with one format for the whole column, never value by value (a day-first
    column read value by value is part day-first, part month-first, without an error):
    ``given``, else ISO 8601 when the first value is, else the one format inferred for the
    column (``_column_format``). A value that does not fit stops the read. Numbers are
    read only with an epoch format given (``unix_s``, ``unix_ms``: ``_epoch_timestamps``)
    or a strptime format (``%Y%m%d`` for 20230713); without one they are refused, naming
    the option: seconds, milliseconds and a date written as digits all look alike."""
    if pd.api.types.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            # One clock for everything: UTC without a zone. Naive input is taken as UTC.
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.astype("datetime64[ns]"), TYPED_TIMESTAMPS
    codes, text = _distinct_text(series)
    present = text.dropna()
    first_row = int(np.argmax(codes == present.index[0])) if len(present) else 0
    if given in EPOCH_FORMATS:
        return _epoch_timestamps(codes, text, series.index, path, source, given), given
    # The first value alone: a column is read in one format, and a number is none (a
    # regular expression over millions of distinct ISO values would cost a second).
    if not given and len(present) and _NUMBER.fullmatch(str(present.iloc[0])):
        raise PurchaseDataError(
            str(path),
            f"its first value, '{present.iloc[0]}' on {_where(path, first_row)}, is a "
            "number, and a number does not say what it counts: " + GIVE_EPOCH,
            source,
        )
    reading = None
    if given:
        fmt, described = given, f"the format given, {given}"
        advice = "check the format given (timestamp_format in the mapping, or --timestamp-format)"
    else:
        fmt, reading, settled_by = _column_format(present, _where(path, first_row), path, source)
        if fmt == ISO_8601:
            how = "ISO 8601"
        elif settled_by is None or settled_by == present.index[0]:
            how = f"{fmt} (inferred from its first value, '{present.iloc[0]}')"
        else:
            # The first value read either way: the value that decided is the one to name.
            settled_at = _where(path, int(np.argmax(codes == settled_by)))
            how = f"{fmt} (as '{present[settled_by]}' on {settled_at} reads, and no other way)"
        described = "the column's format, " + how
        advice = f"nbo reads one format per column: {GIVE_FORMAT}"
    # An inferred format has read the values already: parsing is most of the cost.
    parsed = _parse_timestamps(text, fmt) if reading is None else reading.reindex(text.index)
    _refuse_unparsed(
        codes, text, parsed, path, source, f"are not timestamps in {described}", advice
    )
    naive = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    values = naive.to_numpy(dtype="datetime64[ns]")
    return _gather(values, codes, np.datetime64("NaT", "ns"), series.index), fmt


def _epoch_timestamps(
    codes: np.ndarray, text: pd.Series, index: pd.Index, path: Path, source: str, given: str
) -> pd.Series:
    """Numbers of seconds (``unix_s``) or milliseconds (``unix_ms``) since 1970-01-01
    00:00 UTC, as naive UTC timestamps. A value that is not a number stops the read, and
    so does a column read in the wrong unit: milliseconds read as seconds land after the
    year 2262 (past what a timestamp holds), seconds read as milliseconds all before
    March 1973."""
    unit = EPOCH_FORMATS[given]
    numbers = pd.to_numeric(text, errors="coerce")
    what = f"numbers of {'milliseconds' if unit == 'ms' else 'seconds'} since 1970 ({given})"
    _refuse_unparsed(codes, text, numbers, path, source, f"are not {what}", "")
    values = numbers.to_numpy(dtype="float64", na_value=np.nan)
    other = "unix_s" if unit == "ms" else "unix_ms"
    # pandas wraps a float past what datetime64[ns] holds around without a word (1.7e12
    # read as seconds came out in 1720): the range is checked first.
    per_second = 1000.0 if unit == "ms" else 1.0
    limit = pd.Timestamp.max.value / 1e9 * per_second
    beyond = np.abs(np.nan_to_num(values)) >= limit
    if beyond.any():
        raise PurchaseDataError(
            str(path),
            f"'{text.iloc[int(np.argmax(beyond))]}' read as {what} is past what a timestamp "
            f"holds (1677 to 2262): are the values {other}?",
            source,
        )
    parsed = pd.to_datetime(values, unit=unit, utc=True)
    if unit == "ms" and np.nanmax(values, initial=-np.inf) < _EPOCH_MS_SECONDS_BELOW:
        raise PurchaseDataError(
            str(path),
            f"every value read as {what} falls before March 1973 (the largest, "
            f"'{text.iloc[int(np.nanargmax(values))]}', is {parsed.max():%Y-%m-%d}): are "
            f"they seconds ({other})?",
            source,
        )
    naive = parsed.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return _gather(naive, codes, np.datetime64("NaT", "ns"), index)


def _parse_timestamps(text: pd.Series, fmt: str) -> pd.Series:
    """``text`` read with one format, vectorised; what does not fit is NaT."""
    return pd.to_datetime(text, errors="coerce", utc=True, format=fmt)


def _column_format(
    present: pd.Series, first_at: str, path: Path, source: str
) -> tuple[str, pd.Series | None, Hashable | None]:
    """The one format of a text timestamp column with no format given: ISO 8601 when its
    first value is; else the format that first value suggests, read either month-first or
    day-first, whichever fits every value of the column (13/07/2023 settles it, so does
    07/13/2023). If both fit (no day above 12) and they read the column differently,
    nothing in the file tells 3 July from 7 March: refused, with how to give the format.
    If neither fits every value, the one more values fit (a day above 12 still settles
    it: with 01/02/2023, 13/04/2023 and 2023-01-01, day-first, and the ISO date is the
    odd one out; month-first on a tie).
    Answers the format, the values read with it unless it is ISO 8601, and the label in
    ``present`` of the first value only that format reads (None: none, or one format)."""
    if present.empty:
        return ISO_8601, None, None
    first = str(present.iloc[0])
    if pd.notna(pd.to_datetime(first, errors="coerce", utc=True, format=ISO_8601)):
        return ISO_8601, None, None
    with warnings.catch_warnings():
        # pandas warns when a guess is day-first though dayfirst=False: both are tried.
        warnings.simplefilter("ignore", UserWarning)
        guesses = [guess_datetime_format(first, dayfirst=dayfirst) for dayfirst in (False, True)]
    candidates = list(dict.fromkeys(g for g in guesses if g))
    # A value starting with its year is year-month-day: year-day-month is no one's order.
    candidates = [c for c in candidates if not c.startswith(("%Y", "%y"))] or candidates[:1]
    if not candidates:
        raise PurchaseDataError(
            str(path),
            f"its first value, '{first}' on {first_at}, is not a timestamp nbo can read: "
            "nbo reads ISO "
            f"8601 (2023-07-13 10:00) or one format for the whole column; {GIVE_FORMAT}",
            source,
        )
    readings = {fmt: _parse_timestamps(present, fmt) for fmt in candidates}
    misfits = {fmt: int(parsed.isna().sum()) for fmt, parsed in readings.items()}
    fitting = [fmt for fmt in candidates if misfits[fmt] == 0]
    if len(fitting) > 1 and not all(readings[f].equals(readings[fitting[0]]) for f in fitting):
        raise PurchaseDataError(
            str(path),
            f"every date fits both {' and '.join(fitting)} (no day is above 12: '{first}' "
            f"on {first_at} reads two ways), and nothing in the file says which it is; "
            + GIVE_FORMAT,
            source,
        )
    # None fits: the reading most values fit (the first on a tie, month-first), whose
    # misfits the caller names. It had been month-first whatever the column showed, so
    # a day-first date was named as the misfit beside a real odd one out.
    chosen = fitting[0] if fitting else min(candidates, key=lambda fmt: misfits[fmt])
    others = [readings[fmt].notna() for fmt in candidates if fmt != chosen]
    only = readings[chosen].notna()
    for other in others:
        only &= ~other
    settled_by = only.idxmax() if others and only.any() else None
    return chosen, readings[chosen], settled_by


# A number written with a decimal comma, thousands perhaps grouped by points or spaces:
# 29,90, 1.234,50, -0,5.
_DECIMAL_COMMA = re.compile(r"^[-+]?(\d{1,3}([. ]\d{3})+|\d+),\d+$")
DECIMAL_COMMA_ADVICE = (
    "it looks like a decimal comma: numbers are read with a decimal point ('29.90'), "
    "and no thousands separator; export the file with decimal points (in a spreadsheet, "
    "an English locale) or convert the column"
)


def _as_numbers(series: pd.Series, path: Path, source: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    codes, text = _distinct_text(series)
    numbers = pd.to_numeric(text, errors="coerce")
    bad = text[numbers.isna() & text.notna()]
    comma = len(bad) > 0 and bool(bad.str.match(_DECIMAL_COMMA).all())
    advice = DECIMAL_COMMA_ADVICE if comma else ""
    _refuse_unparsed(codes, text, numbers, path, source, "are not numbers", advice)
    values = numbers.to_numpy(dtype="float64", na_value=np.nan)
    return _gather(values, codes, np.nan, series.index)


def _refused_ids(frame: pd.DataFrame) -> pd.Series:
    """Rows whose customer or item id the service refuses (``path_id_problem``: an
    unprintable character, more than 256 characters, '/' at either end, or a last
    '/'-separated part naming a route, as "12347/consent"). A model that knew such a
    customer would serve one no API call can name: their offers and profile could not be
    asked for, nor their data exported or erased. Judged once per distinct id."""
    mask = np.zeros(len(frame), dtype=bool)
    for column in (col.CUSTOMER_ID, col.ITEM_ID):
        ids = frame[column]
        if not isinstance(ids.dtype, pd.CategoricalDtype):
            ids = ids.astype("category")
        categories = ids.cat.categories
        refused = np.fromiter(
            (path_id_problem(str(value)) is not None for value in categories),
            dtype=bool,
            count=len(categories),
        )
        if refused.any():
            codes = ids.cat.codes.to_numpy()
            mask |= (codes >= 0) & refused[codes]
    return pd.Series(mask, index=frame.index)


def _exact_duplicates(frame: pd.DataFrame) -> pd.Series:
    """Lines identical to an earlier line in every column.

    Rows are hashed first and compared in full only where hashes collide, so the exact
    comparison touches a few rows instead of millions (twice as fast on 3M lines).
    """
    # Categorical columns hash by their codes: equal codes <=> equal values.
    as_numbers = pd.DataFrame(
        {
            name: values.cat.codes if isinstance(values.dtype, pd.CategoricalDtype) else values
            for name, values in frame.items()
        }
    )
    hashes = pd.util.hash_pandas_object(as_numbers, index=False)
    candidates = hashes.duplicated(keep=False)
    duplicates = pd.Series(False, index=frame.index)
    if candidates.any():
        duplicates[candidates] = frame[candidates].duplicated(keep="first")
    return duplicates


def _cancelled(frame: pd.DataFrame, mapping: ColumnMapping) -> pd.Series:
    prefix = mapping.cleaning.cancelled_order_prefix
    if col.ORDER_ID not in frame or not prefix:
        return pd.Series(False, index=frame.index)
    return frame[col.ORDER_ID].str.startswith(prefix).fillna(False).astype(bool)


# The column of ``CleaningReport.returns`` holding the units each line returned.
RETURNED_UNITS = "returned_units"


def _returned_lines(frame: pd.DataFrame, mapping: ColumnMapping) -> pd.DataFrame:
    """Customer, item, time and units returned of each cancelled or returned product line
    (fees and discounts in a cancelled order are not returns of a product), each line
    once (an exact duplicate is one line read twice, as for purchases). The units are
    the quantity's size (a cancellation's quantity is negative, or, in some exports,
    the positive quantity of the order it cancels); one without quantities."""
    returned = _cancelled(frame, mapping)
    if col.QUANTITY in frame:
        returned |= (frame[col.QUANTITY] <= 0).fillna(False).astype(bool)
    if mapping.cleaning.non_product_items:
        returned &= ~frame[col.ITEM_ID].isin(list(mapping.cleaning.non_product_items))
    lines = frame.loc[returned.to_numpy(dtype=bool)]
    lines = lines[~_exact_duplicates(lines).to_numpy(dtype=bool)]
    out = lines[[col.CUSTOMER_ID, col.ITEM_ID, col.TIMESTAMP]].reset_index(drop=True)
    if col.QUANTITY in lines:
        units = np.abs(lines[col.QUANTITY].to_numpy(dtype=np.float64, na_value=np.nan))
        out[RETURNED_UNITS] = np.where(np.isnan(units), 1.0, units)
    else:
        out[RETURNED_UNITS] = 1.0
    return out


def net_of_returns(
    purchases: pd.DataFrame, returns: pd.DataFrame | None
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """The purchase lines with what the customer returned afterwards taken off: (the
    lines, which were taken back whole (a mask over ``purchases``), how many lost part
    of their quantity).

    A return or cancellation names a customer and an item, not the order it undoes (the
    Online Retail file's C541433 cancels 74,215 units its customer ordered in 541431
    sixteen minutes before), so each returned unit is matched with the customer's most
    recent unit of the item bought at or before the return, and the units kept are what
    is left: a line whose every unit came back is no purchase (dropped, with it the
    order if nothing else of it was kept), one returned in part keeps the rest of its
    quantity (so its value is net). Returns of units bought before the file starts match
    nothing and change nothing; a purchase after a return is kept whole. Without
    quantities each line is one unit.

    Matching newest first is one backward sweep per customer and item: going back in
    time a return adds its units to a pool and a purchase gives the pool what it can,
    a running sum floored at zero, so it is vectorised (a cumulative sum and a cumulative
    minimum per pair) rather than a loop over returns.
    """
    taken_whole = np.zeros(len(purchases), dtype=bool)
    if returns is None or returns.empty or purchases.empty:
        return purchases, taken_whole, 0
    customer_p, customer_r = _shared_codes(purchases[col.CUSTOMER_ID], returns[col.CUSTOMER_ID])
    item_p, item_r = _shared_codes(purchases[col.ITEM_ID], returns[col.ITEM_ID])
    n_items = int(max(item_p.max(initial=0), item_r.max(initial=0))) + 1
    pair_p = customer_p * n_items + item_p
    pair_r = customer_r * n_items + item_r
    # A hash lookup (pandas), not np.isin's sort: ten times faster on millions of lines.
    candidates = np.flatnonzero(pd.Series(pair_p).isin(np.unique(pair_r)).to_numpy())
    if len(candidates) == 0:
        return purchases, taken_whole, 0
    if col.QUANTITY in purchases:
        quantity = purchases[col.QUANTITY].to_numpy(dtype=np.float64, na_value=np.nan)
        quantity = np.where(np.isnan(quantity), 1.0, quantity)
    else:
        quantity = np.ones(len(purchases), dtype=np.float64)
    bought = quantity[candidates]
    pair = np.concatenate([pair_p[candidates], pair_r])
    time = np.concatenate(
        [
            purchases[col.TIMESTAMP].to_numpy(dtype="datetime64[ns]")[candidates],
            returns[col.TIMESTAMP].to_numpy(dtype="datetime64[ns]"),
        ]
    ).astype(np.int64)
    is_return = np.concatenate([np.zeros(len(candidates), bool), np.ones(len(pair_r), bool)])
    # A return comes after a purchase of the same moment, so it can take it back.
    change = np.concatenate([-bought, returns[RETURNED_UNITS].to_numpy(dtype=np.float64)])
    # Newest first within each pair: the sweep runs backward in time (of one moment's
    # lines of an item, the later in the file gives first).
    position = np.concatenate([candidates, np.arange(len(pair_r))])
    ordering = np.lexsort((-position, ~is_return, -time, pair))
    pair, change = pair[ordering], change[ordering]
    groups = pd.Series(change).groupby(pair, sort=False)
    total = groups.cumsum().to_numpy()
    lowest = np.minimum(pd.Series(total).groupby(pair, sort=False).cummin().to_numpy(), 0.0)
    pool_after = total - lowest
    # The pool each event meets: the one the previous event of its pair left, 0 first.
    pool_before = np.empty_like(pool_after)
    pool_before[0] = 0.0
    pool_before[1:] = pool_after[:-1]
    first = np.ones(len(pair), dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    pool_before[first] = 0.0
    purchase_rows = ~is_return[ordering]
    line = candidates[ordering[purchase_rows]]
    kept = np.maximum(bought[ordering[purchase_rows]] - pool_before[purchase_rows], 0.0)
    whole = quantity[line]
    gone = kept <= _NOTHING_LEFT * np.maximum(np.abs(whole), 1.0)
    taken_whole[line[gone]] = True
    reduced = line[~gone & (kept < whole)]
    if len(reduced) and col.QUANTITY in purchases:
        purchases = purchases.copy()
        values = purchases[col.QUANTITY].to_numpy(dtype=np.float64, copy=True)
        values[reduced] = kept[~gone & (kept < whole)]
        purchases[col.QUANTITY] = values
    return purchases, taken_whole, len(reduced)


def _shared_codes(left: pd.Series, right: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of two id columns on one scale (equal codes: equal ids), by the
    categories when both are categoricals of the same categories, as cleaning makes them."""
    if (
        isinstance(left.dtype, pd.CategoricalDtype)
        and isinstance(right.dtype, pd.CategoricalDtype)
        and left.cat.categories.equals(right.cat.categories)
    ):
        return (
            left.cat.codes.to_numpy().astype(np.int64),
            right.cat.codes.to_numpy().astype(np.int64),
        )
    codes, _uniques = pd.factorize(
        pd.concat([left.astype(str), right.astype(str)], ignore_index=True)
    )
    codes = codes.astype(np.int64)
    return codes[: len(left)], codes[len(left) :]


def _clean(
    frame: pd.DataFrame, path: Path, mapping: ColumnMapping, headers: pd.Series
) -> tuple[pd.DataFrame, CleaningReport]:
    report = CleaningReport(path=str(path), rows_read=len(frame))
    rules = mapping.cleaning

    def drop(mask: pd.Series, reason: str) -> pd.DataFrame:
        count = int(mask.sum())
        report.dropped[reason] = count
        return frame[~mask] if count else frame

    frame = drop(headers, DROP_REPEATED_HEADER)
    frame = drop(frame[col.CUSTOMER_ID].isna() | frame[col.ITEM_ID].isna(), DROP_MISSING_ID)
    frame = drop(_refused_ids(frame), DROP_REFUSED_ID)
    frame = drop(frame[col.TIMESTAMP].isna(), DROP_MISSING_TIMESTAMP)
    report.returns = _returned_lines(frame, mapping)
    if col.ORDER_ID in frame and rules.cancelled_order_prefix:
        frame = drop(_cancelled(frame, mapping), DROP_CANCELLED)
    if col.QUANTITY in frame:
        frame = drop(frame[col.QUANTITY] <= 0, DROP_RETURN)
    if rules.non_product_items:
        frame = drop(frame[col.ITEM_ID].isin(list(rules.non_product_items)), DROP_NON_PRODUCT)
    if col.PRICE in frame:
        frame = drop(frame[col.PRICE] <= 0, DROP_BAD_PRICE)
    frame = drop(_exact_duplicates(frame), DROP_DUPLICATE)
    frame, taken_whole, report.partly_returned = net_of_returns(frame, report.returns)
    frame = drop(pd.Series(taken_whole, index=frame.index), DROP_RETURNED)

    if frame.empty:
        reasons = ", ".join(f"{n} {r}" for r, n in report.dropped.items() if n) or "no rows"
        raise PurchaseDataError(str(path), f"no purchases left after cleaning ({reasons})")

    # Not sorted by time: nothing downstream needs it, and sorting 3M lines costs more
    # than the whole cleaning.
    frame = frame.reset_index(drop=True)
    describe_kept(report, frame)
    return frame, report


def describe_kept(report: CleaningReport, kept: pd.DataFrame) -> None:
    """The report's account of the rows kept: how many, their customers, items and time
    span, and the blanks ``line_values`` will fill. Again after rows are dropped later
    (the trainer's erased customers), so every figure counts the same rows."""
    report.rows_kept = len(kept)
    for column, reason in ((col.QUANTITY, FILL_QUANTITY), (col.PRICE, FILL_PRICE)):
        if column in kept:
            report.filled[reason] = int(kept[column].isna().sum())
    report.customers = int(kept[col.CUSTOMER_ID].nunique())
    report.items = int(kept[col.ITEM_ID].nunique())
    report.case_variants = {}
    for column in (col.CUSTOMER_ID, col.ITEM_ID):
        groups = case_variant_groups(kept[column])
        report.case_variants[column] = sum(len(group) for group in groups)
        if column == col.ITEM_ID:
            report.case_examples = groups[:CASE_EXAMPLES]
    # The timestamps are UTC without a zone (every zone the file gave was converted):
    # written with theirs, so no reader takes them for the shop's local time.
    report.first_purchase = _utc_text(kept[col.TIMESTAMP].min())
    report.last_purchase = _utc_text(kept[col.TIMESTAMP].max())


# Groups of item ids alike but for case the cleaning report names.
CASE_EXAMPLES = 3


def case_variant_groups(ids: pd.Series) -> list[list[str]]:
    """The distinct ids that match another only by case, grouped, each group sorted and
    the groups in order of their first id. Case is folded with ``str.casefold``, as the
    service's case-slip lookup (``nbo.core.ids``) folds it; one vectorised pass over the
    distinct ids, not the lines."""
    if isinstance(ids.dtype, pd.CategoricalDtype):  # as cleaning makes them: no pass
        distinct = pd.Series(ids.cat.remove_unused_categories().cat.categories.astype(str))
    else:
        distinct = pd.Series(pd.unique(ids.dropna())).astype(str)
    folded = distinct.str.casefold()
    clash = folded.duplicated(keep=False).to_numpy(dtype=bool)
    if not clash.any():
        return []
    groups = distinct[clash].groupby(folded[clash].to_numpy(), sort=False)
    return sorted((sorted(group.tolist()) for _key, group in groups), key=lambda g: g[0])


def _utc_text(moment: pd.Timestamp) -> str | None:
    """A naive UTC timestamp as ISO 8601 text with its zone (``+00:00``); None for none."""
    return None if pd.isna(moment) else iso_utc(pd.Timestamp(moment))
