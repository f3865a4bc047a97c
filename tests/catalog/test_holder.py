"""The live catalogue: the holder re-reads a changed file without a restart, keeps serving
the last good one when a new one is refused, and never shows a reader half a catalogue."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from support import BAD_CATALOG, GOOD_CATALOG, GOOD_CATALOG_2, rewrite, write

from nbo.catalog.holder import CatalogHolder
from nbo.catalog.schema import DEFAULT_FINGERPRINT
from nbo.core.errors import CatalogError


def offer_ids(holder: CatalogHolder) -> list[str]:
    return [offer.id for offer in holder.current().offers]


def test_the_holder_reloads_a_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    first = holder.current()
    assert offer_ids(holder) == ["one"] and holder.current() is first  # unchanged: same object
    rewrite(path, GOOD_CATALOG_2)
    assert offer_ids(holder) == ["two"]
    status = holder.status()
    assert status["fingerprint"] == holder.current().fingerprint != first.fingerprint
    assert (status["source"], status["offers"], status["last_error"]) == (str(path), 1, None)


def test_a_bad_new_file_is_refused_and_the_old_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    good = holder.current()
    rewrite(path, BAD_CATALOG)
    with caplog.at_level(logging.ERROR, logger="nbo.catalog"):
        assert holder.current() is good
        assert holder.current() is good
    assert len(caplog.records) == 1  # logged once, not on every check
    status = holder.status()
    assert status["fingerprint"] == good.fingerprint
    assert status["last_error"].startswith(f"{path}: offer 'two' field 'value': ")
    assert datetime.fromisoformat(status["last_error_at"]).tzinfo is not None
    # A later fixed file is picked up and the error cleared.
    rewrite(path, GOOD_CATALOG_2)
    assert offer_ids(holder) == ["two"]
    assert holder.status()["last_error"] is None


def test_any_failure_to_load_is_reported_and_a_later_good_file_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a load raises (a bug, not only a CatalogError), the file is not taken
    as seen-and-fine: the error is kept in ``last_error`` and logged, the old catalogue
    serves, and the next edit is read."""
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    good = holder.current()

    def broken(path: Path) -> None:
        raise ValueError("month must be in 1..12")

    monkeypatch.setattr("nbo.catalog.holder.load_catalog", broken)
    rewrite(path, GOOD_CATALOG_2)
    with caplog.at_level(logging.ERROR, logger="nbo.catalog"):
        assert holder.current() is good
        assert holder.current() is good
    assert len(caplog.records) == 1
    assert holder.status()["last_error"] == (
        f"{path}: could not be read (ValueError: month must be in 1..12)"
    )
    monkeypatch.undo()
    rewrite(path, GOOD_CATALOG_2)
    assert offer_ids(holder) == ["two"] and holder.status()["last_error"] is None


def test_a_deleted_file_keeps_the_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    path.unlink()
    assert offer_ids(holder) == ["one"]
    assert "the file is gone" in holder.status()["last_error"]
    write(path, GOOD_CATALOG_2)
    assert offer_ids(holder) == ["two"]


def test_a_file_swapped_in_by_rename_is_seen(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    fresh = write(tmp_path / "new.yaml", GOOD_CATALOG_2)
    mtime = path.stat().st_mtime_ns
    os.utime(fresh, ns=(mtime, mtime))  # same mtime; a new inode tells it apart
    fresh.replace(path)
    assert offer_ids(holder) == ["two"]


def test_the_holder_looks_at_the_file_at_most_once_per_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=3600)
    rewrite(path, GOOD_CATALOG_2)
    assert offer_ids(holder) == ["one"]  # not yet looked at
    holder.refresh()
    assert offer_ids(holder) == ["two"]


def test_readers_in_threads_always_see_a_whole_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.yaml", GOOD_CATALOG)
    holder = CatalogHolder(path, check_every_s=0)
    seen: set[tuple[str, ...]] = set()

    def read() -> None:
        for _ in range(200):
            seen.add(tuple(offer.id for offer in holder.current().offers))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for text in (GOOD_CATALOG_2, BAD_CATALOG, GOOD_CATALOG, GOOD_CATALOG_2):
        rewrite(path, text)
    for thread in threads:
        thread.join()
    assert seen <= {("one",), ("two",)}
    assert offer_ids(holder) == ["two"]


def test_the_holder_refuses_to_start_on_a_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        CatalogHolder(tmp_path / "missing.yaml")
    with pytest.raises(CatalogError, match="offer 'two' field 'value'"):
        CatalogHolder(write(tmp_path / "catalog.yaml", BAD_CATALOG))


def test_without_a_file_the_holder_serves_the_default() -> None:
    holder = CatalogHolder(None, check_every_s=0)
    assert holder.current().fingerprint == DEFAULT_FINGERPRINT
    assert holder.status() | {"loaded_at": None} == {
        "source": None,
        "fingerprint": DEFAULT_FINGERPRINT,
        "loaded_at": None,
        "offers": 0,
        "last_error": None,
        "last_error_problems": None,
        "last_error_at": None,
    }
