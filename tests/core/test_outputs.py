"""``nbo.core.outputs``: an output path checked before any work, with the flag and the
problem in the message; files that belong together written together.

Tests run as root in CI, where permission bits never refuse: a path under a regular
file, and ``/proc`` (where no file can be created), stand for folders nbo cannot write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nbo.core.outputs import (
    OutputError,
    check_output_file,
    check_output_folder,
    write_file,
    write_files_together,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("a regular file\n", encoding="utf-8")
    return path


def test_a_file_can_be_put_in_an_existing_folder(tmp_path: Path) -> None:
    check_output_file(tmp_path / "x.json", "--out")
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    check_output_file(tmp_path / "x.json", "--out")  # replaced later: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # the probe is gone


def test_a_file_that_cannot_be_put_names_the_flag_and_the_problem(
    tmp_path: Path, afile: Path
) -> None:
    cases = [
        (tmp_path, "is a folder; name a file"),
        (tmp_path / "missing" / "x.json", f"the folder {tmp_path / 'missing'} does not exist"),
        (afile / "x.json", f"cannot be written ({afile} is not a folder)"),
    ]
    for path, problem in cases:
        with pytest.raises(OutputError) as caught:
            check_output_file(path, "--out")
        assert str(caught.value) == f"--out {path}: {problem}"


@linux_only
def test_a_folder_no_file_can_be_created_in_is_refused() -> None:
    with pytest.raises(OutputError, match=r"^--out /proc/x\.json: cannot be written \(no file"):
        check_output_file(Path("/proc/x.json"), "--out")
    with pytest.raises(OutputError, match=r"^--models-dir /proc/m: cannot be written \(no file"):
        check_output_folder(Path("/proc/m"), "--models-dir")


def test_a_folder_may_exist_or_be_made_under_folders(tmp_path: Path) -> None:
    check_output_folder(tmp_path, "--out")
    check_output_folder(tmp_path / "a" / "b", "--out")
    assert not (tmp_path / "a").exists()  # checked, not made
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_made_names_the_flag_and_the_problem(
    tmp_path: Path, afile: Path
) -> None:
    cases = [
        (afile, "exists and is not a folder"),
        (afile / "models", f"cannot be created ({afile} is not a folder)"),
        (afile / "a" / "b", f"cannot be created ({afile} is not a folder)"),
    ]
    for folder, problem in cases:
        with pytest.raises(OutputError) as caught:
            check_output_folder(folder, "--models-dir")
        assert str(caught.value) == f"--models-dir {folder}: {problem}"


def test_files_written_together_all_appear(tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = write_files_together(out, {"a.json": "{}\n", "a.html": "<p>"}, "--out")
    assert written == [out / "a.json", out / "a.html"]
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "a.json"]
    assert (out / "a.html").read_text(encoding="utf-8") == "<p>"
    mode = os.stat(out / "a.json").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as any file the user writes, not a temporary's 0600


def test_files_that_cannot_all_be_written_leave_the_old_ones(tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_files_together(out, {"a.json": "old", "a.html": "old"}, "--out")
    (out / "a.html").unlink()
    (out / "a.html").mkdir()  # the second cannot be replaced
    with pytest.raises(OutputError, match=r"a\.html is a folder"):
        write_files_together(out, {"a.json": "new", "a.html": "new"}, "--out")
    assert (out / "a.json").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "a.json"]


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    out.mkdir()

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError) as caught:
        write_files_together(out, {"a.json": "{}", "a.html": "<p>"}, "--out")
    assert str(caught.value) == f"--out {out}: cannot be written (No space left on device)"
    assert list(out.iterdir()) == []


def test_a_file_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "x.json"
    assert write_file(out, "{}\n", "--out") == out
    assert out.read_text(encoding="utf-8") == "{}\n"

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError) as caught:
        write_file(out, "[]\n", "--out")
    assert str(caught.value) == f"--out {out}: cannot be written (No space left on device)"
    assert out.read_text(encoding="utf-8") == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
