"""Customer x item purchase matrices, built one way for training, evaluation and serving.

Two matrices share one sparsity pattern: how many orders of each item a customer
placed (the signal the models learn from) and when they last bought it (what the
service needs to suppress just-bought items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nbo import columns as col
from nbo.ids import IdMap


@dataclass
class PurchaseHistory:
    """Per (customer, item): order count and last purchase time (unix seconds)."""

    customers: IdMap
    items: IdMap
    counts: sp.csr_matrix
    last_purchase: sp.csr_matrix

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.customers), len(self.items))


def to_unix_seconds(timestamps: pd.Series) -> np.ndarray:
    """Naive-UTC timestamps as int64 unix seconds."""
    return timestamps.to_numpy(dtype="datetime64[s]").astype(np.int64)


def build_history(
    purchases: pd.DataFrame,
    customers: IdMap | None = None,
    items: IdMap | None = None,
) -> PurchaseHistory:
    """Aggregate purchase lines into customer x item matrices.

    Pass ``customers``/``items`` to build on a fixed id space (e.g. the training window
    of a time split on the full data's ids); purchases of ids outside it are ignored.
    A (customer, item) pair counts once per order, so a line split in two is one purchase.
    """
    if customers is None:
        customers = IdMap(np.sort(purchases[col.CUSTOMER_ID].unique().astype(str)))
    if items is None:
        items = IdMap(np.sort(purchases[col.ITEM_ID].unique().astype(str)))

    user_codes = _codes(purchases[col.CUSTOMER_ID], customers)
    item_codes = _codes(purchases[col.ITEM_ID], items)
    keep = (user_codes >= 0) & (item_codes >= 0)
    if col.ORDER_ID in purchases:
        orders = pd.factorize(purchases[col.ORDER_ID])[0]
    else:
        orders = np.arange(len(purchases))
    lines = pd.DataFrame(
        {
            "u": user_codes[keep],
            "i": item_codes[keep],
            "o": orders[keep],
            "t": to_unix_seconds(purchases[col.TIMESTAMP])[keep],
        }
    )
    per_order = lines.drop_duplicates(["u", "i", "o"])
    grouped = per_order.groupby(["u", "i"], sort=True).agg(n=("o", "size"), t=("t", "max"))
    rows = grouped.index.get_level_values(0).to_numpy()
    cols = grouped.index.get_level_values(1).to_numpy()
    shape = (len(customers), len(items))
    counts = sp.csr_matrix(
        (grouped["n"].to_numpy(np.float32), (rows, cols)), shape=shape, dtype=np.float32
    )
    last = sp.csr_matrix((grouped["t"].to_numpy(np.int64), (rows, cols)), shape=shape)
    counts.sort_indices()
    last.sort_indices()
    return PurchaseHistory(customers=customers, items=items, counts=counts, last_purchase=last)


def _codes(values: pd.Series, ids: IdMap) -> np.ndarray:
    """Internal indices for a column of external ids (-1 where unknown), vectorised."""
    return pd.Index(ids.ids).get_indexer(values.astype(str)).astype(np.int64)
