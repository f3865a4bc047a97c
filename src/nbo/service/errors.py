"""Every error becomes a JSON body here, in one place: never a stack trace. A part of the
app that serves pages to people (the dashboard) may answer its own requests' errors as a
page instead: it sets ``app.state.error_pages`` (``ErrorPages``), asked first."""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nbo.runtime.deliver import DeliveryRepeated
from nbo.service.head import allowed_methods
from nbo.service.reload import ReloadRefused, VersionNotFound
from nbo.service.schemas import ErrorCode, ErrorDetail, ErrorResponse
from nbo.store.base import StoreUnavailable

log = logging.getLogger(__name__)


class NotFound(Exception):
    """A resource the caller named does not exist (e.g. an unknown item)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class BadRequest(Exception):
    """A request body that cannot be read as what the route takes."""

    def __init__(self, problem: str) -> None:
        self.field, _, self.problem = problem.partition(": ")
        super().__init__(problem)


class UnsupportedMediaType(Exception):
    """A body sent in a form nbo does not read (e.g. compressed): 415."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


# Where a refused value was: FastAPI's ``loc`` (``("query", "record")``, ``("body",
# "channels", "sms")``, ``("X-Request-ID",)``), its first part dropped in the answer when
# it says only where (``_detail``).
Location = tuple[str | int, ...]


def refused(
    location: Location, problem: str, *more: tuple[Location, str]
) -> RequestValidationError:
    """The 422 of a value nbo refuses itself (beyond what a route declares), answered as
    FastAPI's own refusals are: ``details`` naming the field at ``location`` and the
    ``problem`` (and one more per ``more``). One place builds FastAPI's error entries, so
    every such refusal reads alike."""
    return RequestValidationError(
        [
            {"loc": loc, "msg": msg, "type": "value_error"}
            for loc, msg in ((location, problem), *more)
        ]
    )


class NotReady(Exception):
    """No model is loaded yet."""


class Unauthorized(Exception):
    """No API key, or one nbo does not recognise: 401 with a Bearer challenge.
    ``field`` is the header the key came in (or should have)."""

    def __init__(self, message: str, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(message)


class Forbidden(Exception):
    """A recognised key whose role does not allow the route: 403."""

    def __init__(self, message: str, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(message)


class ErrorPages(Protocol):
    """Renders an error as a page for the requests it serves (else None: JSON)."""

    def __call__(self, request: Request, status: int, message: str) -> Response | None: ...


def _page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response | None:
    pages: ErrorPages | None = getattr(request.app.state, "error_pages", None)
    page = None if pages is None else pages(request, status, message)
    if page is not None and headers:
        page.headers.update(headers)
    return page


def _body(
    status: int,
    error: ErrorCode,
    message: str,
    details: list[ErrorDetail],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    payload = ErrorResponse(error=error, message=message, details=details)
    return JSONResponse(
        status_code=status, content=payload.model_dump(mode="json"), headers=headers
    )


# The codes of the HTTP errors Starlette and FastAPI raise (an unknown route, a method
# the path does not take, a body they cannot read); any other is told by its class.
_HTTP_ERRORS = {
    400: ErrorCode.bad_request,
    404: ErrorCode.not_found,
    405: ErrorCode.method_not_allowed,
}

# FastAPI's detail for a request body it could not parse at all.
UNPARSED_BODY = "There was an error parsing the body"


def _unparsed_because(cause: BaseException | None) -> str:
    """Why json.loads could not read a body, when it says no position: bytes that are not
    UTF-8 text, arrays or objects nested deeper than the parser goes, or an integer with
    more digits than Python converts (``sys.get_int_max_str_digits``)."""
    if isinstance(cause, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"a number has more than {sys.get_int_max_str_digits():,} digits"
    return "not UTF-8 text, nested too deeply, or a number too long"


def _read_as_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this content type as JSON: ``application/json``
    or ``application/<anything>+json``, parameters aside (its own rule). Any other type's
    body is not read, so a JSON body sent as ``application/x-ndjson`` (which holds
    "json") was told only that it is not an object, without the content type named."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _detail(request: Request, error: Any) -> ErrorDetail:
    """One validation error as the field at fault (dotted, without FastAPI's ``query``,
    ``path`` or ``body`` prefix) and the problem. A body that is not JSON names the
    body, with where the parser stopped (FastAPI puts that offset in the location); a
    body that is not an object because it was not sent as JSON says so."""
    location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")]
    problem = str(error["msg"])
    if error.get("type") == "json_invalid":
        where = f" at character {location[0]}" if location else ""
        reason = (error.get("ctx") or {}).get("error")
        return ErrorDetail(
            field="body", problem=f"not valid JSON{where}" + (f": {reason}" if reason else "")
        )
    if tuple(error.get("loc", ())) == ("body",):
        content_type = request.headers.get("content-type", "")
        if not _read_as_json(content_type):
            sent = f"as {content_type}" if content_type else "without a content type"
            problem += f" (the body was sent {sent}: send JSON with content-type: application/json)"
        return ErrorDetail(field="body", problem=problem)
    return ErrorDetail(field=".".join(location) or "request", problem=problem)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = [_detail(request, error) for error in exc.errors()]
        message = "; ".join(f"{d.field}: {d.problem}" for d in details)
        return _page(request, 422, message) or _body(
            422, ErrorCode.validation_error, message, details
        )

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return _page(request, 404, str(exc)) or _body(
            404, ErrorCode.not_found, str(exc), [ErrorDetail(field=exc.field, problem=exc.problem)]
        )

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, problem=exc.problem or str(exc))
        return _body(422, ErrorCode.validation_error, str(exc), [detail])

    @app.exception_handler(UnsupportedMediaType)
    async def _unsupported(_request: Request, exc: UnsupportedMediaType) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, problem=exc.problem)
        return _body(415, ErrorCode.unsupported_media_type, str(exc), [detail])

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady) -> Response:
        message = str(exc) or "no model loaded yet"
        return _page(request, 503, message) or _body(503, ErrorCode.not_ready, message, [])

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> Response:
        detail = ErrorDetail(field=exc.field, problem=exc.problem)
        # The challenge tells a client which scheme to answer with (RFC 9110, 11.6.1).
        headers = {"WWW-Authenticate": "Bearer"}
        return _page(request, 401, str(exc), headers) or _body(
            401, ErrorCode.unauthorized, str(exc), [detail], headers
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        detail = ErrorDetail(field=exc.field, problem=exc.problem)
        return _page(request, 403, str(exc)) or _body(403, ErrorCode.forbidden, str(exc), [detail])

    @app.exception_handler(VersionNotFound)
    async def _no_version(_request: Request, exc: VersionNotFound) -> JSONResponse:
        detail = ErrorDetail(field="version", problem=exc.problem)
        return _body(404, ErrorCode.not_found, str(exc), [detail])

    @app.exception_handler(ReloadRefused)
    async def _refused(_request: Request, exc: ReloadRefused) -> JSONResponse:
        detail = ErrorDetail(field="version", problem=exc.problem)
        return _body(409, ErrorCode.reload_refused, str(exc), [detail])

    @app.exception_handler(DeliveryRepeated)
    async def _repeated(_request: Request, exc: DeliveryRepeated) -> JSONResponse:
        detail = ErrorDetail(
            field="X-Request-ID", problem=f"already names a recorded delivery: {exc.request_id}"
        )
        return _body(409, ErrorCode.delivery_repeated, str(exc), [detail])

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        # Never str(exc) to a client: it may name the server's host and port or the
        # store file's path (the store logs it).
        message = f"{exc.public}; try again shortly (the service's log says why)"
        return _body(503, ErrorCode.store_unavailable, message, [], {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == UNPARSED_BODY:
            # FastAPI's answer to a body json.loads raised on without a position (the
            # parser's error is the exception's cause).
            problem = f"not readable as JSON ({_unparsed_because(exc.__cause__)})"
            detail = ErrorDetail(field="body", problem=problem)
            return _body(400, ErrorCode.bad_request, f"body: {problem}", [detail])
        error = _HTTP_ERRORS.get(exc.status_code) or (
            ErrorCode.bad_request if exc.status_code < 500 else ErrorCode.internal_error
        )
        # The exception's headers too: a 405 names the methods the path takes (Allow),
        # every route's on that path, not only the first's that Starlette names.
        headers = dict(exc.headers) if exc.headers else None
        message, details = str(exc.detail), []
        if exc.status_code == 405:
            methods = allowed_methods(request.scope, request.app.routes)
            if methods:
                allowed = ", ".join(methods)
                headers = {**(headers or {}), "Allow": allowed}
                message = f"method {request.method} not allowed here; this path takes {allowed}"
                problem = f"{request.method} is not one of {allowed}"
                details = [ErrorDetail(field="method", problem=problem)]
        return _page(request, exc.status_code, message, headers) or _body(
            exc.status_code, error, message, details, headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error: %s", type(exc).__name__)
        message = "internal error; see the service log"
        return _page(request, 500, message) or _body(500, ErrorCode.internal_error, message, [])
