"""``nbo.core.processes``: the heap frozen while a campaign runs, and given back after;
whether a process has ended."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from nbo.core.processes import frozen_heap, process_gone, process_token


def test_the_heap_is_frozen_inside_the_block_and_given_back_after() -> None:
    before = {"a": [1, 2]}  # a container the collector tracks
    assert gc.is_tracked(before)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        assert not any(obj is before for obj in gc.get_objects())
        during = {"b": [3]}
        assert any(obj is during for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert any(obj is before for obj in gc.get_objects())


def test_the_heap_is_given_back_when_the_block_fails() -> None:
    try:
        with frozen_heap():
            raise RuntimeError("a campaign that fails")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0


def test_a_process_is_gone_once_ended_and_its_id_is_not_enough() -> None:
    assert process_gone(process_token()) is False
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = process_token(child.pid)
        assert process_gone(token) is False
    finally:
        child.kill()
        child.wait()
    assert process_gone(token) is True
    # A live process under an id it had before a restart, or another process under a
    # reused id: not the one the token names.
    host, boot, pid, started = process_token().rsplit("/", 3)
    assert process_gone(f"{host}/another-boot/{pid}/{started}") is True
    assert process_gone(f"{host}/{boot}/{pid}/1") is True
    # Another machine's: nothing here can tell.
    assert process_gone(f"not-{host}/{boot}/{pid}/{started}") is None


def test_a_clean_up_is_not_interrupted_and_the_handlers_come_back() -> None:
    """A second Ctrl-C during a campaign's clean-up stopped it half-way (the process then
    waited on its workers for good); inside ``uninterrupted`` Ctrl-C and SIGTERM are
    ignored, and the handlers before are back after."""
    import signal

    from nbo.core.processes import uninterrupted

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with uninterrupted():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
