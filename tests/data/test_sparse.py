"""Row-compressed arrays without scipy's checks, and the helpers over them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

from nbo.data.sparse import RowIndices, Rows, padded_rows, row_of, sparse_topk


def matrix() -> sp.csr_matrix:
    return sp.csr_matrix(
        np.array(
            [
                [0.0, 2.0, 0.0, 1.0],
                [0.0, 0.0, 0.0, 0.0],
                [3.0, 0.0, 3.0, 0.5],
            ]
        )
    )


def test_rows_share_a_csr_matrixs_arrays_and_read_its_rows() -> None:
    csr = matrix()
    rows = Rows.of(csr)
    assert rows.indices is csr.indices and rows.shape == (3, 4)
    for row in range(3):
        assert row_of(rows, row).tolist() == csr[row].indices.tolist()
        assert row_of(csr, row).tolist() == csr[row].indices.tolist()


def test_row_indices_filter_implicits_top_k_as_the_matrix_does() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(4, 3)).astype(np.float32)
    users = rng.normal(size=(3, 3)).astype(np.float32)
    expected = topk(items, users, 2, filter_query_items=matrix(), num_threads=1)
    got = topk(items, users, 2, filter_query_items=RowIndices(Rows.of(matrix())), num_threads=1)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_padded_rows_pad_with_item_zero_of_weight_zero() -> None:
    ids, weights = padded_rows(matrix())
    assert ids.tolist() == [[1, 3, 0], [0, 0, 0], [0, 2, 3]]
    assert weights.tolist() == [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [3.0, 3.0, 0.5]]


def test_sparse_topk_orders_by_score_then_item_and_drops_the_excluded() -> None:
    assert sparse_topk(matrix(), 2).tolist() == [[1, 3], [-1, -1], [0, 2]]
    exclude = sp.csr_matrix(([1.0], [0], [0, 0, 0, 1]), shape=(3, 4))
    assert sparse_topk(matrix(), 2, exclude).tolist() == [[1, 3], [-1, -1], [2, 3]]


def test_padded_rows_keep_the_similarity_dtype_and_narrow_ids() -> None:
    """The table sits in every serving process's heap: no wider than its contents."""
    similarity = matrix().astype(np.float32)
    ids, weights = padded_rows(similarity)
    assert ids.dtype == np.int32
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, padded_rows(matrix())[1].astype(np.float32))
