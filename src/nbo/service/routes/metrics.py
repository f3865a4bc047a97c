"""``GET /metrics``: the Prometheus scrape; 404 with ``NBO_METRICS=false``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nbo.service.deps import MetricsDep
from nbo.service.errors import NotFound
from nbo.service.query import ProbeRoute

router = APIRouter(route_class=ProbeRoute, tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics(metrics: MetricsDep) -> Response:
    """The app's registry in the Prometheus text format. Answers without a model loaded
    (the model's series are then absent). ``async def``: rendering a few dozen series
    takes well under a millisecond, less than a thread-pool hand-off."""
    if metrics.registry is None:
        raise NotFound("path", "metrics are off (NBO_METRICS=false)")
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
