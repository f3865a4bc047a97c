"""``filled`` is ``np.full`` with an explicit dtype: the same array, shape, type and layout."""

from __future__ import annotations

import numpy as np
import pytest

from nbo.core.arrays import filled, lay_out_segments


@pytest.mark.parametrize(
    ("shape", "value", "dtype", "order"),
    [
        (5, np.nan, np.float64, "C"),
        ((3, 4), -1, np.int64, "C"),
        ((3, 4), np.nan, np.float32, "F"),
        (4, None, object, "C"),
        (2, "active", "<U8", "C"),
        (0, np.inf, np.float64, "C"),
    ],
)
def test_filled_is_np_full(shape: object, value: object, dtype: object, order: str) -> None:
    got = filled(shape, value, dtype, order=order)
    expected = np.full(shape, value, dtype=dtype, order=order)

    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.flags.f_contiguous == expected.flags.f_contiguous
    np.testing.assert_array_equal(got, expected)


def test_filled_is_float64_unless_told() -> None:
    assert filled(3, 1).dtype == np.float64  # np.full(3, 1) would be int64


def test_segments_are_laid_out_end_to_end() -> None:
    # Segments 5:7, 2:2 (empty) and 0:3 of a flat array, as int32 pointers give them.
    indptr, positions = lay_out_segments(
        np.array([5, 2, 0], dtype=np.int32), np.array([7, 2, 3], dtype=np.int32)
    )
    assert indptr.tolist() == [0, 2, 2, 5] and indptr.dtype == np.int64
    assert positions.tolist() == [5, 6, 0, 1, 2] and positions.dtype == np.int64
    indptr, positions = lay_out_segments(np.array([], dtype=np.int64), np.array([], np.int64))
    assert indptr.tolist() == [0] and positions.tolist() == []
