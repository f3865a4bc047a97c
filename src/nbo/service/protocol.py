"""uvicorn's httptools protocol with bounds on a request's head: its size, and the time
a client may take to send it.

uvicorn bounds neither (httptools has no limit, and gunicorn's ``limit_request_*``
settings are not passed to uvicorn workers; h11's ``h11_max_incomplete_event_size`` applies
to h11 only, a pure-Python parser that would slow every call): a 200 MiB header was read
whole (130 s, the worker's memory 246 -> 371 MB) and answered 200, a 100 MiB one slowed
``/health/live`` to seconds, and a connection that sent header lines one a second, or
nothing at all, was held for ever (1,500 of them all held past two minutes).

Here a head (request line and headers) over ``MAX_HEAD_BYTES`` is answered 431 and the
connection closed, having held at most that plus one read; and a head not complete
``HEAD_TIMEOUT_S`` after the connection opened (or after its first byte, for a later
request on a kept-alive connection) is answered 408 and closed (closed silently when no
byte of it came). The cost per call is a counter on each read while a head is being
read and one timer per request. What this cannot bound (many connections from many
addresses, each within the limits) is for a proxy in front: docs/service.md.

At a graceful shutdown (SIGTERM), uvicorn closes every kept-alive connection that is
idle at that instant. A client (or a balancer) reuses such a connection the moment its
last answer arrived, so a request was often already on its way, unread: the kernel
answers a close with unread data by a reset, and the client saw ECONNRESET for a request
it cannot know was not served (27 of 16 looping keep-alive clients' connections reset
at one SIGTERM, measured). Here an idle connection stays open ``SHUTDOWN_IDLE_S`` more:
a request that comes meanwhile is served and answered with ``Connection: close``, and a
connection still idle then is closed cleanly (a FIN).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from nbo.service.schemas import ErrorCode, ErrorResponse

log = logging.getLogger(__name__)

# The largest request line and headers taken (bytes): an API call's are well under 8 KiB
# (nginx's default buffers hold 4 x 8 KiB); a dashboard's cookies fit too.
MAX_HEAD_BYTES = 64 * 1024
# How long a client may take to send a request's head (seconds; nginx's
# client_header_timeout is 60 s by default, a client on any network needs well under 1).
HEAD_TIMEOUT_S = 10.0
# How long a connection idle at a graceful shutdown stays open for a request already on
# its way (a round trip on any network the service runs behind is well under it).
SHUTDOWN_IDLE_S = 0.5


class BoundedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with ``MAX_HEAD_BYTES`` and ``HEAD_TIMEOUT_S``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # While ``_reading_head``: the bytes of the head so far (from the first read after
        # the last request's end: a read holding that end and a next head's start counts
        # nothing of it, which only errs towards taking a head).
        self._reading_head = True
        self._head_bytes = 0
        # Whether a byte of the head came (``on_message_begin``).
        self._head_begun = False
        self._head_timer: asyncio.TimerHandle | None = None
        # Whether the server is shutting down (``shutdown``): a request still taken is
        # answered with Connection: close.
        self._shutting_down = False
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after the parser read all of it: every byte counted is the
        # head's (a head that ended in this read set ``_reading_head`` False).
        if (
            self._reading_head
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            log.warning(
                "a request whose line and headers exceed %d bytes refused (431)", MAX_HEAD_BYTES
            )
            self._refuse(
                431,
                ErrorCode.request_head_too_large,
                f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._stop_head_timer()
        super().on_headers_complete()
        if self._shutting_down and self.cycle is not None:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """A graceful shutdown: an answer going out closes the connection after it (as
        uvicorn's); an idle connection is closed ``SHUTDOWN_IDLE_S`` later, not at
        once, unless a request came meanwhile (answered, then closed)."""
        self._shutting_down = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(SHUTDOWN_IDLE_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.transport.is_closing():
            return
        if (self.cycle is None or self.cycle.response_complete) and not self._head_begun:
            self.transport.close()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0
        self._head_begun = False

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if not self._head_begun:
            # Nothing of a request came (a connection opened and left idle).
            self.transport.close()
            return
        log.warning("a request whose head took over %.0f s refused (408)", HEAD_TIMEOUT_S)
        self._refuse(
            408,
            ErrorCode.request_timeout,
            f"the request line and headers were not received within {HEAD_TIMEOUT_S:.0f} s",
        )

    def _refuse(self, status: int, error: ErrorCode, message: str) -> None:
        """Answer ``status`` with ``message`` and close, unless an answer to an earlier
        request on the connection is still going out (then just close). The body is the
        API's error JSON, as every other refusal's (a client parsing every error answer
        as JSON met text here)."""
        self._stop_head_timer()
        if self.cycle is None or self.cycle.response_complete:
            body = ErrorResponse(error=error, message=message).model_dump_json().encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(
                b"content-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(b"".join(head) + body)
        self.transport.close()
