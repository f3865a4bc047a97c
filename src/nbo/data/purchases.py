"""Reading, validating and cleaning purchase history.

Shared by the trainer and (later) the service, so a purchase means the same thing
everywhere. Bad input raises ``PurchaseDataError`` naming the file, the column and
the problem; rows that are simply not purchases (returns, fees, duplicates) are
dropped and counted in a ``CleaningReport`` instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
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
from nbo.data.mapping import ColumnMapping, look_alike, suggest_mapping

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")

# Delimiters spreadsheets use instead of commas (a semicolon where the comma is the
# decimal mark), named for the error that says a file seems to use one.
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}

# Reasons a row is dropped, in the order the rules are applied.
DROP_MISSING_ID = "missing customer or item"
DROP_REFUSED_ID = "customer or item id the service refuses"
DROP_MISSING_TIMESTAMP = "missing timestamp"
DROP_CANCELLED = "cancelled order"
DROP_RETURN = "return (quantity <= 0)"
DROP_NON_PRODUCT = "non-product item code"
DROP_BAD_PRICE = "price <= 0"
DROP_DUPLICATE = "exact duplicate line"


@dataclass
class CleaningReport:
    """What went in, what came out, and why each dropped row was dropped."""

    path: str
    rows_read: int
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    customers: int = 0
    items: int = 0
    first_purchase: str | None = None
    last_purchase: str | None = None
    # How the file was read: canonical column -> the file's column, for every column read,
    # and the timestamps' format (a strptime format, ISO_8601, or TYPED_TIMESTAMPS for a
    # column already holding datetimes).
    columns: dict[str, str] = field(default_factory=dict)
    timestamp_format: str = ""
    # The dropped returns and cancellations of products (customer_id and timestamp, one row
    # per line): not purchases, but a customer's return rate is a churn signal. Not part of
    # the report's summary (``to_dict``), which stays small and free of customer ids.
    returns: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
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
    frame, timestamp_format = _to_canonical(raw, path, mapping)
    purchases, report = _clean(frame, path, mapping)
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
        return _read_csv(path, [name for name in names if name in wanted])
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


def _read_csv(path: Path, present: list[str]) -> pd.DataFrame:
    # Ids stay strings: "00123" and "123" are different products.
    try:
        return pd.read_csv(path, usecols=present, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise PurchaseDataError(str(path), f"not a readable CSV file ({exc})") from None


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


def _parse_distinct(
    series: pd.Series,
    path: Path,
    source: str,
    parse: Callable[[pd.Series], pd.Series],
    kind: str,
) -> tuple[np.ndarray, pd.Series]:
    """(codes, parsed distinct values): each distinct text is parsed once (the lines of an
    order share a timestamp, quantities repeat), and a value that does not parse stops the
    read with how many lines hold such values and an example."""
    codes, text = _distinct_text(series)
    parsed = parse(text)
    _refuse_unparsed(codes, text, parsed, path, source, f"are not {kind}", "")
    return codes, parsed


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


def _as_timestamps(
    series: pd.Series, path: Path, source: str, given: str = ""
) -> tuple[pd.Series, str]:
    """(timestamps as naive UTC, the format they were read with).

    Text is read with one format for the whole column, never value by value (a day-first
    column read value by value is part day-first, part month-first, without an error):
    ``given``, else ISO 8601 when the first value is, else the one format inferred for the
    column (``_column_format``). A value that does not fit stops the read."""
    if pd.api.types.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            # One clock for everything: UTC without a zone. Naive input is taken as UTC.
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.astype("datetime64[ns]"), TYPED_TIMESTAMPS
    codes, text = _distinct_text(series)
    present = text.dropna()
    first_row = int(np.argmax(codes == present.index[0])) if len(present) else 0
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


def _as_numbers(series: pd.Series, path: Path, source: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    codes, numbers = _parse_distinct(
        series, path, source, lambda text: pd.to_numeric(text, errors="coerce"), "numbers"
    )
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


def _returned_lines(frame: pd.DataFrame, mapping: ColumnMapping) -> pd.DataFrame:
    """Customer and time of each cancelled or returned product line (fees and discounts
    in a cancelled order are not returns of a product)."""
    returned = _cancelled(frame, mapping)
    if col.QUANTITY in frame:
        returned |= (frame[col.QUANTITY] <= 0).fillna(False).astype(bool)
    if mapping.cleaning.non_product_items:
        returned &= ~frame[col.ITEM_ID].isin(list(mapping.cleaning.non_product_items))
    return frame.loc[returned.to_numpy(dtype=bool), [col.CUSTOMER_ID, col.TIMESTAMP]].reset_index(
        drop=True
    )


def _clean(
    frame: pd.DataFrame, path: Path, mapping: ColumnMapping
) -> tuple[pd.DataFrame, CleaningReport]:
    report = CleaningReport(path=str(path), rows_read=len(frame))
    rules = mapping.cleaning

    def drop(mask: pd.Series, reason: str) -> pd.DataFrame:
        count = int(mask.sum())
        report.dropped[reason] = count
        return frame[~mask] if count else frame

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

    if frame.empty:
        reasons = ", ".join(f"{n} {r}" for r, n in report.dropped.items() if n) or "no rows"
        raise PurchaseDataError(str(path), f"no purchases left after cleaning ({reasons})")

    # Not sorted by time: nothing downstream needs it, and sorting 3M lines costs more
    # than the whole cleaning.
    frame = frame.reset_index(drop=True)
    report.rows_kept = len(frame)
    report.customers = int(frame[col.CUSTOMER_ID].nunique())
    report.items = int(frame[col.ITEM_ID].nunique())
    report.first_purchase = frame[col.TIMESTAMP].min().isoformat()
    report.last_purchase = frame[col.TIMESTAMP].max().isoformat()
    return frame, report
