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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
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
    n_c, n_i, n_l = spec.customers, spec.items, spec.lines

    # Items: a random popularity rank (so item ids carry no order) and a category.
    rank = rng.permutation(n_i)
    item_weight = 1.0 / (rank + 10.0) ** ITEM_ZIPF
    item_category = rng.integers(0, CATEGORIES, size=n_i)

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

    base_price = np.round(rng.lognormal(1.2, 0.8, size=n_i), 2) + 0.05
    quantity = rng.geometric(0.45, size=n_l).astype(np.int64)
    price = base_price[item] * np.where(rng.random(n_l) < 0.1, 0.8, 1.0)

    order_sorted = np.argsort(timestamp, kind="stable")  # files are usually in time order
    return pa.table(
        {
            "customer_id": _ids("c", n_c, customer[order_sorted]),
            "item_id": _ids("i", n_i, item[order_sorted]),
            "timestamp": pa.array(timestamp[order_sorted], type=pa.timestamp("s")),
            "quantity": pa.array(quantity[order_sorted]),
            "price": pa.array(np.round(price[order_sorted], 2)),
            "order_id": _ids("o", n_orders, order[order_sorted]),
        }
    )


def _ids(prefix: str, n: int, codes: np.ndarray) -> pa.Array:
    """String ids ``<prefix><number>`` for integer codes, without a Python loop over rows."""
    width = len(str(max(n - 1, 0)))
    numbers = pc.utf8_lpad(pa.array(np.arange(n)).cast(pa.string()), width, "0")
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
