"""Synthetic purchase history with retail-like skew, written as canonical Parquet.

Everything is vectorised numpy (no Python loop over rows), seeded, and cached under
``bench/.cache/`` keyed by the parameters, so a second run reuses the file.

Shape of the data:

- item popularity follows a power law (Zipf-like, exponent ``ITEM_ZIPF``);
- customer activity (lines per customer) is log-normal, every customer buys at least once;
- items belong to categories and each customer has a few favourite categories: most lines
  come from them (popularity-weighted inside the category), the rest from the global
  popularity curve. That shared taste structure is what lets ALS beat popularity on the
  holdout, as on real retail data;
- customers re-buy: a share of lines repeat an item the customer already bought;
- lines are grouped into orders (log-normal basket sizes); each order has one timestamp,
  spread over a year with a weekly rhythm and a mild year-end peak.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# The repository, and the files of it the benchmarks run on.
REPO = Path(__file__).resolve().parent.parent
DEMO_CATALOG = REPO / "data" / "catalog.yaml"
SAMPLE = REPO / "data" / "online_retail_sample.parquet"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
# The shared Online Retail file, beside the repository (``../shared``) when it is there.
SHARED_DATA = REPO.parent / "shared" / "data"
ONLINE_RETAIL = SHARED_DATA / "online_retail" / "online_retail.parquet"
GENERATOR_VERSION = 1

ITEM_ZIPF = 1.05  # popularity exponent: weight of the item ranked r is 1 / (r + 10) ** s
CATEGORIES = 200
FAVOURITE_CATEGORIES = 3
TASTE_SHARE = 0.65  # lines drawn from one of the customer's favourite categories
REPEAT_SHARE = 0.20  # lines that re-buy an item from the customer's earlier lines
ACTIVITY_SIGMA = 1.1  # log-normal sigma of customer activity
BASKET_MEAN = 4.0  # mean lines per order (log-normal)
START = np.datetime64("2023-01-01T00:00:00", "s")
DAYS = 365


@dataclass(frozen=True)
class SyntheticSpec:
    customers: int
    items: int
    lines: int
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.customers:,} customers x {self.items:,} items x {self.lines:,} lines"

    def cache_path(self, cache_dir: Path = CACHE_DIR) -> Path:
        name = (
            f"synthetic-v{GENERATOR_VERSION}-c{self.customers}-i{self.items}"
            f"-l{self.lines}-s{self.seed}.parquet"
        )
        return cache_dir / name


FULL = SyntheticSpec(customers=100_000, items=20_000, lines=3_000_000)
SMALL = SyntheticSpec(customers=10_000, items=2_000, lines=200_000)


def generate_table(spec: SyntheticSpec) -> pa.Table:
    """The purchase lines of ``spec`` as an Arrow table in canonical columns."""
    if spec.lines < spec.customers:
        raise ValueError("need at least one line per customer")
    rng = np.random.default_rng(spec.seed)
    n_i = spec.items
    # Items: a random popularity rank (so item ids carry no order) and a category.
    rank = rng.permutation(n_i)
    item_weight = 1.0 / (rank + 10.0) ** ITEM_ZIPF
    item_category = rng.integers(0, CATEGORIES, size=n_i)
    # The prices are drawn after the orders (the order of the draws is the data set).
    lines = _customer_lines(
        rng,
        spec.customers,
        spec.lines,
        item_weight,
        item_category,
        lambda: np.round(rng.lognormal(1.2, 0.8, size=n_i), 2) + 0.05,
    )
    return _lines_table(lines, spec.customers, n_i, lines.orders)


@dataclass
class _Lines:
    """Purchase lines as integer codes, in time order."""

    customer: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    order: np.ndarray
    orders: int  # distinct orders (codes 0 .. orders - 1)


def _customer_lines(
    rng: np.random.Generator,
    n_c: int,
    n_l: int,
    item_weight: np.ndarray,
    item_category: np.ndarray,
    base_price: Callable[[], np.ndarray],
) -> _Lines:
    """``n_l`` lines of ``n_c`` customers (codes 0 .. n_c - 1) over the given items."""
    n_i = len(item_weight)
    # Customers: log-normal activity, at least one line each.
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, size=n_c)
    extra = rng.multinomial(n_l - n_c, activity / activity.sum())
    lines_per_customer = extra + 1
    customer = np.repeat(np.arange(n_c), lines_per_customer)

    # Item choice: favourite category (popularity-weighted inside it) or global popularity.
    favourites = rng.integers(0, CATEGORIES, size=(n_c, FAVOURITE_CATEGORIES))
    by_category = np.argsort(item_category, kind="stable")
    cumulative = np.cumsum(item_weight[by_category])
    category_end = np.searchsorted(item_category[by_category], np.arange(CATEGORIES), "right")
    upper = cumulative[category_end - 1]
    lower = np.concatenate([[0.0], upper[:-1]])
    line_category = favourites[customer, rng.integers(0, FAVOURITE_CATEGORIES, size=n_l)]
    target = lower[line_category] + rng.random(n_l) * (upper - lower)[line_category]
    in_taste = by_category[np.minimum(np.searchsorted(cumulative, target, "right"), n_i - 1)]
    global_cumulative = np.cumsum(item_weight)
    global_pick = np.searchsorted(global_cumulative, rng.random(n_l) * global_cumulative[-1])
    global_pick = np.minimum(global_pick, n_i - 1)
    item = np.where(rng.random(n_l) < TASTE_SHARE, in_taste, global_pick)

    # Re-buys: a line copies an earlier line of the same customer (lines are grouped by
    # customer, so "earlier" is a random offset back inside the customer's block).
    first_line = np.repeat(np.cumsum(lines_per_customer) - lines_per_customer, lines_per_customer)
    position = np.arange(n_l) - first_line
    back = (rng.random(n_l) * position).astype(np.int64)
    repeat = (rng.random(n_l) < REPEAT_SHARE) & (position > 0)
    item = np.where(repeat, item[first_line + back], item)

    # Orders: log-normal basket sizes; each line lands in one of its customer's orders.
    basket = rng.lognormal(np.log(BASKET_MEAN) - 0.125, 0.5, size=n_c)
    orders_per_customer = np.maximum(1, np.ceil(lines_per_customer / basket)).astype(np.int64)
    order_offset = np.cumsum(orders_per_customer) - orders_per_customer
    order = order_offset[customer] + (rng.random(n_l) * orders_per_customer[customer]).astype(
        np.int64
    )
    n_orders = int(orders_per_customer.sum())

    # One timestamp per order: weekdays busier than weekends, a mild November-December peak.
    day = rng.random(n_orders) * DAYS
    day = np.where(rng.random(n_orders) < 0.15, DAYS - rng.random(n_orders) * 61, day)
    weekday = (np.floor(day).astype(np.int64) + 6) % 7  # 2023-01-01 is a Sunday
    weekend = weekday >= 5
    day = np.where(weekend & (rng.random(n_orders) < 0.4), day - 2.0, day)
    day = np.clip(day, 0.0, DAYS - 1e-6)
    seconds = (np.floor(day) * 86_400 + 8 * 3600 + rng.random(n_orders) * 12 * 3600).astype(
        np.int64
    )
    timestamp = START + seconds[order]

    prices = base_price()
    quantity = rng.geometric(0.45, size=n_l).astype(np.int64)
    price = prices[item] * np.where(rng.random(n_l) < 0.1, 0.8, 1.0)

    in_time = np.argsort(timestamp, kind="stable")  # files are usually in time order
    return _Lines(
        customer=customer[in_time],
        item=item[in_time],
        timestamp=timestamp[in_time],
        quantity=quantity[in_time],
        price=np.round(price[in_time], 2),
        order=order[in_time],
        orders=n_orders,
    )


def _lines_table(
    lines: _Lines,
    n_customers: int,
    n_items: int,
    n_orders: int,
    customer_offset: int = 0,
    order_offset: int = 0,
) -> pa.Table:
    """Canonical columns; ids numbered ``offset + code`` and padded to the width of the
    whole data set's largest id, so chunks written apart read as one data set."""
    return pa.table(
        {
            "customer_id": _ids("c", n_customers, lines.customer, customer_offset),
            "item_id": _ids("i", n_items, lines.item),
            "timestamp": pa.array(lines.timestamp, type=pa.timestamp("s")),
            "quantity": pa.array(lines.quantity),
            "price": pa.array(lines.price),
            "order_id": _ids("o", n_orders, lines.order, order_offset),
        }
    )


def _ids(prefix: str, n: int, codes: np.ndarray, offset: int = 0) -> pa.Array:
    """String ids ``<prefix><number>`` for integer codes, without a Python loop over rows:
    code ``c`` is number ``offset + c``, zero-padded to the width of ``n - 1``."""
    width = len(str(max(n - 1, 0)))
    used = int(codes.max()) + 1 if len(codes) else 0
    numbers = pc.utf8_lpad(pa.array(np.arange(offset, offset + used)).cast(pa.string()), width, "0")
    names = pc.binary_join_element_wise(prefix, numbers, "")
    return pc.take(names, pa.array(codes))


def ensure_dataset(spec: SyntheticSpec, cache_dir: Path = CACHE_DIR) -> tuple[Path, float | None]:
    """The cached file for ``spec``, generated first if missing; (path, seconds or None)."""
    path = spec.cache_path(cache_dir)
    if path.is_file():
        return path, None
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table = generate_table(spec)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, staging, compression="zstd")
    os.replace(staging, path)
    return path, time.perf_counter() - start


# Lines per file of a dataset written in chunks: what one chunk's arrays cost (a few
# hundred MB at most), whatever the size of the whole.
CHUNK_LINES = 2_000_000


def dataset_path(spec: SyntheticSpec, cache_dir: Path = CACHE_DIR) -> Path:
    """The cache folder of ``spec`` written as a partitioned dataset."""
    return cache_dir / spec.cache_path(cache_dir).name.replace(".parquet", "-parts")


def ensure_partitioned(
    spec: SyntheticSpec, cache_dir: Path = CACHE_DIR, chunk_lines: int = CHUNK_LINES
) -> tuple[Path, float | None]:
    """``spec`` as a folder of Parquet files (``part-00000.parquet``, ...), generated a
    chunk of customers at a time so memory stays bounded by ``chunk_lines``; (folder,
    seconds or None when cached).

    The same shape as ``generate_table`` (the items, their popularity, categories and
    prices are shared by every chunk; each chunk draws its own customers, orders and
    lines from a seed of its own), not the same lines: a chunk's customers only buy
    within their chunk's orders, and each file is in time order on its own.
    """
    if spec.lines < spec.customers:
        raise ValueError("need at least one line per customer")
    folder = dataset_path(spec, cache_dir)
    if folder.is_dir():
        return folder, None
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    staging.mkdir()
    items = np.random.default_rng([spec.seed, 0])
    rank = items.permutation(spec.items)
    item_weight = 1.0 / (rank + 10.0) ** ITEM_ZIPF
    item_category = items.integers(0, CATEGORIES, size=spec.items)
    base_price = np.round(items.lognormal(1.2, 0.8, size=spec.items), 2) + 0.05
    chunks = max(1, -(-spec.lines // chunk_lines))
    customer_bounds = np.linspace(0, spec.customers, chunks + 1).round().astype(np.int64)
    line_bounds = np.linspace(0, spec.lines, chunks + 1).round().astype(np.int64)
    # Order ids are numbered across chunks; their width is fixed up front from a bound
    # (one order per line at most) so every file pads them alike.
    order_offset = 0
    for chunk in range(chunks):
        c0, c1 = customer_bounds[chunk], customer_bounds[chunk + 1]
        n_lines = int(line_bounds[chunk + 1] - line_bounds[chunk])
        lines = _customer_lines(
            np.random.default_rng([spec.seed, chunk + 1]),
            int(c1 - c0),
            n_lines,
            item_weight,
            item_category,
            lambda: base_price,
        )
        table = _lines_table(lines, spec.customers, spec.items, spec.lines, int(c0), order_offset)
        pq.write_table(table, staging / f"part-{chunk:05d}.parquet", compression="zstd")
        order_offset += lines.orders
        del lines, table
    os.replace(staging, folder)
    return folder, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate (or reuse) a synthetic data set.")
    parser.add_argument("--small", action="store_true", help=f"{SMALL.label} instead of full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = SMALL if args.small else FULL
    spec = SyntheticSpec(base.customers, base.items, base.lines, args.seed)
    path, seconds = ensure_dataset(spec)
    how = "cached" if seconds is None else f"generated in {seconds:.1f} s"
    print(f"{path} ({spec.label}, {how})")


if __name__ == "__main__":
    main()
