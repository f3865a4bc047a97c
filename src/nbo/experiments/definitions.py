"""Experiment files: which recommendation models are A/B tested, on whom, and when.

An operator edits one file (YAML or JSON, by extension)::

    version: 1
    experiments:
      - name: ranker-vs-als
        salt: "2026-12-campaign"
        start: 2026-12-01T00:00:00Z
        end: 2027-01-01T00:00:00Z      # optional: open-ended
        variants:
          - {name: control, control: true, weight: 10}
          - {name: production, model: production, weight: 45}
          - {name: candidate, model: candidate, weight: 45}

The report compares every variant with one: the control; without a control (two models
against each other), the first variant, or the one ``baseline: NAME`` names.

It is validated whole at load, like the offer catalogue: a typo or an impossible rule
refuses the file with one line naming the file, the experiment, the variant and the
field, because a half-understood experiment would silently show customers the wrong
model and spoil the comparison.

A customer's variant is a pure function of the experiment's salt, its variants and the
customer id (``Experiment.assign``), so nothing about assignment is stored anywhere.

This module knows no HTTP and no model store: ``model`` is kept as written (an alias such
as ``production`` or a model version), for the caller to resolve.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from nbo.core.documents import (
    document_context,
    document_time,
    plain_number,
    plain_text,
    read_document,
)
from nbo.core.errors import FileProblemsError
from nbo.core.vocabulary import iso_utc

log = logging.getLogger(__name__)

NAME_PATTERN: Final = r"[a-z0-9][a-z0-9_-]{0,63}"
"""Experiment and variant names: lowercase letters, digits, '-' and '_', 1 to 64 long."""


_NAME_RULE: Final = (
    "must be 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
)
_POINT_SCALE: Final = 2**64
_BELOW_ONE: Final = math.nextafter(1.0, 0.0)


class ExperimentError(FileProblemsError):
    """An experiment file that cannot be used, naming the file, experiment, variant, field.

    ``experiment`` and ``variant`` are the names the file gives them, or their 1-based
    position (an int) when they have no usable name, so the one-line message points at
    the line to edit: ``experiments.yaml: experiment 'ranker-vs-als': variant 'candidate':
    weight: must be greater than 0``. A file with several problems lists each on its own
    line, like the offer catalogue (``problems``, the first included).
    """

    def __init__(
        self,
        source: str,
        problem: str,
        experiment: str | int | None = None,
        variant: str | int | None = None,
        field: str | None = None,
        more: Sequence[tuple[str | int | None, str | int | None, str | None, str]] = (),
    ) -> None:
        self.experiment = experiment
        self.variant = variant
        self.field = field
        self.problem = problem
        self.problems = [(experiment, variant, field, problem), *more]
        super().__init__(source, [_experiment_line(source, *found) for found in self.problems])


def _experiment_line(
    source: str,
    experiment: str | int | None,
    variant: str | int | None,
    field: str | None,
    problem: str,
) -> str:
    where = [source]
    if experiment is not None:
        where.append(_label("experiment", experiment))
    if variant is not None:
        where.append(_label("variant", variant))
    if field:
        where.append(field)
    where.append(problem)
    return ": ".join(where)


def _label(noun: str, name: str | int) -> str:
    return f"{noun} #{name}" if isinstance(name, int) else f"{noun} '{name}'"


# --- what the service asks ----------------------------------------------------------


def assignment_point(salt: str, customer_id: str) -> float:
    """Where a customer falls in an experiment's [0, 1) line of variants.

    The first 8 bytes of ``sha256(f"{salt}:{customer_id}")`` (UTF-8) as a big-endian
    unsigned integer, divided by 2**64: uniform over [0, 1) for any ids, and the same
    number in every call, process, machine and release.

    Python's ``hash()`` must never stand in for it: string hashing is randomised per
    process (``PYTHONHASHSEED``), so each service worker, and every restart, would put
    the same customer in a different variant, and a customer seeing both models spoils
    the comparison. A keyed digest keeps assignment sticky without storing anything.
    """
    return _point_of(hashlib.sha256(f"{salt}:{customer_id}".encode()).digest())  # UTF-8


def _point_of(digest: bytes) -> float:
    # The top 1024 or so of the 2**64 integers divide to exactly 1.0 in floats: keep
    # them just under 1, so the point is always in [0, 1) (about once in 2**54 ids).
    return min(int.from_bytes(digest[:8], "big") / _POINT_SCALE, _BELOW_ONE)


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment.

    ``weight`` is the variant's normalised share in (0, 1]: the shares of an experiment
    sum to 1. ``model`` is an alias or a model version as written, None for the control
    (which gets the non-personalized offers).
    """

    name: str
    weight: float
    model: str | None
    control: bool


@dataclass(frozen=True)
class Experiment:
    """An experiment as served: variants in file order, times in unix seconds (UTC)."""

    name: str
    salt: str
    start_s: int
    end_s: int | None
    variants: tuple[Variant, ...]
    # The variant the others are compared against, as the file names it (``baseline``);
    # None: the control, else the first variant (``compared_against``).
    baseline: str | None = None

    def __post_init__(self) -> None:
        # assign() walks the shares as given: they must cover [0, 1) (load_experiments
        # normalises them; this catches an Experiment built by hand with raw weights).
        if not self.variants:
            raise ValueError(f"experiment '{self.name}' has no variants")
        if self.baseline is not None and all(v.name != self.baseline for v in self.variants):
            raise ValueError(f"experiment '{self.name}': baseline is not one of its variants")
        if not math.isclose(math.fsum(v.weight for v in self.variants), 1.0, abs_tol=1e-9):
            raise ValueError(f"experiment '{self.name}': variant weights must sum to 1")

    def active(self, now_s: int) -> bool:
        """``start_s <= now_s < end_s``; with no end it runs on from its start."""
        return self.start_s <= now_s and (self.end_s is None or now_s < self.end_s)

    def status(self, now_s: int) -> str:
        """ "not started", "running" or "ended" at ``now_s`` (what a report says)."""
        if now_s < self.start_s:
            return "not started"
        if self.end_s is not None and now_s >= self.end_s:
            return "ended"
        return "running"

    def assign(self, customer_id: str) -> Variant:
        """The customer's variant: deterministic, and sticky without any stored state.

        The variants lie along [0, 1) in file order, each as wide as its share; the
        customer gets the one under ``assignment_point(salt, customer_id)``. The point
        is a SHA-256 digest, never Python's ``hash()`` (randomised per process), so the
        same customer gets the same variant on every call, in every worker process and
        after every restart, with nothing remembered between them.

        A new salt reshuffles everyone. Changing weights, or adding, removing or
        reordering variants, shifts the boundaries and so moves some customers to
        another variant: change them only when starting afresh (with a new salt).
        """
        point = assignment_point(self.salt, customer_id)
        bound = 0.0
        for variant in self.variants:
            bound += variant.weight
            if point < bound:
                return variant
        # The shares may sum to a hair under 1 in floats (ten of 0.1 make 0.999...9):
        # a point above that belongs to the last variant, whose share it is.
        return self.variants[-1]

    @property
    def control(self) -> Variant | None:
        """The control variant (non-personalized offers), or None when there is none."""
        return next((v for v in self.variants if v.control), None)

    @property
    def compared_against(self) -> Variant:
        """The variant every other one is compared against in the report: the one
        ``baseline`` names, else the control, else the first variant (two models A/B
        tested without a non-personalized control)."""
        if self.baseline is not None:
            return next(v for v in self.variants if v.name == self.baseline)
        return self.control or self.variants[0]


@dataclass(frozen=True)
class Experiments:
    """The experiments of one file, in file order; ``source`` is the file, if any;
    ``warnings``: what loading it found suspicious but served (logged at load)."""

    experiments: tuple[Experiment, ...]
    source: str | None
    warnings: tuple[str, ...] = dataclass_field(default=(), compare=False)

    def get(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def active(self, now_s: int) -> list[Experiment]:
        """The experiments running at ``now_s``, in file order."""
        return [e for e in self.experiments if e.active(now_s)]

    def models(self) -> set[str]:
        """Every model reference (alias or version) the variants use, as written."""
        return {v.model for e in self.experiments for v in e.variants if v.model is not None}

    def tag_problem(
        self,
        customer_id: str,
        experiment: str | None,
        variant: str | None,
        at_s: int,
        impression: bool,
    ) -> tuple[str, str] | None:
        """What contradicts an offer event's experiment tags, as (field, problem); None
        when nothing does (or the event has none).

        Posted events carry the tags the offers answer named, for the report to count
        impressions per variant; a tag the service would never have answered with
        (an experiment not configured, a variant it does not have, another variant than
        the customer's, a time outside the run) would move customers and revenue between
        arms. The customer's variant is a pure function of the id (``assign``), so it is
        checked exactly. A click or conversion may come after the end (it answers an
        impression made during the run); an impression may not. Consent is not checked:
        what it was when the answer was made is not known here."""
        if experiment is None and variant is None:
            return None
        if experiment is None:
            return ("experiment", "missing: an event naming a variant names its experiment")
        found = self.get(experiment)
        if found is None:
            configured = ", ".join(e.name for e in self.experiments) or "none"
            return (
                "experiment",
                f"'{experiment}' is not a configured experiment (configured: {configured})",
            )
        if variant is None:
            return (
                "variant",
                f"missing: an event naming experiment '{experiment}' names "
                "the variant the offers answer named",
            )
        names = [v.name for v in found.variants]
        if variant not in names:
            return (
                "variant",
                f"'{variant}' is not a variant of experiment '{experiment}' (its variants: "
                f"{', '.join(names)})",
            )
        when = iso_utc(at_s)
        if at_s < found.start_s:
            return (
                "experiment",
                f"'{experiment}' had not started at the event's time {when} (it starts at "
                f"{iso_utc(found.start_s)})",
            )
        if impression and found.end_s is not None and at_s >= found.end_s:
            return (
                "experiment",
                f"'{experiment}' had ended at the impression's time {when} (it ended at "
                f"{iso_utc(found.end_s)})",
            )
        assigned = found.assign(customer_id).name
        if assigned != variant:
            return (
                "variant",
                f"customer '{customer_id}' is in variant '{assigned}' of experiment "
                f"'{experiment}', not '{variant}'",
            )
        return None


NO_EXPERIMENTS: Final = Experiments(experiments=(), source=None)
"""No experiments: every customer gets the production model."""


# --- the file's schema --------------------------------------------------------------


def _check_name(value: str) -> str:
    if re.fullmatch(NAME_PATTERN, value) is None:
        raise ValueError(_NAME_RULE)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Text only: an unquoted 0123 is YAML's octal 83, yes its true; taken as text they were
# '83' and 'True', a salt silently other than the one written (``plain_text``).
Name = Annotated[str, BeforeValidator(plain_text), AfterValidator(_check_name)]
# The length is checked on the text, after plain_text (a Field after it would say "item").
Text = Annotated[str, Field(min_length=1), BeforeValidator(plain_text)]
# ISO 8601 text, no zone = UTC; a number is refused: the catalogue's rule too.
UtcTime = Annotated[datetime, BeforeValidator(document_time)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt field is an error, never a silently ignored rule.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VariantSpec(_Strict):
    """One variant as written; either ``control: true`` or a ``model`` (checked at load)."""

    name: Name
    # (``weight: 010`` is YAML's octal 8: refused, as in the catalogue.)
    weight: Annotated[float, BeforeValidator(plain_number)] = Field(
        gt=0, strict=True, description="relative share; normalised at load"
    )
    model: Annotated[Text, AfterValidator(_not_blank)] | None = Field(
        None, description="a model alias or version; none for the control"
    )
    control: bool = Field(False, strict=True, description="non-personalized offers, no model")


class ExperimentSpec(_Strict):
    """One experiment as written."""

    name: Name
    salt: Text = Field(description="changing it reshuffles every customer")
    start: UtcTime
    end: UtcTime | None = Field(None, description="none = open-ended; else after start")
    variants: tuple[VariantSpec, ...]
    baseline: Name | None = Field(
        None,
        description="the variant the others are compared against in the report; none = "
        "the control, else the first variant",
    )


class ExperimentsFile(_Strict):
    """The whole file, version 1."""

    version: Literal[1]
    experiments: tuple[ExperimentSpec, ...]


# --- loading ------------------------------------------------------------------------


def configured_experiments(path: Path | None) -> Experiments:
    """The experiments of the file ``NBO_EXPERIMENTS`` names, none when it names none."""
    return NO_EXPERIMENTS if path is None else load_experiments(path)


def load_experiments(path: Path) -> Experiments:
    """Read and validate an experiment file; ExperimentError names what to fix."""
    source = str(path)
    raw, _content = read_document(path, "an experiment file", "version, experiments", _error)
    try:
        document = ExperimentsFile.model_validate(raw, context=document_context(path))
    except ValidationError as exc:
        raise _explain(source, exc, raw) from None
    experiments: list[Experiment] = []
    for spec in document.experiments:
        if any(spec.name == earlier.name for earlier in experiments):
            raise ExperimentError(
                source,
                "used by another experiment in this file; names must be unique",
                spec.name,
                None,
                "name",
            )
        experiments.append(_built(source, spec))
    _refuse_overlaps(source, experiments)
    warnings = tuple(
        warning
        for spec in document.experiments
        if (warning := _weights_warning(source, spec)) is not None
    )
    for warning in warnings:
        log.warning("%s", warning)
    return Experiments(experiments=tuple(experiments), source=source, warnings=warnings)


def _weights_warning(source: str, spec: ExperimentSpec) -> str | None:
    """Weights are relative shares (20/40/30 serve 22.2%/44.4%/33.3%): a set that sums to
    neither 100 nor 1 may be percentages that do not add up, so say what is served."""
    total = math.fsum(v.weight for v in spec.variants)
    if any(math.isclose(total, whole, rel_tol=1e-9) for whole in (100.0, 1.0)):
        return None
    shares = ", ".join(f"{v.name} {v.weight / total:.1%}" for v in spec.variants)
    return str(
        ExperimentError(
            source,
            f"sum to {total:g}, not 100 (or 1): weights are relative shares, so the "
            f"variants are served as {shares}; if the weights were meant as "
            "percentages, correct them",
            spec.name,
            None,
            "weights",
        )
    )


def _refuse_overlaps(source: str, experiments: list[Experiment]) -> None:
    """Experiments may not run at the same time. A customer is in one experiment at a
    time, the first running in the file: a second one running beside it would be shown
    as active and get nobody, its report saying "nobody exposed yet" for as long as
    both run. Two experiments on different customers at once would need a split of the
    customers between them, which the file cannot say; run them one after the other."""
    for index, later in enumerate(experiments):
        for earlier in experiments[:index]:
            start = max(earlier.start_s, later.start_s)
            ends = [e for e in (earlier.end_s, later.end_s) if e is not None]
            end = min(ends) if ends else None
            if end is not None and end <= start:
                continue
            until = "with no end" if end is None else f"to {iso_utc(end)}"
            raise ExperimentError(
                source,
                f"runs at the same time as experiment '{earlier.name}' (from "
                f"{iso_utc(start)} {until}): a customer is in one experiment at a time, "
                f"so '{later.name}' would get nobody while both run; end one before the "
                "other starts",
                later.name,
                None,
                "start",
            )


def _error(source: str, problem: str) -> ExperimentError:
    return ExperimentError(source, problem)


def _explain(source: str, exc: ValidationError, raw: Any) -> ExperimentError:
    """Every validation error, each on its own line naming the experiment, variant and
    field, so the operator fixes them all in one round."""
    errors = exc.errors()
    # A bad list element also fails its list: that is the same problem, not another one.
    locations = [tuple(e["loc"]) for e in errors]
    kept = [
        e
        for e, loc in zip(errors, locations, strict=True)
        if not any(other[: len(loc)] == loc and other != loc for other in locations)
    ]
    problems: list[tuple[str | int | None, str | int | None, str | None, str]] = []
    for error in kept:
        found = (*_locate(tuple(error["loc"]), raw), " ".join(_problem_of(source, error).split()))
        if found not in problems:
            problems.append(found)
    (experiment, variant, field, problem), *more = problems
    return ExperimentError(source, problem, experiment, variant, field, more)


def _problem_of(source: str, error: Any) -> str:
    """One pydantic error in the operator's words."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "not a known field (a typo?)"
    if kind == "missing":
        return "missing; this field is required"
    if kind == "model_type":
        return "must be a mapping of fields (name: value)"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    # Pydantic says "Input should be ...": say "must be ...". Tuples are how the schema
    # stores lists; the operator wrote a list.
    problem = re.sub(r"^\w+ should ", "must ", str(error["msg"]))
    problem = problem.replace("valid tuple", "valid list")
    if kind == "string_type":
        problem += "; write it in quotes"
    if isinstance(error.get("input"), str | int | float):
        problem += f" (got {error['input']!r})"
    number = _number_read_as_text(error.get("input"))
    if kind == "float_type" and number is not None and not source.endswith(".json"):
        problem = (
            f"must be a number, and YAML reads {error['input']} as text (a number with "
            f"an exponent needs a dot and a sign: 1.0e+2): write {number}"
        )
    return problem


def _number_read_as_text(value: Any) -> str | None:
    """How to write the number a text holds when YAML took it for text (``1e2``,
    ``1.5E3``: PyYAML follows YAML 1.1, where a float needs a dot and a signed
    exponent), else None."""
    pattern = r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+"
    if not isinstance(value, str) or re.fullmatch(pattern, value.strip()) is None:
        return None
    number = float(value.replace("_", ""))
    if not math.isfinite(number):
        return None
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    mantissa, _, exponent = repr(number).partition("e")
    if not exponent:
        return mantissa
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"


def _locate(
    loc: tuple[int | str, ...], raw: Any
) -> tuple[str | int | None, str | int | None, str | None]:
    """(experiment, variant, field) for a pydantic error location, in the file's words."""
    experiment: str | int | None = None
    variant: str | int | None = None
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "experiments" and isinstance(rest[1], int):
        entry = _entry(raw, "experiments", rest[1])
        experiment = _name_of(entry, rest[1])
        rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "variants" and isinstance(rest[1], int):
            variant = _name_of(_entry(entry, "variants", rest[1]), rest[1])
            rest = rest[2:]
    field = ".".join(str(part) for part in rest if not isinstance(part, int)) or None
    return experiment, variant, field


def _entry(container: Any, key: str, index: int) -> Any:
    entries = container.get(key) if isinstance(container, dict) else None
    return entries[index] if isinstance(entries, list) and index < len(entries) else None


def _name_of(entry: Any, index: int) -> str | int:
    """The entry's name as written, or its 1-based position when it has none."""
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name.strip():
        return name
    if isinstance(name, int) and not isinstance(name, bool):
        return getattr(name, "written", str(name))
    return index + 1


def _seconds(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _built(source: str, spec: ExperimentSpec) -> Experiment:
    """The experiment as served, after the rules that span fields, which types cannot say."""
    start_s = _seconds(spec.start)
    end_s = None if spec.end is None else _seconds(spec.end)
    if end_s is not None and end_s <= start_s:
        raise ExperimentError(
            source, f"must be after start ({spec.start.isoformat()})", spec.name, None, "end"
        )
    if len(spec.variants) < 2:
        raise ExperimentError(
            source,
            f"an experiment needs at least two variants to compare (got {len(spec.variants)})",
            spec.name,
            None,
            "variants",
        )
    seen: set[str] = set()
    control: str | None = None
    for variant in spec.variants:
        found: tuple[str, str] | None = None
        if variant.name in seen:
            found = ("name", "used by another variant of this experiment; names must be unique")
        elif variant.control and variant.model is not None:
            found = (
                "model",
                "a control variant has no model (it gets the non-personalized offers): "
                "remove 'model' or 'control: true'",
            )
        elif not variant.control and variant.model is None:
            found = (
                "model",
                "missing: a variant needs a model (an alias or a version), "
                "unless it is the control ('control: true')",
            )
        elif variant.control and control is not None:
            found = ("control", f"only one control per experiment ('{control}' is one already)")
        if found is not None:
            field, problem = found
            raise ExperimentError(source, problem, spec.name, variant.name, field)
        seen.add(variant.name)
        if variant.control:
            control = variant.name
    if spec.baseline is not None and spec.baseline not in seen:
        raise ExperimentError(
            source,
            f"'{spec.baseline}' is not a variant of this experiment (its variants: "
            f"{', '.join(v.name for v in spec.variants)})",
            spec.name,
            None,
            "baseline",
        )
    total = math.fsum(v.weight for v in spec.variants)
    return Experiment(
        name=spec.name,
        salt=spec.salt,
        start_s=start_s,
        end_s=end_s,
        variants=tuple(
            Variant(name=v.name, weight=v.weight / total, model=v.model, control=v.control)
            for v in spec.variants
        ),
        baseline=spec.baseline,
    )
