"""What the service is serving: the manifest's summary."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from nbo.core.apikeys import Role
from nbo.models.policy import declared_policy
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ModelDep
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import ModelSummary

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1",
    tags=["model"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


@router.get("/model", response_model=ModelSummary)
def get_model_summary(model: ModelDep) -> ModelSummary:
    manifest = model.manifest
    return ModelSummary(
        version=model.version,
        created_at=manifest["created_at"],
        schema_version=manifest["schema_version"],
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(timespec="seconds"),
        customers=len(model.customers),
        items=len(model.items),
        data=manifest.get("data", {}),
        split=manifest.get("split", {}),
        config=manifest.get("config", {}),
        metrics=manifest.get("metrics", {}),
        quality_gate=manifest.get("quality_gate", {}),
        policy=declared_policy(manifest),
        policy_choice=manifest.get("policy", {}),
        served=manifest.get("served", {}),
        libraries=manifest.get("libraries", {}),
        ranker_scoring=None
        if model.ranker is None
        else ("compiled" if model.ranker.compiled else "lightgbm"),
    )
