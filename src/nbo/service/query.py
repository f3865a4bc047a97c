"""Unknown query parameters refused (422), naming them and the route's own.

FastAPI ignores a query parameter a route does not declare: ``?chanel=app`` answered
for email, and ``?rcord=true`` would answer 200 and record nothing, the typo unseen.
Each API route that declares query parameters gets its set of names once, at start,
from its dependant (its own parameters and its dependencies'), and a thin layer in
front of its handler checks the request's parameter names against it: nothing at all
for a request without a query string, a split and a set lookup per parameter
otherwise, no dependency for FastAPI to solve. The route's declared parameters, its
OpenAPI document and HEAD (served as GET) are untouched.

A parameter given twice is refused too, naming it (every parameter of the API takes
one value: ``?record=false&record=true`` recorded a delivery, the last value winning
unseen, and ``?k=5&k=50`` answered 50 offers).

A boolean parameter takes ``true`` or ``false``, and an integer one decimal digits, as
a JSON body's do: FastAPI (pydantic's lax mode) read ``?record=yes``, ``1``, ``on`` or
``True`` as true, so a typo or another language's spelling recorded a delivery, and
``?k=1.0``, ``k=%203`` or ``k=1_000`` as numbers; any other value is refused naming the
parameter (422). The names are found once, from the route's declared types.

A route that declares no query parameter refuses any (``DELETE /v1/customers/{id}
?dry_run=true`` erased the customer when it was let through). The probes and the
scrape (``/health/live``, ``/health/ready``, ``/metrics``: ``ProbeRoute``) take any:
monitors add cache-busting parameters to them, and they have no option a parameter
could be mistaken for.

A route that takes a body reads it here first when it is JSON (as FastAPI would, then
hands FastAPI the value): an object that holds a key twice is refused naming the key
(422; Python's reader keeps the last, so ``"customer_id"`` written twice stored the
event for the second), as the catalogue and experiment files are read; and a body sent
with a ``Content-Encoding`` (``gzip``) is refused with 415 naming the header, not read
as text that is no JSON (400 "not readable as JSON").

The check runs when the route is matched, before the route's dependencies (access
control among them): an unauthenticated request with an unknown parameter is told so
before it is asked for a key. The names it lists are those of the API's document,
which is open (``/openapi.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Iterator
from types import UnionType
from typing import Any, Union, get_args, get_origin
from urllib.parse import unquote_plus

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from nbo.service.errors import UnsupportedMediaType, refused


class QueryCheckedRoute(APIRoute):
    """An API route that refuses a query parameter it does not declare (422): every
    router of the API is built with ``route_class=QueryCheckedRoute``."""

    accepts_any_query = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        check = None
        if not self.accepts_any_query:
            parameters = dict(_query_parameters(self.dependant))
            kinds = {
                name: kind
                for name, annotation in parameters.items()
                if (kind := _strict_kind(annotation)) is not None
            }
            check = _checker(tuple(parameters), kinds)
        takes_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            query: bytes = request.scope["query_string"]
            if query and check is not None:
                check(query)
            if takes_body:
                await _read_json_body(request)
            return await handler(request)

        return checked


class ProbeRoute(QueryCheckedRoute):
    """A probe's or scrape's route (``/health/*``, ``/metrics``): any query parameter
    is ignored, as monitors add cache busters."""

    accepts_any_query = True


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: the object, unless it holds a key twice."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


async def _read_json_body(request: Request) -> None:
    """Refuse an encoded body (415) or a JSON object holding a key twice (422); else the
    parsed body is left where FastAPI reads it (``Request.json``'s cache), read once."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            "Content-Encoding", f"{encoding!r} is not accepted: send the body uncompressed"
        )
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    if not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        return
    body = await request.body()
    if not body:
        return
    try:
        parsed = json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        problem = f"duplicate key {exc.args[0]!r} in an object: write each key once"
        raise refused(("body",), problem) from None
    except (ValueError, RecursionError):
        # Not JSON, or nested too deeply: FastAPI reads it again and answers as before.
        return
    request._json = parsed  # Starlette's cache of Request.json()


def _query_parameters(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    """The query parameters of a route, its own and its dependencies', by the names a
    request uses (aliases), each with its type."""
    for field in dependant.query_params:
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            # A model of query parameters: its fields are the parameters.
            for name, info in model.model_fields.items():
                yield info.alias or name, info.annotation
        else:
            yield field.alias, model
    for sub in dependant.dependencies:
        yield from _query_parameters(sub)


def _strict_kind(annotation: Any) -> type | None:
    """``bool`` or ``int`` when a parameter takes one (``| None`` too), else None."""
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    for kind in (bool, int):
        if annotation is kind or kind in kinds:
            return kind
    return None


# What a boolean or integer parameter takes, as a JSON body's boolean or integer is
# written: pydantic's lax mode read ``yes``, ``1`` or ``on`` as true, and ``1.0``,
# `` 3`` or ``1_000`` as integers.
_BOOLEANS = frozenset({"true", "false"})
_INTEGER = re.compile(r"-?[0-9]+")
_PROBLEMS = {
    bool: "must be true or false (lowercase, as in JSON)",
    int: "must be a whole number in plain decimal digits, as in JSON",
}


_RAW_BOOLEANS = frozenset({b"true", b"false"})
_RAW_INTEGER = re.compile(rb"-?[0-9]+")


def _strict_value(kind: type, raw: bytes) -> bool:
    """Whether ``raw`` (a query value as sent) is written as ``kind`` is in JSON: the
    bytes as they are first (no decoding for ``k=10``), then as Starlette reads them
    (``%31%30`` is 10 too)."""
    if kind is bool:
        if raw in _RAW_BOOLEANS:
            return True
        return unquote_plus(raw.decode("latin-1")) in _BOOLEANS
    if _RAW_INTEGER.fullmatch(raw):
        return True
    return _INTEGER.fullmatch(unquote_plus(raw.decode("latin-1"))) is not None


def _checker(names: tuple[str, ...], kinds: dict[str, type]) -> Callable[[bytes], None]:
    """The check of a route's query string: every name one of ``names``, once, and the
    value of each in ``kinds`` as that type is written in JSON."""
    known = frozenset(names)
    raw = frozenset(name.encode("ascii") for name in names if name.isascii())
    listed = f"its parameters: {', '.join(names)}" if names else "it takes none"

    def check(query: bytes) -> None:
        seen: set[str] = set()
        for part in query.split(b"&"):
            key, _, value = part.partition(b"=")
            if not key:
                continue
            if key in raw:
                name = key.decode("ascii")
            else:
                # As Starlette reads it: percent-escapes and '+' decoded.
                name = unquote_plus(key.decode("latin-1"))
                if name not in known:
                    raise refused(("query", name), f"not a parameter of this route ({listed})")
            if name in seen:
                raise refused(("query", name), "given more than once: send it once")
            seen.add(name)
            kind = kinds.get(name)
            if kind is not None and not _strict_value(kind, value):
                raise refused(("query", name), _PROBLEMS[kind])

    return check
