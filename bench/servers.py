"""A real ``nbo serve`` process on a free loopback port, for benchmarks and tests that
must go through HTTP (gunicorn and its uvicorn workers): one way to start, wait for and
stop a server.

The server reads ``NBO_*`` settings from its environment (this process's, plus the
store, clock and any ``settings`` given); its output goes to ``log``. Every wait has a
deadline: start-up imports scikit-learn and LightGBM and verifies the model, seconds on
a busy two-core machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_SECONDS = 60
STOP_SECONDS = 10
DEFAULT_WORKERS = 2


class ServerError(RuntimeError):
    """The server exited at start or did not become ready in time (its log attached)."""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    store: Path | None  # the SQLite file; None on a store server

    def output(self) -> str:
        """The end of the server's log, for a failure message."""
        return self.log.read_text(errors="replace")[-4000:]

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM (or ``sig``: SIGINT stops as gracefully), and check the stop was
        graceful: the process ends within ``STOP_SECONDS`` (gunicorn's master exits 0;
        -SIGTERM, a process ended by the signal, counts as clean too) and the workers'
        shutdown closed the store.
        ``store.close()`` copies the write-ahead log into the file and truncates it (the
        last connection to close also deletes it): a log left with content means a
        shutdown never reached ``store.close()`` (SQLite only)."""
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            raise ServerError(
                f"server did not stop within {STOP_SECONDS} s of {sig.name}\n{self.output()}"
            ) from None
        if code not in (0, -sig):
            raise ServerError(f"exit code {code}\n{self.output()}")
        if self.store is None:
            return
        wal = self.store.with_name(self.store.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ServerError(f"store not closed at shutdown\n{self.output()}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(
    models_dir: Path,
    store: Path | str,
    log: Path,
    settings: Mapping[str, str] | None = None,
    ready_seconds: float = READY_SECONDS,
) -> Iterator[Server]:
    """``nbo serve`` on 127.0.0.1 and a free port on ``store`` (a SQLite file, or a store
    URL such as ``postgresql://...``, which several servers may share), with
    ``DEFAULT_WORKERS`` workers unless ``settings`` names ``NBO_WORKERS``, ready
    (``/health/ready`` answers 200 within ``ready_seconds``); on the way out SIGTERM,
    then SIGKILL if it hangs."""
    port = free_port()
    url = store if isinstance(store, str) else f"sqlite:///{store}"
    env = {
        **os.environ,
        "NBO_LOG_LEVEL": "warning",
        # Two workers unless the caller says: the default (one per core) would start
        # dozens per server on a large CI machine.
        "NBO_WORKERS": str(DEFAULT_WORKERS),
        "NBO_STORE_URL": url,
        **(settings or {}),
    }
    command = [sys.executable, "-m", "nbo.cli", "serve", "--models-dir", str(models_dir)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=log.parent,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    file = store if isinstance(store, Path) else None
    server = Server(process, f"http://127.0.0.1:{port}", log, file)
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            try:
                if httpx.get(f"{server.base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise ServerError(f"server exited at start\n{server.output()}")
            if time.monotonic() > deadline:
                raise ServerError(f"server not ready in {ready_seconds} s\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_SECONDS)
