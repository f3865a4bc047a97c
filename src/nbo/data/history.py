"""Customer x item purchase matrices, built one way for training, evaluation and serving.

Two matrices share one sparsity pattern: how many orders of each item a customer
placed (the signal the models learn from) and when they last bought it (what the
service needs to suppress just-bought items).

String ids are encoded to integers once (``encode_purchases``); every later step (time
split, holdout truth, full history) works on integer arrays, which is what keeps the
trainer close to the cost of the ALS fit itself on millions of purchase lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nbo.core import columns as col
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY


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


@dataclass
class Reindex:
    """A subset of positions: ``kept`` (old positions, sorted) and ``new`` (old -> new
    position, -1 where dropped). Lookup tables, so mapping millions of codes is a gather."""

    kept: np.ndarray
    new: np.ndarray

    @classmethod
    def of_present(cls, codes: np.ndarray, size: int) -> Reindex:
        kept = np.flatnonzero(np.bincount(codes, minlength=size))
        new = np.full(size, -1, dtype=np.int64)
        new[kept] = np.arange(len(kept))
        return cls(kept=kept, new=new)


@dataclass
class EncodedPurchases:
    """Purchase lines as integer arrays: positions in ``customers``/``items`` (sorted ids),
    an order number and unix seconds."""

    customers: IdMap
    items: IdMap
    customer: np.ndarray
    item: np.ndarray
    order: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)

    def select(self, mask: np.ndarray) -> tuple[EncodedPurchases, Reindex, Reindex]:
        """The lines under ``mask``, re-indexed to the customers and items they contain,
        with the re-indexing of customers and items (to map other lines the same way).

        Sorted ids stay sorted, so a subset's id map is a sub-sequence of the full one.
        """
        customer, item = self.customer[mask], self.item[mask]
        customers = Reindex.of_present(customer, len(self.customers))
        items = Reindex.of_present(item, len(self.items))
        subset = EncodedPurchases(
            customers=IdMap(self.customers.ids[customers.kept]),
            items=IdMap(self.items.ids[items.kept]),
            customer=customers.new[customer],
            item=items.new[item],
            order=self.order[mask],
            time=self.time[mask],
        )
        return subset, customers, items

    def history(self) -> PurchaseHistory:
        """Aggregate the lines into the customer x item matrices."""
        counts, last = aggregate(
            self.customer, self.item, self.order, self.time, (len(self.customers), len(self.items))
        )
        return PurchaseHistory(self.customers, self.items, counts, last)

    def recent_orders(self, as_of_s: int, half_life_days: float) -> RecentOrders:
        """The lines' recency-weighted order counts as of ``as_of_s`` (``RecentOrders``)."""
        pairs, customers = aggregate_recent(
            self.customer,
            self.item,
            self.order,
            self.time,
            (len(self.customers), len(self.items)),
            as_of_s,
            half_life_days,
        )
        return RecentOrders(as_of_s, half_life_days, pairs, customers)


def decay(elapsed_s: np.ndarray | float, half_life_days: float) -> np.ndarray:
    """The weight, after ``elapsed_s`` seconds, of an order that weighed 1: halved every
    ``half_life_days``. Negative ``elapsed_s`` (a moment after the one decayed to) weighs
    more than 1, so a sum of weights as of one moment is carried to another by one
    multiplication: value(t) = value(t0) * decay(t - t0)."""
    return np.exp2(-np.asarray(elapsed_s, dtype=np.float64) / (half_life_days * DAY))


@dataclass(frozen=True)
class RecentOrders:
    """Recency-weighted order counts as of ``as_of_s``: each order weighs 1 when placed
    and half as much every ``half_life_days`` after, so what a customer buys lately
    outweighs what they bought years ago, and a count is updated by decaying it
    (``decay``) and adding the orders placed since, never by recounting.

    ``pairs``: per (customer, item), the weighted orders that held the item (the
    sparsity pattern of ``aggregate``'s counts for the same lines); ``customers``: per
    customer, their weighted orders.
    """

    as_of_s: int
    half_life_days: float
    pairs: sp.csr_matrix
    customers: np.ndarray


def to_unix_seconds(timestamps: pd.Series) -> np.ndarray:
    """Naive-UTC timestamps as int64 unix seconds."""
    return timestamps.to_numpy(dtype="datetime64[s]").astype(np.int64)


def encode_purchases(purchases: pd.DataFrame) -> EncodedPurchases:
    """Encode canonical purchase lines to integers, ids sorted; one pass over the strings."""
    customer, customers = _factorize_ids(purchases[col.CUSTOMER_ID])
    item, items = _factorize_ids(purchases[col.ITEM_ID])
    if col.ORDER_ID in purchases:
        order = pd.factorize(purchases[col.ORDER_ID])[0].astype(np.int64)
        # A line without an order id is an order of its own.
        missing = order < 0
        order[missing] = order.max() + 1 + np.arange(int(missing.sum()))
    else:
        # Without order ids every line is its own order.
        order = np.arange(len(purchases), dtype=np.int64)
    return EncodedPurchases(
        customers=IdMap(customers),
        items=IdMap(items),
        customer=customer.astype(np.int64),
        item=item.astype(np.int64),
        order=order,
        time=to_unix_seconds(purchases[col.TIMESTAMP]),
    )


def _factorize_ids(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and sorted distinct ids; categorical ids (as ``read_purchases`` returns them)
    factorize on their codes without touching a string per line."""
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.astype(str)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes, np.asarray(uniques, dtype=str)


def build_history(
    purchases: pd.DataFrame,
    customers: IdMap | None = None,
    items: IdMap | None = None,
) -> PurchaseHistory:
    """Aggregate canonical purchase lines into customer x item matrices.

    Pass ``customers``/``items`` to build on a fixed id space; purchases of ids outside it
    are ignored. A (customer, item) pair counts once per order.
    """
    encoded = encode_purchases(purchases)
    if customers is None and items is None:
        return encoded.history()
    customers = customers if customers is not None else encoded.customers
    items = items if items is not None else encoded.items
    customer = pd.Index(customers.ids).get_indexer(encoded.customers.ids)[encoded.customer]
    item = pd.Index(items.ids).get_indexer(encoded.items.ids)[encoded.item]
    keep = (customer >= 0) & (item >= 0)
    counts, last = aggregate(
        customer[keep],
        item[keep],
        encoded.order[keep],
        encoded.time[keep],
        (len(customers), len(items)),
    )
    return PurchaseHistory(customers, items, counts, last)


def aggregate(
    customer: np.ndarray,
    item: np.ndarray,
    order: np.ndarray,
    time: np.ndarray,
    shape: tuple[int, int],
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(orders per pair, last purchase per pair) as CSR matrices with one sparsity pattern.

    One sort of the (pair, order) keys, then segment reductions: no groupby, no strings.
    """
    n_rows, n_items = shape
    if len(customer) == 0:
        empty = sp.csr_matrix(shape, dtype=np.float32)
        return empty, sp.csr_matrix(shape, dtype=np.int64)
    pair = customer.astype(np.int64) * n_items + item.astype(np.int64)
    n_orders = int(order.max()) + 1
    if n_rows * n_items * n_orders < 2**62:
        # One int64 key sorts three times faster than lexsort's two (measured on 3M lines).
        ordering = np.argsort(pair * n_orders + order, kind="stable")
    else:
        ordering = np.lexsort((order, pair))
    pair, order, time = pair[ordering], order[ordering], time[ordering]
    new_pair = np.empty(len(pair), dtype=bool)
    new_pair[0] = True
    np.not_equal(pair[1:], pair[:-1], out=new_pair[1:])
    new_order = new_pair.copy()
    new_order[1:] |= order[1:] != order[:-1]
    starts = np.flatnonzero(new_pair)
    counts = np.add.reduceat(new_order.astype(np.float32), starts)
    last = np.maximum.reduceat(time, starts)
    pairs = pair[starts]
    rows = pairs // n_items
    columns = (pairs % n_items).astype(np.int32)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    count_matrix = sp.csr_matrix((counts, columns, indptr), shape=shape)
    last_matrix = sp.csr_matrix((last.astype(np.int64), columns.copy(), indptr.copy()), shape=shape)
    return count_matrix, last_matrix


def aggregate_recent(
    customer: np.ndarray,
    item: np.ndarray,
    order: np.ndarray,
    time: np.ndarray,
    shape: tuple[int, int],
    as_of_s: int,
    half_life_days: float,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """(recency-weighted orders per pair, the same per customer) as of ``as_of_s``: an
    order placed at ``t`` (its first line's time) weighs ``decay(as_of_s - t)``. The
    pairs' matrix has ``aggregate``'s sparsity pattern for the same lines."""
    n_rows, n_items = shape
    if len(customer) == 0:
        return sp.csr_matrix(shape, dtype=np.float64), np.zeros(n_rows)
    pair = customer.astype(np.int64) * n_items + item.astype(np.int64)
    ordering = np.lexsort((time, order, pair))
    pair, order, time = pair[ordering], order[ordering], time[ordering]
    first = np.empty(len(pair), dtype=bool)
    first[0] = True
    first[1:] = (pair[1:] != pair[:-1]) | (order[1:] != order[:-1])
    weight = np.where(first, decay(as_of_s - time, half_life_days), 0.0)
    starts = np.flatnonzero(np.concatenate([[True], pair[1:] != pair[:-1]]))
    pairs = pair[starts]
    rows = pairs // n_items
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    matrix = sp.csr_matrix(
        (np.add.reduceat(weight, starts), (pairs % n_items).astype(np.int32), indptr),
        shape=shape,
    )
    # Per customer: each order once, at its first line's time.
    by_order = np.lexsort((time, order, customer[ordering]))
    owner, placed, when = customer[ordering][by_order], order[by_order], time[by_order]
    new = np.empty(len(owner), dtype=bool)
    new[0] = True
    new[1:] = (owner[1:] != owner[:-1]) | (placed[1:] != placed[:-1])
    per_customer = np.bincount(
        owner[new], weights=decay(as_of_s - when[new], half_life_days), minlength=n_rows
    )
    return matrix, per_customer
