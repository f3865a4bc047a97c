"""``nbo serve``: refuses a bad model or setting in one line; serves over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

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
