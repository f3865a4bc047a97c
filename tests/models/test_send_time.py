"""Best send time: hours of the week from Monday 00:00 UTC, a customer's habit, and the
shop's pattern for a customer with little history."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from nbo.models.send_time import (
    HOURS_PER_WEEK,
    best_send_hour,
    best_send_hours,
    hour_of_week,
    send_hour_prior,
)

MONDAY = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC
HOUR = 3600


def test_hours_of_the_week_start_on_monday_midnight_utc() -> None:
    times = [MONDAY, MONDAY + 34 * HOUR + 59 * 60, MONDAY + 168 * HOUR - 1, MONDAY + 168 * HOUR]
    assert hour_of_week(np.array(times)).tolist() == [0, 34, 167, 0]
    tuesday = int(datetime(2011, 3, 8, 10, 30, tzinfo=UTC).timestamp())
    assert hour_of_week(np.array([tuesday])).tolist() == [24 + 10]


def _weekly(hour: int, weeks: int) -> np.ndarray:
    return np.array([MONDAY + (week * 168 + hour) * HOUR for week in range(weeks)])


def test_a_customer_who_always_buys_on_tuesday_at_ten_gets_34() -> None:
    # The shop's busiest hour is Thursday 15:00 (87).
    prior = send_hour_prior(np.concatenate([_weekly(87, 50), _weekly(34, 5), _weekly(12, 20)]))
    assert best_send_hour(np.empty(0, np.int64), prior) == 87

    assert best_send_hour(_weekly(34, 8), prior) == 34


def test_a_single_purchase_is_pulled_toward_the_shop_pattern() -> None:
    prior = send_hour_prior(_weekly(87, 50))
    one = _weekly(34, 1)

    assert best_send_hour(one, prior) == 87
    # Without pseudo-orders the one purchase decides.
    assert best_send_hour(one, prior, pseudo_orders=0) == 34
    # Enough of their own orders outweigh the prior's five.
    assert best_send_hour(_weekly(34, 6), prior) == 34


def test_neighbouring_hours_are_one_habit_across_the_week_boundary() -> None:
    uniform = np.full(HOURS_PER_WEEK, 1 / HOURS_PER_WEEK)
    # Three orders on Sunday 23:00, three on Monday 00:00, four on Wednesday 02:00 (50):
    # Sunday night and Monday midnight are one habit of six (smoothed: 2.25 at hours 167
    # and 0, ties to the earliest), which beats four at one hour (2.0); cut at the week's
    # end, each side would be 1.5 and Wednesday would win.
    orders = np.concatenate([_weekly(167, 3), _weekly(168, 3), _weekly(50, 4)])
    assert best_send_hour(orders, uniform, pseudo_orders=0) == 0
    assert best_send_hour(_weekly(50, 4), uniform, pseudo_orders=0) == 50


def test_every_customer_at_once_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(4)
    lengths = rng.integers(0, 8, 500)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    times = MONDAY + rng.integers(0, 60 * 168 * HOUR, int(indptr[-1]))
    prior = send_hour_prior(times)

    together = best_send_hours(indptr, times, prior)

    alone = [best_send_hour(times[indptr[c] : indptr[c + 1]], prior) for c in range(500)]
    assert together.tolist() == alone
    assert prior.sum() == pytest.approx(1.0) and len(prior) == HOURS_PER_WEEK
    assert np.allclose(send_hour_prior(np.empty(0, np.int64)), 1 / HOURS_PER_WEEK)
