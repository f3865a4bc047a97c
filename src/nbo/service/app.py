"""The app factory: wiring only. The model is loaded in the lifespan, not at import."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from nbo import __version__
from nbo.catalog.holder import CatalogHolder
from nbo.core import processes
from nbo.core.apikeys import KeyRing
from nbo.core.errors import ArtifactError
from nbo.core.pseudonyms import Pseudonyms
from nbo.experiments.definitions import configured_experiments
from nbo.experiments.holder import ExperimentsFileHolder
from nbo.runtime.decide import contact_policy
from nbo.runtime.pairing import PostedItemsWatch, UnknownItemsWatch
from nbo.runtime.workers import WorkerBoard
from nbo.service.apidocs import install_api_docs
from nbo.service.chunking import Chunker
from nbo.service.dashboard.routes import install_dashboard
from nbo.service.errors import install_error_handlers
from nbo.service.middleware import ObservedFastAPI
from nbo.service.openapi import document_errors, operation_id, require_answer_fields
from nbo.service.prometheus import build_metrics
from nbo.service.reload import Reloader, reload_triggers
from nbo.service.routes import (
    admin,
    catalog,
    customers,
    events,
    experiments,
    health,
    items,
    metrics,
    model,
    models,
    offers,
    profiles,
)
from nbo.service.shared import SharedSettingsWatch, watch_shared_settings
from nbo.service.state import ModelHolder
from nbo.settings import Settings, get_settings
from nbo.store import open_store

log = logging.getLogger(__name__)


def document_openapi(app: FastAPI) -> None:
    """FastAPI's OpenAPI document, with what the routes cannot declare: the event models
    of ``POST /v1/events`` and the error answers (``nbo.service.openapi``), built once,
    on the first request for the document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            events.document_events_body(document)
            document_errors(document, app.state.api_routes)
            require_answer_fields(document)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _first_worker(board: WorkerBoard | None) -> bool:
    """Whether this process is the one of its ``nbo serve`` that says what concerns the
    whole replica (the live worker of the lowest pid; the process, without workers)."""
    if board is None:
        return True
    pids = [status.pid for status in board.statuses()]
    return not pids or min(pids) == os.getpid()


def create_app(
    settings: Settings | None = None,
    board: WorkerBoard | None = None,
    metrics_dir: Path | None = None,
    store_proven: bool = False,
) -> FastAPI:
    """The app. ``nbo serve`` builds it once, before forking its workers, with the
    workers' ``board`` (reloads reach every worker) and ``metrics_dir`` (prometheus-client's
    multiprocess folder: ``/metrics`` adds up every worker); without them, one process.
    ``store_proven``: ``nbo serve`` opened the store before forking, so a refusal a worker
    meets later (a newer release migrated the schema, a password changed) is the store's
    state of the moment, not a wrong URL: the worker starts without its store then."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One BLAS thread: the scoring calls are tiny and BLAS's own threads only add
        # contention (measured 8 ms vs 0.3 ms at p50 for fold-in plus recommend).
        limiter = threadpool_limits(limits=1, user_api="blas")
        # The store first: migrations run at start, and events must never be refused
        # because a model is missing. A PostgreSQL server away at the start (a worker
        # gunicorn starts in place of a dead one during an outage: a failed boot stops the
        # whole service), nor one that refuses a store proven good at start (a rolling
        # upgrade's newer schema), does not stop it: the store opens once the server answers, and
        # calls that need it answer 503 until then.
        opened = open_store(
            settings.store_url,
            background=True,
            statement_timeout_ms=settings.store_statement_timeout_ms,
            refusal_waits=store_proven,
        )
        store = app.state.metrics.observe_store(opened)
        app.state.store = store
        # Every model served leaves out the erased customers, this one and any later (a
        # model loaded while the store is away: once it is back).
        app.state.models.erased_list = store.erased_list
        app.state.models.when_store_available = store.when_available
        # Customer ids in logs are keyed pseudonyms: NBO_LOG_KEY, else the store's key
        # (until the store is open, log lines name no customer).
        key = settings.log_key
        if key:
            app.state.pseudonyms = Pseudonyms(key.get_secret_value().encode("utf-8"))
        else:

            def read_pseudonym_key() -> None:
                app.state.pseudonyms = Pseudonyms(store.pseudonym_key())

            store.when_available(read_pseudonym_key)
        # Reloads another replica on this store records are followed (``nbo.service.reload``).
        app.state.reloader.store = store
        try:
            app.state.reloader.start()
        except ArtifactError:
            if settings.require_model:
                raise
            log.warning("starting without a model; /health/ready answers 503")
        # The load leaves tens of thousands of objects in reference cycles (33k on Online
        # Retail), which only a full collection frees: the worker's first one came under
        # traffic and held every call in flight (1.4 s, in process, 4,960 offers calls
        # after the start, load average 15). Collected here, before the first call, and
        # what the worker keeps from now on frozen, out of the collector's walks, as the
        # master froze what it built before forking. A worker of ``nbo serve`` only (its
        # board): a process that builds many apps (the tests) would keep each one's cycles.
        if board is not None:
            processes.freeze_heap()
        # A replica started on the store after this one with other shared settings is
        # warned of at its start; this one hears of it here (``nbo.service.shared``).
        stop = asyncio.Event()
        watch = SharedSettingsWatch(store, settings, lambda: _first_worker(board))
        watching = asyncio.create_task(watch_shared_settings(watch, stop))
        try:
            # SIGHUP, a change of the experiments file (and models/CURRENT with
            # NBO_WATCH_MODELS) reload like the API.
            async with reload_triggers(app.state.reloader, settings.watch_models):
                yield
        finally:
            stop.set()
            await watching
            app.state.store.close()
            limiter.restore_original_limits()

    app = ObservedFastAPI(
        title="nbo",
        version=__version__,
        description="Next-best-offer recommendations from first-party purchase history.",
        lifespan=lifespan,
        # The docs pages are nbo's own (``service/apidocs.py``): FastAPI's load their
        # scripts from a CDN, and a deployment may have no internet.
        docs_url=None,
        redoc_url=None,
        # A path with a trailing slash is an unknown route (404), as the docs say: the
        # redirect to the path without it was a 307 to an absolute URL built from the
        # request's Host header.
        redirect_slashes=False,
        # operationIds are the handlers' names, as generated clients call them.
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    # The contact rules the settings configure, for every offers call (settings do not
    # change while the app runs).
    app.state.contact_policy = contact_policy(settings)
    # No keys: every route open (nbo serve then listens on loopback only).
    app.state.keys = KeyRing(settings.api_keys)
    # Like the catalogue: a bad experiments file refuses the start as one line. What
    # serves is the models holder's (``app.state.models.experiments``): a reload reads
    # the file again and swaps a changed one in with the models it names.
    configured = configured_experiments(settings.experiments)
    app.state.experiments_file = ExperimentsFileHolder(settings.experiments)
    app.state.models = ModelHolder(experiments=configured)
    # Metrics in a registry of this app's own; the request middleware (ObservedFastAPI)
    # records every request in it and writes the access log.
    app.state.metrics = build_metrics(settings.metrics, app.state.models, board, metrics_dir)
    # Offers previews in flight at once are decided together (``service/chunking.py``).
    app.state.chunker = Chunker(app.state.metrics.observe_chunk)
    # The catalogue is read here, not in the lifespan: it is small, and a bad NBO_CATALOG
    # then refuses the start as one CatalogError line (``nbo serve`` builds the app before
    # binding the port), where a lifespan failure would be a uvicorn traceback.
    app.state.catalog = CatalogHolder(settings.catalog)
    app.state.reloader = Reloader(
        settings, app.state.models, app.state.catalog, board, app.state.experiments_file
    )
    app.state.reloader.on_refused = app.state.metrics.record_reload_refused
    # Items the catalogue names that the model does not know: a warning logged when
    # either is loaded, and shown by GET /v1/catalog (``nbo.runtime.pairing``).
    watch = app.state.unknown_items = UnknownItemsWatch()
    models_held, catalog_held = app.state.models, app.state.catalog
    catalog_held.on_load = lambda catalog: watch.check(catalog, models_held.model)
    models_held.on_load = lambda models: watch.check(catalog_held.serving, models.current)
    # Posted purchases of items the model does not know (``routes/events.py``).
    app.state.posted_items = PostedItemsWatch()
    install_error_handlers(app)
    # Ids may hold '/', so the customer routes match any path (``{customer_id:id}``,
    # ``nbo.service.deps.IdConvertor``). The bare ``/v1/customers/{id}`` of profiles and
    # of erasure never match a path ending in a suffixed route's name
    # (``BareIdConvertor``); the routes with a suffix (offers, consent, data) still go
    # first.
    routers = (
        offers.router,
        customers.router,
        profiles.router,
        events.router,
        items.router,
        model.router,
        models.router,
        experiments.router,
        catalog.router,
        health.router,
        metrics.router,
        admin.router,
    )
    for router in routers:
        app.include_router(router)
    # The API's routes as declared (prefix included), in the app's order: what a request
    # the body limit refuses before routing is matched against, to name its route in the
    # metrics (``nbo.service.body_limit.route_of``).
    app.state.api_routes = tuple(route for router in routers for route in router.routes)
    document_openapi(app)
    # After the API's routes: a request for offers never tries the pages' paths first.
    install_api_docs(app)
    install_dashboard(app)
    return app
