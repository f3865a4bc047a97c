"""``nbo serve``'s processes: gunicorn's master with uvicorn workers, the app imported once.

Why gunicorn rather than uvicorn's own ``--workers``: uvicorn starts its workers with
``spawn``, so each imports the app again (pandas, scikit-learn, LightGBM, pyarrow: about
240 MB, measured at 159 MB of memory of its own per worker on the Online Retail model).
Gunicorn forks its workers from a master that built the app first (``preload_app``):
the imported libraries and the app are shared copy-on-write, and the model's arrays
are memory maps of the same files, shared through the page cache. What a worker holds
alone is what it builds after the fork (the model's Python objects, its SQLite
connections, its event loop and the pages the interpreter writes to): docs/service.md,
"Workers", gives the figures.

Five things differ from gunicorn's defaults, each for nbo's sake:

- **SIGHUP reloads the model** in every worker (``WorkerBoard``) instead of restarting
  the workers, which is what SIGHUP means to ``nbo serve`` with one process or many.
- **Logs** go through nbo's handler (``nbo.service.logs``): gunicorn's and uvicorn's
  lines are JSON like the rest, each with the pid of the process that wrote it.
- **SIGINT stops as SIGTERM does**: the master passes it on as SIGQUIT, which the
  uvicorn worker alone ignored until the master SIGKILLed it (``NboWorker._serve``).
- **Workers die with the master** (Linux): a SIGKILLed master would otherwise leave its
  workers serving, holding the port, with no one to restart or stop them.
- **No control socket** (gunicorn 25's ``gunicornc``): one path in the home folder for
  every gunicorn of the user, and nothing nbo needs.
- **Each worker listens on its own socket** (``SO_REUSEPORT``), and the kernel spreads
  new connections over them. On one shared socket, the first worker to wake takes every
  connection waiting (asyncio accepts up to the backlog at once), so a client or proxy
  that opens its keep-alive connections together lands them all on one worker: with
  wrk's 16 connections, 16 and 0 in three of five runs here. ``nbo serve`` checks that
  no other process listens on the port first (``check_port_free``), since the option
  would let a second ``nbo serve`` of the same user share it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any, ClassVar

from fastapi import FastAPI
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from prometheus_client import multiprocess
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from nbo.core import processes
from nbo.core.errors import NboError
from nbo.runtime.workers import WorkerBoard
from nbo.service.protocol import BoundedHttpProtocol
from nbo.settings import Settings

log = logging.getLogger(__name__)

# How long a worker may leave the master without a sign of life before it is killed and
# replaced. A worker loads the model before it answers: generous, for a large model on
# a busy machine (the Online Retail model loads in about a second).
WORKER_TIMEOUT_S = 120
# How long SIGTERM waits for requests in flight before the workers are killed.
GRACEFUL_TIMEOUT_S = 30


class NboLogger(Logger):
    """Gunicorn's logger without handlers of its own: its lines (``gunicorn.error``) reach
    the root logger, which ``configure_logging`` set up, as every other line does. No
    access log: nbo's request middleware writes it."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self._access_log_enabled = False
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        self.error_log.propagate = True
        self.access_log.propagate = False
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # Each worker binds a socket of its own (``reuse_port``), so the master holds
        # none, and gunicorn's start line would read "Listening at:  (PID)": it names the
        # address instead.
        if msg == _LISTENING and args and not args[0]:
            msg = "Listening at: %s (%s; each worker on a socket of its own)"
            args = (",".join(self.cfg.bind), *args[1:])
        super().info(msg, *args, **kwargs)


# Gunicorn's start line (gunicorn.arbiter.Arbiter.start).
_LISTENING = "Listening at: %s (%s)"


class NboWorker(UvicornWorker):
    """uvicorn in a gunicorn worker, as ``uvicorn.run`` served one process before: no
    uvicorn access log (the request middleware writes one), uvicorn's other lines to the
    root logger (``UvicornWorker`` hands them to gunicorn's handlers, which ``NboLogger``
    leaves empty)."""

    # HTTP: httptools (uvicorn's "auto" when it is installed, as it is with nbo), with
    # bounds on a request's head (``nbo.service.protocol``).
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": BoundedHttpProtocol,
        "access_log": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        logger = logging.getLogger("uvicorn.error")
        logger.handlers.clear()
        logger.propagate = True
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False

    def init_process(self) -> None:
        processes.die_with(self.ppid)
        super().init_process()

    async def _serve(self) -> None:
        """``UvicornWorker._serve``, with a SIGQUIT that stops the server. Gunicorn's
        master sends SIGQUIT to its workers when it is stopped with SIGINT (or SIGQUIT);
        uvicorn_worker's handler only marks the gunicorn worker dead, which uvicorn never
        reads, so each worker served on until the master SIGKILLed it GRACEFUL_TIMEOUT_S
        later ("Perhaps out of memory?"). Here SIGQUIT stops the server as SIGTERM
        does (requests in flight are finished, the lifespan's shutdown closes the
        store); a second one stops it without waiting. uvicorn serves the listening
        sockets, not gunicorn's wrappers of them (see below)."""
        self.config.app = self.wsgi
        server = Server(config=self.config)
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, self._quit, server)
        # The sockets themselves, not gunicorn's wrappers of them: uvloop closes the
        # descriptor of a socket it was given, and then the wrapper, which failed on it
        # at every stop ("Error while closing socket [Errno 9] Bad file descriptor").
        await server.serve(sockets=[listener.sock for listener in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def _quit(self, server: Server) -> None:
        self.alive = False
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True


class NboArbiter(Arbiter):
    """Gunicorn's master, with SIGHUP publishing a reload to the workers."""

    def handle_hup(self) -> None:
        application: NboServer = self.app
        application.reload_workers("SIGHUP")


class NboServer(BaseApplication):
    """Gunicorn configured from nbo's settings, serving an app built before the fork."""

    def __init__(self, app: FastAPI, settings: Settings, board: WorkerBoard) -> None:
        self.application = app
        self.settings = settings
        self.board = board
        super().__init__()

    def load_config(self) -> None:
        host, port = self.settings.host, self.settings.port
        options = {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": self.settings.workers,
            "worker_class": NboWorker,
            "preload_app": True,
            "logger_class": NboLogger,
            "loglevel": self.settings.log_level,
            "timeout": WORKER_TIMEOUT_S,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            # How long an idle kept-alive connection stays open (NBO_KEEPALIVE_SECONDS,
            # uvicorn's 5 s by default): a balancer that keeps its connections to nbo
            # longer reuses one nbo is closing, and a POST on it fails (502).
            "keepalive": self.settings.keepalive_seconds,
            "proc_name": "nbo",
            "control_socket_disable": True,
            "reuse_port": True,
            "child_exit": self._child_exit,
        }
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> FastAPI:
        return self.application

    def run(self) -> None:
        # Everything built so far is shared with the workers: frozen, the collector
        # never writes to it, so the workers' collections copy none of its pages.
        processes.freeze_heap()
        NboArbiter(self).run()

    def reload_workers(self, trigger: str) -> None:
        """A reload for every worker: the version the configuration names now (the pin,
        else CURRENT), resolved here so that every worker loads the same one."""
        try:
            version = self.application.state.reloader.resolve(None)
        except NboError as exc:
            log.error("reload (%s) refused: %s", trigger, exc)
            return
        generation = self.board.publish(version, force=False, trigger=trigger)
        log.info(
            "reload (%s): model %s asked of every worker (generation %d)",
            trigger,
            version,
            generation.number,
        )

    def _child_exit(self, arbiter: Arbiter, worker: Any) -> None:
        """A worker is gone: its status leaves the board, and its live-mode metric files
        go (counters and histograms stay: they add up over every worker that ran)."""
        self.board.forget(worker.pid)
        multiprocess.mark_process_dead(worker.pid)
