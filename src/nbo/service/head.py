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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Key in ``scope["state"]``: the request came as HEAD (and is served as GET).
HEAD_STATE = "head_request"


def head_request(scope: Scope) -> bool:
    """True when the request came as HEAD and is being served as GET."""
    return bool(scope.get("state", {}).get(HEAD_STATE, False))


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
