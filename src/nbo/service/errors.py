"""Every error becomes a JSON body here, in one place: never a stack trace, never HTML."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbo.service.reload import ReloadRefused, VersionNotFound
from nbo.service.schemas import ErrorDetail, ErrorResponse
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


def _body(
    status: int,
    error: str,
    message: str,
    details: list[ErrorDetail],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    payload = ErrorResponse(error=error, message=message, details=details)
    return JSONResponse(status_code=status, content=payload.model_dump(), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for error in exc.errors():
            location = [
                str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")
            ]
            details.append(ErrorDetail(field=".".join(location) or "request", problem=error["msg"]))
        message = "; ".join(f"{d.field}: {d.problem}" for d in details)
        return _body(422, "validation_error", message, details)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return _body(
            404, "not_found", str(exc), [ErrorDetail(field=exc.field, problem=exc.problem)]
        )

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, problem=exc.problem or str(exc))
        return _body(422, "validation_error", str(exc), [detail])

    @app.exception_handler(NotReady)
    async def _not_ready(_request: Request, exc: NotReady) -> JSONResponse:
        return _body(503, "not_ready", str(exc) or "no model loaded yet", [])

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, problem=exc.problem)
        # The challenge tells a client which scheme to answer with (RFC 9110, 11.6.1).
        headers = {"WWW-Authenticate": "Bearer"}
        return _body(401, "unauthorized", str(exc), [detail], headers)

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, problem=exc.problem)
        return _body(403, "forbidden", str(exc), [detail])

    @app.exception_handler(VersionNotFound)
    async def _no_version(_request: Request, exc: VersionNotFound) -> JSONResponse:
        detail = ErrorDetail(field="version", problem=exc.problem)
        return _body(404, "not_found", str(exc), [detail])

    @app.exception_handler(ReloadRefused)
    async def _refused(_request: Request, exc: ReloadRefused) -> JSONResponse:
        detail = ErrorDetail(field="version", problem=exc.problem)
        return _body(409, "reload_refused", str(exc), [detail])

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        return _body(503, "store_unavailable", str(exc), [], {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = "not_found" if exc.status_code == 404 else "http_error"
        return _body(exc.status_code, error, str(exc.detail), [])

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", type(exc).__name__)
        return _body(500, "internal_error", "internal error; see the service log", [])
