"""The batch bench's run in a fresh Python: an answer, a failure said, and a child that
dies before it answers is an error, not a wait for ever."""

from __future__ import annotations

import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.batch_bench import local_batch_in_a_fresh_python


def _answers(spec: Any, out: Path, answer: Connection) -> None:
    answer.send((1.5, 2, True, 30))


def _fails(spec: Any, out: Path, answer: Connection) -> None:
    answer.send("ArtifactError: no model")


def _dies(spec: Any, out: Path, answer: Connection) -> None:
    os._exit(3)  # as a kill or a crash in a native library ends it: nothing said


def outcome(target: Any, out: Path) -> Any:
    """What the call returned or raised, within a minute (the bench waited for ever)."""
    got: list[Any] = []

    def call() -> None:
        try:
            got.append(local_batch_in_a_fresh_python(None, out, target))  # type: ignore[arg-type]
        except RuntimeError as exc:
            got.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "waited on a child that had ended"
    return got[0]


def test_the_child_answers_or_says_why_it_failed(tmp_path: Path) -> None:
    assert outcome(_answers, tmp_path / "out.parquet") == (1.5, 2, True, 30)
    failed = outcome(_fails, tmp_path / "out.parquet")
    assert str(failed) == "the batch in a fresh Python failed: ArtifactError: no model"


def test_a_child_that_dies_before_it_answers_is_an_error(tmp_path: Path) -> None:
    died = outcome(_dies, tmp_path / "out.parquet")
    assert isinstance(died, RuntimeError)
    assert str(died).startswith("the batch in a fresh Python ended without an answer (exit code 3")
