"""``nbo report experiment NAME`` and ``nbo report compare A B``; ``nbo models``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbo.core.errors import NboError
from nbo.core.outputs import (
    check_output_file,
    check_output_folder,
    write_file,
    write_files_together,
)
from nbo.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

REPORTS_DIR = Path("reports")


def register(commands: Any) -> None:
    from nbo.data.mapping import add_mapping_arguments

    parser = commands.add_parser(
        "report",
        help="experiment reports and offline model comparisons",
        description="Reports on models: an experiment's uplift and significance from the "
        "service's events, or two published models compared on purchases neither saw.",
    )
    reports = parser.add_subparsers(dest="report", metavar="REPORT")
    reports.required = True

    experiment = reports.add_parser(
        "experiment",
        help="per variant: exposed, conversions, revenue; uplift against the baseline",
        description="The experiment's report from the event store (NBO_STORE_URL) and the "
        "experiments file (NBO_EXPERIMENTS): per variant customers assigned and exposed, "
        "conversions, conversion rate and revenue per exposed customer; each variant "
        "against the baseline (the variant the experiment's baseline names, else the "
        "control, else the first variant) with a 95% confidence interval and p-value; the "
        "sample-ratio "
        "test; the experiment's dates and the window of events counted; a warning for a "
        "variant with fewer than 100 exposed customers. Prints a table, writes report.json "
        "and report.html.",
    )
    experiment.add_argument("name", help="the experiment's name in the experiments file")
    experiment.add_argument(
        "--experiments", type=Path, default=None, help="experiments file (NBO_EXPERIMENTS)"
    )
    experiment.add_argument("--store-url", default=None, help="NBO_STORE_URL")
    experiment.add_argument(
        "--out", type=Path, default=None, help="folder for the files (reports/experiment-...)"
    )
    experiment.set_defaults(handler=run_experiment)

    compare = reports.add_parser(
        "compare",
        help="two published models on purchases after both were trained",
        description="Evaluate two published models (versions or aliases) on the purchases "
        "of --data made after the newer model's training data ends, for the customers both "
        "know, with the trainer's metrics on both truths and a paired test of NDCG.",
    )
    compare.add_argument("model_a", metavar="VERSION_A", help="a version or alias")
    compare.add_argument("model_b", metavar="VERSION_B", help="a version or alias")
    compare.add_argument("--data", type=Path, required=True, help="purchase file (.csv/.parquet)")
    add_mapping_arguments(compare, cancelled_prefix=False)
    compare.add_argument("--k", type=int, default=10, help="list length (10)")
    compare.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    compare.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")
    compare.set_defaults(handler=run_compare)


def register_models(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="list published models, set aliases and CURRENT, remove old versions",
        description="List the published versions with their aliases (and what keeps a "
        "broken one from loading), point an alias (e.g. candidate) at a version "
        "(experiments name models by alias or version), point CURRENT at a version (the "
        "rollback that survives restarts), or remove old versions.",
    )
    models.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    # One change per call: the two together would apply one and drop the other.
    change = models.add_mutually_exclusive_group()
    change.add_argument(
        "--alias",
        nargs=2,
        metavar=("NAME", "VERSION"),
        default=None,
        help="point alias NAME at VERSION (a version or another alias)",
    )
    change.add_argument("--unalias", metavar="NAME", default=None, help="remove an alias")
    change.add_argument(
        "--current",
        metavar="VERSION",
        default=None,
        help="point models/CURRENT at VERSION (a version or an alias) once it loads: "
        "what a restart, SIGHUP, a reload without a version and the watcher serve (the "
        "rollback that survives restarts)",
    )
    change.add_argument(
        "--prune",
        metavar="KEEP",
        type=int,
        default=None,
        help="remove published versions beyond the newest KEEP, except those CURRENT, an "
        "alias, the experiments file (NBO_EXPERIMENTS), NBO_MODEL_VERSION or an nbo "
        "serve running on this machine name",
    )
    models.add_argument(
        "--json",
        action="store_true",
        help="the listing as JSON, for scripts: each version (newest first) with its "
        "aliases, whether CURRENT names it, its data end (the last purchase it learned) "
        "and what keeps it from loading",
    )
    models.add_argument(
        "--dry-run",
        action="store_true",
        help="with --prune: say what would be removed and kept, remove nothing",
    )
    models.set_defaults(handler=run_models)


def run_experiment(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from nbo.console.tables import output_console, print_table
    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import report_for
    from nbo.experiments.page import report_html, sample_size_text, srm_result
    from nbo.experiments.stats import SRM_WARNING
    from nbo.store import open_existing_store, store_setting

    settings = load_settings(store_url=args.store_url, experiments=args.experiments)
    if settings.experiments is None:
        raise NboError("no experiments file: pass --experiments FILE or set NBO_EXPERIMENTS")
    experiments = load_experiments(settings.experiments)
    experiment = experiments.get(args.name)
    if experiment is None:
        names = [e.name for e in experiments.experiments]
        known = f"its experiments: {', '.join(names)}" if names else "it has no experiments"
        raise NboError(f"experiment '{args.name}': not in {settings.experiments} ({known})")
    now = settings.now()
    out = args.out or REPORTS_DIR / f"experiment-{args.name}-{now:%Y%m%dT%H%M%SZ}"
    check_output_folder(out, "--out")
    store = open_existing_store(settings.store_url, store_setting(args.store_url))
    try:
        report: dict[str, Any] = report_for(
            store, experiment, int(now.timestamp()), settings.clock_skew_seconds
        )
    finally:
        store.close()
    console = output_console()
    end = report["end"] or "no end date"
    window = report["window"]
    console.print(
        f"experiment {args.name}: {report['start']} to {end} ({report['status']}); this "
        f"report counts events from {window['start']} to {window['end']}",
        soft_wrap=True,
        markup=False,
    )
    console.print(f"what counts: {report['attribution']}", soft_wrap=True, markup=False)
    for warning in report["warnings"]:
        style = "bold red" if warning.startswith(SRM_WARNING) else "yellow"
        console.print(f"[{style}]warning[/] {escape(warning)}", soft_wrap=True)
    table = Table(title=f"experiment {args.name} (as of {report['as_of']})", title_justify="left")
    columns = ("variant", "model", "assigned", "exposed", "converted", "rate", "rev/exposed")
    for column in (*columns, "95% CI"):
        table.add_column(column, justify="left" if column in ("variant", "model") else "right")
    clipped = False
    for v in report["variants"]:
        ci = v["revenue_per_exposed_ci"]
        mark = "*" if v["revenue_per_exposed_ci_clipped"] else ""
        clipped = clipped or bool(mark)
        table.add_row(
            escape(
                v["name"]
                + (" (control)" if v["control"] else " (baseline)" if v["baseline"] else "")
            ),
            escape(str(v.get("model") or "-")),
            f"{v['assigned']:,}",
            f"{v['exposed']:,}",
            f"{v['converted']:,}",
            _percent(v["conversion_rate"]),
            _number(v["revenue_per_exposed"]),
            "n/a" if ci is None else f"{_number(ci[0])}{mark} .. {_number(ci[1])}",
        )
    print_table(console, table)
    _print_model_versions(console, report)
    if clipped:
        console.print(
            "* lower bound clipped at 0: revenue is never negative, and with this few buyers "
            "the t-interval reached below 0",
            soft_wrap=True,
            markup=False,
        )
    console.print(srm_result(report["srm"]), soft_wrap=True, markup=False)
    for c in report["comparisons"]:
        conversion, revenue = c["conversion"], c["revenue_per_exposed"]
        console.print(
            f"{c['variant']} vs {c['against']}: conversion {_signed(conversion['difference'])}"
            f"{_relative(conversion)} "
            f"(95% CI {_signed(conversion['ci_low'])} .. {_signed(conversion['ci_high'])}, "
            f"p {_p(conversion['p_value'])}{_verdict(conversion)}); revenue per exposed "
            f"{_signed(revenue['difference'], percent=False)}{_relative(revenue)} (95% CI "
            f"{_signed(revenue['ci_low'], percent=False)} .. "
            f"{_signed(revenue['ci_high'], percent=False)}, p {_p(revenue['p_value'])}"
            f"{_verdict(revenue)})",
            soft_wrap=True,
            markup=False,
        )
        console.print(sample_size_text(c), soft_wrap=True, markup=False)
    if len(report["comparisons"]) > 1:
        console.print(
            f"each of the {len(report['comparisons'])} variants is compared with "
            f"{report['baseline']} separately, with no correction for multiple "
            "comparisons: the more variants, the likelier one looks significant by chance",
            soft_wrap=True,
            markup=False,
        )
    # Both or neither: a page is never left beside the figures of another run.
    page = report_html(report, f"nbo experiment {args.name}")
    document = json.dumps(report, indent=2) + "\n"
    contents = {"report.json": document, "report.html": page}
    json_path, html_path = write_files_together(out, contents, "--out")
    console.print(f"wrote {json_path} and {html_path}", soft_wrap=True)
    return 0


def _relative(comparison: dict[str, Any]) -> str:
    """The difference as a share of the baseline's figure (``relative_uplift``), after
    the absolute one: what a marketer quotes ("+98%"), as the page's column says it."""
    uplift = comparison.get("relative_uplift")
    return "" if uplift is None else f", {uplift * 100:+.1f}% relative"


def _verdict(comparison: dict[str, Any]) -> str:
    """What the comparison's p-value is worth, after it: significant, or indicative only
    (too few conversions to call it either way)."""
    if comparison.get("significant"):
        return ", significant"
    return ", indicative only" if comparison.get("indicative") else ""


def _print_model_versions(console: Console, report: dict[str, Any]) -> None:
    """Each variant's figures per model version that decided its impressions (a variant
    whose model changed during the run marked), as the page's "Model versions"."""
    from rich.markup import escape
    from rich.table import Table

    from nbo.console.tables import print_table
    from nbo.experiments.outcomes import UNKNOWN_MODEL

    table = Table(
        title="per model version (a customer under their first exposure's)",
        title_justify="left",
    )
    columns = ("variant", "model version", "impressions", "exposed", "converted", "rate")
    for column in (*columns, "shown"):
        table.add_column(
            column, justify="left" if column in ("variant", "model version", "shown") else "right"
        )
    for v in report["variants"]:
        for m in v["by_model_version"]:
            table.add_row(
                escape(v["name"] + (" (model changed)" if v["mixed_model_versions"] else "")),
                escape(m["model_version"] or UNKNOWN_MODEL),
                f"{m['impressions']:,}",
                f"{m['exposed']:,}",
                f"{m['converted']:,}",
                _percent(m["conversion_rate"]),
                f"{m['first_shown'][:10]} to {m['last_shown'][:10]}",
            )
    if table.row_count:
        print_table(console, table)


def run_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nbo.console.tables import output_console, print_table
    from nbo.data.mapping import mapping_of
    from nbo.data.purchases import read_purchases
    from nbo.evaluation.compare import TRUTHS, compare_models
    from nbo.models.registry import resolve
    from nbo.models.served import load_serving_model

    if not 1 <= args.k <= 100:
        raise NboError(f"--k {args.k}: must be between 1 and 100")
    if args.out is not None:
        check_output_file(args.out, "--out")
    mapping = mapping_of(args)
    settings = load_settings(models_dir=args.models_dir)
    versions = (
        resolve(settings.models_dir, args.model_a),
        resolve(settings.models_dir, args.model_b),
    )
    models = (
        load_serving_model(settings.models_dir, versions[0]),
        load_serving_model(settings.models_dir, versions[1]),
    )
    purchases, _cleaning = read_purchases(args.data, mapping)
    names = (args.model_a, args.model_b) if args.model_a != args.model_b else ("a", "b")
    result = compare_models(models, names, purchases, k=args.k, window=settings.suppression)
    console = output_console()
    holdout = result["holdout"]
    console.print(
        f"holdout: {holdout['purchase_lines']:,} purchase lines from {holdout['start']} to "
        f"{holdout['end']}, {holdout['customers']:,} customers both models know",
        soft_wrap=True,
    )
    k = args.k
    # The names as given; a column of their own only when one is not the version itself.
    named = any(result["models"][name] != name for name in names)
    for truth in TRUTHS:
        table = Table(title=f"truth: {truth}", title_justify="left")
        columns = ["model"] if named else []
        columns += ["version", f"precision@{k}", f"recall@{k}", f"ndcg@{k}", "customers"]
        for column in columns:
            table.add_column(column, justify="left" if column in ("model", "version") else "right")
        for name in names:
            m = result["metrics"][truth][name]
            table.add_row(
                *([name] if named else []),
                result["models"][name],
                *(_number(m.get(f"{x}@{k}"), 4) for x in ("precision", "recall", "ndcg")),
                f"{m['customers']:,}",
            )
        print_table(console, table)
        d = result["difference"][truth]
        low, high = _signed(d["ci_low"], False, 4), _signed(d["ci_high"], False, 4)
        console.print(
            f"{names[1]} - {names[0]} ndcg@{k}: {_signed(d['ndcg_difference'], False, 4)} "
            f"(95% CI {low} .. {high}, paired t-test p {_p(d['p_value'])})",
            soft_wrap=True,
        )
    if args.out is not None:
        write_file(args.out, json.dumps(result, indent=2) + "\n", "--out")
        console.print(f"wrote {args.out}", soft_wrap=True)
    return 0


def run_models(args: argparse.Namespace) -> int:
    from nbo.models.artifacts import current_or_problem, list_versions, version_problem
    from nbo.models.registry import aliases_with_current, remove_alias, resolve, set_alias

    if args.dry_run and args.prune is None:
        raise NboError("--dry-run: only with --prune")
    changes = (args.alias, args.unalias, args.current, args.prune)
    if args.json and any(change is not None for change in changes):
        raise NboError(
            "--json: only for the listing (without --alias, --unalias, --current, --prune)"
        )
    settings = load_settings(models_dir=args.models_dir)
    models_dir = settings.models_dir
    # As batch and serve refuse it: a folder that is not there is a mistake (a typo, the
    # wrong working folder), not a shop with no model yet (an empty folder).
    if not models_dir.is_dir():
        where = (
            f"--models-dir {models_dir}"
            if args.models_dir is not None
            else f"the models folder {models_dir} (--models-dir or NBO_MODELS_DIR)"
        )
        problem = "not a folder" if os.path.lexists(models_dir) else "no such folder"
        raise NboError(f"{where}: {problem}")
    if args.alias is not None:
        name, reference = args.alias
        version = resolve(models_dir, reference)
        # An experiment on a broken version would refuse every reload and start.
        _check_loads(models_dir, version, f"--alias {name} {reference}", "alias not set")
        set_alias(models_dir, name, version)
        print(f"alias {name} -> {version}")
        return 0
    if args.unalias is not None:
        remove_alias(models_dir, args.unalias)
        print(f"alias {args.unalias} removed")
        return 0
    if args.current is not None:
        return _set_current(models_dir, args.current, settings.model_version)
    if args.prune is not None:
        return _prune(settings, args.prune, args.dry_run)
    aliases = aliases_with_current(models_dir)
    versions = list_versions(models_dir)
    current, _problem = current_or_problem(models_dir)
    rows: list[dict[str, Any]] = []
    for version in reversed(versions):
        manifest = _manifest(models_dir, version)
        data = manifest.get("data")
        last = data.get("last_purchase") if isinstance(data, dict) else None
        rows.append(
            {
                "version": version,
                "aliases": sorted(a for a, v in aliases.items() if v == version),
                "current": version == current,
                "data_end": last if isinstance(last, str) else None,
                "broken": version_problem(models_dir, version),
                "warning": _warned(manifest),
                "gate": _gate(manifest),
            }
        )
    if args.json:
        print(json.dumps({"models_dir": str(models_dir), "models": rows}, indent=2))
        return 0
    if not versions:
        print(f"no published model in {models_dir}: train one with 'nbo train'")
        return 0
    for row in rows:
        # The data end: what a rollback target learned up to (its last purchase); a
        # broken version is no target, and its line says only why.
        shown = row["data_end"] and not row["broken"]
        end = f"  data to {_minute(row['data_end'])}" if shown else ""
        print(
            row["version"]
            + (f"  ({', '.join(row['aliases'])})" if row["aliases"] else "")
            + end
            + (f"  BROKEN: {row['broken']}" if row["broken"] else "")
            + (f"  gate {row['gate']['verdict']}" if row["gate"] and not row["broken"] else "")
            + (f"  warning: {row['warning']}" if row["warning"] and not row["broken"] else "")
        )
    return 0


def _manifest(models_dir: Path, version: str) -> dict[str, Any]:
    """A version's manifest as published; empty when it cannot be read (the listing is no
    check of a version: ``version_problem`` says what keeps one from loading)."""
    from nbo.models.artifacts import MANIFEST

    try:
        manifest = json.loads((models_dir / version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _minute(moment: str) -> str:
    """An ISO 8601 UTC time to the minute, as the listing shows it: 2011-12-09 12:50 UTC."""
    return moment[:16].replace("T", " ") + (" UTC" if moment.endswith("+00:00") else "")


# The quality gate's verdict on a published version (``nbo models``): it passed; it
# failed and --force published it all the same; there was nothing to compare it with
# (the first version, a current model that records no figure); nobody was evaluated.
GATE_PASSED, GATE_FORCED = "passed", "refused but forced"
GATE_NOT_COMPARED, GATE_NOT_EVALUATED = "not compared", "not evaluated"


def _gate(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What the quality gate made of a version when it was published: its ``verdict``
    and the figures compared (served and the current model's, on ``metric``, within
    ``tolerance`` of a recorded figure); None for a manifest with no gate section."""
    gate = manifest.get("quality_gate")
    if not isinstance(gate, dict):
        return None
    passed = gate.get("passed")
    if gate.get("evaluated") is False:
        verdict = GATE_NOT_EVALUATED
    elif passed is None:
        verdict = GATE_NOT_COMPARED
    elif passed:
        verdict = GATE_PASSED
    else:  # published although it failed: only --force does that
        verdict = GATE_FORCED
    return {
        "verdict": verdict,
        "metric": gate.get("metric"),
        "served": gate.get("served"),
        "current_version": gate.get("current_version"),
        "current": gate.get("current"),
        "recorded": gate.get("recorded"),
        "tolerance": gate.get("tolerance"),
    }


def _warned(manifest: dict[str, Any]) -> str | None:
    """What the trainer warned of in a version's manifest that its figures do not show
    at a glance (a churn model that does worse than recency alone), or None."""
    churn = manifest.get("churn")
    if isinstance(churn, dict) and churn.get("warnings"):
        return "churn model does worse than recency alone"
    return None


def _check_loads(models_dir: Path, version: str, flag: str, unchanged: str) -> None:
    """NboError naming ``flag`` unless ``version`` loads as the service loads it (every
    checksum, the schema, the arrays and the ranker's files; nothing compiled)."""
    from nbo.core.errors import ArtifactError
    from nbo.models.served import load_serving_model

    try:
        load_serving_model(models_dir, version, compiled=False)
    except ArtifactError as exc:
        raise NboError(f"{flag}: {exc}; {unchanged}") from None


def _set_current(models_dir: Path, reference: str, pinned: str | None) -> int:
    """Point CURRENT at the version ``reference`` names, once it loads (atomically: a
    reader sees the old pointer or the new one)."""
    import contextlib

    from nbo.core.errors import ArtifactError
    from nbo.models.artifacts import current_version, set_current
    from nbo.models.registry import PREVIOUS_ALIAS, PRODUCTION, read_aliases, resolve

    version = resolve(models_dir, reference, "--current")
    _check_loads(models_dir, version, f"--current {reference}", "CURRENT unchanged")
    before = None
    with contextlib.suppress(ArtifactError):
        before = current_version(models_dir)
    set_current(models_dir, version)
    if before == version:
        print(f"CURRENT already names {version}")
    else:
        print(f"CURRENT -> {version}" + (f" (was {before})" if before else ""))
    print(
        "a running service serves it on SIGHUP or POST /v1/admin/reload without a version "
        "(on its own with NBO_WATCH_MODELS=true), and after a restart"
    )
    if pinned is not None:
        print(f"note: NBO_MODEL_VERSION={pinned} here: a service with it serves that, not CURRENT")
    aliases = read_aliases(models_dir)
    production = aliases.get(PRODUCTION)
    if production is not None and production != version:
        print(f"note: the alias production is set to {production}: it does not follow CURRENT")
    if PREVIOUS_ALIAS in aliases:
        print(
            f"note: the alias previous is set to {aliases[PREVIOUS_ALIAS]}: it does not follow "
            "CURRENT (nbo models --unalias previous lets it)"
        )
    return 0


def _prune(settings: Settings, keep: int, dry_run: bool) -> int:
    """Remove the versions beyond the newest ``keep`` that nothing names (see
    ``nbo.models.pruning``); print each version removed and kept, with why."""
    import contextlib

    from nbo.core.errors import ArtifactError
    from nbo.experiments.definitions import load_experiments
    from nbo.models.artifacts import remove_leftovers
    from nbo.models.pruning import keep_problem, plan_prune, prune
    from nbo.models.registry import MODEL_VERSION_SETTING, resolve
    from nbo.runtime.workers import served_on_this_machine

    problem = keep_problem(keep)
    if problem:
        raise NboError(f"--prune {keep}: {problem}")
    models_dir: Path = settings.models_dir
    also: dict[str, set[str]] = {}

    def named(reason: str, reference: str) -> None:
        # The name as written, and what it resolves to (when it does: one naming
        # nothing keeps nothing it could name).
        also.setdefault(reason, set()).add(reference)
        with contextlib.suppress(ArtifactError):
            also[reason].add(resolve(models_dir, reference))

    if settings.model_version is not None:
        named(MODEL_VERSION_SETTING, settings.model_version)
    if settings.experiments is not None:
        for reference in load_experiments(settings.experiments).models():
            named("the experiments file (NBO_EXPERIMENTS)", reference)
    for version, pids in served_on_this_machine().items():
        for pid in pids:
            also.setdefault(f"served by nbo serve (pid {pid})", set()).add(version)
    plan = (plan_prune if dry_run else prune)(models_dir, keep, also)
    leftovers = [] if dry_run else remove_leftovers(models_dir)
    staging = [] if dry_run or not models_dir.is_dir() else _remove_staging(models_dir)
    for version, why in plan.kept.items():
        print(f"kept {version} ({', '.join(why)})")
    for version in plan.removed:
        print(f"{'would remove' if dry_run else 'removed'} {version}")
    # Apart: not counted among the newest KEEP (they do not load).
    for version, problem in plan.broken.items():
        print(f"broken {version} ({problem}): not counted among the newest {keep}")
    for name in leftovers:
        print(f"removed {name} (left by a removal cut short)")
    for name in staging:
        print(f"removed {name} (the staging folder of a training killed while publishing)")
    verb = "would be removed" if dry_run else "removed"
    print(f"{len(plan.removed)} {verb}, {len(plan.kept)} kept")
    return 0


def _remove_staging(models_dir: Path) -> list[str]:
    """The staging folders killed trainings left: all of them when no training holds the
    folder (taken for the moment, so none starts meanwhile), else only those an hour
    old (the running training's own is younger)."""
    from nbo.models.artifacts import ModelsDirBusy, lock_models_dir, remove_staging

    try:
        with lock_models_dir(models_dir):
            return remove_staging(models_dir, locked=True)
    except ModelsDirBusy:
        return remove_staging(models_dir, locked=False)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _signed(value: float | None, percent: bool = True, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.{digits}f} pp" if percent else f"{value:+,.{digits}f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if value >= 0.0001 else "<0.0001"
