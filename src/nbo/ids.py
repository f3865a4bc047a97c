"""External ids <-> internal row numbers. External ids only appear at the edges."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class IdMap:
    """An ordered set of external string ids; position = internal index."""

    def __init__(self, ids: Iterable[str] | np.ndarray) -> None:
        self.ids: np.ndarray = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if self.ids.dtype.kind not in "U":
            self.ids = self.ids.astype(str)
        self._index: dict[str, int] | None = None

    @property
    def index(self) -> dict[str, int]:
        """Lookup table, built once on first use (load stays fast when unused)."""
        if self._index is None:
            self._index = {key: position for position, key in enumerate(self.ids.tolist())}
            if len(self._index) != len(self.ids):
                raise ValueError("IdMap ids must be unique")
        return self._index

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
