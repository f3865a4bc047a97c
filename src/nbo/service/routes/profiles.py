"""A customer's profile: lifecycle stage, churn risk, RFM and best send time."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from nbo.core.apikeys import Role
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import CustomerId, ModelDep, SettingsDep, StoreDep
from nbo.service.profiles import current_profile
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import CustomerProfileOut

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/customers",
    tags=["customers"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


# ``:bare_id`` so an id may hold '/', and a path ending in /offers, /consent or /data is
# never a profile (``nbo.service.deps.BareIdConvertor``).
@router.get("/{customer_id:bare_id}", response_model=CustomerProfileOut)
async def get_profile(
    customer_id: CustomerId,
    model: ModelDep,
    settings: SettingsDep,
    store: StoreDep,
) -> CustomerProfileOut:
    """The customer as nbo sees them now: trained history plus purchases posted since.

    An unknown customer is not an error: ``known`` is false and the stage is ``new``.
    Without consent to personalization nothing is derived from their history
    (``profiled`` false).
    \f
    ``async def``: on SQLite the profile (three reads of microseconds) is worked out on
    the event loop; a PostgreSQL store's reads are round trips to its server, made in
    the thread pool so that a slow server never holds the loop (``Store.remote``).
    """
    now = settings.now()
    if store.remote:
        return await run_in_threadpool(current_profile, model, store, customer_id, now, settings)
    return current_profile(model, store, customer_id, now, settings)
