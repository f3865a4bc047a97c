"""The request middleware: a request id, the HTTP metrics and one access log line per
request.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: no extra task and no response
streaming through memory streams per request, which matters on a route answering in
about a millisecond.

It runs outside everything else in the app, Starlette's ``ServerErrorMiddleware``
included (``ObservedFastAPI``), so an unexpected error's 500 answer carries the request
id too, and the error handler's log line names the request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nbo.core.pseudonyms import Pseudonyms
from nbo.service.apidocs import DOCS, OAUTH2_REDIRECT, REDOC
from nbo.service.body_limit import BodyLimit
from nbo.service.head import HeadAsGet
from nbo.service.logs import CUSTOMER_FIELD, KEY_FIELD, REQUEST_ID
from nbo.service.prometheus import UNMATCHED, Metrics, method_label

HEADER = b"x-request-id"
# A client's request id is taken only when it is this: it goes into logs, a response
# header and the store, so nothing that could break a line, a header or a log parser.
# The API's document declares the same (``nbo.service.openapi``).
REQUEST_ID_PATTERN = "[A-Za-z0-9._-]{1,128}"
REQUEST_ID_MAX_LENGTH = 128
_SANE_ID = re.compile(REQUEST_ID_PATTERN.encode("ascii"))

access_log = logging.getLogger("nbo.access")

# Headers every API answer gets, as static bytes (no work per call beyond a path test):
# a browser must not take a JSON answer for something else (nosniff), and an answer about
# a customer (profile, offers, consent, the data export, erasure) is never kept by a
# browser or a proxy, as the dashboard's pages are not.
_API_PREFIX = "/v1/"
_CUSTOMERS_PREFIX = "/v1/customers/"
_API_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"x-content-type-options", b"nosniff"),)
_CUSTOMER_HEADERS = (*_API_HEADERS, (b"cache-control", b"no-store"))


def _sent_request_id(scope: Scope) -> bytes | None:
    """The client's first ``X-Request-ID`` header, as sent; None without one."""
    for name, value in scope["headers"]:
        if name == HEADER:
            return value
    return None


def request_id_from(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when sane, else a new one (uuid4 hex)."""
    value = _sent_request_id(scope)
    if value is not None and _SANE_ID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


def refused_request_id(scope: Scope) -> str | None:
    """Why the client's ``X-Request-ID`` was replaced by a new id (``request_id_from``),
    or None when it sent none or it was taken.

    A recorded offers call (``record=true``) refuses such an id rather than take a new
    one: its id is what tells a retry from a new delivery, and a retry under an id
    replaced anew each time (``order:123``, ``campaign/7``, a 129-character id) was
    recorded as a second delivery, counted twice toward the caps, without a word."""
    value = _sent_request_id(scope)
    if value is None or _SANE_ID.fullmatch(value):
        return None
    text = value.decode("latin-1")
    if not text:
        where = "empty"
    elif len(text) > 128:
        where = f"{len(text)} characters"
    else:
        index = next(
            i for i, char in enumerate(text) if not _SANE_ID.fullmatch(char.encode("latin-1"))
        )
        where = f"{text[index]!r} at position {index + 1}"
    return f"must be 1 to 128 characters of A-Z a-z 0-9 . _ - (got {where})"


class RequestMiddleware:
    """Gives each HTTP request an id (``scope["state"]["request_id"]`` and the
    ``REQUEST_ID`` context variable), returns it in ``X-Request-ID`` (with the API's
    static headers, ``_API_HEADERS`` and ``_CUSTOMER_HEADERS``), records the request in
    the metrics by route template, and logs one access line.

    The access line holds the request id, method, route template, status, duration, the
    public id of the API key the call was allowed with (``key``: who erased, exported,
    reloaded or changed consent) and the customer's pseudonym (``customer``, see
    ``nbo.core.pseudonyms``) when the path names one: no key secret, no customer id, no
    raw path or query string (they can hold personal data), no headers (never the
    Authorization header), no body.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        log_access: bool,
        plain_routes: frozenset[str] = frozenset(),
        pseudonyms: Callable[[], Pseudonyms | None] = lambda: None,
        mounts: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_access = log_access
        # The app's pseudonyms, made in the lifespan once the store is open (after this
        # middleware is built): looked up when a line is written.
        self.pseudonyms = pseudonyms
        # Fixed paths served by routes that leave no route in the scope (FastAPI's
        # /docs, /redoc, /openapi.json): labelled by their path, a bounded set.
        self.plain_routes = plain_routes
        # Folders of static files: a file is labelled by its folder.
        self.mounts = tuple(sorted(mounts, key=len, reverse=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Read before the app runs: HEAD is served as GET inside (``HeadAsGet``).
        method = method_label(scope["method"])
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        header = (HEADER, request_id.encode("ascii"))
        path = scope["path"]
        extra = (
            _CUSTOMER_HEADERS
            if path.startswith(_CUSTOMERS_PREFIX)
            else _API_HEADERS
            if path.startswith(_API_PREFIX)
            else ()
        )
        status = 500  # what the client gets when the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            # ``path_format``, not ``path``: ``/{customer_id}``, without the ``:id`` convertor
            # the router matches with, as the API docs name the route.
            route = getattr(scope.get("route"), "path_format", None) or self._plain_route(scope)
            self.metrics.observe_request(route, method, status, seconds)
            if self.log_access and access_log.isEnabledFor(logging.INFO):
                self._log(scope, request_id, method, route, status, seconds, self.pseudonyms())
            REQUEST_ID.reset(token)

    def _plain_route(self, scope: Scope) -> str:
        path = scope.get("path")
        if path in self.plain_routes:
            return str(path)
        for mount in self.mounts:
            if isinstance(path, str) and path.startswith(mount + "/"):
                return mount
        return UNMATCHED

    @staticmethod
    def _log(
        scope: Scope,
        request_id: str,
        method: str,
        route: str,
        status: int,
        seconds: float,
        pseudonyms: Pseudonyms | None,
    ) -> None:
        duration_ms = round(seconds * 1000, 3)
        fields: dict[str, object] = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
        }
        key_id = scope["state"].get("api_key_id")
        if isinstance(key_id, str):
            fields[KEY_FIELD] = key_id
        customer_id = (scope.get("path_params") or {}).get("customer_id")
        if isinstance(customer_id, str) and pseudonyms is not None:
            fields[CUSTOMER_FIELD] = pseudonyms.of(customer_id)
        access_log.info("%s %s %d %.1f ms", method, route, status, duration_ms, extra=fields)


class ObservedFastAPI(FastAPI):
    """FastAPI with ``RequestMiddleware`` outermost, then ``HeadAsGet`` and ``BodyLimit``.
    ``add_middleware`` would put them inside ``ServerErrorMiddleware``, whose 500 answers
    would then go out without the request id. Reads ``state.metrics`` and
    ``state.settings`` when the stack is built (the first call: the lifespan's), after
    ``create_app`` has set them."""

    def build_middleware_stack(self) -> ASGIApp:
        documentation = (self.openapi_url, DOCS, REDOC, OAUTH2_REDIRECT)
        settings = self.state.settings
        # Static files (the docs' scripts, the dashboard's styles) count under their
        # folder: a file's path is not a route.
        mounts = frozenset(route.path for route in self.routes if isinstance(route, Mount))
        return RequestMiddleware(
            # Inside the request middleware: a HEAD is counted and logged as HEAD, and a
            # refused body still has a request id, an access line and its count in the
            # metrics.
            HeadAsGet(
                BodyLimit(
                    super().build_middleware_stack(),
                    settings.max_body_bytes,
                    # A refused body counts under the route it was sent to.
                    routes=getattr(self.state, "api_routes", ()),
                )
            ),
            self.state.metrics,
            log_access=settings.access_log,
            plain_routes=frozenset(path for path in documentation if path),
            mounts=mounts,
            pseudonyms=lambda: getattr(self.state, "pseudonyms", None),
        )
