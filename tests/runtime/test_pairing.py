"""The catalogue and the model served together: items the catalogue names that the model
does not know are counted and named (a warning, never an error)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import write

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.core.ids import CaseIndex, IdMap
from nbo.data.events import PurchaseEvent
from nbo.models.served import load_serving_model
from nbo.runtime.pairing import (
    PostedItemsWatch,
    PostedUnknown,
    UnknownItems,
    UnknownItemsWatch,
    find_unknown_items,
)

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
    model = SimpleNamespace(version="v1", items=items, item_case_index=lambda: CaseIndex(items.ids))
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


class CountedIds(list[str]):
    """A model's item ids that count the passes made over them."""

    passes = 0

    def __iter__(self) -> Iterator[str]:
        CountedIds.passes += 1
        return super().__iter__()

    def tolist(self) -> list[str]:
        return list(self)


def test_posted_case_slips_are_named_once_and_the_items_folded_once_per_model(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A till posting ever new ids in the wrong case cost a pass over the model's items
    per call once the watch's own lookup cache was full; the model folds its items once."""
    model = load_serving_model(models_dir)
    # Either copy of the ids: the old watch read ``item_ids``, the index reads ``items``.
    model.items.ids = CountedIds(model.items.ids.tolist())  # type: ignore[assignment]
    model.item_ids = CountedIds(model.item_ids)
    model.items.index  # noqa: B018  (the exact lookup, built before counting)
    CountedIds.passes = 0
    watch = PostedItemsWatch()
    posted = [["a01", "a01", "Z1"], ["b02", "a01"], [f"new-{n}" for n in range(50)], ["A03"]]
    with caplog.at_level(logging.WARNING, logger="nbo.runtime"):
        counts = [watch.check([purchase(items)], model) for items in posted]
    assert counts == [
        PostedUnknown(3, 2),
        PostedUnknown(2, 2),
        PostedUnknown(50, 0),
        PostedUnknown(0, 0),
    ]
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 2
    assert "'a01'" in warned[0] and "'A01'" in warned[0]
    assert "'b02'" in warned[1] and "'B02'" in warned[1]
    assert CountedIds.passes == 1
    assert watch.check([purchase(["a01"])], None) == PostedUnknown(0, 0)


def purchase(items: list[str]) -> PurchaseEvent:
    return PurchaseEvent.model_validate(
        {
            "event_id": "p1",
            "customer_id": "c1",
            "type": "purchase",
            "timestamp": "2011-12-01T10:00:00Z",
            "order_id": "o1",
            "items": [{"item_id": item} for item in items],
        }
    )
