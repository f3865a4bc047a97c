"""Explanations: many offers at once equal the same reasoning done offer by offer, each
source explains itself in words, and a buy-again reason counts the customer's orders."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from support import rank_one

from nbo.core.vocabulary import DAY, KIND_INCENTIVE, KIND_PRODUCT
from nbo.models.served import ServingModel
from nbo.offers.explanations import Bought, _closest_bought, _OrderCounts
from nbo.offers.ranking import SOURCE_BUY_AGAIN
from nbo.offers.suppression import SuppressionWindow


def test_closest_bought_is_the_purchase_adding_most_to_the_neighbour_score() -> None:
    rng = np.random.default_rng(3)
    n_items, n_customers = 30, 8
    similar = sp.random(n_items, n_items, density=0.2, random_state=4, format="csr")
    similar.setdiag(1.0)  # each item its own neighbour, as ItemKNN's similarity holds it
    similar.sort_indices()
    similar.data = np.round(similar.data, 1)  # ties happen: the first neighbour wins
    model = SimpleNamespace(item_side=SimpleNamespace(similar_to=similar))
    bought = []
    for _ in range(n_customers):
        items = rng.choice(n_items, size=int(rng.integers(0, 10)), replace=False)
        counts = rng.integers(1, 4, len(items)).astype(np.float32)
        bought.append(Bought(items, counts, counts))
    customers = np.repeat(np.arange(n_customers), 5)
    items = rng.integers(0, n_items, len(customers))
    closest = _closest_bought(model, _OrderCounts(bought, n_items), customers, items)  # type: ignore[arg-type]
    for c, item, found in zip(customers, items, closest, strict=True):
        dense = np.zeros(n_items)
        dense[bought[c].items] = bought[c].counts
        start, end = similar.indptr[item], similar.indptr[item + 1]
        neighbours = similar.indices[start:end]
        contribution = similar.data[start:end] * dense[neighbours]
        contribution[neighbours == item] = 0.0  # never the item itself
        if len(contribution) == 0 or contribution.max() <= 0:
            assert found == -1
        else:
            assert found == neighbours[int(np.argmax(contribution))]
    assert (closest >= 0).any() and (closest == -1).any()


def test_order_counts_look_up_each_customers_own_purchases() -> None:
    bought = [
        Bought(np.array([4, 1]), np.array([2.0, 5.0]), np.ones(2)),
        Bought(np.array([], dtype=np.int64), np.array([]), np.array([])),
        Bought(np.array([1]), np.array([7.0]), np.ones(1)),
    ]
    lookup = _OrderCounts(bought, n_items=6)
    got = lookup.at(np.array([0, 0, 0, 1, 2, 2]), np.array([4, 1, 5, 1, 1, 4]))
    assert got.tolist() == [2.0, 5.0, 0.0, 0.0, 7.0, 0.0]


def test_order_counts_find_each_pairs_last_purchase_once() -> None:
    bought = [
        Bought(np.array([4, 1]), np.array([2.0, 5.0]), np.ones(2), np.array([40, 10])),
        Bought(np.array([3]), np.array([1.0]), np.ones(1)),  # when: not known
        Bought(np.array([1, 0]), np.array([7.0, 1.0]), np.ones(2), np.array([70, 5])),
    ]
    lookup = _OrderCounts(bought, n_items=6)
    found = lookup.find(np.array([2, 0, 0, 1, 2, 1]), np.array([1, 4, 5, 3, 0, 1]))
    assert lookup.counts_at(found).tolist() == [7.0, 2.0, 0.0, 1.0, 1.0, 0.0]
    last = lookup.last_at(found)
    assert last[[0, 1, 4]].tolist() == [70.0, 40.0, 5.0]
    assert np.isnan(last[[2, 3, 5]]).all()  # never bought, or when not known


def test_each_source_explains_itself_in_words() -> None:
    from nbo.catalog.schema import IncentiveOffer
    from nbo.offers.arbitration import Choices
    from nbo.offers.explanations import _texts

    winback = IncentiveOffer(
        id="winback", kind="incentive", incentive="percent_off", amount=10, value=5.0,
        title="10% off",
    )  # fmt: skip
    rows = [
        # source, item, item id, because, orders
        ("popular", 0, "A", (), 0),
        ("popular_in_stage", 0, "A", (), 0),
        ("buy_again", 1, "B", ("B",), 3),  # bought often: how often, and the item's rhythm
        ("buy_again", 1, "B", ("B",), 1),  # bought once: other customers' rhythm
        ("buy_again", 2, "C", ("C",), 4),  # no learned cycle
        ("also_bought", 0, "A", ("B",), 0),
        ("also_bought", 0, "A", (), 0),
        ("cf", 0, "A", ("B", "C"), 0),
        ("cf", 1, "B", ("B", "C"), 0),
        ("cf", 1, "B", ("B",), 0),
        ("cf", 0, "A", (), 0),
        ("catalog", -1, None, (), 0),
    ]
    n = len(rows)
    objects = [None] * (n - 1) + [winback]
    choices = Choices(
        starts=np.array([0, n]),
        kind=np.array([KIND_PRODUCT] * (n - 1) + [KIND_INCENTIVE], dtype=object),
        offer_id=np.array([f"o{i}" for i in range(n - 1)] + ["winback"], dtype=object),
        item=np.array([r[1] for r in rows]),
        item_id=np.array([r[2] for r in rows], dtype=object),
        source=np.array([r[0] for r in rows], dtype=object),
        score=np.zeros(n),
        propensity=np.zeros(n),
        value=np.zeros(n),
        stage_weight=np.zeros(n),
        lever=np.zeros(n),
        offer=np.array(objects, dtype=object),
        title=np.array([None if o is None else o.title for o in objects], dtype=object),
        ineligible=np.zeros(1),
        offer_cap=np.zeros(1),
    )
    because = np.empty(n, dtype=object)
    because[:] = [r[3] for r in rows]
    model = SimpleNamespace(
        item_names={"A": "Apples", "B": "Bread"},
        repurchase_cycle_days=np.array([np.nan, 7.4, np.nan]),
    )
    texts = _texts(
        model,  # type: ignore[arg-type]
        choices,
        choices.source,
        because,
        np.array([r[4] for r in rows]),
        ["at_risk"],
    )
    assert texts.tolist() == [
        "popular this month",
        "popular with customers like you",
        "you bought this 3 times; customers buy it again about every 7 days",
        "you bought this before; customers buy it again about every 7 days",
        "you bought this before",
        "customers who bought Bread also bought this",
        "popular this month",
        "customers who bought what you bought (Bread, C) also buy this",
        "you bought this before; it goes with C",
        "you bought this before",
        "matches your purchase history",
        "10% off: an offer for you",
    ]


# --- on the served model --------------------------------------------------------------


def test_a_buy_again_reason_counts_the_customers_own_orders(
    served: ServingModel, planted_purchases: pd.DataFrame
) -> None:
    now = served.trained_until_s + 3600
    ranking = rank_one(served, "a00", 10, now, SuppressionWindow.parse("30"))
    again = [o for o in ranking.offers if o.reason.source == SOURCE_BUY_AGAIN]
    assert again, "the planted customers buy their group's items again"
    mine = planted_purchases[planted_purchases["customer_id"] == "a00"]
    for offer in again:
        assert (
            offer.reason.orders == mine.loc[mine["item_id"] == offer.item_id, "order_id"].nunique()
        )


def test_an_also_bought_reason_never_names_the_offered_item_itself() -> None:
    """The ItemKNN similarity holds each item as its own neighbour: a customer who bought
    the coffee box was told "customers who bought Coffee box also bought this" on the
    coffee box. Another purchase is named when one adds to the score; when only the
    item itself does, the reason is the repurchase one."""
    from nbo.offers.arbitration import Choices
    from nbo.offers.explanations import explain

    # Items 0 (coffee), 1 (tea), 2 (mugs): each its own closest neighbour, then the others.
    similar = sp.csr_matrix(np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]]))
    model = SimpleNamespace(
        items=np.array(["COF", "TEA", "MUG"], dtype=object),
        item_id_array=np.array(["COF", "TEA", "MUG"], dtype=object),
        item_side=SimpleNamespace(similar_to=similar),
        item_names={"COF": "Coffee box", "TEA": "Tea box", "MUG": "Mugs"},
        repurchase_cycle_days=np.array([30.0, np.nan, np.nan]),
    )
    bought = [
        Bought(np.array([0]), np.array([3.0]), np.ones(1)),  # coffee only, three times
        Bought(np.array([0, 1]), np.array([3.0, 1.0]), np.ones(2)),  # coffee and tea
    ]
    rows = [(0, 0, "COF"), (0, 1, "TEA"), (1, 0, "COF"), (1, 2, "MUG")]
    n = len(rows)
    choices = Choices(
        starts=np.array([0, 2, 4]),
        kind=np.array([KIND_PRODUCT] * n, dtype=object),
        offer_id=np.array([r[2] for r in rows], dtype=object),
        item=np.array([r[1] for r in rows]),
        item_id=np.array([r[2] for r in rows], dtype=object),
        source=np.array(["also_bought"] * n, dtype=object),
        score=np.zeros(n),
        propensity=np.zeros(n),
        value=np.zeros(n),
        stage_weight=np.zeros(n),
        lever=np.zeros(n),
        offer=np.array([None] * n, dtype=object),
        title=np.array([None] * n, dtype=object),
        ineligible=np.zeros(2),
        offer_cap=np.zeros(2),
    )
    got = explain(model, bought, choices, ["active", "active"])  # type: ignore[arg-type]
    assert [b for b in got.because.tolist()] == [("COF",), ("COF",), ("TEA",), ("TEA",)]
    assert got.source.tolist() == ["buy_again", "also_bought", "also_bought", "also_bought"]
    assert got.orders.tolist() == [3, 0, 0, 0]
    assert got.text.tolist() == [
        "you bought this 3 times; customers buy it again about every 30 days",
        "customers who bought Coffee box also bought this",
        "customers who bought Tea box also bought this",
        "customers who bought Tea box also bought this",
    ]


def test_an_item_offered_before_its_usual_gap_says_when_it_was_last_bought() -> None:
    """Offered a day after the customer bought it, "you bought this 3 times; customers buy
    it again about every 30 days" reads as if it were due: the reason says when it was
    last bought while less than half the item's usual gap has passed, as before after."""
    from nbo.offers.arbitration import Choices
    from nbo.offers.explanations import explain

    now = 1_000 * DAY
    model = SimpleNamespace(
        items=np.array(["COF", "TEA"], dtype=object),
        item_id_array=np.array(["COF", "TEA"], dtype=object),
        item_side=None,
        item_names={},
        repurchase_cycle_days=np.array([30.0, np.nan]),
    )

    def bought(counts: list[float], days_ago: list[float] | None) -> Bought:
        last = None if days_ago is None else np.array([now - d * DAY for d in days_ago])
        return Bought(np.arange(len(counts)), np.array(counts), np.ones(len(counts)), last)

    customers = [
        bought([3.0, 2.0], [1.01, 1.0]),  # coffee three times, last yesterday; tea, no cycle
        bought([1.0], [0.1]),  # coffee once, two hours ago
        bought([3.0], [40.0]),  # coffee due again
        bought([1.0], [45.0]),
        bought([2.0], None),  # when is not known
        bought([4.0], [14.5]),  # under half the usual gap: early
        bought([4.0], [15.5]),  # over half of it: said as before
    ]
    rows = [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)]
    n = len(rows)
    starts = np.searchsorted([c for c, _ in rows], np.arange(len(customers) + 1))
    choices = Choices(
        starts=starts,
        kind=np.array([KIND_PRODUCT] * n, dtype=object),
        offer_id=np.array([f"o{i}" for i in range(n)], dtype=object),
        item=np.array([i for _, i in rows]),
        item_id=model.item_id_array[[i for _, i in rows]],
        source=np.array(["buy_again"] * n, dtype=object),
        score=np.zeros(n),
        propensity=np.zeros(n),
        value=np.zeros(n),
        stage_weight=np.zeros(n),
        lever=np.zeros(n),
        offer=np.array([None] * n, dtype=object),
        title=np.array([None] * n, dtype=object),
        ineligible=np.zeros(len(customers)),
        offer_cap=np.zeros(len(customers)),
    )
    stages = ["active"] * len(customers)
    got = explain(model, customers, choices, stages, now)  # type: ignore[arg-type]
    assert got.text.tolist() == [
        "you bought this 3 times, last 1 day ago; customers buy it again about every 30 days",
        "you bought this before",
        "you bought this less than a day ago; customers buy it again about every 30 days",
        "you bought this 3 times; customers buy it again about every 30 days",
        "you bought this before; customers buy it again about every 30 days",
        "you bought this 2 times; customers buy it again about every 30 days",
        "you bought this 4 times, last 14 days ago; customers buy it again about every 30 days",
        "you bought this 4 times; customers buy it again about every 30 days",
    ]
    # Without the clock nothing is said of when.
    plain = explain(model, customers, choices, stages)  # type: ignore[arg-type]
    assert plain.text[0] == "you bought this 3 times; customers buy it again about every 30 days"
