"""The candidate sources: what each proposes and the features the trainer and the service
share, for many customers at once, checked against the sources as their docstrings state
them, one customer at a time in plain Python; the ranked order and its ties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.topk import topk
from support import staged_items, tiny_items

from nbo.core.vocabulary import DAY, STAGES
from nbo.data.sparse import Rows
from nbo.models import candidates as candidates_module
from nbo.models.candidates import (
    FEATURES,
    KNN_BASIS,
    NO_STAGE,
    SOURCES,
    STAGE_CODE,
    CandidateTable,
    CustomerSide,
    ItemSide,
    als_shortlist,
    candidates,
    ranked_order,
    ranked_top,
)
from nbo.models.cf import FILTERED_SCORE


def customer(bought: dict[int, tuple[int, int]], factors: list[float]) -> CustomerSide:
    """One customer: item -> (orders, last purchase day)."""
    items = sorted(bought)
    counts = sp.csr_matrix(
        ([bought[i][0] for i in items], items, [0, len(items)]), shape=(1, 6), dtype=np.float64
    )
    last = sp.csr_matrix(
        ([bought[i][1] * DAY for i in items], items, [0, len(items)]),
        shape=(1, 6),
        dtype=np.float64,
    )
    return CustomerSide(np.asarray([factors], np.float32), Rows.of(counts), Rows.of(last))


def csr(rows: Rows) -> sp.csr_matrix:
    return sp.csr_matrix((rows.data, rows.indices, rows.indptr), shape=rows.shape)


def test_every_source_proposes_and_the_features_are_what_they_say() -> None:
    table = candidates(tiny_items(), customer({0: (3, 90), 3: (1, 50)}, [1.0, 0.0]), 2)
    column = {name: n for n, name in enumerate(FEATURES)}
    rows = {int(item): n for n, item in enumerate(table.items)}
    # buy again: 0 and 3; neighbours of 0 and 3: 1, 2, 4, 5; ALS (taste for group 0).
    assert {0, 1, 3} <= set(rows)
    bought = table.features[rows[0]]
    assert bought[column["bought_orders"]] == 3
    assert bought[column["days_since_bought"]] == pytest.approx(10.0)
    assert bought[column["cycle_days"]] == 10.0 and bought[column["due_ratio"]] == 1.0
    assert bought[column["share_of_customer"]] == pytest.approx(3 / 4)
    assert bought[column["customer_orders"]] == 4 and bought[column["customer_items"]] == 2
    assert bought[column["customer_recency_days"]] == pytest.approx(10.0)
    assert bought[column["als_score"]] == pytest.approx(1.0)
    never = table.features[rows[1]]
    assert np.isnan(never[column["days_since_bought"]]) and never[column["bought_orders"]] == 0
    assert never[column["knn_score"]] == pytest.approx(3.0)  # similar to item 0, bought 3x
    assert table.sources[rows[0], SOURCES.index("buy_again")]
    assert table.sources[rows[1], SOURCES.index("knn")]


def test_excluded_items_are_never_candidates() -> None:
    side = customer({0: (3, 90), 3: (1, 50)}, [1.0, 0.0])
    exclude = sp.csr_matrix(([1.0, 1.0], [0, 1], [0, 2]), shape=(1, 6))
    table = candidates(
        tiny_items(), CustomerSide(side.user_factors, side.counts, side.last, Rows.of(exclude)), 6
    )
    assert not {0, 1} & set(table.items.tolist())


def test_many_customers_at_once_equal_one_at_a_time() -> None:
    """The trainer scores many customers in one call, the service one: same features."""
    a = customer({0: (3, 90), 3: (1, 50)}, [1.0, 0.2])
    b = customer({4: (2, 99)}, [0.1, 1.0])
    both = CustomerSide(
        np.vstack([a.user_factors, b.user_factors]),
        Rows.of(sp.vstack([csr(a.counts), csr(b.counts)]).tocsr()),
        Rows.of(sp.vstack([csr(a.last), csr(b.last)]).tocsr()),
    )
    together = candidates(tiny_items(), both, 3)
    for row, alone in enumerate((candidates(tiny_items(), a, 3), candidates(tiny_items(), b, 3))):
        mine = together.rows == row
        assert together.items[mine].tolist() == alone.items.tolist()
        np.testing.assert_array_equal(together.features[mine], alone.features)


def test_ranked_top_orders_by_score_within_each_customer() -> None:
    table = candidates(tiny_items(), customer({0: (3, 90)}, [1.0, 0.0]), 6)
    scores = -table.items.astype(float)  # lower item id = higher score
    top = ranked_top(table, scores, 1, 3)
    assert top[0].tolist() == sorted(table.items.tolist())[:3]


def test_ranked_top_is_each_customers_head_of_the_ranked_order() -> None:
    items, side = random_shop(8)
    table = candidates(items, side, 12)
    scores = np.random.default_rng(0).integers(0, 4, len(table)).astype(float)  # many ties
    n_rows = side.counts.shape[0] + 2  # two rows past the table: no candidates at all
    top = ranked_top(table, scores, n_rows, 5)
    order = ranked_order(table, scores)
    for row in range(n_rows):
        head = table.items[order][table.rows[order] == row][:5].tolist()
        assert top[row].tolist() == head + [-1] * (5 - len(head))


def test_ranker_ties_follow_the_sources_consensus_not_the_catalogue_order() -> None:
    """Where the ranker cannot tell candidates apart (equal scores: the same leaves of
    every tree), the items the sources agree on come first: here the customer's own
    group, which ALS, ItemKNN and their history propose, before items 0..2 that only
    ALS's tail and popularity do, although those come first in the catalogue."""
    table = candidates(tiny_items(), customer({4: (3, 90)}, [0.0, 1.0]), 6)
    assert set(table.items.tolist()) == set(range(6))
    top = ranked_top(table, np.zeros(len(table)), 1, 3)
    assert set(top[0].tolist()) == {3, 4, 5}


# --- stage popularity, customer traits and price --------------------------------------


def test_the_stage_source_proposes_what_the_customers_stage_buys() -> None:
    bare = customer({0: (3, 90)}, [1.0, 0.0])
    column = {name: n for n, name in enumerate(FEATURES)}
    for stage, favourite in (("loyal", 2), ("lapsed", 4)):
        side = CustomerSide(
            bare.user_factors,
            bare.counts,
            bare.last,
            stage=np.array([STAGE_CODE[stage]]),
            churn_risk=np.array([0.25]),
            monetary=np.array([120.0]),
        )
        table = candidates(staged_items(), side, 1)
        staged = table.items[table.sources[:, SOURCES.index("stage_popular")]]
        assert favourite in staged.tolist()
        row = table.features[table.items.tolist().index(favourite)]
        assert row[column["stage_popularity"]] == pytest.approx(0.9 if stage == "loyal" else 0.7)
        assert row[column["stage_popularity_rank"]] == 0
        assert row[column["customer_stage"]] == STAGE_CODE[stage]
        assert row[column["churn_risk"]] == pytest.approx(0.25)
        assert row[column["customer_monetary"]] == pytest.approx(120.0)
        assert row[column["price"]] == pytest.approx(favourite + 1.0)


def test_the_features_that_carry_over_between_shops() -> None:
    items = tiny_items(repeat_rate=np.array([0.5, 0.0, 0.0, 0.25, 0.0, 0.0]))
    # Item 0 in 3 orders (10 days ago), item 3 in 1 (50 days ago), item 4 in 2 (20 days
    # ago): two of three items repeated. Eight orders placed, 5 days apart on average.
    side = dataclasses.replace(
        customer({0: (3, 90), 3: (1, 50), 4: (2, 80)}, [1.0, 0.0]),
        baskets=np.array([8.0]),
        gap_days=np.array([5.0]),
    )
    table = candidates(items, side, 6)
    column = {name: n for n, name in enumerate(FEATURES)}
    row = {int(item): table.features[n] for n, item in enumerate(table.items)}

    assert row[0][column["item_repeat_rate"]] == 0.5
    assert row[3][column["item_repeat_rate"]] == 0.25
    for features in row.values():
        assert features[column["customer_repeat_share"]] == pytest.approx(2 / 3)
        assert features[column["customer_baskets"]] == 8
        assert features[column["customer_gap_days"]] == 5
    assert row[0][column["basket_share"]] == pytest.approx(3 / 8)
    assert row[3][column["basket_share"]] == pytest.approx(1 / 8)
    assert row[0][column["gaps_since_bought"]] == pytest.approx(10 / 5)
    assert row[3][column["gaps_since_bought"]] == pytest.approx(50 / 5)
    # Never bought: no share of baskets beyond none, no time since.
    assert row[1][column["basket_share"]] == 0.0
    assert np.isnan(row[1][column["gaps_since_bought"]])
    # A customer with a single order has no gap between orders: unknown, not infinite.
    single = dataclasses.replace(side, baskets=np.array([1.0]), gap_days=np.array([np.nan]))
    lone = candidates(items, single, 6)
    assert np.isnan(lone.features[:, column["gaps_since_bought"]]).all()
    assert (lone.features[:, column["basket_share"]] <= 1.0).all()


def test_the_recency_weighted_features_decay_to_the_clock() -> None:
    """Hand-built: the customer's weighted orders of items 0 and 3 and in all, as of the
    item side's moment; asked 60 days later (the half-life) every count halves and the
    shares stay."""
    items = tiny_items(
        popularity_recent=np.array([4.0, 0.0, 1.0, 2.0, 0.0, 3.0]), half_life_days=60.0
    )
    bought = customer({0: (3, 90), 3: (1, 50)}, [1.0, 0.0])
    weighted = sp.csr_matrix(([1.5, 0.25], [0, 3], [0, 2]), shape=(1, 6))
    side = dataclasses.replace(bought, recent=Rows.of(weighted), recent_orders=np.array([2.0]))
    column = {name: n for n, name in enumerate(FEATURES)}

    def features(as_of_s: int) -> dict[int, np.ndarray]:
        table = candidates(items, side, 6, as_of_s=as_of_s)
        return {int(item): table.features[n] for n, item in enumerate(table.items)}

    now = features(items.as_of_s)
    assert now[0][column["recent_orders"]] == 1.5
    assert now[3][column["recent_orders"]] == 0.25
    assert now[1][column["recent_orders"]] == 0.0  # never bought
    assert now[0][column["recent_basket_share"]] == pytest.approx(0.75)
    assert now[3][column["recent_basket_share"]] == pytest.approx(0.125)
    assert now[1][column["recent_basket_share"]] == 0.0
    for item, row in now.items():
        # By the fortnight's buyers, ties by item: 0, 5, 3, 2, then 1 and 4.
        assert row[column["popularity_recent_rank"]] == [0, 4, 3, 2, 5, 1][item]

    later = features(items.as_of_s + 60 * DAY)
    assert later[0][column["recent_orders"]] == pytest.approx(0.75)
    assert later[3][column["recent_orders"]] == pytest.approx(0.125)
    assert later[0][column["recent_basket_share"]] == pytest.approx(0.75)
    # The fortnight's buyers are the item side's, whatever the clock.
    assert later[0][column["popularity_recent_rank"]] == 0


def test_unknown_traits_are_missing_values_and_propose_nothing() -> None:
    table = candidates(staged_items(), customer({0: (3, 90)}, [1.0, 0.0]), 1)
    column = {name: n for n, name in enumerate(FEATURES)}
    assert not table.sources[:, SOURCES.index("stage_popular")].any()
    for name in (
        "customer_stage",
        "churn_risk",
        "customer_monetary",
        "stage_popularity",
        "customer_baskets",
        "customer_gap_days",
        "basket_share",
        "gaps_since_bought",
        "item_repeat_rate",
        "recent_orders",
        "recent_basket_share",
        "popularity_recent_rank",
    ):
        assert np.isnan(table.features[:, column[name]]).all()


def test_a_source_that_proposes_nothing_leaves_the_others_ranking() -> None:
    """No neighbours (an empty similarity), no stage, no history: the other sources still
    propose, and their features stay defined."""
    no_neighbours = tiny_items(similarity=sp.csr_matrix((6, 6), dtype=np.float32))
    table = candidates(no_neighbours, customer({0: (3, 90), 3: (1, 50)}, [1.0, 0.0]), 2)
    assert not table.sources[:, SOURCES.index("knn")].any()
    assert table.sources[:, SOURCES.index("buy_again")].any()
    assert table.sources[:, SOURCES.index("als")].any()
    column = {name: n for n, name in enumerate(FEATURES)}
    assert np.isnan(table.features[:, column["knn_rank"]]).all()
    assert (table.features[:, column["knn_score"]] == 0).all()
    nothing_bought = candidates(no_neighbours, customer({}, [0.0, 1.0]), 2)
    assert len(nothing_bought) > 0
    assert not nothing_bought.sources[:, SOURCES.index("buy_again")].any()


def random_shop(
    seed: int, n_items: int = 80, n_customers: int = 40, tied: bool = False
) -> tuple[ItemSide, CustomerSide]:
    """A random catalogue (similarity, popularity by stage, cycles, prices) and customers
    with random histories, exclusions, stages and traits; some rows empty. ``tied``: the
    similarities are 1, 2 or 3, so many ItemKNN scores tie (at a row's n-th best too)."""
    rng = np.random.default_rng(seed)
    similarity = sp.random(n_items, n_items, density=0.15, random_state=seed, format="csr")
    if tied:
        similarity.data = np.ceil(similarity.data * 3)
    similarity.setdiag(0)
    similarity.eliminate_zeros()
    items = ItemSide.build(
        400 * DAY,
        rng.normal(size=(n_items, 4)).astype(np.float32),
        similarity.astype(np.float32),
        rng.integers(0, 50, n_items).astype(np.float64),
        rng.integers(0, 50, n_items).astype(np.float64),
        np.where(rng.random(n_items) < 0.5, rng.uniform(5, 60, n_items), np.nan),
        price=rng.uniform(1, 9, n_items),
        stage_popularity=rng.random((len(STAGES), n_items)),
    )
    counts, last, exclude = [], [], []
    for row in range(n_customers):
        bought = rng.choice(n_items, size=int(rng.integers(0, 45)), replace=False)
        counts.append(
            sp.csr_matrix(
                (rng.integers(1, 5, len(bought)), (np.zeros(len(bought)), bought)),
                shape=(1, n_items),
            )
        )
        times = (300 * DAY + rng.permutation(len(bought)) * 3_600 + row).astype(np.float64)
        last.append(sp.csr_matrix((times, (np.zeros(len(bought)), bought)), shape=(1, n_items)))
        banned = rng.choice(n_items, size=int(rng.integers(0, 6)), replace=False)
        exclude.append(
            sp.csr_matrix(
                (np.ones(len(banned)), (np.zeros(len(banned)), banned)), shape=(1, n_items)
            )
        )
    side = CustomerSide(
        rng.normal(size=(n_customers, 4)).astype(np.float32),
        Rows.of(sp.vstack(counts).tocsr()),
        Rows.of(sp.vstack(last).tocsr()),
        Rows.of(sp.vstack(exclude).tocsr()),
        stage=rng.integers(-1, len(STAGES), n_customers),
        churn_risk=rng.random(n_customers),
        monetary=rng.uniform(0, 500, n_customers),
    )
    return items, side


@dataclasses.dataclass
class Proposed:
    """What the oracle says of one proposed item."""

    sources: set[str] = dataclasses.field(default_factory=set)
    als_rank: float = np.nan
    knn_rank: float = np.nan
    knn_score: float = 0.0
    bought: float = 0.0
    bought_last: float = 0.0


def proposals_one_at_a_time(
    items: ItemSide, side: CustomerSide, per_source: int
) -> list[dict[int, Proposed]]:
    """The sources as their docstrings state them, one customer at a time in plain
    Python: the oracle ``candidates`` is checked against (it once was a second path)."""
    n_items = len(items.popularity)
    n = min(per_source, n_items)
    n_popular = max(10, n // 5)
    similarity = items.similarity
    als_ids, als_scores = topk(
        items.item_factors,
        np.asarray(side.user_factors, np.float32),
        n,
        filter_query_items=None if side.exclude is None else csr(side.exclude),
        num_threads=1,
    )
    out = []
    for row in range(side.counts.shape[0]):
        start, end = side.counts.indptr[row], side.counts.indptr[row + 1]
        mine = [int(i) for i in side.counts.indices[start:end]]
        count = dict(zip(mine, map(float, side.counts.data[start:end]), strict=True))
        last = dict(zip(mine, map(float, side.last.data[start:end]), strict=True))
        position = {item: p for p, item in enumerate(mine)}
        banned = set() if side.exclude is None else set(csr(side.exclude)[row].indices.tolist())
        # ALS: implicit's top n, filtered items dropped.
        als = [
            int(i) for i, s in zip(als_ids[row], als_scores[row], strict=True) if s > FILTERED_SCORE
        ]
        # ItemKNN: neighbours of the KNN_BASIS most recent items, similarity x orders
        # summed over those items in catalogue order.
        basis = sorted(mine, key=lambda i: (-last[i], position[i]))[:KNN_BASIS]
        score: dict[int, float] = {}
        for b in sorted(basis):
            lo, hi = similarity.indptr[b], similarity.indptr[b + 1]
            for j, w in zip(similarity.indices[lo:hi], similarity.data[lo:hi], strict=True):
                score[int(j)] = score.get(int(j), 0.0) + float(w) * count[b]
        knn = sorted(
            (j for j, s in score.items() if s > 0 and j not in banned),
            key=lambda j: (-score[j], j),
        )[:n]
        # Buy again: most ordered first, then most recent, then as stored.
        again = sorted(
            (i for i in mine if i not in banned),
            key=lambda i: (-count[i], -last[i], position[i]),
        )[:n]
        popular = [int(i) for i in items.popular_order if int(i) not in banned][:n_popular]
        stage = NO_STAGE if side.stage is None else int(side.stage[row])
        in_stage: list[int] = []
        if stage != NO_STAGE and items.stage_popular_order is not None:
            ranked = items.stage_popular_order[stage]
            in_stage = [int(i) for i in ranked if int(i) not in banned][:n_popular]
        proposed: dict[int, Proposed] = {}
        for source, chosen in zip(SOURCES, (als, knn, again, popular, in_stage), strict=True):
            for item in chosen:
                proposed.setdefault(item, Proposed()).sources.add(source)
        for rank, item in enumerate(als, 1):
            proposed[item].als_rank = rank
        for rank, item in enumerate(knn, 1):
            proposed[item].knn_rank = rank
        for item, p in proposed.items():
            p.knn_score = score.get(item, 0.0)
            p.bought = count.get(item, 0.0)
            p.bought_last = last.get(item, 0.0)
        out.append(proposed)
    return out


@pytest.mark.parametrize(
    "seed, tied, shortlist",
    [
        (5, False, None),
        (6, False, None),
        (7, False, None),
        (8, False, None),
        (5, True, None),
        (8, True, None),
        (5, False, 12),
        (6, False, 12),
        (7, False, 80),
    ],
)
def test_candidates_are_what_each_source_says_one_customer_at_a_time(
    seed: int, tied: bool, shortlist: int | None
) -> None:
    """Random catalogue and customers: every customer's proposed items, their source
    flags and the features the sources give are the oracle's, whether the customers come
    all at once (a campaign's chunk, the trainer's window) or one by one (a request).
    With tied similarities, ItemKNN's ties at a row's n-th best score go to the lower
    item, as the oracle's sort says. With ALS shortlists (``shortlist`` wide, every
    fifth customer without one), ALS proposes what its top-k does: from the shortlist
    where it reaches past what is excluded or holds the whole catalogue, and by the
    top-k for the others."""
    items, side = random_shop(seed, tied=tied)
    if shortlist is not None:
        side = with_shortlists(items, side, shortlist)
    expected = proposals_one_at_a_time(items, side, 12)
    column = {name: n for n, name in enumerate(FEATURES)}
    together = candidates(items, side, 12)
    for row, wanted in enumerate(expected):
        single = alone(items, side, row, 12)
        for table, at in ((together, together.rows == row), (single, single.rows == 0)):
            chosen = sorted(wanted)
            assert table.items[at].tolist() == chosen
            flags = table.sources[at]
            for n, item in enumerate(chosen):
                assert {SOURCES[s] for s in np.flatnonzero(flags[n])} == wanted[item].sources
            features = table.features[at]
            as_float32 = {
                "als_rank": [wanted[i].als_rank for i in chosen],
                "knn_rank": [wanted[i].knn_rank for i in chosen],
                "knn_score": [wanted[i].knn_score for i in chosen],
                "bought_orders": [wanted[i].bought for i in chosen],
                "days_since_bought": [
                    (items.as_of_s - wanted[i].bought_last) / DAY if wanted[i].bought else np.nan
                    for i in chosen
                ],
            }
            for name, values in as_float32.items():
                np.testing.assert_array_equal(
                    features[:, column[name]], np.asarray(values, np.float32), err_msg=name
                )


def with_shortlists(items: ItemSide, side: CustomerSide, width: int) -> CustomerSide:
    """``side`` with ALS shortlists ``width`` wide, every fifth customer without one;
    the others read theirs, and at 12 per source some run short of what they exclude."""
    lists = als_shortlist(items.item_factors, side.user_factors, width)
    lists[::5] = -1
    assert side.exclude is not None
    _, complete = candidates_module._shortlisted(lists, side.exclude, 12, len(items.popularity))
    assert complete[1:].any() and not complete[::5].any()
    if width < len(items.popularity):
        assert not complete[np.arange(len(lists)) % 5 != 0].all()
    return dataclasses.replace(side, shortlist=lists)


def alone(items: ItemSide, side: CustomerSide, row: int, per_source: int) -> CandidateTable:
    """``candidates`` for one customer of ``side``, as a request asks."""

    def one(matrix: Rows | None) -> Rows | None:
        return None if matrix is None else Rows.of(csr(matrix)[row])

    def at(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[row : row + 1]

    single = CustomerSide(
        side.user_factors[row : row + 1],
        one(side.counts),
        one(side.last),
        one(side.exclude),
        stage=at(side.stage),
        churn_risk=at(side.churn_risk),
        monetary=at(side.monetary),
        shortlist=at(side.shortlist),
    )
    return candidates(items, single, per_source)


@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize("runs", [False, True])
def test_ranked_order_skips_the_consensus_only_where_it_cannot_decide(
    seed: int, runs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without two candidates of one customer on one score the order is row and score
    alone; with ties (or NaN scores) the sources' consensus and the item break them,
    computed and sorted for those customers only: the same order as the full sort in
    every case. ``runs``: as a campaign's chunk is sorted (row by row, then only the
    runs of one score again), not as a request's few pairs are."""
    if runs:
        monkeypatch.setattr(candidates_module, "_SORT_RUNS_FROM", 0)
    items, side = random_shop(seed)
    table = candidates(items, side, 12)
    rng = np.random.default_rng(seed)

    def full(scores: np.ndarray) -> np.ndarray:
        consensus = candidates_module.source_consensus(table)
        return np.lexsort((table.items, -consensus, -scores, table.rows))

    distinct = rng.permutation(len(table)).astype(np.float64)
    tied = rng.integers(0, 3, len(table)).astype(np.float64)
    with_nan = distinct.copy()
    with_nan[rng.choice(len(table), 5, replace=False)] = np.nan
    some_tied = distinct.copy()
    some_tied[table.rows == table.rows[len(table) // 2]] = 1.5
    # Every other customer with ties, the others without (a campaign's chunk).
    half_tied = np.where(table.rows % 2 == 0, tied, distinct)
    # A customer's scores NaN but one, and another's all NaN.
    nan_runs = distinct.copy()
    nan_runs[table.rows == table.rows[0]] = np.nan
    nan_runs[np.flatnonzero(table.rows == table.rows[0])[0]] = 0.5
    nan_runs[table.rows == table.rows[-1]] = np.nan
    cases = (distinct, tied, with_nan, some_tied, half_tied, nan_runs, np.zeros(len(table)))
    for scores in cases:
        np.testing.assert_array_equal(ranked_order(table, scores), full(scores))


def test_als_shortlists_are_each_customers_best_items_nothing_excluded() -> None:
    """A shortlist is the customer's top-k over the whole catalogue, best first, in the
    smallest integer type that holds it, -1 past a small catalogue; made for some
    customers alone, the others' rows are -1 (scored by the top-k when served)."""
    items, side = random_shop(5)
    factors = np.asarray(side.user_factors, np.float32)
    lists = als_shortlist(items.item_factors, factors, 20)
    assert lists.dtype == np.int16 and lists.shape == (len(factors), 20)
    expected, _ = topk(items.item_factors, factors, 20, num_threads=1)
    np.testing.assert_array_equal(lists, expected)
    wide = als_shortlist(items.item_factors, factors, 90)
    assert (wide[:, :80] >= 0).all() and (wide[:, 80:] == -1).all()
    some = np.array([3, 0, 17])
    partial = als_shortlist(items.item_factors, factors, 20, some)
    np.testing.assert_array_equal(partial[some], lists[some])
    others = np.setdiff1d(np.arange(len(factors)), some)
    assert (partial[others] == -1).all()
