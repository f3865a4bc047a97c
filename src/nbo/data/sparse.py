"""Row-compressed (CSR) arrays and the few things done to them that scipy does slowly.

A customer's purchases, what is excluded for them and an item's neighbours are rows of
CSR matrices. scipy is the trainer's matrix type; a request builds a row or two many
times a second, where scipy's constructor checks and row slicing (tens of µs each) cost
more than the work on them. ``Rows`` holds the same four arrays without the checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Rows:
    """Row-compressed arrays, as in a scipy CSR matrix: row ``r``'s columns are
    ``indices[indptr[r]:indptr[r + 1]]``, with their values in ``data``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> Rows:
        """A CSR matrix's arrays, shared, not copied."""
        return cls(matrix.indptr, matrix.indices, matrix.data, matrix.shape)


def row_of(matrix: Rows | sp.csr_matrix, row: int) -> np.ndarray:
    """The column indices of one row, without scipy's row slicing."""
    return matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]


class RowIndices:
    """Row access to a CSR matrix for implicit's top-k filter.

    implicit reads ``filter[row].indices`` once per customer; scipy's row slicing costs
    about 30 µs a row, which made the filtered ALS evaluation twice the unfiltered one.
    """

    def __init__(self, matrix: Rows | sp.csr_matrix, rows: np.ndarray | None = None) -> None:
        """``rows``: the matrix's rows for rows 0, 1, ... of the top-k's queries (None:
        the same rows)."""
        self._matrix = matrix
        self._rows = rows

    def __getitem__(self, row: int) -> _Indices:
        if self._rows is not None:
            row = int(self._rows[row])
        return _Indices(row_of(self._matrix, row))


@dataclass(frozen=True)
class _Indices:
    indices: np.ndarray


def padded_rows(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """A CSR matrix's rows as (column ids, values), each row padded with (0, 0.0) to
    the longest: many rows are then read by fancy indexing, not a gather over spans.

    Ids as int32 when the columns fit, values in the matrix's own dtype: the table is
    items x width in every serving process's heap (100 neighbours: 1.6 KB an item as
    int64 and float64, 0.8 KB as int32 and a float32 similarity), and nothing is lost."""
    lengths = np.diff(matrix.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    id_type = np.int32 if matrix.shape[1] <= np.iinfo(np.int32).max else np.int64
    ids = np.zeros((matrix.shape[0], width), id_type)
    weights = np.zeros((matrix.shape[0], width), matrix.dtype)
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    slots = np.arange(len(matrix.indices)) - np.repeat(matrix.indptr[:-1], lengths)
    ids[rows, slots] = matrix.indices
    weights[rows, slots] = matrix.data
    return ids, weights


def sparse_topk(scores: sp.csr_matrix, n: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Per row, the items of the ``n`` best positive entries (-1 pads), minus ``exclude``."""
    scores = scores.tocsr()
    if exclude is not None:
        scores = (scores - scores.multiply(exclude > 0)).tocsr()
        scores.eliminate_zeros()
    ids = np.full((scores.shape[0], n), -1, np.int64)
    for row in range(scores.shape[0]):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        data = scores.data[start:end]
        if len(data) == 0:
            continue
        take = min(n, len(data))
        best = np.argpartition(-data, take - 1)[:take]
        best = best[np.lexsort((scores.indices[start:end][best], -data[best]))]
        ids[row, :take] = scores.indices[start:end][best]
    return ids
