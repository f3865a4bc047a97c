"""Experiments: what is configured, and each one's report with significance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from nbo.core.apikeys import Role
from nbo.experiments.assignment import ServingModels, same_model_warnings
from nbo.experiments.definitions import Experiments
from nbo.experiments.outcomes import report_for
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ExperimentName, SettingsDep, StoreDep
from nbo.service.errors import NotFound
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import ErrorResponse

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1/experiments",
    tags=["experiments"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


def _experiments(request: Request) -> Experiments:
    # What serves: the file as last read and accepted (a reload reads it again).
    experiments: Experiments = request.app.state.models.experiments
    return experiments


def _same_model(request: Request) -> list[str]:
    """Experiments whose model variants the models serving now answer with one version."""
    models: ServingModels | None = request.app.state.models.serving
    if models is None:  # no model loaded yet: nothing serves the variants
        return []
    resolved = {reference: m.version for reference, m in models.by_reference.items()}
    return same_model_warnings(models.experiments, resolved)


@router.get("")
def list_experiments(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The experiments serving, their variants and whether each runs now; whether the
    file on disk was refused at the last reload (``last_error``: the experiments listed
    still serve)."""
    now_s = int(settings.now().timestamp())
    experiments = _experiments(request)
    status = request.app.state.experiments_file.status(experiments)
    return {
        "source": experiments.source,
        "loaded_at": status["loaded_at"],
        "last_error": status["last_error"],
        "last_error_problems": status["last_error_problems"],
        "last_error_at": status["last_error_at"],
        # What loading the file found suspicious but served (weights not summing to 100,
        # two model variants served by one version).
        "warnings": [*experiments.warnings, *_same_model(request)],
        "experiments": [
            {
                "name": e.name,
                "active": e.active(now_s),
                "start": datetime.fromtimestamp(e.start_s, UTC).isoformat(),
                "end": None
                if e.end_s is None
                else datetime.fromtimestamp(e.end_s, UTC).isoformat(),
                "variants": [
                    {"name": v.name, "weight": v.weight, "model": v.model, "control": v.control}
                    for v in e.variants
                ],
                # What the report compares the other variants against.
                "baseline": e.compared_against.name,
            }
            for e in experiments.experiments
        ],
    }


@router.get(
    "/{name}/report",
    response_model=None,
    responses={404: {"model": ErrorResponse, "description": "no such experiment is configured"}},
)
async def get_report(
    name: ExperimentName,
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    format: Annotated[str, Query(pattern="^(json|html)$", description="json or html")] = "json",
) -> Response:
    """Per variant: customers assigned and exposed, conversions, conversion rate and revenue
    per exposed customer; each variant against the baseline (the variant the experiment's
    ``baseline`` names, else the control, else the first variant) with a 95% confidence
    interval and p-value (two-proportion z-test, Welch's t-test); the sample-ratio test (chi-square,
    p-value, verdict); the experiment's dates and the window of events counted; warnings
    (a sample ratio mismatch, fewer than 100 exposed customers in a variant)."""
    experiment = _experiments(request).get(name)
    if experiment is None:
        raise NotFound("name", f"no experiment '{name}' is configured")
    now_s = int(settings.now().timestamp())
    report = await run_in_threadpool(
        report_for, store, experiment, now_s, settings.clock_skew_seconds
    )
    if format == "html":
        # Imported here, not at start: the page draws with matplotlib, which the service
        # loads only when someone asks for an HTML report (and drawing is CPU work, so it
        # runs in the thread pool, off the event loop).
        from nbo.experiments.page import REPORT_CSP, report_html

        page = await run_in_threadpool(report_html, report, f"nbo experiment {name}")
        return HTMLResponse(page, headers={"Content-Security-Policy": REPORT_CSP})
    return JSONResponse(report)
