"""Read state -> assign -> decide: the one sequence behind an offers call, a profile, and
every chunk of a campaign.

The service builds a ``Context`` per request (the references it serves with at that
moment), a campaign one per run; both then go through ``decide_customers`` (offers) or
``profiles_now`` (profiles), so an API answer and a campaign row for the same customer,
clock, store and catalogue are the same decision. Offers that will be delivered take the
same sequence inside the store's per-customer lock (``nbo.runtime.deliver``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from nbo.catalog.terms import Catalog
from nbo.core.vocabulary import DAY
from nbo.experiments.assignment import Assignment, ServingModels
from nbo.models.served import ServingModel
from nbo.offers.decision import (
    ContactPolicy,
    Decision,
    DecisionRequest,
    Occasion,
    decide,
    profiles_of,
)
from nbo.offers.profiles import CustomerProfile
from nbo.offers.state import DEFAULT_CONSENT, ContactHistory, CustomerState
from nbo.settings import Settings
from nbo.store.base import StateReader, Store


@dataclass(frozen=True)
class Context:
    """What customers are decided with: the served models (the current one and the
    experiments' variants), the catalogue, the contact policy and the store."""

    models: ServingModels
    catalog: Catalog
    policy: ContactPolicy
    store: Store
    # Each customer's most recent posted purchase lines read (NBO_MAX_POSTED_LINES).
    max_posted_lines: int | None = None
    # How far after the clock a posted event may be dated (NBO_CLOCK_SKEW_SECONDS).
    clock_skew_s: int = 0


@dataclass(frozen=True)
class Decided:
    """One customer's decision, with the experiment variant (and model) that made it."""

    customer_id: str
    assignment: Assignment
    decision: Decision


def contact_policy(settings: Settings) -> ContactPolicy:
    """The contact rules the settings configure."""
    return ContactPolicy(
        settings.suppression,
        settings.frequency_caps,
        settings.fatigue,
        min_hold_days=settings.min_hold_days,
    )


def context_for(
    settings: Settings,
    models: ServingModels,
    catalog: Catalog,
    store: Store,
    policy: ContactPolicy | None = None,
) -> Context:
    """The context the settings configure around ``models``, ``catalog`` and ``store``:
    the contact rules, the posted lines read and the clock's skew. ``policy``: the
    settings' contact rules made already (the service makes them once, at start)."""
    return Context(
        models,
        catalog,
        contact_policy(settings) if policy is None else policy,
        store,
        settings.max_posted_lines,
        settings.clock_skew_seconds,
    )


def read_states(
    store: StateReader,
    customer_ids: Sequence[str],
    contacts_since: int | None,
    max_posted_lines: int | None = None,
) -> list[CustomerState]:
    """What the store knows of each customer, in a few bulk reads (a campaign's chunk, or
    an API call's one customer): consent, posted purchases (the most recent
    ``max_posted_lines`` lines each) and, unless ``contacts_since`` is None, the offers
    shown and answered since then."""
    consents = store.consents_of(customer_ids)
    contacts = (
        {} if contacts_since is None else store.contacts_of_many(customer_ids, contacts_since)
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


def contact_window_start(context: Context, occasion: Occasion) -> int:
    """The earliest contact any rule looks at on ``occasion`` (unix seconds)."""
    return int(occasion.now_s - context.policy.lookback_days(context.catalog) * DAY)


def forget_erased(
    models: ServingModels | ServingModel, store: StateReader, customer_ids: Sequence[str]
) -> None:
    """Make the customers erased since ``models`` were loaded unknown to them. An erasure
    makes the process that answers it forget the customer at once; another process on
    the same store (a replica, a worker, a campaign) learns it here, on its next call
    for that customer, so no model row of an erased customer is ever used again."""
    for customer_id in store.erased_among(customer_ids):
        models.forget(customer_id)


def decide_customers(
    context: Context,
    customer_ids: Sequence[str],
    occasion: Occasion,
    stage: str | None = None,
) -> list[Decided]:
    """Each customer's decision on ``occasion`` (a preview: nothing is recorded): their
    stored state (as far back as any rule looks) and experiment variant, then ``decide``
    per model, in the customers' order. With ``stage``, only the customers whose live
    profile is in that stage are decided (the profiles, cheap, are computed first; the
    rankings only for them). A delivery goes through ``deliver_customers``."""
    if occasion.delivery:
        raise ValueError("a delivery is decided and recorded by deliver_customers")
    decided = read_and_decide(context, customer_ids, occasion, stage).decided
    return [one for one in decided if one is not None]


@dataclass(frozen=True)
class ReadAndDecided:
    """The stored state read for a decision (from ``since``) and each customer's decision
    (None for a customer a stage selection leaves out), in the customers' order."""

    since: int
    states: list[CustomerState]
    decided: list[Decided | None]


def read_and_decide(
    context: Context,
    customer_ids: Sequence[str],
    occasion: Occasion,
    stage: str | None = None,
) -> ReadAndDecided:
    """The one sequence of a decision: the erased forgotten, the stored state read as far
    back as any rule looks, then ``decide_states``. A preview keeps the decisions; a
    delivery also the state, to check under the customers' locks that it still holds."""
    since = contact_window_start(context, occasion)
    forget_erased(context.models, context.store, customer_ids)
    states = read_states(context.store, customer_ids, since, context.max_posted_lines)
    return ReadAndDecided(
        since, states, decide_states(context, customer_ids, states, occasion, stage)
    )


def decide_states(
    context: Context,
    customer_ids: Sequence[str],
    states: Sequence[CustomerState],
    occasion: Occasion,
    stage: str | None = None,
) -> list[Decided | None]:
    """``decide_customers`` on states already read: one entry per customer, None for a
    customer ``stage`` leaves out."""
    now_s = occasion.now_s
    states = clocked(states, now_s, context.clock_skew_s)
    assignments = [
        context.models.assign(c, state.consent, now_s)
        for c, state in zip(customer_ids, states, strict=True)
    ]
    requests = [
        DecisionRequest(c, state, assignment.personalize)
        for c, state, assignment in zip(customer_ids, states, assignments, strict=True)
    ]
    by_model: dict[str, list[int]] = {}
    for n, assignment in enumerate(assignments):
        by_model.setdefault(assignment.model.version, []).append(n)
    decided: list[Decision | None] = [None] * len(customer_ids)
    for positions in by_model.values():
        model = assignments[positions[0]].model
        profiles = None
        if stage is not None:
            everyone = profiles_of(model, [requests[n] for n in positions], now_s)
            # A customer who withdrew consent to personalization has no stage of their
            # own (theirs is the neutral profile's): selecting them by one would profile
            # them for direct marketing, which the withdrawal forbids.
            kept = [
                i
                for i, profile in enumerate(everyone)
                if profile.profiled and profile.stage == stage
            ]
            positions = [positions[i] for i in kept]
            profiles = [everyone[i] for i in kept]
        answers = decide(
            model,
            context.catalog,
            context.policy,
            [requests[n] for n in positions],
            occasion,
            profiles,
        )
        for n, answer in zip(positions, answers, strict=True):
            decided[n] = answer
    return [
        None if d is None else Decided(c, a, d)
        for c, a, d in zip(customer_ids, assignments, decided, strict=True)
    ]


def clocked(states: Sequence[CustomerState], now_s: int, skew_s: int) -> Sequence[CustomerState]:
    """``states`` with every posted purchase dated after ``now_s`` but within ``skew_s``
    of it dated ``now_s``: the service accepts such a purchase (a client's clock runs a
    little ahead of ours), so it has happened, and the profile, which counts orders up
    to the clock, counts it as the offers' suppression does. Later ones (a campaign run
    with a clock in the past) stay in the future and count nowhere in the profile."""
    if skew_s <= 0:
        return states
    latest = now_s + skew_s
    out: list[CustomerState] | None = None
    for n, state in enumerate(states):
        if not any(now_s < p.occurred_at <= latest for p in state.posted):
            continue
        if out is None:
            out = list(states)
        posted = tuple(
            replace(p, occurred_at=now_s) if now_s < p.occurred_at <= latest else p
            for p in state.posted
        )
        out[n] = replace(state, posted=posted)
    return states if out is None else out


def everyone(model: ServingModel, store: Store) -> list[str]:
    """Every customer the model and the store know, less the erased: the model's
    customers in its order, then those known only from posted purchases, sorted (what a
    campaign for ``all`` covers, and the customers the dashboard counts)."""
    known = [str(c) for c in model.customers.ids]
    posted = [c for c in store.customers_with_purchases() if model.customers.get(c) is None]
    candidates = [*known, *sorted(posted)]
    erased = store.erased_list().among(candidates)
    return [c for c in candidates if c not in erased]


def profiles_now(
    model: ServingModel,
    store: Store,
    customer_ids: Sequence[str],
    now_s: int,
    max_posted_lines: int | None = None,
    clock_skew_s: int = 0,
) -> list[CustomerProfile]:
    """Each customer's profile as of ``now_s`` under ``model``, from their stored consent
    and posted purchases (their contacts do not make a profile): what
    ``GET /v1/customers/{id}`` answers and the data export shows. ``clock_skew_s``: as
    ``Context.clock_skew_s`` (``clocked``)."""
    forget_erased(model, store, customer_ids)
    states = clocked(read_states(store, customer_ids, None, max_posted_lines), now_s, clock_skew_s)
    requests = [DecisionRequest(c, state) for c, state in zip(customer_ids, states, strict=True)]
    return profiles_of(model, requests, now_s)
