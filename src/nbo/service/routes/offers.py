"""Offers for one customer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from nbo.core.apikeys import Role
from nbo.data.events import ImpressionEvent
from nbo.models.served import ServingModel
from nbo.offers.decision import Occasion
from nbo.offers.ranking import REMOVAL_RULES, Ranking
from nbo.runtime.decide import Decided, context_for
from nbo.runtime.deliver import deliver_customers, impressions_of
from nbo.service.auth import AUTH_RESPONSES, require_for_call, requires
from nbo.service.deps import CustomerId, DecidingDep
from nbo.service.errors import refused
from nbo.service.head import head_request
from nbo.service.middleware import refused_request_id
from nbo.service.profiles import best_send_time_values
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import Channel, ErrorResponse, OffersResponse

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/customers",
    tags=["offers"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


@router.get(
    "/{customer_id:id}/offers",
    response_model=OffersResponse,
    responses={
        409: {
            "model": ErrorResponse,
            "description": "record=true under a request id that already names a delivery "
            "recorded for the customer: nothing recorded",
        }
    },
)
async def get_offers(
    request: Request,
    customer_id: CustomerId,
    deciding: DecidingDep,
    k: Annotated[int, Query(ge=1, le=100, description="how many offers")] = 10,
    channel: Annotated[
        Channel, Query(description="where the offers will be shown")
    ] = Channel.email,
    record: Annotated[
        bool,
        Query(
            description="the offers will be delivered: apply the channel's frequency cap "
            "and record the impressions (for caps, offer caps and offer fatigue); GET "
            "only: a HEAD request with record=true is refused (422, whatever the key's "
            "role). record=true needs a key with role 'write' (it records; 403 for a "
            "'read' key, nothing recorded); record=false needs 'read'"
        ),
    ] = False,
    reasons: Annotated[
        bool,
        Query(
            description="explain each offer (its reason: the source, the purchases behind "
            "it, the words); false skips that work, about a tenth of the call, and each "
            "offer's reason is null"
        ),
    ] = True,
) -> Response:
    """Ranked offers for a customer, products and incentives arbitrated by expected value
    under the catalogue; never an item bought inside the suppression window, nor one the
    customer is tired of; within the channel's frequency cap when recorded.

    ``record=true`` records the answer as a delivery (the frequency cap, offer caps and
    fatigue count it) and needs a key with the ``write`` role; a HEAD request never
    records (``record=true`` on HEAD is refused).
    \f

    ``async def`` on purpose: scoring takes well under a millisecond, and measured with wrk
    on loopback (one worker, 16 connections) this served 727 req/s against 432 req/s as a
    plain ``def`` run in the thread pool; re-measured when the call cost about 3 ms of
    CPU (one worker, 8 connections), ``def`` still cost 10% more server CPU per request,
    and with gunicorn's workers 52% more (one worker) and 24% more (two): docs/benchmarks.
    On SQLite a chunk's store reads use the loop thread's own connection and never wait
    for a write; a PostgreSQL store's reads are round trips to its server, so there the
    chunk is decided in the thread pool (``nbo.service.chunking``) and a slow server
    never holds the loop. A delivery (decided and recorded under the customer's lock, a
    durable write: ``nbo.runtime.deliver``) runs in the thread pool.

    HEAD (served as GET, ``nbo.service.head``) never records: a HEAD's answer has no
    offers to deliver, so ``record=true`` on HEAD is refused rather than recording
    impressions nobody was shown, or answering 200 for a delivery that did not happen.

    ``record=true`` writes, so it needs the ``write`` role (the route's own check is
    ``read``); checked only then, so the plain call pays nothing more.
    """
    # A HEAD is refused before the role is asked for: it would record nothing, whatever
    # the key (a read key's HEAD was told it needs the write role to do what no HEAD does).
    if record and head_request(request.scope):
        raise refused(
            ("query", "record"),
            "a HEAD request never records a delivery: send GET with record=true to record one",
        )
    if record:
        require_for_call(request, Role.write, "record=true")
        # The request id names the delivery: one the middleware replaced by a new id
        # would make every retry a new delivery, so it is refused, nothing recorded.
        why = refused_request_id(request.scope)
        if why is not None:
            raise refused(
                ("X-Request-ID",),
                f"{why}: with record=true the request id names the delivery, and a retry "
                "under an id replaced by a new one would be recorded again; nothing recorded",
            )
    settings, request_id = deciding.settings, deciding.request_id
    now = settings.now()
    context = context_for(
        settings, deciding.models, deciding.catalog, deciding.store, deciding.policy
    )
    occasion = Occasion(channel.value, k, int(now.timestamp()), delivery=record)
    if record:
        # Event ids take a fresh id per delivery, not the request id: event ids are
        # unique in the store, and a client's request id need not be (the same id sent
        # for two customers would store the second one's impressions as duplicates).
        delivery_id = uuid.uuid4().hex

        def tagged(one: Decided) -> list[ImpressionEvent]:
            return impressions_of(one, channel.value, now, delivery_id, request_id)

        delivered = await run_in_threadpool(
            deliver_customers, context, [customer_id], occasion, tagged, None, request_id
        )
        (decided,) = delivered.decided
    else:
        # With the other calls in flight: decided in one chunk (service/chunking.py).
        decided = await deciding.chunker.decide(context, customer_id, occasion)
    deciding.metrics.record_decision(decided.decision, channel.value)
    ranking = decided.decision.ranking
    recorded = record and ranking is not None and ranking.has_offers
    answer = offers_answer(decided, channel, request_id, now, recorded, reasons)
    # NaN as null, as the model would serialise it.
    return Response(to_json(answer, inf_nan_mode="null"), media_type="application/json")


def offers_answer(
    decided: Decided,
    channel: Channel,
    request_id: str,
    now: datetime,
    recorded: bool,
    reasons: bool = True,
) -> dict[str, Any]:
    """The answer for one decided customer, as the JSON values of ``OffersResponse`` (its
    fields in its order); without a ranking (no channel consent, a frequency cap) it names
    the reason, and every removal rule with zeros. Without ``reasons`` the offers'
    explanations are never worked out.

    Plain values rather than the model: the route serialises them as they are, and
    building and then serialising the pydantic models was 10% of an offers call's server
    time (``offers_response`` validates the same values into the model for the
    dashboard, and a test holds every answer valid under the model)."""
    decision, assignment = decided.decision, decided.assignment
    model = assignment.model
    profile, ranking = decision.profile, decision.ranking
    next_allowed = decision.next_allowed_at
    churn_risk = profile.churn_risk
    return {
        "customer_id": decided.customer_id,
        "model_version": model.version,
        "channel": channel.value,
        "personalized": ranking is not None and ranking.personalized,
        # Whose taste ranked the offers: none were ranked in a withheld answer, so null
        # (it said "none", the value of a customer without consent to personalization,
        # beside the stage and churn risk of a customer who has it).
        "profile": None if ranking is None else ranking.taste,
        "suppressed_items": 0 if ranking is None else int(ranking.suppressed_items),
        "stage": profile.stage,
        "churn_risk": None if churn_risk is None else float(churn_risk),
        "best_send_time": best_send_time_values(profile.best_send_hour, now),
        "as_of": now.isoformat(),
        "request_id": request_id,
        "recorded": recorded,
        "suppressed_reason": decision.suppressed_reason,
        "next_allowed_at": (
            None if next_allowed is None else datetime.fromtimestamp(next_allowed, UTC).isoformat()
        ),
        "removed": (
            dict.fromkeys(REMOVAL_RULES, 0)
            if ranking is None
            else {rule: int(count) for rule, count in ranking.removed.items()}
        ),
        "experiment": assignment.experiment,
        "variant": assignment.variant,
        "offers": [] if ranking is None else offers_out(model, ranking, reasons),
    }


def offers_response(
    decided: Decided, channel: Channel, request_id: str, now: datetime, recorded: bool
) -> OffersResponse:
    """``offers_answer`` as the model (the dashboard reads its attributes)."""
    return OffersResponse.model_validate(offers_answer(decided, channel, request_id, now, recorded))


def offers_out(model: ServingModel, ranking: Ranking, reasons: bool = True) -> list[dict[str, Any]]:
    """The answer's offers (``OfferOut``'s fields in its order), read straight from the
    ranking's columns (no ``Offer``, ``Reason`` and ``Components`` objects on the way).
    The same offers as each of ``ranking.offers`` validated into ``OfferOut`` field by
    field (a test holds the two serialisations equal byte for byte). Without
    ``reasons``, each reason is null and the explanations are not worked out."""
    choices = ranking.table.choices
    start = int(choices.starts[ranking.position])
    end = int(choices.starts[ranking.position + 1])
    names = model.item_names
    reason: list[dict[str, Any] | None] = [None] * (end - start)
    if reasons:
        explanations = ranking.table.explanations
        why = zip(
            explanations.source[start:end].tolist(),
            explanations.because[start:end].tolist(),
            explanations.text[start:end].tolist(),
            strict=True,
        )
        reason = [
            {"source": source, "because": list(because), "text": text}
            for source, because, text in why
        ]
    columns = (
        choices.offer_id[start:end].tolist(),
        choices.kind[start:end].tolist(),
        choices.item_id[start:end].tolist(),
        choices.offer[start:end].tolist(),
        choices.title[start:end].tolist(),
        choices.score[start:end].tolist(),
        choices.propensity[start:end].tolist(),
        choices.value[start:end].tolist(),
        choices.stage_weight[start:end].tolist(),
        choices.lever[start:end].tolist(),
        reason,
    )
    out = []
    for rank, row in enumerate(zip(*columns, strict=True), 1):
        offer_id, kind, item, offer, title, score, propensity, value, weight, lever, why = row
        out.append(
            {
                "offer_id": offer_id,
                "kind": kind,
                "item_id": item,
                "item_name": names.get(item) if item is not None else None,
                "title": title,
                "incentive": None if offer is None else offer.incentive,
                "amount": None if offer is None else offer.amount,
                "priority": propensity * value * weight * lever,
                "components": {
                    "propensity": propensity,
                    "value": value,
                    "stage_weight": weight,
                    "lever": lever,
                },
                "score": score,
                "rank": rank,
                "reason": why,
            }
        )
    return out
