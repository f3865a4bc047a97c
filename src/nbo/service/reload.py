"""Zero-downtime reloads of the model, the catalogue and the experiments file, from the
API, SIGHUP or a watcher.

A reload re-reads the catalogue file and the experiments file, then loads the new model
version beside the one serving (``ModelHolder.load``: the old keeps answering while the
new one is read),
checks it and swaps it in as one reference. The checks are the artifact's own
(checksums, schema, consistent arrays: ``load_serving_model``) plus a smoke ranking of
one known and one unknown customer through ``nbo.offers.ranking`` under the live catalogue: a
version that loads but cannot rank is refused too, and the old one keeps serving.

The experiments file (``NBO_EXPERIMENTS``) is read again on every reload, and a reload
follows any change of the file within a second (``_watch_experiments``, with or without
``NBO_WATCH_MODELS``, as the catalogue follows its file): a changed one
is swapped in with the models it names, as one reference; one that is refused (it does
not validate, or names a model that is not published) leaves the experiments serving
before, and says why in the answer's ``experiments.last_error`` and on
``GET /v1/experiments``, as a refused catalogue does.

Which version: the one asked for (a version or an alias), else the configured pin
(``NBO_MODEL_VERSION``), else what ``models/CURRENT`` points at. The pin wins over
CURRENT because it is what the service was told to serve; a reload that names a version
overrides it until the next reload.

With several workers (``nbo serve --workers``), each holds its own model: a reload one
worker takes is published on the workers' board (``nbo.runtime.workers``), every other
worker follows it, and the API answer waits until all have (``reload_workers``).

With several replicas on one store (docs/store.md, Replicas), ``POST /v1/admin/reload``
reaches the one replica the balancer picked; the board is that replica's alone. So a
reload the API took is also recorded in the store (``Store.request_reload``: the version
the replica now serves, numbered), and every worker of every replica looks at that row
every ``REPLICAS_EVERY_S`` (``_follow_replicas``) and reloads the version when a newer
number appears, as if asked on its own board. Only the API's reloads: SIGHUP and the
watcher act on each replica by design (each gets its own signal, each watches its own
CURRENT), and a reload that came from another replica is not recorded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbo.catalog.holder import CatalogHolder
from nbo.catalog.terms import Catalog
from nbo.core.errors import ArtifactError, NboError
from nbo.experiments.assignment import ServingModels, resolve_experiment_models
from nbo.experiments.definitions import Experiments
from nbo.experiments.holder import ExperimentsFileHolder, file_stamp
from nbo.models.artifacts import CURRENT, current_version
from nbo.models.registry import MODEL_VERSION_SETTING, resolve
from nbo.models.served import ServingModel
from nbo.offers.ranking import OfferRequest, rank_offers
from nbo.runtime.workers import (
    FOLLOW_EVERY_S,
    STARTING,
    Generation,
    WorkerBoard,
    WorkerStatus,
)
from nbo.service.state import ModelHolder
from nbo.settings import Settings
from nbo.store.base import ReplicaReload, Store, StoreUnavailable

log = logging.getLogger(__name__)

# Offers asked of each smoke ranking: enough to exercise arbitration, cheap to compute.
SMOKE_K = 5
# An id no customer has: the smoke ranking's unknown customer (cold start).
SMOKE_UNKNOWN_CUSTOMER = "\x00nbo-reload-check"
# How often the watcher looks at models/CURRENT (one os.stat).
WATCH_EVERY_S = 1.0
# How often each worker looks for a reload another replica recorded in the store (one
# read of one row by its key: with two replicas of four workers, four reads a second).
REPLICAS_EVERY_S = 2.0
# The trigger of a reload another replica asked for (the log says it).
FROM_ANOTHER_REPLICA = "another replica"


class VersionNotFound(NboError):
    """The version asked for (or CURRENT) names nothing published."""

    def __init__(self, reference: str, problem: str) -> None:
        self.reference = reference
        self.problem = problem
        super().__init__(problem)


class ReloadRefused(NboError):
    """The version exists but must not serve; the models serving before still serve."""

    def __init__(self, version: str, problem: str, serving: str | None) -> None:
        self.version = version
        self.problem = problem
        self.serving = serving
        still = f"still serving {serving}" if serving else "no model serving"
        super().__init__(f"model {version} refused, {still}: {problem}")


@dataclass(frozen=True)
class ReloadOutcome:
    previous_version: str | None
    version: str
    swapped: bool
    catalog_changed: bool
    catalog: dict[str, Any]
    took_ms: float
    # The experiments serving after the reload, whether they changed, and why the file
    # on disk was refused (``ExperimentsFileHolder.status``).
    experiments: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkersReload:
    """A reload as every worker took it: this worker's outcome, the generation it was
    published as, and each live worker's status once all had it (or the wait ran out)."""

    outcome: ReloadOutcome
    generation: int
    workers: list[WorkerStatus]
    # What this worker serves after the reload (``ServingModels.signature``).
    signature: str | None = None
    # Whether the reload was recorded in the store for every other replica to follow.
    replicas: bool = False

    def reached(self, status: WorkerStatus) -> bool:
        """Whether that worker applied this reload (or a later one)."""
        return status.generation >= self.generation

    @property
    def everywhere(self) -> bool:
        """Every live worker applied this reload and serves what this worker serves: its
        version, and the same model for every experiment arm (an alias the arm names
        may have moved with the version unchanged)."""
        return all(
            self.reached(status)
            and status.version == self.outcome.version
            and status.signature == self.signature
            for status in self.workers
        )


class Reloader:
    """Reloads the models and the catalogue the app serves; one reload at a time (the
    API, SIGHUP, the watcher and the board all come here, so they never race each
    other). ``board``: the workers' board when ``nbo serve`` runs workers; None for one
    process (tests, an embedding application)."""

    def __init__(
        self,
        settings: Settings,
        models: ModelHolder,
        catalog: CatalogHolder,
        board: WorkerBoard | None = None,
        experiments: ExperimentsFileHolder | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.catalog = catalog
        self.board = board
        self.experiments = experiments or ExperimentsFileHolder(settings.experiments)
        # Re-entrant: a reload and its publication on the board are one step.
        self._lock = threading.RLock()
        # The newest generation of the board this worker applied (0: none yet), and the
        # erasures counted there that its models have forgotten.
        self.applied = 0
        self.erasures = 0
        # The last reload this worker refused (what it was asked to load and why), until
        # one succeeds: the last good model serves meanwhile, and a restart would load
        # the refused one (CURRENT's) and fail. Shown by GET /v1/models and readiness.
        self.refused: ReloadRefused | None = None
        # Called on each refusal (the metrics' counter).
        self.on_refused: Callable[[], None] | None = None
        # This replica, as the reloads it records in the store name it: made once, before
        # ``nbo serve`` forks, so every worker of one replica has the same.
        self.replica = secrets.token_hex(8)
        # The store the replicas share (set by the app's lifespan once it is open), and
        # the number of the newest reload recorded there that this worker has seen (None
        # until it read the row once: the reloads recorded before its start are not its).
        self.store: Store | None = None
        self.replicas_seen: int | None = None

    def start(self) -> None:
        """The first load, at the worker's start: the version the board's latest
        generation names (``nbo serve`` publishes the one it verified before forking,
        so a worker started in place of a dead one serves what the others serve); when
        that cannot be loaded (a generation every worker refused, a folder removed), a
        version a live worker serves; else the configured one (``NBO_MODEL_VERSION``,
        a version or an alias, else CURRENT). The status is reported either way.

        When none of them can be loaded: with a workers' board (a worker of ``nbo
        serve``) the worker starts without a model, says why in the log and in its
        status, and answers 503 on ``/health/ready`` and the calls that need a model
        until a reload (the API, SIGHUP, the watcher, another worker's generation)
        gives it one. Gunicorn stops the whole service when a worker fails to start, so
        refusing here would take the other workers, and the models they hold, down with
        it (``nbo serve`` checked a model before it forked the first workers).
        Without a board (one process), ArtifactError, which the app raises when
        ``NBO_REQUIRE_MODEL`` asks for a model."""
        # Before the load: a reload another replica records from now on is followed.
        self.replica_request()
        latest = self.board.latest() if self.board is not None else None
        # Counted before the load reads the store's erased list: an erasure counted by
        # now is in that list (the store records it before it is counted).
        self.erasures = self.board.erasures() if self.board is not None else 0
        self._report(WorkerStatus(os.getpid(), STARTING))
        served = [] if self.board is None else [s.version for s in self.board.statuses()]
        candidates = [latest.version] if latest is not None else []
        candidates += [v for v in served if v is not None and v not in candidates]
        # The experiments file as it is now (a worker started in place of a dead one
        # serves the edits the others took since the service started).
        experiments = self._read_experiments()
        error = None
        try:
            for version in candidates:
                try:
                    self.models.load(self.settings.models_dir, version, experiments=experiments)
                    return
                except ArtifactError as exc:
                    log.warning(
                        "model %s, which another worker was asked to serve or serves, "
                        "cannot be loaded (%s)",
                        version,
                        exc,
                    )
            pinned = self.settings.model_version
            self.models.load(
                self.settings.models_dir,
                pinned,
                source=MODEL_VERSION_SETTING if pinned is not None else None,
                experiments=experiments,
            )
        except ArtifactError as exc:
            error = str(exc)
            if self.board is None:
                raise
            log.error(
                "worker starting without a model: %s; /health/ready and the calls that "
                "need a model answer 503 until a reload gives it one",
                exc,
            )
        finally:
            self.applied = latest.number if latest is not None else 0
            self._report(self.status(error))

    def reload_workers(
        self,
        version: str | None = None,
        force: bool = False,
        trigger: str = "api",
        wait: bool = True,
        replicas: bool = False,
    ) -> WorkersReload:
        """``reload`` here, then on the board for every other worker; with ``wait``,
        answer once every live worker has it (or ``WAIT_FOR_WORKERS_S`` has passed).
        A reload refused here raises as ``reload`` does; one of a version the caller
        named is asked of no one, one of CURRENT (or the pin) of every worker, each of
        which records its own refusal (``_publish_refusal``). With ``replicas``, a reload
        taken here is also recorded in the store for every other replica
        (``ask_replicas``)."""
        with self._lock:
            try:
                outcome = self.reload(version, force, trigger)
            except ReloadRefused as exc:
                if version is not None or self.board is None:
                    raise  # a version the caller named: their mistake, asked of no one
                refusal: ReloadRefused | None = exc
                number = self._publish_refusal(exc, force, trigger)
            else:
                refusal = None
                mine = self.status()
                asked = replicas and self.ask_replicas(outcome.version, force)
                if self.board is None:
                    return WorkersReload(outcome, self.applied, [mine], mine.signature, asked)
                number = self._publish(outcome, force, trigger, mine)
        if refusal is not None:
            # Each worker checks CURRENT itself and records its own refusal, so every
            # readiness probe says the same, whichever worker answers it.
            if wait:
                self.board.wait(lambda status: status.generation >= number)
            raise refusal
        workers = (
            self.board.wait(lambda status: status.generation >= number)
            if wait
            else self.board.statuses()
        )
        return WorkersReload(outcome, number, workers, mine.signature, asked)

    def ask_replicas(self, version: str, force: bool) -> bool:
        """Record a reload of ``version`` in the store for every other replica to follow;
        whether it was (not while the store is away: said in the log)."""
        if self.store is None:
            return False
        try:
            number = self.store.request_reload(version, force, self.replica)
        except StoreUnavailable as exc:
            log.warning(
                "reload of model %s not recorded for the other replicas (%s): reload "
                "each one (docs/store.md, Replicas)",
                version,
                exc,
            )
            return False
        self.replicas_seen = max(self.replicas_seen or 0, number)
        return True

    def replica_request(self) -> ReplicaReload | None:
        """The reload another replica recorded in the store that this worker has not
        seen yet, or None (none, this replica's own, or the store away). The first read
        only notes the number: the reloads recorded before this worker started are
        not its to follow (it loaded what its replica serves)."""
        if self.store is None:
            return None
        try:
            request = self.store.reload_request()
        except StoreUnavailable:
            return None
        number = 0 if request is None else request.number
        if self.replicas_seen is None or request is None:
            self.replicas_seen = number if self.replicas_seen is None else self.replicas_seen
            return None
        if number < self.replicas_seen:
            # The row went back (a store restored from a backup): counted from there on,
            # else no reload would be followed until the count passed the old one.
            self.replicas_seen = number
            return None
        if number == self.replicas_seen:
            return None
        self.replicas_seen = number
        return None if request.origin == self.replica else request

    def _publish(
        self, outcome: ReloadOutcome, force: bool, trigger: str, mine: WorkerStatus
    ) -> int:
        """Publish a reload this worker took on the board; the generation's number."""
        assert self.board is not None
        # A reload that changes nothing asks nothing of the others, unless one of them
        # does not serve what this one does (it refused that generation when the version
        # was broken, say, and would never be asked again) or still holds a refusal (of a
        # CURRENT since rolled back: checking again clears it). A reload that swapped
        # here asks everyone, even for the version the latest generation names: an
        # experiment's alias moved, and each worker must resolve it again.
        behind = any(
            status.signature != mine.signature or status.error is not None
            for status in self.board.statuses()
            if status.pid != os.getpid()
        )
        generation = self.board.publish(
            outcome.version,
            force,
            trigger,
            unless_named=not force and not behind and not outcome.swapped,
        )
        self.applied = max(self.applied, generation.number)
        self._report(self.status())
        return generation.number

    def _publish_refusal(self, refused: ReloadRefused, force: bool, trigger: str) -> int:
        """Ask every other worker for the version CURRENT (or the pin) names, which this
        one refused: each loads and checks it itself, and reports its own refusal. (Kept
        to this worker, the refusal was said by one probe in N, and the rollback's reload
        that swapped nothing asked no one to forget it.) Unless the latest generation
        names that version already: the others were asked."""
        assert self.board is not None
        generation = self.board.publish(refused.version, force, trigger, unless_named=True)
        self.applied = max(self.applied, generation.number)
        self._report(self.status())
        return generation.number

    def follow(self, generation: Generation) -> None:
        """Apply a generation another process published: reload its version, and report
        what this worker serves now (with the reason when it was refused)."""
        with self._lock:
            if generation.number <= self.applied:
                return
            error = None
            try:
                self.reload(generation.version, generation.force, generation.trigger)
            except NboError as exc:  # refused or gone: logged by reload, the old serves on
                error = str(exc)
            except Exception as exc:  # reported, not retried: the next generation may do
                log.exception(
                    "reload (%s) of model %s failed", generation.trigger, generation.version
                )
                error = f"{type(exc).__name__}: {exc}"
            self.applied = generation.number
            self._report(self.status(error))

    def forget_everywhere(self, customer_id: str) -> tuple[bool, bool]:
        """Make an erased customer (recorded in the store first) unknown to this worker's
        models, then to every other worker's (through the board); answers whether this
        worker's models knew them, and whether every live worker had forgotten them
        before the wait ran out."""
        removed = self.models.forget(customer_id)
        if self.board is None:
            return removed, True
        count = self.board.count_erasure()
        with self._lock:
            if count - 1 > self.erasures:  # another worker's erasure, not followed yet
                self.models.forget_erased()
            self.erasures = max(self.erasures, count)
            self._report(self.status())
        workers = self.board.wait(lambda status: status.erasures >= count)
        return removed, all(status.erasures >= count for status in workers)

    def follow_erasures(self, count: int) -> None:
        """Apply erasures another worker took: forget every id the store lists as erased
        (read after ``count`` was: so those counted are in the list)."""
        with self._lock:
            if count <= self.erasures:
                return
            self.models.forget_erased()
            self.erasures = count
            self._report(self.status())

    def status(self, error: str | None = None) -> WorkerStatus:
        """What this worker serves now; ``error`` defaults to the refusal it holds (a
        reload without a version on another worker then asks it to check again)."""
        if error is None and self.refused is not None:
            error = str(self.refused)
        serving = self.models.serving
        models: list[tuple[str, str]] = []
        if serving is not None:
            current = serving.current.version
            models.append((current, "current"))
            for version in dict.fromkeys(m.version for m in serving.models()):
                if version != current:
                    models.append((version, "experiment"))
        return WorkerStatus(
            pid=os.getpid(),
            generation=self.applied,
            models=models,
            loaded_at=None if serving is None else serving.current.loaded_at,
            load_seconds=self.models.load_seconds,
            error=error,
            erasures=self.erasures,
            signature=None if serving is None else serving.signature,
        )

    def _report(self, status: WorkerStatus) -> None:
        if self.board is not None:
            self.board.report(status)

    def reload(
        self, version: str | None = None, force: bool = False, trigger: str = "api"
    ) -> ReloadOutcome:
        """Reload the catalogue, the experiments file and the model; a no-op for the
        model (``swapped`` False) when the version, the experiments and their models are
        those already serving, unless ``force``. VersionNotFound or ReloadRefused when
        the model is not swapped in (the experiments serving before stay too)."""
        started = time.perf_counter()
        with self._lock:
            before = self.catalog.status()["fingerprint"]  # what serves, without a look
            catalog = self.catalog.refresh()
            experiments = self._read_experiments()
            experiments_before = self.models.experiments
            serving = self.models.serving
            previous = None if serving is None else serving.current.version
            try:
                target = self.resolve(version)
            except VersionNotFound as exc:
                # A version a caller named that does not exist is the caller's mistake (a
                # warning; the answer says it); CURRENT naming nothing is the deployment's.
                level = logging.WARNING if version is not None else logging.ERROR
                log.log(level, "reload (%s) refused: %s", trigger, exc)
                if version is None:
                    self._refuse(ReloadRefused(exc.reference, exc.problem, previous))
                raise
            swapped = force or serving is None or self._differs(serving, target, experiments)
            if swapped:
                try:
                    self.models.load(
                        self.settings.models_dir,
                        target,
                        check=lambda models: check_serving_models(
                            models, catalog, self.settings, target
                        ),
                        experiments=experiments,
                    )
                except ArtifactError as exc:
                    log.error("reload (%s) of model %s refused: %s", trigger, target, exc)
                    refused = ReloadRefused(target, str(exc), previous)
                    self._refuse(refused)
                    raise refused from None
            self.refused = None
            experiments_changed = self.models.experiments != experiments_before
            if self.experiments.last_error is None:
                self.experiments.accepted(experiments_changed)
        took_ms = (time.perf_counter() - started) * 1000
        log.info(
            "reload (%s): model %s%s in %.0f ms; catalogue %s",
            trigger,
            target,
            f" swapped in (was {previous})" if swapped else " already serving",
            took_ms,
            catalog.fingerprint[:12],
        )
        return ReloadOutcome(
            previous_version=previous,
            version=target,
            swapped=swapped,
            catalog_changed=catalog.fingerprint != before,
            catalog=self.catalog.status(),
            took_ms=round(took_ms, 1),
            experiments=self.experiments.status(self.models.experiments, experiments_changed),
        )

    def _refuse(self, refused: ReloadRefused) -> None:
        self.refused = refused
        if self.on_refused is not None:
            self.on_refused()

    def resolve(self, version: str | None) -> str:
        """The version a reload of ``version`` loads (a version, an alias, or None for
        the pin or CURRENT); VersionNotFound when it names nothing published."""
        models_dir = self.settings.models_dir
        reference = version or self.settings.model_version
        try:
            if reference is None:
                return current_version(models_dir)
            return resolve(
                models_dir, reference, MODEL_VERSION_SETTING if version is None else None
            )
        except ArtifactError as exc:
            raise VersionNotFound(reference or CURRENT, str(exc)) from None

    def _read_experiments(self) -> Experiments:
        """The experiments file as it is now, when it validates and every model it names
        is published; else (the refusal kept in ``self.experiments.last_error``) the
        experiments serving now. The first step of a reload and of a worker's start.
        ``last_error`` is replaced, never cleared first: a look at it while a refused
        file is read again (the file's watcher) still finds it."""
        if self.experiments.path is None:
            self.experiments.clear_refusal()
            return self.models.experiments
        read = self.experiments.read()
        if read is None:
            return self.models.experiments
        try:
            resolve_experiment_models(self.settings.models_dir, read)
        except ArtifactError as exc:
            self.experiments.refuse(str(exc))
            return self.models.experiments
        self.experiments.clear_refusal()
        return read

    def _differs(self, serving: ServingModels, target: str, experiments: Experiments) -> bool:
        """Whether loading ``target`` with ``experiments`` would serve other models than
        ``serving``: another current version, other experiments (the file changed), or
        an experiment's alias now pointing elsewhere."""
        if serving.current.version != target or serving.experiments != experiments:
            return True
        for reference, model in serving.by_reference.items():
            try:
                if resolve(self.settings.models_dir, reference) != model.version:
                    return True
            except ArtifactError:
                return True  # the load will say what is wrong
        return False


def check_serving_models(
    models: ServingModels, catalog: Catalog, settings: Settings, version: str | None = None
) -> None:
    """Rank one known and one unknown customer with every model loaded; ArtifactError
    naming the model and the problem when a ranking raises, comes back empty, or scores
    an offer with a number that is not finite. Any exception counts: a model that makes
    ranking fail in any way must not serve. With ``version``, the current model's
    manifest must name it too (a folder copied under another name would otherwise serve
    under a version nobody asked for, and never count as already serving)."""
    if version is not None and models.current.version != version:
        raise ArtifactError(f"model {version}: its manifest names version {models.current.version}")
    now_s = int(settings.now().timestamp())
    window = settings.suppression
    for model in models.models():
        customers = [("an unknown customer", SMOKE_UNKNOWN_CUSTOMER)]
        known = _known_customer(model)
        if known is not None:
            customers.insert(0, (f"known customer {known}", known))
        for who, customer_id in customers:
            try:
                (ranking,) = rank_offers(
                    model, [OfferRequest(customer_id, SMOKE_K)], now_s, window, catalog
                )
            except Exception as exc:  # any failure refuses the model
                raise ArtifactError(
                    f"model {model.version}: ranking {who} failed ({type(exc).__name__}: {exc})"
                ) from None
            if not ranking.offers:
                raise ArtifactError(f"model {model.version}: ranking {who} gave no offers")
            if not all(math.isfinite(offer.score) for offer in ranking.offers):
                raise ArtifactError(
                    f"model {model.version}: ranking {who} gave scores that are not finite"
                )


def _known_customer(model: ServingModel) -> str | None:
    """The first customer the model still knows (erased ones are unknown to it)."""
    for customer_id in model.customers.ids[:1000].tolist():
        if model.customers.get(customer_id) is not None:
            return str(customer_id)
    return None


def current_stamp(models_dir: Path) -> tuple[int, int, int] | None:
    """What tells a flipped CURRENT apart cheaply: mtime, size and inode (``set_current``
    replaces the file, so the inode changes even within one mtime tick); None when
    there is no CURRENT."""
    try:
        stat = os.stat(models_dir / CURRENT)
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


@asynccontextmanager
async def reload_triggers(reloader: Reloader, watch: bool) -> AsyncIterator[None]:
    """SIGHUP (where the platform lets the main thread's loop take signals) and, with
    ``watch``, a change of models/CURRENT reload like ``POST /v1/admin/reload`` without
    a version; with a workers' board, a generation another process published is
    followed. The load runs in a worker thread, so the loop keeps answering; the
    outcome is logged. On the way out, a reload in progress is waited for (it reads the
    store's erased list, and the store closes next)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = loop.create_task(_reload_in_thread(reloader, "SIGHUP"))
        running.add(task)
        task.add_done_callback(running.discard)

    sighup = _install_sighup(loop, on_sighup)
    stop = asyncio.Event()
    background = []
    if watch:
        background.append(loop.create_task(_watch_current(reloader, stop)))
    if reloader.settings.experiments is not None:
        background.append(loop.create_task(_watch_experiments(reloader, watch, stop)))
    if reloader.board is not None:
        background.append(loop.create_task(_follow_board(reloader, reloader.board, stop)))
    if reloader.store is not None:
        background.append(loop.create_task(_follow_replicas(reloader, stop)))
    try:
        yield
    finally:
        if sighup is not None:
            loop.remove_signal_handler(sighup)
        stop.set()
        await asyncio.gather(*running, *background, return_exceptions=True)


def _install_sighup(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> int | None:
    """The signal installed, or None where there is none to install: no SIGHUP on the
    platform, or a loop off the main thread (TestClient's), which cannot take signals."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return None
    try:
        loop.add_signal_handler(sighup, handler)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        log.info("SIGHUP does not reload here (%s); use POST /v1/admin/reload", exc)
        return None
    return int(sighup)


async def _reload_in_thread(
    reloader: Reloader, trigger: str, version: str | None = None, force: bool = False
) -> None:
    """Run a reload off the loop, for every worker; its outcome is logged (a signal has
    no one to answer)."""
    try:
        await asyncio.to_thread(reloader.reload_workers, version, force, trigger, False)
    except NboError:
        pass  # refused or not found: logged by the reload, the old model serves on
    except Exception:  # a background reload must never take the loop down
        log.exception("reload (%s) failed", trigger)


async def _watch_current(reloader: Reloader, stop: asyncio.Event) -> None:
    """Reload when models/CURRENT changes (polled, an ``os.stat`` a second). A refused
    version is not retried until CURRENT changes again. With workers, each watches: the
    first to see the change publishes it, the others find it already served."""
    models_dir = reloader.settings.models_dir
    seen = current_stamp(models_dir)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=WATCH_EVERY_S)
        if stop.is_set():
            return
        stamp = current_stamp(models_dir)
        if stamp != seen and stamp is not None:
            seen = stamp
            await _reload_in_thread(reloader, "models/CURRENT changed")


async def _watch_experiments(reloader: Reloader, follow_current: bool, stop: asyncio.Event) -> None:
    """Reload when the experiments file changes (or goes), whatever ``NBO_WATCH_MODELS``
    says, as the catalogue is re-read on its own: ``nbo batch`` and ``nbo report
    experiment`` read the file on disk, and a service serving an older one assigned
    customers to other variants than the campaigns did. The file names the variants'
    models, so it is read by a reload (one reference swapped, on every worker); without
    ``follow_current`` that reload keeps the current model serving (an edit of the file
    must not also pull in a CURRENT nobody asked the service to follow). A refused file
    keeps the experiments serving before and is said in ``last_error``; it is not read
    again until it changes."""
    path = reloader.settings.experiments
    seen = file_stamp(path)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=WATCH_EVERY_S)
        if stop.is_set():
            return
        stamp = file_stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        serving = reloader.models.serving
        keep = None if follow_current or serving is None else serving.current.version
        await _reload_in_thread(reloader, "experiments file changed", keep)


async def _follow_board(reloader: Reloader, board: WorkerBoard, stop: asyncio.Event) -> None:
    """Apply each generation newer than this worker's, and erasures other workers took
    (two ``os.stat`` per look)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=FOLLOW_EVERY_S)
        if stop.is_set():
            return
        try:
            latest = board.latest()
            if latest is not None and latest.number > reloader.applied:
                await asyncio.to_thread(reloader.follow, latest)
            erasures = board.erasures()
            if erasures > reloader.erasures:
                await asyncio.to_thread(reloader.follow_erasures, erasures)
        except Exception:  # following must never take the loop down; next look retries
            log.exception("following the workers' board failed")


async def _follow_replicas(reloader: Reloader, stop: asyncio.Event) -> None:
    """Apply each reload another replica recorded in the store (one read of one row
    every ``REPLICAS_EVERY_S``): the version it serves, on every worker of this replica.
    Each worker looks; the first to see it publishes it on the board, the others find
    it serving. A version refused here is logged and said by readiness, as any."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REPLICAS_EVERY_S)
        if stop.is_set():
            return
        try:
            request = await asyncio.to_thread(reloader.replica_request)
        except Exception:  # following must never take the loop down; next look retries
            log.exception("looking for a reload another replica asked for failed")
            continue
        if request is not None:
            log.info(
                "reload of model %s asked by another replica (number %d)",
                request.version,
                request.number,
            )
            await _reload_in_thread(reloader, FROM_ANOTHER_REPLICA, request.version, request.force)
