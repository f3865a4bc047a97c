"""Column mappings: how a customer's file names the canonical columns, and its cleaning rules.

A mapping is a small TOML file. Named mappings ship inside the package
(``nbo/mappings/<name>.toml``) so ``--mapping online-retail`` works on any install;
any other value is read as a path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from nbo import columns as col
from nbo.errors import MappingError

DEFAULT_MAPPING = "canonical"


@dataclass(frozen=True)
class CleaningRules:
    """What counts as not-a-purchase in this data set."""

    cancelled_order_prefix: str = ""
    non_product_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnMapping:
    """Canonical column name -> the name used in the source file."""

    name: str
    columns: dict[str, str] = field(default_factory=dict)
    cleaning: CleaningRules = field(default_factory=CleaningRules)

    def source(self, canonical: str) -> str:
        """The source column for a canonical one (itself when unmapped)."""
        return self.columns.get(canonical, canonical)

    def with_overrides(
        self,
        columns: dict[str, str] | None = None,
        cancelled_order_prefix: str | None = None,
    ) -> ColumnMapping:
        """A copy with command-line overrides applied on top of the file's settings."""
        merged = dict(self.columns)
        for canonical, source in (columns or {}).items():
            _check_canonical(canonical, self.name)
            merged[canonical] = source
        cleaning = self.cleaning
        if cancelled_order_prefix is not None:
            cleaning = replace(cleaning, cancelled_order_prefix=cancelled_order_prefix)
        return replace(self, columns=merged, cleaning=cleaning)


def shipped_mappings() -> list[str]:
    """Names of the mappings that ship with nbo."""
    folder = resources.files("nbo") / "mappings"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_mapping(name_or_path: str | None) -> ColumnMapping:
    """Load a shipped mapping by name, or a mapping file by path."""
    name_or_path = name_or_path or DEFAULT_MAPPING
    shipped = resources.files("nbo") / "mappings" / f"{name_or_path}.toml"
    if shipped.is_file():
        return _parse_mapping(shipped.read_text(encoding="utf-8"), name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise MappingError(
            f"mapping '{name_or_path}' is neither a shipped mapping "
            f"({', '.join(shipped_mappings())}) nor a file"
        )
    return _parse_mapping(path.read_text(encoding="utf-8"), str(path))


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
    columns = data.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise MappingError(f"mapping {origin}: [columns] must map canonical names to strings")
    for canonical in columns:
        _check_canonical(canonical, f"mapping {origin}")
    cleaning = data.get("cleaning", {})
    if not isinstance(cleaning, dict):
        raise MappingError(f"mapping {origin}: [cleaning] must be a table")
    prefix = cleaning.get("cancelled_order_prefix", "")
    items = cleaning.get("non_product_items", [])
    if not isinstance(prefix, str):
        raise MappingError(f"mapping {origin}: cleaning.cancelled_order_prefix must be a string")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise MappingError(
            f"mapping {origin}: cleaning.non_product_items must be a list of strings"
        )
    return ColumnMapping(
        name=origin,
        columns=dict(columns),
        cleaning=CleaningRules(cancelled_order_prefix=prefix, non_product_items=tuple(items)),
    )


def _check_canonical(name: str, origin: str) -> None:
    if name not in col.ALL_COLUMNS:
        raise MappingError(
            f"{origin}: unknown canonical column '{name}' (known: {', '.join(col.ALL_COLUMNS)})"
        )
