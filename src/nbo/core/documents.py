"""Configuration documents a person writes (the offer catalogue, experiments): YAML or
JSON files read into a mapping, every failure one line naming the file and the place.
``read_text`` is the reading alone, for the TOML files (training configs, mappings).

Both formats are read the same way: a key written twice in one mapping is refused (YAML
and Python's JSON reader would silently keep the last one, so ``lever: 1.3`` then
``lever: 0.0`` would switch an offer off), and a time is text, as in JSON, read by
``document_time`` where a field is a time (YAML 1.1 would read ``2012-02-30`` as a date
and fail with a Python error, and ``20111215`` as a number of seconds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime
from json.decoder import JSONObject  # type: ignore[attr-defined]
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationInfo
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from nbo.core.errors import NboError
from nbo.core.vocabulary import in_utc

SUFFIXES: Final = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}

# (the file, the problem) -> the error to raise: each document kind has its own class.
ErrorFactory = Callable[[str, str], NboError]


def read_document(
    path: Path, what: str, sections: str, error: ErrorFactory, missing_hint: str = ""
) -> tuple[dict[str, Any], bytes]:
    """The file's top-level mapping and its bytes. ``what`` names the kind of file in
    messages ("a catalogue"), ``sections`` its top-level keys ("version, experiments")."""
    source = str(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise error(source, f"{what} is a .yaml, .yml or .json file")
    text, content = read_text(path, what, error, missing_hint)
    empty = f"the file is empty; {what} starts with 'version: 1'"
    if not text.strip():
        raise error(source, empty)
    try:
        raw = _UniqueKeysDecoder().decode(text) if kind == "JSON" else _load_yaml(text)
    except json.JSONDecodeError as exc:
        raise error(
            source, f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(source, f"not valid {kind}{at}: {problem}") from None
    except RecursionError:
        raise error(source, f"not valid {kind}: nested too deeply") from None
    except ValueError as exc:
        # JSON: a number of more than 4,300 digits (Python's limit on int()).
        raise error(source, f"not valid {kind}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raise error(source, empty)
    if not isinstance(raw, dict):
        raise error(
            source, f"{what} is a mapping of sections ({sections}), not a {type(raw).__name__}"
        )
    return raw, content


def read_text(
    path: Path, what: str, error: ErrorFactory, missing_hint: str = ""
) -> tuple[str, bytes]:
    """The file's text and its bytes, for any file a person writes (catalogues, training
    configs, column mappings): a missing file, a folder, an unreadable or a non-UTF-8 file
    is one line naming the file, never a traceback. ``what`` names the kind of file
    ("a catalogue")."""
    source = str(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise error(
            source, "no such file" + (f" ({missing_hint})" if missing_hint else "")
        ) from None
    except IsADirectoryError:
        raise error(source, f"is a directory, not {what}") from None
    except OSError as exc:
        raise error(source, f"cannot be read: {exc.strerror or exc}") from None
    try:
        # "utf-8-sig": a byte-order mark (Notepad's "UTF-8 with BOM") is not text; TOML
        # would call it an invalid statement at line 1.
        return content.decode("utf-8-sig"), content
    except UnicodeDecodeError as exc:
        raise error(source, f"not UTF-8 text (byte {exc.start})") from None


# --- YAML ---------------------------------------------------------------------------

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _DocumentLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with three changes: a key written twice in one mapping is
    an error naming it and both lines; a timestamp is its text; and a value a
    constructor cannot read (``!!int abc``, a 5,000-digit number) is a YAMLError at its
    place, where PyYAML would raise a bare ValueError (or worse) with no place at all."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, OverflowError):
            written = node.value if isinstance(node, ScalarNode) else node.tag
            kind = node.tag.rpartition(":")[2]
            raise ConstructorError(
                None, None, f"{written!r} is not a valid {kind}", node.start_mark
            ) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # "<<: *base": keys written after it override the base's
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_line.get(key)
                except TypeError:
                    continue  # not hashable: the base class says so, at its place
                if earlier is not None:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {earlier}); write each key once",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_timestamp_as_text(self, node: ScalarNode) -> str:
        return str(self.construct_scalar(node))


_DocumentLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", _DocumentLoader.construct_timestamp_as_text
)


class WrittenInt(int):
    """An integer YAML read from text that is not its plain digits: ``0123`` (octal, 83,
    in YAML 1.1), ``1_000``, ``0x1F``, ``1:30`` (sexagesimal, 90). A number where a number
    is wanted; ``written`` keeps the text for a field that takes an id, which is text
    whatever it looks like (an item ``- 0123`` in a category was the item '83')."""

    written: str


# An integer as a person means it: decimal digits (``_`` may group them), no leading zero.
_DECIMAL_INT: Final = re.compile(r"[-+]?(?:0|[1-9][0-9_]*)")


def plain_number(value: Any) -> Any:
    """A number field's value, refused (ValueError naming what YAML made of it) when YAML
    read it from text that is not a plain decimal number: ``010`` is YAML 1.1's octal 8,
    ``0x1F`` 31, ``1:30`` 90. A marketer who writes ``value: 010`` means ten, and reading
    it as ten would make nbo disagree with every other YAML reader of the same file (a
    linter, a script that checks it): a refusal costs one edit and leaves no doubt. A
    pydantic ``BeforeValidator`` for every number field of a document. A fraction in base
    60 (``1:30.5``, 90.5) is refused alike (``WrittenFloat``)."""
    written = getattr(value, "written", None)
    if written is None or (isinstance(value, int) and _DECIMAL_INT.fullmatch(written)):
        return value
    how = _how_yaml_reads(written) or "octal, as it starts with 0"
    raise ValueError(
        f"{written!r} is {value} to YAML ({how}): write the number in plain decimal "
        "digits, without a leading 0"
    )


def _how_yaml_reads(written: str) -> str | None:
    """Why YAML 1.1 read ``written`` as another number than its digits say, if it did."""
    digits = written.lstrip("+-")
    if ":" in digits:
        return "base 60, as a time"
    if digits[:2].lower() == "0x":
        return "hexadecimal"
    if digits[:2].lower() == "0b":
        return "binary"
    if len(digits) > 1 and digits[0] == "0" and digits[1] != ".":
        return "octal, as it starts with 0"
    return "its '_' dropped" if "_" in digits else None


def yaml_reading(value: Any) -> str:
    """What YAML made of a value that is not text, in words for the person who wrote it:
    ``the number 83 ('0123': octal, as it starts with 0)``, ``the boolean true``."""
    if isinstance(value, bool):
        said = str(value).lower()
        return f"the boolean {said} (unquoted yes/no, on/off, true/false are YAML's booleans)"
    if isinstance(value, int | float):
        written = getattr(value, "written", None)
        how = None if written is None else _how_yaml_reads(written)
        return f"the number {value!r}" + (f" ({written!r}: {how})" if how else "")
    if value is None:
        return "null (nothing)"
    if isinstance(value, datetime | date):
        return f"the date {value.isoformat()}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def json_reading(value: Any) -> str:
    """``yaml_reading`` for a JSON document, whose reader turns nothing written as text
    into another type: the value as JSON wrote it."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if value is None:
        return "null"
    return "an array" if isinstance(value, list) else "an object"


# The validation context's key naming a document's format, "YAML" or "JSON"
# (``SUFFIXES``' values): the loaders pass it, so a refusal names the reader the file had.
FORMAT: Final = "format"


def document_context(path: Path) -> dict[str, str]:
    """The validation context of the document at ``path`` (its format, ``FORMAT``)."""
    return {FORMAT: SUFFIXES.get(path.suffix.lower(), "YAML")}


def plain_text(value: Any, info: ValidationInfo) -> str:
    """A text field's value: text only. Anything else is refused (ValueError saying what
    YAML read it as), never turned into text: ``salt: 0123`` unquoted is YAML 1.1's octal
    83 and became '83', reshuffling every customer of the experiment; ``yes`` became
    'True', ``1:30`` '90', ``1_000`` '1000'. Quoting it is the one fix, whatever the
    value. A pydantic ``BeforeValidator`` for every text field of a document. A JSON
    document's value is named as JSON wrote it (it was told "YAML read it as", which
    sent its author looking for YAML in a JSON file)."""
    if isinstance(value, str):
        return value
    if (info.context or {}).get(FORMAT) == "JSON":
        raise ValueError(f"must be text, not {json_reading(value)}: write it in quotes")
    raise ValueError(f"must be text, and YAML read it as {yaml_reading(value)}: quote it")


class WrittenFloat(float):
    """A fraction YAML read in base 60 (``1:30.5`` is 90.5 in YAML 1.1), with its text in
    ``written``: refused where a number is wanted, as ``1:30`` is (``plain_number``).
    Other fractions are read as written (``010.5`` is 10.5) and stay plain floats."""

    written: str


def _construct_float_keeping_text(loader: yaml.SafeLoader, node: ScalarNode) -> float:
    value = loader.construct_yaml_float(node)
    text = str(node.value)
    if ":" not in text:
        return value
    kept = WrittenFloat(value)
    kept.written = text
    return kept


def _construct_int_keeping_text(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    value = loader.construct_yaml_int(node)
    text = str(node.value)
    if text == str(value):
        return value
    kept = WrittenInt(value)
    kept.written = text
    return kept


_DocumentLoader.add_constructor("tag:yaml.org,2002:int", _construct_int_keeping_text)
_DocumentLoader.add_constructor("tag:yaml.org,2002:float", _construct_float_keeping_text)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_DocumentLoader)


# --- JSON ---------------------------------------------------------------------------


class _UniqueKeysDecoder(json.JSONDecoder):
    """Python's JSON reader, refusing an object that holds a key twice, at the object's
    place (``object_pairs_hook`` alone would know the key but not where it is)."""

    def __init__(self) -> None:
        super().__init__(object_pairs_hook=list)
        self.parse_object = self._parse_object
        self.scan_once = py_make_scanner(self)

    @staticmethod
    def _parse_object(
        s_and_end: tuple[str, int],
        strict: bool,
        scan_once: Any,
        hook: Any,
        pairs_hook: Any,
        memo: Any = None,
    ) -> tuple[dict[str, Any], int]:
        text, start = s_and_end
        pairs, end = JSONObject(s_and_end, strict, scan_once, None, list, memo)
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise json.JSONDecodeError(
                    f"duplicate key {key!r} in this object; write each key once", text, start - 1
                )
            result[key] = value
        return result, end


# --- times --------------------------------------------------------------------------

TIME_EXAMPLE: Final = "2026-12-01T00:00:00Z"


def document_time(value: Any) -> datetime:
    """A time a person wrote: ISO 8601 text (a date alone is its midnight), or a date or
    datetime built in code; without a zone it is UTC. A pydantic ``BeforeValidator``.

    Numbers are refused rather than read as unix seconds: ``20111215`` is a date typed
    without its dashes, not a moment in 1970 (and seconds or milliseconds would be a
    guess). Every time in a catalogue or an experiment file is read here.
    """
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            # "Invalid isoformat string" says no more than the rule; a range says why.
            reason = "" if str(exc).startswith("Invalid isoformat") else f": {exc}"
            raise ValueError(
                f"must be an ISO 8601 time such as {TIME_EXAMPLE} (got {value!r}{reason})"
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        moment = datetime(value.year, value.month, value.day)
    if not isinstance(moment, datetime):
        raise ValueError(f"must be an ISO 8601 time such as {TIME_EXAMPLE} (got {value!r})")
    try:
        return in_utc(moment)
    except OverflowError:
        raise ValueError(f"is out of range (got {value!r})") from None
