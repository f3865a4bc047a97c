"""``nbo store purge``: the store's retention from the command line. What it deletes per
kind (on both backends), that a dry run only counts, and the cutoffs it refuses, in one
line and with nothing deleted: inside the contact rules' window, a running experiment's,
the suppression window, or after the last purchase a served model was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import assert_one_error_line, at

from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.errors import EXIT_REFUSED
from nbo.data.events import parse_events
from nbo.store import open_store, sql
from nbo.store.base import BatchOutput, DeliveringRun, Store

NOW = "2026-06-30T12:00:00Z"
DAY = 86_400
NOW_S = at("2026-06-30T12:00:00")


def ago(days: float) -> str:
    """The ISO time ``days`` before NOW."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW_S - days * DAY, UTC).isoformat().replace("+00:00", "Z")


def event(event_id: str, kind: str, customer: str, days_ago: float) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": ago(days_ago),
    }
    if kind == "purchase":
        body["items"] = [{"item_id": "A01"}, {"item_id": "A02"}]
    else:
        body.update(item_id="A01", channel="email", request_id=f"r-{event_id}")
    return body


def fill(store: Store, campaign: Path) -> None:
    """Two of each kind: one of 500 days ago, one of 10 days ago (for consent, a
    customer with both, and one whose only change is 500 days old)."""
    bodies = [
        event(f"{kind}-{age}", kind, "c1", age)
        for kind in ("offer_impression", "offer_click", "offer_conversion", "purchase")
        for age in (500, 10)
    ]
    valid, rejected = parse_events({"events": bodies})
    assert not rejected
    store.add_events([parsed for _, parsed in valid])
    clock = [NOW_S - 500 * DAY]
    real = sql.time.time
    sql.time.time = lambda: clock[0]  # type: ignore[assignment]
    try:
        store.set_consent("c1", personalization=True, channels={})
        store.set_consent("c2", personalization=False, channels={"email": False})
        clock[0] = NOW_S - 10 * DAY
        store.set_consent("c1", personalization=False, channels={})
    finally:
        sql.time.time = real  # type: ignore[assignment]
    campaign.write_text("customer_id\nc1\n", encoding="utf-8")
    old = NOW_S - 500 * DAY
    store.register_batch_output(BatchOutput(str(campaign), old, "run-1", 1, "csv"))
    store.register_batch_output(BatchOutput("/nowhere/gone.csv", old, "run-0", 1, "csv"))
    store.register_batch_output(BatchOutput("/nowhere/new.csv", NOW_S, "run-2", 1, "csv"))
    store.begin_delivering(DeliveringRun("batch-1", old, "h/b/1/2", "/nowhere/.p", old))


@pytest.fixture
def served_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder whose current model was trained on purchases up to 5 days ago
    (its manifest is all the purge reads), at the clock NOW."""
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    manifest = {"data": {"last_purchase": ago(5).removesuffix("Z")}}
    (models / "v1" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (models / "CURRENT").write_text("v1", encoding="utf-8")
    monkeypatch.setenv("NBO_MODELS_DIR", str(models))
    monkeypatch.setenv("NBO_CLOCK", NOW)
    return models


EVERYTHING_OLD = [
    "  offer_impression  {verb} 1",
    "  offer_click       {verb} 1",
    "  offer_conversion  {verb} 1",
    "  purchase          {verb} 1 (2 purchase lines)",
    "  consent_history   {verb} 1",
    "  batch_outputs     {verb} 1 (1 kept: the file is still there, and erasures must reach "
    "it; delete the file and the next purge lets it go)",
    "  delivering_runs   {verb} 1",
]


def test_a_purge_deletes_what_is_older_than_the_cutoff_per_kind(
    store_url: str,
    served_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    campaign = tmp_path / "campaign.csv"
    store = open_store(store_url)
    try:
        fill(store, campaign)
    finally:
        store.close()
    purge = ["store", "purge", "--older-than", "400d", "--store-url", store_url]

    assert main([*purge, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "nbo store: purge (dry run) of what is older than 400 days (before "
        "2025-05-26T12:00:00+00:00):"
    )
    assert out[1:] == [line.format(verb="would delete") for line in EVERYTHING_OLD]
    store = open_store(store_url)
    try:
        assert store.event_count() == 8 and len(store.consent_history_of("c1")) == 2
        assert len(store.batch_outputs()) == 3 and len(store.delivering_runs()) == 1
    finally:
        store.close()

    assert main(purge) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("nbo store: purge of what is older than 400 days")
    assert out[1:] == [line.format(verb="deleted") for line in EVERYTHING_OLD]
    store = open_store(store_url)
    try:
        assert sorted(e["event_id"] for e in store.events_of("c1")) == [
            "offer_click-10",
            "offer_conversion-10",
            "offer_impression-10",
            "purchase-10",
        ]
        assert [p.event_id for p in store.purchases_of("c1")] == ["purchase-10"] * 2
        # Each customer's latest consent change stays, however old.
        assert [c.personalization for c in store.consent_history_of("c1")] == [False]
        assert [c.personalization for c in store.consent_history_of("c2")] == [False]
        assert [o.path for o in store.batch_outputs()] == ["/nowhere/new.csv", str(campaign)]
        assert store.delivering_runs() == []
    finally:
        store.close()

    # Again: nothing left that old.
    assert main(purge) == 0
    again = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[-1] for line in again[:-2]] == ["0"] * 5


@pytest.mark.parametrize(
    ("flags", "fragments", "code"),
    [
        (
            ["--older-than", "10d"],
            ["--older-than 10d: the contact rules read 14 days of offer events back", "use 14d"],
            EXIT_REFUSED,
        ),
        (
            ["--older-than", "3", "--kind", "offer_click"],
            ["--older-than 3d: the contact rules read 14 days"],
            EXIT_REFUSED,
        ),
        (
            ["--older-than", "3d", "--kind", "purchase"],
            ["--older-than 3d: posted purchases of the last 30 days hold items back", "30d"],
            EXIT_REFUSED,
        ),
        (
            ["--older-than", "60d"],
            ["--older-than 60d: experiment 'long-test' runs since 2026-03-02", "use 120d"],
            EXIT_REFUSED,
        ),
        # Bad arguments, not refusals: the user's to fix.
        (
            ["--older-than", "a year"],
            ["--older-than 'a year': expected a number of days"],
            EXIT_USER_ERROR,
        ),
        (["--older-than", "0d"], ["--older-than '0d': expected at least 1 day"], EXIT_USER_ERROR),
    ],
)
def test_a_cutoff_the_rules_still_read_is_refused_and_nothing_deleted(
    served_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    fragments: list[str],
    code: int,
) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        """
version: 1
experiments:
  - name: long-test
    salt: s1
    start: 2026-03-02T12:00:00Z
    variants:
      - {name: control, control: true, weight: 50}
      - {name: model, model: current, weight: 50}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments))
    store = open_store("sqlite:///" + str(tmp_path / "s.db"))
    try:
        fill(store, tmp_path / "campaign.csv")
        before = store.event_count()
    finally:
        store.close()

    exited = main(["store", "purge", *flags, "--store-url", f"sqlite:///{tmp_path / 's.db'}"])

    assert exited == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, *fragments, command="store")
    store = open_store("sqlite:///" + str(tmp_path / "s.db"))
    try:
        assert store.event_count() == before and len(store.consent_history_of("c1")) == 2
    finally:
        store.close()


def test_purchases_are_kept_that_no_served_model_was_trained_on(
    served_models: Path,
    isolated_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Training reads no purchase from the store; the service needs those posted after
    the served model's training data (5 days ago here), and all of them without a model
    or with NBO_SUPPRESSION_DAYS=all."""
    open_store(f"sqlite:///{isolated_store}").close()
    purge = ["store", "purge", "--kind", "purchase"]
    # Six days is outside the suppression window of the test's setting, and before the
    # model's last purchase: allowed.
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "2")
    assert main([*purge, "--older-than", "6d", "--dry-run"]) == 0
    capsys.readouterr()
    assert main([*purge, "--older-than", "4d"]) == EXIT_REFUSED
    assert_one_error_line(
        capsys.readouterr().err,
        "--older-than 4d: model v1 was trained on purchases up to 2026-06-25",
        "use 5d or more, or train a newer model first",
        command="store",
    )
    monkeypatch.setenv("NBO_SUPPRESSION_DAYS", "all")
    assert main([*purge, "--older-than", "400d"]) == EXIT_REFUSED
    assert_one_error_line(
        capsys.readouterr().err, "NBO_SUPPRESSION_DAYS=all", "leaving purchase out", command="store"
    )
    monkeypatch.delenv("NBO_SUPPRESSION_DAYS")
    (served_models / "v1" / "manifest.json").write_text('{"data": {}}', encoding="utf-8")
    assert main([*purge, "--older-than", "400d"]) == EXIT_REFUSED
    assert_one_error_line(
        capsys.readouterr().err, "does not say when its training data ended", command="store"
    )
    (served_models / "CURRENT").unlink()
    assert main([*purge, "--older-than", "400d"]) == EXIT_REFUSED
    assert_one_error_line(capsys.readouterr().err, "no model is published", command="store")
    # The other kinds need no model.
    assert main(["store", "purge", "--older-than", "400d", "--kind", "offer_impression"]) == 0


def test_an_ended_experiment_is_warned_of_not_refused(
    served_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        """
version: 1
experiments:
  - name: old-test
    salt: s1
    start: 2024-01-01T00:00:00Z
    end: 2024-03-01T00:00:00Z
    variants:
      - {name: control, control: true, weight: 50}
      - {name: model, model: current, weight: 50}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments))
    open_store(f"sqlite:///{tmp_path / 's.db'}").close()

    purge = ["store", "purge", "--older-than", "400d", "--kind", "offer_conversion"]
    assert main([*purge, "--store-url", f"sqlite:///{tmp_path / 's.db'}"]) == 0

    captured = capsys.readouterr()
    assert captured.err == (
        "nbo store: warning: experiment 'old-test' (ended 2024-03-01T00:00:00+00:00): its "
        "report no longer counts the offer events before 2025-05-26T12:00:00+00:00\n"
    )
    assert captured.out.splitlines()[1] == "  offer_conversion  deleted 0"
