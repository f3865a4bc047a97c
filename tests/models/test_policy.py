"""The candidate policies (nbo.models.policy): the simple rules' lists on planted rows,
the served model under each policy through the one decision, and what an artifact
may declare."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from support import END, GROUP_ITEMS, rank_one

from nbo.core.checksums import sha256_file
from nbo.core.errors import ArtifactError
from nbo.core.vocabulary import DAY
from nbo.data.sparse import Rows
from nbo.models.artifacts import MANIFEST
from nbo.models.policy import (
    POLICY_ALS,
    POLICY_BUY_AGAIN,
    POLICY_ITEMKNN,
    POLICY_POPULARITY,
    POLICY_RANKER,
    declared_policy,
    rule_lists,
)
from nbo.models.propensity import Curve
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers.ranking import SOURCE_ALSO_BOUGHT, SOURCE_BUY_AGAIN, SOURCE_POPULAR, Ranking
from nbo.offers.state import PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training.pipeline import TrainResult

NOW_S = int(END.timestamp())
# Six items; popularity puts 5, 4, 3, 2, 1, 0 in that order.
POPULARITY = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
POPULAR = np.array([5, 4, 3, 2, 1, 0])


def _rows(rows: list[dict[int, float]], n_items: int = 6) -> Rows:
    """One row per customer: item -> value, items ascending."""
    indptr = np.cumsum([0, *(len(r) for r in rows)])
    indices = np.array([i for r in rows for i in sorted(r)], dtype=np.int64)
    data = np.array([r[i] for r in rows for i in sorted(r)], dtype=np.float64)
    return Rows(indptr, indices, data, (len(rows), n_items))


def test_buy_again_is_most_ordered_then_most_recent_then_popular() -> None:
    # Customer 0: item 1 three orders; items 0 and 2 two orders each, item 2 the more
    # recent; item 5 one order. Customer 1 bought nothing.
    counts = _rows([{0: 2, 1: 3, 2: 2, 5: 1}, {}])
    last = _rows([{0: 100, 1: 50, 2: 200, 5: 300}, {}])

    lists = rule_lists(POLICY_BUY_AGAIN, counts, last, None, POPULARITY, POPULAR, 6)

    assert lists.items.tolist() == [[1, 2, 0, 5, 4, 3], [5, 4, 3, 2, 1, 0]]
    assert lists.filled.tolist() == [[False] * 4 + [True] * 2, [True] * 6]
    assert lists.scores[0].tolist() == [3.0, 2.0, 2.0, 1.0, 5.0, 4.0]


def test_a_rule_never_proposes_an_excluded_item_and_pads_when_the_catalogue_runs_out() -> None:
    counts = _rows([{0: 2, 1: 3}])
    last = _rows([{0: 100, 1: 50}])
    exclude = _rows([{1: 1.0, 5: 1.0}])

    lists = rule_lists(POLICY_BUY_AGAIN, counts, last, exclude, POPULARITY, POPULAR, 6)

    assert lists.items.tolist() == [[0, 4, 3, 2, -1, -1]]


def test_itemknn_ranks_the_neighbours_of_the_history_then_popular() -> None:
    # Item 0 is close to 3 (0.9) and 4 (0.2); item 1 close to 4 (0.5). Customer 0 bought
    # item 0 twice and item 1 once: 3 -> 1.8, 4 -> 0.4 + 0.5, 0 and 1 are no neighbours.
    similarity = sp.csr_matrix(
        (np.array([0.9, 0.2, 0.5]), (np.array([0, 0, 1]), np.array([3, 4, 4]))), shape=(6, 6)
    )
    counts = _rows([{0: 2, 1: 1}])
    last = _rows([{0: 10, 1: 20}])

    lists = rule_lists(POLICY_ITEMKNN, counts, last, None, POPULARITY, POPULAR, 4, similarity)

    assert lists.items.tolist() == [[3, 4, 5, 2]]
    assert lists.scores[0, :2] == pytest.approx([1.8, 0.9])
    assert lists.filled.tolist() == [[False, False, True, True]]


def test_buy_again_gives_each_own_item_its_place_before_suppression() -> None:
    """Item 1 (most ordered) is excluded: item 2 serves first but stood second, item 0
    third, item 5 fourth; the popular fill keeps its place in the served list."""
    counts = _rows([{0: 2, 1: 3, 2: 2, 5: 1}])
    last = _rows([{0: 100, 1: 50, 2: 200, 5: 300}])
    exclude = _rows([{1: 1.0}])

    lists = rule_lists(POLICY_BUY_AGAIN, counts, last, exclude, POPULARITY, POPULAR, 5)

    assert lists.items.tolist() == [[2, 0, 5, 4, 3]]
    assert lists.places.tolist() == [[2, 3, 4, 4, 5]]


def test_itemknn_gives_each_own_item_its_place_before_suppression() -> None:
    """Customer 0 (3 -> 1.8, 4 -> 0.9, 2 -> 0.6) with 3 and 5 excluded: 4 and 2 keep
    places 2 and 3 (5, never in the list, moves nothing); customer 1 (3 -> 0.9, 2 -> 0.3,
    4 -> 0.2) with 2 excluded: 3 stays first, 4 stood third. As a second top-k without
    the exclusions would place them."""
    similarity = sp.csr_matrix(
        (np.array([0.9, 0.2, 0.5, 0.3]), (np.array([0, 0, 1, 0]), np.array([3, 4, 4, 2]))),
        shape=(6, 6),
    )
    counts = _rows([{0: 2, 1: 1}, {0: 1}])
    last = _rows([{0: 10, 1: 20}, {0: 3}])
    exclude = _rows([{3: 1.0, 5: 1.0}, {2: 1.0}])

    lists = rule_lists(POLICY_ITEMKNN, counts, last, exclude, POPULARITY, POPULAR, 4, similarity)
    whole = rule_lists(POLICY_ITEMKNN, counts, last, None, POPULARITY, POPULAR, 4, similarity)

    assert lists.items[:, :2].tolist() == [[4, 2], [3, 4]]
    assert lists.places[:, :2].tolist() == [[2, 3], [1, 3]]
    for row in range(2):
        for item, place in zip(lists.items[row, :2], lists.places[row, :2], strict=True):
            assert whole.items[row, place - 1] == item


def test_popularity_is_the_popular_list_less_what_is_excluded() -> None:
    counts = _rows([{0: 2}])
    exclude = _rows([{4: 1.0}])

    lists = rule_lists(POLICY_POPULARITY, counts, counts, exclude, POPULARITY, POPULAR, 3)

    assert lists.items.tolist() == [[5, 3, 2]]


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="not a simple rule"):
        rule_lists(POLICY_RANKER, _rows([{}]), _rows([{}]), None, POPULARITY, POPULAR, 3)


def test_older_manifests_declare_the_ranker_or_als() -> None:
    assert declared_policy({"ranker": {"enabled": True}}) == POLICY_RANKER
    assert declared_policy({"ranker": {"enabled": False}}) == POLICY_ALS
    assert declared_policy({}) == POLICY_ALS
    assert declared_policy({"policy": {"name": "buy_again"}}) == POLICY_BUY_AGAIN


# --- the served model under each policy, through rank_offers --------------------------


@pytest.fixture(scope="module")
def served(models_dir: Path) -> ServingModel:
    model = load_serving_model(models_dir)
    # A curve over list positions, strictly decreasing: the order is the rule's.
    rule = Curve(np.array([1.0, 100.0]), np.array([0.5, 0.01]))
    return dataclasses.replace(model, propensity=dataclasses.replace(model.propensity, rule=rule))


def _bought(model: ServingModel, customer: str) -> list[str]:
    items, _, _ = model.history_of(model.customers.index[customer])
    return [model.item_ids[i] for i in items]


def test_buy_again_serves_the_customers_own_items_then_popular(served: ServingModel) -> None:
    model = dataclasses.replace(served, policy=POLICY_BUY_AGAIN)
    for customer in ("a00", "b07"):
        ranking = rank_one(model, customer, 12, NOW_S, SuppressionWindow(0))
        own = set(_bought(model, customer))
        sources = [o.reason.source for o in ranking.offers]
        ids = [o.item_id for o in ranking.offers]
        # Their own items first (buy again, explained by the item itself), then popular.
        assert set(ids[: len(own)]) == own
        assert sources == [SOURCE_BUY_AGAIN] * len(own) + [SOURCE_POPULAR] * (12 - len(own))
        assert all(o.reason.because == (o.item_id,) for o in ranking.offers[: len(own)])
        assert len(set(ids)) == 12


def test_a_rule_never_serves_what_was_just_bought(served: ServingModel) -> None:
    model = dataclasses.replace(served, policy=POLICY_BUY_AGAIN)
    everything = rank_one(model, "a00", 20, NOW_S, SuppressionWindow(0))
    suppressed = rank_one(model, "a00", 20, NOW_S, SuppressionWindow(30))
    gone = {o.item_id for o in everything.offers} - {o.item_id for o in suppressed.offers}
    assert suppressed.suppressed_items == len(gone) > 0
    assert len(suppressed.offers) == 20 - len(gone)


def test_itemknn_serves_neighbours_of_the_history_explained_by_a_purchase(
    served: ServingModel,
) -> None:
    model = dataclasses.replace(served, policy=POLICY_ITEMKNN)
    ranking = rank_one(model, "a00", 5, NOW_S, SuppressionWindow(30))
    knn = [o for o in ranking.offers if o.reason.source == SOURCE_ALSO_BOUGHT]
    assert knn, [o.reason.source for o in ranking.offers]
    bought = set(_bought(model, "a00"))
    # Planted tastes: neighbours of group a's items are group a's.
    assert {o.item_id for o in knn} <= set(GROUP_ITEMS["a"])
    assert all(len(o.reason.because) == 1 and o.reason.because[0] in bought for o in knn)


def _by_score(model: ServingModel) -> ServingModel:
    """``model`` serving buy-again with curves of the rule's score (order count ->
    probability, strictly increasing) and of the fill's place."""
    propensity = dataclasses.replace(
        model.propensity,
        rule=None,
        rule_score=Curve(np.array([1.0, 12.0]), np.array([0.05, 0.9])),
        rule_fill=Curve(np.array([1.0, 100.0]), np.array([0.04, 0.01])),
    )
    return dataclasses.replace(model, policy=POLICY_BUY_AGAIN, propensity=propensity)


def _products(ranking: Ranking) -> dict[str, float]:
    return {o.item_id: o.components.propensity for o in ranking.offers if o.item_id is not None}


def test_an_item_keeps_its_own_propensity_when_the_top_one_is_just_bought(
    served: ServingModel,
) -> None:
    """The box and the mug: the customer's most ordered item (the box) just bought and
    suppressed, the next (the mug) moves up to the first place and keeps the chance its
    own order count gives, not the box's; so do the customer's other items."""
    model = _by_score(served)
    now_s = NOW_S + 90 * DAY
    box = GROUP_ITEMS["a"][9]
    # The box, three monthly orders since training, the last 40 days ago.
    boxes = [PostedPurchase(box, 1.0, now_s - d * DAY, f"o{d}", f"e{d}") for d in (100, 70, 40)]
    before = rank_one(model, "a00", 12, now_s, SuppressionWindow(30), posted=boxes)
    order = list(_products(before))
    mug = order[1]
    chances = _products(before)
    assert order[0] == box and chances[box] > chances[mug]  # ordered more than the mug

    bought = PostedPurchase(box, 1.0, now_s - 60, "o-box", "e-box")
    after = rank_one(model, "a00", 12, now_s, SuppressionWindow(30), posted=[*boxes, bought])
    now = _products(after)
    assert box not in now
    assert next(iter(now)) == mug
    assert now[mug] == pytest.approx(chances[mug])
    # The rest keep their order (one more fill item at the end), the customer's own
    # items their propensities; the popular fill is read by its place, one up now.
    assert list(now)[:10] == order[1:11]
    own = [o.item_id for o in after.offers if o.reason.source == SOURCE_BUY_AGAIN]
    assert len(own) > 2
    assert [now[i] for i in own] == pytest.approx([chances[i] for i in own])
    assert np.all(np.diff(list(now.values())) <= 0)


def test_by_the_place_before_suppression_the_mug_keeps_the_second_places_chance(
    served: ServingModel,
) -> None:
    """A model whose rule is read by the place before suppression (``rule_place``): with
    the box just bought, the mug served first is read at the second place it stood at
    (0.3), not the first's (0.8), through the same decision as the score's."""
    place = dataclasses.replace(
        served.propensity,
        rule=None,
        rule_place=Curve(np.array([1.0, 2.0, 100.0]), np.array([0.8, 0.3, 0.02])),
        rule_fill=Curve(np.array([1.0, 100.0]), np.array([0.04, 0.01])),
    )
    model = dataclasses.replace(served, policy=POLICY_BUY_AGAIN, propensity=place)
    now_s = NOW_S + 90 * DAY
    box = GROUP_ITEMS["a"][9]
    boxes = [PostedPurchase(box, 1.0, now_s - d * DAY, f"o{d}", f"e{d}") for d in (100, 70, 40)]
    before = _products(rank_one(model, "a00", 12, now_s, SuppressionWindow(30), posted=boxes))
    mug = list(before)[1]
    assert next(iter(before)) == box and before[box] == pytest.approx(0.8)
    assert before[mug] == pytest.approx(0.3)

    bought = PostedPurchase(box, 1.0, now_s - 60, "o-box", "e-box")
    after = rank_one(model, "a00", 12, now_s, SuppressionWindow(30), posted=[*boxes, bought])
    now = _products(after)
    assert next(iter(now)) == mug and now[mug] == pytest.approx(0.3)
    assert np.all(np.diff(list(now.values())) <= 0)


def test_the_popularity_rule_serves_everyone_the_popular_items(served: ServingModel) -> None:
    model = dataclasses.replace(served, policy=POLICY_POPULARITY)
    first = rank_one(model, "a00", 4, NOW_S, SuppressionWindow(0))
    second = rank_one(model, "b03", 4, NOW_S, SuppressionWindow(0))
    assert [o.item_id for o in first.offers] == [o.item_id for o in second.offers]
    assert [o.item_id for o in first.offers] == [model.item_ids[i] for i in model.popular_order[:4]]
    assert all(o.reason.source == SOURCE_POPULAR for o in first.offers)


def test_a_policy_without_what_it_needs_is_refused(served: ServingModel) -> None:
    with pytest.raises(ValueError, match="ranker"):
        dataclasses.replace(served, ranker=None, policy=POLICY_RANKER)
    with pytest.raises(ValueError, match="similarity"):
        dataclasses.replace(served, item_side=None, policy=POLICY_ITEMKNN)


# --- what an artifact declares --------------------------------------------------------


def _declaring(trained: TrainResult, folder: Path, policy: str, rule: bool) -> Path:
    """A copy of the trained artifact that declares ``policy`` (with a rule curve when
    ``rule``), checksums updated."""
    assert trained.path is not None and trained.version is not None
    copy = folder / trained.version
    shutil.copytree(trained.path, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["policy"] = {"name": policy}
    if rule:
        document = json.loads((copy / "propensity.json").read_text())
        document["rule"] = {"x": [1.0, 50.0], "y": [0.3, 0.01]}
        (copy / "propensity.json").write_text(json.dumps(document))
        manifest["files"]["propensity.json"] = sha256_file(copy / "propensity.json")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_an_artifact_serves_the_rule_it_declares(trained: TrainResult, tmp_path: Path) -> None:
    _declaring(trained, tmp_path, POLICY_BUY_AGAIN, rule=True)

    model = load_serving_model(tmp_path, trained.version)

    assert model.policy == POLICY_BUY_AGAIN and model.ranker is None
    ranking = rank_one(model, "a00", 3, NOW_S, SuppressionWindow(30))
    assert ranking.offers[0].reason.source == SOURCE_BUY_AGAIN


def test_an_older_artifact_serves_its_rule_by_position_as_before(
    trained: TrainResult, tmp_path: Path
) -> None:
    """An artifact from before the score curves (``propensity.json`` with the position
    curve ``rule`` alone) loads, and its rule's offers get the curve's value at their
    place, whatever the item, as they did."""
    _declaring(trained, tmp_path, POLICY_BUY_AGAIN, rule=True)
    model = load_serving_model(tmp_path, trained.version)
    assert model.propensity.rule_basis == "position"

    ranking = rank_one(model, "a00", 12, NOW_S, SuppressionWindow(30))
    chances = list(_products(ranking).values())
    assert len(chances) == 12
    # The document's curve: 0.3 at the first place down to 0.01 at the 50th.
    assert chances == pytest.approx([0.3 - 0.29 * n / 49 for n in range(12)])


@pytest.mark.parametrize(
    ("policy", "rule", "problem"),
    [
        ("bandit", True, "declares the policy 'bandit'"),
        (POLICY_BUY_AGAIN, False, "serves buy_again without its propensity curve"),
    ],
)
def test_an_artifact_declaring_what_this_nbo_cannot_serve_is_refused(
    trained: TrainResult, tmp_path: Path, policy: str, rule: bool, problem: str
) -> None:
    _declaring(trained, tmp_path, policy, rule)
    with pytest.raises(ArtifactError, match=problem):
        load_serving_model(tmp_path, trained.version)
