"""Liveness (the process answers) and readiness (a model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nbo.service.schemas import HealthResponse

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=HealthResponse)
def live() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def ready(request: Request) -> HealthResponse | JSONResponse:
    holder = request.app.state.models
    model = holder.model  # one reference: a reload may swap it between two reads
    if model is None:
        body = HealthResponse(status="not ready", reason=holder.last_error or "no model loaded")
        return JSONResponse(status_code=503, content=body.model_dump())
    return HealthResponse(status="ready", model_version=model.version)
