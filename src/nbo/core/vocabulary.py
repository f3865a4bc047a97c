"""The words every part of nbo shares, each defined once.

Lifecycle stages, contact channels and kinds of offer are the catalogue's, the
decision's, the API's and the trainer's vocabulary; a day in seconds is everyone's
clock arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal, get_args

# A customer's lifecycle stage (``nbo.models.lifecycle`` says which one applies).
Stage = Literal["new", "active", "at_risk", "lapsed", "loyal"]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)

# Where offers are shown. The API's ``Channel`` enum (``nbo.service.schemas``) lists the same.
ChannelName = Literal["email", "app"]
CHANNELS: Final[tuple[ChannelName, ...]] = get_args(ChannelName)

# What an offer is: a product (an item) or an incentive (a discount, points, shipping).
OfferKind = Literal["product", "incentive"]
KIND_PRODUCT: Final = "product"
KIND_INCENTIVE: Final = "incentive"

# Seconds in a day: purchase times and the service clock are unix seconds.
DAY: Final = 86_400


def iso_utc(moment: int | datetime) -> str:
    """A unix time, or a datetime (one without a zone is UTC, as the purchase data's and
    the trainer's are), as ISO 8601 text in UTC (``+00:00``): how answers, reports,
    messages and a model's manifest write a time."""
    if isinstance(moment, datetime):
        return in_utc(moment).isoformat()
    return datetime.fromtimestamp(moment, UTC).isoformat()


def in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; one without a zone is taken as UTC (events, settings and the
    times of catalogues and experiments alike). OverflowError when that moves it past
    the range of a datetime."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
