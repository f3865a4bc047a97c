"""``nbo train``: the trainer's command line, with a progress display and a summary table."""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from nbo.catalog.loading import load_catalog
from nbo.catalog.terms import Catalog
from nbo.console.progress import PlainProgress
from nbo.console.tables import output_console, print_table
from nbo.core.erased import ErasedList
from nbo.core.errors import EXIT_REFUSED, NboError
from nbo.core.outputs import check_output_file, check_output_folder, write_file
from nbo.data.mapping import ColumnMapping, add_mapping_arguments, mapping_of
from nbo.models.churn import MODEL, RECENCY
from nbo.models.policy import POLICY_ALS, POLICY_RANKER
from nbo.models.policy import SECTION as POLICY_SECTION
from nbo.models.propensity import BASIS_PLACE, BASIS_SCORE
from nbo.settings import load_settings
from nbo.store import TrainingExclusions, read_training_exclusions, store_setting
from training.config import TrainingConfig, load_training_config
from training.evaluate import CHURN_METRICS, case_variants, few_items
from training.gate import NOT_EVALUATED, Unchanged
from training.lifecycle import CALIBRATION_PLOT, loyal_rule, measured_model
from training.pipeline import ModelRefused, TrainResult, train
from training.progress import Progress as TrainProgress
from training.search import search_line
from training.served import SERVED, below_best_rule

METHOD_ORDER = (
    "served",
    "ranker",
    "als",
    "als_window",
    "als_cycles",
    "itemknn",
    "buy_again",
    "popularity",
    "stage_popularity",
)
TRUTH_TITLES = {
    "all": "all holdout purchases",
    "new": "items not bought in the suppression window",
}
# A metric of a method scored on no customer: not evaluated, not zero.
NOT_SCORED = "–"
CHURN_METHOD_ORDER = (MODEL, RECENCY)
# Churn metrics shown, and whether higher is better.
CHURN_COLUMNS = {"roc_auc": True, "pr_auc": True, "brier": False}
STAGE_ORDER = ("new", "active", "loyal", "at_risk", "lapsed")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train, evaluate and publish a model from purchase history",
        description="Train on a purchase file (CSV or Parquet), evaluate on a time-based "
        "holdout (the ranker against ALS, item-kNN, buy-again and popularity, and what the "
        "service serves: the ranker, or the simple rule that served better on the window "
        "before the holdout), and publish a versioned model unless what it serves is worse, "
        "on NDCG@k (k = 10 unless --config says otherwise), than what the current model "
        "serves on the same holdout.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where versions are published, and the current model the quality gate "
        "compares with is read (default: NBO_MODELS_DIR, else models: the folder the "
        "service, nbo models and nbo batch read)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="publish even if the quality gate fails (what the new model serves is worse "
        "on NDCG@k than what the current model serves on the same holdout, or "
        "models/CURRENT names no published version, which publishing replaces)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the outcome to FILE as JSON, for scripts: published (and the "
        "version), refused, unchanged or error, the reason, the exit status, what is "
        "served and the quality gate's comparison",
    )
    parser.set_defaults(handler=run)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, mapping, config and store options, shared with ``nbo evaluate`` so both
    commands read a data set the same way."""
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="purchase file (.csv/.parquet) or a folder of Parquet files (a partitioned dataset)",
    )
    add_mapping_arguments(parser)
    parser.add_argument("--config", type=Path, default=None, help="training config (TOML)")
    parser.add_argument("--holdout-days", type=int, default=None, help="holdout window (30)")
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="offer catalogue (YAML or JSON) what is served is evaluated under: its "
        "eligibility rules and arbitration (default: every item a product offer, no "
        "incentives, as the service without NBO_CATALOG)",
    )
    parser.add_argument(
        "--store-url",
        default=None,
        help="the service's event store: its erased customers, and those whose consent "
        "withdraws personalization, are left out (default: NBO_STORE_URL; a store file "
        "that does not exist has none, and is warned of)",
    )


@dataclass(frozen=True)
class Inputs:
    """What the input options name: the column mapping, the training config, the
    customers the store says to leave out and the offer catalogue (None: the default)."""

    mapping: ColumnMapping
    config: TrainingConfig
    exclusions: TrainingExclusions
    catalog: Catalog | None
    # Where the store came from (``--store-url`` or ``NBO_STORE_URL``), for ``store_line``.
    store_setting: str = "NBO_STORE_URL"

    @property
    def erased(self) -> ErasedList:
        return self.exclusions.erased

    @property
    def withdrawn(self) -> list[str]:
        return self.exclusions.withdrawn


def load_inputs(args: argparse.Namespace) -> Inputs:
    """The mapping, training config, customers to leave out and catalogue the input
    options name."""
    mapping = mapping_of(args)
    config = load_training_config(args.config, holdout_days=args.holdout_days)
    catalog = (
        None
        if args.catalog is None
        else load_catalog(args.catalog, "give --catalog a catalogue file, or leave it out")
    )
    url = load_settings().store_url if args.store_url is None else args.store_url
    setting = store_setting(args.store_url)
    exclusions = read_training_exclusions(url, setting)
    return Inputs(mapping, config, exclusions, catalog, setting)


def store_line(exclusions: TrainingExclusions, setting: str) -> str:
    """Which store the erasures and consent were read from and how many ids each left
    out, or a warning that there was no store to read (a run from another folder, a
    wrong path): no erasure and no withdrawal of consent applied. Printed with the
    report (stdout), so that a failed run's stderr stays its one error line."""
    if not exclusions.found:
        return (
            f"[bold red]warning:[/] no store at "
            f"{escape(exclusions.location.removeprefix('SQLite '))}: no "
            "erasures or consent applied (erased customers and those who withdrew "
            f"personalization are trained on); point {setting} at the service's store, "
            "or a copy of its file"
        )
    erased, withdrawn = len(exclusions.erased), len(exclusions.withdrawn)
    return (
        f"store: erasures and consent read from {escape(exclusions.location)}: {erased:,} erased "
        f"customer{'' if erased == 1 else 's'} and {withdrawn:,} with personalization "
        "withdrawn left out"
    )


def run(args: argparse.Namespace) -> int:
    # The service's folder unless told otherwise: a model published elsewhere is one
    # the service never sees, and the gate would compare it with no current model.
    models_dir = load_settings().models_dir if args.models_dir is None else args.models_dir
    flag = "--models-dir" if args.models_dir is not None else "NBO_MODELS_DIR"
    # Before minutes of training, not when the model is published at their end.
    check_output_folder(models_dir, flag)
    if args.json is not None:
        check_output_file(args.json, "--json")
    try:
        return _run(args, models_dir)
    except NboError as exc:
        if args.json is not None:
            result = exc.result if isinstance(exc, ModelRefused) else None
            outcome = "refused" if exc.exit_code == EXIT_REFUSED else "error"
            write_outcome(args.json, outcome, str(exc), exc.exit_code, result)
        raise


def _run(args: argparse.Namespace, models_dir: Path) -> int:
    inputs = load_inputs(args)
    try:
        with progress_display("nbo train") as progress:
            result = train(
                args.data,
                inputs.mapping,
                models_dir,
                inputs.config,
                args.force,
                progress,
                erased=inputs.erased,
                catalog=inputs.catalog,
                withdrawn=inputs.withdrawn,
            )
    except ModelRefused as refused:
        # The report of what was refused, then the gate's one error line (exit 3).
        print_summary(output_console(), refused.result, inputs)
        raise
    except Unchanged as unchanged:
        # Not a failure (exit 0): a night without new purchases has nothing to publish.
        print(unchanged)
        if args.json is not None:
            write_outcome(args.json, "unchanged", str(unchanged), 0)
        return 0
    print_summary(output_console(), result, inputs)
    if args.json is not None:
        gate = result.manifest["quality_gate"]
        write_outcome(args.json, "published", gate["message"], 0, result)
    return 0


def write_outcome(
    path: Path, outcome: str, reason: str, status: int, result: TrainResult | None = None
) -> None:
    """``--json``: the outcome of the run for a script, which need not parse the report:
    ``published`` (``version``), ``refused``, ``unchanged`` or ``error``, why, the exit
    status, and (when the training got that far) what is served and the gate's section."""
    document: dict[str, Any] = {
        "outcome": outcome,
        "version": None if result is None else result.version,
        "reason": reason,
        "exit_status": status,
    }
    if result is not None:
        document["served"] = result.metrics.get("all", {}).get(SERVED)
        document["quality_gate"] = result.manifest.get("quality_gate")
    write_file(path, json.dumps(document, indent=2) + "\n", "--json")


def print_summary(console: Console, result: TrainResult, inputs: Inputs | None = None) -> None:
    """The report of the training, with the gate's verdict, the store the customers to
    leave out were read from, and where it was published (nothing more when the gate
    refused it)."""
    print_report(console, result, result.manifest["quality_gate"]["message"])
    if inputs is not None:
        console.print(store_line(inputs.exclusions, inputs.store_setting))
    for name in result.cleaned:
        console.print(f"removed {name} (the staging folder of a training killed while publishing)")
    if result.path is not None:
        console.print(f"[bold green]published[/] {result.version} -> {result.path}")


def print_report(
    console: Console, result: TrainResult, verdict: str, warnings: Sequence[str] = ()
) -> None:
    """What ``nbo train`` and ``nbo evaluate`` both print, in this order: the evaluation
    (data, split, metrics), the quality gate's ``verdict`` in the command's words, a
    warning where what is served lost to a simple rule on the holdout or where the
    lifecycle settings undo one another, any other ``warnings`` about the figures, the
    propensity, ranker and churn models."""
    print_evaluation(console, result)
    for line in served_lines(result.manifest):
        console.print(line)
    console.print(verdict)
    below = below_best_rule(result.manifest.get(SERVED) or {})
    below += (result.manifest.get("lifecycle") or {}).get("warnings", [])
    below += (result.manifest.get("churn") or {}).get("warnings", [])
    below += few_items(result.manifest)
    below += case_variants(result.manifest)
    for warning in [*(f"[bold red]warning:[/] {escape(line)}" for line in below), *warnings]:
        console.print(warning)
    console.print(
        propensity_line(
            result.manifest.get("propensity"),
            (result.manifest.get(POLICY_SECTION) or {}).get("name"),
        )
    )
    print_ranker(console, result.manifest.get("ranker"), result.manifest["config"]["k"])
    print_churn(console, result)


def served_lines(manifest: dict[str, Any]) -> list[str]:
    """What is served: the candidate policy and why (the validation window), and what is
    served against the best simple rule on the holdout, per truth."""
    policy = manifest.get(POLICY_SECTION)
    served = manifest.get(SERVED)
    if not policy or not served:
        return []
    lines = [f"[bold]served:[/] policy {policy['name']}: {policy['reason']}"]
    against = []
    for truth, entry in served.get("against_best_rule", {}).items():
        if entry.get("best_rule") is None:
            continue
        change = "" if entry.get("change") is None else f" ({entry['change']:+.1%})"
        against.append(
            f"{truth} {entry[SERVED]:.4f} vs {entry['best_rule']} "
            f"{entry['best_rule_score']:.4f}{change}"
        )
    if against:
        lines.append(
            f"[bold]served against the best simple rule[/] ({served['metric']}, holdout): "
            + "; ".join(against)
        )
    return lines


def print_ranker(console: Console, section: dict[str, Any] | None, k: int) -> None:
    """The ranker's source contributions (share of the final top ``k``, the configured
    k its lists are cut at, and hit rate) and its strongest features, or why there is no
    ranker."""
    if not section:
        return
    if not section.get("enabled"):
        console.print(f"[bold]ranker:[/] none ({section.get('reason')}); offers rank by ALS")
        return
    table = Table(title=f"ranker: where its top {k} came from (truth: all)", title_justify="left")
    table.add_column("source")
    table.add_column("share of slots", justify="right")
    table.add_column("hit rate", justify="right")
    for source, figures in section.get("contributions", {}).items():
        table.add_row(source, f"{figures['share']:.1%}", f"{figures['hit_rate']:.1%}")
    print_table(console, table)
    top = list(section.get("importance", {}).items())[:5]
    console.print(
        f"[bold]ranker:[/] LightGBM LambdaRank, {section['rounds']} rounds, trained on "
        f"{section['training_customers']:,} customers of the window before the cutoff; "
        "strongest features " + ", ".join(f"{name} {share:.0%}" for name, share in top)
    )
    if "settings_search" in section:
        head, _, rest = search_line(section["settings_search"]).partition(": ")
        console.print(f"[bold]{head}:[/] {escape(rest)}")


def print_evaluation(console: Console, result: TrainResult) -> None:
    """The cleaning report, the split and the metrics of every method on both truths:
    what ``nbo train`` and ``nbo evaluate`` both show before their verdicts."""
    cleaning = result.cleaning
    dropped = ", ".join(f"{reason}: {n:,}" for reason, n in cleaning.dropped.items() if n)
    filled = ", ".join(f"{reason}: {n:,}" for reason, n in cleaning.filled.items() if n)
    console.print(
        f"[bold]data[/] {cleaning.rows_read:,} rows read, {cleaning.rows_kept:,} kept "
        f"({dropped or 'nothing dropped'}{'; filled: ' + filled if filled else ''}); "
        f"{cleaning.customers:,} customers, "
        f"{cleaning.items:,} items, {cleaning.first_purchase} .. {cleaning.last_purchase}"
    )
    split = result.manifest["split"]
    console.print(
        f"[bold]holdout[/] from {split['cutoff']} ({split['holdout_days']} days), "
        f"{split['evaluated_customers']:,} customers evaluated, suppression window "
        f"{split['suppression_days']} days"
        + ("" if split["evaluated_customers"] else f"; not evaluated: {NOT_EVALUATED}")
    )
    cycles = result.manifest.get("cycles", {"enabled": False})
    console.print(cycles_line(cycles))
    if cycles.get("dead_time"):
        console.print(dead_time_line(cycles["dead_time"]))
    for truth, by_method in result.metrics.items():
        if truth == CHURN_METRICS:
            continue
        some = next(iter(by_method.values()))
        names = [name for name in some if name != "customers"]
        table = Table(title=f"truth: {TRUTH_TITLES.get(truth, truth)}", title_justify="left")
        table.add_column("method")
        for name in names:
            table.add_column(name, justify="right")
        # A method scored on nobody has no figures ("–"), not zeros.
        scored = [m for m in by_method.values() if m.get("customers", 1)]
        best = {name: max((m[name] for m in scored), default=None) for name in names}
        for method in in_order(by_method, METHOD_ORDER):
            values = by_method[method]
            if not values.get("customers", 1):
                table.add_row(method, *(NOT_SCORED for _ in names))
                continue
            cells = [
                f"[bold]{values[n]:.4f}[/]" if values[n] == best[n] else f"{values[n]:.4f}"
                for n in names
            ]
            table.add_row(method, *cells)
        print_table(console, table)


def print_churn(console: Console, result: TrainResult) -> None:
    """The churn model against the recency baseline, the stages, and the plot's path."""
    churn = result.manifest.get("churn", {"enabled": False, "reason": "not trained"})
    if not churn.get("enabled"):
        console.print(f"[bold]churn model:[/] off ({churn.get('reason', 'no reason given')})")
    else:
        console.print(
            f"[bold]churn model:[/] no order within {churn['horizon_days']} days; trained on "
            f"cutoffs {', '.join(c[:10] for c in churn['training_cutoffs'])} "
            f"({churn['training_rows']:,} rows), evaluated at {churn['evaluation_cutoff'][:10]} "
            f"on {churn['evaluation_customers']:,} customers "
            f"({churn['evaluation_positive_rate']:.1%} churned)"
        )
        by_method = result.metrics.get(CHURN_METRICS, {})
        table = Table(title="churn: model against recency only", title_justify="left")
        table.add_column("method")
        for name in CHURN_COLUMNS:
            table.add_column(name, justify="right")
        best = {
            name: (max if higher else min)(m[name] for m in by_method.values())
            for name, higher in CHURN_COLUMNS.items()
        }
        for method in in_order(by_method, CHURN_METHOD_ORDER):
            values = by_method[method]
            cells = [
                f"[bold]{values[n]:.4f}[/]" if values[n] == best[n] else f"{values[n]:.4f}"
                for n in CHURN_COLUMNS
            ]
            table.add_row(method, *cells)
        print_table(console, table)
        console.print(f"[bold]churn:[/] {measured_model(churn)}")
    lifecycle = result.manifest.get("lifecycle")
    if lifecycle:
        stages = lifecycle["stages"]
        total = max(sum(stages.values()), 1)
        table = Table(
            title=f"lifecycle stages as of {lifecycle['as_of'][:10]}", title_justify="left"
        )
        table.add_column("stage")
        table.add_column("customers", justify="right")
        table.add_column("share", justify="right")
        for stage in in_order(stages, STAGE_ORDER):
            table.add_row(stage, f"{stages[stage]:,}", f"{stages[stage] / total:.1%}")
        print_table(console, table)
        priced = result.manifest.get("data", {}).get("typical_line_value") is not None
        console.print(f"[bold]loyal:[/] {loyal_rule(lifecycle, priced)}")
    if result.path is not None and (result.path / CALIBRATION_PLOT).is_file():
        console.print(f"[bold]calibration plot[/] {result.path / CALIBRATION_PLOT}")


def in_order(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """``names`` in ``order``; names not listed there (a method added later) last, in
    the order they came."""

    def rank(name: str) -> int:
        return order.index(name) if name in order else len(order)

    return sorted(names, key=rank)


def propensity_line(report: dict[str, Any] | None, policy: str | None = None) -> str:
    """One line on the propensity calibration that serves, from the manifest's
    ``propensity`` section and the policy served (``policy.name``): the ranker's own curve
    when the ranker serves, a simple rule's curves when a rule does (its score for its
    own items, the place for the popular fill; with the held-out Brier score of the
    position curve they replaced), else the ALS score's (the line had named the ALS
    score whatever served)."""
    if not report:
        return "[bold]propensity:[/] not calibrated"
    position = ""
    if policy == POLICY_RANKER and report.get("ranker"):
        source, quality = "the ranker's score", report["ranker"]
    elif policy not in (None, POLICY_RANKER, POLICY_ALS):
        quality = report.get("rule") or {}
        basis = quality.get("basis")
        if basis == BASIS_SCORE:
            source = f"the {policy} score of its own items (the place for the popular fill)"
        elif basis == BASIS_PLACE:
            source = (
                f"the place of its own items in the {policy} list before suppression "
                "(the place for the popular fill)"
            )
        else:
            source = f"the position in the {policy} list"
        if "brier_place" in quality:
            position = (
                f" (chosen: by the score {quality['brier_score']:.4f}, by the place before "
                f"suppression {quality['brier_place']:.4f}; by the place in the list alone "
                f"{quality['brier_position']:.4f})"
            )
        elif "brier_position" in quality:
            position = f" ({quality['brier_position']:.4f} by the place in the list alone)"
    else:
        source, quality = "the ALS score", report["cf"]
    head = (
        f"[bold]propensity:[/] P(bought within {report['horizon_days']} days) from {source}, "
        f"calibrated on {report['customers']:,} customers x {report['candidates']} "
        f"candidates"
    )
    buying = buying_part(report.get("buying"), report["horizon_days"])
    if "brier" not in quality:
        return head + buying
    first_slot = quality.get("first_slot_rate")
    return (
        f"{head}; held-out half: predicted {quality['mean_predicted']:.3f} vs observed "
        f"{quality['observed']:.3f}, Brier {quality['brier']:.4f}{position} vs "
        f"{quality['brier_constant']:.4f} for the base rate"
        + ("" if first_slot is None else f"; first slot bought {first_slot:.1%}")
        + buying
    )


def buying_part(section: dict[str, Any] | None, horizon_days: int) -> str:
    """The propensity line's words on the buying curve (the manifest's
    ``propensity.buying``): the chance of buying anything the product curves are
    multiplied by, with its held-out quality, or why there is none (nothing for a
    manifest from before the curve)."""
    if not section:
        return ""
    if "customers" not in section:
        return f"; {section.get('reason', 'no buying curve')}"
    part = (
        f"; times P(buys anything within {horizon_days} days) from the churn risk, "
        f"fitted on {section['customers']:,} customers"
    )
    if "brier" not in section:
        return part
    return (
        f"{part}: held-out half predicted {section['mean_predicted']:.3f} vs observed "
        f"{section['observed']:.3f}, Brier {section['brier']:.4f} vs "
        f"{section['brier_constant']:.4f}"
    )


def cycles_line(cycles: dict[str, Any]) -> str:
    """One line on the learned repurchase cycles, from the manifest's ``cycles`` section."""
    if not cycles.get("enabled"):
        return "[bold]repurchase cycles:[/] off"
    head = f"[bold]repurchase cycles:[/] {cycles['items']:,} items ({cycles['share']:.1%})"
    days = cycles.get("days")
    if not days:
        return f"{head}, none learned (fewer than {cycles['min_repeat_buyers']} repeat buyers)"
    return (
        f"{head}, median {_days(days['median'])} days "
        f"(p10 {_days(days['p10'])} .. p90 {_days(days['p90'])}); "
        f"{cycles['items_before_cutoff']:,} before the cutoff for als_cycles"
    )


def dead_time_line(dead_time: dict[str, Any]) -> str:
    """One line on how long suppression holds items back, from the manifest's
    ``cycles.dead_time``: the items with a dead time of their own and its distribution,
    the shop's (for an item a customer bought twice that few others rebuy), the floor."""
    head = (
        f"[bold]just bought:[/] a dead time on {dead_time['rebought_items']:,} items "
        f"({dead_time['rebought_share']:.1%}), {dead_time['floor_items']:,} at the floor"
    )
    days = dead_time.get("days")
    if days:
        head += f", median {_days(days['median'])} days"
    shop = dead_time.get("shop_days")
    again = "the window" if shop is None else f"{_days(shop)} days"
    return (
        f"{head}; {again} for other repeat purchases, the window for one-offs; "
        f"floor {_days(dead_time['floor_days'])} days, quantile {dead_time['quantile']:g} "
        f"of the gaps less a {dead_time['horizon_days']}-day horizon"
    )


def _days(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def progress_display(command: str) -> RichProgress | PlainTrainProgress:
    """The trainer's progress on stderr: rich's live display in a terminal, plain lines
    otherwise (a CI log, cron), where rich would show nothing."""
    console = Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console)
    return PlainTrainProgress(PlainProgress(command))


class RichProgress(TrainProgress):
    """Steps as spinner lines, ALS iterations as a bar, on a terminal."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def step(self, name: str) -> None:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=1)

    def iterations(self, name: str, total: int) -> Any:
        task = self._progress.add_task(name, total=total)
        self._tasks[name] = task
        return lambda _iteration: self._progress.advance(task)

    def done(self, name: str, seconds: float) -> None:
        task = self._tasks.get(name)
        if task is not None:
            total = self._progress.tasks[task].total or 1
            self._progress.update(task, completed=total, description=f"{name} ({seconds:.1f}s)")


class PlainTrainProgress(TrainProgress):
    """The trainer's steps as plain lines (``nbo.progress``): one when a step ends, and
    every few seconds of a long one (ALS iterations done so far)."""

    def __init__(self, lines: PlainProgress) -> None:
        self._lines = lines

    def __enter__(self) -> PlainTrainProgress:
        self._lines.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lines.__exit__(*exc)

    def step(self, name: str) -> None:
        self._lines.start(name)

    def iterations(self, name: str, total: int) -> Any:
        self._lines.start(name, total, "iterations")
        done = itertools.count(1)
        return lambda _iteration: self._lines.update(next(done))

    def done(self, name: str, seconds: float) -> None:
        self._lines.finish(name, seconds)
