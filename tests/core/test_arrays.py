"""``filled`` is ``np.full`` with an explicit dtype: the same array, shape, type and layout."""

from __future__ import annotations

import numpy as np
import pytest

from nbo.core.arrays import filled


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
