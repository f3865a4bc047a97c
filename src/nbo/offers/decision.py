"""The next-best-offer decision for many customers on one occasion: every rule, in order.

consent for the channel -> frequency cap (for deliveries) -> the customer's profile
(stage, churn risk, best send time) -> ranking and arbitration (``nbo.offers.ranking``)
under the catalogue, suppression and offer fatigue.

Pure, like ranking: the runtime reads each customer's state from the store
(``CustomerState``) and records what it delivers. An API call is a chunk of one, so a
campaign obeys exactly the rules a single call does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from nbo.catalog.terms import Catalog
from nbo.models.served import ServingModel
from nbo.offers.policies import (
    REASON_FREQUENCY_CAP,
    FatigueRule,
    FrequencyCap,
    check_frequency_cap,
    fatigued_items,
)
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.ranking import OfferRequest, Ranking, rank_offers
from nbo.offers.state import CustomerState
from nbo.offers.suppression import SuppressionWindow

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
    # Per channel, the fewest days a purchase is held back, whatever the item's learned
    # dead time (a channel left out: the dead times alone).
    min_hold_days: dict[str, float] = field(default_factory=dict)

    def lookback_days(self, catalog: Catalog) -> float:
        """How far back the customer's contacts must be read for every rule to see them."""
        days = [cap.days for cap in self.frequency_caps.values()]
        if self.fatigue is not None:
            days.append(self.fatigue.days)
        days.append(catalog.max_cap_days)
        return max(days)


@dataclass(frozen=True)
class Occasion:
    """What the offers are asked for: the channel they will be shown on, how many, the
    moment (unix seconds), and whether they will be delivered (the channel's frequency
    cap applies and the caller records the impressions) or only previewed."""

    channel: str
    k: int
    now_s: int
    delivery: bool = False


@dataclass(frozen=True)
class DecisionRequest:
    """One customer to decide for, with what the store holds of them."""

    customer_id: str
    state: CustomerState = field(default_factory=CustomerState)
    personalize: bool = True  # False: an experiment's control group


@dataclass(frozen=True)
class Decision:
    """The answer for one contact: a profile, and offers or the reason there are none."""

    profile: CustomerProfile
    ranking: Ranking | None
    suppressed_reason: str | None = None
    next_allowed_at: int | None = None  # unix seconds, with ``frequency_cap``


def profiles_of(
    model: ServingModel, requests: Sequence[DecisionRequest], now_s: int
) -> list[CustomerProfile]:
    """Each customer's profile: the profiled ones in one pass, a neutral profile for
    those without consent to personalization.

    Profiling for direct marketing needs the same consent as personalized offers: without
    it nbo derives nothing from the customer's history (stage ``active``, no churn risk,
    the overall best send time), and the profile says ``profiled=False``. What it would
    have said of the customer (whether any purchase is known, orders, value, recency,
    first and last purchase, features) is withheld: None, not the zeros and ``known``
    False of a customer without purchases, which would state something untrue of one
    with sixty orders.
    """
    profiled = [n for n, r in enumerate(requests) if r.state.consent.personalization]
    computed = customer_profiles(
        model, [(requests[n].customer_id, requests[n].state.posted) for n in profiled], now_s
    )
    out: list[CustomerProfile | None] = [None] * len(requests)
    for n, profile in zip(profiled, computed, strict=True):
        out[n] = profile
    if len(profiled) < len(requests):
        anonymous = customer_profiles(model, [("", ())], now_s)[0]
        for n, request in enumerate(requests):
            if out[n] is None:
                out[n] = replace(
                    anonymous,
                    customer_id=request.customer_id,
                    known=None,
                    stage=STAGE_UNPROFILED,
                    churn_risk=None,
                    recency_days=None,
                    frequency=None,
                    monetary=None,
                    first_purchase_s=None,
                    last_purchase_s=None,
                    features={},
                    profiled=False,
                )
    return [profile for profile in out if profile is not None]


def decide(
    model: ServingModel,
    catalog: Catalog,
    policy: ContactPolicy,
    requests: Sequence[DecisionRequest],
    occasion: Occasion,
    profiles: Sequence[CustomerProfile] | None = None,
) -> list[Decision]:
    """Offers for each request on ``occasion``: each customer's profile, consent and
    frequency cap, then the rankings of those who may be contacted in one
    ``rank_offers`` pass. ``personalize=False`` (an experiment's control group) answers
    with non-personalized offers even for a customer who consents to personalization;
    the profile stays. ``profiles``: the customers' ``profiles_of``, when the caller
    already has them."""
    now_s, channel = occasion.now_s, occasion.channel
    if profiles is None:
        profiles = profiles_of(model, requests, now_s)
    decisions: list[Decision | None] = [None] * len(requests)
    to_rank: list[tuple[int, OfferRequest]] = []
    for n, (request, profile) in enumerate(zip(requests, profiles, strict=True)):
        state = request.state
        if not state.consent.allows(channel):
            decisions[n] = Decision(profile, None, REASON_NO_CHANNEL_CONSENT)
            continue
        if occasion.delivery:
            verdict = check_frequency_cap(
                policy.frequency_caps.get(channel), state.contacts, channel, now_s
            )
            if not verdict.allowed:
                decisions[n] = Decision(
                    profile, None, REASON_FREQUENCY_CAP, verdict.next_allowed_at
                )
                continue
        to_rank.append(
            (
                n,
                OfferRequest(
                    request.customer_id,
                    occasion.k,
                    state.posted,
                    fatigued=fatigued_items(policy.fatigue, state.contacts, now_s),
                    personalize=state.consent.personalization and request.personalize,
                    stage=profile.stage,
                    channel=channel,
                    impressions=state.contacts.impressions,
                    churn_risk=profile.churn_risk,
                    monetary=profile.monetary if profile.known else None,
                    baskets=profile.frequency if profile.known else None,
                    gap_days=profile.features.get("gap_mean_days") if profile.known else None,
                    hold_days=policy.min_hold_days.get(channel, 0.0),
                ),
            )
        )
    rankings = rank_offers(
        model, [offer for _, offer in to_rank], now_s, policy.suppression, catalog
    )
    for (n, _), ranking in zip(to_rank, rankings, strict=True):
        decisions[n] = Decision(profiles[n], ranking)
    return [d for d in decisions if d is not None]
