"""``nbo evaluate``: the trainer's whole time-split evaluation of a data set, publishing
nothing, with the comparison as tables, a JSON document and an HTML report.

It lets a user check a new data set (or config) before ``nbo train`` publishes from it.
It is a check, not a gate: it exits 0 whether or not ALS beats popularity, and says
which; only what the user must fix (a missing file, a bad mapping or config) exits 2.
The evaluation is the trainer's own (``train(publish=False)``), so the numbers are the
ones ``nbo train`` would act on, every method scored on the same customers.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text

from nbo import __version__
from nbo.console.tables import output_console
from nbo.core.outputs import check_output_folder, write_files_together
from nbo.models.policy import SECTION as POLICY_SECTION
from training.cli import (
    CHURN_METHOD_ORDER,
    METHOD_ORDER,
    STAGE_ORDER,
    TRUTH_TITLES,
    add_input_arguments,
    cycles_line,
    dead_time_line,
    in_order,
    load_inputs,
    print_report,
    progress_display,
    propensity_line,
    store_line,
)
from training.evaluate import CHURN_METRICS
from training.gate import QualityGate
from training.pipeline import TrainResult, train
from training.report import (
    EVALUATION_JSON,
    REPORT_HTML,
    evaluation_html,
    evaluation_json,
)
from training.served import SERVED

REPORTS_DIR = Path("reports")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a data set as `nbo train` would, without publishing",
        description="Run the trainer's time-split evaluation on a purchase file (what "
        "is served, the ranker, ALS and the baselines on the same customers, the churn model, the "
        "lifecycle stages) without publishing anything; print the comparison and write it as "
        f"{EVALUATION_JSON} and a self-contained {REPORT_HTML}. Exits 0 whether or not "
        "the quality gate passes.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for {EVALUATION_JSON} and {REPORT_HTML} "
        f"(default: {REPORTS_DIR}/evaluate-<data stem>-<UTC time>)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    out = args.out if args.out is not None else default_out_dir(args.data, now)
    check_output_folder(out, "--out")
    inputs = load_inputs(args)
    # publish=False writes nothing; the throwaway folder makes sure of it whatever the
    # trainer does, and never touches the user's models/.
    with (
        tempfile.TemporaryDirectory(prefix="nbo-evaluate-") as models_dir,
        progress_display("nbo evaluate") as progress,
    ):
        result = train(
            args.data,
            inputs.mapping,
            Path(models_dir),
            inputs.config,
            progress=progress,
            erased=inputs.erased,
            publish=False,
            catalog=inputs.catalog,
            withdrawn=inputs.withdrawn,
        )
    document = evaluation_document(result, now)
    console = output_console()
    warnings = [
        f"[bold red]warning[/] truth {truth}: the methods were scored on different "
        "customers, so their metrics are not comparable"
        for truth, customers in document["evaluated_customers"].items()
        if customers is None
    ]
    print_report(console, result, document["quality_gate"]["message"], warnings)
    console.print(store_line(inputs.exclusions, inputs.store_setting))
    cycles = result.manifest.get("cycles", {"enabled": False})
    notes = [
        Text.from_markup(cycles_line(cycles)).plain,
        *(
            [Text.from_markup(dead_time_line(cycles["dead_time"])).plain]
            if cycles.get("dead_time")
            else []
        ),
        Text.from_markup(propensity_line(result.manifest.get("propensity"))).plain,
    ]
    # Both made before either is written, and written together: a failure leaves the
    # pair there was, never a new document beside an old page.
    contents = {
        EVALUATION_JSON: evaluation_json(document),
        REPORT_HTML: evaluation_html(document, f"nbo evaluate: {args.data.name}", notes),
    }
    written = write_files_together(out, contents, "--out")
    for path in written:
        console.print(f"[bold]wrote[/] {escape(str(path))}", soft_wrap=True)
    return 0


def default_out_dir(data: Path, now: datetime, root: Path = REPORTS_DIR) -> Path:
    """``reports/evaluate-<data stem>-<UTC time>``, suffixed when two runs share a second,
    so an evaluation never overwrites an earlier one."""
    base = root / f"evaluate-{data.stem}-{now:%Y%m%dT%H%M%SZ}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def evaluation_document(result: TrainResult, created: datetime) -> dict[str, Any]:
    """What ``evaluation.json`` holds: the manifest's evaluation sections, with methods,
    churn methods and stages in display order (JSON keeps it, the report draws it)."""
    manifest = result.manifest
    metrics: dict[str, Any] = {
        truth: _ordered(by_method, CHURN_METHOD_ORDER if truth == CHURN_METRICS else METHOD_ORDER)
        for truth, by_method in result.metrics.items()
    }
    truths = [t for t in metrics if t != CHURN_METRICS]
    lifecycle = manifest.get("lifecycle")
    if lifecycle and "stages" in lifecycle:
        lifecycle = {**lifecycle, "stages": _ordered(lifecycle["stages"], STAGE_ORDER)}
    document: dict[str, Any] = {
        "command": "nbo evaluate",
        "nbo_version": __version__,
        "created_at": created.isoformat(timespec="seconds"),
        "published": False,
        "truths": {t: TRUTH_TITLES.get(t, t) for t in truths},
        "evaluated_customers": {t: _common_customers(metrics[t]) for t in truths},
        "metrics": metrics,
        "quality_gate": evaluation_gate(manifest["quality_gate"]),
    }
    sections = (
        "split",
        "data",
        "cycles",
        "propensity",
        POLICY_SECTION,
        SERVED,
        "ranker",
        "churn",
        "model",
        "config",
    )
    for section in sections:
        if section in manifest:
            document[section] = manifest[section]
    document["lifecycle"] = lifecycle
    document["timings"] = dict(result.timings)
    return document


def evaluation_gate(section: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's gate, reworded for a run that publishes nothing: its comparison
    (``training.gate``), then what ``nbo train`` would do instead of the trainer's
    advice to use --force."""
    gate = QualityGate.from_section(section)
    status = "passed" if gate.passed else "failed"
    consequence = (
        "`nbo train` would publish this model"
        if gate.passed is not False
        else "`nbo train` would refuse to publish it (exit 3) unless --force"
    )
    if gate.passed is None:
        status = "not compared"
    if not gate.evaluated:
        status, consequence = "not evaluated", "`nbo train` would publish it unevaluated"
    kept = {key: value for key, value in section.items() if key != "forced"}
    return {**kept, "message": f"quality gate {status}: {gate.comparison}; {consequence}"}


def _common_customers(by_method: Mapping[str, Mapping[str, float]]) -> int | None:
    """The customers every method of a truth was scored on; None if they differ."""
    counts = {m.get("customers") for m in by_method.values()}
    count = counts.pop() if len(counts) == 1 else None
    return None if count is None else int(count)


def _ordered(values: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``values`` in ``order`` (``in_order``)."""
    return {key: values[key] for key in in_order(values, order)}
