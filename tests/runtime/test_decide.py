"""The runtime: read state -> assign -> decide, the sequence behind every offers call,
profile and campaign chunk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import CLOCK, EXPERIMENT

from nbo.catalog.loading import default_catalog
from nbo.data.events import parse_events
from nbo.experiments.assignment import load_serving_models
from nbo.experiments.definitions import load_experiments
from nbo.offers.decision import Occasion
from nbo.offers.state import CustomerState, PostedPurchase
from nbo.runtime.decide import (
    Context,
    clocked,
    contact_policy,
    decide_customers,
    profiles_now,
    read_states,
)
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore

NOW_S = int(datetime.fromisoformat(CLOCK.replace("Z", "+00:00")).timestamp())


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "nbo.db")
    events, rejected = parse_events(
        {
            "events": [
                {
                    "type": "purchase",
                    "event_id": "p1",
                    "customer_id": "a01",
                    "timestamp": "2026-06-30T10:00:00Z",
                    "order_id": "o1",
                    "items": [{"item_id": "A07", "quantity": 1, "price": 2.5}],
                },
                {
                    "type": "offer_impression",
                    "event_id": "i1",
                    "customer_id": "a02",
                    "timestamp": "2026-06-30T09:00:00Z",
                    "item_id": "A03",
                    "channel": "email",
                    "request_id": "r1",
                },
            ]
        }
    )
    assert not rejected
    store.add_events([event for _, event in events])
    store.set_consent("a03", personalization=True, channels={"email": False})
    return store


def context_for(
    two_models: tuple[Path, str, str], store: SQLiteStore, experiments: Path
) -> Context:
    models = load_serving_models(two_models[0], None, load_experiments(experiments))
    policy = contact_policy(Settings())
    return Context(models, default_catalog(), policy, store)


def test_state_read_in_bulk_is_each_customers_own(store: SQLiteStore) -> None:
    customers = ["a01", "a02", "a03", "nobody"]
    together = read_states(store, customers, NOW_S - 30 * 86_400)
    alone = [read_states(store, [c], NOW_S - 30 * 86_400)[0] for c in customers]
    assert together == alone
    assert [p.item_id for p in together[0].posted] == ["A07"]
    assert [c.item_id for c in together[1].contacts.impressions] == ["A03"]
    assert not together[2].consent.allows("email")
    # Without a look-back nothing of the contacts is read.
    assert read_states(store, ["a02"], None)[0].contacts.impressions == []


def test_every_customer_is_decided_by_their_variants_model_in_their_order(
    two_models: tuple[Path, str, str], store: SQLiteStore, tmp_path: Path
) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENT, encoding="utf-8")
    context = context_for(two_models, store, experiments)
    customers = [f"{group}{n:02d}" for group in "ab" for n in range(15)]
    decided = decide_customers(context, customers, Occasion("app", 5, NOW_S))
    assert [d.customer_id for d in decided] == customers
    variants = {d.assignment.variant for d in decided}
    assert {"control", "production", "candidate"} <= variants
    states = read_states(store, customers, None)
    for d, state in zip(decided, states, strict=True):
        assert d.assignment == context.models.assign(d.customer_id, state.consent, NOW_S)
        alone = decide_customers(context, [d.customer_id], Occasion("app", 5, NOW_S))[0]
        ranking, alone_ranking = d.decision.ranking, alone.decision.ranking
        assert ranking is not None and alone_ranking is not None
        assert alone.decision.profile == d.decision.profile
        assert alone_ranking.offers == ranking.offers
        # The control group gets popular offers; the variants' models personalize.
        assert ranking.personalized == (d.assignment.variant != "control")


def test_the_stored_state_reaches_the_decision(
    two_models: tuple[Path, str, str], store: SQLiteStore, tmp_path: Path
) -> None:
    experiments = tmp_path / "none.yaml"
    experiments.write_text("version: 1\nexperiments: []\n", encoding="utf-8")
    context = context_for(two_models, store, experiments)
    a01, a03 = decide_customers(context, ["a01", "a03"], Occasion("email", 20, NOW_S))
    assert a01.decision.ranking is not None
    assert "A07" not in {o.item_id for o in a01.decision.ranking.offers}  # just posted
    assert a03.decision.ranking is None
    assert a03.decision.suppressed_reason == "no_channel_consent"


def test_a_stage_decides_only_its_customers(
    two_models: tuple[Path, str, str], store: SQLiteStore, tmp_path: Path
) -> None:
    experiments = tmp_path / "none.yaml"
    experiments.write_text("version: 1\nexperiments: []\n", encoding="utf-8")
    context = context_for(two_models, store, experiments)
    customers = [f"a{n:02d}" for n in range(10)] + ["stranger"]
    profiles = profiles_now(context.models.current, store, customers, NOW_S)
    stages = {p.customer_id: p.stage for p in profiles}
    for stage in set(stages.values()):
        decided = decide_customers(context, customers, Occasion("email", 3, NOW_S), stage)
        assert [d.customer_id for d in decided] == [c for c in customers if stages[c] == stage]
        assert all(d.decision.profile.stage == stage for d in decided)


def test_a_profile_now_counts_posted_purchases(
    two_models: tuple[Path, str, str], store: SQLiteStore
) -> None:
    models_dir = two_models[0]
    model = load_serving_models(models_dir, None).current
    before = profiles_now(model, store, ["a01"], NOW_S - 86_400)[0]
    after = profiles_now(model, store, ["a01"], NOW_S)[0]
    assert after.frequency == before.frequency + 1
    assert after.last_purchase_s == int(datetime(2026, 6, 30, 10, tzinfo=UTC).timestamp())


def test_a_purchase_inside_the_skew_is_dated_now_and_a_later_one_stays_later() -> None:
    def bought(at: int) -> PostedPurchase:
        return PostedPurchase("A01", 1.0, at, None, f"e{at}")

    states = [
        CustomerState(posted=(bought(NOW_S - 60), bought(NOW_S + 60), bought(NOW_S + 600))),
        CustomerState(posted=(bought(NOW_S - 60),)),
    ]
    first, second = clocked(states, NOW_S, 300)
    assert [p.occurred_at for p in first.posted] == [NOW_S - 60, NOW_S, NOW_S + 600]
    assert second is states[1]  # nothing to change: the same state
    assert clocked(states, NOW_S, 0) is states


def test_the_contact_policy_carries_every_contact_setting() -> None:
    # The API and campaigns decide under this one policy: a setting it dropped would
    # apply to neither.
    settings = Settings(
        suppression_days="all",
        frequency_caps={"app": {"max_deliveries": 2, "days": 1}},
        fatigue=None,
        min_hold_days={"email": 7},
    )
    policy = contact_policy(settings)
    assert policy.suppression.days is None
    assert set(policy.frequency_caps) == {"app"} and policy.fatigue is None
    assert policy.min_hold_days == {"email": 7.0}
