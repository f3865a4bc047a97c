"""Operator actions on the running service: reloading the model and the catalogue.

Every route here needs the ``admin`` role (with API keys configured; see ``service/auth``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from nbo.core.apikeys import Role
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ReloaderDep
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import (
    CatalogStatusOut,
    ErrorResponse,
    ExperimentsStatusOut,
    ReloadRequest,
    ReloadResponse,
    WorkerReloadOut,
)

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[requires(Role.admin)],
    responses=AUTH_RESPONSES,
)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        404: {"model": ErrorResponse, "description": "no such version or alias"},
        409: {"model": ErrorResponse, "description": "the version was refused; the old serves"},
    },
)
def reload_models(
    reloader: ReloaderDep, body: Annotated[ReloadRequest | None, Body()] = None
) -> ReloadResponse:
    """Re-read the catalogue, then load a model version beside the one serving, check it
    (checksums, schema, consistent arrays, a smoke ranking of a known and an unknown
    customer) and swap it in atomically; requests keep being answered by the old model
    until the swap, and every answer names the one version that ranked it. A refused
    version leaves the old one serving.

    With workers (``nbo serve --workers``), this worker reloads first (a refusal
    answers here, asked of no other), then every other worker follows; the answer
    comes when all have the version, or after a minute without the late ones, and says
    what each serves.
    \f
    A plain ``def``: the load reads files and builds the model, and the wait for the
    other workers sleeps, so it runs in the thread pool and never holds up the event
    loop.
    """
    request = body or ReloadRequest()
    reload = reloader.reload_workers(
        request.version, request.force, trigger="api", replicas=request.replicas
    )
    outcome = reload.outcome
    return ReloadResponse(
        previous_version=outcome.previous_version,
        version=outcome.version,
        swapped=outcome.swapped,
        catalog=CatalogStatusOut(**outcome.catalog, changed=outcome.catalog_changed),
        experiments=None
        if outcome.experiments is None
        else ExperimentsStatusOut(**outcome.experiments),
        took_ms=outcome.took_ms,
        all_workers=reload.everywhere,
        replicas=reload.replicas,
        workers=[
            WorkerReloadOut(
                pid=status.pid,
                version=status.version,
                reloaded=reload.reached(status),
                experiment_models=sorted(
                    {version for version, role in status.models if role != "current"}
                ),
                error=status.error,
            )
            for status in reload.workers
        ],
    )
