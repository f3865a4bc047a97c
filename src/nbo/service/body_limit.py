"""A limit on request bodies: a body over ``NBO_MAX_BODY_BYTES`` is refused with 413 and
a JSON body before any route sees it.

Counted as the bytes arrive, not only from ``Content-Length``: a chunked body declares no
length, and a body is never held in memory beyond the limit. A declared length over the
limit is refused before a byte of the body is read.

Pure ASGI, like the request middleware: the body is read here (at most the limit) and
handed to the app as it came, so routes read it as usual.

A refused request never reaches the router, which is what names the route in the scope
for the metrics and the access line: the refusal names the route the router would have
picked (``route_of``, matched against the API's routes, only when refusing), so a 413 of
``POST /v1/events`` counts under ``/v1/events``, not ``unmatched``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nbo.service.schemas import ErrorCode, ErrorDetail, ErrorResponse

STATUS = 413


class BodyLimit:
    """Refuses an HTTP request whose body is larger than ``max_bytes`` (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The routes a refused request is matched against, to name it (``route_of``).
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, declared)
            return
        messages: deque[Message] = deque()
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client is gone: the app sees it as it would have
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.popleft() if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, declared: int | None) -> None:
        routed = route_of(scope, self.routes)
        if routed is not None:
            scope.update(routed)
        size = f"{declared} bytes" if declared is not None else "more"
        problem = f"the body is larger than {self.max_bytes} bytes ({size}; NBO_MAX_BODY_BYTES)"
        body = (
            ErrorResponse(
                error=ErrorCode.payload_too_large,
                message=f"body: {problem}",
                details=[ErrorDetail(field="body", problem=problem)],
            )
            .model_dump_json()
            .encode("utf-8")
        )
        await send(
            {
                "type": "http.response.start",
                "status": STATUS,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    # The rest of the body is not read: the connection cannot carry another
                    # request after it.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def route_of(scope: Scope, routes: Sequence[BaseRoute]) -> Scope | None:
    """What the router holding ``routes`` would add to the request's scope (its route,
    path parameters): for the first route that matches the path and method, else the
    first that matches the path (whose 405 it would answer), as Starlette's router
    picks; None when none matches."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return {"route": route, **child}
        if match == Match.PARTIAL and partial is None:
            partial = {"route": route, **child}
    return partial


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
