"""Offers latency: ``rank_offers`` vs raw implicit ``recommend`` on the same loaded model.

The floor is one implicit call per customer: score the whole catalogue for the customer
and take the top 10, skipping everything they ever bought. ``rank_offers`` does that
(skipping only what was bought inside the suppression window) plus the id lookup, the
suppression filter, the explanations and the response objects.

The parts of ``rank_offers`` are also timed alone (lookup + suppressed items, the
implicit call with that filter, the explanations): their means add up to roughly the
mean of ``rank_offers``, the difference being the response objects.

Per customer the floor, ``rank_offers`` and the parts run back to back, in an order that
rotates from one customer to the next, so all see the same cache and clock conditions;
every sample is one call timed with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from nbo.catalog.loading import default_catalog
from nbo.catalog.terms import Catalog
from nbo.models.policy import POLICY_ALS
from nbo.models.served import ServingModel
from nbo.offers.decision import ContactPolicy, DecisionRequest, Occasion, decide
from nbo.offers.profiles import customer_profiles
from nbo.offers.ranking import EXPLAINED_BY, OfferRequest, rank_offers
from nbo.offers.state import CustomerState
from nbo.offers.suppression import SuppressionWindow

K = 10
# implicit gives filtered items the lowest float32 score; rank_offers drops them.
FILTERED = float(np.finfo(np.float32).min) / 2
WINDOW_DAYS = 30


@dataclass
class OffersResult:
    calls: int
    customers: int
    median_history: float
    max_history: int
    timings: dict[str, np.ndarray] = field(default_factory=dict)


def _history_row(model: ServingModel, customer: int) -> sp.csr_matrix:
    items, confidence, _ = model.history_of(customer)
    return sp.csr_matrix(
        (np.asarray(confidence, dtype=np.float32), np.asarray(items), [0, len(items)]),
        shape=(1, len(model.items)),
    )


def _suppressed_items(
    model: ServingModel, customer_id: str, now_s: int, window: SuppressionWindow
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
    """What ``rank_offers`` does before scoring: lookup, history, suppressed items."""
    customer = model.customers.get(customer_id)
    assert customer is not None
    items, confidence, last_purchase = model.history_of(customer)
    earliest = window.earliest_suppressed(now_s)
    suppressed = (
        np.empty(0, dtype=np.int32)
        if earliest is None
        else np.asarray(items[last_purchase >= earliest], dtype=np.int32)
    )
    return customer, items, confidence, suppressed if len(suppressed) else None


def bench_offers(
    model: ServingModel,
    now_s: int,
    calls: int,
    warmup: int,
    seed: int,
    catalog: Catalog | None = None,
) -> OffersResult:
    """Latency samples (ns) per path; the caller pins BLAS to one thread.

    ``decide`` is the whole next-best-offer decision an API call makes (profile with the
    churn model, ranking, arbitration under ``catalog``), without the store reads.
    """
    window = SuppressionWindow(WINDOW_DAYS)
    catalog = catalog or default_catalog()
    policy = ContactPolicy(window)
    nothing_stored = CustomerState()
    occasion = Occasion("email", K, now_s)
    als = model.als
    rng = np.random.default_rng(seed)
    n_customers = len(model.customers)
    distinct = rng.choice(n_customers, size=min(n_customers, calls), replace=False)
    sample = np.resize(distinct, calls)
    warm = np.resize(rng.permutation(distinct), warmup)
    rows = {int(c): _history_row(model, int(c)) for c in distinct}
    external = model.customers.ids
    sizes = np.diff(model.indptr)[distinct]

    def raw(customer: int) -> None:
        als.recommend(customer, rows[customer], N=K, filter_already_liked_items=True)

    def ranked(customer: int) -> None:
        rank_offers(model, [OfferRequest(str(external[customer]), K)], now_s, window)

    # The same model without its ranker: ALS candidates only.
    cf_model = dataclasses.replace(model, ranker=None, item_side=None, policy=POLICY_ALS)

    def cf_only(customer: int) -> None:
        rank_offers(cf_model, [OfferRequest(str(external[customer]), K)], now_s, window)

    def deciding(with_model: ServingModel) -> Callable[[int], None]:
        def decided(customer: int) -> None:
            decide(
                with_model,
                catalog,
                policy,
                [DecisionRequest(str(external[customer]), nothing_stored)],
                occasion,
            )

        return decided

    decided, decided_cf_only = deciding(model), deciding(cf_model)

    def answered(customer: int) -> None:
        """decide, then its offers read as an answer reads them (explanations included:
        a decision works them out only when they are read)."""
        for decision in decide(
            model,
            catalog,
            policy,
            [DecisionRequest(str(external[customer]), nothing_stored)],
            occasion,
        ):
            if decision.ranking is not None:
                decision.ranking.offers  # noqa: B018

    clock = time.perf_counter_ns
    parts = (
        "lookup + suppressed items",
        "recommend (suppression filter)",
        "explanations",
        "profile (features, churn model, stage)",
    )
    paths = ("raw", "cf_only", "rank_offers", "decide_cf_only", "decide", "decide_answered")
    # The floor and decide also in thread CPU time: on a machine shared with other work a
    # call of a millisecond or more spans several scheduler slices and its wall time
    # grows with the load, a 0.1 ms floor's hardly; CPU time keeps the ratio honest.
    cpu_timed = ("raw", "decide")
    cpu_names = tuple(f"{name} (cpu)" for name in cpu_timed)
    timings = {name: np.zeros(calls, dtype=np.int64) for name in (*paths, *parts, *cpu_names)}
    thread_clock = time.thread_time_ns

    def broken_down(customer: int, j: int) -> None:
        """rank_offers' parts, each timed alone, in its order."""
        start = clock()
        internal, items, confidence, suppressed = _suppressed_items(
            model, str(external[customer]), now_s, window
        )
        timings[parts[0]][j] = clock() - start
        start = clock()
        ids, scores = als.recommend(
            internal, None, N=K, filter_already_liked_items=False, filter_items=suppressed
        )
        timings[parts[1]][j] = clock() - start
        ids = ids[(ids >= 0) & (scores > FILTERED)]
        start = clock()
        model.explainer.explain(items, confidence, ids, top=EXPLAINED_BY)
        timings[parts[2]][j] = clock() - start
        start = clock()
        customer_profiles(model, [(str(external[customer]), ())], now_s)
        timings[parts[3]][j] = clock() - start

    def timed(name: str, call: Callable[[int], None]) -> Callable[[int, int], None]:
        def run(customer: int, j: int) -> None:
            cpu = thread_clock()
            start = clock()
            call(customer)
            timings[name][j] = clock() - start
            if name in cpu_timed:
                timings[f"{name} (cpu)"][j] = thread_clock() - cpu

        return run

    # Per customer, the floor, rank_offers and its parts run back to back, in an order
    # that rotates from one customer to the next, so no path always runs first.
    blocks = (
        timed("raw", raw),
        timed("cf_only", cf_only),
        timed("rank_offers", ranked),
        timed("decide_cf_only", decided_cf_only),
        timed("decide", decided),
        timed("decide_answered", answered),
        broken_down,
    )
    for j, customer in enumerate(warm.tolist()):
        for block in blocks:
            block(customer, j % calls)
    gc.collect()
    for j, customer in enumerate(sample.tolist()):
        shift = j % len(blocks)
        for block in blocks[shift:] + blocks[:shift]:
            block(customer, j)

    return OffersResult(
        calls=calls,
        customers=len(distinct),
        median_history=float(np.median(sizes)),
        max_history=int(sizes.max()),
        timings=timings,
    )
