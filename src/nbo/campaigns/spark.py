"""``nbo batch --engine spark``: a campaign decided by Apache Spark's executors.

The driver (this process) opens the run and selects the customers exactly as the local
engine does, and cuts them into the same chunks (``--chunk``). Spark gets the chunks, in
order, spread over partitions (``SparkContext.parallelize`` slices a list into
consecutive runs, so no shuffle and no sort is needed), and every partition runs
``decide_chunk`` on its chunks: ``nbo.runtime.decide.decide_customers``, the API's own
sequence, with consent, contacts and posted purchases read from the store in bulk per
chunk (a few queries for its customers). Each executor's Python worker opens the run
once (``_run_for``): its own connection to the store, from the store's URL (SQLite on a
shared disk, or PostgreSQL), and the served models, memory-mapped from the models
folder, which must be at a path every executor sees; nothing of the model or of the
driver's store travels with a task, only the run's settings.

A campaign that will be sent (``--record``) is delivered on the executors, chunk by
chunk, as the local engine's workers deliver it (``nbo.runtime.deliver``: decided and
its impressions recorded under the customers' locks). A task Spark runs again (its
executor lost) first takes back what its earlier attempt recorded for its chunks, so
each delivered offer is recorded once; a run that fails takes back every impression it
recorded.

Ctrl-C (or SIGTERM) stops it as it stops the local engine: the stopping line at once,
the job's tasks called off (``run_job``: the job runs in a thread of its own, so the
interrupt reaches the driver's main thread outside any call into the JVM, and the job
group is cancelled and its tasks waited for), nothing written, and a delivered run's
impressions taken back, with Ctrl-C ignored meanwhile.

Each partition becomes one Parquet part of ``SCHEMA`` in a temporary folder beside
``--out``; the folder's parts in name order are the rows the local engine writes to its
file, in the same order. As in the local engine, customers erased meanwhile are taken
out (their impressions too) before the folder is renamed over ``--out`` and registered
for erasure (as a folder of parts, ``files.PARTS``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from nbo.campaigns.batch import (
    BatchError,
    BatchRun,
    BatchSummary,
    Progress,
    RunSpec,
    Selection,
    decide_chunk,
    managed_path,
    open_run,
    registration,
    take_back,
    withdraw,
)
from nbo.campaigns.files import (
    PARTS,
    SCHEMA,
    Outcomes,
    folder_lock,
    is_part,
    read_batches,
    remove_customers,
)
from nbo.campaigns.recovery import Heartbeat, begin_delivering, end_delivering, partial_path
from nbo.core import processes
from nbo.core.outputs import OWNER_ONLY, check_output_parent

log = logging.getLogger(__name__)

# The session ``nbo batch --engine spark`` starts when no master is given and Spark did
# not start this process (spark-submit): local mode, small, quiet, and on the loopback.
LOCAL_MASTER = "local[2]"
LOCAL_MEMORY = "1g"
# Spark's log4j2 settings for a session nbo starts: warnings and errors only.
LOG4J2 = Path(__file__).with_name("spark-log4j2.properties")
# Partitions (``default_partitions``): per core of the session at least, and one per
# this many customers beyond.
PARTITIONS_PER_CORE = 2
CUSTOMERS_PER_PARTITION = 50_000
SQLITE_PREFIX = "sqlite:///"
# What a local session sets in the environment the JVM and the Python workers inherit
# (restored after).
_LOCAL_ENVIRONMENT = ("PYSPARK_PYTHON", "SPARK_LOCAL_IP", "SPARK_LOCAL_DIRS")
# PySpark warns, at every Arrow call, that it does not fully support pandas 3: this
# engine hands Spark Arrow batches and never goes through pandas.
_PANDAS_WARNING = "PySpark does not yet fully support pandas"
# How long a called-off job's tasks are waited for (``call_off``); Spark kills a task's
# Python worker after spark.python.task.killTimeout (2 s by default).
CALL_OFF_WAIT_S = 60.0


@dataclass(frozen=True)
class SparkOptions:
    """Where and how the batch runs on Spark: ``master`` (None: Spark's own when
    spark-submit started nbo, else ``LOCAL_MASTER``), partitions (None: from the
    session's cores and the customers) and extra Spark settings."""

    master: str | None = None
    partitions: int | None = None
    conf: Mapping[str, str] = field(default_factory=dict)


def spark_missing() -> str | None:
    """Why the Spark engine cannot run here (no PySpark, no Java), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install 'nbo[spark]', or make install-spark)"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and not shutil.which("java"):
        return "no Java found (Spark needs Java 17 or newer: set JAVA_HOME or put java on PATH)"
    return None


def check_spark_output(out: Path) -> None:
    """Refuse an output the Spark engine could not write, before any work is done: a
    ``.parquet`` path in a writable folder, where nothing is but a file or a folder of
    parts (an earlier campaign, which the new one replaces)."""
    if out.suffix.lower() != ".parquet":
        raise BatchError(
            f"--out {out}: the spark engine writes a folder of Parquet parts: .parquet"
        )
    check_output_parent(out, "--out")
    if out.is_dir() and not out.is_symlink():
        foreign = [
            name
            for name in os.listdir(out)
            if not (is_part(name) or name.startswith(".") or name == "_SUCCESS")
        ]
        if foreign:
            raise BatchError(
                f"--out {out}: is a folder that holds more than Parquet parts "
                f"({foreign[0]}); name a new path"
            )


def write_spark_batch(
    run: BatchRun,
    spec: RunSpec,
    selection: Selection,
    out: Path,
    chunk: int,
    options: SparkOptions = SparkOptions(),
    progress: Progress | None = None,
    managed: bool = True,
    stopping: Callable[[], None] | None = None,
) -> BatchSummary:
    """``write_batch`` on Spark: the same rows, as a folder of Parquet parts at ``out``
    (replacing what was there once every part is written, never before), registered
    for erasure unless ``managed`` is False. ``run`` is the driver's (selection, store,
    recording); ``spec`` what every executor opens its own run from. ``stopping`` is
    called at once when the run is interrupted (Ctrl-C, SIGTERM), as ``write_batch``
    calls it, before the Spark job is called off and a delivered run's impressions taken
    back."""
    check_spark_output(out)
    reason = spark_missing()
    if reason is not None:
        raise BatchError(f"--engine spark: {reason}")
    summary = BatchSummary()
    # The erased list keeps keyed hashes, not ids: what is erased later is told apart
    # by its hashes, and tested against the selection's ids (``nbo.core.erased``).
    erased_before = run.store.erased_list()
    ids = list(selection.customer_ids)
    chunks = [ids[start : start + chunk] for start in range(0, len(ids), chunk)]
    # Spark takes URIs, and a URI takes an absolute path.
    temporary = partial_path(out.absolute())
    executors = _for_executors(spec, run)
    placed = False
    heartbeat: Heartbeat | None = None
    said: list[bool] = []

    def say_stopping() -> None:
        # Once: by the Spark job's wait (``run_job``) or by the clean-up below.
        if stopping is not None and not said:
            said.append(True)
            with contextlib.suppress(OSError):  # a closed stderr must not stop the clean-up
                stopping()

    try:
        if run.occasion.delivery:
            heartbeat = begin_delivering(run.store, run.run_id, temporary)
        # While Spark runs, the customers of the partitions done (without a stage: with
        # one, how many of them are in it is known at the end).
        running = progress if selection.stage is None else None
        with spark_session(options) as spark:
            try:
                _decide_on_spark(
                    spark,
                    executors,
                    selection.stage,
                    chunks,
                    temporary,
                    options,
                    running,
                    say_stopping,
                )
            except Exception as exc:
                # Read while the JVM still answers (its exception's text comes from it).
                refused = write_refused(exc, out)
                if refused is None:
                    raise
                raise refused from None
        _count_rows(temporary, summary)
        summary.skipped_stage = len(ids) - summary.customers
        if progress is not None:
            progress(len(ids), summary.customers)
        # Erased while the batch ran: out before the rename, their impressions too.
        erased_now = run.store.erased_list()
        erased_during = erased_now.since(erased_before).among(ids)
        if erased_during:
            erased = Outcomes()
            summary.erased_rows += remove_customers(temporary, PARTS, erased_during, removed=erased)
            summary.leave_out(erased)
            if run.occasion.delivery:
                take_back(run, sorted(erased_during))
        if run.occasion.delivery:
            # Each delivered offer of the parts was recorded once, by its partition.
            summary.recorded = _delivered_offers(temporary)
        _put_in_place(run, temporary, out, summary, managed)
        placed = True
        erased_since = run.store.erased_list().since(erased_now).among(ids)
        if erased_since:
            path = managed_path(out)
            erased = Outcomes()
            summary.erased_rows += remove_customers(
                out,
                PARTS,
                erased_since,
                rewritten=(lambda kept: run.store.set_batch_output_rows(path, kept))
                if managed
                else None,
                removed=erased,
            )
            summary.leave_out(erased)
        summary.rows -= summary.removed_rows
    except BaseException as exc:
        delivered = run.occasion.delivery and not placed
        # A second Ctrl-C must not stop the taking back half-way.
        with processes.uninterrupted() if delivered else contextlib.nullcontext():
            if isinstance(exc, KeyboardInterrupt):
                say_stopping()
            if delivered:
                # No campaign folder, no delivery (the job's tasks called off and waited
                # for, the session stopped: no partition records any more).
                withdraw(run, ids)
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        shutil.rmtree(temporary, ignore_errors=True)
    return summary


# What the system refuses a write for, as a failed Spark job's text says it (a Java
# IOException's message is the system's own strerror): the errno each stands for.
REFUSED_WRITES = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)}


def write_refused(error: Exception, out: Path) -> OSError | None:
    """The OSError, naming ``out``, that a Spark job's failure (a Py4JJavaError, whose text
    is 700 lines of Java stack) stands for when the system refused to write its parts (a
    full disk, a quota, a read-only mount): ``nbo batch`` says it in one line, as the local
    engine does. None for any other failure, which stays as it is."""
    if isinstance(error, OSError):
        return None
    try:
        text = str(error)
    except Exception:  # the JVM gone: nothing to tell, the error stays as it is
        return None
    for reason, code in REFUSED_WRITES.items():
        if reason in text:
            return OSError(code, reason, str(out))
    return None


def _for_executors(spec: RunSpec, run: BatchRun) -> RunSpec:
    """The run's spec as executors must open it: the model version the driver loaded
    (a CURRENT flipped during the run changes nothing) and absolute paths (an executor's
    working folder is its own)."""
    settings = spec.settings
    store_url = settings.store_url
    if store_url.startswith(SQLITE_PREFIX):
        location = Path(store_url.removeprefix(SQLITE_PREFIX))
        store_url = SQLITE_PREFIX + str(location.resolve())
    pinned = settings.model_copy(
        update={
            "models_dir": settings.models_dir.resolve(),
            "model_version": run.context.models.current.version,
            "catalog": None if settings.catalog is None else settings.catalog.resolve(),
            "experiments": None if settings.experiments is None else settings.experiments.resolve(),
            "store_url": store_url,
        }
    )
    return replace(spec, settings=pinned)


def _decide_on_spark(
    spark: Any,
    spec: RunSpec,
    stage: str | None,
    chunks: Sequence[Sequence[str]],
    folder: Path,
    options: SparkOptions,
    progress: Progress | None = None,
    stopping: Callable[[], None] | None = None,
) -> None:
    """Decide ``chunks`` on the executors and write their rows as Parquet parts in
    ``folder``: partition ``n`` (a run of consecutive chunks) is part ``n``. Calls
    ``progress`` each second with the customers of the partitions done (about: partitions
    differ by a chunk). Interrupted, the job is called off (``run_job``), ``stopping``
    called first."""
    from pyspark.sql.pandas.types import from_arrow_schema

    if spec.delivery and spark.conf.get("spark.speculation", "false").strip().lower() == "true":
        # Two attempts of one task at once would both deliver its customers.
        raise BatchError(
            "--record: the Spark session runs tasks speculatively (spark.speculation=true); "
            "a delivered campaign needs it off"
        )
    partitions = options.partitions or default_partitions(
        spark.sparkContext.defaultParallelism, sum(len(c) for c in chunks)
    )
    partitions = max(1, min(partitions, len(chunks)))
    rows = spark.sparkContext.parallelize([(list(c),) for c in chunks], numSlices=partitions)
    frame = spark.createDataFrame(rows, "customer_ids array<string>")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
        decided = frame.mapInArrow(
            partial(decide_partition, spec, stage), from_arrow_schema(SCHEMA)
        )
    started = time.perf_counter()
    group = f"nbo-batch-{spec.run_id}"
    done = threading.Event()
    if progress is not None:
        customers = sum(len(c) for c in chunks)
        threading.Thread(
            target=_report_partitions,
            args=(spark.sparkContext, group, partitions, customers, progress, done),
            name="nbo-spark-progress",
            daemon=True,
        ).start()
    try:
        run_job(
            spark.sparkContext,
            group,
            f"nbo batch {spec.run_id}",
            lambda: decided.write.mode("errorifexists").parquet(folder.as_uri()),
            stopping,
            shielded=spec.delivery,
        )
    finally:
        done.set()
    log.info(
        "spark decided %d chunks in %d partitions in %.1f s",
        len(chunks),
        partitions,
        time.perf_counter() - started,
    )
    # Hadoop's checksum files of the parts: an erasure rewrites parts, so they would be
    # stale (and a checking reader would refuse the part); readers need none.
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(".crc"):
            (folder / name).unlink()
    # Customers' rows: the owner's alone, as the local engine's file (Spark writes with
    # the umask).
    os.chmod(folder, 0o700)
    for name in os.listdir(folder):
        os.chmod(folder / name, OWNER_ONLY)


def run_job(
    context: Any,
    group: str,
    description: str,
    action: Callable[[], object],
    stopping: Callable[[], None] | None = None,
    shielded: bool = False,
) -> None:
    """Run ``action`` (what starts Spark's jobs) as job group ``group``, in a thread of
    its own while this one waits: Ctrl-C or SIGTERM then interrupts the wait, never a call
    into the JVM. PySpark's own Ctrl-C handler cancels every job from inside the call the
    main thread was making, which fails ('reentrant call'): the job went on, and stopping
    the session under it printed Java stack traces. Interrupted, ``stopping`` is called
    first and the group's jobs are called off (``call_off``) before the interrupt goes
    on; ``shielded``: a second Ctrl-C is ignored meanwhile (a delivered run, whose
    impressions are taken back next). ``action``'s own error is raised here."""
    failed: list[BaseException] = []

    def work() -> None:
        context.setJobGroup(group, description)
        try:
            action()
        except BaseException as exc:  # raised in the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=work, name="nbo-spark-job", daemon=True)
    with _interrupts_raised():
        thread.start()
        try:
            thread.join()
        except BaseException as exc:
            with processes.uninterrupted() if shielded else contextlib.nullcontext():
                if stopping is not None and isinstance(exc, KeyboardInterrupt):
                    stopping()
                call_off(context, group, thread)
            raise
    if failed:
        raise failed[0]


def call_off(context: Any, group: str, thread: threading.Thread | None = None) -> None:
    """Cancel the jobs of ``group`` and wait for them: ``thread`` (the one whose action
    started them) to return, then every task of theirs to have ended. Spark gives a
    task's Python worker no word of the kill: one deciding a chunk may still record it
    (a session nbo started is stopped, its workers with it, before a delivered run's
    impressions are taken back). Waits at most ``CALL_OFF_WAIT_S`` for the tasks, then
    says so in the log."""
    with _quiet_logs(context):
        context.cancelJobGroup(group)
        if thread is not None:
            thread.join()
        tracker = context.statusTracker()
        waited = time.monotonic() + CALL_OFF_WAIT_S
        while (running := _running_tasks(tracker, group)) and time.monotonic() < waited:
            time.sleep(0.1)
    if running:
        log.warning(
            "%d tasks of %s still running %.0f s after it was called off",
            running,
            group,
            CALL_OFF_WAIT_S,
        )


@contextlib.contextmanager
def _quiet_logs(context: Any) -> Iterator[None]:
    """Spark's log off while the block runs, its level before back after: a job called
    off logs each task it kills and the write it aborts, with Java stack traces, after
    the stopping line (a page of them for one Ctrl-C). Left as it is when the level
    cannot be read."""
    try:
        before = str(context._jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel())
    except Exception:  # not log4j 2, or no JVM to ask: keep Spark's logs
        before = None
    if before is None:
        yield
        return
    context.setLogLevel("OFF")
    try:
        yield
    finally:
        context.setLogLevel(before)


def _running_tasks(tracker: Any, group: str) -> int:
    """The tasks of ``group``'s jobs running now, from Spark's status tracker."""
    running = 0
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage in info.stageIds if info is not None else ():
            stage_info = tracker.getStageInfo(stage)
            running += stage_info.numActiveTasks if stage_info is not None else 0
    return running


@contextlib.contextmanager
def _interrupts_raised() -> Iterator[None]:
    """Ctrl-C raised as KeyboardInterrupt in the main thread, as Python does by default,
    while the block runs: not PySpark's handler, which calls the JVM from inside the
    signal (``run_job``). The handler before is back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _report_partitions(
    context: Any,
    group: str,
    partitions: int,
    customers: int,
    progress: Progress,
    done: threading.Event,
) -> None:
    """Until ``done`` is set: each second, from Spark's status tracker, the customers of
    the partitions (tasks) of ``group``'s jobs completed so far, when it changed."""
    tracker = context.statusTracker()
    reported = -1
    while not done.wait(1.0):
        completed = 0
        for job in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job)
            for stage in info.stageIds if info is not None else ():
                stage_info = tracker.getStageInfo(stage)
                completed += stage_info.numCompletedTasks if stage_info is not None else 0
        screened = customers * min(completed, partitions) // max(partitions, 1)
        if screened != reported and not done.is_set():
            progress(screened, screened)
            reported = screened


def default_partitions(cores: int, customers: int) -> int:
    """Partitions for ``customers`` on a session of ``cores``: two per core at least, so
    a slow partition does not hold the others up, and one per 50,000 customers beyond."""
    return max(PARTITIONS_PER_CORE * cores, math.ceil(customers / CUSTOMERS_PER_PARTITION))


def _count_rows(folder: Path, summary: BatchSummary) -> None:
    """The summary's counts from the parts written, streamed through (two columns): each
    decided customer has one row of rank 1 (with offers) or 0 (without, with the
    reason)."""
    found = Outcomes()
    for batch in read_batches(folder, PARTS, ["rank", "suppressed_reason"]):
        summary.rows += batch.num_rows
        found.add(batch)
    summary.with_offers = found.with_offers
    summary.without_offers = found.without_offers
    summary.customers = found.customers


def _delivered_offers(folder: Path) -> int:
    """The offers of a folder of parts (rows of rank 1 and more): with ``--record``, the
    impressions its partitions recorded, one each."""
    delivered = 0
    for batch in read_batches(folder, PARTS, ["rank"]):
        delivered += int(pc.sum(pc.greater(batch.column("rank"), 0).cast(pa.int64())).as_py() or 0)
    return delivered


def _put_in_place(
    run: BatchRun, temporary: Path, out: Path, summary: BatchSummary, managed: bool
) -> None:
    """Rename the finished folder to ``out`` and register it (or drop the registration
    of that path, when unmanaged), under the lock of ``out``'s folder, as the local
    engine puts a file in place. What was at ``out`` (a file, or the parts of an earlier
    campaign) is moved aside first and deleted after: no rename swaps two folders, so
    for that moment nothing is at ``out``."""
    path = managed_path(out)
    aside = out.with_name(f".{out.name}.{os.getpid()}.replaced")
    with folder_lock(out.parent) as folder:
        if run.occasion.delivery:
            end_delivering(run.store, run.run_id)  # before the rename, as the local engine
        replaced = out.exists() or out.is_symlink()
        if replaced:
            os.replace(out, aside)
        os.replace(temporary, out)
        os.fsync(folder)
        if managed:
            run.store.register_batch_output(registration(run, path, PARTS, summary))
        else:
            run.store.unregister_batch_output(path)
    if replaced:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()


@contextmanager
def spark_session(options: SparkOptions) -> Iterator[Any]:
    """The Spark session to run on: one already running in this process (a notebook, a
    test) as it is, and left running; else a new one, stopped at the end. Unless
    spark-submit started this process (its settings then rule), a new session without
    ``options.master`` runs in local mode: ``LOCAL_MASTER``, ``LOCAL_MEMORY``, no UI, on
    the loopback, its scratch files in a temporary folder, Spark's logs at WARN."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit launched this process
    local = options.master is None and not submitted
    scratch = Path(tempfile.mkdtemp(prefix="nbo-spark-")) if local else None
    saved = {name: os.environ.get(name) for name in _LOCAL_ENVIRONMENT}
    builder = SparkSession.builder.appName("nbo batch")
    if options.master is not None:
        builder = builder.master(options.master)
    if scratch is not None:
        # The executors' Python is this one (nbo and its libraries), on this machine; the
        # scratch folder of the shuffles and blocks, as spark.local.dir would (without
        # Spark's warning that a cluster manager overrides that setting).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ["SPARK_LOCAL_DIRS"] = str(scratch)
        for key, value in local_conf(scratch).items():
            builder = builder.config(key, value)
    for key, value in options.conf.items():
        builder = builder.config(key, value)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
            session = builder.getOrCreate()
        session.sparkContext.setLogLevel("WARN")
        try:
            yield session
        finally:
            session.stop()
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def local_conf(scratch: Path) -> dict[str, str]:
    """The settings of a small local-mode session, its files under ``scratch``."""
    java = f"-Djava.io.tmpdir={scratch} -Dlog4j2.configurationFile={LOG4J2.as_uri()}"
    return {
        "spark.master": LOCAL_MASTER,
        "spark.driver.memory": LOCAL_MEMORY,
        "spark.driver.extraJavaOptions": java,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.warehouse.dir": (scratch / "warehouse").as_uri(),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        # The plan of the campaign's 27 columns, in full (else a warning that it was cut).
        "spark.sql.debug.maxToStringFields": "100",
        "spark.python.worker.reuse": "true",
    }


# --- on the executors ------------------------------------------------------------------

# The run a Python worker opened, with its spec (at most one: a later batch's replaces it).
_OPENED: list[tuple[RunSpec, BatchRun]] = []


def _run_for(spec: RunSpec) -> BatchRun:
    """The run of ``spec`` in this Python worker, opened by the first task that needs
    it: Spark reuses its Python workers, so the models are loaded once per worker, not
    per task."""
    if _OPENED and _OPENED[0][0] == spec:
        return _OPENED[0][1]
    for _spec, old in _OPENED:
        old.store.close()
    _OPENED.clear()
    # One BLAS thread per worker: the executors' cores are the parallelism.
    threadpool_limits(limits=1, user_api="blas")
    run = open_run(spec)
    _OPENED.append((spec, run))
    log.info("opened run %s in Python worker %d", spec.run_id, os.getpid())
    return run


def decide_partition(
    spec: RunSpec, stage: str | None, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """A partition's output rows (``mapInArrow``): each input row is one chunk of the
    selection (its customers), decided (delivered, with ``--record``) as the local
    engine decides it. A delivered chunk first takes back what an earlier attempt of this
    task recorded for its customers (Spark runs a task again when its executor is lost),
    so each offer is recorded once and the caps do not count the run against itself."""
    run = _run_for(spec)
    for batch in batches:
        for customer_ids in batch.column("customer_ids").to_pylist():
            if run.occasion.delivery:
                take_back(run, customer_ids)
            result = decide_chunk(run, customer_ids, stage)
            if result.table is not None:
                yield from result.table.to_batches()
