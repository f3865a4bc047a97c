"""``python -m bench``: trainer and offers speed against floors measured in the same run,
and events and offers over HTTP against real server processes.

See bench/README.md for what is measured and how to read the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from bench import events_bench
from bench.batch_bench import BatchResult, bench_batch
from bench.events_bench import EventsResult, bench_events
from bench.generate import (
    DEMO_CATALOG,
    FULL,
    ONLINE_RETAIL,
    REPO,
    SMALL,
    SyntheticSpec,
    ensure_dataset,
)
from bench.load_bench import bench_load, print_load
from bench.offers_bench import WINDOW_DAYS, K, OffersResult, bench_offers
from bench.quality_bench import bench_quality
from bench.report import OtherLoad, at_least, micros, seconds, table, us, verdict
from bench.scale_bench import DEFAULT_SIZES, bench_scale, parse_sizes
from bench.spark_bench import bench_spark, print_spark
from bench.train_bench import TrainBench, bench_training
from bench.workers_bench import (
    CONNECTIONS_PER_WORKER,
    INSTALL,
    OWN_MEMORY_TARGET_MB,
    WORKER_COUNTS,
    bench_workers,
    bench_workers_synthetic,
    print_workers,
    wrk_path,
)
from nbo.campaigns.spark import spark_missing
from nbo.catalog.loading import load_catalog
from nbo.data.mapping import ColumnMapping, load_mapping
from nbo.models.served import load_serving_model
from training.config import TrainingConfig
from training.pipeline import train

SYNTHETIC = "synthetic"
ONLINE = "online-retail"
EVENTS = "events"
LOAD = "load"
# What is served on each kind of shop: only when asked (--only quality), it is no speed.
QUALITY = "quality"
SPARK = "spark"
WORKERS = "workers"
# The workers' runs on the synthetic data (issue 16's offers p99 over HTTP at 100k x 20k).
WORKERS_SYNTHETIC = "workers-synthetic"
# The trainer, serve and batch from 1M to 30M lines: only when asked (about an hour).
TRAIN_SCALE = "train-scale"
NOISY_CORES = 0.3
# The store may add at most this much to an offers call at p99, over HTTP.
STORE_P99_TARGET_MS = 1.0


@dataclass
class DataSet:
    name: str
    path: Path
    mapping: ColumnMapping
    description: str


@dataclass
class EventsSummary:
    single_per_s: float
    batch_per_s: float
    p99_diff_ms: dict[str, float]  # per latency group: store - fresh store


@dataclass
class Summary:
    name: str
    trainer_ratio: float
    offers_p50_ratio: float
    offers_p99_ratio: float
    batch_ratio: float
    # decide's p50 (us) and p99 / p50, wall time (issue 16's targets).
    decide_p50_us: float = float("nan")
    decide_p99_over_p50: float = float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--small",
        action="store_true",
        help=f"synthetic data of {SMALL.label} instead of {FULL.label}",
    )
    parser.add_argument(
        "--only",
        choices=(
            SYNTHETIC,
            ONLINE,
            EVENTS,
            LOAD,
            WORKERS,
            WORKERS_SYNTHETIC,
            QUALITY,
            SPARK,
            TRAIN_SCALE,
        ),
        help="run one data set, or only the events-over-HTTP, the load, the workers (on "
        "Online Retail, or on the synthetic data), the "
        "quality, the Spark or the train-scale section (the last three run only when asked: "
        "what nbo serves on each kind of shop; the Spark engine against the local one; the "
        "trainer's time and memory from 1M to 30M lines)",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"train-scale: purchase lines per size, e.g. 1M,3M (default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--calls", type=_positive, default=5_000, help="timed offers calls per path"
    )
    parser.add_argument("--warmup", type=_positive, default=500, help="untimed offers calls first")
    parser.add_argument("--seed", type=int, default=0, help="data and customer-sample seed")
    parser.add_argument(
        "--online-retail",
        type=Path,
        default=ONLINE_RETAIL,
        help="the Online Retail file (default: ../shared/data/online_retail/online_retail.parquet "
        "beside the repository; a worktree elsewhere names it)",
    )
    parser.add_argument(
        "--synthetic-models",
        type=Path,
        help="workers-synthetic: serve this models folder, kept from a run of the trainer "
        "on the same synthetic data, instead of training one (about 3 minutes)",
    )
    parser.add_argument(
        "--repeats", type=_positive, default=3, help="floor and trainer runs (best counts)"
    )
    args = parser.parse_args(argv)

    if args.only == TRAIN_SCALE:
        print(
            f"nbo bench: train-scale | python {platform.python_version()} | "
            f"{os.cpu_count()} cores | {_memory_gib():.0f} GiB | data seed {args.seed} | "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        bench_scale(args.sizes, args.seed)
        return 0
    if args.only == QUALITY:
        print(
            f"nbo bench: quality | python {platform.python_version()} | "
            f"{os.cpu_count()} cores | data seed {args.seed}"
        )
        with threadpool_limits(limits=1, user_api="blas"):
            bench_quality(args.seed, args.online_retail)
        return 0
    print(
        f"nbo bench | python {platform.python_version()} | {os.cpu_count()} cores | "
        f"BLAS pinned to 1 thread (threadpoolctl) | "
        f"floors measured in this run, ratio target <= 1.5x"
    )
    summaries: list[Summary] = []
    events: EventsSummary | None = None
    with threadpool_limits(limits=1, user_api="blas"):
        for data in _data_sets(args):
            summaries.append(_run(data, args))
        if args.only in (None, EVENTS):
            events = _run_events(args)
        load_ratio = _run_load() if args.only in (None, LOAD) else None
        workers = _run_workers(args.online_retail) if args.only in (None, WORKERS) else None
        workers_synthetic = (
            _run_workers_synthetic(args) if args.only in (None, WORKERS_SYNTHETIC) else None
        )
        if args.only == SPARK:
            _run_spark(args)
    if summaries:
        print("\n== summary ==")
        print(
            table(
                [
                    "data set",
                    "trainer / bare ALS",
                    "offers p50 / raw",
                    "offers p99 / raw",
                    "batch / raw batch (customers/s)",
                ],
                [
                    [
                        s.name,
                        f"{s.trainer_ratio:.2f}x",
                        f"{s.offers_p50_ratio:.2f}x",
                        f"{s.offers_p99_ratio:.2f}x",
                        f"{s.batch_ratio:.1%}",
                    ]
                    for s in summaries
                ],
            )
        )
    _print_issue16_targets(summaries, workers, workers_synthetic)
    if events is not None:
        print("\n== summary: events over HTTP ==")
        rows: list[Sequence[object] | None] = [
            ["ingestion, single posts", f"{events.single_per_s:,.0f} events/s", ""],
            [
                f"ingestion, batches of {events_bench.BATCH_SIZE}",
                f"{events.batch_per_s:,.0f} events/s",
                "",
            ],
        ]
        rows += [
            [f"offers p99, store - fresh: {group}", f"{diff:+.2f} ms", verdict_ms(diff)]
            for group, diff in events.p99_diff_ms.items()
        ]
        print(table(["", "", f"target <= {STORE_P99_TARGET_MS:g} ms"], rows))
    if load_ratio is not None:
        print(f"\n== summary: load ==\n  offers throughput, hardened / bare: {load_ratio:.1%}")
    if workers is not None:
        print(
            f"\n== summary: workers ==\n  offers throughput, 2 workers / 1: "
            f"{workers['offers_scaling']:.2f}x (/health/live {workers['live_scaling']:.2f}x); "
            f"offers / /health/live with 1 worker: {workers['offers_of_live']:.1%}"
            f"; a worker's own memory at most {workers['worker_own_mb']:.0f} MB (target <= "
            f"{OWN_MEMORY_TARGET_MB} MB)"
        )
    return 0


def _print_issue16_targets(
    summaries: list[Summary],
    workers: dict[str, float] | None,
    workers_synthetic: dict[str, float] | None = None,
) -> None:
    """Issue 16's targets for a cheaper offers call, with the figures this run measured
    (a section not run says so)."""
    by_name = {s.name: s for s in summaries}
    if not by_name.keys() & {ONLINE, SYNTHETIC} and workers is None and workers_synthetic is None:
        return
    rows: list[Sequence[object] | None] = []
    online = by_name.get(ONLINE)
    if online is None:
        rows.append([f"decide p50, {ONLINE}", "not run", ""])
    else:
        p50 = online.decide_p50_us
        rows.append(
            [
                f"decide p50, {ONLINE} (<= {DECIDE_P50_TARGET_US:,.0f} us)",
                f"{p50:,.0f} us",
                verdict(p50, DECIDE_P50_TARGET_US),
            ]
        )
        spread = online.decide_p99_over_p50
        rows.append([f"decide p99 / p50, {ONLINE} (<= 2x)", f"{spread:.2f}x", verdict(spread, 2.0)])
    if workers is None:
        rows.append(["offers / /health/live over HTTP, 1 worker", "not run", ""])
    else:
        share = workers["offers_of_live"]
        rows.append(
            [
                f"offers / /health/live over HTTP, 1 worker (>= {OFFERS_OF_LIVE_TARGET:.0%})",
                f"{share:.1%}",
                at_least(share, OFFERS_OF_LIVE_TARGET),
            ]
        )
    if workers_synthetic is None:
        rows.append([f"offers p99 over HTTP, {SYNTHETIC}", "not run", ""])
    else:
        for count in WORKER_COUNTS:
            p99 = workers_synthetic[f"offers_p99_ms_{count}"]
            rows.append(
                [
                    f"offers p99 over HTTP, {SYNTHETIC}, {count} worker{'s' if count > 1 else ''}"
                    f", {CONNECTIONS_PER_WORKER * count} connections (<= "
                    f"{OFFERS_P99_TARGET_MS:g} ms)",
                    f"{p99:.2f} ms (p50 {workers_synthetic[f'offers_p50_ms_{count}']:.2f}; "
                    f"/health/live p50 {workers_synthetic[f'live_p50_ms_{count}']:.2f}, p99 "
                    f"{workers_synthetic[f'live_p99_ms_{count}']:.2f}; worst round's offers "
                    f"p99 {workers_synthetic[f'offers_p99_worst_ms_{count}']:.2f})",
                    verdict(p99, OFFERS_P99_TARGET_MS),
                ]
            )
    synthetic = by_name.get(SYNTHETIC)
    if synthetic is None:
        rows.append([f"nbo batch / implicit batch, {SYNTHETIC}", "not run", ""])
    else:
        ratio = synthetic.batch_ratio
        rows.append(
            [
                f"nbo batch / implicit batch, {SYNTHETIC} (>= {BATCH_TARGET:.0%})",
                f"{ratio:.1%}",
                at_least(ratio, BATCH_TARGET),
            ]
        )
    load = os.getloadavg()
    print(
        f"\n== summary: issue 16, a cheaper offers call (load average now "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}) =="
    )
    print(table(["target", "measured", ""], rows))


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _synthetic(args: argparse.Namespace) -> tuple[Path, str]:
    """The synthetic data of ``--small`` or the full size (generated first if not cached),
    with a line saying which and from where."""
    base = SMALL if args.small else FULL
    spec = SyntheticSpec(base.customers, base.items, base.lines, args.seed)
    path, generated = ensure_dataset(spec)
    how = "reused from cache" if generated is None else f"generated in {generated:.1f} s"
    return path, f"{spec.label}, seed {spec.seed}; {path.relative_to(REPO)} ({how})"


def _print_other_load(
    load: OtherLoad, beyond: str = "", what: str = "this section", after: str = ""
) -> None:
    """The cores other processes used while ``what`` ran (``beyond``: which processes
    of the bench's own are not counted), flagged when enough to make the figures noisy;
    ``after`` ends the line."""
    other = load.cores()
    if other is not None:
        noisy = " (noisy figures: rerun on a quiet machine)" if other > NOISY_CORES else ""
        print(
            f"\n  other processes{beyond} used {other:.2f} of {os.cpu_count()} cores on "
            f"average while {what} ran{noisy}{after}"
        )


def _data_sets(args: argparse.Namespace) -> Iterator[DataSet]:
    if args.only in (None, SYNTHETIC):
        path, said = _synthetic(args)
        yield DataSet(SYNTHETIC, path, load_mapping("canonical"), said)
    if args.only in (None, ONLINE):
        path = args.online_retail
        if path.is_file():
            yield DataSet(ONLINE, path, load_mapping("online-retail"), f"full file {path}")
        else:
            print(f"\n== {ONLINE} ==\n  skipped: {path} not found")


def _run(data: DataSet, args: argparse.Namespace) -> Summary:
    print(f"\n== {data.name} ==\n  data: {data.description}")
    load = OtherLoad()
    config = TrainingConfig()
    with tempfile.TemporaryDirectory(prefix="nbo-bench-") as tmp:
        training = bench_training(data.path, data.mapping, Path(tmp), config, args.repeats)
        trainer_ratio = _print_trainer(config, training)
        result = training.best_trainer
        assert result is not None and training.models_dir is not None
        model = load_serving_model(training.models_dir)
        now_s = int(pd.Timestamp(result.cleaning.last_purchase).value // 1_000_000_000)
        # The demo catalogue names Online Retail items; synthetic data gets the default.
        catalog = load_catalog(DEMO_CATALOG) if data.name == ONLINE else None
        offers = bench_offers(model, now_s, args.calls, args.warmup, args.seed, catalog)
        p50_ratio, p99_ratio, decide_p50, decide_spread = _print_offers(
            offers, result.cleaning.last_purchase
        )
        batch_ratio = _print_batch(
            bench_batch(
                training.models_dir, model, now_s, K, DEMO_CATALOG if data.name == ONLINE else None
            )
        )
        del model
    _print_other_load(load, what="this data set")
    return Summary(
        data.name, trainer_ratio, p50_ratio, p99_ratio, batch_ratio, decide_p50, decide_spread
    )


def _print_trainer(config: TrainingConfig, training: TrainBench) -> float:
    result = training.best_trainer
    assert result is not None
    params = config.als.params()
    gate = result.manifest["quality_gate"]
    cleaning = result.cleaning
    print(
        f"  cleaned: {cleaning.rows_read:,} lines read, {cleaning.rows_kept:,} kept, "
        f"{cleaning.customers:,} customers, {cleaning.items:,} items, "
        f"{cleaning.first_purchase} .. {cleaning.last_purchase}"
    )
    print(
        "  trained with force=True (this bench measures speed, not quality); "
        f"{gate['message'].removeprefix('quality gate: ')}"
    )
    best = training.trainer
    print(
        f"\n  Trainer: training.pipeline.train, default config ({params.factors} factors, "
        f"{params.iterations} iterations, weighting {params.weighting}, alpha {params.alpha:g}, "
        f"refit {config.als.refit_iterations} iterations warm-started); "
        f"steps of the fastest of {len(training.trainer_runs)} runs"
    )
    rows: list[Sequence[object] | None] = [
        [step, seconds(value), f"{value / best:.0%}"] for step, value in result.timings.items()
    ]
    untimed = best - sum(result.timings.values())
    rows.append(["(outside the timed steps)", seconds(untimed), f"{untimed / best:.0%}"])
    rows.append(None)
    rows.append(["end to end (wall)", seconds(best), "100%"])
    print(table(["step", "seconds", "share"], rows))

    ratio = best / training.floor
    print(
        f"\n  Floor: nbo.models.cf.new_als(params).fit on the full confidence matrix "
        f"({training.customers:,} x {training.items:,}, {training.interactions:,} nonzeros)"
    )
    runs = [
        [
            "bare ALS fit (floor)",
            seconds(training.floor),
            ", ".join(seconds(s) for s in training.floor_runs),
        ],
        [
            "trainer end to end",
            seconds(best),
            ", ".join(seconds(s) for s in training.trainer_runs),
        ],
        None,
        ["ratio trainer / floor", f"{ratio:.2f}x", f"{verdict(ratio)} (target <= 1.5x)"],
    ]
    print(table(["", "best s", "all runs s"], runs))
    return ratio


def _print_offers(offers: OffersResult, clock: str | None) -> tuple[float, float, float, float]:
    t = {name: micros(ns) for name, ns in offers.timings.items()}
    raw, ranked, decided, cf_only = t["raw"], t["rank_offers"], t["decide"], t["cf_only"]
    decided_cf, answered = t["decide_cf_only"], t["decide_answered"]
    raw_cpu, decided_cpu = t["raw (cpu)"], t["decide (cpu)"]
    print(
        f"\n  Offers: in-process, k={K}, suppression window {WINDOW_DAYS} days, clock {clock}; "
        f"{offers.calls:,} timed calls per path over {offers.customers:,} known customers "
        f"(history median {offers.median_history:.0f}, max {offers.max_history:,} items)"
    )
    p50_ratio, p99_ratio = ranked["p50"] / raw["p50"], ranked["p99"] / raw["p99"]
    mean_ratio = ranked["mean"] / raw["mean"]
    rows: list[Sequence[object] | None] = [
        ["raw implicit recommend, full history filtered (floor)"]
        + [us(raw[q]) for q in ("p50", "p99", "mean")],
        ["rank_offers, ALS candidates only (no ranker)"]
        + [us(cf_only[q]) for q in ("p50", "p99", "mean")],
        ["nbo.offers.ranking.rank_offers (the ranker when trained)"]
        + [us(ranked[q]) for q in ("p50", "p99", "mean")],
        ["decide, ALS candidates only (no ranker)"]
        + [us(decided_cf[q]) for q in ("p50", "p99", "mean")],
        ["nbo.offers.decision.decide (profile + ranking + arbitration)"]
        + [us(decided[q]) for q in ("p50", "p99", "mean")],
        ["decide, then its offers read (with their explanations)"]
        + [us(answered[q]) for q in ("p50", "p99", "mean")],
        None,
        [
            "ratio rank_offers / floor",
            f"{p50_ratio:.2f}x",
            f"{p99_ratio:.2f}x",
            f"{mean_ratio:.2f}x",
        ],
        ["target <= 1.5x", verdict(p50_ratio), verdict(p99_ratio), verdict(mean_ratio)],
        [
            "ratio ranker / ALS only (target <= 2x)",
            f"{ranked['p50'] / cf_only['p50']:.2f}x",
            f"{ranked['p99'] / cf_only['p99']:.2f}x",
            f"{ranked['mean'] / cf_only['mean']:.2f}x",
        ],
        [
            "ratio decide ranker / ALS only (target <= 2x)",
            f"{decided['p50'] / decided_cf['p50']:.2f}x",
            f"{decided['p99'] / decided_cf['p99']:.2f}x",
            f"{decided['mean'] / decided_cf['mean']:.2f}x",
        ],
        [
            "ratio decide / floor",
            f"{decided['p50'] / raw['p50']:.2f}x",
            f"{decided['p99'] / raw['p99']:.2f}x",
            f"{decided['mean'] / raw['mean']:.2f}x",
        ],
        None,
        ["floor, thread CPU time"] + [us(raw_cpu[q]) for q in ("p50", "p99", "mean")],
        ["decide, thread CPU time"] + [us(decided_cpu[q]) for q in ("p50", "p99", "mean")],
        [
            "ratio decide / floor, CPU time",
            f"{decided_cpu['p50'] / raw_cpu['p50']:.2f}x",
            f"{decided_cpu['p99'] / raw_cpu['p99']:.2f}x",
            f"{decided_cpu['mean'] / raw_cpu['mean']:.2f}x",
        ],
        [
            f"decide p50 (target <= {DECIDE_P50_TARGET_US:,.0f} us), wall | CPU",
            f"{us(decided['p50'])} {verdict(decided['p50'], DECIDE_P50_TARGET_US)}",
            f"{us(decided_cpu['p50'])} {verdict(decided_cpu['p50'], DECIDE_P50_TARGET_US)}",
            "",
        ],
        [
            "decide p99 / p50 (target <= 2x), wall | CPU",
            f"{decided['p99'] / decided['p50']:.2f}x",
            f"{decided_cpu['p99'] / decided_cpu['p50']:.2f}x",
            "",
        ],
    ]
    print(table(["path", "p50 us", "p99 us", "mean us"], rows))

    parts = [
        name
        for name in offers.timings
        if name
        not in ("raw", "cf_only", "rank_offers", "decide_cf_only", "decide", "decide_answered")
        and not name.endswith(" (cpu)")
    ]
    ranking_parts = [name for name in parts if not name.startswith("profile")]
    rest = ranked["mean"] - sum(t[name]["mean"] for name in ranking_parts)
    part_rows: list[Sequence[object] | None] = [
        [name]
        + [us(t[name][q]) for q in ("p50", "p99", "mean")]
        + [f"{t[name]['mean'] / ranked['mean']:.0%}"]
        for name in parts
    ]
    part_rows.append(
        [
            "rest of rank_offers: candidates, propensity, arbitration, Offer objects "
            "(by difference)",
            "",
            "",
            us(rest),
            f"{rest / ranked['mean']:.0%}",
        ]
    )
    print(
        "\n  Where decide spends its time (each part timed alone, same customers; "
        "'of mean' against rank_offers)"
    )
    print(table(["part", "p50 us", "p99 us", "mean us", "of mean"], part_rows))
    return p50_ratio, p99_ratio, decided["p50"], decided["p99"] / decided["p50"]


# Issue 16's target for one offers decision in process, on Online Retail.
DECIDE_P50_TARGET_US = 600.0
# Issue 16's target over HTTP: offers at least this share of /health/live's rate.
OFFERS_OF_LIVE_TARGET = 0.4
# Issue 16's target over HTTP at the synthetic 100k x 20k: offers p99 at most this, with
# CONNECTIONS_PER_WORKER connections per worker.
OFFERS_P99_TARGET_MS = 10.0


BATCH_TARGET = 0.5


def _print_batch(result: BatchResult) -> float:
    ratio = result.batch_per_s / result.floor_per_s
    print(
        f"\n  Batch: nbo.campaigns.batch.write_batch for all {result.customers:,} customers, "
        f"k={K}, chunks of {1000:,}, every rule on, empty event store; {result.rows:,} rows"
    )
    rows: list[Sequence[object] | None] = [
        ["implicit batch recommend, liked items filtered (floor)", f"{result.floor_per_s:,.0f}"],
        [
            f"nbo batch, {result.workers} worker processes, "
            f"{'forked' if result.forked else 'spawned'} (the command's default)",
            f"{result.batch_per_s:,.0f}",
        ],
        ["nbo batch, one process", f"{result.single_per_s:,.0f}"],
        None,
        [
            f"ratio batch / floor (target >= {BATCH_TARGET:.0%})",
            f"{ratio:.1%} {'ok' if ratio >= BATCH_TARGET else 'UNDER'}",
        ],
    ]
    print(table(["path", "customers/s"], rows))
    print(
        f"\n  Where the batch spends its time (cProfile, one process, the first "
        f"{result.profiled_customers:,} customers: {result.profiled_s:.1f} s)"
    )
    parts: list[Sequence[object] | None] = [
        [label, f"{share:.0%}"] for label, share in result.parts
    ]
    rest = 1.0 - sum(share for _, share in result.parts)
    parts.append(
        ["the rest (per-customer steps of a decision, stacking, bookkeeping)", f"{rest:.0%}"]
    )
    print(table(["part", "share"], parts))
    return ratio


def verdict_ms(diff_ms: float) -> str:
    return "ok" if diff_ms <= STORE_P99_TARGET_MS else "OVER"


def _run_spark(args: argparse.Namespace) -> None:
    print(f"\n== {SPARK} ==")
    reason = spark_missing()
    if reason is not None:
        print(f"  skipped: {reason}")
        return
    path, said = _synthetic(args)
    print(f"  data: {said}")
    load = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="nbo-bench-spark-models-") as tmp:
        started = time.perf_counter()
        result = train(path, load_mapping("canonical"), Path(tmp), TrainingConfig(), force=True)
        print(f"  model: trainer, default config, in {time.perf_counter() - started:.1f} s")
        assert result.path is not None
        now_s = int(pd.Timestamp(result.cleaning.last_purchase).value // 1_000_000_000)
        print_spark(bench_spark(result.path.parent, now_s))
    _print_other_load(load)


def _run_load() -> float:
    print(f"\n== {LOAD} ==")
    with tempfile.TemporaryDirectory(prefix="nbo-bench-load-") as tmp:
        return print_load(bench_load(Path(tmp)))


def _run_workers(online_retail: Path) -> dict[str, float] | None:
    print(f"\n== {WORKERS} ==")
    if wrk_path() is None:
        print(f"  skipped: wrk not found (the load generator); install it with {INSTALL}")
        return None
    if not online_retail.is_file():
        print(f"  skipped: {online_retail} not found (--online-retail names it)")
        return None
    load = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="nbo-bench-workers-") as tmp:
        figures = print_workers(bench_workers(Path(tmp), online_retail))
    _print_other_load(load, " (beyond this one, wrk and the servers)")
    return figures


def _run_workers_synthetic(args: argparse.Namespace) -> dict[str, float] | None:
    """The workers' runs on the synthetic data of ``--small`` or the full size."""
    print(f"\n== {WORKERS_SYNTHETIC} ==")
    if wrk_path() is None:
        print(f"  skipped: wrk not found (the load generator); install it with {INSTALL}")
        return None
    path, said = _synthetic(args)
    print(f"  data: {said}")
    load = OtherLoad()
    started = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="nbo-bench-workers-synthetic-") as tmp:
        result = bench_workers_synthetic(Path(tmp), path, args.synthetic_models)
        figures = print_workers(result)
    ended = os.getloadavg()
    _print_other_load(
        load,
        " (beyond this one, wrk and the servers)",
        after=f"; load average {started[0]:.2f} at the start, {ended[0]:.2f} at the end",
    )
    return figures


def _run_events(args: argparse.Namespace) -> EventsSummary:
    print(f"\n== {EVENTS} ==")
    load = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="nbo-bench-events-") as tmp:
        result = bench_events(Path(tmp), args.seed)
    summary = _print_events(result)
    _print_other_load(load, " (beyond this one and its servers)")
    return summary


def _print_events(result: EventsResult) -> EventsSummary:
    print(
        f"  model: trainer, default config, on {result.model} in {result.train_seconds:.1f} s\n"
        f"  servers: python -m nbo.cli serve (one uvicorn worker) on 127.0.0.1, clock "
        f"{result.clock} ({events_bench.CLOCK_DAYS_AFTER} days after the data ends),\n"
        f"  each its own SQLite store (WAL, synchronous=FULL); "
        f"client: httpx in this process, keep-alive"
    )
    print("\n  Ingestion: POST /v1/events, every answer after the durable commit")
    rows: list[Sequence[object] | None] = []
    for run in result.ingestion:
        ms = micros(run.request_ns)
        rows.append(
            [
                run.name,
                f"{run.events:,}",
                f"{run.requests:,}",
                seconds(run.seconds),
                f"{run.per_second:,.0f}",
                f"{ms['p50'] / 1000:.2f}",
                f"{ms['p99'] / 1000:.2f}",
            ]
        )
    print(
        table(
            ["posts", "events", "requests", "seconds", "events/s", "p50 ms/req", "p99 ms/req"],
            rows,
        )
    )

    print(
        f"\n  Offers: GET /v1/customers/{{id}}/offers?k={events_bench.K}, "
        f"{events_bench.LATENCY_CUSTOMERS} known customers per group, "
        f"{events_bench.OFFERS_CALLS:,} sequential calls per row;\n  the server with the "
        f"posted events and one with a fresh store, interleaved call by call"
    )
    rows = []
    p99_diff: dict[str, float] = {}
    for group in result.offers:
        full, empty = micros(group.with_store_ns), micros(group.empty_store_ns)
        diff = {q: (full[q] - empty[q]) / 1000 for q in ("p50", "p99", "mean")}
        p99_diff[group.group.split(" (")[0]] = diff["p99"]
        rows += [
            [group.group, "", "", "", ""],
            ["  store with their purchases"]
            + [f"{full[q] / 1000:.3f}" for q in ("p50", "p99", "mean")]
            + [_profiles(group.profiles_with_store)],
            ["  fresh store (nothing posted)"]
            + [f"{empty[q] / 1000:.3f}" for q in ("p50", "p99", "mean")]
            + [_profiles(group.profiles_empty_store)],
            ["  difference"]
            + [f"{diff[q]:+.3f}" for q in ("p50", "p99", "mean")]
            + [f"p99 {verdict_ms(diff['p99'])} (target <= {STORE_P99_TARGET_MS:g} ms)"],
            None,
        ]
        if group.floor_ns is not None:
            floor = micros(group.floor_ns)
            rows[-1:-1] = [
                ["  HTTP floor: GET /health/live, same calls"]
                + [f"{floor[q] / 1000:.3f}" for q in ("p50", "p99", "mean")]
                + [""]
            ]
    print(table(["customers / store", "p50 ms", "p99 ms", "mean ms", "profile"], rows[:-1]))

    print(
        f"\n  In-process: SQLiteStore reads alone, on the file the server wrote "
        f"({result.stored_events:,} events), same customers, each call timed alone"
    )
    rows = [
        [name] + [us(micros(ns)[q]) for q in ("p50", "p99", "mean")]
        for name, ns in result.store_calls.items()
    ]
    print(table(["call", "p50 us", "p99 us", "mean us"], rows))
    single = next(r for r in result.ingestion if r.name.startswith("single posts, seq"))
    batch = next(r for r in result.ingestion if r.name.startswith("batches"))
    return EventsSummary(single.per_second, batch.per_second, p99_diff)


def _profiles(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"\nbench finished in {time.perf_counter() - start:.0f} s")
    sys.exit(code)
