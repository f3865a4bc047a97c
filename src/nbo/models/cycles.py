"""Repurchase cycles: how long customers typically wait before buying an item again.

A coffee refill comes back every few weeks; a sofa does not come back at all. For items
with enough repeat buyers, the trainer learns the typical gap between two purchases of
the item by the same customer and stores it in the artifact; suppression then keeps such
an item out of a customer's offers for its learned cycle after they bought it, and every
other item for the default window.

The cycle of an item is a median of medians: each repeat buyer's median gap between
consecutive purchase days, then the median over the item's repeat buyers, so one heavy
(wholesale) buyer counts as one buyer and cannot pull the cycle to "daily". Purchases
count per calendar day (UTC): several orders of the item on one day are one purchase.

Everything here is pure and vectorised over integer arrays: sorts and segment
reductions, no Python loop over purchase lines or customers.
"""

from __future__ import annotations

import numpy as np

from nbo.core.vocabulary import DAY
from nbo.data.history import EncodedPurchases

# Above this a combined int64 sort key could overflow; fall back to a two-key lexsort.
_KEY_LIMIT = 2**62


def repurchase_cycles(
    purchases: EncodedPurchases,
    min_repeat_buyers: int = 5,
    max_days: float | None = None,
) -> np.ndarray:
    """Per item (positions of ``purchases.items``): the typical days between two purchases
    of it by the same customer; NaN where fewer than ``min_repeat_buyers`` customers
    bought it on two or more distinct days.

    A repeat buyer's gap is the median of the day differences between their consecutive
    purchase days of the item; the item's cycle is the median of those over its repeat
    buyers. ``max_days`` caps a learned cycle (None = no cap). Returns float32.
    """
    if min_repeat_buyers < 1:
        raise ValueError(f"min_repeat_buyers must be at least 1, got {min_repeat_buyers}")
    n_items = len(purchases.items)
    cycles = np.full(n_items, np.nan, dtype=np.float32)
    if len(purchases) == 0 or n_items == 0:
        return cycles

    # Distinct (customer, item, day) purchases, sorted by pair then day.
    day = purchases.time // DAY
    day = day - day.min()
    n_days = int(day.max()) + 1
    pair = purchases.customer.astype(np.int64) * n_items + purchases.item.astype(np.int64)
    n_pairs = len(purchases.customers) * n_items
    if n_pairs * n_days < _KEY_LIMIT:
        # One int64 key and a plain sort: several times faster than np.unique here.
        keys = np.sort(pair * n_days + day)
        keys = keys[np.append(True, keys[1:] != keys[:-1])]
        # Within a pair, differences of the keys are differences of days.
        pair, when = keys // n_days, keys
    else:  # pragma: no cover - needs more than 2**62 (customer, item, day) combinations
        ordering = np.lexsort((day, pair))
        pair, day = pair[ordering], day[ordering]
        distinct = np.append(True, (pair[1:] != pair[:-1]) | (day[1:] != day[:-1]))
        pair, when = pair[distinct], day[distinct]

    # Gaps between consecutive purchase days of the same pair (always >= 1 day).
    same = pair[1:] == pair[:-1]
    gaps = np.diff(when)[same]
    if len(gaps) == 0:
        return cycles
    gap_pair = pair[1:][same]

    # Each repeat buyer's median gap, doubled so it stays an integer (medians of whole
    # days are multiples of half a day), then the median over each item's buyers.
    buyer_pairs, buyer_twice, _ = _group_medians_twice(gap_pair, gaps)
    items, item_four_times, buyers = _group_medians_twice(buyer_pairs % n_items, buyer_twice)
    enough = buyers >= min_repeat_buyers
    learned = item_four_times[enough] / 4.0
    if max_days is not None:
        learned = np.minimum(learned, max_days)
    cycles[items[enough]] = learned
    return cycles


def _group_medians_twice(
    group: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct groups, twice the median of ``value`` per group, group sizes).

    Integer in, integer out: twice a median is the sum of the two middle values.
    ``group`` and ``value`` are non-negative int64; ``group`` need not be sorted.
    """
    span = int(value.max()) + 1
    if (int(group.max()) + 1) * span < _KEY_LIMIT:
        ordering = np.argsort(group * span + value)
    else:  # pragma: no cover - needs more than 2**62 (group, value) combinations
        ordering = np.lexsort((value, group))
    group, value = group[ordering], value[ordering]
    first = np.empty(len(group), dtype=bool)
    first[0] = True
    np.not_equal(group[1:], group[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, len(group)))
    twice = value[starts + (sizes - 1) // 2] + value[starts + sizes // 2]
    return group[starts], twice, sizes


def suppression_days_per_item(cycles: np.ndarray, default_days: int | None) -> np.ndarray:
    """Per item, how many days after a purchase it stays suppressed (float64).

    The learned cycle where ``cycles`` has one and it is shorter than ``default_days``,
    else ``default_days`` (with the meaning of ``nbo.suppression.SuppressionWindow``: None
    suppresses anything ever bought (inf), 0 never suppresses). A cycle only ever
    shortens the window, so a refill comes back when due: measured on Online Retail,
    holding items back for their full cycle (median 64 days, 90% longer than 30) cut
    NDCG@10 on all later purchases from 0.23 to 0.18, while capping at the default
    window kept it (0.2310 vs 0.2308 for the plain 30-day window).
    """
    default = np.inf if default_days is None else float(default_days)
    cycles = np.asarray(cycles, dtype=np.float64)
    return np.where(np.isnan(cycles), default, np.minimum(cycles, default))


def suppressed_mask(
    items: np.ndarray, last_purchase_s: np.ndarray, now_s: int, window_days: np.ndarray
) -> np.ndarray:
    """Which of a customer's purchased ``items`` (with their last purchase, unix seconds)
    are suppressed at ``now_s``, given ``suppression_days_per_item``.

    An item is suppressed while ``now_s - last <= its window`` (a purchase exactly one
    window ago is still suppressed, as with ``SuppressionWindow``); a window of 0 never
    suppresses, an infinite one always does.
    """
    window = window_days[items]
    age = now_s - np.asarray(last_purchase_s, dtype=np.int64)
    return (window > 0) & (age <= window * DAY)


def cycle_summary(cycles: np.ndarray | None) -> dict[str, object]:
    """How many items have a learned cycle, their share, and the distribution in days."""
    if cycles is None or len(cycles) == 0:
        return {"items": 0, "share": 0.0, "days": None}
    learned = cycles[~np.isnan(cycles)].astype(np.float64)
    summary: dict[str, object] = {
        "items": len(learned),
        "share": len(learned) / len(cycles),
        "days": None,
    }
    if len(learned):
        p10, p25, median, p75, p90 = np.percentile(learned, [10, 25, 50, 75, 90])
        summary["days"] = {
            "min": float(learned.min()),
            "p10": float(p10),
            "p25": float(p25),
            "median": float(median),
            "p75": float(p75),
            "p90": float(p90),
            "max": float(learned.max()),
        }
    return summary
