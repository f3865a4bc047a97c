"""The service's log lines: JSON (or text) in one line with the request id and capped
fields, uvicorn's own lines JSON too under ``nbo serve``, and customer ids as keyed
pseudonyms, stable across restarts and computable by an operator with ``nbo keys
pseudonym``."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from support import CLOCK, ENTRIES, KEYS, bearer

from bench.servers import running_server
from nbo.cli import main
from nbo.core.apikeys import Role
from nbo.core.pseudonyms import Pseudonyms
from nbo.service.app import create_app
from nbo.service.logs import (
    FIELD_CHARS,
    LINE_CHARS,
    MESSAGE_CHARS,
    REQUEST_ID,
    TRACE_CHARS,
    JsonFormatter,
    TextFormatter,
)
from nbo.settings import Settings

OFFERS = "/v1/customers/{customer_id}/offers"


def test_json_formatter_renders_extras_and_tracebacks_in_one_line() -> None:
    logger = logging.getLogger("nbo.test")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logger.makeRecord(
            "nbo.test", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    record.__dict__["rows"] = 3
    token = REQUEST_ID.set("ctx-1")
    try:
        line = JsonFormatter().format(record)
        text = TextFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed x" and parsed["rows"] == 3
    assert parsed["request_id"] == "ctx-1" and parsed["logger"] == "nbo.test"
    assert "ValueError: bad\nthing" in parsed["exception"]
    assert text.splitlines()[0].endswith("ERROR nbo.test [ctx-1] failed x")
    outside = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "start"})))
    assert "request_id" not in outside


def test_what_a_log_line_may_carry_is_capped() -> None:
    """Each field, the message, a traceback and the whole line have a ceiling, in both
    formats, whatever the code logs."""
    record = logging.makeLogRecord(
        {"name": "nbo.test", "msg": "m" * 50_000, "levelname": "INFO", "note": "n" * 50_000}
    )
    line = json.loads(JsonFormatter().format(record))
    assert len(line["message"]) < MESSAGE_CHARS + 50 and "characters]" in line["message"]
    assert len(line["note"]) < FIELD_CHARS + 50 and "49000 more characters" in line["note"]
    assert len(TextFormatter().format(record)) < MESSAGE_CHARS + 200
    crowded = logging.makeLogRecord(
        {"name": "nbo.test", "msg": "many", **{f"field{n}": "v" * 5_000 for n in range(100)}}
    )
    text = JsonFormatter().format(crowded)
    assert len(text) <= LINE_CHARS
    kept = json.loads(text)
    assert kept["message"] == "many" and "field0" in kept["truncated"]
    assert "field0" not in kept


def test_serve_writes_json_lines_only(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nbo serve`` for real: uvicorn's own lines are JSON too, and uvicorn writes no
    access line of its own (the middleware's is the one)."""
    monkeypatch.delenv("NBO_LOG_FORMAT", raising=False)  # serve's default format
    settings = {"NBO_CLOCK": CLOCK, "NBO_LOG_LEVEL": "info"}
    log = tmp_path / "server.log"
    with running_server(models_dir, tmp_path / "store.db", log, settings) as server:
        answer = httpx.get(
            f"{server.base}/v1/customers/a00/offers?k=2", headers={"X-Request-ID": "served-1"}
        )
        assert answer.headers["x-request-id"] == "served-1"
        assert "nbo_http_requests_total" in httpx.get(f"{server.base}/metrics").text
        server.terminate()
    err = log.read_bytes()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers and "uvicorn.access" not in loggers
    served = [line for line in lines if line.get("request_id") == "served-1"]
    assert [(line["logger"], line["route"]) for line in served] == [("nbo.access", OFFERS)]
    assert "?k=2" not in err.decode()


KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def access_logs() -> Iterator[io.StringIO]:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nbo.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def logged_customers(sink: io.StringIO) -> list[str]:
    return [json.loads(line)["customer"] for line in sink.getvalue().splitlines()]


def call(models_dir: Path, customer: str, **settings: object) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK, **settings))) as c:
        assert c.get(f"/v1/customers/{customer}/offers").status_code == 200


def test_restarts_keep_the_pseudonym_and_the_cli_computes_it(
    models_dir: Path,
    isolated_store: Path,
    access_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    call(models_dir, "shopper-a")
    call(models_dir, "shopper-a")  # a restart on the same store
    call(models_dir, "shopper-b")
    first, again, other = logged_customers(access_logs)
    assert first == again != other
    assert "shopper-a" not in access_logs.getvalue()

    # The operator's command reads the same key from the store the service uses.
    assert main(["keys", "pseudonym", "shopper-a", "shopper-b"]) == 0
    assert capsys.readouterr().out.split() == [first, other]
    monkeypatch.setattr(sys, "stdin", io.StringIO("shopper-a\nshopper-b\n"))
    assert main(["keys", "pseudonym", "-"]) == 0
    assert capsys.readouterr().out.split() == [first, other]


def test_text_access_lines_name_the_customer_by_the_same_pseudonym(
    models_dir: Path, access_logs: io.StringIO
) -> None:
    """make demo logs text: its access lines carried no pseudonym, so privacy.md's
    ``nbo keys pseudonym ID`` matched none of a customer's requests."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(TextFormatter())
    logging.getLogger("nbo.access").addHandler(handler)
    try:
        with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK, log_key=KEY))) as c:
            assert c.get("/v1/customers/shopper-a/offers").status_code == 200
            assert c.get("/health/live").status_code == 200  # names no customer
    finally:
        logging.getLogger("nbo.access").removeHandler(handler)
    pseudonym = Pseudonyms(KEY.encode()).of("shopper-a")
    json_lines = [json.loads(line) for line in access_logs.getvalue().splitlines()]
    assert [line.get("customer") for line in json_lines] == [pseudonym, None]
    offers, live = text.getvalue().splitlines()
    assert " nbo.access [" in offers and f"] GET {OFFERS} 200 " in offers
    assert offers.endswith(f" ms customer={pseudonym}") and "shopper-a" not in offers
    assert "customer=" not in live


def test_access_lines_name_the_key_a_call_was_allowed_with(
    models_dir: Path, access_logs: io.StringIO
) -> None:
    """Which key erased, exported, reloaded or changed consent was in no log line: the
    key's public id was kept for request logs but never logged. Now every call a key was
    accepted for names it (never the secret); an open route or a refused call names
    none."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(TextFormatter())
    logging.getLogger("nbo.access").addHandler(handler)
    admin, admin_entry = KEYS[Role.admin]
    read, read_entry = KEYS[Role.read]
    settings = Settings(models_dir=models_dir, clock=CLOCK, log_key=KEY, api_keys=ENTRIES)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.delete("/v1/customers/a00", headers=bearer(admin)).status_code == 200
            assert client.get("/v1/customers/a01/data", headers=bearer(admin)).status_code == 200
            assert client.get("/v1/model", headers=bearer(read)).status_code == 200
            assert client.delete("/v1/customers/a02", headers=bearer(read)).status_code == 403
            assert client.get("/health/live").status_code == 200
    finally:
        logging.getLogger("nbo.access").removeHandler(handler)
    lines = [json.loads(line) for line in access_logs.getvalue().splitlines()]
    assert [(line["status"], line.get("key")) for line in lines] == [
        (200, admin_entry.id),
        (200, admin_entry.id),
        (200, read_entry.id),
        (403, None),
        (200, None),
    ]
    texts = text.getvalue().splitlines()
    assert f" key={admin_entry.id} customer=" in texts[0]
    assert texts[2].endswith(f" ms key={read_entry.id}") and "key=" not in texts[4]
    for secret in (admin, read):
        assert secret not in access_logs.getvalue() and secret not in text.getvalue()


def test_nbo_log_key_sets_the_key(
    models_dir: Path,
    access_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    call(models_dir, "a00", log_key=KEY)
    call(models_dir, "a00", log_key=KEY, store_url=f"sqlite:///{tmp_path / 'replica.db'}")
    call(models_dir, "a00")  # the store's own key instead
    with_key, replica, stored = logged_customers(access_logs)
    assert with_key == replica == Pseudonyms(KEY.encode()).of("a00") != stored
    monkeypatch.setenv("NBO_LOG_KEY", KEY)
    assert main(["keys", "pseudonym", "a00"]) == 0
    assert capsys.readouterr().out.strip() == with_key


def test_a_long_traceback_keeps_the_error_it_ends_with() -> None:
    """A start-up failure's traceback runs to thousands of characters; its last line
    names the error, so a capped one keeps its end as well as its start."""

    def failing() -> None:
        try:
            raise KeyError("k" * 30_000)  # a long context before the error itself
        except KeyError:
            raise ValueError("the error a reader is looking for")  # noqa: B904

    try:
        failing()
    except ValueError:
        record = logging.makeLogRecord(
            {"name": "nbo.test", "msg": "failed", "levelname": "ERROR", "exc_info": sys.exc_info()}
        )
    line = json.loads(JsonFormatter().format(record))
    assert len(line["exception"]) < TRACE_CHARS + 50
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert len(JsonFormatter().formatException(record.exc_info)) > TRACE_CHARS
    assert line["exception"].endswith("ValueError: the error a reader is looking for")
    assert "characters]..." in line["exception"]


def test_a_traceback_logged_as_a_long_message_keeps_its_last_line() -> None:
    """uvicorn logs a worker's failed start-up (lifespan) as a traceback in the message:
    the error is its last line, which a cap keeping the head alone cut off, so the
    reason a worker could not start never reached the log."""
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 600
    trace += "nbo.core.errors.ConfigError: schema version 9 is newer than this nbo understands"
    record = logging.makeLogRecord({"name": "uvicorn.error", "msg": trace, "levelname": "ERROR"})
    line = json.loads(JsonFormatter().format(record))
    # The error as the message, the traceback in ``exception`` as any other's (it
    # was all in ``message``, where a shipper looking for tracebacks never found it).
    assert line["message"] == (
        "nbo.core.errors.ConfigError: schema version 9 is newer than this nbo understands"
    )
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("schema version 9 is newer than this nbo understands")
    assert TextFormatter().format(record).endswith("newer than this nbo understands")


def test_a_message_that_only_mentions_a_traceback_stays_the_message() -> None:
    """Only a message that is a traceback moves: one that names the word stays as it is."""
    record = logging.makeLogRecord(
        {
            "name": "nbo.test",
            "msg": "no Traceback (most recent call last): here",
            "levelname": "INFO",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "no Traceback (most recent call last): here"
    assert "exception" not in line
