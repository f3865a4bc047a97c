"""The catalogue and the model served together: items the catalogue names that the model
does not know are counted and named (a warning, never an error)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import write

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.core.ids import IdMap
from nbo.models.served import load_serving_model
from nbo.runtime.pairing import UnknownItems, UnknownItemsWatch, find_unknown_items

# The planted model knows A00..A09 and B00..B09.
CATALOG = """\
version: 1
items:
  - {item_id: A00, lever: 2}
  - {item_id: a01, exclude: true}
categories:
  mistyped: [Z1, Z2, Z3, Z4, A02]
offers:
  - {id: feature, kind: product, item_id: Z9}
"""


def test_items_the_model_does_not_know_are_counted_and_the_first_named(
    models_dir: Path, tmp_path: Path
) -> None:
    model = load_serving_model(models_dir)
    catalog = load_catalog(write(tmp_path / "catalog.yaml", CATALOG))
    found = find_unknown_items(catalog, model)
    assert found == UnknownItems(
        model.version, 6, ("Z1", "Z2", "Z3", "Z4", "Z9"), case=("a01", "A01")
    )
    assert found.line() == (
        f"the catalogue names 6 items model {model.version} does not know ('Z1', 'Z2', "
        "'Z3', 'Z4', 'Z9', and 1 more): their terms, exclusions and offers apply to nothing "
        "until a model knows them; the model knows 'A01', not 'a01'"
    )
    assert find_unknown_items(default_catalog(), model) is None


def test_the_watch_warns_once_per_catalogue_and_model(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_serving_model(models_dir)
    catalog = load_catalog(write(tmp_path / "catalog.yaml", CATALOG))
    watch = UnknownItemsWatch()
    with caplog.at_level(logging.WARNING, logger="nbo.runtime"):
        assert watch.check(catalog, None) is None
        assert watch.check(catalog, model) is not None
        assert watch.check(catalog, model) is not None
        assert watch.check(default_catalog(), model) is None
    assert [record.getMessage() for record in caplog.records] == [
        find_unknown_items(catalog, model).line()  # type: ignore[union-attr]
    ]


def test_a_case_slip_is_found_as_casefold_finds_it(tmp_path: Path) -> None:
    """'STRASSE' for the model's 'straße' ('STRASSE'.lower() is not 'straße'.lower())."""
    items = IdMap(["A00", "straße"])
    model = SimpleNamespace(version="v1", items=items, item_ids=items.ids.tolist())
    catalog = load_catalog(write(tmp_path / "catalog.yaml", CASEFOLDED))
    found = find_unknown_items(catalog, model)  # type: ignore[arg-type]
    assert found == UnknownItems("v1", 2, ("NEW-1", "STRASSE"), case=("STRASSE", "straße"))
    assert found.line().endswith("; the model knows 'straße', not 'STRASSE'")


CASEFOLDED = """\
version: 1
items:
  - {item_id: STRASSE, exclude: true}
  - {item_id: NEW-1, lever: 2}
  - {item_id: A00, lever: 2}
"""
