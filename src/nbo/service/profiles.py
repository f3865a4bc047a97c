"""A customer's profile as the API shows it: stage, churn risk, RFM, best send time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nbo.models.send_time import HOURS_PER_WEEK, next_send_at
from nbo.models.served import ServingModel
from nbo.offers.profiles import CustomerProfile
from nbo.runtime.decide import profiles_now
from nbo.service.schemas import BestSendTimeOut, CustomerProfileOut
from nbo.settings import Settings
from nbo.store.base import Store

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def best_send_time_values(hour_of_week: int, now: datetime) -> dict[str, Any]:
    """``BestSendTimeOut``'s values (its fields in its order): the hour of the week
    (Monday 00:00 UTC = 0) with its name and next occurrence strictly after ``now``.
    Plain values, as the offers route answers them: building the model to dump it again
    was 1% of an offers call's server time."""
    hour_of_week = int(hour_of_week) % HOURS_PER_WEEK
    return {
        "hour_of_week": hour_of_week,
        "day": DAYS[hour_of_week // 24],
        "hour": hour_of_week % 24,
        "next_at": next_send_at(hour_of_week, now).isoformat(),
    }


def best_send_time_out(hour_of_week: int, now: datetime) -> BestSendTimeOut:
    """``best_send_time_values`` as the model (the profile's answer)."""
    return BestSendTimeOut(**best_send_time_values(hour_of_week, now))


def profile_out(
    profile: CustomerProfile, model_version: str, horizon_days: int | None, now: datetime
) -> CustomerProfileOut:
    def moment(seconds: int | None) -> str | None:
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()

    return CustomerProfileOut(
        customer_id=profile.customer_id,
        model_version=model_version,
        known=profile.known,
        profiled=profile.profiled,
        stage=profile.stage,
        churn_risk=profile.churn_risk,
        churn_horizon_days=horizon_days,
        recency_days=profile.recency_days,
        frequency=profile.frequency,
        monetary=profile.monetary,
        first_purchase=moment(profile.first_purchase_s),
        last_purchase=moment(profile.last_purchase_s),
        best_send_time=best_send_time_out(profile.best_send_hour, now),
        as_of=now.isoformat(),
    )


def current_profile(
    model: ServingModel, store: Store, customer_id: str, now: datetime, settings: Settings
) -> CustomerProfileOut:
    """The profile ``GET /v1/customers/{id}`` answers, and the data export and the
    dashboard show: one function, so the export holds exactly what the profile route
    says. Posted lines are read as offers read them: the customer's most recent
    ``NBO_MAX_POSTED_LINES`` only, and a purchase dated up to ``NBO_CLOCK_SKEW_SECONDS``
    after ``now`` counts as made now (``nbo.runtime.decide.clocked``). ``now`` is the
    caller's, so an export's profile and its other parts read one clock."""
    (profile,) = profiles_now(
        model,
        store,
        [customer_id],
        int(now.timestamp()),
        settings.max_posted_lines,
        settings.clock_skew_seconds,
    )
    return profile_out(profile, model.version, model.churn_horizon_days, now)
