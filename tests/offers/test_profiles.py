"""Lifecycle stages, best send time and the per-request customer profile."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support import profile_one

from nbo.core.vocabulary import DAY, STAGES
from nbo.data.events import parse_events
from nbo.data.features import FEATURE_INDEX, FEATURE_NAMES
from nbo.models.lifecycle import LifecycleThresholds, stages_of
from nbo.models.send_time import (
    HOURS_PER_WEEK,
    best_send_hour,
    best_send_hours,
    hour_of_week,
    send_hour_prior,
)
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.state import PostedPurchase
from nbo.store.sqlite import SQLiteStore
from training.pipeline import TrainResult

THRESHOLDS = LifecycleThresholds(
    horizon_days=90,
    new_days=30,
    at_risk_threshold=0.5,
    loyal_max_risk=0.3,
    loyal_min_orders=10,
    loyal_min_monetary=1000,
)
MONDAY = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC
HOUR = 3600


def _rows(*customers: dict[str, float]) -> np.ndarray:
    """Feature rows with the given recency, tenure, frequency and monetary (rest NaN)."""
    features = np.full((len(customers), len(FEATURE_NAMES)), np.nan)
    for row, values in enumerate(customers):
        for name, value in values.items():
            features[row, FEATURE_INDEX[name]] = value
    return features


def _customer(
    recency: float, tenure: float, orders: float = 3, monetary: float = 100
) -> dict[str, float]:
    return {
        "recency_days": recency,
        "tenure_days": tenure,
        "frequency": orders,
        "monetary": monetary,
    }


# --- stages ---------------------------------------------------------------------------


def test_each_rule_gives_its_stage() -> None:
    features = _rows(
        {"frequency": 0, "monetary": 0},  # no purchase at all
        _customer(recency=5, tenure=5, orders=1),  # first purchase 5 days ago
        _customer(recency=120, tenure=400),  # no purchase for more than 90 days
        _customer(recency=10, tenure=200),  # risky
        _customer(recency=10, tenure=400, orders=12, monetary=2000),  # big and safe
        _customer(recency=10, tenure=400, orders=12, monetary=2000),  # big, not safe enough
        _customer(recency=10, tenure=400, orders=12, monetary=500),  # frequent, small
        _customer(recency=20, tenure=100),  # nothing special
    )
    risk = np.array([np.nan, 0.2, 0.9, 0.7, 0.1, 0.4, 0.1, 0.2])

    stages = stages_of(features, risk, THRESHOLDS)

    assert stages.tolist() == [
        "new",
        "new",
        "lapsed",
        "at_risk",
        "loyal",
        "active",
        "active",
        "active",
    ]
    assert set(stages) <= set(STAGES)


def test_precedence_lapsed_new_at_risk_loyal() -> None:
    features = _rows(
        _customer(recency=120, tenure=150, orders=20, monetary=5000),  # lapsed and new
        _customer(recency=5, tenure=5, orders=20, monetary=5000),  # new and at risk
        _customer(recency=5, tenure=300, orders=20, monetary=5000),  # at risk and loyal-sized
        _customer(recency=90, tenure=300),  # exactly the horizon: not lapsed yet
        _customer(recency=30, tenure=30),  # exactly new_days: still new
    )
    wide_new = dataclasses.replace(THRESHOLDS, new_days=200)

    stages = stages_of(features, np.array([0.1, 0.9, 0.9, 0.1, 0.1]), wide_new)

    assert stages.tolist()[:3] == ["lapsed", "new", "at_risk"]
    assert stages_of(features[3:], np.array([0.1, 0.1]), THRESHOLDS).tolist() == [
        "active",
        "new",
    ]


def test_without_a_churn_model_nobody_is_at_risk_and_loyal_rests_on_size() -> None:
    features = _rows(
        _customer(recency=10, tenure=400, orders=12, monetary=2000),
        _customer(recency=10, tenure=200),
    )
    assert stages_of(features, None, THRESHOLDS).tolist() == ["loyal", "active"]
    # Artifacts without loyal thresholds have no loyal customers.
    assert stages_of(features, None, LifecycleThresholds()).tolist() == ["active", "active"]


def test_thresholds_round_trip_through_the_manifest() -> None:
    section = {**THRESHOLDS.to_dict(), "stages": {"new": 3}, "as_of": "2026-01-01"}
    assert LifecycleThresholds.from_manifest(section) == THRESHOLDS
    assert LifecycleThresholds.from_manifest(None) == LifecycleThresholds()


# --- best send time -------------------------------------------------------------------


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


# --- the customer profile -------------------------------------------------------------


@pytest.fixture(scope="module")
def model(churn_trained: TrainResult) -> ServingModel:
    assert churn_trained.path is not None
    return load_serving_model(churn_trained.path.parent)


def _posted(
    item: str,
    at: int,
    order: str | None = None,
    event: str = "e1",
    quantity: float = 1.0,
    price: float | None = None,
) -> PostedPurchase:
    return PostedPurchase(item, quantity, at, order, event, price)


def test_an_unknown_customer_is_new_with_the_shops_best_hour(model: ServingModel) -> None:
    now = model.trained_until_s + 10 * DAY

    profile = profile_one(model, "stranger", (), now)

    assert isinstance(profile, CustomerProfile)
    assert profile.known is False and profile.profiled is True
    assert profile.stage == "new" and profile.churn_risk is None
    assert profile.recency_days is None and profile.frequency == 0 and profile.monetary == 0
    assert profile.first_purchase_s is None and profile.last_purchase_s is None
    assert profile.best_send_hour == model.manifest["lifecycle"]["best_send_hour_global"]
    assert profile.features["frequency"] == 0.0 and "recency_days" not in profile.features


def test_a_new_customers_posted_purchases_make_their_profile(model: ServingModel) -> None:
    now = model.trained_until_s + 10 * DAY
    first, second = now - 5 * DAY, now - 2 * DAY
    posted = [
        # One order of two lines (by order id): a posted price and the item's median.
        _posted("I01", first, order="o-1", event="e1", quantity=2, price=3.0),
        _posted("I02", first, order="o-1", event="e1"),
        # One order without an order id (by event): an unknown item takes the typical line.
        _posted("NEW-ITEM", second, event="e2"),
        # After now: not yet.
        _posted("I03", now + DAY, event="e3", price=100.0),
    ]

    profile = profile_one(model, "fresh", posted, now)

    assert profile.known is True
    assert profile.frequency == 2
    typical = model.typical_line_value
    assert typical == 4.0
    assert profile.monetary == pytest.approx(2 * 3.0 + 4.0 + typical)
    assert profile.first_purchase_s == first and profile.last_purchase_s == second
    assert profile.recency_days == pytest.approx(2.0, abs=1e-4)
    assert profile.stage == "new"  # first purchase 5 days ago
    assert profile.churn_risk is not None and 0 <= profile.churn_risk <= 1
    assert profile.features["distinct_items"] == 3
    assert profile.features["gap_mean_days"] == pytest.approx(3.0)


def test_posted_purchases_count_only_after_the_training_data(model: ServingModel) -> None:
    trained_until = model.trained_until_s
    now = trained_until + 3 * DAY
    before = profile_one(model, "f000", (), now)
    already_known = _posted("I01", trained_until - DAY, order="old", event="e-old")
    news = _posted("I01", trained_until + DAY, order="new", event="e-new", price=4.0)

    unchanged = profile_one(model, "f000", [already_known], now)
    after = profile_one(model, "f000", [already_known, news], now)

    assert before.known and before.frequency > 0
    assert unchanged == before
    assert after.frequency == before.frequency + 1
    assert after.monetary == pytest.approx(before.monetary + 4.0)
    assert after.last_purchase_s == trained_until + DAY
    assert after.recency_days == pytest.approx(2.0, abs=1e-4)
    index = model.customers.get("f000")
    assert index is not None
    bought_before = "I01" in model.items.external(model.history_of(index)[0])
    added = after.features["distinct_items"] - before.features["distinct_items"]
    assert added == (0.0 if bought_before else 1.0)


def test_a_new_customers_purchases_count_even_dated_before_the_training_data_ended(
    model: ServingModel,
) -> None:
    """The rule ``nbo.ranking.customer_history`` follows too: nothing of a customer the
    model does not know is in the model, so a late-arriving order counts."""
    trained_until = model.trained_until_s
    late = _posted("I01", trained_until - 3 * DAY, order="late", event="e-late", price=4.0)

    profile = profile_one(model, "late-arrival", [late], trained_until + DAY)

    assert profile.known is True and profile.frequency == 1
    assert profile.monetary == pytest.approx(4.0)
    assert profile.last_purchase_s == trained_until - 3 * DAY


def test_a_customer_gone_longer_than_the_horizon_is_lapsed(model: ServingModel) -> None:
    later = model.trained_until_s + 200 * DAY
    profile = profile_one(model, "f000", (), later)
    assert profile.stage == "lapsed"
    assert profile.recency_days is not None and profile.recency_days > 200


def test_an_erased_customer_is_unknown(model: ServingModel, churn_trained: TrainResult) -> None:
    assert churn_trained.path is not None
    own = load_serving_model(churn_trained.path.parent)
    assert profile_one(own, "s001", (), own.trained_until_s).known

    own.forget("s001")

    profile = profile_one(own, "s001", (), own.trained_until_s)
    assert profile.known is False and profile.frequency == 0 and profile.stage == "new"


def test_stages_across_the_published_customers_match_the_profiles(
    model: ServingModel,
    churn_trained: TrainResult,
) -> None:
    from training.lifecycle import CUSTOMERS_FILE, read_customers

    assert churn_trained.path is not None
    customers = read_customers(str(churn_trained.path / CUSTOMERS_FILE))
    sample = customers.sample(40, random_state=0)
    for row in sample.itertuples():
        profile = profile_one(model, row.customer_id, (), model.trained_until_s)
        assert profile.stage == row.stage, row.customer_id
        assert profile.churn_risk == row.churn_risk


def test_without_a_churn_model_the_stage_comes_from_rules_only(trained: TrainResult) -> None:
    assert trained.path is not None
    plain = load_serving_model(trained.path.parent)
    assert plain.churn is None

    profile = profile_one(plain, "a00", (), plain.trained_until_s)

    assert profile.known and profile.churn_risk is None
    assert profile.stage in {"new", "active", "loyal"}
    assert profile.frequency > 0


def test_an_artifact_without_order_tables_still_profiles_known_customers(
    model: ServingModel,
) -> None:
    legacy = dataclasses.replace(model, orders=None)
    index = model.customers.get("f000")
    assert index is not None
    _items, _confidence, last = model.history_of(index)

    profile = profile_one(legacy, "f000", (), model.trained_until_s)

    assert profile.known and profile.frequency == len(np.unique(last))
    assert profile.last_purchase_s == int(last.max())


def test_the_store_returns_posted_prices(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    valid, rejected = parse_events(
        {
            "event_id": "e1",
            "type": "purchase",
            "customer_id": "c1",
            "timestamp": "2026-01-01T10:00:00Z",
            "items": [{"item_id": "A", "quantity": 2, "price": 1.5}, {"item_id": "B"}],
        }
    )
    assert not rejected
    store.add_events([event for _position, event in valid])

    purchases = store.purchases_of("c1")

    assert [(p.item_id, p.quantity, p.price) for p in purchases] == [
        ("A", 2.0, 1.5),
        ("B", 1.0, None),
    ]
    store.close()


def test_profiles_of_many_customers_at_once_equal_one_at_a_time(model: ServingModel) -> None:
    """A campaign profiles its chunk in one pass; each profile is the one an API call
    computes alone: known and unknown customers, posted purchases, nobody at all."""
    now = model.trained_until_s + 10 * DAY
    known = [str(c) for c in model.customers.ids[:25]]
    customers: list[tuple[str, list[PostedPurchase]]] = [(c, []) for c in known]
    customers += [
        ("stranger", []),
        ("fresh", [_posted("I01", now - 5 * DAY, order="o-1", price=3.0)]),
        (known[0], [_posted("I02", now - DAY, order="o-2", event="e2")]),
        ("", []),
    ]
    together = customer_profiles(model, customers, now)
    alone = [profile_one(model, c, posted, now) for c, posted in customers]
    assert together == alone
    assert {p.stage for p in together} >= {"new"} and len({p.stage for p in together}) > 1
