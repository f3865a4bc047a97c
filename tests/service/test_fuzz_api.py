"""Fuzzing the service over its own OpenAPI spec (schemathesis): whatever a client sends,
the server answers without a 5xx, and every answer matches the schema the spec declares.

The server is a real ``nbo serve`` on a loopback port (the planted model, a pinned clock,
its own store, the demo catalogue and API keys), so requests go through uvicorn and the
key checks as in production.
Examples per operation are bounded so the test stays a few seconds long in CI; the seed
is fixed, so a failure reproduces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from support import DATA, running_server

from bench.servers import Server
from nbo.core.apikeys import Role, create_key

EXAMPLES_PER_OPERATION = 25
CATALOG = DATA / "catalog.yaml"


# The server requires API keys; the fuzzer calls with an admin key, so every operation is
# reached (the key checks themselves are in tests/service/test_auth.py).
ADMIN_KEY, ADMIN_ENTRY = create_key(Role.admin)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("fuzz")
    settings = {
        "NBO_CATALOG": str(CATALOG),
        "NBO_API_KEYS": json.dumps([ADMIN_ENTRY.model_dump()]),
    }
    with running_server(models_dir, folder / "store.db", folder / "server.log", settings) as up:
        yield up


def test_no_server_errors_and_every_answer_matches_the_spec(server: Server) -> None:
    """Every operation of the spec, fuzzed with bounded examples; the failures of all of
    them are reported together (the operation, the check and how to reproduce)."""
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    failures: list[str] = []
    operations = calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=checks, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

        try:
            fuzz()
        except Exception as failure:
            failures.append(f"{operation.label}: {failure}")
    assert operations >= 10, "the spec lost its operations"
    assert calls >= 5 * operations, f"only {calls} calls for {operations} operations"
    assert not failures, "\n\n".join(failures)
