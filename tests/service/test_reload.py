"""Zero-downtime reloads: POST /v1/admin/reload, SIGHUP and the models/CURRENT watcher.

Two versions are trained on different planted data (two seeds), so they differ; bad
versions are made by copying one and breaking a file (checksum, schema, a model that
loads but cannot rank). Through the real app: the named version serves after a reload,
a bad one is refused with a JSON body naming it while the old one keeps serving, and
the catalogue is re-read. Against a real server process: concurrent offers calls during
several swaps all succeed and each names one of the two versions; SIGHUP and the watcher
follow CURRENT. Every wait on a server is bounded by a count of polls."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support import (
    CLOCK,
    REQUEST_SECONDS,
    make_planted_purchases,
    running_server,
    small_training_config,
)

from bench.servers import Server
from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.apikeys import Role, create_key
from nbo.core.checksums import sha256_file
from nbo.data.mapping import load_mapping
from nbo.experiments.definitions import load_experiments
from nbo.models.artifacts import CURRENT, MANIFEST, set_current
from nbo.models.registry import set_alias
from nbo.service.app import create_app
from nbo.settings import Settings
from training.pipeline import train

CUSTOMERS = [f"{g}{c:02d}" for g in "ab" for c in range(30)]


# Polls of a server for a change it was told to make (SIGHUP, a flipped CURRENT); a
# tenth of a second apart, so a bound of 30 s that a working server never comes near.
POLLS = 300


@dataclass(frozen=True)
class Versions:
    """A models folder holding two versions (CURRENT at ``v1``) to copy for each test."""

    folder: Path
    v1: str
    v2: str


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    folder = tmp_path_factory.mktemp("two-versions")
    models = folder / "models"
    versions = []
    for seed in (7, 11):
        data = folder / f"purchases-{seed}.csv"
        make_planted_purchases(seed).to_csv(data, index=False)
        result = train(data, load_mapping("canonical"), models, small_training_config())
        assert result.version is not None
        versions.append(result.version)
    v1, v2 = versions
    assert v1 != v2
    set_current(models, v1)
    return Versions(models, v1, v2)


@pytest.fixture
def models(published: Versions, tmp_path: Path) -> Path:
    """This test's own copy of the two versions (tests flip CURRENT and add versions)."""
    copy = tmp_path / "models"
    shutil.copytree(published.folder, copy)
    return copy


def settings_for(models: Path, store: Path, **changes: Any) -> Settings:
    return Settings(models_dir=models, clock=CLOCK, store_url=f"sqlite:///{store}", **changes)


@pytest.fixture
def client(models: Path, isolated_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(models, isolated_store))) as client:
        yield client


def serving(client: TestClient | httpx.Client) -> str:
    answer = client.get("/v1/model")
    assert answer.status_code == 200, answer.text
    version: str = answer.json()["version"]
    return version


def reload(client: TestClient | httpx.Client, **body: Any) -> httpx.Response:
    if not body:
        return client.post("/v1/admin/reload")
    return client.post("/v1/admin/reload", json=body)


def copy_version(models: Path, version: str, name: str) -> Path:
    """A copy of ``version`` published as ``name`` (its manifest says so too)."""
    target = models / name
    shutil.copytree(models / version, target)
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    manifest["version"] = name
    (target / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return target


def corrupt_version(models: Path, version: str) -> str:
    """A copy whose item factors no longer match their checksum (a few bytes garbled)."""
    name = f"{version}-corrupt"
    target = copy_version(models, version, name)
    factors = target / "item_factors.npy"
    data = bytearray(factors.read_bytes())
    data[-8:] = b"\xff" * 8
    factors.write_bytes(bytes(data))
    return name


def incompatible_version(models: Path, version: str) -> str:
    """A copy written by a future nbo: a schema version this one does not read."""
    name = f"{version}-future"
    target = copy_version(models, version, name)
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    manifest["schema_version"] = 99
    (target / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return name


def unrankable_version(models: Path, version: str) -> str:
    """A copy that passes every artifact check (checksums rewritten, lengths intact) but
    whose purchase histories point past the last item, as a trainer bug might write
    them: it loads, and ranking a known customer fails."""
    name = f"{version}-broken"
    target = copy_version(models, version, name)
    indices = target / "history_indices.npy"
    items = len(np.load(target / "item_ids.npy"))
    np.save(indices, np.full_like(np.load(indices), items + 5))
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"]["history_indices.npy"] = sha256_file(indices)
    (target / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return name


def assert_refused(answer: httpx.Response, status: int, version: str, problem: str) -> None:
    """A JSON error naming the version asked for and the problem, never a stack trace."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == ("not_found" if status == 404 else "reload_refused")
    assert version in body["message"] and problem in body["message"]
    assert body["details"][0]["field"] == "version"
    assert problem in body["details"][0]["problem"]
    assert "Traceback" not in answer.text


def test_a_reload_swaps_in_the_named_version(client: TestClient, published: Versions) -> None:
    assert serving(client) == published.v1
    before = client.get("/v1/customers/a00/offers").json()
    assert before["model_version"] == published.v1

    answer = reload(client, version=published.v2)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["previous_version"] == published.v1
    assert body["version"] == published.v2
    assert body["swapped"] is True
    assert body["took_ms"] >= 0
    assert body["catalog"]["source"] is None and body["catalog"]["changed"] is False

    assert serving(client) == published.v2
    assert client.get("/health/ready").json()["model_version"] == published.v2
    after = client.get("/v1/customers/a00/offers").json()
    assert after["model_version"] == published.v2
    # What this worker serves and what CURRENT names, apart ("current" named the
    # serving version, and contradicted the alias "current" beside it).
    models = client.get("/v1/models").json()
    assert models["serving"] == published.v2 and models["current"] == published.v1
    assert models["aliases"]["production"] == published.v1
    assert [m["version"] for m in models["models"] if m["serving"]] == [published.v2]
    assert [m["version"] for m in models["models"] if m["current"]] == [published.v1]
    assert model_info(client) == [({"version": published.v2, "role": "current"}, 1.0)]


def model_info(client: TestClient) -> list[tuple[dict[str, str], float]]:
    """The nbo_model_info samples of /metrics: the versions serving."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "nbo_model_info"
    ]


def test_a_reload_without_a_version_follows_current(
    client: TestClient, models: Path, published: Versions
) -> None:
    set_current(models, published.v2)
    answer = reload(client)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == published.v2 and answer.json()["swapped"] is True
    assert serving(client) == published.v2
    # An empty JSON object is the same as no body.
    set_current(models, published.v1)
    assert client.post("/v1/admin/reload", json={}).json()["version"] == published.v1
    assert serving(client) == published.v1


def test_a_reload_takes_an_alias(client: TestClient, models: Path, published: Versions) -> None:
    set_alias(models, "candidate", published.v2)
    answer = reload(client, version="candidate")
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == published.v2
    assert serving(client) == published.v2


def test_a_reload_to_previous_serves_what_current_named_before_it_last_moved(
    client: TestClient, models: Path, published: Versions
) -> None:
    """The documented rollback for now (docs/service.md, "Rolling back"): the fixture
    published v1 then v2 and moved CURRENT back to v1, so previous is v2."""
    answer = reload(client, version="previous")
    assert answer.status_code == 200, answer.text
    assert answer.json()["previous_version"] == published.v1
    assert answer.json()["version"] == published.v2
    assert serving(client) == published.v2
    assert client.get("/v1/models").json()["aliases"]["previous"] == published.v2


def test_reloading_the_serving_version_changes_nothing_unless_forced(
    client: TestClient, published: Versions
) -> None:
    holder = client.app.state.models  # type: ignore[attr-defined]
    first = holder.model
    answer = reload(client)  # CURRENT is v1, which serves
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["swapped"] is False
    assert body["previous_version"] == body["version"] == published.v1
    assert holder.model is first

    forced = reload(client, version=published.v1, force=True)
    assert forced.status_code == 200, forced.text
    assert forced.json()["swapped"] is True and forced.json()["version"] == published.v1
    assert holder.model is not first and holder.model.version == published.v1


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (corrupt_version, "file item_factors.npy is corrupt (checksum mismatch)"),
        (incompatible_version, "schema version 99 is not supported"),
        (unrankable_version, "ranking known customer a00 failed (IndexError"),
    ],
    ids=["corrupt", "incompatible", "cannot-rank"],
)
def test_a_bad_version_is_refused_and_the_old_keeps_serving(
    client: TestClient, models: Path, published: Versions, make: Any, problem: str
) -> None:
    reload(client, version=published.v2)
    bad = make(models, published.v2)

    answer = reload(client, version=bad)
    assert_refused(answer, 409, bad, problem)
    assert f"still serving {published.v2}" in answer.json()["message"]
    assert serving(client) == published.v2
    assert client.get("/health/ready").status_code == 200
    assert client.get("/v1/customers/a00/offers").json()["model_version"] == published.v2

    # Through CURRENT too (what SIGHUP and the watcher reload).
    set_current(models, bad)
    assert_refused(reload(client), 409, bad, problem)
    assert serving(client) == published.v2


def test_a_folder_whose_manifest_names_another_version_is_refused(
    client: TestClient, models: Path, published: Versions
) -> None:
    shutil.copytree(models / published.v2, models / "renamed")  # manifest still says v2
    answer = reload(client, version="renamed")
    assert_refused(answer, 409, "renamed", f"its manifest names version {published.v2}")
    assert serving(client) == published.v1


def test_a_version_that_does_not_exist_is_404(client: TestClient, published: Versions) -> None:
    answer = reload(client, version="20990101T000000Z-nothing")
    assert_refused(answer, 404, "20990101T000000Z-nothing", "no such alias or version")
    assert serving(client) == published.v1


def test_a_missing_current_is_404(client: TestClient, models: Path, published: Versions) -> None:
    (models / CURRENT).unlink()
    answer = reload(client)
    assert_refused(answer, 404, "no CURRENT file", "no CURRENT file")
    assert serving(client) == published.v1


def test_a_current_or_alias_pointing_outside_the_models_folder_is_refused(
    client: TestClient,
    models: Path,
    published: Versions,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CURRENT (or ALIASES.json) holding a path reaches a model outside the models folder,
    which would then serve: refused and logged, the last good model serving on."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(models, elsewhere)
    caplog.set_level(logging.ERROR, logger="nbo.service.reload")
    for pointer in ["../elsewhere/" + published.v2, str(elsewhere / published.v2)]:
        (models / CURRENT).write_text(pointer + "\n", encoding="utf-8")
        answer = reload(client)
        assert_refused(answer, 404, repr(pointer), "is not a model version")
        assert serving(client) == published.v1
        assert client.get("/health/ready").status_code == 200
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refused and repr(pointer) in refused[-1], refused
        listed = client.get("/v1/models")  # a listing still answers, and says why
        assert listed.status_code == 200 and listed.json()["serving"] == published.v1
        assert listed.json()["current"] is None
        assert "is not a model version" in listed.json()["current_problem"]

    # A well-formed name of a version that is not there (deleted, or a typo): listed as
    # the current one, it hid that a restart would find no model.
    (models / CURRENT).write_text("20261207T150000Z-missing1\n", encoding="utf-8")
    listed = client.get("/v1/models")
    assert listed.status_code == 200 and listed.json()["current"] is None
    assert listed.json()["current_problem"] == (
        f"CURRENT names 20261207T150000Z-missing1, which is no model in {models}"
    )

    set_current(models, published.v1)
    (models / "ALIASES.json").write_text(
        json.dumps({"candidate": str(elsewhere / published.v2)}), encoding="utf-8"
    )
    answer = reload(client, version="candidate")
    assert_refused(answer, 404, "alias 'candidate'", "is not a model version")
    assert serving(client) == published.v1


def test_the_listing_answers_with_an_aliases_file_it_cannot_read(
    client: TestClient, models: Path, published: Versions
) -> None:
    """A hand-edited ALIASES.json that is not JSON made ``GET /v1/models`` a 500: the
    listing now has the versions, no alias, and why."""
    (models / "ALIASES.json").write_text('{"candidate": ', encoding="utf-8")
    listed = client.get("/v1/models")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["current"] == published.v1 and body["aliases"] == {}
    assert "ALIASES.json: not valid JSON" in body["aliases_problem"]
    assert {m["version"] for m in body["models"]} >= {published.v1, published.v2}
    (models / "ALIASES.json").unlink()
    assert client.get("/v1/models").json()["aliases_problem"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": ""}, "version"),
        ({"version": "../elsewhere"}, "version"),
        ({"version": "/tmp/models/v1"}, "version"),
        ({"force": "perhaps"}, "force"),
        ([1, 2], "body"),
    ],
)
def test_a_bad_reload_body_is_422_naming_the_field(
    client: TestClient, body: Any, field: str
) -> None:
    answer = client.post("/v1/admin/reload", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_error"
    assert answer.json()["details"][0]["field"] == field


def test_a_folder_outside_the_models_dir_is_never_loaded(
    client: TestClient, models: Path, tmp_path: Path, published: Versions
) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(models / published.v2, outside / published.v2)
    answer = reload(client, version=f"../outside/{published.v2}")
    assert answer.status_code == 422, answer.text
    assert serving(client) == published.v1


def test_a_reload_needs_an_admin_key(
    models: Path, isolated_store: Path, published: Versions
) -> None:
    keys = {role: create_key(role) for role in (Role.write, Role.admin)}
    settings = settings_for(models, isolated_store, api_keys=[e for _, e in keys.values()])
    with TestClient(create_app(settings)) as client:
        body = {"version": published.v2}
        assert client.post("/v1/admin/reload", json=body).status_code == 401
        as_writer = {"Authorization": f"Bearer {keys[Role.write][0]}"}
        answer = client.post("/v1/admin/reload", json=body, headers=as_writer)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
        assert client.get("/v1/model", headers=as_writer).json()["version"] == published.v1
        as_admin = {"Authorization": f"Bearer {keys[Role.admin][0]}"}
        answer = client.post("/v1/admin/reload", json=body, headers=as_admin)
        assert answer.status_code == 200 and answer.json()["version"] == published.v2


def test_a_reload_re_reads_the_catalogue(
    models: Path, isolated_store: Path, tmp_path: Path, published: Versions
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "version: 1\noffers:\n  - {id: one, kind: incentive, incentive: free_shipping, value: 5}\n",
        encoding="utf-8",
    )
    settings = settings_for(models, isolated_store, catalog=path)
    with TestClient(create_app(settings)) as client:
        first = client.get("/v1/catalog").json()["fingerprint"]
        path.write_text(
            "version: 1\noffers:\n  - {id: two, kind: incentive, incentive: free_shipping, "
            "value: 6}\n",
            encoding="utf-8",
        )
        later = path.stat().st_mtime_ns + 2_000_000_000  # a save a second later
        os.utime(path, ns=(later, later))
        answer = reload(client)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["swapped"] is False  # the model was already serving
        assert body["catalog"]["changed"] is True
        assert body["catalog"]["fingerprint"] != first and body["catalog"]["last_error"] is None
        assert [o["id"] for o in client.get("/v1/catalog").json()["offers"]] == ["two"]

        # A bad catalogue is refused, the good one keeps serving, and the model reloads.
        path.write_text("version: 1\noffers: [\n", encoding="utf-8")
        os.utime(path, ns=(later + 2_000_000_000, later + 2_000_000_000))
        answer = reload(client, version=published.v2)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["swapped"] is True and body["catalog"]["changed"] is False
        assert "not valid YAML" in body["catalog"]["last_error"]
        assert [o["id"] for o in client.get("/v1/catalog").json()["offers"]] == ["two"]


def test_erased_customers_stay_erased_in_the_reloaded_model(
    client: TestClient, published: Versions
) -> None:
    assert client.delete("/v1/customers/a01").status_code == 200
    assert reload(client, version=published.v2).status_code == 200
    holder = client.app.state.models  # type: ignore[attr-defined]
    assert holder.model.version == published.v2
    assert holder.model.customers.get("a01") is None
    assert holder.model.customers.get("a02") is not None
    assert client.get("/v1/customers/a01/offers").json()["personalized"] is False


def test_a_reload_makes_a_service_started_without_a_model_ready(
    tmp_path: Path, isolated_store: Path, published: Versions
) -> None:
    models = tmp_path / "empty"
    models.mkdir()
    settings = settings_for(models, isolated_store, require_model=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 503
        assert_refused(reload(client), 404, "CURRENT", "no CURRENT file")
        shutil.copytree(published.folder / published.v1, models / published.v1)
        set_current(models, published.v1)
        answer = reload(client)
        assert answer.status_code == 200, answer.text
        assert answer.json()["previous_version"] is None
        assert answer.json()["swapped"] is True
        assert client.get("/health/ready").json()["model_version"] == published.v1


def test_experiment_models_follow_their_alias_on_reload(
    models: Path, isolated_store: Path, tmp_path: Path, published: Versions
) -> None:
    set_alias(models, "candidate", published.v1)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        "version: 1\nexperiments:\n  - name: t\n    salt: s\n    start: 2026-06-01T00:00:00Z\n"
        "    variants:\n      - {name: production, model: production, weight: 50}\n"
        "      - {name: candidate, model: candidate, weight: 50}\n",
        encoding="utf-8",
    )
    settings = settings_for(models, isolated_store, experiments=experiments)
    with TestClient(create_app(settings)) as client:
        assert reload(client).json()["swapped"] is False  # nothing changed
        set_alias(models, "candidate", published.v2)
        answer = reload(client)
        assert answer.status_code == 200, answer.text
        assert answer.json()["swapped"] is True and answer.json()["version"] == published.v1
        listed = client.get("/v1/models").json()["models"]
        assert sorted(m["version"] for m in listed if m["serving"]) == sorted(
            [published.v1, published.v2]
        )


AB_TEST = """\
version: 1
experiments:
  - name: t
    salt: s
    start: 2026-06-01T00:00:00Z
    {end}
    variants:
      - {{name: control, control: true, weight: {control}}}
      - {{name: candidate, model: {model}, weight: 50}}
"""


def ab_test(path: Path, end: str = "", control: int = 50, model: str = "candidate") -> None:
    """Write the experiments file again, stamped a second later than before (an editor's
    save a second later, so a look at the file sees it changed)."""
    before = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    path.write_text(AB_TEST.format(end=end, control=control, model=model), encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def variants_of(client: TestClient | httpx.Client) -> dict[str, str | None]:
    """Each customer's variant as the offers route answers it now."""
    return {
        c: client.get(f"/v1/customers/{c}/offers", params={"k": 1}).json()["variant"]
        for c in CUSTOMERS
    }


def test_a_reload_reads_the_experiments_file_again(
    models: Path,
    isolated_store: Path,
    tmp_path: Path,
    published: Versions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reweighting, ending or a bad edit of the experiments file needed a restart: a
    reload (and SIGHUP) served the file read at the start, and the CLI's report (which
    reads the file) and the API's disagreed. A bad edit keeps the last good file serving
    and says why, where a refused catalogue is said."""
    # The file's own watcher would take each edit before the reload asked here does.
    monkeypatch.setattr("nbo.service.reload.WATCH_EVERY_S", 3600.0)
    set_alias(models, "candidate", published.v2)
    path = tmp_path / "experiments.yaml"
    ab_test(path)
    settings = settings_for(models, isolated_store, experiments=path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/experiments").json()["experiments"][0]["variants"][0][
            "weight"
        ] == pytest.approx(0.5)
        before = variants_of(client)

        ab_test(path, control=150)  # 75% control
        body = reload(client).json()
        assert body["experiments"]["changed"] is True and body["experiments"]["last_error"] is None
        listed = client.get("/v1/experiments").json()
        assert listed["experiments"][0]["variants"][0]["weight"] == pytest.approx(0.75)
        expected = load_experiments(path).experiments[0]
        after = variants_of(client)
        assert after == {c: expected.assign(c).name for c in CUSTOMERS} != before

        ab_test(path, end="end: 2026-06-02T00:00:00Z")  # ended before the clock
        assert reload(client).json()["experiments"]["changed"] is True
        assert set(variants_of(client).values()) == {None}

        for edit, problem in (
            (dict(control=-1), "experiment 't': variant 'control': weight: must be greater"),
            (dict(model="als-v2"), "experiment 't': variant 'candidate': model: model 'als-v2'"),
        ):
            ab_test(path, **edit)  # type: ignore[arg-type]
            answer = reload(client)
            assert answer.status_code == 200, answer.text
            status = answer.json()["experiments"]
            assert status["changed"] is False and problem in status["last_error"]
            assert status["last_error"].startswith(str(path))
            assert status["last_error_problems"] == [status["last_error"]]  # one problem
            listed = client.get("/v1/experiments").json()
            assert listed["last_error"] == status["last_error"]
            assert listed["last_error_problems"] == status["last_error_problems"]
            assert listed["experiments"][0]["end"] is not None  # the last good file serves
            assert set(variants_of(client).values()) == {None}

        ab_test(path)
        body = reload(client).json()
        assert body["experiments"]["changed"] is True and body["experiments"]["last_error"] is None
        assert body["experiments"]["last_error_problems"] is None
        assert client.get("/v1/experiments").json()["last_error"] is None
        assert variants_of(client) == before


def test_an_edit_of_the_experiments_file_is_taken_without_a_reload(
    models: Path, published: Versions, tmp_path: Path
) -> None:
    """Like the catalogue, the experiments file is read again when it changes, with or
    without NBO_WATCH_MODELS: reweighted 50 -> 150 without a reload, the service kept
    the old weights while ``nbo batch`` and ``nbo report experiment`` (which read the
    file on disk) used the new ones, and a quarter of the customers were in another
    variant in the campaign than in the API. Without NBO_WATCH_MODELS the edit does not
    pull in a CURRENT that moved meanwhile; a bad edit is refused and said, and the
    last good file serves on."""
    set_alias(models, "candidate", published.v2)
    path = tmp_path / "experiments.yaml"

    def listed(client: httpx.Client) -> dict[str, Any]:
        answer: dict[str, Any] = client.get("/v1/experiments").json()
        return answer

    def wait_for(client: httpx.Client, done: Any, what: str) -> None:
        for _ in range(POLLS):
            if done(listed(client)):
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}: still {listed(client)}")

    def weight(body: dict[str, Any]) -> float:
        share: float = body["experiments"][0]["variants"][0]["weight"]
        return share

    for extra, control, share in (({}, 450, 0.9), ({"NBO_WATCH_MODELS": "true"}, 150, 0.75)):
        ab_test(path)
        set_current(models, published.v1)
        with (
            running_server(
                models,
                tmp_path / f"events-{control}.db",
                tmp_path / f"server-{control}.log",
                {"NBO_EXPERIMENTS": str(path), **extra},
            ) as server,
            httpx.Client(base_url=server.base, timeout=REQUEST_SECONDS) as client,
        ):
            assert weight(listed(client)) == pytest.approx(0.5)
            if not extra:
                set_current(models, published.v2)  # not followed: no NBO_WATCH_MODELS
            ab_test(path, control=control)
            wait_for(client, lambda body, s=share: weight(body) == pytest.approx(s), "reweighting")
            expected = load_experiments(path).experiments[0]
            assert variants_of(client) == {c: expected.assign(c).name for c in CUSTOMERS}
            if not extra:
                assert serving(client) == published.v1

                ab_test(path, control=-1)
                wait_for(client, lambda body: body["last_error"] is not None, "a bad edit")
                body = listed(client)
                assert "variant 'control': weight: must be greater" in body["last_error"]
                assert weight(body) == pytest.approx(share)  # the last good file serves
                assert serving(client) == published.v1
            server.terminate()


def test_a_pinned_version_wins_over_current(
    models: Path, isolated_store: Path, published: Versions
) -> None:
    set_current(models, published.v2)
    settings = settings_for(models, isolated_store, model_version=published.v1)
    with TestClient(create_app(settings)) as client:
        assert serving(client) == published.v1
        answer = reload(client)  # the pin, not CURRENT
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == published.v1 and answer.json()["swapped"] is False
        assert reload(client, version=published.v2).json()["swapped"] is True  # asked for
        assert serving(client) == published.v2


def test_a_pin_may_name_an_alias_as_a_reload_does(
    models: Path, isolated_store: Path, published: Versions
) -> None:
    """NBO_MODEL_VERSION=previous served what the alias names; it was read as a folder
    name ("models/previous/manifest.json is missing") and the service refused to start."""
    set_alias(models, "previous", published.v2)
    settings = settings_for(models, isolated_store, model_version="previous")
    with TestClient(create_app(settings)) as client:
        assert serving(client) == published.v2
        answer = reload(client)  # the pin again: already serving
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == published.v2 and answer.json()["swapped"] is False


def test_serve_with_a_pin_naming_nothing_says_so_in_one_line(
    models: Path,
    isolated_store: Path,
    published: Versions,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The message names the setting and what exists, as the reload route's 404 does."""
    set_alias(models, "previous", published.v2)
    monkeypatch.setenv("NBO_MODEL_VERSION", "nope")
    assert main(["serve", "--models-dir", str(models), "--port", "1"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("nbo serve: error: NBO_MODEL_VERSION 'nope': no such alias or version")
    assert "aliases: current, previous, production" in err and published.v2 in err


def wait_until_serving(client: httpx.Client, version: str) -> None:
    """Poll /v1/model until it names ``version``; at most POLLS polls."""
    seen = None
    for _ in range(POLLS):
        seen = serving(client)
        if seen == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"still serving {seen}, not {version}, after {POLLS} polls")


def wait_for_log(server: Server, text: str) -> None:
    for _ in range(POLLS):
        if text in server.output():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged after {POLLS} polls\n{server.output()}")


@pytest.fixture(scope="module", params=[1, 2], ids=["1 worker", "2 workers"])
def live(
    request: pytest.FixtureRequest, published: Versions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """One ``nbo serve`` (and its own copy of the two versions) shared by the concurrency
    and SIGHUP tests, with one worker and with two: starting a server costs seconds of
    imports. Neither test assumes which version serves when it starts."""
    folder = tmp_path_factory.mktemp("live")
    models = folder / "models"
    shutil.copytree(published.folder, models)
    workers = {"NBO_WORKERS": str(request.param)}
    with running_server(models, folder / "events.db", folder / "server.log", workers) as server:
        yield server, models
        server.terminate()


def test_concurrent_offers_during_swaps_never_fail_and_name_one_version(
    live: tuple[Server, Path], published: Versions
) -> None:
    """300 offers calls from 8 threads while the main thread swaps versions 6 times,
    each swap after another eighth of the calls has been answered (so calls run before,
    during and after every load). Bounded by counts; the waits have deadlines only so a
    broken server fails the test instead of hanging it."""
    server, _ = live
    calls, workers = 300, 8
    swaps = [published.v2, published.v1] * 3
    answered = 0
    progress = threading.Condition()

    def offers(n: int) -> tuple[int | str, Any]:
        nonlocal answered
        customer = CUSTOMERS[n % len(CUSTOMERS)] if n % 4 else f"new-{n}"
        try:
            answer = client.get(
                f"/v1/customers/{customer}/offers",
                params={"k": 5, "channel": "app" if n % 2 else "email"},
            )
            body = answer.json()
            return answer.status_code, body.get("model_version") if answer.is_success else body
        except Exception as exc:  # a transport error is a failed request too
            return "error", repr(exc)
        finally:
            with progress:
                answered += 1
                progress.notify_all()

    # One client (its pool is thread-safe): a client per call costs more than the call.
    limits = httpx.Limits(max_connections=workers + 1)
    client = httpx.Client(base_url=server.base, timeout=REQUEST_SECONDS, limits=limits)
    with client, ThreadPoolExecutor(max_workers=workers) as pool:
        # Each worker loads both versions once before the calls: the first load of a
        # version compiles its ranker (a few hundred ms here), long enough for all 300
        # calls to be answered before the first swap; later loads take it from the
        # worker's compiled models.
        for version in (published.v2, published.v1):
            assert reload(client, version=version).json()["all_workers"] is True
        futures = [pool.submit(offers, n) for n in range(calls)]
        for i, version in enumerate(swaps):
            with progress:
                share = (i + 1) * calls // (len(swaps) + 2)
                assert progress.wait_for(lambda share=share: answered >= share, timeout=60)
            answer = client.post("/v1/admin/reload", json={"version": version}, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == version and answer.json()["swapped"] is True
        results = [future.result(timeout=60) for future in futures]
        assert serving(client) == swaps[-1]

    failures = [result for result in results if result[0] != 200]
    assert failures == [], failures[:5]
    versions = Counter(version for _, version in results)
    assert set(versions) == {published.v1, published.v2}, versions  # one of two, both seen
    assert sum(versions.values()) == calls


def test_sighup_reloads_current_and_refuses_a_bad_version(
    live: tuple[Server, Path], published: Versions
) -> None:
    server, models = live
    with httpx.Client(base_url=server.base, timeout=REQUEST_SECONDS) as client:
        first = serving(client)
        other = published.v2 if first == published.v1 else published.v1
        set_current(models, other)
        server.process.send_signal(signal.SIGHUP)
        wait_until_serving(client, other)

        bad = corrupt_version(models, other)
        set_current(models, bad)
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, f"reload (SIGHUP) of model {bad} refused")
        assert server.process.poll() is None, server.output()
        assert serving(client) == other
        answer = client.get("/v1/customers/a00/offers")
        assert answer.status_code == 200 and answer.json()["model_version"] == other

        set_current(models, first)
        server.process.send_signal(signal.SIGHUP)
        wait_until_serving(client, first)


def test_the_watcher_follows_current(models: Path, published: Versions, tmp_path: Path) -> None:
    watching = {"NBO_WATCH_MODELS": "true"}
    with (
        running_server(models, tmp_path / "events.db", tmp_path / "server.log", watching) as server,
        httpx.Client(base_url=server.base, timeout=REQUEST_SECONDS) as client,
    ):
        assert serving(client) == published.v1
        set_current(models, published.v2)
        wait_until_serving(client, published.v2)

        bad = unrankable_version(models, published.v1)
        set_current(models, bad)
        wait_for_log(server, f"reload (models/CURRENT changed) of model {bad} refused")
        assert serving(client) == published.v2

        set_current(models, published.v1)
        wait_until_serving(client, published.v1)
        server.terminate()


def reload_failures(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("nbo_model_reload_failures_total "):
            return float(line.split()[1])
    raise AssertionError("no nbo_model_reload_failures_total")


def test_a_refused_current_is_shown_in_the_listing_readiness_and_metrics(
    client: TestClient, models: Path, published: Versions
) -> None:
    """CURRENT moved to a version whose files fail their checksums: the watcher's reload
    refuses it and the last good model serves on, as it should, but only the log said
    so (the listing's current_problem was null, no metric) and the next restart failed.
    The refusal is kept until a reload succeeds: the listing's current_problem and
    readiness (still 200) say it, and a counter counts it."""
    assert reload_failures(client) == 0
    bad = corrupt_version(models, published.v1)
    set_current(models, bad)
    assert reload(client).status_code == 409  # what the watcher and SIGHUP run
    listing = client.get("/v1/models").json()
    assert listing["current"] == bad and listing["serving"] == published.v1
    assert "checksum mismatch" in listing["current_problem"]
    assert "a restart would fail" in listing["current_problem"]
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["warning"].startswith(f"model {bad} refused, still serving")
    assert reload_failures(client) == 1

    set_current(models, published.v2)
    assert reload(client).status_code == 200
    assert client.get("/v1/models").json()["current_problem"] is None
    assert client.get("/health/ready").json()["warning"] is None
    assert reload_failures(client) == 1


def test_reloads_for_the_replicas_are_followed_once_and_never_by_their_own_replica(
    tmp_path: Path,
) -> None:
    """What a worker takes from the store's reload row (``Reloader.replica_request``):
    nothing at its first read (reloads recorded before it started are not its), each
    newer one another replica recorded once, never its own replica's, nothing while the
    store is away (and ``ask_replicas`` says it recorded nothing), and from a row that
    went back (a restored store) the reloads after it."""
    from nbo.catalog.holder import CatalogHolder
    from nbo.service.reload import Reloader
    from nbo.service.state import ModelHolder
    from nbo.store import open_store
    from nbo.store.base import StoreUnavailable

    settings = Settings(store_url=f"sqlite:///{tmp_path / 'nbo.db'}", models_dir=tmp_path)
    store = open_store(settings.store_url)
    ours, theirs = (Reloader(settings, ModelHolder(), CatalogHolder(None)) for _ in range(2))
    ours.store = theirs.store = store
    try:
        store.request_reload("v0", False, theirs.replica)  # before our start
        assert ours.replica_request() is None  # the first read notes it
        assert theirs.ask_replicas("v1", True)
        request = ours.replica_request()
        assert request is not None and (request.version, request.force) == ("v1", True)
        assert ours.replica_request() is None  # once
        assert ours.ask_replicas("v2", False)
        assert ours.replica_request() is None  # our own

        class Away:
            def request_reload(self, *args: object) -> int:
                raise StoreUnavailable("away")

            def reload_request(self) -> None:
                raise StoreUnavailable("away")

        ours.store = Away()  # type: ignore[assignment]
        assert ours.ask_replicas("v3", False) is False
        assert ours.replica_request() is None
        # A restored store: the row's number went back; the reloads after it count.
        ours.store = store
        ours.replicas_seen = 50
        assert ours.replica_request() is None
        assert theirs.ask_replicas("v4", False)
        request = ours.replica_request()
        assert request is not None and request.version == "v4"
    finally:
        store.close()
