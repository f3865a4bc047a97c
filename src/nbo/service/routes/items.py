"""Items similar to an item, from the CF model's item factors."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from nbo.core.apikeys import Role
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ItemId, ModelDep
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
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarItemsResponse:
    """Items whose ALS factors are closest (cosine) to this item's, excluding itself."""
    item = model.items.get(item_id)
    if item is None:
        raise NotFound("item_id", f"item '{item_id}' is not in model {model.version}")
    n = min(k + 1, len(model.items))
    ids, scores = model.als.similar_items(item, N=n)
    keep = (ids != item) & (ids >= 0) & np.isfinite(scores)
    ids, scores = ids[keep][:k], scores[keep][:k]
    return SimilarItemsResponse(
        item_id=item_id,
        model_version=model.version,
        similar=[
            SimilarItemOut(
                item_id=model.items.ids[i],
                item_name=model.item_names.get(model.items.ids[i]),
                score=float(s),
                rank=rank,
            )
            for rank, (i, s) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True), 1)
        ],
    )
