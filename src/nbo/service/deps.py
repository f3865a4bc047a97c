"""Shared request dependencies as short ``Annotated`` aliases."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import AfterValidator
from starlette.convertors import PathConvertor, register_url_convertor

from nbo.catalog.holder import CatalogHolder
from nbo.catalog.terms import Catalog
from nbo.core.ids import CUSTOMER_ROUTE_SUFFIXES, MAX_ID_LENGTH, check_path_id
from nbo.core.pseudonyms import Pseudonyms
from nbo.experiments.assignment import ServingModels
from nbo.experiments.definitions import NAME_PATTERN, Experiments
from nbo.models.served import ServingModel
from nbo.offers.decision import ContactPolicy
from nbo.service.chunking import Chunker
from nbo.service.errors import NotReady
from nbo.service.prometheus import Metrics
from nbo.service.reload import Reloader
from nbo.settings import Settings
from nbo.store.base import Store, StoreUnavailable


async def get_app_settings(request: Request) -> Settings:
    """Every dependency here is ``async``: each reads an attribute of the app, and a plain
    ``def`` dependency costs a thread-pool hand-off per request (four of them were 9% of
    an offers call's server time, profiled with py-spy)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_model(request: Request) -> ServingModel:
    """The model serving this request: one reference, so one version per answer."""
    model = request.app.state.models.model
    if model is None:
        raise NotReady(request.app.state.models.last_error or "no model loaded yet")
    return model


async def get_serving_models(request: Request) -> ServingModels:
    """The current model with the experiments' variant models: one reference per
    request, so a reload never mixes versions in one answer."""
    models = request.app.state.models.serving
    if models is None:
        raise NotReady(request.app.state.models.last_error or "no model loaded yet")
    return models


async def get_serving_models_if_loaded(request: Request) -> ServingModels | None:
    """The served models, or None before one is loaded: for the routes that answer
    without a model (the data export)."""
    models: ServingModels | None = request.app.state.models.serving
    return models


async def get_catalog_holder(request: Request) -> CatalogHolder:
    holder: CatalogHolder = request.app.state.catalog
    return holder


async def get_experiments(request: Request) -> Experiments:
    """The experiments serving (the file as last read and swapped in with its models);
    there even before a model is loaded."""
    experiments: Experiments = request.app.state.models.experiments
    return experiments


async def get_catalog(request: Request) -> Catalog:
    """The catalogue for this request: one reference, so a reload never mixes two files
    in one answer (and the file is re-checked here, at most once a second: a stat, and
    a parse of a small file only when it changed)."""
    holder: CatalogHolder = request.app.state.catalog
    return holder.current()


async def get_reloader(request: Request) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_pseudonyms(request: Request) -> Pseudonyms:
    """The deployment's pseudonyms of customer ids, for log lines (``nbo.core.pseudonyms``);
    503 while they wait for the store's key (a worker started while the store was away:
    the routes that log them need the store anyway)."""
    pseudonyms: Pseudonyms | None = getattr(request.app.state, "pseudonyms", None)
    if pseudonyms is None:
        raise StoreUnavailable("the store is unavailable (its pseudonym key is not read yet)")
    return pseudonyms


async def get_metrics(request: Request) -> Metrics:
    """``async``, like ``get_request_id``: a plain ``def`` dependency costs a thread-pool
    hand-off per request, for an attribute read."""
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_request_id(request: Request) -> str:
    """This request's id: the client's ``X-Request-ID`` when sane, else generated (set by
    ``RequestMiddleware``; a new one if the app runs without it)."""
    request_id = request.scope.get("state", {}).get("request_id")
    return request_id if isinstance(request_id, str) else uuid.uuid4().hex


@dataclass(frozen=True)
class Deciding:
    """Everything a deciding route reads of the app, as one dependency: FastAPI solves
    each dependency with its own bookkeeping, and six of them were about a tenth of an
    offers call's server time (profiled in process; one dependency costs one)."""

    models: ServingModels
    catalog: Catalog
    settings: Settings
    store: Store
    metrics: Metrics
    request_id: str
    chunker: Chunker
    # The settings' contact rules, made once with the app (``app.state.contact_policy``):
    # parsing them on every call was 1% of an offers call's server time.
    policy: ContactPolicy


async def get_deciding(request: Request) -> Deciding:
    """The same reads as the single dependencies above, in one."""
    return Deciding(
        models=await get_serving_models(request),
        catalog=await get_catalog(request),
        settings=await get_app_settings(request),
        store=await get_store(request),
        metrics=await get_metrics(request),
        request_id=await get_request_id(request),
        chunker=request.app.state.chunker,
        policy=request.app.state.contact_policy,
    )


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelDep = Annotated[ServingModel, Depends(get_model)]
ServingModelsDep = Annotated[ServingModels, Depends(get_serving_models)]
MaybeServingModelsDep = Annotated[ServingModels | None, Depends(get_serving_models_if_loaded)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
CatalogHolderDep = Annotated[CatalogHolder, Depends(get_catalog_holder)]
ExperimentsDep = Annotated[Experiments, Depends(get_experiments)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PseudonymsDep = Annotated[Pseudonyms, Depends(get_pseudonyms)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
DecidingDep = Annotated[Deciding, Depends(get_deciding)]
ReloaderDep = Annotated[Reloader, Depends(get_reloader)]


class IdConvertor(PathConvertor):
    """What a customer or item id in a route's path matches: anything, '/' included.

    Ids may hold '/' (the events route and the trainer take them), and the path is
    percent-decoded before routing, so ``shop%2F123`` arrives as ``shop/123``: the default
    ``{customer_id}`` (``[^/]+``) would answer 404, and such a customer could never be
    exported or erased. Starlette's ``:path`` (``.*``) matches '/' but not a line break,
    so ``a%0Ab`` would be a routing 404 instead of the 422 that names ``customer_id``;
    this is ``:path`` with ``.`` matching line breaks too, and ``check_path_id`` judges the
    id. For the routes with a suffix after the id (``/{customer_id:id}/offers``).
    """

    regex = "(?s:.*)"


class BareIdConvertor(IdConvertor):
    """The id of a route with nothing after it (``/{customer_id:bare_id}``: the profile,
    the erasure): anything but a path whose last segment names a customer route with a
    suffix. Without it ``DELETE /v1/customers/12347/consent`` (no DELETE on consent) was
    the erasure of the customer "12347/consent", where it is a 405 now, as is any method
    a suffixed route does not take; ``GET /v1/customers/12347/data`` is the export of
    "12347" whatever the order of the routes. No such id can exist: ``check_path_id``
    refuses it everywhere (events, paths, the trainer's input).
    """

    regex = (
        "(?s:(?!.*/(?:"
        + "|".join(re.escape(suffix) for suffix in CUSTOMER_ROUTE_SUFFIXES)
        + r")\Z).*)"
    )


# Registered at import, before the route modules that import this one declare their paths.
register_url_convertor("id", IdConvertor())
register_url_convertor("bare_id", BareIdConvertor())

# A customer or item id in a route's path (``/{customer_id:id}``): one definition for every
# route, the one customer and item ids in request bodies follow too (``nbo.core.ids``).
_ID_RULE = (
    f"1 to {MAX_ID_LENGTH} printable characters, no control or format characters, no "
    "space at either end, valid UTF-8; may hold '/', sent as %2F, though not at either "
    "end, and not ending with '/offers', '/consent', '/data' or '/similar'"
)
CustomerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description=f"your customer id: {_ID_RULE}",
    ),
    AfterValidator(check_path_id),
]
ItemId = Annotated[
    str,
    Path(min_length=1, max_length=MAX_ID_LENGTH, description=f"an item id: {_ID_RULE}"),
    AfterValidator(check_path_id),
]
# An experiment's name in a path: the rule of the experiments file, so a name no file can
# configure is refused (422) rather than looked up and echoed back in a 404.
ExperimentName = Annotated[
    str,
    Path(
        pattern=f"^{NAME_PATTERN}$",
        description="the experiment's name: 1 to 64 lowercase letters, digits, '-' or '_'",
    ),
]
