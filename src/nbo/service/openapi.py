"""The error answers in the API's document (``/openapi.json``), as the service sends them.

FastAPI declares a route's 422 as its own ``HTTPValidationError`` (``{"detail": [...]}``),
but every error nbo answers is ``ErrorResponse`` (``{"error", "message", "details":
[{"field", "problem"}]}``, ``nbo.service.errors``), and the statuses a route answers
whatever its handler (an unknown query parameter, a body over the limit, no model
loaded, the store away) were not declared at all: a client generated from the document,
or one that checks answers against it, met answers it did not describe. What is added,
per API operation (the probes' excepted where they take anything):

- ``422`` as ``ErrorResponse`` (any query parameter it does not take is one; the events
  route's "every event rejected" answer stays beside it);
- ``400``, ``413`` and ``415`` where the operation takes a body (not readable as JSON;
  over ``NBO_MAX_BODY_BYTES``; sent with a ``Content-Encoding``);
- ``503`` where it needs the model (``not_ready``) or the store (``store_unavailable``,
  with ``Retry-After``), known from its dependencies;
- the ``X-Request-ID`` header, a request parameter and a header of every answer.

A ``405`` (a method the path does not take) is not declared: it belongs to no operation
of the path, and its ``Allow`` header names the ones there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from nbo.service import deps
from nbo.service.middleware import REQUEST_ID_MAX_LENGTH, REQUEST_ID_PATTERN
from nbo.service.query import QueryCheckedRoute
from nbo.service.schemas import ErrorResponse

COMPONENTS = "#/components/schemas/"
ERROR_REF = {"$ref": f"{COMPONENTS}ErrorResponse"}
# What nbo takes as a request id, as the middleware checks it: a generated client (or
# one checking its requests against the document) knows an id nbo would replace, or
# refuse with record=true, before sending it.
REQUEST_ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": REQUEST_ID_MAX_LENGTH,
    "pattern": f"^{REQUEST_ID_PATTERN}$",
}
REQUEST_ID_HEADER = {
    "description": "the request's id: the client's X-Request-ID when it is 1 to 128 "
    "characters of A-Z a-z 0-9 . _ -, else a new one (32 hex digits)",
    "schema": REQUEST_ID_SCHEMA,
}
REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "an id for this request (1 to 128 characters of A-Z a-z 0-9 . _ -; "
    "another value is replaced by a new id): answered in X-Request-ID, written on the "
    "request's log lines; with record=true it names the delivery, and one already "
    "recorded for the customer is refused (409), another value too (422: a retry under "
    "a new id would be recorded again)",
    "schema": REQUEST_ID_SCHEMA,
}


def operation_id(route: APIRoute) -> str:
    """A route's ``operationId``: its handler's name (``get_offers``, ``post_events``).

    FastAPI's default appends the path and the method (``get_offers_v1_customers__
    customer_id__offers_get``), and client generators name their functions and modules
    after it (openapi-python-client wrote ``get_offers_v1_customers_customer_id_offers_
    get.sync(...)``). The handlers' names are unique across the API's routes (FastAPI
    warns of a duplicate; a test holds it)."""
    return route.name


# Dependencies that answer 503: without a model, or with the store away.
_NEEDS_MODEL: frozenset[Callable[..., Any]] = frozenset(
    {deps.get_model, deps.get_serving_models, deps.get_deciding}
)
_NEEDS_STORE: frozenset[Callable[..., Any]] = frozenset(
    {deps.get_store, deps.get_pseudonyms, deps.get_deciding}
)


def document_errors(document: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Declare in ``document`` (the app's OpenAPI document, changed in place) the error
    answers of ``routes``' operations (see the module docstring)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    defined = ErrorResponse.model_json_schema(ref_template=COMPONENTS + "{model}")
    schemas.update(defined.pop("$defs", {}))
    schemas["ErrorResponse"] = defined
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = document["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                _document_operation(operation, route)
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in _references(document):
            schemas.pop(unused, None)


def require_answer_fields(document: dict[str, Any]) -> None:
    """Mark every property of a schema only answers use as required (``document``
    changed in place).

    pydantic leaves a field with a default out of ``required``, also in the schema of
    an answer, where the field is always sent (a model serialises every field, null
    included): a generated client typed ``recorded``, ``removed`` or ``churn_risk`` of
    an offers answer as maybe absent (openapi-python-client's ``Unset``), and a check
    against the document could not tell an answer that dropped one. A schema a request
    uses too (a body, a parameter, or one they refer to) keeps pydantic's ``required``:
    a client may leave such a field out."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    sent: list[Any] = []
    answered: list[Any] = []
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                sent.append([operation.get("parameters"), operation.get("requestBody")])
                answered.append(operation.get("responses"))
    for name in _closure(answered, schemas) - _closure(sent, schemas):
        schema = schemas[name]
        if "properties" in schema:
            schema["required"] = list(schema["properties"])


def _closure(roots: Any, schemas: dict[str, Any]) -> set[str]:
    """The schemas ``roots`` refer to, and those they refer to, at any depth."""
    found: set[str] = set()
    todo = list(_references(roots))
    while todo:
        name = todo.pop()
        if name not in found and name in schemas:
            found.add(name)
            todo.extend(_references(schemas[name]))
    return found


def _document_operation(operation: dict[str, Any], route: APIRoute) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if isinstance(route, QueryCheckedRoute) and not route.accepts_any_query:
        declared: dict[str, Any] = responses.get("422") or {}
        schema = _json_schema(declared)
        if schema is None or schema.get("$ref", "").endswith("/HTTPValidationError"):
            responses["422"] = _error("a parameter, header or body is refused (details)")
        elif schema != ERROR_REF:
            declared["content"]["application/json"]["schema"] = {"anyOf": [schema, ERROR_REF]}
            declared["description"] += "; or a body refused whole (ErrorResponse)"
    if "requestBody" in operation:
        responses.setdefault("400", _error("the body is not readable as JSON"))
        responses.setdefault("413", _error("the body is over NBO_MAX_BODY_BYTES"))
        responses.setdefault("415", _error("the body is compressed (Content-Encoding)"))
    calls = set(_calls(route.dependant))
    needs_model, needs_store = bool(calls & _NEEDS_MODEL), bool(calls & _NEEDS_STORE)
    if (needs_model or needs_store) and "503" not in responses:
        why = [
            *(["not_ready: no model loaded"] if needs_model else []),
            *(
                ["store_unavailable: the store's server is away (Retry-After)"]
                if needs_store
                else []
            ),
        ]
        responses["503"] = _error("; ".join(why))
        if needs_store:
            responses["503"]["headers"]["Retry-After"] = {
                "description": "seconds to wait, with store_unavailable",
                "schema": {"type": "string"},
            }
    for response in responses.values():
        response.setdefault("headers", {}).setdefault("X-Request-ID", REQUEST_ID_HEADER)
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "x-request-id" for p in parameters):
        parameters.append(REQUEST_ID_PARAMETER)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": dict(ERROR_REF)}},
        "headers": {},
    }


def _json_schema(response: dict[str, Any]) -> dict[str, Any] | None:
    schema: dict[str, Any] | None = (
        response.get("content", {}).get("application/json", {}).get("schema")
    )
    return schema


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _references(value: Any) -> Iterator[str]:
    """Every ``$ref`` in ``value``, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item.rsplit("/", 1)[-1]
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)
