"""How the trainer, ``nbo serve`` and ``nbo batch`` grow with the data: synthetic purchase
data of 1M to 30M lines, trained with the default config, wall time and peak RSS per step
and the growth exponent between sizes (``python -m bench --only train-scale``).

Per size, the data set is a folder of Parquet files (``bench.generate.ensure_partitioned``,
written a chunk at a time, so generating it needs a chunk's memory, not the whole's); the
trainer reads it as ``nbo train --data FOLDER`` does. Customers grow with the lines (one
customer per ``LINES_PER_CUSTOMER`` lines), items as the square root (20,000 at 3M lines:
the default synthetic set's ratio), as a retailer's base grows faster than its range.

Each size is trained in a process of its own (``python -m bench.scale_bench train ...``),
so its peaks are its own; the peak RSS of each step is the kernel's high-water mark of that
process (``VmHWM`` in /proc/self/status), reset at the start of every step by writing 5 to
/proc/self/clear_refs. Then the published model is served by a real ``nbo serve`` (RSS
after start and after offers calls, from /proc/PID/smaps_rollup, and what of the model's
memory-mapped files is resident, from /proc/PID/smaps) and a sample of its customers is
decided by ``nbo batch`` in one process (its peak RSS from ``wait4``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np

from bench.generate import CACHE_DIR, REPO, SyntheticSpec, ensure_partitioned
from bench.report import OtherLoad, table
from bench.servers import running_server

SIZES = {"1M": 1_000_000, "3M": 3_000_000, "10M": 10_000_000, "30M": 30_000_000}
DEFAULT_SIZES = "1M,3M,10M,30M"
LINES_PER_CUSTOMER = 30
ITEMS_AT_3M = 20_000
# The target: 30M lines in at most this many times the time and memory of 3M.
TARGET_FACTOR = 10.0
OFFERS_CALLS = 2_000
BATCH_CUSTOMERS = 20_000
MIB = 1 << 20


def spec_for(lines: int, seed: int = 0, items: int | None = None) -> SyntheticSpec:
    """Customers linear in the lines, items as their square root (or ``items`` when given:
    the same customers and lines over another range, to tell a cost per item apart)."""
    if items is None:
        items = round(ITEMS_AT_3M * math.sqrt(lines / 3_000_000))
    return SyntheticSpec(lines // LINES_PER_CUSTOMER, items, lines, seed)


class Size(NamedTuple):
    """One size of the bench: its label, its purchase lines and, when the label says so
    (``3M/80k``), the items; else items follow the lines (``spec_for``)."""

    label: str
    lines: int
    items: int | None = None


def _count(text: str, label: str, example: str) -> int:
    """``1M`` / ``300k`` / ``1500`` as a number; a readable error naming the size."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{label}': expected e.g. {example}") from None


def parse_sizes(text: str) -> list[Size]:
    """``1M,3M`` (or any ``<n>M`` / ``<n>k`` / a plain number of lines, optionally
    ``/<items>``, e.g. ``3M/80k``) as sizes."""
    sizes = []
    for label in (part.strip() for part in text.split(",") if part.strip()):
        lines_text, _, items_text = label.partition("/")
        lines = SIZES.get(lines_text) or _count(lines_text, label, "1M, 300k")
        if lines < 1_000:
            raise argparse.ArgumentTypeError(f"size '{label}': at least 1k lines")
        items = _count(items_text, label, "3M/80k") if items_text else None
        if items is not None and items < 10:
            raise argparse.ArgumentTypeError(f"size '{label}': at least 10 items")
        sizes.append(Size(label, lines, items))
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


# --- in the training process ---------------------------------------------------------


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _reset_peak() -> None:
    """The high-water mark restarts from the current RSS (Linux, own process)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def _cpu_seconds() -> float:
    """CPU seconds of this process so far, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


BETWEEN = "(between the steps)"


class PeakSteps:
    """A ``training.progress.Progress`` that records each step's peak RSS.

    Steps may nest (a step inside another): a peak seen while an inner step runs counts
    for every open step. What happens between steps (the quality gate, building the
    manifest) counts under ``BETWEEN``.
    """

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {BETWEEN: 0}
        self.cpu: dict[str, float] = {}
        self.open: list[str] = []
        self._started: dict[str, float] = {}
        _reset_peak()

    def _fold(self) -> None:
        peak = _status_bytes("VmHWM")
        for name in self.open or [BETWEEN]:
            self.peaks[name] = max(self.peaks.get(name, 0), peak)

    def step(self, name: str) -> None:
        self._fold()
        _reset_peak()
        self.open.append(name)
        self.peaks[name] = max(self.peaks.get(name, 0), _status_bytes("VmRSS"))
        self._started[name] = _cpu_seconds()

    def iterations(self, name: str, total: int) -> Any:
        self.step(name)
        return lambda _iteration: None

    def done(self, name: str, seconds: float) -> None:
        self._fold()
        if name in self._started:
            self.cpu[name] = self.cpu.get(name, 0.0) + _cpu_seconds() - self._started.pop(name)
        if name in self.open:
            self.open.remove(name)

    def finish(self) -> None:
        self._fold()


def train_once(data: Path, models_dir: Path, out: Path) -> None:
    """Train on ``data`` with the default config (force: speed, not quality) and write
    the steps' seconds and peak RSS to ``out`` as JSON."""
    from nbo.data.mapping import load_mapping
    from training.config import TrainingConfig
    from training.pipeline import train
    from training.progress import Progress

    peaks = PeakSteps()
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    progress: Progress = peaks  # type: ignore[assignment]
    result = train(
        data, load_mapping("canonical"), models_dir, TrainingConfig(), True, progress=progress
    )
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    peaks.finish()
    document = {
        "wall": wall,
        "steps": {
            name: {
                "seconds": seconds,
                "cpu": peaks.cpu.get(name, 0.0),
                "peak": peaks.peaks.get(name, 0),
            }
            for name, seconds in result.timings.items()
        },
        "cpu": cpu,
        "between": {
            "seconds": wall - sum(result.timings.values()),
            "peak": peaks.peaks[BETWEEN],
        },
        "peak": max(peaks.peaks.values()),
        "cleaning": result.cleaning.to_dict(),
        "version": result.version,
        "ranker": result.manifest.get("ranker", {}).get("enabled")
        if isinstance(result.manifest.get("ranker"), dict)
        else None,
    }
    out.write_text(json.dumps(document, indent=2), encoding="utf-8")


# --- in the bench process ---------------------------------------------------------------


@dataclass
class SizeResult:
    label: str
    lines: int
    spec: SyntheticSpec
    generated: float | None
    train: dict[str, Any]
    load_before: float
    load_after: float
    other_cores: float | None
    serve: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    model_bytes: int = 0
    # Set when the trainer's figures are an earlier run's (``--serving-only``): this run
    # retrained the same data only to serve it, on a machine that may have been busy.
    train_from_earlier_run: bool = False
    serving_load: float | None = None


def _loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def _smaps(pid: int, models_dir: Path) -> dict[str, int]:
    """RSS and its parts (smaps_rollup), and the model's mapped files: mapped and resident."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    mapped = resident = 0
    current: str | None = None
    root = str(models_dir.resolve())
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            first = line.split(maxsplit=6)
            if "-" in first[0] and len(first) >= 5 and not first[0].endswith(":"):
                current = first[5].strip() if len(first) > 5 else None
                continue
            if current is None or not current.startswith(root):
                continue
            if first[0] == "Size:":
                mapped += int(first[1]) * 1024
            elif first[0] == "Rss:":
                resident += int(first[1]) * 1024
    out["model_mapped"] = mapped
    out["model_resident"] = resident
    return out


def _known_customers(models_dir: Path, count: int, seed: int) -> list[str]:
    version = (models_dir / "CURRENT").read_text(encoding="utf-8").strip()
    ids = np.load(models_dir / version / "customer_ids.npy", mmap_mode="r")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
    return [str(ids[i]) for i in np.sort(picked)]


def _model_bytes(models_dir: Path) -> int:
    version = (models_dir / "CURRENT").read_text(encoding="utf-8").strip()
    return sum(f.stat().st_size for f in (models_dir / version).iterdir() if f.is_file())


def _worker(master: int) -> int:
    """The one worker of a server started with ``NBO_WORKERS=1``."""
    with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as handle:
        children = [int(pid) for pid in handle.read().split()]
    if len(children) != 1:
        raise RuntimeError(f"nbo serve's master {master} has {len(children)} workers, not one")
    return children[0]


def measure_serve(models_dir: Path, work: Path, clock: str, seed: int) -> dict[str, Any]:
    """RSS of a real ``nbo serve`` once ready and after ``OFFERS_CALLS`` offers calls: of its
    one worker, the process that maps the model and answers (gunicorn's master imports the
    app before the fork and maps no model: its RSS is kept beside, as ``master``)."""
    customers = _known_customers(models_dir, OFFERS_CALLS, seed)
    settings = {"NBO_CLOCK": clock, "NBO_ACCESS_LOG": "false", "NBO_WORKERS": "1"}
    with running_server(models_dir, work / "serve.db", work / "serve.log", settings) as server:
        master = server.process.pid
        pid = _worker(master)
        after_start = _smaps(pid, models_dir)
        start = time.perf_counter()
        with httpx.Client(base_url=server.base, timeout=30) as client:
            for customer in customers:
                answer = client.get(f"/v1/customers/{customer}/offers", params={"k": 10})
                answer.raise_for_status()
        seconds = time.perf_counter() - start
        after_calls = _smaps(pid, models_dir)
        master_memory = _smaps(master, models_dir)
        server.terminate()
    return {
        "after_start": after_start,
        "after_calls": after_calls,
        "master": master_memory,
        "calls": len(customers),
        "calls_per_s": len(customers) / seconds,
    }


def measure_batch(models_dir: Path, work: Path, clock: str, seed: int) -> dict[str, Any]:
    """Peak RSS and customers/s of ``nbo batch`` for a sample of customers, one process."""
    customers = _known_customers(models_dir, BATCH_CUSTOMERS, seed)
    selection = work / "customers.txt"
    selection.write_text("\n".join(customers) + "\n", encoding="utf-8")
    env = {
        **os.environ,
        "NBO_CLOCK": clock,
        "NBO_STORE_URL": f"sqlite:///{work / 'batch.db'}",
        "NBO_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "nbo.cli", "batch", "--customers", str(selection)]
    command += ["--out", str(work / "campaign.parquet"), "--models-dir", str(models_dir)]
    command += ["--workers", "1"]
    start = time.perf_counter()
    with (work / "batch.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = (work / "batch.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nbo batch failed ({process.returncode}):\n{tail}")
    return {
        "customers": len(customers),
        "peak": usage.ru_maxrss * 1024,
        "seconds": seconds,
        "customers_per_s": len(customers) / seconds,
    }


def run_size(size: Size, seed: int, keep: Path | None, serving_only: bool = False) -> SizeResult:
    """Train ``size`` in a process of its own, then serve and batch its model. With
    ``serving_only``, the trainer's figures are those kept from an earlier run of the same
    size (measured on a quiet machine) and only the serving figures are this run's."""
    label, lines = size.label, size.lines
    spec = spec_for(lines, seed, size.items)
    earlier = _load_one(label, seed) if serving_only else None
    if serving_only and earlier is None:
        print(f"  no earlier figures for {label}: its trainer's figures are this run's")
    print(f"\n-- {label}: {spec.label} --", flush=True)
    data, generated = ensure_partitioned(spec)
    how = "reused from cache" if generated is None else f"generated in {generated:.0f} s"
    files = len(list(data.glob("*.parquet")))
    size_bytes = sum(f.stat().st_size for f in data.glob("*.parquet"))
    print(f"  data: {data.relative_to(REPO)} ({files} files, {size_bytes / MIB:,.0f} MiB; {how})")
    with tempfile.TemporaryDirectory(prefix="nbo-bench-scale-") as tmp:
        work = Path(tmp)
        models = (keep / _file_label(label)) if keep else work / "models"
        out = work / "train.json"
        load_before = _loadavg()
        other = OtherLoad()
        command = [sys.executable, "-m", "bench.scale_bench", "train", str(data), str(models)]
        subprocess.run([*command, str(out)], check=True, cwd=REPO)
        cores = other.cores()
        load_after = _loadavg()
        trained = json.loads(out.read_text(encoding="utf-8"))
        result = SizeResult(label, lines, spec, generated, trained, load_before, load_after, cores)
        if earlier is not None:
            result.train = earlier.train
            result.load_before, result.load_after = earlier.load_before, earlier.load_after
            result.other_cores = earlier.other_cores
            result.train_from_earlier_run = True
            print("  trainer's figures: the earlier run's (this training only made the model)")
        _print_steps(result)
        measure_serving(result, models, work, seed)
    return result


def serve_kept(size: Size, seed: int, models_dir: Path) -> SizeResult:
    """Serve and batch a model kept by an earlier ``run --keep`` of ``size`` (its trainer's
    figures as that run saved them): after a change to serving, its memory is measured
    again without training again."""
    (result,) = load_saved([size], seed)
    models = models_dir / _file_label(size.label)
    if not (models / "CURRENT").is_file():
        raise SystemExit(f"no model kept for size {size.label} in {models}")
    print(f"\n-- {size.label}: {result.spec.label} (kept model {models}) --", flush=True)
    with tempfile.TemporaryDirectory(prefix="nbo-bench-scale-") as tmp:
        measure_serving(result, models, Path(tmp), seed)
    return result


def measure_serving(result: SizeResult, models: Path, work: Path, seed: int) -> None:
    """Serve and batch the model of ``result``'s size, the clock at the end of its last
    purchase day, and print it: the serving figures of a fresh run and of a kept model."""
    last = str(result.train["cleaning"]["last_purchase"])
    clock = f"{last[:10]}T23:59:00+00:00"
    result.model_bytes = _model_bytes(models)
    result.serving_load = _loadavg()
    result.serve = measure_serve(models, work, clock, seed)
    result.batch = measure_batch(models, work, clock, seed)
    _print_serving(result)


def _gib(value: float) -> str:
    return f"{value / (1 << 30):,.2f}"


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f}"


def _print_steps(result: SizeResult) -> None:
    trained = result.train
    cleaning = trained["cleaning"]
    print(
        f"  cleaned: {cleaning['rows_read']:,} lines read, {cleaning['rows_kept']:,} kept, "
        f"{cleaning['customers']:,} customers, {cleaning['items']:,} items"
    )
    rows: list[Sequence[object] | None] = [
        [name, f"{step['seconds']:,.1f}", f"{step.get('cpu', 0.0):,.1f}", _mib(step["peak"])]
        for name, step in trained["steps"].items()
    ]
    between = trained["between"]
    rows.append([BETWEEN, f"{between['seconds']:,.1f}", "", _mib(between["peak"])])
    rows.append(None)
    rows.append(
        [
            "trainer end to end",
            f"{trained['wall']:,.1f}",
            f"{trained.get('cpu', 0.0):,.1f}",
            _mib(trained["peak"]),
        ]
    )
    print(table(["step", "wall s", "CPU s", "peak RSS MiB"], rows))
    cores = "n/a" if result.other_cores is None else f"{result.other_cores:.2f}"
    print(
        f"  load average {result.load_before:.2f} before, {result.load_after:.2f} after; "
        f"other processes used {cores} of {os.cpu_count()} cores while it trained"
    )


def _print_serving(result: SizeResult) -> None:
    serve, batch = result.serve, result.batch
    start, calls = serve["after_start"], serve["after_calls"]
    rows: list[Sequence[object] | None] = [
        [
            "nbo serve's worker, ready",
            _mib(start["Rss"]),
            _mib(start.get("Anonymous", 0)),
            _mib(start["Rss"] - start.get("Anonymous", 0)),
            f"{_mib(start['model_resident'])} / {_mib(start['model_mapped'])}",
        ],
        [
            f"nbo serve's worker, after {serve['calls']:,} offers calls",
            _mib(calls["Rss"]),
            _mib(calls.get("Anonymous", 0)),
            _mib(calls["Rss"] - calls.get("Anonymous", 0)),
            f"{_mib(calls['model_resident'])} / {_mib(calls['model_mapped'])}",
        ],
        [
            "nbo serve's master (the app imported before the fork; no model)",
            _mib(serve["master"]["Rss"]) if "master" in serve else "",
            _mib(serve["master"].get("Anonymous", 0)) if "master" in serve else "",
            "",
            "",
        ],
        [
            f"nbo batch, {batch['customers']:,} customers, one process (peak)",
            _mib(batch["peak"]),
            "",
            "",
            "",
        ],
    ]
    print(
        f"  model on disk {_mib(result.model_bytes)} MiB; offers "
        f"{serve['calls_per_s']:,.0f} calls/s (sequential, HTTP); batch "
        f"{batch['customers_per_s']:,.0f} customers/s (start-up included)"
    )
    print(
        table(
            ["process", "RSS MiB", "anonymous", "file-backed", "model files resident / mapped"],
            rows,
        )
    )


def exponent(small: float, large: float, n_small: int, n_large: int) -> float | None:
    """b in t ~ n^b between two sizes (None between sizes of the same lines, e.g. ``3M``
    and ``3M/80k``, which move the items alone)."""
    if small <= 0 or large <= 0 or n_small == n_large:
        return None
    return math.log(large / small) / math.log(n_large / n_small)


def _fmt_exp(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _figure(result: SizeResult, name: str, pick: str) -> float:
    """A step's (or ``END_TO_END``'s) seconds, CPU seconds or peak RSS; 0 when missing."""
    if name == END_TO_END:
        return float(result.train.get({"seconds": "wall"}.get(pick, pick), 0.0))
    step = result.train["steps"].get(name) or {}
    return float(step.get(pick, 0.0))


END_TO_END = "end to end"
# Steps shorter than this at either size get no time exponent: their timer's noise.
TOO_SHORT_S = 0.5
MEASURES = (
    ("seconds", "wall seconds", lambda v: f"{v:,.1f}"),
    ("cpu", "CPU seconds (user + system, all threads)", lambda v: f"{v:,.1f}"),
    ("peak", "peak RSS MiB", _mib),
)


def per_unit(
    points: list[tuple[int, int, float]],
) -> tuple[float, float, float] | None:
    """(fixed, per customer, per item) of a cost from (customers, items, cost) points, by
    least squares on cost = fixed + a * customers + b * items; None unless the points tell
    customers and items apart (three or more, not all on one line: the bench's sizes grow
    items as the square root of the customers, and a size like ``3M/80k`` moves items
    alone)."""
    if len(points) < 3:
        return None
    design = np.array([[1.0, c, i] for c, i, _ in points])
    if np.linalg.matrix_rank(design / design.max(axis=0)) < 3:
        return None
    costs = np.array([cost for _, _, cost in points])
    solution, *_ = np.linalg.lstsq(design, costs, rcond=None)
    return float(solution[0]), float(solution[1]), float(solution[2])


SERVING_COSTS = (
    ("model on disk", lambda r: float(r.model_bytes)),
    ("serve ready RSS", lambda r: float(r.serve["after_start"]["Rss"])),
    (f"serve RSS after {OFFERS_CALLS:,} calls", lambda r: float(r.serve["after_calls"]["Rss"])),
    ("of it the model's files", lambda r: float(r.serve["after_calls"]["model_resident"])),
    (f"batch {BATCH_CUSTOMERS:,} peak RSS", lambda r: float(r.batch["peak"])),
)


def print_per_unit(results: list[SizeResult]) -> None:
    """Serving memory per customer and per item, where the sizes tell them apart."""
    served = [r for r in results if r.serve and r.batch]
    rows: list[Sequence[object] | None] = []
    for name, cost in SERVING_COSTS:
        points = [
            (r.train["cleaning"]["customers"], r.train["cleaning"]["items"], cost(r))
            for r in served
        ]
        fit = per_unit(points)
        if fit is None:
            return
        fixed, customer, item = fit
        rows.append([name, _mib(fixed), f"{customer:,.0f}", f"{item:,.0f}"])
    labels = ", ".join(r.label for r in served)
    print(f"\n  Serving memory per customer and per item (least squares over {labels})")
    print(table(["cost", "fixed MiB", "bytes per customer", "bytes per item"], rows))


def on_curve(result: SizeResult) -> bool:
    """Whether a size's items follow its lines (``spec_for``): growth exponents and the
    extrapolation are over those; a size that moves the items alone (``3M/80k``) only
    tells the cost per item apart."""
    return result.spec.items == spec_for(result.lines, result.spec.seed).items


def growth_pairs(results: list[SizeResult]) -> list[tuple[SizeResult, SizeResult]]:
    """Consecutive sizes on the curve, smallest first."""
    grown = sorted((r for r in results if on_curve(r)), key=lambda r: r.lines)
    return list(itertools.pairwise(grown))


def print_summary(results: list[SizeResult]) -> None:
    print("\n== train-scale: summary ==")
    pairs = growth_pairs(results)
    names: list[str] = []
    for result in results:
        names += [n for n in result.train["steps"] if n not in names]
    for pick, title, fmt in MEASURES:
        headers = ["step"] + [r.label for r in results]
        headers += [f"exp {a.label}->{b.label}" for a, b in pairs]
        rows: list[Sequence[object] | None] = []
        for name in [*names, END_TO_END]:
            if name == END_TO_END:
                rows.append(None)
            values = [_figure(r, name, pick) for r in results]
            row: list[object] = [name, *(fmt(v) for v in values)]
            row += [
                _fmt_exp(exponent(_figure(a, name, pick), _figure(b, name, pick), a.lines, b.lines))
                if min(_figure(a, name, pick), _figure(b, name, pick)) >= TOO_SHORT_S
                or pick == "peak"
                else "-"
                for a, b in pairs
            ]
            rows.append(row)
        print(f"\n  {title}; exp: growth exponent b in cost ~ lines^b")
        print(table(headers, rows))
    print_extrapolation(results)
    by_label = {r.label: r for r in results}
    if "3M" in by_label and "30M" in by_label:
        small, large = by_label["3M"], by_label["30M"]
        t = large.train["wall"] / small.train["wall"]
        c = large.train.get("cpu", 0.0) / max(small.train.get("cpu", 0.0), 1e-9)
        m = large.train["peak"] / small.train["peak"]
        verdict = "ok" if max(t, m) <= TARGET_FACTOR else "OVER"
        print(
            f"\n  30M against 3M: {t:.1f}x the wall time ({c:.1f}x the CPU time), "
            f"{m:.1f}x the peak RSS "
            f"(target <= {TARGET_FACTOR:g}x both): {verdict}"
        )
    rows = []
    for result in results:
        serve, batch = result.serve, result.batch
        customers = result.train["cleaning"]["customers"]
        items = result.train["cleaning"]["items"]
        ready = serve["after_start"]["Rss"]
        called = serve["after_calls"]["Rss"]
        rows.append(
            [
                result.label,
                f"{customers:,}",
                f"{items:,}",
                _mib(result.model_bytes),
                _mib(ready),
                _mib(called),
                f"{_mib(serve['after_calls']['model_resident'])} / "
                f"{_mib(serve['after_calls']['model_mapped'])}",
                _mib(batch["peak"]),
                "-" if result.serving_load is None else f"{result.serving_load:.1f}",
            ]
        )
    print("\n  Serving the model of each size (RSS in MiB)")
    print(
        table(
            [
                "size",
                "customers",
                "items",
                "model on disk",
                "serve ready",
                f"serve after {OFFERS_CALLS:,} calls",
                "model resident / mapped",
                f"batch {BATCH_CUSTOMERS:,} (peak)",
                "load avg",
            ],
            rows,
        )
    )
    apart = [
        (base, r)
        for r in results
        if not on_curve(r)
        for base in results
        if on_curve(base) and base.lines == r.lines
    ]
    for a, b in [*pairs, *apart]:
        dc = b.train["cleaning"]["customers"] - a.train["cleaning"]["customers"]
        di = b.train["cleaning"]["items"] - a.train["cleaning"]["items"]
        ds = b.serve["after_calls"]["Rss"] - a.serve["after_calls"]["Rss"]
        db = b.batch["peak"] - a.batch["peak"]
        # Per what was added: customers, or items where a size moved items alone.
        unit, added = ("item", di) if dc == 0 else ("customer", dc)
        print(
            f"  {a.label} -> {b.label}: {dc:+,} customers, {di:+,} items; serve "
            f"{ds / MIB:+,.0f} MiB ({ds / max(added, 1):,.0f} bytes per added {unit}), "
            f"batch {db / MIB:+,.0f} MiB ({db / max(added, 1):,.0f} bytes per added {unit})"
        )
    print_per_unit(results)


def _file_label(label: str) -> str:
    """A size's label as part of a file name (``3M/80k`` -> ``3M-items-80k``)."""
    return label.replace("/", "-items-")


def saved_path(label: str, seed: int) -> Path:
    """Where a size's figures are kept, so sizes run apart can be summarised together."""
    return CACHE_DIR / f"train-scale-{_file_label(label)}-s{seed}.json"


EXTRAPOLATE_TO = 300_000_000


def extrapolate(results: list[SizeResult], pick: str) -> tuple[float, float] | None:
    """(cost at ``EXTRAPOLATE_TO`` lines, marginal cost per million lines) of the trainer,
    by the marginal cost between the two largest sizes measured: the sampled steps are
    flat by then, so what is left grows with the lines, and a straight line through the
    top of the curve is what the measurements support (no exponent is fitted beyond it)."""
    if len(results) < 2:
        return None
    grown = sorted((r for r in results if on_curve(r)), key=lambda r: r.lines)
    if len(grown) < 2:
        return None
    small, large = grown[-2:]
    a, b = _figure(small, END_TO_END, pick), _figure(large, END_TO_END, pick)
    per_line = (b - a) / (large.lines - small.lines)
    return b + per_line * (EXTRAPOLATE_TO - large.lines), per_line * 1_000_000


def print_extrapolation(results: list[SizeResult]) -> None:
    cpu, peak = extrapolate(results, "cpu"), extrapolate(results, "peak")
    if cpu is None or peak is None:
        return
    top = sorted((r for r in results if on_curve(r)), key=lambda r: r.lines)[-2:]
    print(
        f"\n  Extrapolated to {EXTRAPOLATE_TO / 1e6:,.0f}M lines from the marginal cost "
        f"between {top[0].label} and {top[1].label}: {cpu[1]:,.1f} CPU s and "
        f"{peak[1] / MIB:,.0f} MiB per million lines more, so about {cpu[0] / 3600:,.1f} "
        f"CPU hours and {peak[0] / (1 << 30):,.0f} GiB peak RSS"
    )


def print_markdown(results: list[SizeResult]) -> None:
    """The docs' tables (docs/benchmarks.md), from the kept figures."""
    pairs = growth_pairs(results)
    print("| size | customers × items | trainer wall | trainer CPU | peak RSS | load avg |")
    print("|---|---|---|---|---|---|")
    for r in results:
        c = r.train["cleaning"]
        print(
            f"| {r.label} | {c['customers']:,} × {c['items']:,} | {r.train['wall']:,.0f} s "
            f"| {r.train.get('cpu', 0.0):,.0f} s | {r.train['peak'] / (1 << 30):.2f} GiB "
            f"| {r.load_before:.1f} / {r.load_after:.1f} |"
        )
    names: list[str] = []
    for r in results:
        names += [n for n in r.train["steps"] if n not in names]
    print()
    header = " | ".join(f"{r.label}" for r in results)
    exps = " | ".join(f"b {a.label}→{b.label}" for a, b in pairs)
    print(f"| step, CPU s | {header} | {exps} |")
    print("|---" * (1 + len(results) + len(pairs)) + "|")
    for name in [*names, END_TO_END]:
        values = [_figure(r, name, "cpu") for r in results]
        if max(values) < TOO_SHORT_S:
            continue
        bs = [
            _fmt_exp(exponent(_figure(a, name, "cpu"), _figure(b, name, "cpu"), a.lines, b.lines))
            if min(_figure(a, name, "cpu"), _figure(b, name, "cpu")) >= TOO_SHORT_S
            else "-"
            for a, b in pairs
        ]
        label = f"**{name}**" if name == END_TO_END else name
        print(f"| {label} | {' | '.join(f'{v:,.1f}' for v in values)} | {' | '.join(bs)} |")
    print()
    print(f"| step, peak RSS MiB | {header} | {exps} |")
    print("|---" * (1 + len(results) + len(pairs)) + "|")
    for name in [*names, END_TO_END]:
        values = [_figure(r, name, "peak") for r in results]
        bs = [
            _fmt_exp(exponent(_figure(a, name, "peak"), _figure(b, name, "peak"), a.lines, b.lines))
            for a, b in pairs
        ]
        label = f"**{name}**" if name == END_TO_END else name
        print(f"| {label} | {' | '.join(_mib(v) for v in values)} | {' | '.join(bs)} |")
    print()
    print(
        "| size | model on disk | serve ready: RSS (anon + file) | serve after "
        f"{OFFERS_CALLS:,} calls | model resident / mapped | batch {BATCH_CUSTOMERS:,} peak |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        ready, called = r.serve["after_start"], r.serve["after_calls"]
        anonymous = ready.get("Anonymous", 0)
        print(
            f"| {r.label} | {_mib(r.model_bytes)} MiB | {_mib(ready['Rss'])} MiB "
            f"({_mib(anonymous)} + {_mib(ready['Rss'] - anonymous)}) "
            f"| {_mib(called['Rss'])} MiB | {_mib(called['model_resident'])} / "
            f"{_mib(called['model_mapped'])} MiB | {_mib(r.batch['peak'])} MiB |"
        )


def bench_scale(
    sizes: list[Size], seed: int, keep: Path | None = None, serving_only: bool = False
) -> None:
    results = []
    for size in sizes:
        results.append(run_size(size, seed, keep, serving_only))
        keep_figures(results[-1], seed)
    print_summary(results)


def keep_figures(result: SizeResult, seed: int) -> None:
    """Save a size's figures where ``summary`` and ``--serving-only`` find them."""
    saved = saved_path(result.label, seed)
    saved.write_text(json.dumps(asdict(result), indent=1), encoding="utf-8")
    print(f"  (figures kept in {saved.relative_to(REPO)})", flush=True)


def _load_one(label: str, seed: int) -> SizeResult | None:
    path = saved_path(label, seed)
    if not path.is_file():
        return None
    document = json.loads(path.read_text(encoding="utf-8"))
    document["spec"] = SyntheticSpec(**document["spec"])
    return SizeResult(**document)


def load_saved(sizes: list[Size], seed: int) -> list[SizeResult]:
    """The figures of earlier runs (``python -m bench.scale_bench summary 1M,3M``)."""
    results = []
    for size in sizes:
        result = _load_one(size.label, seed)
        if result is None:
            raise SystemExit(f"no figures kept for size {size.label}: run it first")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench")
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="(internal) one training, figures as JSON")
    trainer.add_argument("data", type=Path)
    trainer.add_argument("models_dir", type=Path)
    trainer.add_argument("out", type=Path)
    run = commands.add_parser("run", help="the bench for some sizes")
    run.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--keep", type=Path, help="keep each size's model in this folder")
    run.add_argument(
        "--serving-only",
        action="store_true",
        help="keep the trainer's figures of the earlier run of each size; measure serving",
    )
    serving = commands.add_parser("serving", help="serve again the models a run kept")
    serving.add_argument("sizes", type=parse_sizes)
    serving.add_argument("--models", type=Path, required=True, help="the run's --keep folder")
    serving.add_argument("--seed", type=int, default=0)
    summary = commands.add_parser("summary", help="the summary of sizes run earlier")
    summary.add_argument("sizes", type=parse_sizes)
    summary.add_argument("--seed", type=int, default=0)
    summary.add_argument("--markdown", action="store_true", help="the docs' tables")
    args = parser.parse_args(argv)
    if args.command == "summary":
        results = load_saved(args.sizes, args.seed)
        if args.markdown:
            print_markdown(results)
        else:
            print_summary(results)
        return 0
    if args.command == "train":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            train_once(args.data, args.models_dir, args.out)
        return 0
    if args.command == "serving":
        results = []
        for size in args.sizes:
            results.append(serve_kept(size, args.seed, args.models))
            keep_figures(results[-1], args.seed)
        print_summary(results)
        return 0
    bench_scale(args.sizes, args.seed, args.keep, serving_only=args.serving_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
