"""``nbo batch``: a campaign's offers for many customers, written as one file."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbo.core import openmp
from nbo.core.errors import during
from nbo.core.processes import frozen_heap
from nbo.settings import load_settings

if TYPE_CHECKING:
    from nbo.campaigns.batch import BatchSummary
    from nbo.campaigns.spark import SparkOptions
    from nbo.core.pseudonyms import Pseudonyms
    from nbo.settings import Settings
    from nbo.store.base import Store


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "batch",
        help="write a campaign's offers for many customers to a file",
        description="Decide offers for many customers with the served model and every rule "
        "of the API (suppression with posted purchases, eligibility, consent, contact "
        "policy) and write one row per customer and rank to a .parquet or .csv file. "
        "Settings (store, catalogue, contact policy, clock) come from NBO_* variables.",
    )
    parser.add_argument(
        "--customers",
        default="all",
        help="'all' (default), 'stage=NAME' (e.g. stage=at_risk), or a .txt/.csv/.parquet "
        "file of customer ids (a customer_id column)",
    )
    parser.add_argument("--k", type=int, default=10, help="offers per customer (10)")
    parser.add_argument(
        "--channel",
        choices=("email", "app"),
        default="email",
        help="the channel the campaign goes out on: its consent and contact policy apply (email)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output .parquet or .csv (--engine spark: a folder of Parquet parts, .parquet)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="the campaign will be sent: apply the channel's frequency cap and record the "
        "impressions, so caps hold between batch and real-time calls",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even when it is the file of a delivered (--record) run; "
        "without it such a file is refused, as it is the record of what was sent",
    )
    parser.add_argument(
        "--without-unreachable",
        action="store_true",
        help="leave out the customers the campaign may not reach (no consent for the "
        "channel; with --record, the frequency cap) instead of a rank-0 row each, so "
        "every customer of the file may be sent to",
    )
    parser.add_argument(
        "--unmanaged",
        action="store_true",
        help="do not register the file in the store: a later erasure will not take the "
        "customer out of it (for an export you take responsibility for)",
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    parser.add_argument("--chunk", type=int, default=1000, help="customers per chunk (1000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes deciding chunks in parallel (default: one per CPU, and one "
        "per 1,000 customers at most where workers are forked (Linux), 15,000 where they "
        "are started afresh: fewer are decided faster in one process)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local (default): this machine's worker processes, one file; spark: Apache "
        "Spark's executors (pip install 'nbo[spark]'), a folder of Parquet parts",
    )
    parser.add_argument(
        "--spark-master",
        default=None,
        help="with --engine spark: the cluster's master URL (default: spark-submit's, else "
        "local[2])",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="with --engine spark: partitions the chunks are spread over (default: two per "
        "core of the session, at least one per 50,000 customers)",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --engine spark: a Spark setting of the session nbo starts (repeatable)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with warnings_on_stderr():
        return _run(args)


# What starts each line ``nbo batch`` writes on stderr: its own, and the warnings the
# library logs while it runs (a catalogue's incentives eligible together, a store away).
PREFIX = "nbo batch: "


@contextlib.contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """The library's warnings, one line each on stderr starting ``PREFIX`` as the
    command's own lines do, while the command runs. Without it they reached stderr
    through Python's last-resort handler, bare ("catalogue data/catalog.yaml: incentives
    ... are eligible together"), among lines that all start ``nbo batch:``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
    logger = logging.getLogger("nbo")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    if args.engine == "local":
        # Before LightGBM, implicit or scikit-learn load libgomp: the workers are forked
        # from this process (``nbo.campaigns.workers``).
        openmp.one_thread()
    from rich.console import Console
    from threadpoolctl import threadpool_limits

    from nbo.campaigns.batch import (
        BatchError,
        RunSpec,
        check_output,
        check_replaces_no_delivery,
        leave_out_erased,
        new_run_id,
        open_run,
        select_customers,
        strangers,
        strangers_line,
        write_batch,
    )
    from nbo.campaigns.recovery import recover, sweep_partials
    from nbo.campaigns.spark import check_spark_output, spark_missing, write_spark_batch
    from nbo.campaigns.workers import BatchWorkers, worker_count
    from nbo.console.progress import PlainProgress
    from nbo.models.served import clock_past_data
    from nbo.runtime.pairing import find_unknown_items

    if not 1 <= args.k <= 100:
        raise BatchError(f"--k {args.k}: must be between 1 and 100")
    if args.chunk < 1:
        raise BatchError(f"--chunk {args.chunk}: must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise BatchError(f"--workers {args.workers}: must be at least 1")
    spark = _spark_options(args)
    if spark is None:
        check_output(args.out)
    else:
        check_spark_output(args.out)
        reason = spark_missing()
        if reason is not None:
            raise BatchError(f"--engine spark: {reason}")
    settings = load_settings(models_dir=args.models_dir)
    console = Console(stderr=True)
    # A terminal gets rich's live bar; a pipe or a file (CI, cron) plain lines.
    lines = None if console.is_terminal else PlainProgress("nbo batch")
    with threadpool_limits(limits=1, user_api="blas"), lines or contextlib.nullcontext():
        now = settings.now()
        spec = RunSpec(
            settings,
            args.channel,
            args.k,
            now,
            args.record,
            new_run_id(now),
            reachable_only=args.without_unreachable,
        )
        if lines:
            lines.start("open the model and the store")
        with during("open the model and the store"):
            batch = open_run(spec)
        store = batch.store
        try:
            # What a campaign killed outright left behind (nbo.campaigns.recovery).
            for recovered in recover(store):
                print(f"nbo batch: {recovered.line()}", file=sys.stderr)
            for path in sweep_partials(args.out.absolute()):
                print(f"nbo batch: removed {path}, left by a run that ended", file=sys.stderr)
            if not args.overwrite:
                check_replaces_no_delivery(store, args.out)
            model = batch.context.models.current
            if lines:
                lines.finish("open the model and the store", detail=f"model {model.version}")
            stale = clock_past_data(model, now)
            if stale is not None:
                print(f"nbo batch: warning: {stale}", file=sys.stderr)
            # An item the catalogue names but the model does not know: a typo, most likely.
            unknown_items = find_unknown_items(batch.context.catalog, model)
            if unknown_items is not None:
                print(f"nbo batch: {unknown_items.line()}", file=sys.stderr)
            if lines:
                lines.start("select customers")
            with during("select customers"):
                selection = select_customers(args.customers, model, store)
            listed = len(selection.customer_ids)
            selection, erased = leave_out_erased(selection, store)
            total = len(selection.customer_ids)
            if lines:
                lines.finish("select customers", detail=f"{total:,} customers")
            if selection.repeated:
                print(
                    f"nbo batch: {selection.repeated:,} ids of {args.customers} are listed "
                    "again after their first line: each customer is decided once",
                    file=sys.stderr,
                )
            if selection.empty:
                rows = "1 row" if selection.empty == 1 else f"{selection.empty:,} rows"
                print(
                    f"nbo batch: {rows} of {args.customers} without a customer id (a blank "
                    "line, an empty cell): left out",
                    file=sys.stderr,
                )
            if erased:
                print(
                    f"nbo batch: {erased:,} of {listed:,} customers are erased and not heard "
                    "from since (no event, no consent record): left out",
                    file=sys.stderr,
                )
            unknown = strangers(selection, model, store)
            if unknown:
                posted = store.customers_with_purchases()
                line = strangers_line(unknown, total, model, _pseudonyms(settings, store), posted)
                print(f"nbo batch: {line}", file=sys.stderr)
            started = time.perf_counter()
            # The libraries and the model, loaded: out of the garbage collector's reach
            # while the campaign runs, in the workers forked below too (nbo.core.processes).
            with frozen_heap():
                workers = None
                if spark is None:
                    # Forked while no other thread runs: before the bar, the lines and
                    # the store (PostgreSQL's pool) paused.
                    with (
                        lines.paused() if lines else contextlib.nullcontext(),
                        store.paused(),
                    ):
                        count = worker_count(total, args.chunk, args.workers)
                        if count > 1:
                            workers = BatchWorkers(batch, spec, count)
                with (
                    during("offers"),
                    workers or contextlib.nullcontext(),
                    _bar(console, selection.stage) as bar,
                ):
                    task = bar.add_task("offers", total=total, rate="-", written="0")
                    if lines:
                        unit = "customers screened" if selection.stage else "customers"
                        lines.start("offers", total, unit)

                    def advance(done: int, decided: int) -> None:
                        rate = done / max(time.perf_counter() - started, 1e-9)
                        bar.update(
                            task, completed=done, rate=f"{rate:,.0f}", written=f"{decided:,}"
                        )
                        if lines:
                            lines.update(done, f"{decided:,} written")

                    def stopping() -> None:
                        # At once, and the progress ends: the clean-up may take seconds.
                        bar.stop()
                        if lines:
                            lines.stop()
                        print(f"nbo batch: {stopping_line(args.record)}", file=sys.stderr)

                    if spark is None:
                        summary = write_batch(
                            batch,
                            selection,
                            args.out,
                            args.chunk,
                            advance,
                            workers,
                            managed=not args.unmanaged,
                            stopping=stopping,
                        )
                    else:
                        summary = write_spark_batch(
                            batch,
                            spec,
                            selection,
                            args.out,
                            args.chunk,
                            spark,
                            advance,
                            managed=not args.unmanaged,
                            stopping=stopping,
                        )
            seconds = time.perf_counter() - started
            if lines:
                lines.finish(
                    "offers",
                    seconds,
                    f"{total:,} screened, {summary.customers:,} written"
                    if selection.stage
                    else f"{summary.customers:,} customers",
                )
        finally:
            store.close()
    processes = "" if workers is None else f"{workers.count} {workers.start} worker processes"
    print(
        summary_line(args, summary, selection.stage, total, seconds, model.version, now, processes)
    )
    return 0


def _pseudonyms(settings: Settings, store: Store) -> Pseudonyms:
    """The service's pseudonyms (``NBO_LOG_KEY``, else the key kept in the store): what
    ``nbo batch`` names a customer by on stderr, as the service's logs do."""
    from nbo.core.pseudonyms import Pseudonyms

    key = settings.log_key
    if key:
        return Pseudonyms(key.get_secret_value().encode("utf-8"))
    return Pseudonyms(store.pseudonym_key())


def stopping_line(record: bool) -> str:
    """What an interrupted campaign says at once, before its clean-up."""
    if not record:
        return "stopping: the chunks being decided are called off; no campaign file is written"
    return (
        "stopping: the chunks being decided are called off and the impressions this run "
        "recorded are taken back; no campaign file is written (a further interrupt is "
        "ignored until this is done)"
    )


def _spark_options(args: argparse.Namespace) -> SparkOptions | None:
    """The Spark engine's options, or None for the local engine (whose flags it refuses
    with spark's, and the other way round)."""
    from nbo.campaigns.batch import BatchError
    from nbo.campaigns.spark import SparkOptions

    if args.engine == "local":
        for flag, value in (
            ("--spark-master", args.spark_master),
            ("--partitions", args.partitions),
            ("--spark-conf", args.spark_conf or None),
        ):
            if value is not None:
                raise BatchError(f"{flag}: only with --engine spark")
        return None
    if args.workers is not None:
        raise BatchError("--workers: only with --engine local (Spark's executors decide)")
    if args.without_unreachable:
        # Its counts come from the parts written, which would not hold those left out.
        raise BatchError("--without-unreachable: only with --engine local for now")
    if args.partitions is not None and args.partitions < 1:
        raise BatchError(f"--partitions {args.partitions}: must be at least 1")
    conf: dict[str, str] = {}
    for setting in args.spark_conf:
        key, equals, value = setting.partition("=")
        if not equals or not key.strip():
            raise BatchError(f"--spark-conf {setting}: expected KEY=VALUE")
        conf[key.strip()] = value
    return SparkOptions(args.spark_master, args.partitions, conf)


def _bar(console: Any, stage: str | None) -> Any:
    """The live bar of a terminal (disabled elsewhere: plain lines take over); with a
    stage, the customers screened and those written (in the stage) apart."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]offers[/]"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn(
            "screened, {task.fields[written]} written, {task.fields[rate]} screened/s"
            if stage
            else "{task.fields[rate]} customers/s"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def delivery_part(summary: BatchSummary, record: bool) -> str:
    """Whether the run was delivered, said either way: a delivered run whose every
    customer was capped records nothing, and "0 impressions recorded" alone did not tell
    it from a preview."""
    if not record:
        return "; a preview: nothing recorded (no --record)"
    return (
        f"; {summary.recorded:,} impressions recorded (delivered, --record: "
        f"{summary.with_offers:,} customers recorded, {summary.capped:,} frequency-capped)"
    )


def summary_line(
    args: argparse.Namespace,
    summary: BatchSummary,
    stage: str | None,
    screened: int,
    seconds: float,
    version: str,
    now: datetime,
    processes: str = "",
) -> str:
    """What the batch wrote, and how fast (on which ``processes``, when not in this one):
    with a stage, the customers screened (every selected one) and those written (in the
    stage) are different counts, so both are given, each with its rate."""
    without = ", ".join(f"{reason} {n:,}" for reason, n in sorted(summary.without_offers.items()))
    per_second = max(seconds, 1e-9)
    where = f" on {processes}" if processes else ""
    written = summary.customers
    if stage:
        who = f"{written:,} customers in {stage}"
        speed = (
            f"of {screened:,} screened ({summary.skipped_stage:,} not in {stage}), "
            f"in {seconds:.1f} s{where}: "
            f"{screened / per_second:,.0f} screened/s, {written / per_second:,.0f} written/s"
        )
    else:
        who = f"{written:,} customers"
        speed = f"in {seconds:.1f} s{where}: {written / per_second:,.0f} customers/s"
    return (
        f"wrote {args.out}: {summary.rows:,} rows for {who} ({summary.with_offers:,} with offers"
        + (f"; without: {without}" if without else "")
        + f") {speed}; model {version}, channel {args.channel}, clock {now.isoformat()}"
        + delivery_part(summary, args.record)
        + (
            "; left out as unreachable (--without-unreachable): "
            + (", ".join(f"{r} {n:,}" for r, n in sorted(summary.left_out.items())) or "none")
            if args.without_unreachable
            else ""
        )
        + (
            f"; {summary.erased_customers:,} customers erased during the run left out "
            f"({summary.erased_rows:,} rows)"
            if summary.erased_customers or summary.erased_rows
            else ""
        )
        + (
            f"; {summary.withdrawn_customers:,} customers who withdrew consent to "
            f"{args.channel} during the run left out ({summary.withdrawn_rows:,} rows)"
            if summary.withdrawn_customers
            else ""
        )
        + ("; unmanaged: erasures will not reach this file" if args.unmanaged else "")
        + ("; a folder of Parquet parts (spark engine)" if args.engine == "spark" else "")
    )
