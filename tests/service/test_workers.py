"""``nbo serve`` with workers: reloads reach every worker, /metrics adds them up, every log
line names its worker, and the workers' board (``nbo.runtime.workers``) on its own.

The server tests share one real ``nbo serve --workers 2`` (starting one costs seconds of
imports); each sets the state it needs (which version serves) first. Which worker takes
a connection is the kernel's choice: a test that needs both to answer sends concurrent
calls on fresh connections, in bounded rounds, until the access log names both pids.
Every wait has a deadline, so a broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support import make_planted_purchases, small_training_config

from bench.servers import Server, running_server
from nbo.catalog.holder import CatalogHolder
from nbo.cli import EXIT_USER_ERROR, main
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import set_current
from nbo.models.registry import set_alias
from nbo.runtime.workers import STARTING, WorkerBoard, WorkerStatus
from nbo.service import cli
from nbo.service.app import create_app
from nbo.service.reload import Reloader
from nbo.service.state import ModelHolder
from nbo.settings import Settings
from training.pipeline import train

CLOCK = "2026-06-30T12:00:00Z"
WORKERS = 2
OFFERS = "/v1/customers/{customer_id}/offers"
SECONDS = 10
# Rounds of concurrent calls until both workers have answered, and calls per round.
ROUNDS, CALLS = 20, 16
# Polls a tenth of a second apart: a bound that a working server never comes near.
POLLS = 300


@dataclass(frozen=True)
class Versions:
    folder: Path
    v1: str
    v2: str


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """Two versions trained on two planted data sets; CURRENT at the first."""
    folder = tmp_path_factory.mktemp("workers") / "models"
    published = []
    for seed in (7, 11):
        data = folder.parent / f"purchases-{seed}.csv"
        make_planted_purchases(seed).to_csv(data, index=False)
        result = train(data, load_mapping("canonical"), folder, small_training_config())
        assert result.version is not None
        published.append(result.version)
    set_current(folder, published[0])
    return Versions(folder, *published)


@pytest.fixture(scope="module")
def served(
    versions: Versions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """``nbo serve --workers 2`` with JSON logs at info (the access lines name the pid)."""
    folder = tmp_path_factory.mktemp("served")
    models = folder / "models"
    shutil.copytree(versions.folder, models)
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
    }
    with running_server(models, folder / "events.db", folder / "server.log", settings) as server:
        wait_for(lambda: workers_started(server) >= WORKERS, "both workers started")
        yield server, models
        server.terminate()


# -- reading the server ---------------------------------------------------------------------


def log_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]


def workers_started(server: Server) -> int:
    """How many workers have logged the end of their start (the server answers as soon
    as one has)."""
    return sum("Application startup complete" in line["message"] for line in log_lines(server))


def samples(server: Server) -> list[tuple[str, dict[str, str], float]]:
    """One scrape of /metrics, on a connection of its own (any worker may answer it)."""
    answer = httpx.get(f"{server.base}/metrics", timeout=SECONDS)
    assert answer.status_code == 200, answer.text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def offers_count(server: Server) -> float:
    return sum(
        value
        for name, labels, value in samples(server)
        if name == "nbo_http_requests_total" and labels["route"] == OFFERS
    )


def serving_by_pid(server: Server) -> dict[int, str]:
    """Each live worker's current version, from ``nbo_model_info``'s pid label."""
    return {
        int(labels["pid"]): labels["version"]
        for name, labels, value in samples(server)
        if name == "nbo_model_info" and labels["role"] == "current" and value == 1
    }


def replaced(server: Server, killed: int) -> bool:
    """Whether every worker serves again, none of them the ``killed`` one. A connection
    the killed worker had taken from the shared socket is reset: not yet, ask again."""
    try:
        after = serving_by_pid(server)
    except httpx.TransportError:
        return False
    return len(after) == WORKERS and killed not in after


def wait_for(condition: Any, what: str) -> None:
    for _ in range(POLLS):
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {POLLS} polls")


def offers_from_both_workers(server: Server) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Concurrent offers calls on fresh connections, in rounds, until the access log
    names two pids; the calls each pid answered, and every answer."""
    return from_both_workers(server, lambda n: f"/v1/customers/a{n % 30:02d}/offers?k=3")


def from_both_workers(
    server: Server, path_of: Callable[[int], str]
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Concurrent GETs of ``path_of(n)`` on fresh connections, in rounds, until the
    access log names two pids; the calls each pid answered, and every answer."""
    answers: list[dict[str, Any]] = []
    ids: list[str] = []

    def call(n: int) -> dict[str, Any]:
        request_id = f"spread-{len(ids)}-{n}-{time.monotonic_ns()}"
        ids.append(request_id)
        answer = httpx.get(
            f"{server.base}{path_of(n)}",
            headers={"X-Request-ID": request_id},
            timeout=SECONDS,
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    by_pid: dict[int, int] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(ROUNDS):
            answers += list(pool.map(call, range(CALLS)))
            wanted = set(ids)
            by_pid = {}
            for line in log_lines(server):
                if line.get("logger") == "nbo.access" and line.get("request_id") in wanted:
                    by_pid[line["pid"]] = by_pid.get(line["pid"], 0) + 1
            if len(by_pid) == WORKERS and sum(by_pid.values()) == len(ids):
                return by_pid, answers
    raise AssertionError(f"one worker answered every call: {by_pid}")


def corrupt_copy(models: Path, source: str, name: str) -> tuple[Path, bytes]:
    """``source`` published again as ``name`` with its item factors' last bytes changed
    (its checksum no longer holds): the factors file and its good bytes, to mend it."""
    shutil.copytree(models / source, models / name)
    manifest = json.loads((models / name / "manifest.json").read_text())
    manifest["version"] = name
    (models / name / "manifest.json").write_text(json.dumps(manifest))
    factors = models / name / "item_factors.npy"
    good = factors.read_bytes()
    factors.write_bytes(good[:-8] + b"\xff" * 8)
    return factors, good


def reload(server: Server, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{server.base}/v1/admin/reload", json=body, timeout=90)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


# -- a real server with two workers ---------------------------------------------------------


def test_counters_add_up_over_workers(served: tuple[Server, Path], versions: Versions) -> None:
    server, _ = served
    before = offers_count(server)
    by_pid, _ = offers_from_both_workers(server)
    # Each worker counts only its own calls: the scrape is the sum of both, whichever
    # worker answers it (three scrapes on fresh connections agree).
    assert [offers_count(server) - before for _ in range(3)] == [sum(by_pid.values())] * 3
    workers = serving_by_pid(server)
    assert set(workers) == set(by_pid) and len(workers) == WORKERS


def test_a_real_server_answers_head_with_gets_headers_and_no_body(
    served: tuple[Server, Path],
) -> None:
    """Through uvicorn: a HEAD carries the GET answer's length and no body, and the
    connection goes on to serve the next request (no stray body bytes in between)."""
    server, _ = served
    with httpx.Client(base_url=server.base, timeout=SECONDS) as client:
        for path in ("/health/ready", "/v1/customers/a00/offers?k=3"):
            got = client.get(path)
            head = client.head(path)
            assert head.status_code == got.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == got.headers["content-length"]
        assert client.get("/health/live").status_code == 200


def test_every_line_names_its_worker_and_start_says_how_many(
    served: tuple[Server, Path],
) -> None:
    server, _ = served
    lines = log_lines(server)
    assert all(isinstance(line["pid"], int) for line in lines)
    master = server.process.pid
    assert any(
        line["pid"] == master and f"with {WORKERS} workers" in line["message"] for line in lines
    )
    booted = {line["pid"] for line in lines if "Application startup complete" in line["message"]}
    assert len(booted) >= WORKERS and master not in booted
    # Gunicorn's start line names the address, though the master holds no socket.
    (listening,) = [line["message"] for line in lines if "Listening at" in line["message"]]
    assert listening.startswith(f"Listening at: {server.base.removeprefix('http://')} ")


def test_the_master_compiles_the_ranker_and_the_workers_start_on_it(
    served: tuple[Server, Path],
) -> None:
    """The master's model check compiles the ranker's trees; the workers, forked after,
    find them among the process's compiled models instead of compiling their own (their
    pages stay shared: about 20 MB of each worker's own memory at 100k x 20k)."""
    server, _ = served
    lines = log_lines(server)
    started = [
        n for n, line in enumerate(lines) if "Application startup complete" in line["message"]
    ]
    boot = lines[: started[WORKERS - 1] + 1]
    compiled = [line["pid"] for line in boot if "trees compiled and checked" in line["message"]]
    assert compiled == [server.process.pid]


def test_the_workers_start_on_the_compiled_trees_of_every_experiment_arm(
    versions: Versions, tmp_path: Path
) -> None:
    """With an experiment arm on another version, the master compiles both rankers and
    holds them while it serves, so that neither worker compiles either: a compiled model
    no one holds is freed (``nbo.models.compiled`` keeps only the last one retired), and
    the master's model check is over before the workers start."""
    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    set_alias(models, "arm", versions.v2)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        "version: 1\nexperiments:\n  - name: arms\n    salt: s1\n"
        "    start: 2026-06-01T00:00:00Z\n    end: 2026-08-01T00:00:00Z\n    variants:\n"
        "      - {name: current, model: current, weight: 50}\n"
        "      - {name: arm, model: arm, weight: 50}\n",
        encoding="utf-8",
    )
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
        "NBO_EXPERIMENTS": str(experiments),
    }
    with running_server(
        models, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        # The server answers once one worker has started: wait for the other's line too.
        wait_for(lambda: workers_started(server) >= WORKERS, "both workers started")
        lines = log_lines(server)
        server.terminate()
    started = [
        n for n, line in enumerate(lines) if "Application startup complete" in line["message"]
    ]
    assert len(started) >= WORKERS
    boot = lines[: started[WORKERS - 1] + 1]
    compiled = [line["pid"] for line in boot if "trees compiled and checked" in line["message"]]
    assert compiled == [server.process.pid] * 2


def test_a_reload_reaches_every_worker_and_the_answer_says_so(
    served: tuple[Server, Path], versions: Versions
) -> None:
    server, _ = served
    reload(server, version=versions.v1)
    answer = reload(server, version=versions.v2)
    assert answer["version"] == versions.v2 and answer["swapped"] is True
    assert answer["all_workers"] is True
    assert [(w["version"], w["reloaded"], w["error"]) for w in answer["workers"]] == [
        (versions.v2, True, None)
    ] * WORKERS
    assert set(serving_by_pid(server).values()) == {versions.v2}
    by_pid, answers = offers_from_both_workers(server)
    assert {body["model_version"] for body in answers} == {versions.v2}
    assert set(by_pid) == {w["pid"] for w in answer["workers"]}


def models_by_pid(server: Server) -> dict[int, set[tuple[str, str]]]:
    """Each live worker's (version, role) pairs, from ``nbo_model_info``."""
    found: dict[int, set[tuple[str, str]]] = {}
    for name, labels, value in samples(server):
        if name == "nbo_model_info" and value == 1:
            found.setdefault(int(labels["pid"]), set()).add((labels["version"], labels["role"]))
    return found


def test_a_reload_after_an_experiment_alias_moved_reaches_every_worker(
    versions: Versions, tmp_path: Path
) -> None:
    """The arm's alias moved, the current version did not: a reload must make every
    worker resolve the alias again, and say all_workers only once they have. (The
    worker asked swapped alone: the latest generation already named the version, so the
    other was never asked, and the answer still said all_workers: true.) The same for a
    reload naming the version already served."""
    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    set_alias(models, "arm", versions.v1)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        "version: 1\nexperiments:\n  - name: arms\n    salt: s1\n"
        "    start: 2026-06-01T00:00:00Z\n    variants:\n"
        "      - {name: control, control: true, weight: 50}\n"
        "      - {name: arm, model: arm, weight: 50}\n",
        encoding="utf-8",
    )
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_EXPERIMENTS": str(experiments),
    }
    with running_server(
        models, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        wait_for(lambda: len(models_by_pid(server)) == WORKERS, "both workers serving")
        arm_on_v2 = {(versions.v1, "current"), (versions.v2, "experiment")}
        set_alias(models, "arm", versions.v2)
        answer = reload(server)
        assert answer["swapped"] is True and answer["all_workers"] is True, answer
        assert [w["experiment_models"] for w in answer["workers"]] == [[versions.v2]] * WORKERS
        assert list(models_by_pid(server).values()) == [arm_on_v2] * WORKERS

        set_alias(models, "arm", versions.v1)
        answer = reload(server, version=versions.v1)
        assert answer["all_workers"] is True, answer
        assert list(models_by_pid(server).values()) == [{(versions.v1, "current")}] * WORKERS
        server.terminate()


def test_a_refused_reload_is_asked_of_no_other_worker(
    served: tuple[Server, Path], versions: Versions
) -> None:
    server, models = served
    reload(server, version=versions.v1)
    bad = f"{versions.v2}-corrupt"
    corrupt_copy(models, versions.v2, bad)

    answer = httpx.post(f"{server.base}/v1/admin/reload", json={"version": bad}, timeout=90)
    assert answer.status_code == 409, answer.text
    time.sleep(0.5)  # a follower would have started within a tenth of a second
    assert set(serving_by_pid(server).values()) == {versions.v1}
    refusals = [line for line in log_lines(server) if f"of model {bad} refused" in line["message"]]
    assert len({line["pid"] for line in refusals}) == 1


def test_a_version_every_worker_refused_reaches_them_all_once_mended(
    served: tuple[Server, Path], versions: Versions
) -> None:
    """SIGHUP asks every worker for a broken version and each refuses it; mended, the
    same version asked for again reaches every worker, not only the one asked (the
    latest generation already named it, so the others were never asked again)."""
    server, models = served
    reload(server, version=versions.v1)
    mended = f"{versions.v2}-mended"
    factors, good = corrupt_copy(models, versions.v2, mended)
    (models / "CURRENT").write_text(f"{mended}\n", encoding="utf-8")
    os.kill(server.process.pid, signal.SIGHUP)
    wait_for(
        lambda: (
            len(
                {
                    line["pid"]
                    for line in log_lines(server)
                    if f"of model {mended} refused" in line["message"]
                }
            )
            == WORKERS
        ),
        "every worker refusing the broken version",
    )
    assert set(serving_by_pid(server).values()) == {versions.v1}

    factors.write_bytes(good)
    answer = reload(server, version=mended)
    assert answer["all_workers"] is True, answer
    assert set(serving_by_pid(server).values()) == {mended}
    set_current(models, versions.v1)


def test_a_refused_current_is_said_by_every_worker_until_a_rollback_reload(
    served: tuple[Server, Path], versions: Versions
) -> None:
    """CURRENT flipped to a broken version: the reload is refused (409), and every
    worker, not only the one asked, loads it itself and says so on readiness, so probes
    agree. Rolled back (CURRENT at the good version again), a reload that swaps nothing
    clears every worker's warning (it had cleared only the answering worker's, and only
    a forced reload reached the other)."""
    server, models = served
    reload(server, version=versions.v1)
    set_current(models, versions.v1)
    bad = f"{versions.v2}-refused"
    corrupt_copy(models, versions.v2, bad)
    set_current(models, bad)

    answer = httpx.post(f"{server.base}/v1/admin/reload", json={}, timeout=90)

    assert answer.status_code == 409, answer.text
    by_pid, probes = from_both_workers(server, lambda _n: "/health/ready")
    assert len(by_pid) == WORKERS
    assert {probe["warning"].split(",")[0] for probe in probes} == {f"model {bad} refused"}
    assert set(serving_by_pid(server).values()) == {versions.v1}

    set_current(models, versions.v1)  # nbo models --current previous
    rollback = reload(server)

    assert rollback["swapped"] is False and rollback["all_workers"] is True, rollback
    by_pid, probes = from_both_workers(server, lambda _n: "/health/ready")
    assert len(by_pid) == WORKERS
    assert [probe["warning"] for probe in probes] == [None] * len(probes)


def test_sigint_to_the_master_stops_every_worker_as_sigterm_does(
    versions: Versions, tmp_path: Path
) -> None:
    """Gunicorn's master passes SIGINT on to its workers as SIGQUIT (a quick stop). The
    uvicorn worker's handler only marked the gunicorn worker dead, which uvicorn never
    reads: each worker served on until the master SIGKILLed it (graceful_timeout, 30 s,
    later), logging "Perhaps out of memory?", and never closed its store."""
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
    }
    with running_server(
        versions.folder, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        wait_for(lambda: workers_started(server) >= WORKERS, "both workers started")
        server.terminate(signal.SIGINT)  # the store closed by each worker's shutdown
        messages = [line["message"] for line in log_lines(server)]
    assert not [m for m in messages if "SIGKILL" in m], messages
    assert sum("Finished server process" in m for m in messages) == WORKERS, messages
    # Each worker's stop logged "Error while closing socket [Errno 9] Bad file
    # descriptor": uvloop closed the listening socket, then gunicorn's wrapper again.
    assert not [m for m in messages if "closing socket" in m], messages


def test_sighup_reloads_every_worker_without_restarting_them(
    served: tuple[Server, Path], versions: Versions
) -> None:
    server, models = served
    reload(server, version=versions.v1)
    before = serving_by_pid(server)
    assert set(before.values()) == {versions.v1}
    set_current(models, versions.v2)
    server.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: set(serving_by_pid(server).values()) == {versions.v2},
        "every worker serving v2 after SIGHUP",
    )
    assert set(serving_by_pid(server)) == set(before)  # the same workers
    set_current(models, versions.v1)


def test_a_new_worker_serves_what_the_others_were_told(
    served: tuple[Server, Path], versions: Versions
) -> None:
    """CURRENT names v1, a reload asked for v2: a worker started in place of one killed
    loads v2, not CURRENT. Counts survive the worker that made them."""
    server, models = served
    set_current(models, versions.v1)
    reload(server, version=versions.v2)
    counted = offers_count(server)
    workers = serving_by_pid(server)
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: replaced(server, killed), "a new worker in place of the killed one")
    assert set(serving_by_pid(server).values()) == {versions.v2}
    assert offers_count(server) == counted


def test_a_new_worker_serves_the_started_version_whatever_current_says_since(
    versions: Versions, tmp_path: Path
) -> None:
    """No reload yet, and CURRENT moved under the server: a worker started in place of a
    killed one serves the version the others serve (the one nbo serve verified), not
    CURRENT's; when CURRENT names a broken version, the service does not stop (gunicorn
    stops it when a worker fails to start)."""
    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    broken = "20991231T000000Z-broken00"
    shutil.copytree(models / versions.v2, models / broken)
    factors = next((models / broken).glob("item_factors*.npy"))
    factors.write_bytes(factors.read_bytes()[:100])
    settings = {"NBO_CLOCK": CLOCK, "NBO_WORKERS": str(WORKERS)}
    with running_server(
        models, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        wait_for(lambda: len(serving_by_pid(server)) == WORKERS, "both workers serving")
        assert set(serving_by_pid(server).values()) == {versions.v1}
        for moved_to in (versions.v2, broken):
            # (Written as set_current would, without its check that the version loads.)
            (models / "CURRENT").write_text(f"{moved_to}\n", encoding="utf-8")
            killed = min(serving_by_pid(server))
            os.kill(killed, signal.SIGKILL)

            wait_for(
                lambda killed=killed: replaced(server, killed),
                f"a new worker in place of the killed one (CURRENT at {moved_to})",
            )
            assert set(serving_by_pid(server).values()) == {versions.v1}
        server.terminate()


def test_a_new_worker_starts_unready_when_no_model_it_may_serve_loads(
    versions: Versions, tmp_path: Path
) -> None:
    """The folder of the version serving (CURRENT's too) removed by hand: a worker
    started in place of a killed one has no version it may serve. It starts without a
    model, says why and answers 503 on ready, and the other worker serves on; a reload
    once the folder is back gives it the model. (It failed to boot, and gunicorn stopped
    the whole service: 'Reason: Worker failed to boot.')"""
    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_WATCH_MODELS": "true",
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
    }
    with running_server(
        models, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        wait_for(lambda: len(serving_by_pid(server)) == WORKERS, "both workers serving")
        elsewhere = tmp_path / "elsewhere"
        (models / versions.v1).rename(elsewhere)
        killed = min(serving_by_pid(server))
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: workers_started(server) > WORKERS, "a worker in place of the killed one")
        assert server.process.poll() is None  # the service still runs
        unready = [
            line for line in log_lines(server) if "starting without a model" in line["message"]
        ]
        assert len(unready) == 1 and versions.v1 in unready[0]["message"], unready
        newcomer = unready[0]["pid"]
        assert set(serving_by_pid(server).values()) == {versions.v1}  # the other one
        assert newcomer not in serving_by_pid(server)
        # Concurrent calls on fresh connections until the new worker has answered one.
        answers: list[httpx.Response] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(ROUNDS):
                answers += pool.map(
                    lambda _: httpx.get(f"{server.base}/health/ready", timeout=SECONDS),
                    range(CALLS),
                )
                if any(answer.status_code == 503 for answer in answers):
                    break
        assert {answer.status_code for answer in answers} == {200, 503}
        not_ready = next(answer.json() for answer in answers if answer.status_code == 503)
        assert not_ready["status"] == "not ready" and versions.v1 in not_ready["reason"]

        elsewhere.rename(models / versions.v1)
        answer = reload(server)
        assert answer["all_workers"] is True, answer
        wait_for(
            lambda: serving_by_pid(server).get(newcomer) == versions.v1,
            "the new worker serving after the reload",
        )
        server.terminate()


def test_a_new_worker_meeting_a_newer_sqlite_schema_starts_without_its_store(
    versions: Versions, tmp_path: Path
) -> None:
    """A rolling upgrade of services sharing one SQLite file: a newer release migrated it
    while this one serves. A worker started in place of a killed one starts without its
    store (an error line naming the refusal) and the service runs on; once the refusal
    ends, it opens the store. (Its failed boot stopped the whole service, as it did on
    PostgreSQL before: 'Reason: Worker failed to boot.')"""
    from nbo.store.sqlite import MIGRATIONS

    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    store = tmp_path / "events.db"
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
    }
    with running_server(models, store, tmp_path / "server.log", settings) as server:
        wait_for(lambda: len(serving_by_pid(server)) == WORKERS, "both workers serving")
        newer = len(MIGRATIONS) + 1
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (newer,))
        killed = min(serving_by_pid(server))
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: workers_started(server) > WORKERS, "a worker in place of the killed one")
        wait_for(
            lambda: any("refused this worker" in line["message"] for line in log_lines(server)),
            "the new worker saying its store refused it",
        )
        assert server.process.poll() is None  # the service still runs
        refused = next(
            line for line in log_lines(server) if "refused this worker" in line["message"]
        )
        assert refused["level"] == "ERROR" and "newer than this nbo" in refused["message"]
        assert httpx.get(f"{server.base}/health/ready", timeout=SECONDS).status_code == 200
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            db.execute("DELETE FROM schema_migrations WHERE version = ?", (newer,))
        wait_for(
            lambda: any("refusing this worker" in line["message"] for line in log_lines(server)),
            "the new worker opening its store once the refusal ended",
        )
        server.terminate()


def test_kept_alive_connections_end_cleanly_at_sigterm(versions: Versions, tmp_path: Path) -> None:
    """Clients looping requests on kept-alive connections while the service stops
    (SIGTERM): every connection ends with an answer saying ``Connection: close`` or a
    clean close, none with a reset. (uvicorn closed each connection idle at the instant
    of the shutdown with the client's next request unread in it, which the kernel
    answers with a reset: 24 and 27 of 16 looping clients' connections, two runs.)"""
    import http.client

    models = tmp_path / "models"
    shutil.copytree(versions.folder, models)
    settings = {"NBO_CLOCK": CLOCK, "NBO_WORKERS": str(WORKERS)}
    outcomes: list[str] = []
    stopping = threading.Event()
    port = 0  # the server's, once it runs

    def loop_requests() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SECONDS)
        served_after = 0
        while served_after < 200:
            try:
                connection.request("GET", "/health/live")
                answer = connection.getresponse()
                answer.read()
            except ConnectionResetError:
                outcomes.append("reset")
                return
            except (http.client.RemoteDisconnected, ConnectionRefusedError, BrokenPipeError):
                outcomes.append("closed")  # a clean close raced our request, or gone
                return
            if answer.getheader("connection", "").lower() == "close":
                outcomes.append("close")
                return
            if stopping.is_set():
                served_after += 1
        outcomes.append("still open")

    with running_server(
        models, tmp_path / "events.db", tmp_path / "server.log", settings
    ) as server:
        port = int(urlsplit(server.base).port or 0)
        clients = [threading.Thread(target=loop_requests) for _ in range(16)]
        for client in clients:
            client.start()
        time.sleep(0.5)  # every client looping on its connection
        stopping.set()
        server.terminate()
        for client in clients:
            client.join(SECONDS)
    assert len(outcomes) == 16
    assert "reset" not in outcomes, outcomes
    assert "still open" not in outcomes, outcomes


def test_an_erasure_reaches_every_workers_model(served: tuple[Server, Path]) -> None:
    """The erased customer is unknown to both workers' models by the time the erasure
    answers: no offers call, on either worker, is personalized for them after it."""
    server, _ = served
    customer = "b07"
    before = httpx.get(f"{server.base}/v1/customers/{customer}/offers", timeout=SECONDS)
    assert before.status_code == 200 and before.json()["personalized"] is True
    answer = httpx.delete(f"{server.base}/v1/customers/{customer}", timeout=90)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_row_removed"] is True and answer.json()["all_workers"] is True

    def call(n: int) -> tuple[int, bool]:
        request_id = f"erased-{n}-{time.monotonic_ns()}"
        got = httpx.get(
            f"{server.base}/v1/customers/{customer}/offers",
            headers={"X-Request-ID": request_id},
            timeout=SECONDS,
        )
        assert got.status_code == 200, got.text
        return n, bool(got.json()["personalized"])

    answered_by: set[int] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for round_ in range(ROUNDS):
            results = list(pool.map(call, range(round_ * CALLS, (round_ + 1) * CALLS)))
            assert [personalized for _, personalized in results] == [False] * CALLS
            answered_by = {
                line["pid"]
                for line in log_lines(server)
                if line.get("logger") == "nbo.access"
                and str(line.get("request_id", "")).startswith("erased-")
            }
            if len(answered_by) == WORKERS:
                break
    assert len(answered_by) == WORKERS, "one worker answered every call"


# -- on PostgreSQL ------------------------------------------------------------------------


def store_connections(port: int) -> dict[int, int]:
    """Every TCP connection of this machine to ``port`` (the store's server): socket
    inode -> local port, from Linux's /proc/net tables."""
    found: dict[int, int] = {}
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if inode and int(remote.rsplit(":", 1)[1], 16) == port:
                found[inode] = int(local.rsplit(":", 1)[1], 16)
    return found


def sockets_of(pid: int) -> set[int]:
    """The inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target.removeprefix("socket:[").removesuffix("]")))
    return inodes


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_on_postgresql_each_worker_has_connections_of_its_own(
    versions: Versions, postgres_url: str, tmp_path: Path
) -> None:
    """Two workers on a PostgreSQL store: each opens its own pool after the fork, the
    master holds no connection (a connection open before the fork would be in the master
    and every worker: one socket, two processes writing to it), and both workers read and
    write the store at once."""
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_WORKERS": str(WORKERS),
        "NBO_LOG_LEVEL": "info",
        "NBO_LOG_FORMAT": "json",
    }
    with running_server(versions.folder, postgres_url, tmp_path / "server.log", settings) as server:
        by_pid, _ = offers_from_both_workers(server)

        def post(n: int) -> int:
            event = {
                "event_id": f"pg-{n}",
                "type": "purchase",
                "customer_id": f"a{n % 30:02d}",
                "timestamp": "2026-06-30T11:00:00Z",
                "order_id": f"o-pg-{n}",
                "items": [{"item_id": "B01", "quantity": 1, "price": 2.0}],
            }
            return httpx.post(f"{server.base}/v1/events", json=event, timeout=SECONDS).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(post, range(200))) == {200}
        export = httpx.get(f"{server.base}/v1/customers/a00/data", timeout=SECONDS).json()
        assert sorted(e["event_id"] for e in export["events"]) == sorted(
            f"pg-{n}" for n in range(0, 200, 30)
        )
        erased = httpx.delete(f"{server.base}/v1/customers/b07", timeout=90).json()
        assert erased["all_workers"] is True

        port = urlsplit(postgres_url).port or 5432
        connections = store_connections(port)
        held = {pid: sockets_of(pid) & connections.keys() for pid in [server.process.pid, *by_pid]}
        assert held.pop(server.process.pid) == set()
        assert all(held.values()), held
        first, second = held.values()
        assert not first & second
        server.terminate()


# -- one process --------------------------------------------------------------------------


def test_one_process_answers_for_itself(versions: Versions, tmp_path: Path) -> None:
    settings = Settings(
        models_dir=versions.folder, clock=CLOCK, store_url=f"sqlite:///{tmp_path / 'e.db'}"
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/admin/reload", json={"version": versions.v2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["all_workers"] is True
    assert body["workers"] == [
        {
            "pid": os.getpid(),
            "version": versions.v2,
            "reloaded": True,
            "experiment_models": [],
            "error": None,
        }
    ]


def test_a_port_another_process_listens_on_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each worker binds the port with SO_REUSEPORT, which another listener of the same
    user could share: nbo serve refuses a port in use before anything else."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # The port came from --port: the line names the flag the user gave.
    assert line.startswith(f"nbo serve: error: --port: cannot listen on 127.0.0.1:{port}")


def test_a_killed_servers_folder_is_removed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    stale = tmp_path / f"{cli.FOLDER_PREFIX}{gone.pid}-abc"
    live = tmp_path / f"{cli.FOLDER_PREFIX}{os.getpid()}-def"
    other = tmp_path / "nbo-serve-notapid"
    for folder in (stale, live, other):
        (folder / "metrics").mkdir(parents=True)
    cli._remove_stale_folders()
    assert not stale.exists() and live.exists() and other.exists()


# -- the board ----------------------------------------------------------------------------


def test_generations_count_up_and_a_reload_that_changes_nothing_asks_nothing(
    tmp_path: Path,
) -> None:
    board = WorkerBoard(tmp_path / "board")
    assert board.latest() is None
    first = board.publish("v1", force=False, trigger="api")
    assert (first.number, first.version, first.by) == (1, "v1", os.getpid())
    assert board.latest() == first
    assert board.publish("v1", force=False, trigger="api", unless_named=True) == first
    second = board.publish("v1", force=True, trigger="api")
    assert second.number == 2 and board.latest() == second
    other = WorkerBoard(tmp_path / "board")  # another process's view of the same folder
    assert other.latest() == second


def test_erasures_are_counted(tmp_path: Path) -> None:
    board, other = WorkerBoard(tmp_path / "board"), WorkerBoard(tmp_path / "board")
    assert board.erasures() == 0
    assert [board.count_erasure(), other.count_erasure()] == [1, 2]
    assert board.erasures() == other.erasures() == 2


def test_a_worker_counting_an_erasure_forgets_those_it_had_not_followed(
    models_dir: Path, tmp_path: Path
) -> None:
    """Worker A erases a00; worker B erases a01 before it has followed A's erasure: B's
    count passes A's, and B must forget a00 too (from the store's list), not skip it."""
    erased: list[str] = []
    board = WorkerBoard(tmp_path / "board")
    settings = Settings(models_dir=models_dir, store_url=f"sqlite:///{tmp_path / 'e.db'}")
    workers = []
    for _ in range(2):
        holder = ModelHolder(erased_list=lambda: list(erased))
        reloader = Reloader(settings, holder, CatalogHolder(None), board)
        reloader.start()
        workers.append(reloader)
    a, b = workers
    erased.append("a00")  # the store records the erasure first
    assert a.forget_everywhere("a00") == (True, True)
    erased.append("a01")
    assert b.forget_everywhere("a01") == (True, True)
    model = b.models.model
    assert model is not None
    assert model.customers.get("a01") is None and model.customers.get("a00") is None
    a.follow_erasures(board.erasures())  # what A's follower does within a tenth of a second
    model = a.models.model
    assert model is not None and model.customers.get("a01") is None


def test_concurrent_publications_each_get_a_number(tmp_path: Path) -> None:
    board = WorkerBoard(tmp_path / "board")
    script = (
        "import sys; from pathlib import Path; from nbo.runtime.workers import WorkerBoard; "
        "board = WorkerBoard(Path(sys.argv[1])); "
        "[board.publish(f'v{n}', False, 'test') for n in range(50)]"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(board.folder)]) for _ in range(3)
    ]
    numbers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: numbers.extend(
                board.publish(f"t{n}", False, "test").number for n in range(50)
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [process.wait(timeout=60) for process in processes] == [0, 0, 0]
    latest = board.latest()
    assert latest is not None and latest.number == 5 * 50
    assert len(set(numbers)) == len(numbers) == 100


def test_statuses_are_the_live_workers_and_a_wait_ends_at_its_deadline(tmp_path: Path) -> None:
    board = WorkerBoard(tmp_path / "board")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    board.report(WorkerStatus(gone.pid, 3, [("v0", "current")]))
    board.report(WorkerStatus(os.getpid(), STARTING))
    assert [s.pid for s in board.statuses()] == [os.getpid()]  # the dead pid is skipped
    assert board.statuses()[0].version is None

    started = time.monotonic()
    waited = board.wait(lambda status: status.generation >= 1, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert [s.generation for s in waited] == [STARTING]

    board.report(WorkerStatus(os.getpid(), 1, [("v1", "current"), ("v0", "experiment")]))
    (status,) = board.wait(lambda status: status.generation >= 1, timeout=30)
    assert status.version == "v1" and status.models == [("v1", "current"), ("v0", "experiment")]
    board.forget(os.getpid())
    assert board.statuses() == []
