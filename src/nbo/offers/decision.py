"""The next-best-offer decision for one customer and one contact: every rule, in order.

consent for the channel -> frequency cap (for deliveries) -> the customer's profile
(stage, churn risk, best send time) -> ranking and arbitration (``nbo.ranking``) under
the catalogue, suppression and offer fatigue.

Pure, like ranking: the caller reads the customer's state from the store
(``CustomerState``) and records what it delivers. The API and batch generation both call
``decide``, so a campaign obeys exactly the rules a single call does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from nbo.catalog.terms import Catalog
from nbo.models.served import ServingModel
from nbo.offers.policies import (
    DAY,
    REASON_FREQUENCY_CAP,
    ContactHistory,
    FatigueRule,
    FrequencyCap,
    check_frequency_cap,
    fatigued_items,
)
from nbo.offers.profiles import CustomerProfile, customer_profile, customer_profiles
from nbo.offers.ranking import OfferRequest, Ranking, RecentPurchase, rank_offers_many
from nbo.offers.suppression import SuppressionWindow
from nbo.settings import Settings
from nbo.store.base import DEFAULT_CONSENT, Consent, Store, StoredPurchase

# The customer withdrew consent to be contacted on this channel: no offers for it.
REASON_NO_CHANNEL_CONSENT = "no_channel_consent"
# The stage of a customer nbo may not profile (no consent to personalization).
STAGE_UNPROFILED = "active"


@dataclass(frozen=True)
class ContactPolicy:
    """The service's contact rules (from the settings)."""

    suppression: SuppressionWindow
    frequency_caps: dict[str, FrequencyCap] = field(default_factory=dict)
    fatigue: FatigueRule | None = None

    def lookback_days(self, catalog: Catalog) -> float:
        """How far back the customer's contacts must be read for every rule to see them."""
        days = [cap.days for cap in self.frequency_caps.values()]
        if self.fatigue is not None:
            days.append(self.fatigue.days)
        days.append(catalog.max_cap_days)
        return max(days)


@dataclass(frozen=True)
class CustomerState:
    """What the store knows of the customer, read by the caller."""

    consent: Consent = DEFAULT_CONSENT
    contacts: ContactHistory = field(default_factory=ContactHistory)
    posted: Sequence[StoredPurchase] = ()


@dataclass(frozen=True)
class Decision:
    """The answer for one contact: a profile, and offers or the reason there are none."""

    profile: CustomerProfile
    ranking: Ranking | None
    suppressed_reason: str | None = None
    next_allowed_at: int | None = None  # unix seconds, with ``frequency_cap``


def profile_for(
    model: ServingModel, customer_id: str, state: CustomerState, now_s: int
) -> CustomerProfile:
    """The customer's profile, or without consent to personalization a neutral one.

    Profiling for direct marketing needs the same consent as personalized offers: without
    it nbo derives nothing from the customer's history (stage ``active``, no churn risk,
    the overall best send time), and the profile says ``profiled=False``.
    """
    return profiles_for(model, [(customer_id, state)], now_s)[0]


def profiles_for(
    model: ServingModel, customers: Sequence[tuple[str, CustomerState]], now_s: int
) -> list[CustomerProfile]:
    """``profile_for`` of many customers: the profiled ones in one pass, a neutral
    profile for those without consent to personalization."""
    profiled = [n for n, (_, state) in enumerate(customers) if state.consent.personalization]
    computed = customer_profiles(
        model, [(customers[n][0], customers[n][1].posted) for n in profiled], now_s
    )
    out: list[CustomerProfile | None] = [None] * len(customers)
    for n, profile in zip(profiled, computed, strict=True):
        out[n] = profile
    if len(profiled) < len(customers):
        anonymous = customer_profile(model, "", (), now_s)
        for n, (customer_id, _state) in enumerate(customers):
            if out[n] is None:
                out[n] = replace(
                    anonymous, customer_id=customer_id, stage=STAGE_UNPROFILED, profiled=False
                )
    return [profile for profile in out if profile is not None]


def decide(
    model: ServingModel,
    catalog: Catalog,
    policy: ContactPolicy,
    customer_id: str,
    channel: str,
    k: int,
    now_s: int,
    state: CustomerState,
    delivery: bool,
    personalize: bool = True,
) -> Decision:
    """Offers for ``customer_id`` on ``channel`` at ``now_s``; ``delivery``: the offers
    will be sent, so the channel's frequency cap applies (the caller records them).
    ``personalize=False`` (an experiment's control group) answers with non-personalized
    offers even for a customer who consents to personalization; the profile stays.

    One customer's ``decide_many``: an API call and a campaign decide the same way."""
    request = DecisionRequest(customer_id, state, personalize)
    return decide_many(model, catalog, policy, [request], channel, k, now_s, delivery)[0]


@dataclass(frozen=True)
class DecisionRequest:
    """One customer to decide for, with what the store holds of them."""

    customer_id: str
    state: CustomerState
    personalize: bool = True  # False: an experiment's control group


def decide_many(
    model: ServingModel,
    catalog: Catalog,
    policy: ContactPolicy,
    requests: Sequence[DecisionRequest],
    channel: str,
    k: int,
    now_s: int,
    delivery: bool,
    profiles: Sequence[CustomerProfile] | None = None,
) -> list[Decision]:
    """``decide`` for many customers: each one's profile, consent and frequency cap, then
    the rankings of those who may be contacted in one ``rank_offers_many`` pass.
    ``profiles``: the customers' ``profiles_for``, when the caller already has them."""
    if profiles is None:
        profiles = profiles_for(model, [(r.customer_id, r.state) for r in requests], now_s)
    decisions: list[Decision | None] = [None] * len(requests)
    to_rank: list[tuple[int, OfferRequest]] = []
    for n, (request, profile) in enumerate(zip(requests, profiles, strict=True)):
        state = request.state
        if not state.consent.allows(channel):
            decisions[n] = Decision(profile, None, REASON_NO_CHANNEL_CONSENT)
            continue
        if delivery:
            verdict = check_frequency_cap(
                policy.frequency_caps.get(channel), state.contacts, channel, now_s
            )
            if not verdict.allowed:
                decisions[n] = Decision(
                    profile, None, REASON_FREQUENCY_CAP, verdict.next_allowed_at
                )
                continue
        recent = [
            RecentPurchase(p.item_id, p.occurred_at, p.order_id or p.event_id) for p in state.posted
        ]
        to_rank.append(
            (
                n,
                OfferRequest(
                    request.customer_id,
                    k,
                    recent,
                    fatigued=fatigued_items(policy.fatigue, state.contacts, now_s),
                    personalize=state.consent.personalization and request.personalize,
                    stage=profile.stage,
                    channel=channel,
                    impressions=state.contacts.impressions,
                    churn_risk=profile.churn_risk,
                    monetary=profile.monetary if profile.known else None,
                ),
            )
        )
    rankings = rank_offers_many(
        model, [offer for _, offer in to_rank], now_s, policy.suppression, catalog
    )
    for (n, _), ranking in zip(to_rank, rankings, strict=True):
        decisions[n] = Decision(profiles[n], ranking)
    return [d for d in decisions if d is not None]


def contact_policy(settings: Settings) -> ContactPolicy:
    """The contact rules the settings configure."""
    return ContactPolicy(settings.suppression, settings.frequency_caps, settings.fatigue)


def customer_state(
    store: Store,
    customer_id: str,
    now_s: int,
    policy: ContactPolicy,
    catalog: Catalog,
    max_posted_lines: int | None = None,
) -> CustomerState:
    """What the store knows of the customer, as far back as any rule looks: what the API
    reads before ``decide`` (``customer_states`` of one)."""
    return customer_states(store, [customer_id], now_s, policy, catalog, max_posted_lines)[0]


def customer_states(
    store: Store,
    customer_ids: Sequence[str],
    now_s: int,
    policy: ContactPolicy,
    catalog: Catalog,
    max_posted_lines: int | None = None,
) -> list[CustomerState]:
    """``customer_state`` of many customers in three bulk reads (a campaign's chunk).

    ``max_posted_lines``: each customer's most recent posted purchase lines only
    (``NBO_MAX_POSTED_LINES``), so what one customer's history costs a decision is
    bounded whatever a client posted; None reads them all."""
    consents = store.consents_of(customer_ids)
    contacts = store.contacts_of_many(
        customer_ids, since=int(now_s - policy.lookback_days(catalog) * DAY)
    )
    posted = store.purchases_of_many(customer_ids, limit=max_posted_lines)
    return [
        CustomerState(
            consent=consents.get(c, DEFAULT_CONSENT),
            contacts=contacts.get(c, ContactHistory()),
            posted=posted.get(c, ()),
        )
        for c in customer_ids
    ]
