"""The customer profile per request, on the churn model: stage, churn risk, RFM and best
send time from the trained model and posted purchases, equal to what the trainer
published, for many customers at once as for one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support import profile_one

from nbo.core.vocabulary import DAY
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.state import PostedPurchase
from training.lifecycle import CUSTOMERS_FILE, read_customers
from training.pipeline import TrainResult


@pytest.fixture(scope="module")
def model(churn_trained: TrainResult) -> ServingModel:
    assert churn_trained.path is not None
    return load_serving_model(churn_trained.path.parent)


HORIZON = 90


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


def test_an_order_id_used_again_later_is_another_order(model: ServingModel) -> None:
    """Lines of one order id within a day of its first are one order (posted as several
    events, say); a line months later under the same id is another order, and the
    newer purchase is the customer's last (dated by the first line, one order would
    have put their last purchase months back and called them lapsed)."""
    now = model.trained_until_s + 200 * DAY
    long_ago, lately = now - 190 * DAY, now - DAY
    posted = [
        _posted("I01", long_ago, order="o-1", event="e1", price=3.0),
        _posted("I02", long_ago + 3_600, order="o-1", event="e2", price=3.0),
        _posted("I03", lately, order="o-1", event="e3", price=3.0),
    ]

    profile = profile_one(model, "reused", posted, now)

    assert profile.frequency == 2
    assert profile.first_purchase_s == long_ago and profile.last_purchase_s == lately
    assert profile.recency_days == pytest.approx(1.0, abs=1e-4)
    assert profile.stage != "lapsed"


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


def test_send_hours_worked_out_at_load_are_the_ones_computed_per_request(
    model: ServingModel,
) -> None:
    """A profile takes a customer's best send hour from the model when only trained
    orders count, all before its moment; the same profiles as computing every hour per
    request (the model without them), for every customer alone and all at once, with a
    clock past the training data and one inside it, with and without posted purchases."""
    computed = dataclasses.replace(model)
    computed.trained_send_hours = None
    assert model.trained_send_hours is not None
    known = [str(c) for c in model.customers.ids]
    first = model.orders.time[model.orders.indptr[:-1]] if model.orders is not None else None
    assert first is not None
    for now in (model.trained_until_s + 3 * DAY, int(np.median(first))):
        posted = [_posted("I02", now - DAY, order="o-2", event="e2")]
        chunks = [
            [(c, []) for c in known],
            [(known[0], posted), (known[1], [])],
            [("stranger", []), (known[2], [])],
        ]
        chunks += [[(c, [])] for c in known[:40]]
        chunks += [[(known[3], posted)]]
        for chunk in chunks:
            fast = customer_profiles(model, chunk, now)
            assert fast == customer_profiles(computed, chunk, now)
    hours = {p.best_send_hour for p in customer_profiles(model, [(c, []) for c in known], now)}
    assert len(hours) > 1


def test_the_served_risk_is_the_published_risk(churn_trained: TrainResult) -> None:

    assert churn_trained.path is not None
    model = load_serving_model(churn_trained.path.parent)
    customers = read_customers(str(churn_trained.path / CUSTOMERS_FILE)).set_index("customer_id")

    assert model.churn is not None and model.churn_horizon_days == HORIZON
    for customer_id in ("f000", "s001", "f010", "s011"):
        profile = profile_one(model, customer_id, (), model.trained_until_s)
        row = customers.loc[customer_id]
        assert profile.churn_risk == row["churn_risk"]
        assert profile.stage == row["stage"]
        assert profile.frequency == row["frequency"]
        assert profile.recency_days == pytest.approx(row["recency_days"])
        assert profile.best_send_hour == row["best_send_hour"]
