"""Service settings: one typed class, environment prefix ``NBO_``. Nothing else reads os.environ.

A bad value refuses the deploy at start with a message naming the setting. An ``NBO_*``
variable that names no setting (``NBO_WROKERS``) is not an error, since a deployment may
set variables for a newer release, but each one is a warning line at start naming the
closest setting: a misspelt variable is otherwise a setting silently left at its default.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from nbo.core.apikeys import ApiKeyEntry, check_unique_ids
from nbo.core.errors import ConfigError
from nbo.core.vocabulary import CHANNELS, in_utc
from nbo.models.artifacts import VERSION_RULE, is_version_name
from nbo.offers.policies import FatigueRule, FrequencyCap
from nbo.offers.suppression import SuppressionWindow

# The latest NBO_CLOCK: far beyond any real deploy, and far enough from the calendar's
# end (9999-12-31) that every date computed from the clock (send times a week on,
# expiries and windows of years) stays in it.
CLOCK_BEFORE = datetime(9000, 1, 1, tzinfo=UTC)

# A shorter pseudonym key could be guessed by trying keys against a logged pseudonym of
# a known id.
MIN_LOG_KEY_CHARS = 16


log = logging.getLogger(__name__)

ENV_PREFIX = "NBO_"
# The store when NBO_STORE_URL is unset: a file in var/ under the working folder, the one
# folder a new SQLite store may be made in (``nbo.store.sqlite``).
DEFAULT_STORE_URL = "sqlite:///var/nbo.db"
# The NBO_* variables nbo's own tooling reads that are no setting of the service: the
# tests' PostgreSQL server and browser, and the database password deploy/compose.yaml
# builds NBO_STORE_URL from. Any other NBO_* variable not a setting is warned about.
OTHER_VARIABLES = frozenset({"NBO_TEST_POSTGRES_URL", "NBO_TEST_CHROMIUM", "NBO_DB_PASSWORD"})

# The settings that take one of a few words, any case.
ENUMERATIONS: dict[str, tuple[str, ...]] = {
    "log_level": ("critical", "error", "warning", "info", "debug"),
    "log_format": ("json", "text"),
}


def _either(words: tuple[str, ...]) -> str:
    """'a, b or c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def available_cores(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The cores this process may use: its CPU affinity (where the platform has one),
    capped by its cgroup's CPU quota rounded up. A container limited to one CPU on a
    64-core node (Kubernetes' ``limits.cpu``, ``docker run --cpus``) sees the node's 64
    cores in its affinity: a worker per core there started 64 workers, each with its own
    memory and store pool (64 x 8 PostgreSQL connections, past the server's 100)."""
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, self_cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The CPUs the process's cgroup may use per period (quota / period), the smallest
    along its cgroup and their parents, cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``
    and ``cpu.cfs_period_us``); None without a quota, or where there are no cgroups."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            mounts = [root]
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        for mount in mounts:
            for folder in _up_from(mount, path):
                quota = _quota_in(folder)
                if quota is not None:
                    quotas.append(quota)
    return min(quotas) if quotas else None


def _up_from(mount: Path, path: str) -> list[Path]:
    """The cgroup ``path``'s folder under ``mount`` and its parents' up to the mount (in a
    container the path may be the host's, not under the mount: then the mount alone)."""
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _quota_in(folder: Path) -> float | None:
    """The CPU quota one cgroup folder sets, in CPUs; None when it sets none."""
    try:
        if (folder / "cpu.max").is_file():
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        if (folder / "cpu.cfs_quota_us").is_file():
            quota_us = int((folder / "cpu.cfs_quota_us").read_text().strip())
            if quota_us <= 0:
                return None
            return quota_us / int((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


class Settings(BaseSettings):
    # NBO_FATIGUE=null turns fatigue off: without env_parse_none_str pydantic-settings
    # drops a JSON null and the default rule applied. An empty variable is an unset one,
    # for every setting: compose's ${NBO_CLOCK:-} writes NBO_CLOCK= when the operator set
    # nothing, and NBO_CLOCK= refused the start while NBO_CATALOG= meant no catalogue.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_parse_none_str="null", env_ignore_empty=True
    )

    models_dir: Path = Field(Path("models"), description="where published models live")
    model_version: str | None = Field(None, description="serve this version, not CURRENT")
    clock: datetime | None = Field(
        None,
        description="pin the service clock (ISO time, from NBO_EARLIEST_EVENT to before "
        "9000-01-01); real time when unset",
    )
    suppression_days: str = Field(
        "30", description="days a bought item is not offered; 0 = never, 'all' = ever bought"
    )
    store_url: str = Field(
        DEFAULT_STORE_URL,
        description="the event store: sqlite:///PATH (relative paths from the working "
        "folder; a new file only in an existing folder, or the default's var/) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (replicas share one)",
    )
    store_statement_timeout_ms: int = Field(
        5000,
        ge=0,
        description="PostgreSQL store: the server cancels a statement of the service's "
        "that runs longer (milliseconds) and the call answers 503 store_unavailable; "
        "0 = none set by nbo (the server's, the role's or the URL's applies)",
    )
    frequency_caps: dict[str, FrequencyCap] = Field(
        default_factory=lambda: {
            "email": FrequencyCap(max_deliveries=1, days=7),
            "app": FrequencyCap(max_deliveries=5, days=1),
        },
        description='per channel, JSON: {"email": {"max_deliveries": 1, "days": 7}, ...}; '
        "the channels are email and app; a channel without a cap is not capped",
    )
    min_hold_days: dict[str, float] = Field(
        default_factory=dict,
        description='per channel, JSON: {"email": 7, "app": 2}: the fewest days a bought '
        "item is held back, whatever the dead time the trainer learned for it (at most "
        "NBO_SUPPRESSION_DAYS); a channel left out: the learned dead times alone",
    )
    fatigue: FatigueRule | None = Field(
        default_factory=FatigueRule,
        description='JSON {"impressions": 3, "days": 14}: an item shown that often in that '
        "many days without a click or conversion rests for the window; null turns it off",
    )
    catalog: Path | None = Field(
        None,
        description="the offer catalogue, YAML or JSON (e.g. data/catalog.yaml); re-read when "
        "it changes, a bad new file is refused and the old one kept; unset = every item a "
        "product offer on default terms, no incentives",
    )
    experiments: Path | None = Field(
        None,
        description="experiments file (YAML/JSON): A/B tests of models; unset = none",
    )
    require_model: bool = Field(
        True, description="refuse to start without a loadable model (else start unready)"
    )
    api_keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        repr=False,
        description='JSON list of {"id", "role": read|write|admin, "sha256"} (see nbo keys '
        "create); empty = no access control, and then loopback only",
    )
    allow_unauthenticated: bool = Field(
        False, description="serve a non-loopback NBO_HOST without API keys (warns at start)"
    )
    watch_models: bool = Field(
        False,
        description="reload when models/CURRENT changes (polled each second), as SIGHUP "
        "or POST /v1/admin/reload do; not with NBO_MODEL_VERSION (a pin never follows "
        "CURRENT). The experiments file is followed either way",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(
        default_factory=available_cores,
        ge=1,
        description="nbo serve's worker processes; default: the cores this process may run "
        "on (set it under a CPU quota, which this count does not see)",
    )
    log_level: str = Field("info", description="critical, error, warning, info or debug (any case)")
    log_format: str = Field(
        "json",
        description="json: one JSON object per line (for log shippers); text: for humans "
        "(any case)",
    )
    access_log: bool = Field(True, description="one log line per request (logger nbo.access)")
    log_key: SecretStr | None = Field(
        None,
        repr=False,
        description="the key of the customer pseudonyms in logs (at least 16 characters, "
        "e.g. 64 hex digits); unset = a random key made once and kept in the store",
    )
    keepalive_seconds: int = Field(
        5,
        ge=1,
        le=3600,
        description="how long nbo serve keeps an idle kept-alive connection open after an "
        "answer; a proxy or load balancer that keeps connections to nbo must close them "
        "sooner (nginx upstream keepalive_timeout), or raise this above its own idle "
        "timeout (an AWS ALB's is 60 s)",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="the largest request body accepted, in bytes; larger answers 413",
    )
    clock_skew_seconds: int = Field(
        300,
        ge=0,
        description="how far after the service clock an event's timestamp may be (clients' "
        "clocks run a little ahead); later events are refused",
    )
    earliest_event: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="events dated before this (ISO time) are refused",
    )
    max_posted_lines: int = Field(
        1000,
        ge=1,
        description="the most recent purchase lines of a customer's posted events an offers "
        "call, a profile or a campaign reads (older ones stay stored and exported)",
    )
    similar_min_buyers: int = Field(
        5,
        ge=1,
        description="the fewest distinct buyers (in the model's data) an item needs to be "
        "listed by GET /v1/items/{id}/similar: an item one customer bought has ALS factors "
        "that are that customer's, and looks similar to whatever they bought",
    )
    metrics: bool = Field(True, description="Prometheus metrics at GET /metrics")

    @field_validator("suppression_days", mode="before")
    @classmethod
    def _check_window(cls, value: Any) -> str:
        return str(SuppressionWindow.parse(value))

    @field_validator("frequency_caps", mode="before")
    @classmethod
    def _known_channels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            _known_channels_only(value)
            for channel, cap in value.items():
                _known_fields(cap, FrequencyCap, f"{channel}: ")
        return value

    @field_validator("min_hold_days", mode="before")
    @classmethod
    def _holds_per_known_channel(cls, value: Any) -> Any:
        if isinstance(value, dict):
            _known_channels_only(value)
            for channel, days in value.items():
                # (A boolean is a number to pydantic: true would hold for a day.)
                if isinstance(days, bool) or not isinstance(days, int | float) or not days >= 0:
                    raise ValueError(f"{channel}: must be 0 or more days (got {days!r})")
        return value

    @field_validator("fatigue", mode="before")
    @classmethod
    def _known_fatigue_fields(cls, value: Any) -> Any:
        _known_fields(value, FatigueRule, "")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _one_of_its_words(cls, value: Any, info: ValidationInfo) -> str:
        # Any case, as NBO_SUPPRESSION_DAYS=ALL is: INFO is what most tools print.
        accepted = ENUMERATIONS[str(info.field_name)]
        word = str(value).strip().lower()
        if word not in accepted:
            raise ValueError(f"must be {_either(accepted)} (got {str(value)!r})")
        return word

    @field_validator("catalog", "experiments", "log_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # NBO_CATALOG=" " (blank, which env_ignore_empty keeps) means "no catalogue", not
        # the working folder; NBO_LOG_KEY=" " means the store's key.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_key")
    @classmethod
    def _long_enough_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_LOG_KEY_CHARS:
            raise ValueError(
                f"must be at least {MIN_LOG_KEY_CHARS} characters (e.g. the 64 hex digits "
                "of `openssl rand -hex 32`)"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _unique_key_ids(cls, value: list[ApiKeyEntry]) -> list[ApiKeyEntry]:
        return check_unique_ids(value)

    @field_validator("model_version")
    @classmethod
    def _version_in_models_dir(cls, value: str | None) -> str | None:
        if value is not None and not is_version_name(value):
            raise ValueError(f"{value!r} is not a model version or alias ({VERSION_RULE})")
        return value

    @field_validator("watch_models")
    @classmethod
    def _watch_needs_no_pin(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("model_version"):
            raise ValueError("cannot watch models/CURRENT while NBO_MODEL_VERSION pins a version")
        return value

    @field_validator("clock", "earliest_event")
    @classmethod
    def _clock_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return in_utc(value)

    @model_validator(mode="after")
    def _clock_in_range(self) -> Settings:
        # A clock before NBO_EARLIEST_EVENT accepts no event and decays a model's counts
        # over millennia (overflowing to infinity); one near the calendar's end cannot
        # have a week added. Checked here, where both settings are known.
        if self.clock is not None and not self.earliest_event <= self.clock < CLOCK_BEFORE:
            raise ValueError(
                f"NBO_CLOCK: must be from NBO_EARLIEST_EVENT "
                f"({self.earliest_event.isoformat()}) to before {CLOCK_BEFORE.date()} "
                f"(got {self.clock.isoformat()})"
            )
        # Without a pinned clock, the real one: an earliest event still to come refuses
        # every event posted (each one "before NBO_EARLIEST_EVENT") and the service
        # answered as if all were well.
        now = datetime.now(UTC)
        if self.clock is None and self.earliest_event > now:
            raise ValueError(
                f"NBO_EARLIEST_EVENT: must not be later than now "
                f"({now.isoformat(timespec='seconds')}; got "
                f"{self.earliest_event.isoformat()}): every event would be refused"
            )
        return self

    @model_validator(mode="after")
    def _holds_within_the_window(self) -> Settings:
        # A hold longer than the window would hold back what the window says to offer
        # again (and NBO_SUPPRESSION_DAYS=0, never suppress, would suppress).
        window = self.suppression.days
        if window is not None:
            longer = {c: d for c, d in self.min_hold_days.items() if d > window}
            for channel, days in longer.items():
                raise ValueError(
                    f"NBO_MIN_HOLD_DAYS: {channel}: {days:g} days is longer than "
                    f"NBO_SUPPRESSION_DAYS ({window})"
                )
        return self

    @property
    def suppression(self) -> SuppressionWindow:
        return SuppressionWindow.parse(self.suppression_days)

    def now(self) -> datetime:
        """The service's clock: pinned when configured, else real UTC time."""
        return self.clock or datetime.now(UTC)


def _listed(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _known_channels_only(value: dict[Any, Any]) -> None:
    """Refuse a per-channel setting naming a channel nbo does not have: a misspelt one
    ("Email", "sms") would leave the real one without its rule."""
    unknown = [str(key) for key in value if key not in CHANNELS]
    if unknown:
        raise ValueError(
            f"unknown channel {_listed(unknown)} (the channels are {', '.join(CHANNELS)})"
        )


def _known_fields(value: Any, model: type[FrequencyCap | FatigueRule], where: str) -> None:
    """Refuse a contact rule with a field its model does not have, naming it and the known
    ones: pydantic would first say a required field is missing, never the misspelt one."""
    if isinstance(value, dict):
        unknown = [str(key) for key in value if key not in model.model_fields]
        if unknown:
            known = ", ".join(model.model_fields)
            raise ValueError(f"{where}unknown field {_listed(unknown)} (the fields are {known})")


def known_variables() -> frozenset[str]:
    """Every ``NBO_*`` variable nbo reads: one per setting, and ``OTHER_VARIABLES``."""
    return frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields) | (
        OTHER_VARIABLES
    )


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning per ``NBO_*`` variable in ``environ`` that nbo does not read, naming the
    closest one it does (any case, as the settings are read)."""
    known = known_variables()
    # Compared without the prefix every name shares, which would make any two look alike.
    suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        closest = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = f"did you mean {ENV_PREFIX}{closest[0]}?" if closest else "no setting is close"
        warnings.append(f"{name} is not an nbo setting and is ignored ({hint})")
    return warnings


# The unknown-variable warnings this process gave: each once, however many times a
# command loads its settings.
_warned: set[str] = set()


def warn_unknown_variables(environ: Mapping[str, str] = os.environ) -> None:
    """Log ``unknown_variables`` as warnings, each once per process: on ``nbo serve``'s
    log, once its format is set up; on stderr for the other commands (Python's
    last-resort handler)."""
    for warning in unknown_variables(environ):
        if warning not in _warned:
            _warned.add(warning)
            log.warning(warning)


def load_settings(
    flags: Mapping[str, str] | None = None, warn_unknown: bool = True, **overrides: Any
) -> Settings:
    """Settings from the environment plus explicit overrides; ConfigError on bad values.

    ``flags``: the command-line flag each override comes from (``{"workers": "--workers"}``),
    so a bad value given there is said of the flag the user typed, not of a variable they
    never set (``--workers: ...``, as a bad ``--store-url`` is). ``warn_unknown``: warn
    of ``NBO_*`` variables that are no setting (``nbo serve`` does it itself, after it
    has set up its log)."""
    if warn_unknown:
        warn_unknown_variables()
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        # The setting is the first part of the location; the rest says where inside a
        # JSON value (NBO_API_KEYS: 0.role: ...).
        first = exc.errors()[0]
        if not first["loc"]:
            # A check across settings names the setting in its message.
            problem = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"setting {problem}") from None
        field, *inside = (str(p) for p in first["loc"])
        where = f"{'.'.join(inside)}: " if inside else ""
        problem = _in_plain_words(first)
        flag = (flags or {}).get(field) if field in given else None
        said_of = flag if flag is not None else f"setting NBO_{field.upper()}"
        raise ConfigError(f"{said_of}: {where}{problem}") from None
    except SettingsError as exc:
        # A JSON setting that is not JSON: pydantic-settings names the field in its message.
        named = re.search(r'field "(\w+)"', str(exc))
        name = f"NBO_{named.group(1).upper()}" if named else "NBO_*"
        raise ConfigError(f"setting {name}: not valid JSON") from None


def _in_plain_words(error: Any) -> str:
    """Pydantic's message for a bad value, in an operator's words for the common kinds (a
    boolean, a whole number and its bounds), else as pydantic says it."""
    kind, limits = error.get("type"), error.get("ctx") or {}
    got = f"(got {str(error.get('input'))!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false {got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number {got}"
    if kind == "greater_than_equal":
        return f"must be at least {limits['ge']} {got}"
    if kind == "less_than_equal":
        return f"must be at most {limits['le']} {got}"
    return str(error["msg"]).removeprefix("Value error, ")


@lru_cache
def get_settings() -> Settings:
    return load_settings()
