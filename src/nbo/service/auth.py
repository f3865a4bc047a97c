"""Access control for the HTTP API: the role each route needs, and the check of a key.

Keys, their format and the role order (``admin > write > read``: a key may do what its
role and every lower role may) are in ``nbo.core.apikeys``. Here a route declares the role it
needs with ``requires(Role.x)``, on its router or on the route itself:

========  ==============================================================================
role      routes
========  ==============================================================================
read      ``GET /v1/customers/{id}/offers`` (``record=false``, the default),
          ``GET /v1/customers/{id}`` (profile),
          ``GET /v1/customers/{id}/consent``, ``GET /v1/items/{id}/similar``,
          ``GET /v1/model``, ``GET /v1/models``, ``GET /v1/catalog``,
          ``GET /v1/experiments``, ``GET /v1/experiments/{name}/report``; the dashboard's
          pages ``GET /dashboard``, ``/dashboard/offers``, ``/dashboard/customer``,
          ``/dashboard/experiments``, ``/dashboard/experiments/{name}``,
          ``/dashboard/models`` (the key in a header or the sign-in cookie)
write     ``POST /v1/events``, ``PUT /v1/customers/{id}/consent``,
          ``GET /v1/customers/{id}/offers?record=true`` (a delivery: it records
          impressions, which count against the customer's caps on every replica)
admin     ``DELETE /v1/customers/{id}`` (erasure);
          ``GET /v1/customers/{id}/data`` (the export of everything held on a customer:
          admin, like erasure, because it hands out a whole record at once);
          ``POST /v1/admin/reload`` (model and catalogue swaps); any experiment change
open      ``OPEN_PATHS``: health checks, the API docs (and their scripts) and ``/metrics``
========  ==============================================================================

``/metrics`` stays open so Prometheus can scrape it without a key: it exposes counts,
latencies, model versions and load times per route, status, source, rule and event type,
never a customer id, a request body or a key.

Without configured keys (``NBO_API_KEYS`` empty) every route is open: the local mode, which
``nbo serve`` allows on loopback only (``nbo.core.apikeys.check_bind``).

A key comes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; on the dashboard's
pages (``requires(role, cookie=True)``) also in the cookie its sign-in form sets
(``KEY_COOKIE``: a link cannot carry a header). The cookie is read on those routes only, all
of them ``GET`` and read-only, so a page on another site that makes the browser send it
can change nothing. No key, or one not recognised: 401 with ``WWW-Authenticate: Bearer``;
a key whose role is too low: 403 naming the role needed. Both are JSON bodies from
``service/errors.py`` (the dashboard answers a browser with a page). A failed check
logs the key's id when the id is configured, even when the secret after it is not well
formed (a botched rotation), else nothing of the key; never the key or its hash.

Known limit: a POST or PUT body that is not JSON is refused (422) by FastAPI before any
dependency runs, so such a request gets 422, not 401. Nothing is read or stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nbo.core.apikeys import KeyRing, Role
from nbo.service.errors import Forbidden, Unauthorized
from nbo.service.schemas import ErrorResponse

log = logging.getLogger(__name__)

# Routes other parts of issue 7 add, and the role each must declare (the route walk in
# tests/service/test_auth.py refuses them until they do; add them to its ROUTE_ROLES):
#   GET  /metrics                          -> open (in OPEN_PATHS), no personal data

# Routes anyone may call, keys or not. Every other route must name its role (a test walks
# the app's routes, so a new route without a role fails it).
OPEN_PATHS = frozenset(
    {
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        # The docs pages' scripts and the dashboard's styles (static files: no data).
        "/static/apidocs",
        "/dashboard/static",
        # Signing in to the dashboard (and out): they only set or clear its cookie.
        "/dashboard/sign-in",
        "/dashboard/sign-out",
        # ``/dashboard/`` as a person types it: a redirect to the overview, no data.
        "/dashboard/",
    }
)

# For the OpenAPI spec of every protected route.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "no API key, or one not recognised",
        # Sent with every 401 (RFC 9110, 11.6.1): declared, so a client checking answers
        # against the document, or one generated from it, knows the header.
        "headers": {
            "WWW-Authenticate": {
                "description": "the scheme to answer with: Bearer",
                "schema": {"type": "string"},
            }
        },
    },
    403: {"model": ErrorResponse, "description": "the key's role does not allow this route"},
}

_bearer = HTTPBearer(
    auto_error=False, description="an nbo API key: Authorization: Bearer nbo_<id>_<secret>"
)
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an nbo API key, when Bearer is not an option"
)

# The dashboard's sign-in keeps the key here: HttpOnly (no script reads it), SameSite=Strict
# (no other site's page sends it), path /dashboard (no other route sees it).
KEY_COOKIE = "nbo_key"

Check = Callable[..., Awaitable[None]]
_ROLE_OF: dict[Check, Role] = {}


def key_ring_of(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keys
    return ring


def _make_check(needed: Role, cookie: bool = False) -> Check:
    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_api_key_header)],
    ) -> None:
        # async: a hash and a dict lookup, cheaper than a hop to the thread pool.
        ring = key_ring_of(request)
        if not ring.enabled:
            return
        if bearer is not None and bearer.credentials:
            key, field = bearer.credentials, "Authorization"
        elif api_key:
            key, field = api_key, "X-API-Key"
        elif cookie and request.cookies.get(KEY_COOKIE):
            key, field = request.cookies[KEY_COOKIE], "Cookie"
        elif request.headers.get("authorization", "").strip():
            # A key sent bare, or under another scheme (Basic): the header is there, not
            # missing; its value is never echoed.
            log.info(
                "request with a non-Bearer Authorization refused: %s %s",
                request.method,
                _route(request),
            )
            raise Unauthorized(
                "the Authorization header must be 'Bearer <key>' (or send 'X-API-Key: <key>')",
                "Authorization",
                "not 'Bearer <key>'",
            )
        else:
            log.info("request without an API key refused: %s %s", request.method, _route(request))
            raise Unauthorized(
                "no API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                "Authorization",
                "missing",
            )
        entry = ring.authenticate(key)
        if entry is None:
            known = ring.known_id(key)
            if known is None:
                log.warning("unknown API key refused: %s %s", request.method, _route(request))
            else:
                log.warning(
                    "API key %s refused, wrong secret: %s %s",
                    known,
                    request.method,
                    _route(request),
                )
            raise Unauthorized("API key not recognised", field, "not a configured key")
        if not entry.role.allows(needed):
            log.warning(
                "API key %s (role %s) refused: %s %s needs role %s",
                entry.id,
                entry.role.value,
                request.method,
                _route(request),
                needed.value,
            )
            raise Forbidden(
                f"this route needs a key with role '{needed.value}' or higher; "
                f"this key has role '{entry.role.value}'",
                field,
                f"role '{entry.role.value}' is below '{needed.value}'",
            )
        # For request logs: the public id of the key that made the call; its role for a
        # route that needs more for some calls (``require_for_call``).
        request.state.api_key_id = entry.id
        request.state.api_key_role = entry.role

    _ROLE_OF[check] = needed
    return check


_CHECKS = {(role, cookie): _make_check(role, cookie) for role in Role for cookie in (False, True)}


def requires(role: Role, cookie: bool = False) -> Any:
    """The dependency a router or route lists to need ``role`` (or a higher one):
    ``APIRouter(dependencies=[requires(Role.read)], responses=AUTH_RESPONSES)``.
    ``cookie``: the key may come in ``KEY_COOKIE`` too (the dashboard's read-only pages)."""
    return Depends(_CHECKS[(role, cookie)])


def require_for_call(request: Request, needed: Role, call: str) -> None:
    """Forbidden unless the key the route's own check accepted allows ``needed``: for a
    route whose role depends on what a call asks (``call``, e.g. ``record=true`` on the
    offers route, which writes). The route calls it only for such a call, so the others
    pay nothing on top of the route's check."""
    if not key_ring_of(request).enabled:
        return
    role: Role | None = getattr(request.state, "api_key_role", None)
    if role is not None and role.allows(needed):
        return
    had = "none" if role is None else role.value
    log.warning(
        "API key %s (role %s) refused: %s %s with %s needs role %s",
        getattr(request.state, "api_key_id", None),
        had,
        request.method,
        _route(request),
        call,
        needed.value,
    )
    raise Forbidden(
        f"{call} needs a key with role '{needed.value}' or higher; this key has role '{had}'",
        call.split("=", 1)[0],
        f"role '{had}' is below '{needed.value}'",
    )


class _Routed(Protocol):
    """An ``APIRoute``, or a route as FastAPI serves it after ``include_router``
    (``fastapi.routing.iter_route_contexts``): anything with the dependencies it solves."""

    @property
    def dependant(self) -> Dependant: ...


def role_of(route: _Routed) -> Role | None:
    """The role a route needs (the highest, if it lists several), None when open."""
    roles = [_ROLE_OF[d.call] for d in route.dependant.dependencies if d.call in _ROLE_OF]
    return max(roles, key=lambda role: role.rank) if roles else None


def _route(request: Request) -> str:
    """The route's path template (``/v1/customers/{customer_id}``) for logs: the same
    line for every customer, and never more of a request than its route; ``path_format``
    leaves out the ``:id`` convertor the router matches with."""
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or request.url.path
