"""``GET /dashboard``: pages for the marketers who run the campaigns, served by nbo itself
with every asset local (a deployment may have no internet).

Every page needs the ``read`` role, like ``GET /v1/...``: the key comes in a header, or
in the cookie the sign-in form sets (a browser following a link sends no header). Pages
read through the same code as the API (the runtime, the store, the models, the
experiments), so they show what the API answers for the same model and clock.

The work stays off the offers path: each page's figures are computed in the thread pool
at most once a minute per process and model version (``cache``), the page is rendered
there too, and matplotlib is imported by the handlers that draw, never at start.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from nbo.core.apikeys import Role
from nbo.core.ids import MAX_ID_LENGTH, path_id_problem
from nbo.core.vocabulary import CHANNELS
from nbo.experiments.definitions import Experiments
from nbo.experiments.outcomes import report_for
from nbo.offers.decision import Occasion
from nbo.runtime.decide import context_for, decide_customers
from nbo.runtime.deliver import delivery_preview
from nbo.service.auth import KEY_COOKIE, key_ring_of, requires
from nbo.service.dashboard.cache import FigureCache
from nbo.service.dashboard.figures import (
    churn_quality,
    going_out,
    live_offers,
    metric_counters,
    published_models,
    quality_tables,
    stage_mix,
)
from nbo.service.deps import (
    CatalogDep,
    ExperimentName,
    MaybeServingModelsDep,
    MetricsDep,
    RequestIdDep,
    SettingsDep,
    StoreDep,
)
from nbo.service.errors import NotFound
from nbo.service.profiles import current_profile
from nbo.service.routes.offers import offers_response
from nbo.service.schemas import Channel

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
ASSETS = f"{PREFIX}/static"
HERE = Path(__file__).parent
# The pages' rules for the browser: nothing but this origin's files and the charts'
# data URIs; no frames, no forms to elsewhere. A page that tried to load a script or a
# style from a CDN would be refused (and the browser tests would see the refusal).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A page names customers: never kept by a browser or a proxy.
    "Cache-Control": "no-store",
}
DEFAULT_DAYS = 14

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_templates.filters["num"] = lambda v, d=0: f"{v:,.{d}f}" if _is_number(v) else "-"
_templates.filters["pct"] = lambda v, d=1: f"{v * 100:.{d}f}%" if _is_number(v) else "-"
_templates.filters["label"] = lambda v: str(v).replace("_", " ")

router = APIRouter(
    prefix=PREFIX,
    tags=["dashboard"],
    include_in_schema=False,
    dependencies=[requires(Role.read, cookie=True)],
)
# Signing in and out: open (they only set or clear the cookie).
sign_in_router = APIRouter(prefix=PREFIX, tags=["dashboard"], include_in_schema=False)


def install_dashboard(app: FastAPI) -> None:
    """The pages, their styles (open: no data) and their error pages."""
    app.state.dashboard_cache = FigureCache()
    app.state.error_pages = error_page
    app.mount(ASSETS, StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.include_router(router)
    app.include_router(sign_in_router)


def _cache(request: Request) -> FigureCache:
    cache: FigureCache = request.app.state.dashboard_cache
    return cache


async def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The template rendered in the thread pool (a page of many rows takes a few
    milliseconds: not on the event loop) with what every page shows."""
    settings = request.app.state.settings
    serving = request.app.state.models.serving
    context = {
        "page": template.removesuffix(".html"),
        "prefix": PREFIX,
        "assets": ASSETS,
        "as_of": settings.now().strftime("%Y-%m-%d %H:%M UTC"),
        "clock_pinned": settings.clock is not None,
        "model_version": None if serving is None else serving.current.version,
        "signed_in": KEY_COOKIE in request.cookies and key_ring_of(request).enabled,
        **context,
    }
    body = await run_in_threadpool(_templates.get_template(template).render, context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _no_model(request: Request) -> str:
    return request.app.state.models.last_error or "no model loaded yet"


def _refused_files(request: Request) -> list[dict[str, Any]]:
    """The catalogue and the experiments file as last read when that read was refused:
    what serves is the last good one, and the Overview must not show it as if the edit
    had been taken (``GET /v1/catalog`` and ``GET /v1/experiments`` say the same). Each
    with its one line and, when there are several, its problems one by one
    (``last_error_problems``): the one line alone cut them to 'N problems: a; b; ...'."""
    refused = []
    catalog = request.app.state.catalog.status()
    if catalog["last_error"] is not None:
        refused.append({"what": "catalog", "name": "The catalogue file", **catalog})
    experiments = request.app.state.experiments_file
    if experiments.last_error is not None:
        status = experiments.status(request.app.state.models.experiments)
        refused.append({"what": "experiments", "name": "The experiments file", **status})
    return refused


# --- overview -------------------------------------------------------------------------


@router.get("")
async def overview(
    request: Request,
    models: MaybeServingModelsDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    store: StoreDep,
) -> HTMLResponse:
    """The serving model, its quality as the trainer measured it, customers per stage and
    their churn risk, and the catalogue's live offers."""
    now_s = int(settings.now().timestamp())
    offers = live_offers(catalog, now_s)
    if models is None:
        return await _page(
            request,
            "overview.html",
            model=None,
            reason=_no_model(request),
            offers=offers,
            catalog=catalog,
            refused=_refused_files(request),
        )
    model = models.current

    def compute() -> dict[str, Any]:
        from nbo.service.dashboard import plots

        manifest = model.manifest
        mix = stage_mix(model, store, now_s, settings.max_posted_lines, settings.clock_skew_seconds)
        tables = quality_tables(manifest)
        gate = manifest.get("quality_gate") or {}
        metric = str(gate.get("metric") or (tables[0].metrics[0] if tables else "ndcg@10"))
        return {
            "mix": mix,
            "stage_chart": plots.stage_mix_svg(mix),
            "risk_chart": plots.risk_histogram_svg(mix) if mix.with_risk else None,
            "quality": tables,
            "quality_metric": metric,
            "quality_chart": (
                plots.quality_svg(tables, metric) if any(t.evaluated for t in tables) else None
            ),
            "evaluated": any(t.evaluated for t in tables),
            "churn": churn_quality(manifest),
        }

    key = ("overview", model.version, now_s // 60 if settings.clock is None else now_s)
    figures = await _cache(request).get(key, compute)
    manifest = model.manifest
    return await _page(
        request,
        "overview.html",
        model=model,
        manifest=manifest,
        data=manifest.get("data") or {},
        split=manifest.get("split") or {},
        gate=manifest.get("quality_gate") or {},
        policy=manifest.get("policy"),
        served=manifest.get("served"),
        variants=[m.version for m in models.models()[1:]],
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        offers=offers,
        catalog=catalog,
        refused=_refused_files(request),
        **figures,
    )


# --- offers going out -----------------------------------------------------------------


@router.get("/offers")
async def offers_going_out(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    metrics: MetricsDep,
    days: Annotated[int, Query(ge=1, le=366, description="the days up to now")] = DEFAULT_DAYS,
) -> HTMLResponse:
    """Offers recorded as delivered over the last ``days`` days by channel, kind, source
    and stage, what customers answered, and the service's counters of offers answered
    and suppressed."""
    now_s = int(settings.now().timestamp())

    def compute() -> dict[str, Any]:
        from nbo.service.dashboard import plots

        out = going_out(
            store,
            now_s,
            days,
            metric_counters(metrics.registry),
            settings.metrics,
            settings.clock_skew_seconds,
        )
        return {"out": out, "chart": plots.offers_over_time_svg(out) if out.daily else None}

    key = ("offers", days, now_s // 60)
    figures = await _cache(request).get(key, compute)
    return await _page(request, "offers.html", days=days, **figures)


# --- campaigns ------------------------------------------------------------------------


@router.get("/campaigns")
async def campaigns(request: Request, settings: SettingsDep, store: StoreDep) -> HTMLResponse:
    """The campaign files ``nbo batch`` wrote and the store manages, newest first, each
    with the impressions its run recorded: a marketer tells a sent campaign (``--record``)
    from a preview, and sees what each run put on the customers' frequency caps."""
    now_s = int(settings.now().timestamp())

    def compute() -> dict[str, Any]:
        outputs = sorted(store.batch_outputs(), key=lambda o: (-o.written_at, o.path))
        rows = []
        for output in outputs:
            recorded = store.count_run_impressions(output.run_id)
            # As registered (a delivered run whose every customer was capped recorded
            # nothing); a file registered before nbo kept it: by its impressions.
            delivered = output.delivered if output.delivered is not None else recorded > 0
            rows.append(
                {
                    "path": output.path,
                    "written": _day(output.written_at),
                    "run_id": output.run_id,
                    "rows": output.rows,
                    "format": output.format,
                    "channel": output.channel,
                    "impressions": recorded,
                    "delivered": delivered,
                    "known": output.delivered is not None,
                    "recorded_customers": output.recorded_customers,
                    "capped_customers": output.capped_customers,
                }
            )
        return {"campaigns": rows}

    figures = await _cache(request).get(("campaigns", now_s // 60), compute)
    return await _page(request, "campaigns.html", **figures)


# --- a customer -----------------------------------------------------------------------


@router.get("/customer")
async def customer(
    request: Request,
    models: MaybeServingModelsDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    store: StoreDep,
    request_id: RequestIdDep,
    customer_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> HTMLResponse:
    """One customer as the API sees them now: the profile ``GET /v1/customers/{id}``
    answers, and on each channel the offers ``GET /v1/customers/{id}/offers`` answers
    (the same runtime call and answer builder; nothing is recorded), with what was
    suppressed and why. Never cached: this is what someone opens on a complaint."""
    if not customer_id:
        return await _page(request, "customer.html", customer_id=None, k=k)
    problem = path_id_problem(customer_id)
    if problem is not None:
        return await _page(
            request,
            "customer.html",
            status=422,
            customer_id=customer_id,
            k=k,
            problem=f"customer_id: {problem}",
        )
    if models is None:
        return await _page(
            request,
            "customer.html",
            status=503,
            customer_id=customer_id,
            k=k,
            problem=_no_model(request),
        )
    now = settings.now()

    def compute() -> dict[str, Any]:
        profile = current_profile(models.current, store, customer_id, now, settings)
        context = context_for(settings, models, catalog, store)
        answers, deliveries = [], {}
        for channel in CHANNELS:
            occasion = Occasion(channel, k, int(now.timestamp()), delivery=False)
            (decided,) = decide_customers(context, [customer_id], occasion)
            answers.append(offers_response(decided, Channel(channel), request_id, now, False))
            # Whether a delivery would go out now (the frequency cap holds deliveries
            # only): decided as a delivery, recorded nowhere.
            occasion = Occasion(channel, k, int(now.timestamp()), delivery=True)
            (delivery,) = delivery_preview(context, [customer_id], occasion)
            deliveries[channel] = offers_response(
                delivery, Channel(channel), request_id, now, False
            )
        consent = store.consent_of(customer_id)
        erased_at = store.erased_at(customer_id)
        return {
            "profile": profile,
            "answers": answers,
            "deliveries": deliveries,
            "consent": consent,
            # The page opened on a complaint says an erasure happened (the export does).
            "erased_at": None
            if erased_at is None
            else datetime.fromtimestamp(erased_at, UTC).isoformat(),
        }

    found = await run_in_threadpool(compute)
    return await _page(
        request,
        "customer.html",
        customer_id=customer_id,
        k=k,
        suppression_days=settings.suppression_days,
        min_hold_days=settings.min_hold_days,
        **found,
    )


# --- experiments ----------------------------------------------------------------------


def _experiments(request: Request) -> Experiments:
    # What serves: the file as last read and accepted (a reload reads it again).
    experiments: Experiments = request.app.state.models.experiments
    return experiments


@router.get("/experiments")
async def experiments(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The configured experiments, their variants and whether each runs now."""
    now_s = int(settings.now().timestamp())
    configured = _experiments(request)
    rows = [
        {
            "name": e.name,
            "status": e.status(now_s),
            "start": _day(e.start_s),
            "end": None if e.end_s is None else _day(e.end_s),
            "variants": e.variants,
        }
        for e in configured.experiments
    ]
    return await _page(request, "experiments.html", source=configured.source, experiments=rows)


@router.get("/experiments/{name}")
async def experiment(
    request: Request, name: ExperimentName, settings: SettingsDep, store: StoreDep
) -> HTMLResponse:
    """An experiment's report, from the code of ``nbo report experiment``: per variant,
    against the baseline (the control, else the first variant) with intervals, the
    sample-ratio test, warnings and charts."""
    found = _experiments(request).get(name)
    if found is None:
        raise NotFound("name", f"no experiment '{name}' is configured")
    now_s = int(settings.now().timestamp())

    def compute() -> dict[str, Any]:
        # matplotlib draws the report's charts: imported here, in the thread pool.
        from nbo.experiments.page import report_sections

        report = report_for(store, found, now_s, settings.clock_skew_seconds)
        return {"report": report, "sections": report_sections(report)}

    figures = await _cache(request).get(("experiment", name, now_s // 60), compute)
    return await _page(request, "experiment.html", name=name, **figures)


# --- models ---------------------------------------------------------------------------


@router.get("/models")
async def models_page(
    request: Request, settings: SettingsDep, models: MaybeServingModelsDep
) -> HTMLResponse:
    """The published versions, their aliases, which serve, and their quality side by side
    (each manifest's figures on its own holdout)."""
    current = None if models is None else models.current.version

    def compute() -> Any:
        return published_models(settings.models_dir, models)

    view = await _cache(request).get(
        ("models", current, int(datetime.now(UTC).timestamp()) // 60), compute
    )
    return await _page(request, "models.html", view=view)


# --- signing in -----------------------------------------------------------------------


@sign_in_router.get("/")
async def overview_with_slash() -> Response:
    """``/dashboard/``, as a person types it: to the overview. The API answers a trailing
    slash 404 (no redirect built from the Host header); this one page's address is known,
    and the redirect names only the path."""
    return RedirectResponse(PREFIX, status_code=308, headers=SECURITY_HEADERS)


@sign_in_router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Check the key typed in the sign-in form and keep it in the pages' cookie (HttpOnly,
    SameSite=Strict, path /dashboard, Secure over HTTPS, gone when the browser closes)."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _back_to((form.get("next") or [""])[0])
    ring = key_ring_of(request)
    if not ring.enabled:
        return RedirectResponse(target, status_code=303)
    if not key or ring.authenticate(key) is None:
        known = ring.known_id(key)
        if known is None:
            log.warning("dashboard sign-in refused: key not recognised")
        else:
            log.warning("dashboard sign-in refused: API key %s, wrong secret", known)
        return await _page(
            request,
            "sign_in.html",
            status=401,
            message="That key is not recognised.",
            target=target,
        )
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        KEY_COOKIE,
        key,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@sign_in_router.post("/sign-out")
async def sign_out() -> Response:
    answer = RedirectResponse(PREFIX, status_code=303)
    answer.delete_cookie(KEY_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return answer


def _back_to(target: str) -> str:
    """Where a sign-in returns: a dashboard page only (never another site)."""
    if target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


# --- error pages ----------------------------------------------------------------------


def error_page(request: Request, status: int, message: str) -> Response | None:
    """The dashboard's errors as pages, as its answers are: a client that asks for JSON
    and not HTML (``Accept: application/json``) gets the API's JSON, and so does every
    route outside the dashboard (``service/errors.py``). Pages had been kept for clients
    that named text/html, so one that accepts anything (``*/*``: curl, a link opened by
    another program) got a page's errors as JSON."""
    path = request.url.path
    if not (path == PREFIX or path.startswith(PREFIX + "/")):
        return None
    accept = request.headers.get("accept", "").lower()
    if "application/json" in accept and "text/html" not in accept:
        return None
    template = "sign_in.html" if status == 401 else "error.html"
    target = path + (f"?{request.url.query}" if request.url.query else "")
    body = _templates.get_template(template).render(
        page="error",
        prefix=PREFIX,
        assets=ASSETS,
        status=status,
        message=message,
        target=_back_to(target),
        as_of=None,
        model_version=None,
        signed_in=False,
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
