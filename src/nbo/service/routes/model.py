"""What the service is serving: the manifest's summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from nbo.core.apikeys import Role
from nbo.models.policy import declared_policy
from nbo.models.served import ServingModel
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


_ORIGINS = ("loyal_min_orders_from", "loyal_min_monetary_from")


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
        propensity=_propensity(model),
        lifecycle=_lifecycle(model),
        ranker_scoring=None
        if model.ranker is None
        else ("compiled" if model.ranker.compiled else "lightgbm"),
    )


def _propensity(model: ServingModel) -> dict[str, Any]:
    """The manifest's calibration report, and what the loaded curves make of it: whether
    product propensities are unconditional (the artifact has the buying curve), and what
    a simple rule's propensity is read from (``Propensity.rule_basis``)."""
    return {
        **(model.manifest.get("propensity") or {}),
        "calibrated": model.propensity.calibrated,
        "unconditional": model.propensity.buying is not None,
        "rule_basis": model.propensity.rule_basis,
    }


def _lifecycle(model: ServingModel) -> dict[str, Any]:
    """The thresholds the profiles apply (``model.lifecycle``, not the config, where a
    loyal threshold derived from the data is null) and where the loyal ones came from."""
    section = model.manifest.get("lifecycle") or {}
    return {
        **model.lifecycle.to_dict(),
        **{key: section[key] for key in _ORIGINS if key in section},
        "churn_model": model.churn is not None,
        "value": "units" if model.typical_line_value is None else "money",
    }
