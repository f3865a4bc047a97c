"""Ranking on the planted-answer model: planted items first, exact suppression, cold start,
fill from popular, reasons from the customer's own purchases; and the ranker's path.

Every expectation is computed from the planted purchases with pandas, never read back
from the model under test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from support import ALL_ITEMS, END, GROUP_ITEMS, expected_popularity, posted, rank_one

from nbo.core.vocabulary import DAY
from nbo.data.history import build_history, to_unix_seconds
from nbo.models.candidates import ItemSide
from nbo.models.policy import POLICY_ALS
from nbo.models.popularity import popularity_scores, top_popular
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers.ranking import (
    SOURCE_ALSO_BOUGHT,
    SOURCE_BUY_AGAIN,
    SOURCE_CF,
    SOURCE_POPULAR,
    SOURCE_POPULAR_IN_STAGE,
    Ranking,
    customer_history,
)
from nbo.offers.suppression import SuppressionWindow

NOW = END
NOW_S = int(NOW.timestamp())
UNKNOWN = "nobody-we-know"


@pytest.fixture(scope="module")
def model(models_dir: Path) -> ServingModel:
    """The ALS path: the served model without its ranker (older artifacts and data too
    short for a ranker serve this way; the ranker's path is at the end, on ``served``)."""
    return dataclasses.replace(
        load_serving_model(models_dir), ranker=None, item_side=None, policy=POLICY_ALS
    )


@pytest.fixture(scope="module")
def customers(planted_purchases: pd.DataFrame) -> list[str]:
    return sorted(planted_purchases["customer_id"].unique())


def group_of(customer: str) -> str:
    return customer[0]


def bought(purchases: pd.DataFrame, customer: str, days: int | None) -> set[str]:
    """Items the customer bought at or after ``NOW - days`` (ever when None)."""
    mine = purchases[purchases["customer_id"] == customer]
    if days is not None:
        mine = mine[mine["timestamp"] >= NOW - pd.Timedelta(days=days)]
    return set(mine["item_id"])


def ids(ranking: Ranking) -> list[str]:
    return [str(offer.item_id) for offer in ranking.offers]


def test_planted_catalogue_is_what_the_model_serves(model: ServingModel) -> None:
    assert [str(i) for i in model.items.ids] == ALL_ITEMS
    assert len(model.customers) == 2 * 30


@pytest.mark.learned
def test_trained_model_ranks_the_planted_items_first(
    model: ServingModel, customers: list[str], planted_purchases: pd.DataFrame
) -> None:
    # With a 30-day window each customer has 8 of their group's 10 items left to offer,
    # so the top 3 must all come from their own group.
    for customer in customers:
        ranking = rank_one(model, customer, 3, NOW_S, SuppressionWindow(30))
        assert ranking.personalized
        assert [o.rank for o in ranking.offers] == [1, 2, 3]
        assert all(o.reason.source == SOURCE_CF for o in ranking.offers)
        own = set(GROUP_ITEMS[group_of(customer)])
        assert set(ids(ranking)) <= own, (customer, ids(ranking))
        assert not set(ids(ranking)) & bought(planted_purchases, customer, 30)


@pytest.mark.parametrize("days", [1, 10, 24, 30, 60, 149, 150])
def test_suppression_removes_exactly_the_items_bought_in_the_window(
    model: ServingModel, customers: list[str], planted_purchases: pd.DataFrame, days: int
) -> None:
    # Planted timestamps are END minus whole days, so days=10 etc. put purchases exactly
    # on the window's edge: "at or after now - days" must suppress them.
    for customer in customers:
        unsuppressed = rank_one(model, customer, len(ALL_ITEMS), NOW_S, SuppressionWindow(0))
        assert sorted(ids(unsuppressed)) == ALL_ITEMS
        window = bought(planted_purchases, customer, days)
        k = len(ALL_ITEMS) - len(window)
        suppressed = rank_one(model, customer, k, NOW_S, SuppressionWindow(days))

        assert suppressed.suppressed_items == len(window)
        assert set(ids(unsuppressed)) - set(ids(suppressed)) == window
        # The remaining items keep their order and their scores.
        assert ids(suppressed) == [i for i in ids(unsuppressed) if i not in window]
        kept_scores = [o.score for o in unsuppressed.offers if o.item_id not in window]
        assert [o.score for o in suppressed.offers] == kept_scores
        assert [o.rank for o in suppressed.offers] == list(range(1, k + 1))


def test_window_of_zero_days_suppresses_nothing(model: ServingModel, customers: list[str]) -> None:
    for customer in customers:
        ranking = rank_one(model, customer, len(ALL_ITEMS), NOW_S, SuppressionWindow(days=0))
        assert ranking.suppressed_items == 0
        assert sorted(ids(ranking)) == ALL_ITEMS
        assert all(o.reason.source == SOURCE_CF for o in ranking.offers)
        scores = [o.score for o in ranking.offers]
        assert scores == sorted(scores, reverse=True)


def test_window_all_suppresses_every_item_ever_bought(
    model: ServingModel, customers: list[str], planted_purchases: pd.DataFrame
) -> None:
    for customer in customers:
        ever = bought(planted_purchases, customer, None)
        assert len(ever) == 7
        k = len(ALL_ITEMS) - len(ever)
        ranking = rank_one(model, customer, k, NOW_S, SuppressionWindow(days=None))
        assert ranking.suppressed_items == len(ever)
        assert set(ids(ranking)) == set(ALL_ITEMS) - ever


def test_unknown_customer_gets_the_most_popular_items(
    model: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    days = model.manifest["config"]["popularity_days"]
    popularity = expected_popularity(planted_purchases, days)
    # Most buyers first, ties by item id.
    ordered = sorted(ALL_ITEMS, key=lambda item: (-popularity[item], item))

    history = build_history(planted_purchases)
    as_of = int(to_unix_seconds(planted_purchases["timestamp"]).max())
    scores = popularity_scores(history.counts, history.last_purchase, as_of, days)
    assert history.items.external(top_popular(scores, 5)) == ordered[:5]

    for k in (1, 5, len(ALL_ITEMS)):
        ranking = rank_one(model, UNKNOWN, k, NOW_S, SuppressionWindow(30))
        assert not ranking.personalized
        assert ranking.suppressed_items == 0
        assert ids(ranking) == ordered[:k]
        assert [o.rank for o in ranking.offers] == list(range(1, k + 1))
        assert [o.score for o in ranking.offers] == [float(popularity[i]) for i in ordered[:k]]
        for offer in ranking.offers:
            assert offer.reason.source == SOURCE_POPULAR
            assert offer.reason.because == ()

    # More than the catalogue: every item once, no padding.
    ranking = rank_one(model, UNKNOWN, len(ALL_ITEMS) + 5, NOW_S, SuppressionWindow(30))
    assert ids(ranking) == ordered


def check_full_list(ranking: Ranking, window: set[str], k: int) -> None:
    offered = ids(ranking)
    assert len(offered) == len(set(offered)), f"duplicates in {offered}"
    assert not set(offered) & window, f"suppressed items offered: {set(offered) & window}"
    # Everything not suppressed fits in k, so all of it is offered, exactly once.
    assert set(offered) == set(ALL_ITEMS) - window
    assert [o.rank for o in ranking.offers] == list(range(1, len(offered) + 1))
    assert all(np.isfinite(o.score) and abs(o.score) < 1e6 for o in ranking.offers)
    assert len(offered) <= k


def test_k_beyond_what_cf_can_offer_never_offers_suppressed_items(
    model: ServingModel, customers: list[str], planted_purchases: pd.DataFrame
) -> None:
    k = len(ALL_ITEMS)  # 20 of 20 items, 2 of them suppressed per customer
    for customer in customers:
        window = bought(planted_purchases, customer, 30)
        ranking = rank_one(model, customer, k, NOW_S, SuppressionWindow(30))
        check_full_list(ranking, window, k)


def test_k_beyond_the_catalogue_gives_no_duplicates(
    model: ServingModel, customers: list[str]
) -> None:
    k = len(ALL_ITEMS) + 5
    for customer in customers:
        ranking = rank_one(model, customer, k, NOW_S, SuppressionWindow(0))
        check_full_list(ranking, set(), k)


def test_short_cf_list_is_filled_from_popular_without_suppressed_or_duplicates(
    model: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    """The fill path itself, with CF made to return fewer than k items.

    implicit's own recommend is replaced by one returning only the top 3 CF items, so
    the remaining slots must come from popular, skipping CF items and suppressed ones.
    """
    customer = "a00"
    window = bought(planted_purchases, customer, 30)
    full = rank_one(model, customer, 3, NOW_S, SuppressionWindow(30))
    cf_ids = ids(full)

    als = model.als
    real_recommend = als.recommend

    def short_recommend(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        kwargs["N"] = 3
        return real_recommend(*args, **kwargs)

    als.recommend = short_recommend  # type: ignore[method-assign]
    try:
        ranking = rank_one(model, customer, 10, NOW_S, SuppressionWindow(30))
    finally:
        del als.recommend

    days = model.manifest["config"]["popularity_days"]
    popularity = expected_popularity(planted_purchases, days)
    ordered = sorted(ALL_ITEMS, key=lambda item: (-popularity[item], item))
    fill = [i for i in ordered if i not in window and i not in cf_ids][:7]

    assert ids(ranking) == cf_ids + fill
    assert [o.reason.source for o in ranking.offers] == [SOURCE_CF] * 3 + [SOURCE_POPULAR] * 7
    # Each fill item's probability is read at its rank among the items the customer may
    # be offered (suppressed ones skipped, those CF proposed counted).
    allowed = [i for i in ordered if i not in window]
    ranks = np.array([allowed.index(i) + 1 for i in fill], dtype=np.float64)
    assert [o.components.propensity for o in ranking.offers[3:]] == list(
        model.propensity.of_popular_ranks(ranks)
    )
    assert [o.rank for o in ranking.offers] == list(range(1, 11))
    assert not set(ids(ranking)) & window
    assert ranking.personalized


def test_cf_reasons_name_items_the_customer_bought(
    model: ServingModel, customers: list[str], planted_purchases: pd.DataFrame
) -> None:
    for customer in customers:
        ever = bought(planted_purchases, customer, None)
        ranking = rank_one(model, customer, 10, NOW_S, SuppressionWindow(30))
        cf = [o for o in ranking.offers if o.reason.source == SOURCE_CF]
        assert cf
        for offer in cf:
            because = list(offer.reason.because)
            assert 1 <= len(because) <= 3
            assert len(set(because)) == len(because)
            assert set(because) <= ever, (customer, offer.item_id, because)


def test_posted_purchases_of_a_customer_the_model_never_saw_always_count(
    model: ServingModel,
) -> None:
    """A purchase dated before the training data ended is "already in the model" only
    for a customer the model knows: for a new one (a till's late order, an import from
    yesterday) it adds orders and personalizes, as one dated after would."""
    early = model.trained_until_s - 5 * 86400
    recent = [
        posted("B01", early, "o1"),
        posted("B02", early + 3600, "o2"),
        posted("B02", early + 7200, "o3"),
    ]

    history = customer_history(model, UNKNOWN, recent)

    assert history.index is None and history.has_new_orders
    orders = dict(zip(model.items.external(history.items), history.counts.tolist(), strict=True))
    assert orders == {"B01": 1.0, "B02": 2.0}
    assert (history.confidence > 0).all()
    ranking = rank_one(model, UNKNOWN, 3, NOW_S, SuppressionWindow(0), recent)
    assert ranking.personalized and ranking.taste == "live"
    assert set(ids(ranking)) <= set(GROUP_ITEMS["b"])

    # The same purchase for a customer the model knows is in the model already.
    known = customer_history(model, "a00", [posted("B01", early, "o1")])
    assert not known.has_new_orders
    old = [posted("B01", early, "o1")]
    assert rank_one(model, "a00", 3, NOW_S, SuppressionWindow(0), old).taste == "trained"


# --- the ranker's path ----------------------------------------------------------------


@pytest.mark.learned
def test_served_offers_come_from_the_ranker_with_reasons(
    served: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    assert served.ranker is not None and served.propensity.ranker is not None
    now = served.trained_until_s + 3600
    window = SuppressionWindow.parse("30")
    for customer_id in ("a00", "b05"):
        ranking = rank_one(served, customer_id, 5, now, window)
        assert ranking.personalized
        group = customer_id[0].upper()
        assert [o.item_id[0] for o in ranking.offers[:3]] == [group] * 3
        for offer in ranking.offers:
            assert offer.reason.source in (
                SOURCE_CF,
                SOURCE_BUY_AGAIN,
                SOURCE_ALSO_BOUGHT,
                SOURCE_POPULAR_IN_STAGE,
                "popular",
            )
            assert offer.components is not None and 0.0 <= offer.components.propensity <= 1.0
            if offer.reason.source == SOURCE_BUY_AGAIN:
                assert offer.reason.because == (offer.item_id,)
        priorities = [o.priority for o in ranking.offers]
        assert priorities == sorted(priorities, reverse=True)
        # Never an item bought inside the window.
        recent = planted_purchases[
            (planted_purchases["customer_id"] == customer_id)
            & (planted_purchases["timestamp"] >= pd.Timestamp(now - 30 * DAY, unit="s"))
        ]["item_id"]
        assert not set(recent) & {o.item_id for o in ranking.offers}


def test_the_service_ranks_when_sources_come_back_empty(served: ServingModel) -> None:
    """A served model whose ItemKNN and stage sources propose nothing still answers k
    offers, none of them explained by a source that proposed nothing."""
    assert served.item_side is not None
    n_items = len(served.items)
    side = served.item_side
    emptied = dataclasses.replace(
        served,
        item_side=ItemSide.build(
            side.as_of_s,
            side.item_factors,
            sp.csr_matrix((n_items, n_items), dtype=np.float32),
            side.popularity,
            side.popularity_before,
            side.cycle_days,
            price=side.price,
            stage_popularity=None,
        ),
    )
    now = served.trained_until_s + 3600
    ranking = rank_one(emptied, "a00", 5, now, SuppressionWindow.parse("30"), stage="loyal")
    assert len(ranking.offers) == 5
    assert all(
        o.reason.source not in (SOURCE_ALSO_BOUGHT, SOURCE_POPULAR_IN_STAGE) for o in ranking.offers
    )


def test_explanations_are_worked_out_once_when_first_read(
    served: ServingModel, customers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is chosen never waits for its explanations: ranking explains nothing until
    the offers (or the table's explanations) are read, then explains the whole table
    once, to the same reasons as explaining it at once."""
    import nbo.offers.ranking as ranking_module
    from nbo.offers.ranking import OfferRequest, rank_offers

    calls: list[int] = []
    explain = ranking_module.explain

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return explain(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ranking_module, "explain", counted)
    now = served.trained_until_s + 3600
    window = SuppressionWindow.parse("30")
    requests = [
        OfferRequest(customers[0], 5),
        OfferRequest(customers[1], 5, recent=[posted("A0", now - 60, "o-1")]),
        OfferRequest(UNKNOWN, 5),
    ]
    rankings = rank_offers(served, requests, now, window)
    assert calls == [] and all(r.has_offers for r in rankings)
    sources = [[o.reason.source for o in r.offers] for r in rankings]
    assert calls == [1]
    # The sources as metrics count them, read from the columns: the offers' own.
    assert [r.offer_sources for r in rankings] == sources
    table = rankings[0].table
    assert all(r.table is table for r in rankings)
    histories = [customer_history(served, r.customer_id, r.recent) for r in requests]
    bought = [
        ranking_module.Bought(
            h.items[h.confidence > 0],
            h.counts[h.confidence > 0],
            h.confidence[h.confidence > 0],
            h.last_purchase[h.confidence > 0],
        )
        for h in histories
    ]
    again = explain(served, bought, table.choices, [r.stage for r in requests], now)
    assert calls == [1]
    for column in ("source", "because", "orders", "text"):
        assert getattr(table.explanations, column).tolist() == getattr(again, column).tolist()
    assert sources[2] and set(sources[2]) == {SOURCE_POPULAR}


def test_posted_orders_add_to_the_recency_weighted_counts(
    served: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    """The artifact holds each customer's weighted orders as of the end of the training
    data (each order halved every 60 days, computed here from the planted lines); an
    order posted since adds its weight there, and one the model already has adds
    nothing."""
    assert served.item_side is not None and served.item_side.half_life_days == 60.0
    until = served.trained_until_s
    mine = planted_purchases[planted_purchases["customer_id"] == "a00"]
    age_days = (until - to_unix_seconds(mine["timestamp"])) / DAY
    weight = pd.Series(0.5 ** (age_days / 60.0), index=mine.index)
    expected = weight.groupby(mine["item_id"]).sum().to_dict()

    history = customer_history(served, "a00")
    assert history.recent is not None and history.recent_orders is not None
    trained = dict(zip(served.items.external(history.items), history.recent.tolist(), strict=True))
    assert trained == pytest.approx(expected)
    assert history.recent_orders == pytest.approx(weight.sum())  # one item per order

    # Thirty days after the end: one order of an item a00 has and one they have not; and
    # a line dated before the end, already in the model.
    a_item, new_item = str(mine["item_id"].iloc[0]), "B09"
    later = until + 30 * DAY
    news = [
        posted(a_item, later, "n1"),
        posted(new_item, later, "n1"),
        posted(a_item, until - DAY, "old"),
    ]
    merged = customer_history(served, "a00", news)
    assert merged.recent is not None and merged.recent_orders is not None
    now = dict(zip(served.items.external(merged.items), merged.recent.tolist(), strict=True))
    # As of the end, an order placed 30 days later weighs 2 ** (30 / 60).
    assert now[a_item] == pytest.approx(expected[a_item] + 2**0.5)
    assert now[new_item] == pytest.approx(2**0.5)
    assert merged.recent_orders == pytest.approx(weight.sum() + 2**0.5)  # one new order

    # An order of items the catalogue does not hold is an order all the same (the
    # trainer counts every order): it adds to the customer's weighted orders, not to any
    # item's.
    outside = customer_history(served, "a00", [posted("NOT-IN-CATALOGUE", later, "n2")])
    assert outside.recent is not None and outside.items.tolist() == history.items.tolist()
    assert outside.recent.tolist() == pytest.approx(history.recent.tolist())
    assert outside.recent_orders == pytest.approx(weight.sum() + 2**0.5)
    both = customer_history(served, "a00", [*news, posted("NOT-IN-CATALOGUE", later, "n2")])
    assert both.recent_orders == pytest.approx(weight.sum() + 2 * 2**0.5)

    # A customer the model does not know: every posted order counts.
    fresh = customer_history(served, UNKNOWN, [posted(new_item, until - 60 * DAY, "f1")])
    assert fresh.recent is not None
    assert fresh.recent.tolist() == pytest.approx([0.5])
    assert fresh.recent_orders == pytest.approx(0.5)
