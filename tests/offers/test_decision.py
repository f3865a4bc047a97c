"""The decision (``nbo.offers.decision``): every rule in order on the customers' state as
passed in. Consent for the channel withholds the answer with its reason; the frequency
cap holds deliveries only and says when the next is allowed; an experiment's control
gets popular offers and keeps its profile; without consent to personalization the
profile is neutral; many customers at once get what each gets alone; profiles passed in
are the ones used.

On the planted model of conftest (the churn model where a churn risk must be seen), at
an hour after its data ends; the state is built here, as the runtime reads it from the
store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from support import posted, write

from nbo.catalog.loading import default_catalog, load_catalog
from nbo.catalog.terms import Catalog
from nbo.core.vocabulary import DAY
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers import decision as decision_module
from nbo.offers.decision import (
    ContactPolicy,
    Decision,
    DecisionRequest,
    Occasion,
    decide,
    profiles_of,
)
from nbo.offers.policies import FatigueRule, FrequencyCap
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.state import Consent, Contact, ContactHistory, CustomerState
from nbo.offers.suppression import SuppressionWindow
from training.pipeline import TrainResult

# Email: one delivery a week; app: no cap. Fatigue after three impressions in 14 days.
POLICY = ContactPolicy(
    SuppressionWindow(30),
    frequency_caps={"email": FrequencyCap(max_deliveries=1, days=7)},
    fatigue=FatigueRule(impressions=3, days=14),
)
# A win-back worth more than any product, for lapsed customers only, and a loyalty
# reward with a cap of one in 30 days.
CATALOG = """
version: 1
offers:
  - id: winback
    kind: incentive
    incentive: percent_off
    amount: 15
    value: 1000.0
    response_rate: 0.5
    stages: [lapsed]
  - id: loyal-points
    kind: incentive
    incentive: points_multiplier
    amount: 2
    value: 30.0
    response_rate: 0.1
    stages: [loyal]
    cap_per_customer: 1
    cap_days: 30
"""


@pytest.fixture(scope="module")
def now(served: ServingModel) -> int:
    return served.trained_until_s + 3600


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog(write(tmp_path / "catalog.yaml", CATALOG))


def consent(personalization: bool = True, **channels: bool) -> CustomerState:
    return CustomerState(consent=Consent(personalization, channels, updated_at=1))


def shown(item: str, at: int, delivery: str, channel: str = "email") -> Contact:
    return Contact(item, channel, delivery, at)


def sources(decision: Decision) -> set[str]:
    assert decision.ranking is not None
    return {offer.reason.source for offer in decision.ranking.offers}


def offer_ids(decision: Decision) -> list[str]:
    assert decision.ranking is not None
    return [offer.offer_id for offer in decision.ranking.offers]


# --- consent and the frequency cap -----------------------------------------------------


def test_without_consent_for_the_channel_the_answer_is_withheld_with_its_reason(
    served: ServingModel, catalog: Catalog, now: int
) -> None:
    request = DecisionRequest("a00", consent(email=False))
    for delivery in (False, True):  # a preview as a delivery
        [email] = decide(served, catalog, POLICY, [request], Occasion("email", 5, now, delivery))
        assert email.ranking is None
        assert email.suppressed_reason == "no_channel_consent"
        assert email.next_allowed_at is None
        assert email.profile.customer_id == "a00" and email.profile.known
    # The other channel still serves, ranked for the customer.
    [app] = decide(served, catalog, POLICY, [request], Occasion("app", 5, now, True))
    assert app.suppressed_reason is None and app.ranking is not None
    assert app.ranking.personalized and len(app.ranking.offers) == 5


def test_the_frequency_cap_holds_deliveries_only_and_says_when_the_next_is_allowed(
    served: ServingModel, catalog: Catalog, now: int
) -> None:
    delivered_at = now - 2 * DAY
    contacts = ContactHistory(impressions=[shown("A01", delivered_at, "r1")])
    request = DecisionRequest("a00", CustomerState(contacts=contacts))

    [capped] = decide(served, catalog, POLICY, [request], Occasion("email", 5, now, True))
    assert capped.ranking is None and capped.suppressed_reason == "frequency_cap"
    assert capped.next_allowed_at == delivered_at + 7 * DAY
    # A preview is not a delivery: ranked as usual.
    [preview] = decide(served, catalog, POLICY, [request], Occasion("email", 5, now))
    assert preview.suppressed_reason is None and preview.next_allowed_at is None
    assert preview.ranking is not None and len(preview.ranking.offers) == 5
    # The cap is the channel's: app has none.
    [app] = decide(served, catalog, POLICY, [request], Occasion("app", 5, now, True))
    assert app.suppressed_reason is None and app.ranking is not None
    # A week after the delivery the slot is free again.
    later = Occasion("email", 5, delivered_at + 7 * DAY, True)
    assert decide(served, catalog, POLICY, [request], later)[0].suppressed_reason is None
    # Consent is checked first: a capped customer without consent hears about consent.
    both = DecisionRequest("a00", dataclasses.replace(consent(email=False), contacts=contacts))
    [withheld] = decide(served, catalog, POLICY, [both], Occasion("email", 5, now, True))
    assert withheld.suppressed_reason == "no_channel_consent"


# --- personalization and the profile ---------------------------------------------------


def test_an_experiments_control_gets_popular_offers_but_keeps_its_profile(
    served: ServingModel, catalog: Catalog, now: int
) -> None:
    occasion = Occasion("email", 5, now)
    treated, control = decide(
        served,
        catalog,
        POLICY,
        [DecisionRequest("a00"), DecisionRequest("a00", personalize=False)],
        occasion,
    )
    assert treated.ranking is not None and treated.ranking.personalized
    assert sources(treated) != {"popular"}
    assert control.ranking is not None and not control.ranking.personalized
    assert control.ranking.taste == "none"
    assert sources(control) == {"popular"}
    # The profile is the customer's own, as for the treated request.
    assert control.profile == treated.profile
    assert control.profile.profiled and control.profile.known
    assert control.profile.frequency > 0


@pytest.fixture(scope="module")
def churn_model(churn_trained: TrainResult) -> ServingModel:
    assert churn_trained.path is not None
    return load_serving_model(churn_trained.path.parent)


def test_without_consent_to_personalization_the_profile_is_neutral(
    churn_model: ServingModel,
) -> None:
    now = churn_model.trained_until_s + 3600
    shop = customer_profiles(churn_model, [("", ())], now)[0]
    ids = [str(c) for c in churn_model.customers.ids]
    own = profiles_of(churn_model, [DecisionRequest(c) for c in ids], now)
    # A customer whose own profile differs from a neutral one in every respect.
    mine = next(
        p
        for p in own
        if p.stage != "active" and p.churn_risk is not None
        if p.best_send_hour != shop.best_send_hour
    )
    state = consent(personalization=False)

    [neutral] = profiles_of(churn_model, [DecisionRequest(mine.customer_id, state)], now)

    assert neutral.customer_id == mine.customer_id and not neutral.profiled
    assert neutral.stage == "active" and neutral.churn_risk is None
    assert neutral.best_send_hour == shop.best_send_hour
    # What would be said of the customer is withheld (None), never the zeros and "unknown"
    # of a customer without purchases: this one has orders.
    assert mine.known and mine.frequency and mine.monetary and mine.first_purchase_s
    assert neutral.known is None and neutral.frequency is None and neutral.monetary is None
    assert neutral.recency_days is None and neutral.features == {}
    assert neutral.first_purchase_s is None and neutral.last_purchase_s is None
    # decide answers with it, and non-personalized offers.
    request = DecisionRequest(mine.customer_id, state)
    [decided] = decide(churn_model, default_catalog(), POLICY, [request], Occasion("app", 3, now))
    assert decided.profile == neutral
    assert decided.ranking is not None and not decided.ranking.personalized


def test_profiles_keep_the_requests_order_and_only_the_unconsenting_are_neutral(
    served: ServingModel, now: int
) -> None:
    newbie = CustomerState(posted=[posted("B01", now - DAY, "o1"), posted("B02", now, "o2")])
    requests = [
        DecisionRequest("a00"),
        DecisionRequest("a01", consent(personalization=False)),
        DecisionRequest("newbie", newbie),
        DecisionRequest("b00", personalize=False),  # a control group's profile is its own
    ]
    profiles = profiles_of(served, requests, now)
    assert [p.customer_id for p in profiles] == ["a00", "a01", "newbie", "b00"]
    assert [p.profiled for p in profiles] == [True, False, True, True]
    assert [p.known for p in profiles] == [True, None, True, True]
    assert profiles[2].stage == "new" and profiles[2].frequency == 2
    assert profiles[0] == profiles_of(served, [requests[0]], now)[0]


# --- many customers at once -----------------------------------------------------------


def test_many_customers_at_once_get_what_each_gets_alone(
    served: ServingModel, catalog: Catalog, now: int
) -> None:
    named = {"a00", "a01", "a02", "a03", "a04", "b00", "b01"}
    everyone = [DecisionRequest(str(c)) for c in served.customers.ids]
    loyal = next(
        p.customer_id
        for p in profiles_of(served, everyone, now)
        if p.stage == "loyal" and p.customer_id not in named
    )
    tired = [shown("A03", now - day * DAY, f"t{day}", channel="app") for day in (1, 2, 3)]
    requests = [
        DecisionRequest("a00"),
        DecisionRequest("a01", consent(email=False)),
        DecisionRequest(
            "a02", CustomerState(contacts=ContactHistory([shown("A05", now - DAY, "r1")]))
        ),
        DecisionRequest("a03", CustomerState(contacts=ContactHistory(tired))),
        DecisionRequest("a04", CustomerState(posted=[posted("A02", now - 600, "o9")])),
        DecisionRequest("b00", personalize=False),
        DecisionRequest("b01", consent(personalization=False)),
        DecisionRequest("newbie", CustomerState(posted=[posted("B01", now - DAY, "o1")])),
        DecisionRequest("stranger"),
        DecisionRequest(loyal),
    ]
    occasion = Occasion("email", 5, now, delivery=True)

    together = decide(served, catalog, POLICY, requests, occasion)
    alone = [decide(served, catalog, POLICY, [request], occasion)[0] for request in requests]

    assert len(together) == len(requests)
    for request, many, one in zip(requests, together, alone, strict=True):
        assert many.profile == one.profile, request.customer_id
        assert many.suppressed_reason == one.suppressed_reason, request.customer_id
        assert many.next_allowed_at == one.next_allowed_at, request.customer_id
        assert (many.ranking is None) == (one.ranking is None), request.customer_id
        if many.ranking is not None and one.ranking is not None:
            for field in ("personalized", "taste", "suppressed_items", "removed", "offers"):
                assert getattr(many.ranking, field) == getattr(one.ranking, field), (
                    request.customer_id,
                    field,
                )
    # The states were different enough to matter: every rule answered someone.
    by_id = dict(zip([r.customer_id for r in requests], together, strict=True))
    assert by_id["a01"].suppressed_reason == "no_channel_consent"
    assert by_id["a02"].suppressed_reason == "frequency_cap"
    assert by_id["a03"].ranking is not None and by_id["a03"].ranking.removed["fatigue"] == 1
    assert by_id["a04"].ranking is not None and by_id["a04"].ranking.taste == "updated"
    assert sources(by_id["b00"]) == {"popular"} and not by_id["b01"].profile.profiled
    assert by_id["newbie"].ranking is not None and by_id["newbie"].ranking.taste == "live"
    assert "loyal-points" in offer_ids(by_id[loyal])
    assert "loyal-points" not in offer_ids(by_id["a00"])


# --- profiles passed in -----------------------------------------------------------------


def test_the_profiles_passed_in_are_used_not_recomputed(
    served: ServingModel, catalog: Catalog, now: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [DecisionRequest("a00"), DecisionRequest("b00")]
    occasion = Occasion("email", 5, now)
    computed = decide(served, catalog, POLICY, requests, occasion)
    assert [d.profile.stage for d in computed] == ["active", "active"]
    assert all("winback" not in offer_ids(d) for d in computed)
    # The caller's profiles say a00 is lapsed: the win-back (lapsed only) comes first.
    given = [dataclasses.replace(computed[0].profile, stage="lapsed"), computed[1].profile]

    def never(*args: object, **kwargs: object) -> list[CustomerProfile]:
        raise AssertionError("profiles computed again")

    monkeypatch.setattr(decision_module, "customer_profiles", never)
    lapsed, other = decide(served, catalog, POLICY, requests, occasion, profiles=given)

    assert lapsed.profile is given[0] and other.profile is given[1]
    assert offer_ids(lapsed)[0] == "winback"
    assert offer_ids(other) == offer_ids(computed[1])


def test_without_profiles_decide_computes_them_as_profiles_of_does(
    served: ServingModel, catalog: Catalog, now: int
) -> None:
    requests = [DecisionRequest("a00"), DecisionRequest("b01", consent(personalization=False))]
    decided = decide(served, catalog, POLICY, requests, Occasion("email", 5, now))
    assert [d.profile for d in decided] == profiles_of(served, requests, now)


# --- the contact policy -----------------------------------------------------------------


def test_contacts_are_read_as_far_back_as_the_longest_rule_looks(catalog: Catalog) -> None:
    assert ContactPolicy(SuppressionWindow(30)).lookback_days(default_catalog()) == 0
    # The caps and the fatigue window; the catalogue's longest offer cap (loyal-points: 30).
    policy = ContactPolicy(
        SuppressionWindow(30),
        frequency_caps={
            "email": FrequencyCap(max_deliveries=1, days=7),
            "app": FrequencyCap(max_deliveries=5, days=21),
        },
        fatigue=FatigueRule(impressions=3, days=14),
    )
    assert policy.lookback_days(default_catalog()) == 21
    assert dataclasses.replace(policy, frequency_caps={}).lookback_days(default_catalog()) == 14
    assert policy.lookback_days(catalog) == 30


def test_the_ranker_sees_the_profiles_orders_and_gap_between_them(
    churn_model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = churn_model.trained_until_s + 3600
    ids = [str(c) for c in churn_model.customers.ids]
    profiles = profiles_of(churn_model, [DecisionRequest(c) for c in ids], now)
    regular = next(p for p in profiles if p.known and "gap_mean_days" in p.features)
    seen: list = []
    rank = decision_module.rank_offers

    def spy(model, requests, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(requests)
        return rank(model, requests, *args, **kwargs)

    monkeypatch.setattr(decision_module, "rank_offers", spy)
    decide(
        churn_model,
        default_catalog(),
        POLICY,
        [DecisionRequest(regular.customer_id)],
        Occasion("app", 3, now),
    )

    [request] = seen
    assert request.baskets == regular.frequency > 1
    assert request.gap_days == regular.features["gap_mean_days"] > 0


# --- propensity: the chance of buying, not of buying given that the customer buys ------

# A win-back as a marketer prices it (8% take it up, worth 9, weighed double for lapsed
# customers) against products worth 20 each.
WINBACK_CATALOG = """
version: 1
products:
  value: 20.0
offers:
  - id: winback
    kind: incentive
    incentive: percent_off
    amount: 15
    value: 9.0
    response_rate: 0.08
    stages: [lapsed]
stage_weights:
  lapsed: {incentive: 2.0, product: 0.8}
"""


def _lapsed_and_active(model: ServingModel, now: int) -> tuple[CustomerProfile, CustomerProfile]:
    """A lapsed customer nearly sure to buy nothing more, and an active one more likely
    than not to come back, by their profiles."""
    ids = [str(c) for c in model.customers.ids]
    profiles = profiles_of(model, [DecisionRequest(c) for c in ids], now)
    lapsed = next(p for p in profiles if p.stage == "lapsed" and (p.churn_risk or 0) > 0.9)
    active = next(p for p in profiles if p.stage == "active" and (p.churn_risk or 1) < 0.5)
    return lapsed, active


def _first_product(decision: Decision) -> tuple[str | None, float]:
    assert decision.ranking is not None
    offer = next(o for o in decision.ranking.offers if o.kind == "product")
    assert offer.components is not None
    return offer.item_id, offer.components.propensity


def test_a_lapsed_customers_products_are_less_likely_than_an_active_ones(
    churn_model: ServingModel,
) -> None:
    """The curves are fitted on customers who bought something in the holdout; the
    decision multiplies them by the customer's chance of buying anything, from their
    churn risk. So the same item at the same place in the list (the popular list's
    first, which this model serves) is far less likely to be bought by a customer who
    has lapsed; without a risk (no consent to personalization) the figure stays the
    curve's own."""
    now = churn_model.trained_until_s + 3600
    lapsed, active = _lapsed_and_active(churn_model, now)
    curves = churn_model.propensity
    assert curves.buying is not None
    first = float(curves.of_popular_ranks(np.array([1.0]))[0])
    occasion = Occasion("email", 5, now)
    withheld = consent(personalization=False)
    answers = decide(
        churn_model,
        default_catalog(),
        POLICY,
        [
            DecisionRequest(lapsed.customer_id),
            DecisionRequest(active.customer_id),
            DecisionRequest(lapsed.customer_id, withheld),
        ],
        occasion,
    )
    (item, p_lapsed), (same, p_active), (_, p_unprofiled) = map(_first_product, answers)

    assert item == same
    assert p_lapsed < p_active
    factors = curves.of_buying(np.array([lapsed.churn_risk, active.churn_risk]))
    assert p_lapsed == pytest.approx(first * factors[0])
    assert p_active == pytest.approx(first * factors[1])
    assert p_lapsed < first / 10
    assert p_unprofiled == pytest.approx(first)


def test_arbitration_prefers_the_win_back_for_a_lapsed_customer(
    churn_model: ServingModel, tmp_path: Path
) -> None:
    """The win-back's response rate is unconditional; so now is the products'
    propensity: a lapsed customer is offered the win-back first, where the products'
    chance of being bought if the customer buys anything outranked it."""
    now = churn_model.trained_until_s + 3600
    lapsed, _ = _lapsed_and_active(churn_model, now)
    catalog = load_catalog(write(tmp_path / "catalog.yaml", WINBACK_CATALOG))

    [decision] = decide(
        churn_model,
        catalog,
        POLICY,
        [DecisionRequest(lapsed.customer_id)],
        Occasion("email", 5, now),
    )

    ids = offer_ids(decision)
    assert ids[0] == "winback", ids
    assert decision.ranking is not None
    products = [o for o in decision.ranking.offers if o.kind == "product"]
    assert products and all(o.priority < decision.ranking.offers[0].priority for o in products)


def test_an_artifact_without_the_buying_curve_keeps_the_curves_figures(
    churn_model: ServingModel,
) -> None:
    """An older artifact (no buying curve) serves what it did: factor 1."""
    now = churn_model.trained_until_s + 3600
    lapsed, _ = _lapsed_and_active(churn_model, now)
    older = dataclasses.replace(
        churn_model, propensity=dataclasses.replace(churn_model.propensity, buying=None)
    )
    first = float(older.propensity.of_popular_ranks(np.array([1.0]))[0])

    [decision] = decide(
        older,
        default_catalog(),
        POLICY,
        [DecisionRequest(lapsed.customer_id)],
        Occasion("email", 5, now),
    )

    assert _first_product(decision)[1] == pytest.approx(first)


# --- the minimum hold-back --------------------------------------------------------------


def test_the_channels_minimum_hold_back_outlasts_a_learned_dead_time(
    with_cycles: TrainResult,
) -> None:
    # a00 rebuys REFILL (ten orders) and buys it again two days before now; its learned
    # dead time is the one-day floor, so it comes back at once unless the channel holds
    # purchases back longer.
    assert with_cycles.path is not None
    model = load_serving_model(with_cycles.path.parent, with_cycles.version)
    now = model.trained_until_s + 3600
    state = CustomerState(posted=(posted("REFILL", now - 2 * DAY, "o1"),))
    policy = dataclasses.replace(POLICY, min_hold_days={"email": 7.0})
    catalog, request = default_catalog(), [DecisionRequest("a00", state)]
    k = len(model.items)

    def offered(policy: ContactPolicy, channel: str, at: int = now) -> tuple[list[str], int]:
        [decision] = decide(model, catalog, policy, request, Occasion(channel, k, at))
        assert decision.ranking is not None
        items = [offer.item_id for offer in decision.ranking.offers if offer.item_id]
        return items, decision.ranking.removed["just_bought"]

    learned, learned_removed = offered(POLICY, "email")
    assert "REFILL" in learned
    held, held_removed = offered(policy, "email")
    assert "REFILL" not in held and held_removed == learned_removed + 1
    # The hold is the channel's: app has none and offers REFILL as before.
    assert offered(policy, "app") == (learned, learned_removed)
    # Seven days after the purchase it is still held; a little later it comes back.
    assert "REFILL" not in offered(policy, "email", now + 5 * DAY)[0]
    assert "REFILL" in offered(policy, "email", now + 5 * DAY + 60)[0]
