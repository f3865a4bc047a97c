"""``nbo serve``: check where it may listen, the model and the store, then run the app in
gunicorn's workers (``nbo.service.server``)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from nbo.core import openmp
from nbo.core.apikeys import check_bind
from nbo.core.errors import ConfigError
from nbo.core.processes import give_back_freed_heap
from nbo.runtime.workers import BOARD, FOLDER_PREFIX
from nbo.settings import Settings, load_settings, warn_unknown_variables

log = logging.getLogger("nbo.service")

# prometheus-client reads it once, when it is first imported (``serve`` sets it first).
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The settings ``nbo serve``'s flags override: an error about a value given as a flag
# names the flag, not a variable the user never set.
SERVE_FLAGS = {
    "models_dir": "--models-dir",
    "host": "--host",
    "port": "--port",
    "workers": "--workers",
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve offers over HTTP",
        description="Serve the current model (models/CURRENT) over HTTP. Settings come from "
        "NBO_* environment variables; these flags override them.",
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    parser.add_argument(
        "--host", default=None, help="NBO_HOST (127.0.0.1); other than loopback needs API keys"
    )
    parser.add_argument("--port", type=int, default=None, help="NBO_PORT (8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="NBO_WORKERS: worker processes (default: the cores this process may use)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # One OpenMP thread, set before LightGBM or implicit load libgomp: the workers are
    # forked from this process (``nbo.core.openmp``; a worker hung in LightGBM's parsing
    # of the ranker, whose pool the model check here had started).
    openmp.one_thread()
    from threadpoolctl import threadpool_limits

    from nbo.experiments.assignment import load_serving_models
    from nbo.experiments.definitions import configured_experiments
    from nbo.models.registry import MODEL_VERSION_SETTING
    from nbo.models.served import clock_past_data
    from nbo.service.logs import configure_logging
    from nbo.service.shared import check_shared_settings
    from nbo.store import check_store_url, open_store, store_location
    from nbo.store.base import StoreUnreachable

    settings = load_settings(
        SERVE_FLAGS,
        warn_unknown=False,
        models_dir=args.models_dir,
        host=args.host,
        port=args.port,
        workers=args.workers,
    )
    configure_logging(settings.log_level, settings.log_format)
    # A misspelt NBO_* variable, as a line of the service's log.
    warn_unknown_variables()
    # Secure by default: without API keys, loopback only. Checked first: it costs nothing.
    bind = check_bind(
        settings.host,
        settings.api_keys,
        settings.allow_unauthenticated,
        _named(args, "host"),
    )
    log.log(bind.level, bind.message)
    check_port_free(settings.host, settings.port, _named(args, "host"), _named(args, "port"))
    # The store URL's shape costs nothing either; whether it opens is known below.
    check_store_url(settings.store_url)
    experiments = configured_experiments(settings.experiments)
    # One BLAS thread for the whole process, before any model object exists.
    verified = None
    held: list[object] = []
    with threadpool_limits(limits=1, user_api="blas"):
        if settings.require_model:
            # Refuse a missing, corrupt or incompatible model, or an experiment's model
            # that is one or names no version, with one line before binding: the load
            # each worker makes at its start, which would fail there as a traceback.
            # Their rankers compiled here too: the workers, forked after, find the
            # compiled trees among the process's (``nbo.models.compiled``) and share
            # their pages.
            models = load_serving_models(
                settings.models_dir,
                settings.model_version,
                experiments,
                source=MODEL_VERSION_SETTING,
            )
            logging.getLogger("nbo").info(
                "model %s verified%s",
                models.current.version,
                "".join(f"; experiment model {m.version}" for m in models.models()[1:]),
            )
            verified = models.current.version
            stale = clock_past_data(models.current, settings.now())
            if stale is not None:
                log.warning("%s", stale)
            # Their compiled trees held while the master lives (so the workers find
            # them): trees no one holds are freed, all but the last one retired.
            held = [m.ranker.compiled_trees for m in models.models() if m.ranker is not None]
            del models
            _give_back_freed_memory()
        # The store once, before the workers: a bad URL or a newer schema is one line
        # here, and the migrations run once, not in every worker at the same moment. A
        # server that cannot be reached now (an outage, a database still starting) is no
        # reason to refuse: the workers open the store once it answers.
        # Named in full: a relative SQLite path is the working folder's, and a service
        # started from another folder would otherwise use another store unseen.
        location = store_location(settings.store_url)
        proven = False
        try:
            store = open_store(settings.store_url)
            try:
                # Replicas on one store must share some settings: those that differ from
                # the last service started on it are a warning line.
                check_shared_settings(store, settings)
            finally:
                store.close()
            proven = True
        except StoreUnreachable as exc:
            log.warning(
                "store %s not reachable (%s): serving without it; calls that need it "
                "answer 503 until it answers",
                location,
                exc.reason,
            )
        else:
            log.info("store: %s", location)
        serve(settings, verified, proven)
    del held
    return 0


def _named(args: argparse.Namespace, field: str) -> str:
    """What names a setting in an error: its flag when the user gave it, else its variable."""
    given = getattr(args, field, None) is not None
    return SERVE_FLAGS[field] if given else f"setting NBO_{field.upper()}"


def serve(settings: Settings, verified: str | None = None, store_proven: bool = False) -> None:
    """Serve until SIGTERM or SIGINT: gunicorn's master and ``settings.workers`` workers,
    forked after the app is built. The folder the workers share (their metrics files and
    the board where reloads are published) is made here and removed at the end; one a
    killed ``nbo serve`` left behind is removed by the next one. ``verified``: the model
    version checked before, which every worker is to serve (None: the configured one).
    ``store_proven``: the store opened before (``create_app``'s)."""
    _remove_stale_folders()
    with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as shared:
        metrics_dir = Path(shared) / "metrics"
        metrics_dir.mkdir()
        os.environ[MULTIPROC_VARIABLE] = str(metrics_dir)
        try:
            from nbo.runtime.workers import WorkerBoard
            from nbo.service.app import create_app
            from nbo.service.server import NboServer

            board = WorkerBoard(Path(shared) / BOARD)
            if verified is not None:
                # The version checked above, as the first generation: every worker loads
                # it (not CURRENT again, which may have moved meanwhile), and so does a
                # worker gunicorn starts in place of a dead one, whatever CURRENT says then.
                board.publish(verified, force=False, trigger="start")
            app = create_app(settings, board, metrics_dir, store_proven)
            log.info(
                "serving on %s:%d with %d worker%s (gunicorn, uvicorn workers, the app "
                "loaded before they fork)",
                settings.host,
                settings.port,
                settings.workers,
                "" if settings.workers == 1 else "s",
            )
            NboServer(app, settings, board).run()
        finally:
            os.environ.pop(MULTIPROC_VARIABLE, None)


def _give_back_freed_memory() -> None:
    """Return the heap the model check freed to the system. glibc keeps freed memory
    for the process's next allocations, and the master makes few after the check: at
    100k customers x 20k items it kept about 40 MB it never used again (measured with
    ``/proc/self/smaps_rollup``)."""
    gc.collect()
    give_back_freed_heap()


def check_port_free(
    host: str,
    port: int,
    host_named: str = "setting NBO_HOST",
    port_named: str = "setting NBO_PORT",
) -> None:
    """ConfigError when another process listens on ``host:port``. The workers each bind
    the port with SO_REUSEPORT (``nbo.service.server``), which would let them share it
    with another ``nbo serve`` of the same user, splitting the traffic between the two:
    a bind without the option fails on any listener, so this refuses that at start.
    ``host_named``, ``port_named``: what the refusal names (a flag when one was given)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"{host_named}: cannot listen on '{host}' ({exc})") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"{port_named}: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None


def _remove_stale_folders() -> None:
    """Remove the shared folders of ``nbo serve`` processes that are gone (SIGKILL leaves
    its folder behind): the pid in a folder's name names its master."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # another user's process: alive
