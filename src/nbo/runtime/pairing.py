"""The catalogue and the model served together: the items the catalogue names that the
model does not know.

The catalogue is loaded without a model, and it may name items a newer model will know,
so an unknown id is not an error. But a mistyped one (``85123a`` for ``85123A``) makes
an ``exclude: true`` exclude nothing, and an override or a product offer change nothing,
silently. The service (a log line per catalogue and model pair, and ``GET
/v1/catalog``) and ``nbo batch`` (a line on stderr) say so: a count and the first few.

Purchases posted to the service are likewise taken whatever their items (a purchase is a
real one, and a newer model may know the item), but one of ``85123a`` never holds back
``85123A``: a till that writes ids in lower case suppresses nothing. ``PostedItemsWatch``
counts such lines and names each case slip once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from nbo.catalog.terms import Catalog
from nbo.data.events import Event, PurchaseEvent
from nbo.models.served import ServingModel

log = logging.getLogger(__name__)

SHOWN = 5
"""How many unknown ids a warning names; the count says how many there are."""


@dataclass(frozen=True)
class UnknownItems:
    """Items the catalogue names (in ``items``, ``categories`` or a product offer) that
    the model does not know, sorted; ``first`` holds at most ``SHOWN`` of them."""

    model_version: str
    count: int
    first: tuple[str, ...]
    # (as written, as the model knows it) for ids that differ from a known one by case.
    case: tuple[str, str] | None = None

    def line(self) -> str:
        """One line for a log or a terminal."""
        shown = ", ".join(repr(item) for item in self.first)
        more = f", and {self.count - len(self.first):,} more" if self.count > SHOWN else ""
        noun = "item" if self.count == 1 else "items"
        line = (
            f"the catalogue names {self.count:,} {noun} model {self.model_version} does not "
            f"know ({shown}{more}): their terms, exclusions and offers apply to nothing "
            "until a model knows them"
        )
        if self.case is not None:
            line += f"; the model knows {self.case[1]!r}, not {self.case[0]!r}"
        return line


def find_unknown_items(catalog: Catalog, model: ServingModel) -> UnknownItems | None:
    """The catalogue's items ``model`` does not know, or None when it knows them all."""
    known = model.items.index
    unknown = sorted(item for item in catalog.item_ids if item not in known)
    if not unknown:
        return None
    # A case slip is the likeliest typo in ids such as 85123A: name what the model knows.
    case_index = model.item_case_index()
    case = next(
        ((item, meant) for item in unknown if (meant := case_index.meant(item)) is not None),
        None,
    )
    return UnknownItems(model.version, len(unknown), tuple(unknown[:SHOWN]), case)


class UnknownItemsWatch:
    """``find_unknown_items`` for the pair a service serves, worked out (and logged as a
    warning) once per catalogue and model pair: called when either is loaded, and by
    ``GET /v1/catalog``, which then costs a comparison."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pair: tuple[str, float, str] | None = None
        self._found: UnknownItems | None = None

    def check(self, catalog: Catalog, model: ServingModel | None) -> UnknownItems | None:
        if model is None:
            return None
        pair = (catalog.fingerprint, catalog.loaded_at, model.version)
        with self._lock:
            if pair != self._pair:
                self._found = find_unknown_items(catalog, model)
                self._pair = pair
                if self._found is not None:
                    log.warning("%s", self._found.line())
            return self._found


# The case slips a process names, at most: a slip names an item of the model, so they are
# few; the bound only keeps a client posting ever new ids from growing the set.
MAX_SLIPS_WARNED = 10_000


@dataclass(frozen=True)
class PostedUnknown:
    """Purchase lines of stored events whose item the model does not know: ``lines`` in
    all, ``case_slips`` of them differing from a known item only by case."""

    lines: int
    case_slips: int


class PostedItemsWatch:
    """The posted purchases' items the served model does not know, counted per call and
    each case slip logged once per process (as a warning naming the item posted and the
    one the model knows; never the customer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def check(self, events: Iterable[Event], model: ServingModel | None) -> PostedUnknown:
        if model is None:
            return PostedUnknown(0, 0)
        known = model.items.index
        unknown = [
            line.item_id
            for event in events
            if isinstance(event, PurchaseEvent)
            for line in event.items
            if line.item_id not in known
        ]
        if not unknown:
            return PostedUnknown(0, 0)
        # One dict lookup per id: the model keeps its items folded by case.
        slips = model.item_case_index().slips(set(unknown))
        with self._lock:
            new = sorted(item for item in slips if item not in self._warned)
            new = new[: max(0, MAX_SLIPS_WARNED - len(self._warned))]
            self._warned.update(new)
        for item in new:
            log.warning(
                "a posted purchase names item %r, which model %s does not know; it knows "
                "%r: the purchase is stored, but holds back nothing until the ids match",
                item,
                model.version,
                slips[item],
            )
        return PostedUnknown(len(unknown), sum(1 for item in unknown if item in slips))
