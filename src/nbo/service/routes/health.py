"""Liveness (the process answers) and readiness (a model is loaded).

Both are ``async def`` and read only attributes (no I/O, no thread-pool hand-off): they
answer while the thread pool is busy and never wait on the store. Readiness does not
depend on the store: every replica shares one store server, so an outage of it taking
every replica out of the load balancer would turn 503s on the calls that need the store
into an outage of every route; ``store`` says whether this process reaches it now.
Liveness answers its status only: a field saying the store is away there would invite
restarting processes for an outage of the store's server.

A worker's event loop never waits on a PostgreSQL server (its calls run in the thread
pool, ``Store.remote``), so liveness answers however slow that server is.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nbo.service.query import ProbeRoute
from nbo.service.schemas import HealthResponse, LiveResponse

router = APIRouter(route_class=ProbeRoute, prefix="/health", tags=["health"])


@router.get("/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """The process answers: ``{"status": "ok"}`` only.
    \f
    (Before, the fields of readiness came too, always null.)"""
    return LiveResponse(status="ok")


@router.get("/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def ready(request: Request) -> HealthResponse | JSONResponse:
    holder = request.app.state.models
    model = holder.model  # one reference: a reload may swap it between two reads
    store = getattr(request.app.state, "store", None)
    reached = "available" if store is not None and store.available else "unavailable"
    if model is None:
        body = HealthResponse(
            status="not ready", reason=holder.last_error or "no model loaded", store=reached
        )
        return JSONResponse(status_code=503, content=body.model_dump())
    refused = request.app.state.reloader.refused
    warning = None if refused is None else str(refused)
    return HealthResponse(
        status="ready", model_version=model.version, store=reached, warning=warning
    )
