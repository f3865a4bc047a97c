"""How like the shared Online Retail file the ``wholesale`` regime is, and how its knobs
were chosen: ``python -m bench.calibrate [--online-retail PATH] [--search N]``.

A regime stands for a kind of shop only if its data looks like that shop's, and the
figures that decide which offers win are about repeats: how many of a customer's lines
reorder one of their own items, and how many of the items they buy next are ones they
bought before the suppression window (``buy again`` finds those; only taste and
popularity find the others). The first ``wholesale`` knobs drew about 55% repeats where
the shared file has 31%, which made buying again nearly as good as the regime's own odds.

``shop_statistics`` measures a purchase table the same way whatever drew it, from the
data alone (no model, no method of nbo's); ``distance`` is the sum over those figures of
|log(figure / target)|; ``--search N`` draws N sets of the wholesale knobs at random,
generates each (seed 0) and prints the five nearest to the shared file. The regime's
defaults are the nearest found by ``--search 60`` (seed 0), rounded: the ranker and the
served offers were not looked at in choosing them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.generate import ONLINE_RETAIL
from bench.regimes import REGIMES, Wholesale
from bench.report import table
from nbo.data.mapping import load_mapping
from nbo.data.purchases import read_purchases

# The trainer's default holdout and suppression window: the test window is the last 30
# days, "recent" the 30 before it.
WINDOW_DAYS = 30
DAY = pd.Timedelta(days=1)

# What each figure says, in the order printed.
STATISTICS = {
    "line_repeat": "share of a customer's order lines that reorder one of their items",
    "next_repeat": "share of the last 30 days' (customer, item) pairs bought before",
    "next_new": "share of those pairs not bought in the 30 days before (truth 'new')",
    "new_from_before": "share of the 'new' pairs bought before those 30 days (buy-again's)",
    "items_per_customer": "distinct items per customer, median",
    "lines_per_order": "lines per order, median",
    "one_order": "share of customers with one order",
    "orders_per_customer": "orders per customer, mean",
    "gap_days": "days between a customer's orders, median",
    "buying_now": "share of customers buying in the last 30 days",
}

# The wholesale knobs the search draws, each uniformly from a range.
SEARCH_RANGES: dict[str, tuple[float, float]] = {
    "repeat_share": (0.05, 0.45),
    "favourite_categories": (3, 12),  # an integer, below the range's end
    "taste_share": (0.4, 0.8),
    "gap_days": (25.0, 60.0),
    "gap_sigma": (0.6, 1.3),
    "basket": (10.0, 20.0),
    "joining": (0.3, 0.7),
    "leaving": (0.2, 0.7),
}
INTEGER_KNOBS = {"favourite_categories"}


def shop_statistics(purchases: pd.DataFrame) -> dict[str, float]:
    """The ``STATISTICS`` of a canonical purchase table (``customer_id``, ``item_id``,
    ``timestamp``, ``order_id``), the last ``WINDOW_DAYS`` days as the test window."""
    lines = purchases[["customer_id", "item_id", "order_id"]].assign(
        at=pd.to_datetime(purchases["timestamp"])
    )
    end = lines["at"].max()
    cut = end - WINDOW_DAYS * DAY
    before = lines[lines["at"] < cut]
    recent = before[before["at"] >= cut - WINDOW_DAYS * DAY]
    older = before[before["at"] < cut - WINDOW_DAYS * DAY]
    pairs = lines.loc[lines["at"] >= cut, ["customer_id", "item_id"]].drop_duplicates()
    pairs = pairs[pairs["customer_id"].isin(before["customer_id"])]
    in_recent = _pairs_in(pairs, recent)
    in_older = _pairs_in(pairs, older)
    new = ~in_recent
    # Each (customer, item, order) once, in time order: a line repeats if it is not the
    # customer's first order of the item.
    distinct = lines.sort_values("at", kind="stable").drop_duplicates(
        ["customer_id", "item_id", "order_id"]
    )
    orders = lines.groupby(["customer_id", "order_id"])["at"].min().reset_index()
    orders = orders.sort_values(["customer_id", "at"], kind="stable")
    per_customer = orders.groupby("customer_id").size()
    gaps = orders.groupby("customer_id")["at"].diff().dropna() / DAY
    return {
        "line_repeat": float((distinct.groupby(["customer_id", "item_id"]).cumcount() > 0).mean()),
        "next_repeat": float((in_recent | in_older).mean()),
        "next_new": float(new.mean()),
        "new_from_before": float(in_older[new].mean()),
        "items_per_customer": float(lines.groupby("customer_id")["item_id"].nunique().median()),
        "lines_per_order": float(distinct.groupby("order_id").size().median()),
        "one_order": float((per_customer == 1).mean()),
        "orders_per_customer": float(per_customer.mean()),
        "gap_days": float(gaps.median()),
        "buying_now": pairs["customer_id"].nunique() / lines["customer_id"].nunique(),
    }


def _pairs_in(pairs: pd.DataFrame, lines: pd.DataFrame) -> np.ndarray:
    """Per row of ``pairs``, whether ``lines`` hold that (customer, item)."""
    keys = pd.MultiIndex.from_frame(pairs[["customer_id", "item_id"]])
    seen = pd.MultiIndex.from_frame(lines[["customer_id", "item_id"]].drop_duplicates())
    return np.asarray(keys.isin(seen))


def distance(statistics: dict[str, float], target: dict[str, float]) -> float:
    """Sum over the figures of |log(figure / target)|: 0 is the same shop, and being
    twice or half as high weighs the same."""
    return float(sum(abs(np.log(statistics[name] / target[name])) for name in STATISTICS))


def search(
    target: dict[str, float], trials: int, seed: int = 0
) -> list[tuple[float, dict[str, float]]]:
    """``trials`` random sets of the wholesale knobs, nearest to ``target`` first."""
    rng = np.random.default_rng(seed)
    found = []
    for trial in range(trials):
        knobs: dict[str, float] = {}
        for name, (low, high) in SEARCH_RANGES.items():
            knobs[name] = (
                int(rng.integers(int(low), int(high)))
                if name in INTEGER_KNOBS
                else float(rng.uniform(low, high))
            )
        drawn = shop_statistics(Wholesale(**knobs).generate(0))  # type: ignore[arg-type]
        found.append((distance(drawn, target), knobs))
        print(f"  {trial + 1}/{trials}: distance {found[-1][0]:.2f}", flush=True)
    return sorted(found, key=lambda pair: pair[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--online-retail", type=Path, default=ONLINE_RETAIL)
    parser.add_argument("--search", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if not args.online_retail.is_file():
        parser.exit(2, f"bench.calibrate: error: {args.online_retail} not found\n")
    shared, _cleaning = read_purchases(args.online_retail, load_mapping("online-retail"))
    target = shop_statistics(shared)
    columns = {"online-retail": target}
    for name in ("wholesale", "wholesale-reorders"):
        regime = REGIMES[name]()
        columns[name] = shop_statistics(regime.generate(0))
    rows = [[name, *(f"{c[name]:.3f}" for c in columns.values())] for name in STATISTICS]
    rows.append(["distance", *(f"{distance(c, target):.2f}" for c in columns.values())])
    print(table(["figure", *columns], rows))
    for name, meaning in STATISTICS.items():
        print(f"  {name}: {meaning}")
    if args.search:
        print(f"searching {args.search} sets of the wholesale knobs in {SEARCH_RANGES}")
        for gap, knobs in search(target, args.search)[:5]:
            print(f"  distance {gap:.2f}: {json.dumps({k: round(v, 3) for k, v in knobs.items()})}")


if __name__ == "__main__":
    main()
