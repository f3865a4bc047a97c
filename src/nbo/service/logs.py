"""Service logs: one JSON object per line, each carrying the id of the request it belongs to.

A log shipper reads JSON without a parsing rule per message, and the request id joins a
line to the access line, the client's own logs (``X-Request-ID``) and the recorded
impressions. Every line names the process that wrote it (``pid``): ``nbo serve`` runs
a master and several workers, and their lines interleave. The request id lives in a
context variable set by the request middleware, so every line logged while a request is
served carries it, in route code, in the thread pool (anyio copies the context) and in
the error handler alike.

What goes in a line is what the code logs: the rule that logs never hold request bodies,
keys or customer ids (a customer is named by a keyed pseudonym, ``nbo.core.pseudonyms``) is
kept where messages are written. What a line may carry is capped here, whatever the
code logs: a field's text at ``FIELD_CHARS``, the message at ``MESSAGE_CHARS``, a
traceback at ``TRACE_CHARS`` and the whole line at ``LINE_CHARS``, so no request (a
100 kB id, a huge header) can make a line as large as itself.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# What one line may carry (characters). A cut text ends with how much was cut.
FIELD_CHARS = 1_000
MESSAGE_CHARS = 2_000
TRACE_CHARS = 16_000
LINE_CHARS = 32_000
# How a formatted traceback begins (``traceback.format_exc``).
TRACEBACK_HEAD = "Traceback (most recent call last):"
# The field of a line that names a customer, by their pseudonym (never by the id).
CUSTOMER_FIELD = "customer"
# The field of the access line that names the API key a call was allowed with (its
# public id, never the secret).
KEY_FIELD = "key"

# The request being served in this context; None outside a request (start-up, reloads).
REQUEST_ID: ContextVar[str | None] = ContextVar("nbo_request_id", default=None)

# A LogRecord's own attributes: everything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI copy of the message


def _request_id_of(record: logging.LogRecord) -> str | None:
    explicit = record.__dict__.get("request_id")
    return _capped(explicit, FIELD_CHARS) if isinstance(explicit, str) else REQUEST_ID.get()


def _capped(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def _capped_middle(text: str, limit: int) -> str:
    """``text``, or its first and last ``limit // 2`` characters around how many were
    left out: a traceback's last line names the error, its first where it began."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...[{len(text) - 2 * half} characters]...{text[-half:]}"


def _last_line(text: str) -> str:
    """A formatted traceback's last line that is not blank: the error it ends with."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return text


def _field(value: Any) -> Any:
    """A field's value as it goes in a line: numbers, booleans and null as they are,
    anything else as capped text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return _capped(value if isinstance(value, str) else str(value), FIELD_CHARS)


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time (UTC, ISO 8601), level, pid, logger, message,
    request_id when inside a request, the record's ``extra`` fields, and a traceback as
    one string field (a multi-line traceback would otherwise break the one-line rule)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        trace = None
        if not record.exc_info and message.startswith(TRACEBACK_HEAD):
            # uvicorn logs a worker's failed start-up (the lifespan's) as Starlette's
            # formatted traceback in the message, with no exc_info: a shipper looks for
            # a traceback in ``exception`` and reads ``message`` as one line. The
            # message is its last line (the error), the traceback goes where others do.
            trace = message
            message = _last_line(message)
        head: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "pid": record.process,
            "logger": _field(record.name),
            # Its head and tail: a long message's last words may be what says why.
            "message": _capped_middle(message, MESSAGE_CHARS),
        }
        request_id = _request_id_of(record)
        if request_id is not None:
            head["request_id"] = request_id
        line = dict(head)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[_capped(key, FIELD_CHARS)] = _field(value)
        if record.exc_info:
            line["exception"] = _capped_middle(self.formatException(record.exc_info), TRACE_CHARS)
        elif trace is not None:
            line["exception"] = _capped_middle(trace, TRACE_CHARS)
        if record.stack_info:
            line["stack"] = _capped_middle(self.formatStack(record.stack_info), TRACE_CHARS)
        text = json.dumps(line, default=str, ensure_ascii=False)
        if len(text) <= LINE_CHARS:
            return text
        # Too many fields: the line keeps what identifies it, and says what it left out.
        dropped = [key for key in line if key not in head]
        head["truncated"] = _capped(", ".join(dropped), FIELD_CHARS)
        return json.dumps(head, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human format (``NBO_LOG_FORMAT=text``): time, pid, level, logger, [request
    id], message, and ``key=`` the API key's id and ``customer=`` the pseudonym when the
    record carries them (the access line's fields: without them, ``nbo keys pseudonym
    ID`` found no request of a customer in text logs, nor an erasure its key)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = _request_id_of(record)
        tag = f" [{request_id}]" if request_id is not None else ""
        message = _capped_middle(record.message, MESSAGE_CHARS)
        for field in (KEY_FIELD, CUSTOMER_FIELD):
            value = getattr(record, field, None)
            if isinstance(value, str):
                message += f" {field}={_capped(value, FIELD_CHARS)}"
        return f"{record.asctime} {record.process} {record.levelname} {record.name}{tag} {message}"

    def format(self, record: logging.LogRecord) -> str:
        return _capped(super().format(record), LINE_CHARS)


def configure_logging(level: str, log_format: str) -> None:
    """Send every logger (uvicorn's too, which ``nbo serve`` leaves unconfigured) to
    stderr in ``log_format`` ("json" or "text").

    ``basicConfig`` semantics: nothing changes when the root logger already has handlers
    (an embedding application's, or pytest's when a test runs ``nbo serve`` in-process).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
