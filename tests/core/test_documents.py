"""Documents a person writes (the catalogue, experiments): every way a file can fail to
parse is one line naming the file and the place, never a traceback; a key written
twice is refused, not silently overwritten; times are text, read by one rule."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from support import write

from nbo.core.documents import document_time, read_document
from nbo.core.errors import NboError


class DocumentError(NboError):
    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")


def read(path: Path) -> dict:
    raw, _ = read_document(path, "a document", "version", DocumentError)
    return raw


def refusal(path: Path) -> str:
    with pytest.raises(DocumentError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PyYAML's constructors raise plain Python errors: each is one line with its place.
        ("version: 1\nn: !!int abc\n", "not valid YAML (line 2, column 4): 'abc' is not"),
        ("version: 1\nn: !!float x\n", "not valid YAML (line 2, column 4): 'x' is not"),
        ("version: 1\nb: !!bool maybe\n", "(line 2, column 4): 'maybe' is not a valid bool"),
        ("version: 1\nn: " + "9" * 5000 + "\n", "not valid YAML (line 2, column 4)"),
        ("version: 1\nn: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
    ],
)
def test_every_yaml_failure_is_one_line_naming_the_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refusal(write(tmp_path / "doc.yaml", text))


@pytest.mark.parametrize(
    "text", ['{"version": 1, "n": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000]
)
def test_every_json_failure_is_one_line(tmp_path: Path, text: str) -> None:
    assert "not valid JSON" in refusal(write(tmp_path / "doc.json", text))


def test_times_are_read_as_written_not_by_yaml(tmp_path: Path) -> None:
    """An impossible date is text (YAML 1.1 would raise "day is out of range"), left
    for the document's own rule (``document_time``) to refuse naming the field."""
    raw = read(write(tmp_path / "doc.yaml", "version: 1\na: 2012-02-30\nb: 2011-12-09T13:00:00Z\n"))
    assert raw == {"version": 1, "a": "2012-02-30", "b": "2011-12-09T13:00:00Z"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\noffer:\n  lever: 1.3\n  lever: 0.0\n",
            "not valid YAML (line 4, column 3): duplicate key 'lever' (first at line 3)",
        ),
        (
            "version: 1\ncategories:\n  christmas: [a]\n  easter: [b]\n  christmas: [c]\n",
            "(line 5, column 3): duplicate key 'christmas' (first at line 3)",
        ),
        ("version: 1\nversion: 1\n", "(line 2, column 1): duplicate key 'version'"),
        ("version: 1\nx: {a: 1, a: 2}\n", "(line 2, column 11): duplicate key 'a'"),
    ],
)
def test_a_key_written_twice_is_refused_naming_it_and_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refusal(write(tmp_path / "doc.yaml", text))


def test_a_merge_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then a key of the merged mapping is YAML's way to override one."""
    text = "version: 1\nbase: &b {lever: 1, margin: 0.5}\nitem:\n  <<: *b\n  lever: 2\n"
    assert read(write(tmp_path / "doc.yaml", text))["item"] == {"lever": 2, "margin": 0.5}


def test_a_json_key_written_twice_is_refused_naming_it_and_its_object(tmp_path: Path) -> None:
    text = '{"version": 1,\n "offers": [\n  {"id": "a", "lever": 1.3, "lever": 0}]}'
    message = refusal(write(tmp_path / "doc.json", text))
    assert "not valid JSON (line 3, column 3): duplicate key 'lever' in this object" in message
    assert read(write(tmp_path / "ok.json", '{"version": 1, "a": {"b": {}}}')) == {
        "version": 1,
        "a": {"b": {}},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2011-12-09", datetime(2011, 12, 9, tzinfo=UTC)),
        ("2011-12-09T13:00:00+01:00", datetime(2011, 12, 9, 12, tzinfo=UTC)),
        (date(2011, 12, 9), datetime(2011, 12, 9, tzinfo=UTC)),
    ],
)
def test_a_document_time_is_iso_8601_in_utc(value: object, expected: datetime) -> None:
    assert document_time(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (20111215, "must be an ISO 8601 time such as 2026-12-01T00:00:00Z (got 20111215)"),
        (1.5, "(got 1.5)"),
        (True, "(got True)"),
        ("2012-02-30", "(got '2012-02-30': day is out of range for month)"),
        ("someday", "(got 'someday')"),
    ],
)
def test_a_number_or_an_impossible_date_is_not_a_time(value: object, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        document_time(value)
    assert expected in str(caught.value)
