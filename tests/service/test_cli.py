"""``nbo serve``: refuses a bad model, setting or catalogue in one line, and a public
address without API keys unless told to; says whether keys are on; serves over real
HTTP."""

from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path

import httpx
import pytest
from support import BAD_CATALOG, ENTRIES, EXPERIMENT, write

from bench.servers import running_server
from nbo.cli import EXIT_USER_ERROR, main


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("nbo serve: error: ")
    return lines[0]


def test_serve_refuses_a_folder_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert "no model" in line and str(tmp_path) in line


def test_serve_refuses_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBO_CLOCK", "not a time")
    code = main(["serve", "--models-dir", str(models_dir)])
    assert code == EXIT_USER_ERROR
    assert "NBO_CLOCK" in _one_error_line(capsys.readouterr().err)


def test_serve_answers_over_http(models_dir: Path, tmp_path: Path) -> None:
    """The real command, gunicorn, uvicorn and all, on a loopback port; stopped within
    seconds."""
    settings = {"NBO_CLOCK": "2026-06-30T12:00:00Z"}
    with running_server(
        models_dir, tmp_path / "store.db", tmp_path / "server.log", settings, ready_seconds=30
    ) as server:
        base = server.base
        answer = httpx.get(f"{base}/v1/customers/a00/offers", params={"k": 3}, timeout=5)
        assert answer.status_code == 200
        body = answer.json()
        assert body["personalized"] is True and len(body["offers"]) == 3
        assert all(offer["item_id"].startswith("A") for offer in body["offers"])
        bad = httpx.get(f"{base}/v1/customers/a00/offers", params={"k": 0}, timeout=5)
        assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "k"


def test_serve_closes_idle_connections_after_the_keepalive_setting(
    models_dir: Path, tmp_path: Path
) -> None:
    """An idle kept-alive connection is closed after NBO_KEEPALIVE_SECONDS (fixed at
    uvicorn's 5 s before: a balancer keeping its connections to nbo longer, nginx's
    upstream default of 60 s or an AWS ALB's, reused one nbo was closing, and a POST on
    it failed with 502). A connection busy within the time stays open."""
    settings = {"NBO_CLOCK": "2026-06-30T12:00:00Z", "NBO_KEEPALIVE_SECONDS": "1"}
    with running_server(
        models_dir, tmp_path / "store.db", tmp_path / "server.log", settings, ready_seconds=30
    ) as server:
        host, port = server.base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            for _ in range(2):  # the second at once, on the same connection
                connection.request("GET", "/health/live")
                answer = connection.getresponse()
                assert answer.status == 200 and answer.read() == b'{"status":"ok"}'
            assert connection.sock is not None
            # Closed by the server (recv answers b"") well before uvicorn's 5 s: a
            # connection still open after 3 s raises TimeoutError.
            connection.sock.settimeout(3)
            assert connection.sock.recv(1) == b""
        finally:
            connection.close()


@pytest.mark.parametrize("broken", ["missing", "bad"])
def test_serve_refuses_a_broken_catalogue_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    models_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broken: str,
) -> None:
    path = tmp_path / "catalog.yaml"
    if broken == "bad":
        write(path, BAD_CATALOG)
    monkeypatch.setenv("NBO_CATALOG", str(path))
    code = main(["serve", "--models-dir", str(models_dir)])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"nbo serve: error: {path}: ")
    expected = "no such file" if broken == "missing" else "offer 'two' field 'value'"
    assert expected in lines[0]


def test_serve_refuses_a_store_url_naming_no_store_before_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # tmp_path holds no model: the store URL is refused first, as the other settings are.
    monkeypatch.setenv("NBO_STORE_URL", "mysql://db/nbo")
    code = main(["serve", "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo serve: error: setting NBO_STORE_URL: unsupported store")


def test_serve_refuses_a_public_host_without_keys_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # tmp_path holds no model: the host is refused first, in one line, naming the flag
    # when the host came from --host, else the variable.
    code = main(["serve", "--host", "0.0.0.0", "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo serve: error: --host: '0.0.0.0'")
    assert line.endswith("set NBO_API_KEYS or NBO_ALLOW_UNAUTHENTICATED=true")
    monkeypatch.setenv("NBO_HOST", "0.0.0.0")
    assert main(["serve", "--models-dir", str(tmp_path)]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo serve: error: setting NBO_HOST: '0.0.0.0'")


@pytest.mark.parametrize(
    ("flags", "variable", "said"),
    [
        (["--workers", "0"], None, "--workers: must be at least 1 (got '0')"),
        ([], ("NBO_WORKERS", "0"), "setting NBO_WORKERS: must be at least 1 (got '0')"),
        (["--port", "70000"], None, "--port: must be at most 65535 (got '70000')"),
        ([], ("NBO_PORT", "x"), "setting NBO_PORT: must be a whole number (got 'x')"),
    ],
)
def test_a_bad_flag_is_named_as_the_flag_a_variable_as_the_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    variable: tuple[str, str] | None,
    said: str,
) -> None:
    if variable is not None:
        monkeypatch.setenv(*variable)
    code = main(["serve", *flags, "--models-dir", str(tmp_path)])
    assert code == EXIT_USER_ERROR
    assert _one_error_line(capsys.readouterr().err) == f"nbo serve: error: {said}"


@pytest.fixture
def served_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The server replaced: what nbo serve would have served, without a server."""
    from nbo.service import cli

    runs: list[dict] = []
    monkeypatch.setattr(
        cli,
        "serve",
        lambda settings, verified=None, store_proven=False: runs.append(settings.model_dump()),
    )
    monkeypatch.setattr(cli, "check_port_free", lambda *named: None)
    return runs


def test_serve_with_the_override_warns_and_serves(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_ALLOW_UNAUTHENTICATED", "true")
    caplog.set_level(logging.INFO)
    assert main(["serve", "--host", "0.0.0.0", "--models-dir", str(models_dir)]) == 0
    assert [run["host"] for run in served_runs] == ["0.0.0.0"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("NO AUTHENTICATION" in message for message in warnings)


def test_serve_warns_when_the_clock_is_far_past_the_models_data(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    """The planted data ends on 2026-06-29: a clock a year on (the real one, for the
    bundled sample, without NBO_CLOCK) makes every customer lapsed. A warning, still
    served; none at the data's end."""
    caplog.set_level(logging.INFO)
    for clock, expected in (("2026-06-30T13:00:00Z", 0), ("2027-06-30T12:00:00Z", 1)):
        caplog.clear()
        monkeypatch.setenv("NBO_CLOCK", clock)
        assert main(["serve", "--models-dir", str(models_dir)]) == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        past = [w for w in warnings if "past the last purchase" in w]
        assert len(past) == expected, warnings
    assert len(served_runs) == 2
    assert past[0].startswith("clock 2027-06-30T12:00:00+00:00 is 366 days past the last ")
    assert "more than its churn horizon (90 days)" in past[0]
    assert "Set NBO_CLOCK near the data's end (e.g. NBO_CLOCK=2026-06-29T" in past[0]


def test_serve_warns_of_a_misspelt_variable_and_serves(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_WROKERS", "2")
    monkeypatch.setenv("NBO_SUPRESSION_DAYS", "all")
    caplog.set_level(logging.INFO)
    assert main(["serve", "--models-dir", str(models_dir)]) == 0
    assert len(served_runs) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "is not an nbo setting" in w] == [
        "NBO_SUPRESSION_DAYS is not an nbo setting and is ignored "
        "(did you mean NBO_SUPPRESSION_DAYS?)",
        "NBO_WROKERS is not an nbo setting and is ignored (did you mean NBO_WORKERS?)",
    ]


def test_serve_with_keys_says_auth_is_on(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps([e.model_dump(mode="json") for e in ENTRIES]))
    caplog.set_level(logging.INFO)
    assert main(["serve", "--host", "0.0.0.0", "--models-dir", str(models_dir)]) == 0
    assert [run["host"] for run in served_runs] == ["0.0.0.0"]
    assert any("API keys on: 3 key(s)" in r.getMessage() for r in caplog.records)
    for entry in ENTRIES:
        assert entry.sha256 not in caplog.text


def test_serve_refuses_a_store_that_is_not_a_database_in_one_line(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    served_runs: list[dict],
) -> None:
    path = tmp_path / "purchases.csv"
    path.write_text("customer_id,item_id\n", encoding="utf-8")
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{path}")
    assert main(["serve", "--models-dir", str(models_dir)]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("nbo serve: error: setting NBO_STORE_URL: ")
    assert "file is not a database" in line
    assert served_runs == []


def test_serve_refuses_an_experiment_model_that_is_not_there_before_serving(
    two_models: tuple[Path, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    served_runs: list[dict],
) -> None:
    """The workers load the experiments' models at their start, where a failure is a
    lifespan traceback and gunicorn's "Worker failed to boot": refused here instead, in
    one line naming the file, the experiment, the variant and the field, as every other
    experiments-file error does (it named the model alone)."""
    experiments = tmp_path / "experiments.yaml"
    write(experiments, EXPERIMENT.replace("model: candidate", "model: nosuchalias"))
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments))
    assert main(["serve", "--models-dir", str(two_models[0])]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(
        f"nbo serve: error: {experiments}: experiment 'ranker-test': variant 'candidate': "
        "model: model 'nosuchalias': no such alias or version"
    )
    assert served_runs == []


def test_serve_verifies_the_experiments_models_too(
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    models, production, candidate = two_models
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    caplog.set_level(logging.INFO)
    assert main(["serve", "--models-dir", str(models)]) == 0
    assert len(served_runs) == 1
    verified = [r.getMessage() for r in caplog.records if "verified" in r.getMessage()]
    assert verified == [f"model {candidate} verified; experiment model {production}"]


def test_serve_names_the_store_it_uses_in_full(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    """A relative SQLite path is the working folder's: the start line says which file,
    and that it is new, so a service started from another folder is seen to be."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBO_STORE_URL", "sqlite:///var/nbo.db")
    caplog.set_level(logging.INFO)
    for new in (True, False):
        caplog.clear()
        assert main(["serve", "--models-dir", str(models_dir)]) == 0
        stores = [r.getMessage() for r in caplog.records if r.getMessage().startswith("store")]
        path = tmp_path.resolve() / "var" / "nbo.db"
        suffix = " (new: no file was there, so it starts empty)" if new else ""
        assert stores == [f"store: SQLite {path}{suffix}"]
    assert len(served_runs) == 2


def test_serve_names_a_postgresql_store_without_its_password(
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    served_runs: list[dict],
) -> None:
    monkeypatch.setenv("NBO_STORE_URL", "postgresql://nbo:s3cret@127.0.0.1:1/nbo")
    caplog.set_level(logging.INFO)
    assert main(["serve", "--models-dir", str(models_dir)]) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("store")]
    assert line.startswith("store PostgreSQL postgresql://nbo:***@127.0.0.1:1/nbo not reachable")
    assert "s3cret" not in caplog.text


def test_serve_refuses_a_store_in_a_folder_that_does_not_exist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    served_runs: list[dict],
) -> None:
    # tmp_path holds no model: the store is refused first, before the model's seconds.
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{missing}")
    assert main(["serve", "--models-dir", str(tmp_path)]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"nbo serve: error: setting NBO_STORE_URL: no folder {missing.parent} ")
    assert served_runs == [] and not (tmp_path / "nonexistent").exists()
