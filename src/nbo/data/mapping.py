"""Column mappings: how a customer's file names the canonical columns, and its cleaning rules.

A mapping is a small TOML file. Named mappings ship inside the package
(``nbo/data/mappings/<name>.toml``) so ``--mapping online-retail`` works on any install;
any other value is read as a path.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

from nbo.core import columns as col
from nbo.core.documents import read_text
from nbo.core.errors import MappingError

DEFAULT_MAPPING = "canonical"

# Timestamps written as numbers, and the unit each counts since 1970-01-01 00:00 UTC:
# given as the timestamp format, never guessed (a number does not say what it counts).
EPOCH_FORMATS = {"unix_s": "s", "unix_ms": "ms"}

# Words a file's column names often use for the canonical columns, tried after a close
# spelling when a file does not fit its mapping (the suggestion, never an automatic
# choice: a guessed mapping that reads the wrong column would train a wrong model).
COLUMN_WORDS: dict[str, tuple[str, ...]] = {
    col.CUSTOMER_ID: ("customer", "client", "user", "member", "buyer", "shopper"),
    # Id-like words first: a file with SKU and product_name has its ids under SKU.
    col.ITEM_ID: (
        "sku",
        "stockcode",
        "itemid",
        "productid",
        "productcode",
        "articleid",
        "item",
        "product",
        "article",
        "stock",
    ),
    col.TIMESTAMP: (
        "timestamp",
        "datetime",
        "date",
        "time",
        # When it happened, as many exports name it (ordered_at, created_at).
        "orderedat",
        "purchasedat",
        "placedat",
        "createdat",
    ),
    col.QUANTITY: ("quantity", "qty", "units"),
    col.PRICE: ("unitprice", "price"),
    col.ORDER_ID: ("order", "invoice", "receipt", "basket", "transaction"),
    col.ITEM_NAME: ("description", "name", "title"),
}
# Words of a column of names or words, never of ids: product_name is not the item id,
# customer_name not the customer's.
NOT_AN_ID = ("name", "description", "desc", "title", "label", "text")
ID_COLUMNS = (col.CUSTOMER_ID, col.ITEM_ID, col.ORDER_ID)


@dataclass(frozen=True)
class CleaningRules:
    """What counts as not-a-purchase in this data set, and how its timestamps are written."""

    cancelled_order_prefix: str = ""
    non_product_items: tuple[str, ...] = ()
    # A strptime format every text timestamp must fit ("%d/%m/%Y %H:%M"), or an epoch
    # (EPOCH_FORMATS: "unix_s", "unix_ms"); empty: ISO 8601, or else a format inferred
    # once for the whole column (``purchases._as_timestamps``).
    timestamp_format: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "cancelled_order_prefix": self.cancelled_order_prefix,
            "non_product_items": list(self.non_product_items),
            "timestamp_format": self.timestamp_format,
        }


# What a mapping file may hold: the top-level tables, and the keys of [cleaning].
MAPPING_SECTIONS = ("columns", "cleaning")
CLEANING_KEYS = tuple(f.name for f in fields(CleaningRules))


@dataclass(frozen=True)
class ColumnMapping:
    """Canonical column name -> the name used in the source file."""

    name: str
    # The columns the mapping names: each must be in the file (``purchases``), so a
    # misspelt one cannot leave its column, and the rules reading it, silently unread.
    # A canonical column not named here is read under its own name when the file has it.
    columns: dict[str, str] = field(default_factory=dict)
    cleaning: CleaningRules = field(default_factory=CleaningRules)
    # The command-line flags applied on top of the mapping file, as given, for the record
    # of how the data was read (``described``).
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Two canonical columns read from one source column (customer_id and item_id both
        # from "CustomerID") would train on nonsense without a single error.
        by_source: dict[str, str] = {}
        for canonical, source in self.columns.items():
            if source in by_source:
                raise MappingError(
                    f"mapping {self.name}: '{by_source[source]}' and '{canonical}' both read "
                    f"the column '{source}': each canonical column needs a column of its own"
                )
            by_source[source] = canonical

    def source(self, canonical: str) -> str:
        """The source column for a canonical one (itself when unmapped)."""
        return self.columns.get(canonical, canonical)

    @property
    def described(self) -> str:
        """The mapping's name or path, with the command-line overrides applied to it."""
        if not self.overrides:
            return self.name
        return f"{self.name} with {' '.join(self.overrides)}"

    def origin(self, canonical: str) -> str:
        """Who named ``canonical``'s column: the flag that overrode it, else the mapping."""
        flag = "--column " + shlex.quote(f"{canonical}={self.source(canonical)}")
        return flag if flag in self.overrides else f"the mapping {self.name}"

    def with_overrides(
        self,
        columns: dict[str, str] | None = None,
        cancelled_order_prefix: str | None = None,
        timestamp_format: str | None = None,
    ) -> ColumnMapping:
        """A copy with command-line overrides applied on top of the file's settings."""
        merged = dict(self.columns)
        flags = list(self.overrides)
        for canonical, source in (columns or {}).items():
            _check_canonical(canonical, self.name)
            merged[canonical] = source
            flags.append("--column " + shlex.quote(f"{canonical}={source}"))
        cleaning = self.cleaning
        if cancelled_order_prefix is not None:
            cleaning = replace(cleaning, cancelled_order_prefix=cancelled_order_prefix)
            flags.append("--cancelled-prefix " + shlex.quote(cancelled_order_prefix))
        if timestamp_format is not None:
            problem = timestamp_format_problem(timestamp_format)
            if problem:
                raise MappingError(f"--timestamp-format '{timestamp_format}': {problem}")
            cleaning = replace(cleaning, timestamp_format=timestamp_format)
            flags.append("--timestamp-format " + shlex.quote(timestamp_format))
        return replace(self, columns=merged, cleaning=cleaning, overrides=tuple(flags))


def timestamp_format_problem(text: str) -> str | None:
    """Why ``text`` cannot be a timestamp format (None if it can): a strptime format with
    the year, month and day ("%d/%m/%Y %H:%M"), an epoch ("unix_s", "unix_ms"), or empty
    for the inferred one."""
    if not text or text in EPOCH_FORMATS:
        return None
    parts = {"year": ("%Y", "%y"), "month": ("%m", "%b", "%B"), "day": ("%d",)}
    missing = [part for part, codes in parts.items() if not any(c in text for c in codes)]
    if missing:
        return (
            f"not a strptime format with the day, month and year, as %d/%m/%Y %H:%M "
            f"(it has no {' or '.join(missing)}), nor an epoch "
            f"({' or '.join(EPOCH_FORMATS)})"
        )
    return None


def shipped_mappings() -> list[str]:
    """Names of the mappings that ship with nbo."""
    folder = resources.files("nbo.data") / "mappings"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_mapping(name_or_path: str | None) -> ColumnMapping:
    """Load a shipped mapping by name, or a mapping file by path."""
    name_or_path = name_or_path or DEFAULT_MAPPING
    shipped = resources.files("nbo.data") / "mappings" / f"{name_or_path}.toml"
    if shipped.is_file():
        return _parse_mapping(shipped.read_text(encoding="utf-8"), name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise MappingError(
            f"mapping '{name_or_path}' is neither a shipped mapping "
            f"({', '.join(shipped_mappings())}) nor a file"
        )
    text, _ = read_text(path, "a mapping file (TOML)", _mapping_error)
    return _parse_mapping(text, str(path))


def _mapping_error(source: str, problem: str) -> MappingError:
    return MappingError(f"mapping {source}: {problem}")


def suggest_mapping(names: Sequence[str], mapping: ColumnMapping) -> str:
    """What to pass so that a file whose columns are ``names`` fits, for the error that
    says ``mapping`` does not: a shipped mapping whose required columns are all in the
    file (the one using most of the file's columns), or else ``--column`` flags for the
    missing required columns, from the file's columns that look like them."""
    present = set(names)
    fits: list[tuple[int, str]] = []
    for shipped in shipped_mappings():
        if shipped == mapping.name:
            continue
        candidate = load_mapping(shipped)
        if all(candidate.source(c) in present for c in col.REQUIRED_COLUMNS):
            fits.append((sum(candidate.source(c) in present for c in col.ALL_COLUMNS), shipped))
    if fits:
        used, best = max(fits, key=lambda fit: (fit[0], fit[1]))
        return (
            f"the shipped mapping '{best}' fits them ({used} of its {len(col.ALL_COLUMNS)} "
            f"columns are there): add --mapping {best}"
        )
    taken = {mapping.source(c) for c in col.ALL_COLUMNS} & present
    flags: list[str] = []
    unmatched: list[str] = []
    for canonical in col.REQUIRED_COLUMNS:
        if mapping.source(canonical) in present:
            continue
        guess = look_alike(canonical, [n for n in names if n not in taken])
        if guess is None:
            unmatched.append(canonical)
            continue
        taken.add(guess)
        flags.append("--column " + shlex.quote(f"{canonical}={guess}"))
    advice = []
    if flags:
        advice.append(f"try {' '.join(flags)} (chosen by their names: check them)")
    if unmatched:
        advice.append(
            f"no column looks like {' or '.join(unmatched)}: name yours with "
            f"--column {unmatched[0]}=COLUMN or a mapping file (--mapping FILE)"
        )
    return "; ".join(advice)


def look_alike(canonical: str, names: Sequence[str], source: str | None = None) -> str | None:
    """The column of ``names`` most like ``canonical`` (or first like ``source``, the name a
    mapping gave it): the same letters and digits (CustomerID, customer-id), then a close
    spelling, then a usual word for it (id-like words first; never a column of names for
    an id)."""
    letters = {_letters(name): name for name in reversed(names)}
    wanted = [_letters(name) for name in (source, canonical) if name]
    for spelling in wanted:
        if spelling in letters:
            return letters[spelling]
    for spelling in wanted:
        close = difflib.get_close_matches(spelling, list(letters), n=1, cutoff=0.75)
        if close:
            return letters[close[0]]
    if canonical in ID_COLUMNS:
        names = [n for n in names if not any(word in _letters(n) for word in NOT_AN_ID)]
    for word in COLUMN_WORDS.get(canonical, ()):
        for name in names:
            if word in _letters(name):
                return name
    return None


def names_customer_id(name: str) -> bool:
    """Whether ``name`` is a column name nbo reads as the customer id's: ``customer_id``
    or a shipped mapping's (``CustomerID``), in any case and punctuation
    (``customer-id``), or a usual word for it with or without "id" (``client_id``,
    ``member``). For a customer list's header: a list exported with its column's name
    has it as its first line, and it is no customer."""
    spelling = _letters(name)
    if not spelling:
        return False
    sources = {_letters(load_mapping(m).source(col.CUSTOMER_ID)) for m in shipped_mappings()}
    words = COLUMN_WORDS[col.CUSTOMER_ID]
    return spelling in sources | {_letters(col.CUSTOMER_ID)} | {
        f"{word}{suffix}" for word in words for suffix in ("", "id")
    }


def _letters(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_column_overrides(pairs: list[str]) -> dict[str, str]:
    """Parse ``canonical=source`` pairs from the command line."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical or not source:
            raise MappingError(f"--column '{pair}': expected CANONICAL=SOURCE, e.g. item_id=sku")
        _check_canonical(canonical, "--column")
        overrides[canonical] = source
    return overrides


def _parse_mapping(text: str, origin: str) -> ColumnMapping:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping {origin}: not valid TOML ({exc})") from None
    # A misspelt section or key would be ignored and its rule silently not applied
    # (cancelled orders trained on as purchases): refuse it, as the training config does.
    _check_known(data, MAPPING_SECTIONS, "section", origin)
    columns = data.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise MappingError(f"mapping {origin}: [columns] must map canonical names to strings")
    for canonical in columns:
        _check_canonical(canonical, f"mapping {origin}")
    cleaning = data.get("cleaning", {})
    if not isinstance(cleaning, dict):
        raise MappingError(f"mapping {origin}: [cleaning] must be a table")
    _check_known(cleaning, CLEANING_KEYS, "key", origin, "[cleaning]")
    prefix = cleaning.get("cancelled_order_prefix", "")
    items = cleaning.get("non_product_items", [])
    timestamp_format = cleaning.get("timestamp_format", "")
    if not isinstance(prefix, str):
        raise MappingError(f"mapping {origin}: cleaning.cancelled_order_prefix must be a string")
    if not isinstance(timestamp_format, str):
        raise MappingError(f"mapping {origin}: cleaning.timestamp_format must be a string")
    problem = timestamp_format_problem(timestamp_format)
    if problem:
        raise MappingError(
            f"mapping {origin}: cleaning.timestamp_format '{timestamp_format}': {problem}"
        )
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise MappingError(
            f"mapping {origin}: cleaning.non_product_items must be a list of strings"
        )
    return ColumnMapping(
        name=origin,
        columns=dict(columns),
        cleaning=CleaningRules(
            cancelled_order_prefix=prefix,
            non_product_items=tuple(items),
            timestamp_format=timestamp_format,
        ),
    )


def _check_known(
    table: dict[str, object], known: Sequence[str], kind: str, origin: str, inside: str = ""
) -> None:
    unknown = [name for name in table if name not in known]
    if unknown:
        where = f" in {inside}" if inside else ""
        raise MappingError(
            f"mapping {origin}: unknown {kind} '{unknown[0]}'{where} (known: {', '.join(known)})"
        )


def _check_canonical(name: str, origin: str) -> None:
    if name not in col.ALL_COLUMNS:
        raise MappingError(
            f"{origin}: unknown canonical column '{name}' (known: {', '.join(col.ALL_COLUMNS)})"
        )


def add_mapping_arguments(parser: argparse.ArgumentParser, cancelled_prefix: bool = True) -> None:
    """The options that say how a command reads a purchase file's columns (``--mapping``,
    ``--column``, ``--cancelled-prefix`` unless told not to, ``--timestamp-format``), the
    same for every command that reads one; ``mapping_of`` reads them back."""
    parser.add_argument(
        "--mapping",
        default=None,
        help=f"column mapping: a shipped name ({', '.join(shipped_mappings())}) or a TOML file",
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="CANONICAL=SOURCE",
        help="map one column, e.g. --column item_id=sku (repeatable; overrides --mapping)",
    )
    if cancelled_prefix:
        parser.add_argument(
            "--cancelled-prefix", default=None, help="order ids marking cancellations"
        )
    parser.add_argument(
        "--timestamp-format",
        default=None,
        help="the timestamps' format, e.g. '%%d/%%m/%%Y %%H:%%M', or unix_s / unix_ms for "
        "seconds / milliseconds since 1970 (default: ISO 8601, or one format inferred for "
        "the whole column; a column of numbers needs one)",
    )


def mapping_of(args: argparse.Namespace) -> ColumnMapping:
    """The mapping the options of ``add_mapping_arguments`` name, their overrides applied."""
    return load_mapping(args.mapping).with_overrides(
        columns=parse_column_overrides(args.column),
        cancelled_order_prefix=getattr(args, "cancelled_prefix", None),
        timestamp_format=args.timestamp_format,
    )
