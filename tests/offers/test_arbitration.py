"""Arbitration: priority = propensity x value x stage weight x lever, under the catalogue."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.catalog.terms import Catalog
from nbo.core.vocabulary import DAY, KIND_INCENTIVE, KIND_PRODUCT
from nbo.offers.arbitration import (
    RULE_INELIGIBLE,
    RULE_OFFER_CAP,
    Choices,
    Components,
    Contest,
    ProductCandidates,
    arbitrate,
)
from nbo.offers.state import Contact

NOW = 1_700_000_000

CATALOG = """
version: 1
products:
  value: 10.0
items:
  - item_id: B
    lever: 1.0
categories:
  gifts: [C]
offers:
  - id: winback
    kind: incentive
    incentive: percent_off
    amount: 15
    title: 15% off
    value: 40.0
    response_rate: 0.1
    stages: [at_risk, lapsed]
    channels: [email]
    cap_per_customer: 2
    cap_days: 30
  - id: reward
    kind: incentive
    incentive: points_multiplier
    amount: 2
    value: 30.0
    response_rate: 0.1
    stages: [loyal]
  - id: old-sale
    kind: incentive
    incentive: percent_off
    amount: 50
    value: 1000.0
    response_rate: 0.5
    valid_to: 2020-01-01T00:00:00Z
  - id: gifts-app
    kind: product
    category: gifts
    channels: [app]
    value: 10.0
    title: Gifts of the week
stage_weights:
  at_risk: {incentive: 1.5, product: 1.0}
"""


@dataclass(frozen=True)
class Row:
    """One arbitrated offer, read from the ``Choices`` columns (what the tests compare)."""

    offer_id: str
    kind: str
    components: Components
    item_id: str | None
    source: str | None
    score: float
    title: str | None
    incentive: str | None
    amount: float | None

    @property
    def priority(self) -> float:
        return self.components.priority


def rows_of(chosen: Choices, customer: int) -> list[Row]:
    """Customer ``customer``'s offers, best first."""
    out = []
    for n in range(int(chosen.starts[customer]), int(chosen.starts[customer + 1])):
        offer = chosen.offer[n]
        out.append(
            Row(
                chosen.offer_id[n],
                chosen.kind[n],
                Components(
                    float(chosen.propensity[n]),
                    float(chosen.value[n]),
                    float(chosen.stage_weight[n]),
                    float(chosen.lever[n]),
                ),
                chosen.item_id[n],
                chosen.source[n],
                float(chosen.score[n]),
                chosen.title[n],
                None if offer is None else offer.incentive,
                None if offer is None else offer.amount,
            )
        )
    return out


def arbitrate_one(
    candidates: ProductCandidates,
    item_ids: list[str],
    catalog: Catalog,
    stage: str,
    channel: str,
    now_s: int,
    impressions: list[Contact],
    item_price: np.ndarray | None,
    typical_line_value: float | None,
    k: int,
) -> tuple[list[Row], dict[str, int]]:
    """One customer's arbitration (a contest of one): their offers and the removals."""
    chosen = arbitrate(
        candidates,
        [Contest(stage, channel, k, impressions)],
        np.asarray(item_ids, dtype=object),
        catalog,
        now_s,
        item_price,
        typical_line_value,
    )
    removed = {RULE_INELIGIBLE: int(chosen.ineligible[0]), RULE_OFFER_CAP: int(chosen.offer_cap[0])}
    return rows_of(chosen, 0), removed


def catalog_from(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_catalog(path)


def candidates(propensities: dict[str, float]) -> tuple[ProductCandidates, list[str]]:
    """Candidates in the given order, and the item ids of the catalogue indices."""
    ids = list(propensities)
    values = np.asarray(list(propensities.values()))
    return ProductCandidates(np.arange(len(ids)), ["cf"] * len(ids), values, values), ids


def run(catalog: Catalog, stage: str, channel: str = "email", impressions=(), k: int = 10):
    offered, ids = candidates({"A": 0.30, "B": 0.20, "C": 0.10})
    return arbitrate_one(
        offered,
        ids,
        catalog,
        stage,
        channel,
        NOW,
        list(impressions),
        item_price=None,
        typical_line_value=None,
        k=k,
    )


def test_priority_is_the_product_of_its_components(tmp_path: Path) -> None:
    choices, _ = run(catalog_from(tmp_path, CATALOG), "at_risk")
    for choice in choices:
        c = choice.components
        assert choice.priority == pytest.approx(c.propensity * c.value * c.stage_weight * c.lever)
    by_id = {choice.offer_id: choice for choice in choices}
    winback = by_id["winback"]
    assert winback.kind == KIND_INCENTIVE and winback.item_id is None
    assert (winback.components.propensity, winback.components.value) == (0.1, 40.0)
    assert winback.components.stage_weight == 1.5
    # 0.1 x 40 x 1.5 = 6 beats A's 0.3 x 10 = 3: the incentive wins for an at-risk customer.
    assert choices[0].offer_id == "winback"
    assert [c.item_id for c in choices if c.kind == KIND_PRODUCT] == ["A", "B"]


def test_stage_channel_and_dates_decide_eligibility(tmp_path: Path) -> None:
    catalog = catalog_from(tmp_path, CATALOG)
    loyal, _ = run(catalog, "loyal")
    ids = {c.offer_id for c in loyal}
    assert "reward" in ids and "winback" not in ids
    assert "old-sale" not in ids  # expired, despite the highest value of all
    app, removed = run(catalog, "at_risk", channel="app")
    assert "winback" not in {c.offer_id for c in app}  # email only
    # C belongs to an app-only category offer: offered on app, ineligible on email.
    assert "C" in {c.item_id for c in app}
    email, removed = run(catalog, "active", channel="email")
    assert "C" not in {c.item_id for c in email}
    # C, and the expired old-sale (for every stage).
    assert removed[RULE_INELIGIBLE] == 2


def test_incentives_for_the_stage_ruled_out_by_channel_or_date_count_as_ineligible(
    tmp_path: Path,
) -> None:
    """A lapsed customer on the app: the email-only win-back is theirs but not on this
    channel, and the expired old-sale is past its date: both are counted; the loyal
    customers' reward is not theirs at all and is not."""
    catalog = catalog_from(tmp_path, CATALOG)
    offered, ids = candidates({"A": 0.30, "B": 0.20})  # no C: no product is ineligible
    app, removed = arbitrate_one(offered, ids, catalog, "lapsed", "app", NOW, [], None, None, 10)
    assert "winback" not in {c.offer_id for c in app}
    assert removed[RULE_INELIGIBLE] == 2
    email, removed = arbitrate_one(
        offered, ids, catalog, "lapsed", "email", NOW, [], None, None, 10
    )
    assert "winback" in {c.offer_id for c in email}
    assert removed[RULE_INELIGIBLE] == 1  # old-sale only
    loyal, removed = arbitrate_one(offered, ids, catalog, "loyal", "app", NOW, [], None, None, 10)
    assert "reward" in {c.offer_id for c in loyal}
    assert removed[RULE_INELIGIBLE] == 1  # old-sale; winback is for other stages


def test_a_lever_reorders_offers_as_the_formula_says(tmp_path: Path) -> None:
    before, _ = run(catalog_from(tmp_path, CATALOG), "active")
    assert [c.item_id for c in before] == ["A", "B"]
    # B's lever 2: 0.2 x 10 x 2 = 4 > A's 0.3 x 10 = 3.
    after, _ = run(catalog_from(tmp_path, CATALOG.replace("lever: 1.0", "lever: 2.0")), "active")
    assert [c.item_id for c in after] == ["B", "A"]
    assert after[0].priority == pytest.approx(4.0)
    # 1.4: 0.2 x 10 x 1.4 = 2.8 < 3, A stays first.
    same, _ = run(catalog_from(tmp_path, CATALOG.replace("lever: 1.0", "lever: 1.4")), "active")
    assert [c.item_id for c in same] == ["A", "B"]


def test_an_offer_shown_up_to_its_cap_is_removed(tmp_path: Path) -> None:
    catalog = catalog_from(tmp_path, CATALOG)

    def shown(times: list[int]) -> list[Contact]:
        return [Contact("winback", "email", f"r{n}", at) for n, at in enumerate(times)]

    once, removed = run(catalog, "at_risk", impressions=shown([NOW - DAY]))
    assert "winback" in {c.offer_id for c in once} and removed[RULE_OFFER_CAP] == 0
    twice, removed = run(catalog, "at_risk", impressions=shown([NOW - DAY, NOW - 2 * DAY]))
    assert "winback" not in {c.offer_id for c in twice} and removed[RULE_OFFER_CAP] == 1
    # Impressions older than cap_days no longer count.
    aged, _ = run(catalog, "at_risk", impressions=shown([NOW - 31 * DAY, NOW - 2 * DAY]))
    assert "winback" in {c.offer_id for c in aged}


def test_ties_keep_the_source_order_and_k_is_respected() -> None:
    catalog = default_catalog()
    ids = [f"i{n}" for n in range(8)]
    flat = ProductCandidates(np.arange(8), ["cf"] * 8, 1.0 - np.arange(8) / 10, np.full(8, 0.05))
    choices, _ = arbitrate_one(flat, ids, catalog, "active", "email", NOW, [], None, None, k=5)
    assert [c.item_id for c in choices] == [f"i{n}" for n in range(5)]


def test_price_weighted_products_value_the_items_price(tmp_path: Path) -> None:
    catalog = catalog_from(
        tmp_path, "version: 1\nproducts:\n  price_weighted: true\n  margin: 0.5\n"
    )
    prices = np.array([2.0, 100.0, np.nan])
    offered, ids = candidates({"A": 0.30, "B": 0.20, "C": 0.10})
    choices, _ = arbitrate_one(
        offered,
        ids,
        catalog,
        "active",
        "email",
        NOW,
        [],
        item_price=prices,
        typical_line_value=4.0,
        k=3,
    )
    assert [c.item_id for c in choices] == ["B", "A", "C"]
    values = {c.item_id: c.components.value for c in choices}
    assert values["A"] == pytest.approx(1.0) and values["B"] == pytest.approx(50.0)


def test_many_customers_are_arbitrated_each_as_alone(tmp_path: Path) -> None:
    """``arbitrate_many`` stacks customers of other stages, channels, offer counts,
    impressions and candidate lists: each gets what arbitrating them alone gives."""
    catalog = catalog_from(tmp_path, CATALOG)
    rng = np.random.default_rng(7)
    ids = ["A", "B", "C"] + [f"i{n}" for n in range(20)]
    item_ids = np.asarray(ids, dtype=object)
    prices = rng.uniform(1, 50, len(ids))
    capped = [Contact("winback", "email", "r0", NOW - DAY), Contact("winback", "email", "r1", NOW)]
    contests = [
        Contest("at_risk", "email", 5, capped),
        Contest("active", "app", 3),
        Contest("loyal", "email", 10),
        Contest("at_risk", "email", 4),
        Contest("lapsed", "app", 2, [Contact("B", "app", "r2", NOW - DAY)]),
        Contest("active", "email", 6),  # no candidates at all
    ]
    lengths = [8, 12, 3, 15, 6, 0]
    per_customer = []
    for length in lengths:
        items = rng.choice(len(ids), size=length, replace=False)
        sources = rng.choice(["cf", "popular", "buy_again"], size=length).tolist()
        chances = rng.uniform(0, 0.5, length).round(2)  # rounded: ties happen
        per_customer.append(ProductCandidates(items, sources, rng.normal(size=length), chances))
    stacked = ProductCandidates(
        np.concatenate([c.items for c in per_customer]),
        [s for c in per_customer for s in c.sources],
        np.concatenate([c.scores for c in per_customer]),
        np.concatenate([c.propensity for c in per_customer]),
        rows=np.repeat(np.arange(len(lengths)), lengths),
    )
    together = arbitrate(stacked, contests, item_ids, catalog, NOW, prices, 5.0)
    for n, (alone_candidates, contest) in enumerate(zip(per_customer, contests, strict=True)):
        alone, removed = arbitrate_one(
            alone_candidates,
            ids,
            catalog,
            contest.stage,
            contest.channel,
            NOW,
            contest.impressions,
            prices,
            5.0,
            contest.k,
        )
        assert rows_of(together, n) == alone
        assert removed == {
            RULE_INELIGIBLE: together.ineligible[n],
            RULE_OFFER_CAP: together.offer_cap[n],
        }
    assert together.offer_cap[0] == 1  # winback shown twice in 30 days
    assert rows_of(together, 5) == []  # no candidates, and no incentive for active


def test_every_offer_of_an_answer_has_its_own_id(tmp_path: Path) -> None:
    """A category offer is one offer per item: two of its items in one answer carry two
    ids, each the catalogue offer's id joined to the item (``gifts-app:C``)."""
    catalog = catalog_from(tmp_path, CATALOG.replace("gifts: [C]", "gifts: [C, D]"))
    offered, ids = candidates({"A": 0.30, "B": 0.20, "C": 0.10, "D": 0.05})
    choices, _ = arbitrate_one(
        offered,
        ids,
        catalog,
        "at_risk",
        "app",
        NOW,
        [],
        item_price=None,
        typical_line_value=None,
        k=10,
    )
    offer_ids = [c.offer_id for c in choices]
    assert len(offer_ids) == len(set(offer_ids))
    by_item = {c.item_id: c.offer_id for c in choices if c.kind == KIND_PRODUCT}
    assert by_item == {"A": "product:A", "B": "product:B", "C": "gifts-app:C", "D": "gifts-app:D"}
    # Each carries its catalogue offer's title (an item on its own terms has none): a
    # category offer's title was dropped, though the catalogue route listed it.
    titles = {c.item_id: c.title for c in choices if c.kind == KIND_PRODUCT}
    assert titles == {"A": None, "B": None, "C": "Gifts of the week", "D": "Gifts of the week"}


# Three incentives for lapsed customers: expected values (response rate x value) 1.8,
# 2.0 and 1.6 at stage weight 1; an app-only one for loyal customers.
MANY_INCENTIVES = """
version: 1
products:
  value: 10.0
{limit}offers:
  - id: winback-20
    kind: incentive
    incentive: percent_off
    amount: 20
    value: 30.0
    response_rate: 0.06
    stages: [lapsed]
  - id: winback-10
    kind: incentive
    incentive: percent_off
    amount: 10
    value: 40.0
    response_rate: 0.05
    stages: [lapsed]
  - id: free-shipping
    kind: incentive
    incentive: free_shipping
    value: 20.0
    response_rate: 0.08
    stages: [lapsed, new]
    cap_per_customer: 1
"""


def incentives_offered(catalog: Catalog, stage: str, impressions: list[Contact]) -> list[str]:
    offered, _ = run(catalog, stage, impressions=impressions)
    return [c.offer_id for c in offered if c.kind == KIND_INCENTIVE]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("", ["winback-10"]),  # the default: one, of the highest expected value
        ("max_incentives: 2\n", ["winback-10", "winback-20"]),
        ("max_incentives: null\n", ["winback-10", "winback-20", "free-shipping"]),
        ("max_incentives: 0\n", []),
    ],
)
def test_an_answer_carries_at_most_max_incentives_of_the_highest_expected_value(
    tmp_path: Path, limit: str, expected: list[str]
) -> None:
    catalog = catalog_from(tmp_path, MANY_INCENTIVES.format(limit=limit))
    assert incentives_offered(catalog, "lapsed", []) == expected
    # The limit is each answer's: another stage's incentives are not counted against it.
    assert incentives_offered(catalog, "new", []) == (
        [] if limit.endswith("0\n") else ["free-shipping"]
    )


def test_the_limit_takes_the_best_incentive_the_customer_may_still_get(tmp_path: Path) -> None:
    # The offer caps apply first: the best incentive, shown up to its cap, leaves its
    # place to the next best.
    text = MANY_INCENTIVES.format(limit="").replace(
        "    response_rate: 0.05\n", "    response_rate: 0.05\n    cap_per_customer: 1\n"
    )
    catalog = catalog_from(tmp_path, text)
    assert incentives_offered(catalog, "lapsed", []) == ["winback-10"]
    shown = [Contact("winback-10", "email", "r0", NOW - DAY)]
    assert incentives_offered(catalog, "lapsed", shown) == ["winback-20"]


def test_the_choice_keeps_ties_in_order_puts_nan_last_and_limits_incentives() -> None:
    # The compiled choice orders as numpy's stable sort on (customer, -priority, order)
    # did: equal priorities in candidate order, then incentives in file order; NaN last.
    from nbo.offers.arbitration import _choose

    starts = np.array([0, 4, 6], np.int64)
    keep = np.array([True, True, False, True, True, True])
    propensity = np.array([0.5, np.nan, 0.9, 0.5, 0.1, 0.2])
    ones = np.ones(6)
    incentive_starts = np.array([0, 3, 3], np.int64)
    incentive_priority = np.array([0.5, 0.7, 0.6])
    chosen, chosen_starts = _choose(
        starts,
        keep,
        propensity,
        ones,
        ones,
        ones,
        incentive_starts,
        incentive_priority,
        2,
        np.array([5, 1], np.int64),
    )
    # Customer 0: incentive 1 (0.7), incentive 2 (0.6; incentive 0 is third, over the
    # limit of two), products 0 and 3 (0.5, in order), the NaN product 1 last.
    assert chosen.tolist() == [6 + 1, 6 + 2, 0, 3, 1, 5]
    assert chosen_starts.tolist() == [0, 5, 6]
