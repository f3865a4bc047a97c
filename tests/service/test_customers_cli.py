"""``nbo customers erase`` and ``nbo customers export``: the API's erasure and data
export from the command line, through the same code, for any id the store holds (also
``legacy/offers``, which the API refuses since a release after it was stored), and a
running service then forgets the customer as after an API erasure. Bad ids and stores
are one line and exit 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK, app_for, assert_one_error_line, write

from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.ids import path_id_problem
from nbo.data.events import ImpressionEvent, PurchaseEvent
from nbo.store import read_erased_list
from nbo.store.base import BatchOutput
from nbo.store.sqlite import SQLiteStore

LEGACY = "legacy/offers"
TODAY = "2026-06-30T11:00:00Z"


def purchase(event_id: str, customer: str, items: list[str]) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 2, "price": 3.5} for item in items],
    }


def impression(event_id: str, customer: str) -> dict:
    return {
        "event_id": event_id,
        "type": "offer_impression",
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": "A01",
        "channel": "email",
    }


def legacy_store(path: Path, campaign: Path) -> None:
    """A store as an earlier release left it: ``legacy/offers`` with two events, a
    consent record and rows in a managed campaign file (quoted as nbo batch writes a
    CSV), beside the customer ``a00``.
    Written through the store itself, as that release's API did (this one refuses the
    id in posted events)."""
    assert path_id_problem(LEGACY) is not None  # the API cannot name them
    store = SQLiteStore(path)
    store.add_events(
        [
            PurchaseEvent.model_validate_json(json.dumps(purchase("p1", LEGACY, ["A01", "A02"]))),
            ImpressionEvent.model_validate_json(json.dumps(impression("i1", LEGACY))),
            PurchaseEvent.model_validate_json(json.dumps(purchase("p2", "a00", ["A03"]))),
        ]
    )
    store.set_consent(LEGACY, personalization=False, channels={"email": False})
    write(
        campaign,
        f"""\
        "customer_id","rank","offer_id"
        "{LEGACY}",1,"product:A01"
        "a00",1,"product:A03"
        "{LEGACY}",2,"product:A02"
        """,
    )
    store.register_batch_output(BatchOutput(str(campaign.resolve()), 1, "batch-old", 3, "csv"))
    store.close()


def export_of(capsys: pytest.CaptureFixture[str], customer_id: str, *flags: str) -> dict:
    """``nbo customers export`` to stdout: the document, and the line on stderr."""
    assert main(["customers", "export", customer_id, *flags]) == 0
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"nbo customers: exported customer {customer_id!r}"), line
    document: dict = json.loads(captured.out)
    return document


def api_export(client: TestClient, customer_id: str) -> dict:
    answer = client.get(f"/v1/customers/{customer_id}/data")
    assert answer.status_code == 200, answer.text
    document: dict = answer.json()
    return document


def same_moment(document: dict) -> dict:
    """The document without the moment it was made (two exports differ only there)."""
    return {name: value for name, value in document.items() if name != "exported_at"}


def test_a_customer_the_api_cannot_name_is_exported_and_erased(
    isolated_store: Path, tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign = tmp_path / "campaign.csv"
    legacy_store(isolated_store, campaign)
    # A second managed file, without them: checked, not changed (the line had counted
    # every file checked as a file their rows were removed from).
    other = tmp_path / "other.csv"
    write(
        other,
        """\
        "customer_id","rank","offer_id"
        "a00",1,"product:A03"
        """,
    )
    store = SQLiteStore(isolated_store)
    store.register_batch_output(BatchOutput(str(other.resolve()), 1, "batch-other", 1, "csv"))
    store.close()
    out = tmp_path / "legacy.json"

    assert (
        main(["customers", "export", LEGACY, "--out", str(out), "--models-dir", str(models_dir)])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert line == (
        f"nbo customers: exported customer {LEGACY!r}: 2 events, consent stored, 0 models "
        f"knowing them, 2 rows in 1 campaign file; written to {out}"
    )
    held = json.loads(out.read_text(encoding="utf-8"))
    assert held["customer_id"] == LEGACY and held["erased"] is False
    assert sorted(e["event_id"] for e in held["events"]) == ["i1", "p1"]
    assert held["consent"]["stored"] is True and held["consent"]["channels"]["email"] is False
    [rows] = held["batch_files"]
    assert rows["path"] == str(campaign.resolve())
    assert [(r["customer_id"], r["offer_id"]) for r in rows["rows"]] == [
        (LEGACY, "product:A01"),
        (LEGACY, "product:A02"),
    ]
    assert out.stat().st_mode & 0o077 == 0  # a person's data: the owner's only

    assert main(["customers", "erase", LEGACY]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == (
        f"nbo customers: erased customer {LEGACY!r}: deleted 2 events (1 purchase, 1 "
        "offer_impression), 2 purchase lines, 1 consent record, 1 consent change; 2 rows "
        "removed from 1 of 2 managed campaign files checked; services forget them at their "
        "next call for them and the "
        "next training leaves them out"
    )
    assert captured.err == ""

    store = SQLiteStore(isolated_store)
    try:
        assert store.stored_events_of(LEGACY) == [] and store.purchases_of(LEGACY) == []
        assert store.consent_of(LEGACY) is None and store.erased_at(LEGACY) is not None
        # Nobody else touched.
        assert [e.event_id for e in store.stored_events_of("a00")] == ["p2"]
        assert sorted(output.rows for output in store.batch_outputs()) == [1, 1]
    finally:
        store.close()
    # What the trainer reads: it leaves them out.
    erased = read_erased_list(f"sqlite:///{isolated_store}")
    assert len(erased) == 1 and erased.among([LEGACY, "a00"]) == {LEGACY}
    assert campaign.read_text(encoding="utf-8").splitlines() == [
        '"customer_id","rank","offer_id"',
        '"a00",1,"product:A03"',
    ]

    after = export_of(capsys, LEGACY, "--models-dir", str(models_dir))
    assert after["erased"] is True and after["events"] == [] and after["consent"] is None
    assert after["models"] == [] and after["batch_files"] == []

    # Again: nothing left, said so.
    assert main(["customers", "erase", LEGACY]) == 0
    assert capsys.readouterr().out.startswith(
        f"nbo customers: erased customer {LEGACY!r} (erased before): deleted 0 events, 0 "
        "purchase lines, 0 consent records, 0 consent changes; 0 rows removed from 0 of 2 "
        "managed campaign files checked"
    )


def test_the_export_is_the_apis_document(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    monkeypatch.setenv("NBO_MODELS_DIR", str(models_dir))
    with app_for(models_dir) as client:
        posted = client.post(
            "/v1/events", json={"events": [purchase("p1", "a00", ["A01"]), impression("i1", "a00")]}
        )
        assert posted.status_code == 200 and not posted.json()["rejected"]
        consent = {"personalization": True, "channels": {"app": False}}
        assert client.put("/v1/customers/a00/consent", json=consent).status_code == 200
        expected = api_export(client, "a00")
        stranger = api_export(client, "never-seen")

    cli = export_of(capsys, "a00")
    assert same_moment(cli) == same_moment(expected)
    assert cli["models"][0]["known"] is True and cli["profile"]["known"] is True
    assert same_moment(export_of(capsys, "never-seen")) == same_moment(stranger)


def test_the_export_under_an_experiment_is_the_apis_document(
    experiment_client: TestClient,
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    expected = api_export(experiment_client, "a01")
    assert expected["assignment"]["experiment"] == "ranker-test"
    assert len(expected["models"]) == 2
    cli = export_of(capsys, "a01", "--models-dir", str(two_models[0]))
    assert same_moment(cli) == same_moment(expected)


def test_the_export_names_the_model_version_of_each_impression(
    experiment_client: TestClient,
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Which model decided what a customer was shown (an automated decision) was in no
    export: each impression now names its model version, the answer's, in the API's
    export and the command line's; one that does not say (recorded before nbo kept it)
    names none, and other events none."""
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    for customer in ("a01", "a02", "a03", "a04"):
        answer = experiment_client.get(f"/v1/customers/{customer}/offers?k=2&record=true")
        assert answer.json()["recorded"] is True
        if answer.json()["variant"] == "production":
            break
    assert answer.json()["model_version"] == two_models[1]  # not the current model's
    old = {**impression("i-old", customer), "timestamp": "2026-06-29T10:00:00Z"}
    posted = experiment_client.post("/v1/events", json={"events": [old]})
    assert posted.status_code == 200 and not posted.json()["rejected"]
    expected = api_export(experiment_client, customer)
    versions = [(e["type"], e["model_version"]) for e in expected["events"]]
    assert versions == [("offer_impression", None)] + [("offer_impression", two_models[1])] * 2
    cli = export_of(capsys, customer, "--models-dir", str(two_models[0]))
    assert [e["model_version"] for e in cli["events"]] == [None, two_models[1], two_models[1]]


def test_a_running_service_forgets_a_customer_erased_from_the_command_line(
    experiment_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client = experiment_client
    assert client.get("/v1/customers/a00").json()["known"] is True
    assert all(m["known"] for m in api_export(client, "a00")["models"])

    assert main(["customers", "erase", "a00"]) == 0
    assert capsys.readouterr().out.startswith("nbo customers: erased customer 'a00': ")
    gone = api_export(client, "a00")
    assert gone["erased"] is True and gone["events"] == [] and gone["models"] == []

    # A returning customer, whose first call is the export: their new purchase is
    # theirs, no model's old row is (every model of the experiment, not only the
    # current one, which the profile reads).
    posted = client.post("/v1/events", json={"events": [purchase("p9", "a00", ["B01"])]})
    assert posted.status_code == 200 and not posted.json()["rejected"]
    back = api_export(client, "a00")
    assert [e["event_id"] for e in back["events"]] == ["p9"]
    assert len(back["models"]) == 2
    assert [m["known"] for m in back["models"]] == [False, False]
    assert all(m["items"] == [] for m in back["models"])

    # As after DELETE /v1/customers/a00: the profile and offers from p9 alone.
    profile = client.get("/v1/customers/a00").json()
    assert profile["frequency"] == 1 and profile["first_purchase"] == TODAY.replace("Z", "+00:00")
    offers = client.get("/v1/customers/a00/offers?k=3").json()
    assert offers["profile"] == "live"


def test_without_a_published_model_the_export_has_no_model_parts(
    isolated_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy_store(isolated_store, tmp_path / "campaign.csv")
    body = export_of(capsys, LEGACY, "--models-dir", str(tmp_path / "no-models"))
    assert body["served_model"] is None and body["profile"] is None
    assert body["models"] == [] and body["assignment"] is None
    assert len(body["events"]) == 2


@pytest.mark.parametrize(
    ("customer_id", "fragment"),
    [
        ("", "ID '': must not be empty"),
        ("a\nb", "ID 'a\\nb': holds the unprintable character U+000A at position 1"),
        ("a\x00", "U+0000"),
        (" a00", "must not start or end with a space"),
        ("a00/", "must not start or end with '/'"),
        ("x" * 257, "must be at most 256 characters, got 257"),
    ],
)
@pytest.mark.parametrize("action", ["erase", "export"])
def test_an_id_no_customer_can_have_is_refused_in_one_line(
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
    action: str,
    customer_id: str,
    fragment: str,
) -> None:
    assert main(["customers", action, customer_id]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert_one_error_line(captured.err, fragment, command="customers")
    assert captured.out == ""
    assert not isolated_store.exists()  # refused before the store was opened


@pytest.mark.parametrize("action", ["erase", "export"])
def test_a_bad_store_is_said_of_the_flag_or_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    missing = tmp_path / "nowhere" / "nbo.db"
    assert main(["customers", action, "a00", "--store-url", f"sqlite:///{missing}"]) == 2
    assert_one_error_line(
        capsys.readouterr().err, f"--store-url: no store at {missing}", command="customers"
    )
    assert not missing.parent.exists()  # no new, empty store where no service records

    unreachable = "postgresql://nbo:secret@127.0.0.1:1/nbo?connect_timeout=2"
    assert main(["customers", action, "a00", "--store-url", unreachable]) == 75  # EX_TEMPFAIL
    line = assert_one_error_line(
        capsys.readouterr().err, "--store-url: cannot connect to", command="customers"
    )
    assert "secret" not in line

    monkeypatch.setenv("NBO_STORE_URL", "db1:5432")
    assert main(["customers", action, "a00"]) == EXIT_USER_ERROR
    assert_one_error_line(
        capsys.readouterr().err,
        "setting NBO_STORE_URL: unsupported store 'db1:5432'",
        command="customers",
    )


def test_an_export_to_a_folder_that_does_not_exist_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no-such-folder" / "a00.json"
    assert main(["customers", "export", "a00", "--out", str(out)]) == EXIT_USER_ERROR
    assert_one_error_line(
        capsys.readouterr().err, f"--out {out}: the folder", "does not exist", command="customers"
    )


def test_the_usage_names_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["customers"])
    assert exited.value.code == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, "ACTION", command="customers")


def test_a_consent_given_outside_the_api_is_recorded_with_its_source(
    isolated_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteStore(isolated_store)
    store.set_consent("a00", personalization=True, channels={"app": False})
    store.close()

    flags = ["--personalization", "no", "--channel", "email=no"]
    assert main(["customers", "consent", "a00", *flags]) == 0

    line = capsys.readouterr().out.strip()
    assert line.startswith(
        "nbo customers: consent of customer 'a00' recorded: personalization no, email no, "
        "app no (at "
    ), line
    store = SQLiteStore(isolated_store)
    try:
        history = store.consent_history_of("a00")
        assert [(c.source, c.personalization, c.channels) for c in history] == [
            ("api", True, {"app": False}),
            ("cli", False, {"app": False, "email": False}),
        ]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--channel", "sms=no"], "--channel 'sms=no': unknown channel 'sms' (use email, app)"),
        (["--channel", "email=maybe"], "--channel 'email=maybe': expected email=yes or email=no"),
    ],
)
def test_a_bad_consent_flag_is_one_line_and_nothing_is_stored(
    isolated_store: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    SQLiteStore(isolated_store).close()
    code = main(["customers", "consent", "a00", "--personalization", "no", *flags])
    assert code == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, fragment, command="customers")
    store = SQLiteStore(isolated_store)
    try:
        assert store.consent_of("a00") is None and store.consent_history_of("a00") == []
    finally:
        store.close()


@pytest.mark.parametrize(
    "action",
    [["erase", "12347"], ["export", "12347"], ["consent", "12347", "--personalization", "no"]],
)
def test_another_applications_database_is_not_taken_for_the_store(
    tmp_path: Path, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``nbo customers erase`` on another application's SQLite file added nbo's tables to
    it and reported the erasure done: refused in one line, the file unchanged."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    db.close()
    before = other.read_bytes()
    code = main(["customers", *action, "--store-url", f"sqlite:///{other}"])
    assert code == EXIT_USER_ERROR
    assert_one_error_line(
        capsys.readouterr().err, f"--store-url: {other} is not an nbo store", command="customers"
    )
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
