"""A customer's profile: lifecycle stage, churn risk, RFM and best send time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nbo.decision import profile_for
from nbo.service.deps import CatalogDep, ModelDep, SettingsDep, StoreDep
from nbo.service.profiles import profile_out
from nbo.service.routes.offers import contact_policy, customer_state
from nbo.service.schemas import CustomerProfileOut

router = APIRouter(prefix="/v1/customers", tags=["customers"])

CustomerId = Annotated[str, Path(min_length=1, max_length=256, description="your customer id")]


@router.get("/{customer_id}", response_model=CustomerProfileOut)
async def get_profile(
    customer_id: CustomerId,
    model: ModelDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    store: StoreDep,
) -> CustomerProfileOut:
    """The customer as nbo sees them now: trained history plus purchases posted since.

    An unknown customer is not an error: ``known`` is false and the stage is ``new``.
    Without consent to personalization nothing is derived from their history
    (``profiled`` false).
    """
    now = settings.now()
    now_s = int(now.timestamp())
    state = customer_state(store, customer_id, now_s, contact_policy(settings), catalog)
    profile = profile_for(model, customer_id, state, now_s)
    return profile_out(profile, model.version, model.churn_horizon_days, now)
