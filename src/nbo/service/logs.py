"""Service logs: one JSON object per line, each carrying the id of the request it belongs to.

A log shipper reads JSON without a parsing rule per message, and the request id joins a
line to the access line, the client's own logs (``X-Request-ID``) and the recorded
impressions. The request id lives in a context variable set by the request middleware,
so every line logged while a request is served carries it, in route code, in the thread
pool (anyio copies the context) and in the error handler alike.

What goes in a line is what the code logs: the rule that logs never hold request bodies,
keys or personal data beyond customer ids is kept where messages are written.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The request being served in this context; None outside a request (start-up, reloads).
REQUEST_ID: ContextVar[str | None] = ContextVar("nbo_request_id", default=None)

# A LogRecord's own attributes: everything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI copy of the message


def _request_id_of(record: logging.LogRecord) -> str | None:
    explicit = record.__dict__.get("request_id")
    return explicit if isinstance(explicit, str) else REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time (UTC, ISO 8601), level, logger, message,
    request_id when inside a request, the record's ``extra`` fields, and a traceback as
    one string field (a multi-line traceback would otherwise break the one-line rule)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id_of(record)
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human format (``NBO_LOG_FORMAT=text``): time, level, logger, [request id],
    message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = _request_id_of(record)
        tag = f" [{request_id}]" if request_id is not None else ""
        return f"{record.asctime} {record.levelname} {record.name}{tag} {record.message}"


def configure_logging(level: str, log_format: str) -> None:
    """Send every logger (uvicorn's too, which ``nbo serve`` leaves unconfigured) to
    stderr in ``log_format`` ("json" or "text").

    ``basicConfig`` semantics: nothing changes when the root logger already has handlers
    (an embedding application's, or pytest's when a test runs ``nbo serve`` in-process).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
