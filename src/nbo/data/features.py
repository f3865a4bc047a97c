"""Per-customer order summaries and the features computed from them, one code path.

The trainer computes features for every customer at several cutoffs (the churn model's
snapshots); the service computes them for one customer at request time. Both call
``customer_features`` on an ``OrderTable``, so the model scores at request time exactly
what it learned from, and a feature can only see orders (and returns) before its cutoff.

An order is one customer's lines sharing an order id (without order ids: sharing a
timestamp). The table keeps one row per order, not per line: a few numbers per order are
all the features need, and they are small enough to ship inside the artifact.

The features are one compiled pass over each customer's orders (numba); no pandas per
request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from nbo.core import columns as col
from nbo.core.arrays import lay_out_segments
from nbo.core.compiled import kernel
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY
from nbo.data.history import to_unix_seconds

# Trend compares the orders of the last TREND_DAYS with those of the TREND_DAYS before.
TREND_DAYS: Final = 90
# The gap between orders a customer is assumed to keep before their own gaps show
# otherwise: one pseudo-gap of a season, so ``recency_over_rhythm`` is defined from the
# first order on and a customer's own rhythm takes over as their orders add up.
PRIOR_GAP_DAYS: Final = 90.0

FEATURE_NAMES: Final = (
    # Days since the last order.
    "recency_days",
    # Orders placed.
    "frequency",
    # Total value of the orders (currency with prices, units without).
    "monetary",
    "avg_order_value",
    # Days since the first order.
    "tenure_days",
    # Mean days between consecutive orders (NaN with a single order).
    "gap_mean_days",
    # Their standard deviation (NaN with fewer than two gaps).
    "gap_std_days",
    # How overdue the next order is: recency over the customer's rhythm, their mean gap
    # shrunk toward PRIOR_GAP_DAYS by one pseudo-gap, (days from first to last order +
    # PRIOR_GAP_DAYS) / orders. A tree cannot divide two features; this ratio is the
    # classic "late customer" signal, defined from the first order on. It only grows
    # while the customer stays silent, and an order placed nearer to now than to the
    # order before it brings it down (the churn model relies on both).
    "recency_over_rhythm",
    # Orders in the last TREND_DAYS.
    "orders_recent",
    # Orders in the last 2 * TREND_DAYS (both trend windows): like ``orders_recent``,
    # only falls while the customer stays silent and only rises with an order.
    "orders_half_year",
    # log((1 + orders in the last TREND_DAYS) / (1 + orders in the TREND_DAYS before)).
    "trend",
    # Distinct items ever bought.
    "distinct_items",
    # Returned lines / (returned + purchased lines); NaN without any line. The purchase
    # lines are those kept: a line returned in full is netted out of the purchases.
    "return_rate",
)
FEATURE_INDEX: Final = {name: position for position, name in enumerate(FEATURE_NAMES)}
(
    _RECENCY,
    _FREQUENCY,
    _MONETARY,
    _AVG_ORDER_VALUE,
    _TENURE,
    _GAP_MEAN,
    _GAP_STD,
    _RECENCY_OVER_RHYTHM,
    _ORDERS_RECENT,
    _ORDERS_HALF_YEAR,
    _TREND,
    _DISTINCT_ITEMS,
    _RETURN_RATE,
) = range(len(FEATURE_NAMES))

# Columns that need an order before the cutoff.
_NEEDS_AN_ORDER = (
    _RECENCY,
    _AVG_ORDER_VALUE,
    _TENURE,
    _GAP_MEAN,
    _GAP_STD,
    _RECENCY_OVER_RHYTHM,
    _ORDERS_RECENT,
    _ORDERS_HALF_YEAR,
    _TREND,
)

# Artifact array names of an ``OrderTable``'s fields.
ORDER_ARRAYS: Final = {
    "indptr": "orders_indptr",
    "time": "order_time",
    "value": "order_value",
    "lines": "order_lines",
    "new_items": "order_new_items",
    "returns_indptr": "returns_indptr",
    "return_time": "return_time",
}
# Above this a combined int64 sort key could overflow; fall back to a two-key lexsort.
_KEY_LIMIT = 2**62


@dataclass(frozen=True)
class OrderTable:
    """Orders and returned lines of each customer, as segments of flat arrays.

    Customer ``c`` (a position in the id map the table was built on) has the orders
    ``indptr[c]:indptr[c + 1]``, in time order, and the returned lines
    ``returns_indptr[c]:returns_indptr[c + 1]``, in time order. Time order within a
    customer is what lets ``customer_features`` take "orders before the cutoff" as a
    prefix of each segment.
    """

    indptr: np.ndarray  # int64, customers + 1
    time: np.ndarray  # int64 unix seconds (the order's first line)
    value: np.ndarray  # float64: sum of quantity * price (units without prices)
    lines: np.ndarray  # int32: purchase lines in the order
    new_items: np.ndarray  # int32: items the customer bought for the first time in it
    returns_indptr: np.ndarray  # int64, customers + 1
    return_time: np.ndarray  # int64 unix seconds, one per returned line

    @property
    def n_customers(self) -> int:
        return len(self.indptr) - 1

    def __len__(self) -> int:
        return len(self.time)

    def customer_of_orders(self) -> np.ndarray:
        """Each order's customer position."""
        return np.repeat(np.arange(self.n_customers), np.diff(self.indptr))

    def of_customer(self, customer: int) -> OrderTable:
        """One customer's orders as a table of one segment (views, no copies)."""
        start, end = int(self.indptr[customer]), int(self.indptr[customer + 1])
        r_start, r_end = int(self.returns_indptr[customer]), int(self.returns_indptr[customer + 1])
        return OrderTable(
            indptr=np.array([0, end - start], dtype=np.int64),
            time=self.time[start:end],
            value=self.value[start:end],
            lines=self.lines[start:end],
            new_items=self.new_items[start:end],
            returns_indptr=np.array([0, r_end - r_start], dtype=np.int64),
            return_time=self.return_time[r_start:r_end],
        )

    def of_customers(self, customers: np.ndarray) -> OrderTable:
        """The orders of many customers (positions; -1: a customer without any), in the
        order given, as one table."""
        customers = np.asarray(customers, dtype=np.int64)
        known = customers >= 0
        at = np.where(known, customers, 0)
        orders = lay_out_segments(
            self.indptr[at], np.where(known, self.indptr[at + 1], self.indptr[at])
        )
        returns = lay_out_segments(
            self.returns_indptr[at],
            np.where(known, self.returns_indptr[at + 1], self.returns_indptr[at]),
        )
        return OrderTable(
            indptr=orders[0],
            time=self.time[orders[1]],
            value=self.value[orders[1]],
            lines=self.lines[orders[1]],
            new_items=self.new_items[orders[1]],
            returns_indptr=returns[0],
            return_time=self.return_time[returns[1]],
        )

    @classmethod
    def single(
        cls,
        time: np.ndarray,
        value: np.ndarray,
        lines: np.ndarray,
        new_items: np.ndarray,
        return_time: np.ndarray | None = None,
    ) -> OrderTable:
        """A table of one customer (orders in time order), as the service builds it."""
        returns = np.empty(0, np.int64) if return_time is None else return_time
        return cls(
            indptr=np.array([0, len(time)], dtype=np.int64),
            time=np.asarray(time, dtype=np.int64),
            value=np.asarray(value, dtype=np.float64),
            lines=np.asarray(lines, dtype=np.int32),
            new_items=np.asarray(new_items, dtype=np.int32),
            returns_indptr=np.array([0, len(returns)], dtype=np.int64),
            return_time=np.asarray(returns, dtype=np.int64),
        )

    @classmethod
    def concatenate(cls, tables: Sequence[OrderTable]) -> OrderTable:
        """The customers of ``tables``, in order, as one table."""

        def offsets(pointers: list[np.ndarray]) -> np.ndarray:
            ends = np.cumsum([int(p[-1]) for p in pointers])
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            shifted = [p[1:] + start for p, start in zip(pointers, starts, strict=True)]
            return np.concatenate([[0], *shifted]).astype(np.int64)

        return cls(
            indptr=offsets([t.indptr for t in tables]),
            time=np.concatenate([t.time for t in tables]).astype(np.int64),
            value=np.concatenate([t.value for t in tables]).astype(np.float64),
            lines=np.concatenate([t.lines for t in tables]).astype(np.int32),
            new_items=np.concatenate([t.new_items for t in tables]).astype(np.int32),
            returns_indptr=offsets([t.returns_indptr for t in tables]),
            return_time=np.concatenate([t.return_time for t in tables]).astype(np.int64),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The artifact arrays (see ``ORDER_ARRAYS``)."""
        return {name: getattr(self, attribute) for attribute, name in ORDER_ARRAYS.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_customers: int) -> OrderTable | None:
        """The table stored in an artifact; None when it has none (older artifacts).
        Raises ValueError naming what does not fit together."""
        if not all(name in arrays for name in ORDER_ARRAYS.values()):
            return None
        table = cls(
            **{attribute: np.asarray(arrays[name]) for attribute, name in ORDER_ARRAYS.items()}
        )
        table.check(n_customers)
        return table

    def check(self, n_customers: int) -> None:
        """Raise ValueError when the arrays do not describe ``n_customers`` customers."""
        problems = []
        if len(self.indptr) != n_customers + 1 or len(self.returns_indptr) != n_customers + 1:
            problems.append("one segment per customer")
        elif int(self.indptr[-1]) != len(self.time) or int(self.returns_indptr[-1]) != len(
            self.return_time
        ):
            problems.append("segments cover the arrays")
        if not len(self.time) == len(self.value) == len(self.lines) == len(self.new_items):
            problems.append("order arrays of one length")
        if not problems:
            starts = np.zeros(len(self.time), dtype=bool)
            starts[self.indptr[:-1][np.diff(self.indptr) > 0]] = True
            if np.any(np.diff(self.time)[~starts[1:]] < 0):
                problems.append("orders in time order within a customer")
        if problems:
            raise ValueError(f"order table inconsistent ({', '.join(problems)})")


def customer_features(orders: OrderTable, as_of_s: int) -> np.ndarray:
    """Features of every customer of ``orders`` as of ``as_of_s`` (unix seconds), one row
    per customer, columns ``FEATURE_NAMES`` (float64).

    Only orders and returns strictly before ``as_of_s`` count, so features at a cutoff
    never see the period a label is taken from. A customer without an order before it
    has frequency 0, value 0 and NaN for what needs an order.

    One compiled pass over the customers (``_features_pass``): the service runs it per
    request on one customer, where some fifty numpy calls cost far more than the
    arithmetic did; the trainer's snapshots are the same loop over more customers.
    """
    n = orders.n_customers
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    trend_counts = np.empty((n, 2), dtype=np.float64)
    _features_pass(
        orders.indptr,
        orders.time,
        orders.value,
        orders.lines,
        orders.new_items,
        orders.returns_indptr,
        orders.return_time,
        as_of_s,
        out,
        trend_counts,
    )
    # numpy's logarithm, not the compiled one: its SIMD ``log1p`` and the C library's
    # differ in the last bit for some counts, and the churn model learned from numpy's.
    logs = np.log1p(trend_counts)
    out[:, _TREND] = logs[:, 0] - logs[:, 1]
    return out


@kernel
def _features_pass(  # pragma: no cover - compiled
    indptr: np.ndarray,
    time: np.ndarray,
    value: np.ndarray,
    lines: np.ndarray,
    new_items: np.ndarray,
    returns_indptr: np.ndarray,
    return_time: np.ndarray,
    as_of_s: int,
    out: np.ndarray,
    trend_counts: np.ndarray,
) -> None:
    """Fill ``out`` (customers x ``FEATURE_NAMES``) but its trend, and ``trend_counts``
    (customers x 2) with the orders of the last ``TREND_DAYS`` and of the ``TREND_DAYS``
    before (NaN for a customer without an order: their trend is undefined too).

    Orders are in time order per customer, so those before the cutoff are a prefix of
    each customer's segment. Floats come out as the numpy code's did, to the bit: each
    operation in its order, and a sum over a customer's orders as ``np.add.reduceat``
    adds (``_range_sum``), so a customer's features are the same alone or among
    thousands, and a later order leaves no trace in the last bit.
    """
    n = len(indptr) - 1
    window = TREND_DAYS * DAY
    squares = np.empty(len(time), np.float64)
    all_lines = np.empty(n, np.float64)
    few_gaps = False
    for c in range(n):
        start, end = indptr[c], indptr[c + 1]
        prefix_end = start
        for o in range(start, end):
            prefix_end += time[o] < as_of_s
        returned = 0.0
        for r in range(returns_indptr[c], returns_indptr[c + 1]):
            if return_time[r] < as_of_s:
                returned += 1.0
        purchase_lines = distinct = recent = since_two = 0.0
        for o in range(start, prefix_end):
            purchase_lines += lines[o]
            distinct += new_items[o]
            recent += time[o] >= as_of_s - window
            since_two += time[o] >= as_of_s - 2 * window
        count = float(prefix_end - start)
        n_gaps = count - 1.0
        # (0 without an order before the cutoff: what reads them is NaN then.)
        first = time[start] if prefix_end > start else 0
        last = time[prefix_end - 1] if prefix_end > start else 0
        gap_mean = (last - first) / DAY / max(n_gaps, 1.0)
        # Each gap's deviation from the mean gap (none before the first order).
        for o in range(start, prefix_end):
            deviation = 0.0 if o == start else (time[o] - time[o - 1]) / DAY - gap_mean
            squares[o] = deviation * deviation
        monetary = _range_sum(value, start, prefix_end)
        recency = (as_of_s - last) / DAY
        all_lines[c] = returned + purchase_lines
        out[c, _RECENCY] = recency
        out[c, _FREQUENCY] = count
        out[c, _MONETARY] = monetary
        out[c, _AVG_ORDER_VALUE] = monetary / max(count, 1.0)
        out[c, _TENURE] = (as_of_s - first) / DAY
        out[c, _GAP_MEAN] = gap_mean
        out[c, _GAP_STD] = np.sqrt(_range_sum(squares, start, prefix_end) / max(n_gaps, 1.0))
        out[c, _RECENCY_OVER_RHYTHM] = recency * count / ((last - first) / DAY + PRIOR_GAP_DAYS)
        out[c, _ORDERS_RECENT] = recent
        out[c, _ORDERS_HALF_YEAR] = since_two
        out[c, _DISTINCT_ITEMS] = distinct
        out[c, _RETURN_RATE] = returned / max(all_lines[c], 1.0)
        trend_counts[c, 0] = recent
        trend_counts[c, 1] = since_two - recent
        few_gaps |= n_gaps < 2
    if not few_gaps:
        return
    # NaN where undefined: without an order before the cutoff, with fewer gaps than a
    # mean (one) or a spread (two) needs, and a return rate without any line. (Only
    # once some customer has fewer than two gaps, as every such case has, as the numpy
    # code did.)
    for c in range(n):
        count = out[c, _FREQUENCY]
        if count == 0:
            for column in _NEEDS_AN_ORDER:
                out[c, column] = np.nan
            trend_counts[c, 0] = trend_counts[c, 1] = np.nan
        if count < 2:
            out[c, _GAP_MEAN] = np.nan
        if count < 3:
            out[c, _GAP_STD] = np.nan
        if all_lines[c] == 0:
            out[c, _RETURN_RATE] = np.nan


def features_frame(features: np.ndarray) -> pd.DataFrame:
    """A feature matrix with its column names (reports and tests; not the request path)."""
    return pd.DataFrame(features, columns=list(FEATURE_NAMES))


# numpy's pairwise summation: 8 accumulators over blocks up to this long, halves above.
_PAIRWISE_BLOCK: Final = 128


@kernel
def _range_sum(values: np.ndarray, start: int, end: int) -> float:  # pragma: no cover
    """``values[start:end]`` summed as ``np.add.reduceat`` sums one range: the first
    value, plus the pairwise sum of the others; 0 for an empty range."""
    if end <= start:
        return 0.0
    if end - start == 1:
        return float(values[start])
    return float(values[start] + _pairwise(values, start + 1, end - start - 1))


@kernel
def _pairwise(values: np.ndarray, start: int, n: int) -> float:  # pragma: no cover
    """numpy's ``pairwise_sum`` of ``values[start:start + n]``, its adds in its order."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    if n <= _PAIRWISE_BLOCK:
        r = values[start : start + 8].copy()
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += values[start + i + j]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            total += values[start + i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return _pairwise(values, start, half) + _pairwise(values, start + half, n - half)


# --- building the table from purchase lines -------------------------------------------


def has_prices(purchases: pd.DataFrame) -> bool:
    """Whether order values are money (a price column with at least one price)."""
    return col.PRICE in purchases and bool(purchases[col.PRICE].notna().any())


def line_values(purchases: pd.DataFrame) -> np.ndarray:
    """Value of each purchase line: quantity * unit price; a line without a price takes its
    item's median price (else the overall median). Without prices, the units bought (one
    per line without quantities), so "value" still means "how much they bought"."""
    if col.QUANTITY in purchases:
        quantity = purchases[col.QUANTITY].to_numpy(dtype=np.float64, na_value=np.nan)
        quantity = np.where(np.isnan(quantity), 1.0, quantity)
    else:
        quantity = np.ones(len(purchases), dtype=np.float64)
    if not has_prices(purchases):
        return quantity
    price = purchases[col.PRICE].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(price)
    if missing.any():
        by_item = purchases.groupby(col.ITEM_ID, observed=True)[col.PRICE].transform("median")
        price = np.where(missing, by_item.to_numpy(dtype=np.float64, na_value=np.nan), price)
        price = np.where(np.isnan(price), float(np.nanmedian(price)), price)
    return quantity * price


def item_prices(purchases: pd.DataFrame, items: IdMap) -> np.ndarray:
    """Median unit price per item of ``items`` (float64, NaN where unknown or no prices)."""
    prices = np.full(len(items), np.nan, dtype=np.float64)
    if not has_prices(purchases):
        return prices
    medians = purchases.groupby(col.ITEM_ID, observed=True)[col.PRICE].median().dropna()
    positions = pd.Index(items.ids).get_indexer(medians.index.astype(str))
    known = positions >= 0
    prices[positions[known]] = medians.to_numpy(dtype=np.float64)[known]
    return prices


def typical_line_value(purchases: pd.DataFrame) -> float | None:
    """Median value of one purchase line (quantity * price); None without prices."""
    if not has_prices(purchases):
        return None
    return float(np.median(line_values(purchases)))


def build_order_table(
    purchases: pd.DataFrame,
    customers: IdMap,
    returns: pd.DataFrame | None = None,
    values: np.ndarray | None = None,
) -> OrderTable:
    """Orders of every customer of ``customers`` (aligned with its positions) from
    canonical purchase lines; lines of other customers are ignored.

    ``returns``: returned lines (customer_id, timestamp), e.g. ``CleaningReport.returns``.
    ``values``: each line's value when already computed (else ``line_values``).
    """
    n_customers = len(customers)
    customer = _positions(purchases[col.CUSTOMER_ID], customers)
    keep = customer >= 0
    time = to_unix_seconds(purchases[col.TIMESTAMP])
    value = line_values(purchases) if values is None else np.asarray(values, dtype=np.float64)
    item = _codes(purchases[col.ITEM_ID])
    order = _order_codes(purchases, time)
    customer, time, value, item, order = (a[keep] for a in (customer, time, value, item, order))

    if len(customer) == 0:
        indptr = np.zeros(n_customers + 1, dtype=np.int64)
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        orders = (indptr, empty_i, empty_f, np.empty(0, np.int32), np.empty(0, np.int32))
    else:
        orders = _group_orders(customer, time, value, item, order, n_customers)
    returns_indptr, return_time = _returns(returns, customers)
    return OrderTable(*orders, returns_indptr=returns_indptr, return_time=return_time)


def _group_orders(
    customer: np.ndarray,
    time: np.ndarray,
    value: np.ndarray,
    item: np.ndarray,
    order: np.ndarray,
    n_customers: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, time, value, lines, new items) of the orders of these lines: a sort by
    (customer, order) and segment reductions, then the orders put in time order."""
    n_codes = int(order.max()) + 1
    key = customer * n_codes + order
    ordering = np.argsort(key, kind="stable")
    key, time, value, item = key[ordering], time[ordering], value[ordering], item[ordering]
    new_group = np.empty(len(key), dtype=bool)
    new_group[0] = True
    np.not_equal(key[1:], key[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    group_customer = key[starts] // n_codes
    group_time = np.minimum.reduceat(time, starts)
    group_value = np.add.reduceat(value, starts)
    group_lines = np.diff(np.append(starts, len(key))).astype(np.int32)

    # Orders in (customer, time) order; ties keep the order-code order.
    rank_order = np.lexsort((group_time, group_customer))
    rank = np.empty(len(starts), dtype=np.int64)
    rank[rank_order] = np.arange(len(starts))
    line_rank = rank[np.cumsum(new_group) - 1]

    # An item is new in the customer's first order (by rank) that holds it.
    n_items = int(item.max()) + 1
    pair = customer[ordering] * n_items + item
    n_orders = len(starts)
    if (n_customers * n_items + 1) * n_orders < _KEY_LIMIT:
        keys = np.sort(pair * n_orders + line_rank)
        first = np.append(True, keys[1:] // n_orders != keys[:-1] // n_orders)
        first_rank = keys[first] % n_orders
    else:
        by_pair = np.lexsort((line_rank, pair))
        sorted_pair = pair[by_pair]
        first = np.append(True, sorted_pair[1:] != sorted_pair[:-1])
        first_rank = line_rank[by_pair][first]
    new_items = np.bincount(first_rank, minlength=n_orders).astype(np.int32)

    indptr = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(np.bincount(group_customer, minlength=n_customers), out=indptr[1:])
    return (
        indptr,
        group_time[rank_order].astype(np.int64),
        group_value[rank_order].astype(np.float64),
        group_lines[rank_order],
        new_items,
    )


def _returns(returns: pd.DataFrame | None, customers: IdMap) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(customers) + 1, dtype=np.int64)
    if returns is None or returns.empty:
        return indptr, np.empty(0, np.int64)
    customer = _positions(returns[col.CUSTOMER_ID], customers)
    time = to_unix_seconds(returns[col.TIMESTAMP])
    keep = customer >= 0
    customer, time = customer[keep], time[keep]
    ordering = np.lexsort((time, customer))
    np.cumsum(np.bincount(customer, minlength=len(customers)), out=indptr[1:])
    return indptr, time[ordering].astype(np.int64)


def _positions(ids: pd.Series, customers: IdMap) -> np.ndarray:
    """Position of each id in ``customers`` (-1 when absent); a categorical is looked up
    once per category, not once per line."""
    index = pd.Index(customers.ids)
    if isinstance(ids.dtype, pd.CategoricalDtype):
        lookup = index.get_indexer(np.asarray(ids.cat.categories, dtype=str))
        codes = ids.cat.codes.to_numpy()
        return np.where(codes >= 0, np.append(lookup, -1)[codes], -1).astype(np.int64)
    return index.get_indexer(ids.astype(str)).astype(np.int64)


def _codes(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy().astype(np.int64)
    return pd.factorize(values)[0].astype(np.int64)


def _order_codes(purchases: pd.DataFrame, time: np.ndarray) -> np.ndarray:
    """An order number per line: its order id's, or its timestamp's where it has none."""
    by_time = pd.factorize(time)[0].astype(np.int64)
    if col.ORDER_ID not in purchases:
        return by_time
    order = _codes(purchases[col.ORDER_ID])
    missing = order < 0
    if missing.any():
        order[missing] = order.max(initial=-1) + 1 + by_time[missing]
    return order
