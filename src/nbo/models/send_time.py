"""Best send time: the hour of the week in which a customer usually buys.

Hours of the week run 0..167 from Monday 00:00 UTC (timestamps are naive UTC). Each of
a customer's orders votes for its hour. A customer with few orders says little, so
``pseudo_orders`` votes are added, spread as the hour-of-week histogram of all orders
(the prior): with one order the customer leans toward the shop's busiest hours, with
fifty their own habit wins. The votes are then smoothed circularly over the neighbouring
hours (a purchase at 10:05 and one at 10:55 are one habit, and Sunday 23:00 borders
Monday 00:00), and the best hour is the argmax (ties: the earliest hour).

One vectorised function serves every customer (the trainer) and one customer (the
service), so both answer the same hour for the same orders.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np

HOURS_PER_WEEK: Final = 168
# Pseudo-orders of prior added to every customer's votes.
PSEUDO_ORDERS: Final = 5.0
# Circular smoothing over (previous hour, hour, next hour).
SMOOTHING: Final = (0.25, 0.5, 0.25)
# 1970-01-01 (unix 0) was a Thursday: hour 3 * 24 of the week.
_EPOCH_HOUR_OF_WEEK = 72
# Customers per block, so the dense (customers x 168) votes stay a few megabytes.
_BLOCK = 16_384


def hour_of_week(time_s: np.ndarray) -> np.ndarray:
    """Hour of the week (0 = Monday 00:00-00:59 UTC) of unix seconds."""
    return (np.asarray(time_s, dtype=np.int64) // 3600 + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


def send_hour_prior(order_time: np.ndarray) -> np.ndarray:
    """Share of all orders in each hour of the week (sums to 1; uniform without orders)."""
    counts = np.bincount(hour_of_week(order_time), minlength=HOURS_PER_WEEK).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(HOURS_PER_WEEK, 1.0 / HOURS_PER_WEEK)


def best_send_hours(
    indptr: np.ndarray,
    order_time: np.ndarray,
    prior: np.ndarray,
    pseudo_orders: float = PSEUDO_ORDERS,
) -> np.ndarray:
    """Best hour of the week per customer, whose orders are the segments ``indptr`` of
    ``order_time`` (int64). A customer without orders gets the prior's best hour."""
    n = len(indptr) - 1
    hours = hour_of_week(order_time)
    prior_votes = pseudo_orders * np.asarray(prior, dtype=np.float64)
    best = np.empty(n, dtype=np.int64)
    for block in range(0, n, _BLOCK):
        stop = min(block + _BLOCK, n)
        lo, hi = int(indptr[block]), int(indptr[stop])
        customer = np.repeat(np.arange(stop - block), np.diff(indptr[block : stop + 1]))
        votes = np.bincount(
            customer * HOURS_PER_WEEK + hours[lo:hi], minlength=(stop - block) * HOURS_PER_WEEK
        ).reshape(stop - block, HOURS_PER_WEEK)
        best[block:stop] = np.argmax(_smooth(votes + prior_votes), axis=1)
    return best


def best_send_hour(
    order_time: np.ndarray, prior: np.ndarray, pseudo_orders: float = PSEUDO_ORDERS
) -> int:
    """Best hour of the week of one customer's orders (``best_send_hours`` of one)."""
    indptr = np.array([0, len(order_time)], dtype=np.int64)
    return int(best_send_hours(indptr, order_time, prior, pseudo_orders)[0])


def _smooth(votes: np.ndarray) -> np.ndarray:
    """Circular smoothing along the last axis (hours), wrapping Sunday into Monday."""
    before, here, after = SMOOTHING
    wrapped = np.concatenate([votes[..., -1:], votes, votes[..., :1]], axis=-1)
    return before * wrapped[..., :-2] + here * votes + after * wrapped[..., 2:]


def next_send_at(hour_of_week: int, now: datetime) -> datetime:
    """The next occurrence of ``hour_of_week`` (Monday 00:00 UTC = 0) strictly after
    ``now``, in UTC."""
    hour_of_week %= HOURS_PER_WEEK
    now = now.astimezone(UTC)
    week_start = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    candidate = week_start + timedelta(hours=hour_of_week)
    if candidate <= now:
        candidate += timedelta(days=7)
    return candidate
