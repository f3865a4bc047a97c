"""Items similar to an item, from the CF model's item factors, among items with enough
buyers for their factors to mean something."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from nbo.core.apikeys import Role
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ItemId, ModelDep, SettingsDep
from nbo.service.errors import NotFound
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import ErrorResponse, SimilarItemOut, SimilarItemsResponse

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/items",
    tags=["items"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


@router.get(
    "/{item_id:id}/similar",
    response_model=SimilarItemsResponse,
    responses={404: {"model": ErrorResponse, "description": "the model does not know the item"}},
)
async def get_similar_items(
    item_id: ItemId,
    model: ModelDep,
    settings: SettingsDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    min_buyers: Annotated[
        int | None,
        Query(ge=1, description="the fewest buyers an item listed has (NBO_SIMILAR_MIN_BUYERS)"),
    ] = None,
) -> SimilarItemsResponse:
    """Items whose ALS factors are closest (cosine) to this item's, excluding itself,
    among those with at least ``min_buyers`` buyers: the factors of an item one customer
    bought are that customer's, so it looked similar to whatever they bought (on the
    Online Retail sample, three of the five items most similar to 85123A had one buyer)."""
    item = model.items.get(item_id)
    if item is None:
        raise NotFound("item_id", f"item '{item_id}' is not in model {model.version}")
    least = settings.similar_min_buyers if min_buyers is None else min_buyers
    buyers = model.buyers_per_item()
    candidates = np.flatnonzero(buyers >= least)
    candidates = candidates[candidates != item]
    ids, scores = np.empty(0, np.int64), np.empty(0, np.float32)
    if len(candidates):
        ids, scores = model.als.similar_items(item, N=min(k, len(candidates)), items=candidates)
        keep = (ids >= 0) & np.isfinite(scores)
        ids, scores = ids[keep][:k], scores[keep][:k]
    return SimilarItemsResponse(
        item_id=item_id,
        model_version=model.version,
        min_buyers=least,
        similar=[
            SimilarItemOut(
                item_id=model.items.ids[i],
                item_name=model.item_names.get(model.items.ids[i]),
                score=float(s),
                rank=rank,
                buyers=int(buyers[i]),
            )
            for rank, (i, s) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True), 1)
        ],
    )
