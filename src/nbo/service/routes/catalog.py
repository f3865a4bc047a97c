"""What the offer catalogue is serving, so a marketer can see which offers are live."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from nbo.catalog.schema import CatalogOffer
from nbo.core.apikeys import Role
from nbo.core.vocabulary import KIND_INCENTIVE
from nbo.runtime.pairing import UnknownItemsWatch
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import CatalogHolderDep, MaybeServingModelsDep, SettingsDep
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import (
    CatalogItemOut,
    CatalogOfferOut,
    CatalogProductsOut,
    CatalogResponse,
    UnknownItemsOut,
)

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1",
    tags=["catalog"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


@router.get("/catalog", response_model=CatalogResponse)
def get_catalog(
    holder: CatalogHolderDep,
    settings: SettingsDep,
    models: MaybeServingModelsDep,
    request: Request,
) -> CatalogResponse:
    catalog = holder.current()
    status = holder.status()
    watch: UnknownItemsWatch = request.app.state.unknown_items
    unknown = watch.check(catalog, None if models is None else models.current)
    now = settings.now()
    document = catalog.document
    return CatalogResponse(
        source=status["source"],
        fingerprint=status["fingerprint"],
        loaded_at=status["loaded_at"],
        as_of=now.isoformat(timespec="seconds"),
        last_error=status["last_error"],
        last_error_problems=status["last_error_problems"],
        last_error_at=status["last_error_at"],
        products=CatalogProductsOut.model_validate(catalog.products.model_dump()),
        items=[
            CatalogItemOut(
                item_id=item.item_id,
                exclude=item.exclude,
                terms=item.model_dump(exclude_unset=True, exclude={"item_id", "exclude"}),
            )
            for item in document.items
        ],
        categories={name: list(items) for name, items in catalog.categories.items()},
        offers=[_offer_out(offer, int(now.timestamp())) for offer in catalog.offers],
        stage_weights={
            stage: weights.model_dump() for stage, weights in document.stage_weights.items()
        },
        max_incentives=catalog.max_incentives,
        incentive_overlaps=catalog.incentive_overlaps(),
        unknown_items=None
        if unknown is None
        else UnknownItemsOut(
            model_version=unknown.model_version,
            count=unknown.count,
            first=list(unknown.first),
            message=unknown.line(),
        ),
    )


def _offer_out(offer: CatalogOffer, now_s: int) -> CatalogOfferOut:
    incentive = offer.kind == KIND_INCENTIVE
    return CatalogOfferOut(
        id=offer.id,
        kind=offer.kind,
        title=offer.title,
        incentive=offer.incentive,
        amount=offer.amount,
        item_id=offer.item_id,
        category=offer.category,
        value=offer.value,
        # A product offer's propensity is the model's, not a catalogue number.
        response_rate=offer.response_rate if incentive else None,
        lever=offer.lever,
        stages=list(offer.stages),
        channels=list(offer.channels),
        valid_from=_iso(offer.valid_from),
        valid_to=_iso(offer.valid_to),
        live=offer.is_valid_at(now_s),
        cap_per_customer=offer.cap_per_customer,
        cap_days=offer.cap_days,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
