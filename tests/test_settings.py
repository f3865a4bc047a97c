"""The settings (``nbo.settings``): each ``NBO_*`` variable read and checked at start, a
bad value refused naming its variable."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import DEMO_CATALOG, ENTRIES, ROOT

import nbo.settings
from nbo.core.errors import ConfigError
from nbo.settings import Settings, known_variables, load_settings, unknown_variables

# Misspellings the tests and docs plant on purpose.
PLANTED_MISSPELLINGS = {"NBO_WROKERS", "NBO_SUPRESSION_DAYS", "NBO_LOGLEVEL", "NBO_NO_SUCH_THING"}


def test_the_setting_comes_from_nbo_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().catalog is None
    monkeypatch.setenv("NBO_CATALOG", str(DEMO_CATALOG))
    assert load_settings().catalog == DEMO_CATALOG
    monkeypatch.setenv("NBO_CATALOG", "")
    assert load_settings().catalog is None


@pytest.mark.parametrize(
    "variable",
    [
        "NBO_MODEL_VERSION",
        "NBO_CLOCK",
        "NBO_API_KEYS",
        "NBO_FREQUENCY_CAPS",
        "NBO_WORKERS",
        "NBO_PORT",
        "NBO_METRICS",
        "NBO_SUPPRESSION_DAYS",
        "NBO_LOG_KEY",
    ],
)
def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """Compose's ``${NBO_CLOCK:-}`` writes ``NBO_CLOCK=`` when nothing is set: an empty
    NBO_CLOCK, NBO_MODEL_VERSION or NBO_API_KEYS refused the start (an empty NBO_CATALOG
    or NBO_LOG_KEY did not)."""
    field = variable.removeprefix("NBO_").lower()
    monkeypatch.setenv(variable, "")
    assert getattr(load_settings(), field) == getattr(Settings(), field)
    monkeypatch.delenv(variable)
    assert getattr(load_settings(), field) == getattr(Settings(), field)


@pytest.mark.parametrize("bad", ["abc", "-1", "3.5"])
def test_bad_suppression_setting_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="NBO_SUPPRESSION_DAYS"):
        load_settings(suppression_days=bad)


def test_bad_suppression_setting_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "abc")
    with pytest.raises(ConfigError, match="NBO_SUPPRESSION_DAYS"):
        load_settings()


def test_a_bad_log_format_refuses_the_start() -> None:
    with pytest.raises(ConfigError, match="NBO_LOG_FORMAT"):
        load_settings(log_format="xml")


@pytest.mark.parametrize(
    ("variable", "given", "field", "read"),
    [
        ("NBO_LOG_LEVEL", "INFO", "log_level", "info"),
        ("NBO_LOG_LEVEL", " Debug ", "log_level", "debug"),
        ("NBO_LOG_FORMAT", "TEXT", "log_format", "text"),
    ],
)
def test_log_words_are_taken_in_any_case(
    monkeypatch: pytest.MonkeyPatch, variable: str, given: str, field: str, read: str
) -> None:
    # As NBO_SUPPRESSION_DAYS=ALL is.
    monkeypatch.setenv(variable, given)
    assert getattr(load_settings(), field) == read


@pytest.mark.parametrize(
    ("variable", "given", "said"),
    [
        (
            "NBO_LOG_LEVEL",
            "verbose",
            "setting NBO_LOG_LEVEL: must be critical, error, warning, info or debug "
            "(got 'verbose')",
        ),
        ("NBO_LOG_FORMAT", "xml", "setting NBO_LOG_FORMAT: must be json or text (got 'xml')"),
        ("NBO_METRICS", "maybe", "setting NBO_METRICS: must be true or false (got 'maybe')"),
        ("NBO_WORKERS", "0", "setting NBO_WORKERS: must be at least 1 (got '0')"),
        ("NBO_PORT", "1.5", "setting NBO_PORT: must be a whole number (got '1.5')"),
    ],
)
def test_a_bad_value_says_what_is_accepted_in_plain_words(
    monkeypatch: pytest.MonkeyPatch, variable: str, given: str, said: str
) -> None:
    monkeypatch.setenv(variable, given)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == said


def test_a_bad_override_from_a_flag_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"workers": "--workers", "port": "--port"}
    with pytest.raises(ConfigError, match=r"^--workers: must be at least 1 \(got '0'\)$"):
        load_settings(flags, workers=0)
    # A flag not given: the variable it would have overridden is named.
    monkeypatch.setenv("NBO_PORT", "0")
    with pytest.raises(ConfigError, match=r"^setting NBO_PORT: must be at least 1"):
        load_settings(flags, workers=None, port=None)


def test_keys_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps([e.model_dump(mode="json") for e in ENTRIES]))
    settings = load_settings()
    assert settings.api_keys == ENTRIES
    # The hashes stay out of the settings' repr (and so out of any log of it).
    assert all(entry.sha256 not in repr(settings) for entry in ENTRIES)


def _entry(**change: str) -> dict:
    return {"id": "abcd1234", "role": "read", "sha256": "ab" * 32, **change}


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([_entry(role="root")], "'read', 'write' or 'admin'"),
        ([_entry(), _entry(role="admin", sha256="cd" * 32)], "duplicate key id abcd1234"),
        ([_entry(sha256="ab" * 31)], "64 hex characters"),
        ([_entry(sha256="zz" * 32)], "64 hex characters"),
        ([_entry(id="key-one")], "8 lowercase hex"),
        ([{"id": "abcd1234", "role": "read"}], "sha256"),
    ],
)
def test_bad_key_settings_refuse_the_start_naming_nbo_api_keys(
    monkeypatch: pytest.MonkeyPatch, entries: list[dict], problem: str
) -> None:
    monkeypatch.setenv("NBO_API_KEYS", json.dumps(entries))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("setting NBO_API_KEYS: ") and "\n" not in message
    assert problem in message


def test_key_settings_that_are_not_json_refuse_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_API_KEYS", "[{not json")
    with pytest.raises(ConfigError, match=r"^setting NBO_API_KEYS: not valid JSON$"):
        load_settings()


KEY = "0123456789abcdef0123456789abcdef"


def test_a_short_log_key_refuses_the_start() -> None:
    with pytest.raises(ConfigError, match=r"NBO_LOG_KEY: .*at least 16 characters"):
        load_settings(log_key="short")
    assert "0123" not in repr(load_settings(log_key=KEY))  # never printed


def test_watching_current_with_a_pinned_version_refuses_the_start() -> None:
    with pytest.raises(ConfigError, match=r"^setting NBO_WATCH_MODELS: .*NBO_MODEL_VERSION"):
        load_settings(watch_models=True, model_version="20260101T000000Z-abc")
    assert load_settings(watch_models=True).watch_models is True


@pytest.mark.parametrize("pin", ["../other/20260101T000000Z-abc", "/srv/models/v1", ".tmp-v1"])
def test_a_pinned_version_that_is_a_path_refuses_the_start(
    pin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NBO_MODEL_VERSION names a version (or alias) inside the models folder, never a path
    to a model elsewhere."""
    monkeypatch.setenv("NBO_MODEL_VERSION", pin)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).startswith(
        f"setting NBO_MODEL_VERSION: {pin!r} is not a model version or alias (a version is"
    )
    monkeypatch.setenv("NBO_MODEL_VERSION", "production")
    assert load_settings().model_version == "production"


@pytest.mark.parametrize(
    "clock", ["9999-12-31T23:59:59Z", "9000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1999-12-31"]
)
def test_a_clock_out_of_range_refuses_the_start(
    monkeypatch: pytest.MonkeyPatch, clock: str
) -> None:
    """A week after 9999-12-31 overflowed; a clock in year 1 overflowed the decay of a
    model's counts: both are refused, naming the setting."""
    monkeypatch.setenv("NBO_CLOCK", clock)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).startswith(
        "setting NBO_CLOCK: must be from NBO_EARLIEST_EVENT (2000-01-01T00:00:00+00:00) "
        "to before 9000-01-01 (got "
    )


def test_a_clock_in_range_follows_nbo_earliest_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_CLOCK", "1995-06-01T00:00:00Z")
    monkeypatch.setenv("NBO_EARLIEST_EVENT", "1990-01-01T00:00:00Z")
    assert load_settings().clock == datetime(1995, 6, 1, tzinfo=UTC)
    assert load_settings(clock="8999-12-31T23:59:59Z").clock == datetime(
        8999, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    monkeypatch.setenv("NBO_EARLIEST_EVENT", "1996-01-01T00:00:00Z")
    with pytest.raises(ConfigError, match=r"^setting NBO_CLOCK: must be from NBO_EARLIEST_EVENT"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # A channel misspelt or unknown would leave email uncapped.
        (
            "NBO_FREQUENCY_CAPS",
            '{"Email": {"max_deliveries": 1, "days": 7}}',
            "setting NBO_FREQUENCY_CAPS: unknown channel 'Email' (the channels are email, app)",
        ),
        (
            "NBO_FREQUENCY_CAPS",
            '{"email": {"max_deliveries": 1, "days": 7}, "sms": {"max_deliveries": 1, "days": 1}}',
            "setting NBO_FREQUENCY_CAPS: unknown channel 'sms' (the channels are email, app)",
        ),
        # A misspelt field is named, not reported as the missing one it stands for.
        (
            "NBO_FREQUENCY_CAPS",
            '{"email": {"max_deliveries": 2, "day": 7}}',
            "setting NBO_FREQUENCY_CAPS: email: unknown field 'day' "
            "(the fields are max_deliveries, days)",
        ),
        (
            "NBO_FATIGUE",
            '{"impression": 3, "days": 14}',
            "setting NBO_FATIGUE: unknown field 'impression' (the fields are impressions, days)",
        ),
        (
            "NBO_MIN_HOLD_DAYS",
            '{"Email": 7}',
            "setting NBO_MIN_HOLD_DAYS: unknown channel 'Email' (the channels are email, app)",
        ),
        (
            "NBO_MIN_HOLD_DAYS",
            '{"email": -1}',
            "setting NBO_MIN_HOLD_DAYS: email: must be 0 or more days (got -1)",
        ),
        (
            "NBO_MIN_HOLD_DAYS",
            '{"app": "a week"}',
            "setting NBO_MIN_HOLD_DAYS: app: must be 0 or more days (got 'a week')",
        ),
        # Longer than the window, it would hold back what the window offers again.
        (
            "NBO_MIN_HOLD_DAYS",
            '{"email": 45}',
            "setting NBO_MIN_HOLD_DAYS: email: 45 days is longer than NBO_SUPPRESSION_DAYS (30)",
        ),
    ],
)
def test_a_contact_policy_with_an_unknown_key_refuses_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == message


def test_contact_policies_with_known_keys_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBO_FREQUENCY_CAPS", '{"app": {"max_deliveries": 2, "days": 1}}')
    monkeypatch.setenv("NBO_FATIGUE", '{"impressions": 5}')
    settings = load_settings()
    assert set(settings.frequency_caps) == {"app"}
    assert settings.frequency_caps["app"].max_deliveries == 2
    assert settings.fatigue is not None and settings.fatigue.impressions == 5
    monkeypatch.setenv("NBO_FATIGUE", "null")
    assert load_settings().fatigue is None
    # No hold-back by default (the learned dead times alone); per channel when set.
    assert settings.min_hold_days == {}
    monkeypatch.setenv("NBO_MIN_HOLD_DAYS", '{"email": 7, "app": 1.5}')
    assert load_settings().min_hold_days == {"email": 7.0, "app": 1.5}
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "all")
    monkeypatch.setenv("NBO_MIN_HOLD_DAYS", '{"email": 400}')
    assert load_settings().min_hold_days == {"email": 400.0}


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    environ = {
        "NBO_WROKERS": "2",
        "NBO_SUPRESSION_DAYS": "all",
        "nbo_loglevel": "debug",
        "NBO_NO_SUCH_THING": "1",
        # Read: settings in any case, the tests' own variables, and not nbo's at all.
        "NBO_WORKERS": "2",
        "nbo_store_url": "sqlite:///x.db",
        "NBO_TEST_POSTGRES_URL": "postgresql://x",
        "NBO_DB_PASSWORD": "x",
        "PATH": "/bin",
        "XNBO_WROKERS": "1",
    }
    assert unknown_variables(environ) == [
        "NBO_NO_SUCH_THING is not an nbo setting and is ignored (no setting is close)",
        "NBO_SUPRESSION_DAYS is not an nbo setting and is ignored "
        "(did you mean NBO_SUPPRESSION_DAYS?)",
        "NBO_WROKERS is not an nbo setting and is ignored (did you mean NBO_WORKERS?)",
        "nbo_loglevel is not an nbo setting and is ignored (did you mean NBO_LOG_LEVEL?)",
    ]


def test_loading_the_settings_warns_of_each_unknown_variable_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NBO_WROKERS", "2")
    monkeypatch.setattr(nbo.settings, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="nbo.settings"):
        settings = load_settings()
        load_settings()  # nbo train loads them twice: still one warning
    assert settings.workers >= 1
    (line,) = [r.getMessage() for r in caplog.records if "NBO_WROKERS" in r.getMessage()]
    assert "did you mean NBO_WORKERS?" in line


def test_a_command_that_reads_settings_warns_on_stderr() -> None:
    env = {**os.environ, "NBO_SUPRESSION_DAYS": "all"}
    done = subprocess.run(
        [sys.executable, "-m", "nbo.cli", "keys", "create", "--role", "read"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr.splitlines() == [
        "NBO_SUPRESSION_DAYS is not an nbo setting and is ignored "
        "(did you mean NBO_SUPPRESSION_DAYS?)"
    ]


def test_every_nbo_variable_the_project_names_is_known() -> None:
    """Nothing legitimate warns: every NBO_* name in the code, tests, bench, docs and
    deploy files is a setting or one of ``OTHER_VARIABLES`` (a new variable read with
    os.environ goes there), bar the misspellings planted on purpose."""
    folders = ("src", "training", "tests", "bench", "docs", "deploy", ".ci")
    files = [ROOT / "Makefile", ROOT / "README.md", ROOT / "Dockerfile"]
    for folder in folders:
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and ".cache" not in p.parts]
    named: set[str] = set()
    for path in files:
        if path.suffix in {".parquet", ".png", ".npy", ".npz", ".pyc", ".db", ".woff2"}:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        named |= set(re.findall(r"\bNBO_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert named - PLANTED_MISSPELLINGS - known_variables() == set()
    assert "NBO_STORE_URL" in named and "NBO_TEST_POSTGRES_URL" in named


def test_an_earliest_event_still_to_come_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NBO_CLOCK, an NBO_EARLIEST_EVENT later than the real clock was accepted,
    and every event posted was refused as too early."""
    monkeypatch.setenv("NBO_EARLIEST_EVENT", "8000-01-01T00:00:00Z")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("setting NBO_EARLIEST_EVENT: must not be later than now (")
    assert message.endswith("got 8000-01-01T00:00:00+00:00): every event would be refused")
    assert "\n" not in message
    monkeypatch.setenv("NBO_CLOCK", "8000-06-01T00:00:00Z")  # a pinned clock: its own check
    assert load_settings().earliest_event == datetime(8000, 1, 1, tzinfo=UTC)


def cgroups(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup mount (``files``: path under it -> content) and /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(own)
    return root, self_cgroup


@pytest.mark.parametrize(
    ("own", "files", "quota"),
    [
        # cgroup v2 in a container (its own cgroup is the mount): docker run --cpus 1.5
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
        # v2 on a host, the limit on a parent of the process's cgroup (a Kubernetes pod)
        (
            "0::/kubepods/pod1/ctr\n",
            {
                "kubepods/pod1/cpu.max": "100000 100000\n",
                "kubepods/pod1/ctr/cpu.max": "max 100000\n",
            },
            1.0,
        ),
        # cgroup v1, cpu and cpuacct mounted together
        (
            "4:memory:/x\n3:cpu,cpuacct:/\n",
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            2.0,
        ),
        # no quota: v2 "max", v1 -1, no cgroup files at all
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ("0::/\n", {}, None),
    ],
)
def test_the_cgroup_cpu_quota_is_read(
    tmp_path: Path, own: str, files: dict[str, str], quota: float | None
) -> None:
    root, self_cgroup = cgroups(tmp_path, own, files)
    assert nbo.settings.cgroup_cpu_quota(root, self_cgroup) == quota


def test_the_default_workers_follow_a_cpu_quota_not_the_hosts_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container limited to 1.5 CPUs on a 64-core host: 2 workers, not 64 (each with
    its memory and 8 store connections). Before, the default counted the host's cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    root, self_cgroup = cgroups(tmp_path, "0::/\n", {"cpu.max": "150000 100000\n"})
    assert nbo.settings.available_cores(root, self_cgroup) == 2
    root, self_cgroup = cgroups(tmp_path / "small", "0::/\n", {"cpu.max": "20000 100000\n"})
    assert nbo.settings.available_cores(root, self_cgroup) == 1
    root, self_cgroup = cgroups(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"})
    assert nbo.settings.available_cores(root, self_cgroup) == 64
    # An affinity smaller than the quota wins.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    root, self_cgroup = cgroups(tmp_path / "big", "0::/\n", {"cpu.max": "800000 100000\n"})
    assert nbo.settings.available_cores(root, self_cgroup) == 1
