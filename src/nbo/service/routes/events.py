"""Events in: purchases, offer impressions, clicks and conversions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from nbo.core.apikeys import Role
from nbo.data.events import (
    MAX_BATCH,
    MAX_LINES,
    MAX_MONEY,
    MAX_QUANTITY,
    Event,
    EventWindow,
    ImpressionEvent,
    PurchaseEvent,
    Rejection,
    offers_as_stored,
    parse_events,
    reused_ids,
)
from nbo.experiments.definitions import Experiments
from nbo.runtime.pairing import PostedItemsWatch
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import CatalogDep, ExperimentsDep, MetricsDep, SettingsDep, StoreDep
from nbo.service.errors import BadRequest, refused
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import ErrorResponse

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1",
    tags=["events"],
    dependencies=[requires(Role.write)],
    responses=AUTH_RESPONSES,
)

EXAMPLE = {
    "event_id": "e1",
    "type": "purchase",
    "customer_id": "c1",
    "timestamp": "2026-11-23T10:00:00Z",
    "order_id": "o1",
    "items": [{"item_id": "85123A", "quantity": 2, "price": 2.55}],
}


class EventsResponse(BaseModel):
    accepted: list[str] = Field(description="event ids stored by this request")
    duplicates: list[str] = Field(
        description="event ids of events already stored (a retry): not stored again"
    )
    rejected: list[Rejection] = Field(description="invalid events, each with its reason")


class EventBatch(BaseModel):
    """A batch of events (for the API's documentation: the route reads its body with
    ``parse_events``, which keeps every valid event of a batch with invalid ones)."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


def document_events_body(openapi: dict[str, Any]) -> None:
    """Describe ``POST /v1/events``'s body in ``openapi`` (the app's document) as the event
    models it takes, one event or a batch, so a generated client knows the events: the
    route declares a plain object, as it validates each event of a batch on its own."""
    schema = TypeAdapter(Event | EventBatch).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    models = schema.pop("$defs", {})
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(models)
    body = openapi["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {**schema, "description": body["schema"].get("description", "")}


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={
        413: {"model": ErrorResponse, "description": "the body is over NBO_MAX_BODY_BYTES"},
        422: {"model": EventsResponse, "description": "every event was rejected"},
    },
)
def post_events(
    request: Request,
    experiments: ExperimentsDep,
    store: StoreDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    body: Annotated[
        Any,
        Body(
            description=f'one event, or {{"events": [...]}} with 1 to {MAX_BATCH} events '
            f"(a purchase up to {MAX_LINES} lines); strict JSON types, unknown fields "
            "refused; ids of 1 to 256 printable characters (customer and purchased item "
            "ids not ending with /offers, /consent, /data or /similar); timestamps ISO "
            "8601 text from "
            "NBO_EARLIEST_EVENT to the service clock plus NBO_CLOCK_SKEW_SECONDS; finite "
            f"numbers: quantity > 0 and <= {MAX_QUANTITY:,.0f}, price > 0 and <= "
            f"{MAX_MONEY:,.0f}, revenue >= 0 and <= {MAX_MONEY:,.0f}",
            openapi_examples={
                "one purchase": {"value": EXAMPLE},
                "a batch": {"value": {"events": [EXAMPLE]}},
            },
        ),
    ],
) -> EventsResponse | JSONResponse:
    """Store events; every event is on disk before the answer. Posting an event again
    (the same id and content) stores nothing and lists it under ``duplicates``; invalid
    events, and an event id already used for another event (ids are unique across
    customers and types), are listed under ``rejected`` with the field and the problem
    while the valid ones are stored. An offer event's ``experiment`` and ``variant`` must
    be what the offers answer named: a configured experiment running at the event's time
    (a click or conversion may follow its end) and the variant the customer is assigned
    to.
    \f
    A plain ``def``: the durable commit waits on the disk, so it runs in the thread pool.
    """
    if not isinstance(body, dict):
        # Read here rather than declared as an object: FastAPI's "Input should be a valid
        # dictionary" did not say what the route takes (an array of events was a common
        # first try); the error handler adds the content type when it was not JSON.
        raise refused(("body",), 'must be one event object or {"events": [...]}')
    window = EventWindow.around(
        settings.now(), settings.clock_skew_seconds, settings.earliest_event
    )
    try:
        valid, rejected = parse_events(body, window)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    valid = _untagged_or_as_assigned(valid, rejected, experiments)
    events = offers_as_stored([event for _, event in valid], catalog.item_of_offer)
    result = store.add_events(events)
    rejected = sorted(rejected + reused_ids(valid, result.conflicts), key=lambda r: r.index)
    metrics.record_events(events, result, len(rejected))
    # Stored whatever their items (a purchase is real), but counted when the model does
    # not know an item, and a case slip named in the log (``nbo.runtime.pairing``).
    stored = set(result.accepted)
    watch: PostedItemsWatch = request.app.state.posted_items
    unknown = watch.check(
        (event for event in events if event.event_id in stored), request.app.state.models.model
    )
    if unknown.lines:
        metrics.record_unknown_items(unknown.lines, unknown.case_slips)
    response = EventsResponse(
        accepted=result.accepted, duplicates=result.duplicates, rejected=rejected
    )
    if rejected and not (result.accepted or result.duplicates):
        return JSONResponse(status_code=422, content=response.model_dump())
    return response


def _untagged_or_as_assigned(
    valid: list[tuple[int, Event]], rejected: list[Rejection], experiments: Experiments
) -> list[tuple[int, Event]]:
    """The events whose experiment tags hold (``Experiments.tag_problem``); the others
    join ``rejected``, naming the field, in the batch's order."""
    kept = []
    for index, event in valid:
        problem = None
        if not isinstance(event, PurchaseEvent):
            problem = experiments.tag_problem(
                event.customer_id,
                event.experiment,
                event.variant,
                event.occurred_at,
                impression=isinstance(event, ImpressionEvent),
            )
        if problem is None:
            kept.append((index, event))
        else:
            field, text = problem
            rejected.append(
                Rejection(index=index, event_id=event.event_id, reason=f"{field}: {text}")
            )
    rejected.sort(key=lambda rejection: rejection.index)
    return kept
