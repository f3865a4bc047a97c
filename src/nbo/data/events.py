"""Events posted to the service: purchases, offer impressions, clicks and conversions.

Each event is validated on its own, so one bad event in a batch is rejected with its
reason while the good ones are stored. Times are stored as UTC unix seconds.

Validation is strict, as for every request body: JSON types as documented (no "3" for
3, no "yes" for true; a time is ISO 8601 text), unknown fields refused, ids as
``nbo.core.ids`` defines them, finite numbers within stated bounds, and a timestamp inside
the window the service accepts (``EventWindow``: not before ``NBO_EARLIEST_EVENT``, not
after the service clock plus ``NBO_CLOCK_SKEW_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from nbo.core.ids import (
    MAX_ID_LENGTH,
    VERSION_NAME,
    VERSION_RULE,
    Id,
    check_id,
    id_problem,
    path_id_problem,
)
from nbo.core.vocabulary import ChannelName, OfferKind, Stage, in_utc

MAX_BATCH = 1000  # events per request
# Lines per purchase event: the largest order of a known customer in the Online Retail
# data has 542 lines; the request body limit (NBO_MAX_BODY_BYTES) bounds a request too.
MAX_LINES = 1000
# Bounds of the numbers an event carries: far above any real order line (the Online
# Retail data's largest quantity is 80,995 and price 38,970), far below what makes sums
# of them lose precision or overflow.
MAX_QUANTITY = 1e6
MAX_MONEY = 1e9

PURCHASE = "purchase"
IMPRESSION = "offer_impression"
CLICK = "offer_click"
CONVERSION = "offer_conversion"
EVENT_TYPES = (PURCHASE, IMPRESSION, CLICK, CONVERSION)

ISO_EXAMPLE = "2026-11-23T10:00:00Z"


@dataclass(frozen=True)
class EventWindow:
    """The timestamps the service accepts: from ``earliest`` to ``latest``, both
    included (UTC). Passed as the validation context; events built in code (the
    impressions the service records) are not checked against it."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime, skew_seconds: float, earliest: datetime) -> EventWindow:
        """Events from ``earliest`` up to ``skew_seconds`` after the service clock."""
        return cls(earliest, now + timedelta(seconds=skew_seconds))


def _time_from_text(value: Any) -> Any:
    """A timestamp is ISO 8601 text (or a datetime, for events built in code); a time
    without a zone is UTC. Numbers are refused: seconds or milliseconds would be a
    guess."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "iso_time", f"must be an ISO 8601 time such as {ISO_EXAMPLE}"
            ) from None
    else:
        raise PydanticCustomError("iso_time", f"must be ISO 8601 text such as {ISO_EXAMPLE}")
    try:
        return in_utc(moment)
    except OverflowError:
        raise PydanticCustomError("iso_time", "is out of range") from None


Timestamp = Annotated[datetime, BeforeValidator(_time_from_text)]
# A short name (a channel, an experiment, a variant): an id of at most 64 characters.
Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_id)]


def _check_version(value: str) -> str:
    if VERSION_NAME.fullmatch(value) is None:
        raise PydanticCustomError(
            "model_version", f"{value[:64]!r} is not a model version ({VERSION_RULE})"
        )
    return value


# A model version, as an offers answer's ``model_version`` names it.
ModelVersion = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_check_version)
]
Quantity = Annotated[float, Field(gt=0, le=MAX_QUANTITY)]
Money = Annotated[float, Field(le=MAX_MONEY)]


class _Strict(BaseModel):
    # strict: JSON types as documented; allow_inf_nan: Infinity and NaN (which Python's
    # JSON reader accepts, and 1e309 becomes) are not numbers anything can be counted in.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Event(_Strict):
    event_id: Id
    customer_id: Id
    timestamp: Timestamp = Field(
        description="when it happened, ISO 8601; without a zone it is UTC; not before "
        "NBO_EARLIEST_EVENT, not after the service clock plus NBO_CLOCK_SKEW_SECONDS"
    )

    @field_validator("timestamp")
    @classmethod
    def _inside_the_window(cls, value: datetime, info: ValidationInfo) -> datetime:
        window = info.context
        if not isinstance(window, EventWindow):
            return value
        if value < window.earliest:
            raise PydanticCustomError(
                "time_window",
                f"{value.isoformat()} is before the earliest event time accepted "
                f"({window.earliest.isoformat()}, NBO_EARLIEST_EVENT)",
            )
        if value > window.latest:
            raise PydanticCustomError(
                "time_window",
                f"{value.isoformat()} is after the latest event time accepted "
                f"({window.latest.isoformat()}: the service clock plus "
                "NBO_CLOCK_SKEW_SECONDS)",
            )
        return value

    @property
    def occurred_at(self) -> int:
        """Unix seconds, the store's clock unit."""
        return int(self.timestamp.timestamp())


class PurchaseLine(_Strict):
    item_id: Id
    quantity: Quantity = Field(
        1.0, description=f"units, > 0 and <= {MAX_QUANTITY:,.0f}; returns are not purchases"
    )
    price: Money | None = Field(None, gt=0, description=f"unit price, > 0 and <= {MAX_MONEY:,.0f}")


class PurchaseEvent(_Event):
    type: Literal["purchase"]
    order_id: Id | None = None
    items: list[PurchaseLine] = Field(
        min_length=1, max_length=MAX_LINES, description=f"1 to {MAX_LINES} lines"
    )


class _OfferEvent(_Event):
    item_id: Id = Field(
        description="the offer as the offers answer named it: its item_id, or its "
        "offer_id (a product offer's is stored as its item id; an incentive's as it is)"
    )
    # One of the service's channels: the frequency caps count impressions by channel, and
    # one named otherwise ("Email", "sms") would be stored and never counted.
    channel: ChannelName | None = Field(
        None, description="where it was shown: email or app (what the caps count it in)"
    )
    request_id: Id | None = Field(
        None, description="the request id of the offers call that showed it"
    )
    experiment: Name | None = Field(
        None, description="the experiment the offers answer named, if any"
    )
    variant: Name | None = Field(None, description="the variant the offers answer named, if any")


class ImpressionEvent(_OfferEvent):
    type: Literal["offer_impression"]
    # What the offers answer said of the offer and the customer, for the dashboard's
    # counts of offers going out by kind, source and stage (the service fills them in
    # when it records an answer; a client posting impressions may copy them).
    kind: OfferKind | None = Field(None, description="the offer's kind in the offers answer")
    source: Name | None = Field(
        None, description="the offer's reason.source in the offers answer (buy_again, cf, ...)"
    )
    stage: Stage | None = Field(None, description="the customer's stage in the offers answer")
    # Which model decided it: an experiment's outcomes are broken down by it (a model
    # changed under an arm shows), and the customer's data export says it. None: not
    # known (recorded before nbo kept it, or posted without it).
    model_version: ModelVersion | None = Field(
        None,
        description="the model version that decided the offer: the offers answer's (or "
        "campaign row's) model_version",
    )


class ClickEvent(_OfferEvent):
    type: Literal["offer_click"]


class ConversionEvent(_OfferEvent):
    type: Literal["offer_conversion"]
    revenue: Money = Field(0.0, ge=0, description=f"money, >= 0 and <= {MAX_MONEY:,.0f}")


Event = Annotated[
    PurchaseEvent | ImpressionEvent | ClickEvent | ConversionEvent, Field(discriminator="type")
]
_EVENT = TypeAdapter(Event)


class Rejection(BaseModel):
    index: int = Field(description="position of the event in the batch")
    event_id: str | None = None
    reason: str


def parse_events(
    body: Any, window: EventWindow | None = None
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """Split a request body (one event, or ``{"events": [...]}``) into valid events (with
    their positions) and rejections naming the field and the problem; timestamps outside
    ``window`` are rejected (None: any time, for events a tool or a test builds).

    Raises ValueError for a body that is neither (the whole request is refused).
    """
    if isinstance(body, dict) and "events" in body and "type" not in body:
        unknown = sorted(str(key) for key in body if key != "events")
        if unknown:
            raise ValueError(f'{unknown[0]}: unknown field (a batch is {{"events": [...]}})')
        raw = body["events"]
        if not isinstance(raw, list):
            raise ValueError("events: must be a list of events")
        if not raw:
            # A batch of nothing stores nothing: a client's empty list is a bug upstream
            # (a filter that dropped every event), not a success to log and forget.
            raise ValueError("events: at least one event")
        if len(raw) > MAX_BATCH:
            raise ValueError(f"events: at most {MAX_BATCH} events per request, got {len(raw)}")
    elif isinstance(body, dict):
        raw = [body]
    else:
        raise ValueError('body: must be one event object or {"events": [...]}')
    valid: list[tuple[int, Event]] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(raw):
        event_id = item.get("event_id") if isinstance(item, dict) else None
        if not isinstance(event_id, str) or id_problem(event_id) is not None:
            event_id = None  # never echo what is not an id
        try:
            event = _EVENT.validate_python(item, context=window)
        except ValidationError as exc:
            rejected.append(Rejection(index=index, event_id=event_id, reason=_reason(exc)))
            continue
        unaddressable = _unaddressable(event)
        if unaddressable:
            rejected.append(Rejection(index=index, event_id=event_id, reason=unaddressable))
        else:
            valid.append((index, event))
    return valid, rejected


def offers_as_stored(events: Sequence[Event], item_of: Callable[[str], str]) -> list[Event]:
    """``events`` with each offer event's ``item_id`` as its impressions store it
    (``item_of``: the live catalogue's ``item_of_offer``). An offers answer names an
    offer both by its ``offer_id`` (``product:22423``) and by its ``item_id``
    (``22423``); recorded impressions store the item id, so a click or conversion posted
    with the offer id would otherwise match none of them (fatigue not lifted, the offer
    never counted as taken up)."""
    stored: list[Event] = []
    for event in events:
        if not isinstance(event, PurchaseEvent):
            item = item_of(event.item_id)
            if item != event.item_id:
                event = event.model_copy(update={"item_id": item})
        stored.append(event)
    return stored


def reused_ids(valid: Sequence[tuple[int, Event]], conflicts: Sequence[int]) -> list[Rejection]:
    """The rejections of the events at positions ``conflicts`` of ``valid`` (the store's
    ``AddResult.conflicts``): their id names another stored event."""
    rejections = []
    for position in conflicts:
        index, event = valid[position]
        rejections.append(
            Rejection(
                index=index,
                event_id=event.event_id,
                reason="event_id: already names another stored event (another customer, "
                "type or content); event ids must be unique across customers and types, "
                "and only a retry of the same event may send one again: nothing stored",
            )
        )
    return rejections


def _unaddressable(event: Event) -> str | None:
    """The customer and item ids of a posted event that no route's path could name
    (``nbo.core.ids.path_id_problem``: "12347/consent"), as a rejection's reason, or None.

    Checked on posted events only, not in the event models: the service builds
    impressions in code for customers it already holds, and one stored before the rule
    existed must still get them. An offer event's ``item_id`` may be an offer id, which
    no path names."""
    parts = []
    problem = path_id_problem(event.customer_id)
    if problem is not None:
        parts.append(f"customer_id: {problem}")
    if isinstance(event, PurchaseEvent):
        for number, line in enumerate(event.items):
            problem = path_id_problem(line.item_id)
            if problem is not None:
                parts.append(f"items.{number}.item_id: {problem}")
    return "; ".join(parts) or None


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = [str(p) for p in error["loc"] if p not in EVENT_TYPES]
        problem = error["msg"]
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # pydantic's words name its discriminator; the client needs the field.
            location = ["type"]
            tag = (error.get("ctx") or {}).get("tag")
            given = "missing" if tag is None else f"{str(tag)[:64]!r} is not a type"
            problem = f"{given}: must be one of {', '.join(EVENT_TYPES)}"
        parts.append(f"{'.'.join(location) or 'event'}: {problem}")
    return "; ".join(parts)
