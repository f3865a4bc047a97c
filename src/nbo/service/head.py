"""HEAD answered as GET: the same status and headers, no body.

FastAPI's ``@router.get`` routes take GET only, so uptime monitors and load balancers
probing with HEAD (``HEAD /health/ready``) got 405. Declaring HEAD on every route would
put a second operation per route in the API's document; this layer, between the request
middleware and the app, hands the app a GET instead and drops the body it answers, so
every GET route (the API's, the dashboard's, the documentation's) answers HEAD as it
answers GET, and a path without GET answers 405 as GET does.

A GET route with a side effect must not have it on HEAD: ``head_request`` tells a route
the request came as HEAD (the offers route refuses ``record=true`` on HEAD).

Pure ASGI, like the other layers. The method is changed in the scope itself, not in a
copy: the router records the matched route in the scope it is given, and the request
middleware labels the metrics and the access line with it. The method is put back to
HEAD before the answer goes out (and at the end): the server reads the scope's method
to know it must send no body (uvicorn).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import fastapi.routing
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Key in ``scope["state"]``: the request came as HEAD (and is served as GET).
HEAD_STATE = "head_request"


def head_request(scope: Scope) -> bool:
    """True when the request came as HEAD and is being served as GET."""
    return bool(scope.get("state", {}).get(HEAD_STATE, False))


def allowed_methods(scope: Scope, routes: Sequence[BaseRoute]) -> list[str]:
    """Every method the request's path is answered to, sorted: what a 405's ``Allow``
    must list (RFC 9110, section 15.5.6: the target resource's supported methods).

    Starlette's 405 names the methods of the first route matching the path only, so
    ``DELETE /v1/customers/12347/consent`` said ``Allow: PUT`` though GET is there too,
    and no GET route named HEAD, which this layer answers wherever GET is. Routes without
    methods (a mounted app, such as the static files) are left out: they answer their own
    405s. Empty when no route with methods matches the path. ``routes``: the app's.
    """
    methods: set[str] = set()
    for route in _served(routes):
        declared = getattr(route, "methods", None)
        if declared and route.matches(scope)[0] != Match.NONE:
            methods.update(declared)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _served(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    """The routes as the app serves them: FastAPI from 0.12x on keeps an included router
    whole in ``app.routes``, its routes (prefix included) walked by
    ``iter_route_contexts``."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return walk(routes) if walk is not None else routes


class HeadAsGet:
    """Serves an HTTP HEAD request as GET and sends no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope["method"] = "GET"
        scope.setdefault("state", {})[HEAD_STATE] = True

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope["method"] = "HEAD"
            elif message["type"] == "http.response.body" and message.get("body"):
                # Content-Length stays the GET answer's, as HTTP asks of HEAD.
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(scope, receive, send_headers_only)
        finally:
            scope["method"] = "HEAD"
