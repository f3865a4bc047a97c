"""External ids: what a valid one is, and external ids <-> internal row numbers.
External ids only appear at the edges.

One definition of a valid id (``Id``, ``id_problem``) serves every id in a request body;
customer and item ids, which name a route's path, follow it and one more rule
(``path_id_problem``), in the path of every customer and item route, in posted events
and in the trainer's input, so an id the API refuses in a path is refused in an
event too, and the other way round.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_ID_LENGTH = 256
REPLACEMENT_CHARACTER = "\ufffd"
# What follows the id in the paths of the customer routes (``/v1/customers/{id}/offers``)
# and of the item routes (``/v1/items/{id}/similar``). An id may hold '/', so one ending
# in '/consent' would make ``DELETE /v1/customers/12347/consent`` the erasure of the
# customer "12347/consent" (and their profile could not be asked for): a customer or
# item id may not end with '/' and one of these.
CUSTOMER_ROUTE_SUFFIXES = ("consent", "data", "offers")
ITEM_ROUTE_SUFFIXES = ("similar",)
ROUTE_SUFFIXES = CUSTOMER_ROUTE_SUFFIXES + ITEM_ROUTE_SUFFIXES
# A model version is a plain folder name inside the models folder: no '/', nothing
# absolute, no leading '.' (hidden folders are versions still being written, and '..' is
# the parent). CURRENT, an alias, a pinned NBO_MODEL_VERSION and a reload request are all
# held to it, so none of them reaches a folder outside the models folder; an impression
# posted with the version that decided it is held to it too (``nbo.data.events``).
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
VERSION_RULE = (
    "a version is a folder name inside the models folder: letters, digits, '.', '_' "
    "and '-', not starting with '.'"
)


def id_problem(value: str) -> str | None:
    """What makes ``value`` unusable as an id (customer, item, event, order...), or None.

    An id is 1 to ``MAX_ID_LENGTH`` printable characters (Python's ``str.isprintable``:
    no control, format, surrogate, private-use, unassigned or separator characters other
    than the ASCII space), not starting or ending with a space or '/', and without U+FFFD: an
    id is stored, exported and written to logs, where a NUL, a line break or an
    invisible character would corrupt or disguise it. U+FFFD is what a server makes of
    bytes that are not UTF-8 (``%FF%FE`` in a URL), so two different raw ids would
    become one.
    """
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}"
    if REPLACEMENT_CHARACTER in value:
        return (
            f"holds U+FFFD at position {value.index(REPLACEMENT_CHARACTER)}: not valid "
            "UTF-8 text (invalid bytes in a URL become U+FFFD)"
        )
    if not value.isprintable():
        position, char = next((n, c) for n, c in enumerate(value) if not c.isprintable())
        return (
            f"holds the unprintable character U+{ord(char):04X} at position {position} "
            "(control, format and separator characters are not allowed)"
        )
    if value[0] == " " or value[-1] == " ":
        return "must not start or end with a space"
    if value[0] == "/" or value[-1] == "/":
        # An id may hold '/' (sent as %2F in a path, or raw), but at either end it would
        # make a path ambiguous: /v1/customers/12347/ would be the customer "12347/".
        return "must not start or end with '/'"
    return None


def path_id_problem(value: str) -> str | None:
    """What makes ``value`` unusable as a customer or item id, or None: ``id_problem``, or
    a last '/'-separated part that names a route (``ROUTE_SUFFIXES``). "12347/consent"
    is refused, "consent" alone and "consent/12347" are not: no path mistakes them."""
    problem = id_problem(value)
    if problem is not None:
        return problem
    _, slash, last = value.rpartition("/")
    if slash and last in ROUTE_SUFFIXES:
        return (
            f"must not end with '/{last}': /{last} names a route of the API, so a path "
            "could not tell this id from that route"
        )
    return None


def spreadsheet_original(value: str) -> str | None:
    """The id a spreadsheet would have written as ``value`` ("12347" for "12347.0": a
    column of numbers read as floats), or None when ``value`` does not look like one.
    Whether the original is a customer is the caller's to ask."""
    number = value.removesuffix(".0")
    return number if number and number != value else None


class CaseIndex:
    """Known ids by their case-folded form, to name the id meant by one that matches a
    known id only by case ({"m-000008": "M-000008"}). Ids are matched exactly, so a list,
    a catalogue or a till whose case was changed (by a spreadsheet, by hand) names
    nobody; this says who was meant. Case is folded with ``str.casefold``, which knows
    more than ``lower`` ("STRASSE" matches "straße"). Where two known ids fold alike,
    the first is named.

    Built with one pass over the known ids, so that each lookup after is one dict lookup:
    a till posting every SKU in the wrong case must not cost a pass over the model's
    items per call. Whoever holds the known ids builds it once (``ServingModel``)."""

    def __init__(self, known: Iterable[str] | np.ndarray) -> None:
        meant: dict[str, str] = {}
        for key in known.tolist() if isinstance(known, np.ndarray) else known:
            meant.setdefault(key.casefold(), key)
        self._meant = meant

    def meant(self, value: str) -> str | None:
        """The known id ``value`` matches only by case, or None (no match, or ``value``
        is itself the known id: an id held as written is no slip)."""
        key = self._meant.get(value.casefold())
        return None if key is None or key == value else key

    def slips(self, ids: Iterable[str]) -> dict[str, str]:
        """Each of ``ids`` that matches a known id only by case, with the one it matches."""
        return {value: key for value in ids if (key := self.meant(value)) is not None}


def check_id(value: str) -> str:
    """``id_problem`` as a pydantic validator: the problem is the error's message."""
    problem = id_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_id", problem)
    return value


def check_path_id(value: str) -> str:
    """``path_id_problem`` as a pydantic validator."""
    problem = path_id_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_id", problem)
    return value


# An id in a request body.
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(check_id)]


# Held while an IdMap builds its lookup table (once per map: one lock for all).
_BUILDING = threading.Lock()


class IdMap:
    """An ordered set of external string ids; position = internal index."""

    def __init__(self, ids: Iterable[str] | np.ndarray) -> None:
        self.ids: np.ndarray = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if self.ids.dtype.kind not in "U":
            self.ids = self.ids.astype(str)
        self._index: dict[str, int] | None = None

    @property
    def index(self) -> dict[str, int]:
        """Lookup table, built once on first use (load stays fast when unused), under a
        lock: a table built twice by two threads at once could put back an id another
        thread had just forgotten (an erasure) into the one that won."""
        index = self._index
        if index is None:
            with _BUILDING:
                if self._index is None:
                    built = {key: position for position, key in enumerate(self.ids.tolist())}
                    if len(built) != len(self.ids):
                        raise ValueError("IdMap ids must be unique")
                    self._index = built
                index = self._index
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, key: str) -> int | None:
        """Internal index of an external id, or None when unknown."""
        return self.index.get(key)

    def forget(self, key: str) -> int | None:
        """Make an external id unknown to lookups (``get``, ``to_index``); answers the
        position it had, or None when it was not known. ``ids`` keeps its row, so
        positions (and the arrays aligned with them) do not move."""
        return self.index.pop(key, None)

    def to_index(self, keys: Iterable[str]) -> np.ndarray:
        """Internal indices for many ids; unknown ids map to -1."""
        lookup = self.index
        return np.fromiter((lookup.get(k, -1) for k in keys), dtype=np.int64)

    def external(self, positions: Iterable[int] | np.ndarray) -> list[str]:
        """External ids for internal indices."""
        return self.ids[np.asarray(positions, dtype=np.int64)].tolist()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]
