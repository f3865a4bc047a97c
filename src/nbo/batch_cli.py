"""``nbo batch``: a campaign's offers for many customers, written as one file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nbo.config import load_settings


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
    parser.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    parser.add_argument(
        "--record",
        action="store_true",
        help="the campaign will be sent: apply the channel's frequency cap and record the "
        "impressions, so caps hold between batch and real-time calls",
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
        help="worker processes deciding chunks in parallel (default: one per CPU, one per "
        "15,000 customers at most: fewer are decided faster in one process)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from threadpoolctl import threadpool_limits

    from nbo.batch import (
        BatchError,
        RunSpec,
        check_output,
        default_workers,
        new_run_id,
        open_run,
        select_customers,
        write_batch,
    )

    if not 1 <= args.k <= 100:
        raise BatchError(f"--k {args.k}: must be between 1 and 100")
    if args.chunk < 1:
        raise BatchError(f"--chunk {args.chunk}: must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise BatchError(f"--workers {args.workers}: must be at least 1")
    check_output(args.out)
    settings = load_settings(models_dir=args.models_dir)
    console = Console(stderr=True)
    with threadpool_limits(limits=1, user_api="blas"):
        now = settings.now()
        spec = RunSpec(settings, args.channel, args.k, now, args.record, new_run_id(now))
        batch = open_run(spec)
        store = batch.store
        try:
            model = batch.models.current
            selection = select_customers(args.customers, model, store)
            total = len(selection.customer_ids)
            started = time.perf_counter()
            with Progress(
                TextColumn("[bold]offers[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} customers/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not console.is_terminal,
            ) as bar:
                task = bar.add_task("offers", total=total, rate="-")

                def advance(done: int) -> None:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    bar.update(task, completed=done, rate=f"{rate:,.0f}")

                workers = args.workers or default_workers(total)
                summary = write_batch(
                    batch,
                    selection,
                    args.out,
                    args.chunk,
                    advance,
                    workers,
                    spec,
                    managed=not args.unmanaged,
                )
        finally:
            store.close()
    seconds = time.perf_counter() - started
    without = ", ".join(f"{reason} {n:,}" for reason, n in sorted(summary.without_offers.items()))
    print(
        f"wrote {args.out}: {summary.rows:,} rows for {summary.customers:,} customers "
        f"({summary.with_offers:,} with offers"
        + (f"; without: {without}" if without else "")
        + (f"; {summary.skipped_stage:,} not in {selection.stage}" if selection.stage else "")
        + f") in {seconds:.1f} s, {total / max(seconds, 1e-9):,.0f} customers/s; "
        f"model {model.version}, channel {args.channel}, clock {now.isoformat()}"
        + (f"; {summary.recorded:,} impressions recorded" if args.record else "")
        + (
            f"; {summary.erased_rows:,} rows of customers erased during the run left out"
            if summary.erased_rows
            else ""
        )
        + ("; unmanaged: erasures will not reach this file" if args.unmanaged else ""),
        file=sys.stdout,
    )
    return 0
