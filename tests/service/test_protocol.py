"""Bounds on a request's head (``nbo.service.protocol``), through a real uvicorn server on
a socket: a head over the size limit answered 431, a head not sent in time 408, an idle
connection closed, and everything within the bounds served as before."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn import Config, Server

from nbo.service import protocol
from nbo.service.protocol import MAX_HEAD_BYTES, BoundedHttpProtocol
from nbo.service.server import NboWorker


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the size of the body it read; ``/slow`` first waits half a second."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    body = str(size).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = Config(app, http=BoundedHttpProtocol, lifespan="off", log_level="warning")
    server = Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])))
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.01)
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join()
        listener.close()


def exchange(port: int, *parts: bytes) -> bytes:
    """Send ``parts`` on a new connection; what the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(30)
        try:
            for part in parts:
                client.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the client finished
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return received


def test_the_workers_serve_with_the_bounds() -> None:
    assert NboWorker.CONFIG_KWARGS["http"] is BoundedHttpProtocol


def test_a_head_over_the_limit_is_refused_without_being_read_whole(port: int) -> None:
    """A 100 MiB header was read whole, slowly, and answered; now the answer is 431 once
    the head passes the limit, and the connection is closed."""
    head = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: "
    chunk = b"b" * (1024 * 1024)
    answer = exchange(port, head, *[chunk] * 8, b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {
        "error": "request_head_too_large",
        "message": f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
        "details": [],
    }


def test_heads_and_bodies_within_the_limits_are_served(port: int) -> None:
    big_header = b"X-Big: " + b"b" * (MAX_HEAD_BYTES - 100) + b"\r\n"
    answer = exchange(
        port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + big_header + b"Connection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    body = b"b" * (4 * MAX_HEAD_BYTES)  # a body does not count, however it arrives
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    answer = exchange(port, head % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n%d" % len(body))


def test_a_head_sent_too_slowly_is_answered_408(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client sending header lines one a second was held for ever."""
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.2)
    answer = exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n")  # never ends its head
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert exchange(port) == b""  # nothing sent at all: closed without an answer


def test_a_kept_alive_connection_and_a_slow_answer_are_not_cut(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's clock runs only while a head is read: not while the app works, and
    again for each request of a kept-alive connection."""
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.2)
    first = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(30)
        client.sendall(first)
        # The answer's head and body are two writes: read until its one-byte body came.
        answer = b""
        while not answer.endswith(b"\r\n\r\n0"):
            chunk = client.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        client.sendall(last)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
