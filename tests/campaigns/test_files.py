"""Privacy completeness: the data export (GET /v1/customers/{id}/data) and erasure that
reaches the campaign files nbo wrote and still manages (rewritten without the customer,
or listed with the reason in the receipt). Through the real app and the real ``nbo
batch`` command, on the planted model of conftest."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from nbo.campaigns.batch import RunSpec, Selection, open_run, write_batch
from nbo.campaigns.files import erase_from_outputs
from nbo.cli import main
from nbo.data.events import EVENT_TYPES
from nbo.models.served import load_serving_model
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store.base import BatchOutput
from nbo.store.sqlite import MIGRATIONS, SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"
NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)
TODAY = "2026-06-30T11:00:00Z"
# The campaign's customers: two of each group and one the model has never seen.
CAMPAIGN = ["a00", "a01", "b00", "b01", "new-1"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, isolated_store: Path) -> Path:
    """``nbo batch`` and the app share the model, the clock and the store."""
    monkeypatch.setenv("NBO_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    return isolated_store


@pytest.fixture
def client(models_dir: Path, env: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock=CLOCK, store_url=f"sqlite:///{env}")
    with TestClient(create_app(settings)) as client:
        yield client


def campaign(tmp_path: Path, out: Path, *extra: str, customers: list[str] = CAMPAIGN) -> Path:
    """Run ``nbo batch`` for ``customers`` into ``out``."""
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(customers) + "\n", encoding="utf-8")
    assert main(["batch", "--customers", str(ids), "--k", "3", "--out", str(out), *extra]) == 0
    return out


def read(path: Path) -> pa.Table:
    """A campaign file as a table; CSV as raw text, the strictest comparison of rows."""
    if path.suffix == ".parquet":
        return pq.read_table(path)
    import pyarrow.csv as pacsv

    names = pacsv.read_csv(path).column_names
    options = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    return pacsv.read_csv(path, convert_options=options)


def without(table: pa.Table, customer_id: str) -> pa.Table:
    return table.filter(pc.not_equal(table["customer_id"], customer_id))


def rows_of(table: pa.Table, customer_id: str) -> int:
    return int(pc.sum(pc.equal(table["customer_id"], customer_id).cast(pa.int64())).as_py() or 0)


def erase(client: TestClient, customer_id: str) -> dict:
    answer = client.delete(f"/v1/customers/{customer_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def export(client: TestClient, customer_id: str) -> dict:
    answer = client.get(f"/v1/customers/{customer_id}/data")
    assert answer.status_code == 200, answer.text
    return answer.json()


def post(client: TestClient, events: list[dict]) -> None:
    answer = client.post("/v1/events", json={"events": events})
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text


def purchase(event_id: str, customer: str, items: list[str]) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 2, "price": 3.5} for item in items],
    }


def offer_event(event_id: str, customer: str, kind: str, **extra: object) -> dict:
    return {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": "A01",
        "channel": "email",
        **extra,
    }


# --- the export ----------------------------------------------------------------------


def test_the_export_lists_exactly_the_customers_events_and_consent(
    client: TestClient, models_dir: Path
) -> None:
    mine = [
        purchase("p1", "a00", ["A01", "A02"]),
        purchase("p2", "a00", ["A03"]),
        offer_event("i1", "a00", "offer_impression", request_id="r1"),
        offer_event("c1", "a00", "offer_click"),
        offer_event("v1", "a00", "offer_conversion", revenue=12.5),
    ]
    post(client, [*mine, purchase("p3", "b00", ["B01"]), offer_event("i2", "a01", "offer_click")])
    consent = {"personalization": True, "channels": {"app": False}}
    assert client.put("/v1/customers/a00/consent", json=consent).status_code == 200

    body = export(client, "a00")

    assert body["customer_id"] == "a00" and body["erased"] is False and body["erased_at"] is None
    assert datetime.fromisoformat(body["exported_at"]).tzinfo is not None
    assert sorted((e["event_id"], e["type"]) for e in body["events"]) == sorted(
        (e["event_id"], e["type"]) for e in mine
    )
    by_id = {e["event_id"]: e for e in body["events"]}
    # The payload as stored: what was posted (validated, times in UTC).
    assert by_id["p1"]["payload"]["items"] == mine[0]["items"]
    assert by_id["p1"]["payload"]["order_id"] == "o-p1"
    assert by_id["v1"]["payload"]["revenue"] == 12.5
    assert by_id["i1"]["payload"]["request_id"] == "r1"
    assert by_id["p1"]["occurred_at"] == "2026-06-30T11:00:00+00:00"
    assert body["consent"] == client.get("/v1/customers/a00/consent").json()
    assert body["consent"]["stored"] is True and body["consent"]["channels"]["app"] is False
    # The profile is the profile route's answer, not a second computation of it.
    assert body["profile"] == client.get("/v1/customers/a00").json()
    assert body["profile"]["known"] is True and body["profile"]["profiled"] is True

    model = load_serving_model(models_dir)
    assert body["served_model"] == model.version
    [trained] = body["models"]
    row = model.customers.get("a00")
    assert row is not None
    items, _confidence, _last = model.history_of(row)
    assert trained["known"] is True and trained["model_version"] == model.version
    assert [i["item_id"] for i in trained["items"]] == model.items.external(items)
    assert [i["orders"] for i in trained["items"]] == model.counts_of(row).tolist()
    assert all(i["orders"] >= 1 and i["last_purchase"] for i in trained["items"])
    assert body["assignment"] == {
        "model_version": model.version,
        "experiment": None,
        "variant": None,
        "personalized": True,
    }
    assert body["batch_files"] == [] and body["batch_files_unread"] == []


def test_an_unknown_customer_gets_an_empty_export_not_a_404(client: TestClient) -> None:
    body = export(client, "never-seen")
    assert body["erased"] is False and body["events"] == []
    assert body["consent"]["stored"] is False and body["consent"]["personalization"] is True
    assert body["profile"]["known"] is False
    assert [m["known"] for m in body["models"]] == [False]
    assert all(m["items"] == [] for m in body["models"])
    assert body["batch_files"] == []


def test_without_personalization_consent_the_export_holds_the_neutral_profile(
    client: TestClient,
) -> None:
    assert client.put("/v1/customers/a00/consent", json={"personalization": False}).is_success
    body = export(client, "a00")
    assert body["profile"] == client.get("/v1/customers/a00").json()
    assert body["profile"]["profiled"] is False and body["profile"]["churn_risk"] is None
    # Out of every experiment, and what the model learned is still shown: it is held.
    assert body["assignment"]["personalized"] is True and body["assignment"]["variant"] is None
    assert body["models"][0]["known"] is True


def test_after_erasure_the_export_says_erased_and_holds_nothing(client: TestClient) -> None:
    post(client, [purchase("p1", "a00", ["A01"]), offer_event("i1", "a00", "offer_impression")])
    assert client.put("/v1/customers/a00/consent", json={"personalization": True}).is_success
    receipt = erase(client, "a00")

    body = export(client, "a00")
    assert body["erased"] is True and body["erased_at"] == receipt["erased_at"]
    assert body["events"] == [] and body["consent"] is None and body["profile"] is None
    assert body["models"] == [] and body["assignment"] is None
    assert body["batch_files"] == [] and body["batch_files_unread"] == []
    assert export(client, "a01")["models"][0]["known"] is True  # nobody else affected

    # A returning customer's new events are theirs: exported, the id still erased, and
    # the model's old row stays unknown.
    post(client, [purchase("p9", "a00", ["B01"])])
    back = export(client, "a00")
    assert back["erased"] is True and [e["event_id"] for e in back["events"]] == ["p9"]
    assert back["models"][0]["known"] is False and back["models"][0]["items"] == []
    assert back["profile"]["known"] is True  # from the posted purchase alone


def test_the_export_works_without_a_model(tmp_path: Path, isolated_store: Path) -> None:
    settings = Settings(models_dir=tmp_path / "no-models", require_model=False)
    with TestClient(create_app(settings)) as client:
        post(client, [purchase("p1", "a00", ["A01"])])
        body = export(client, "a00")
        assert client.get("/v1/customers/a00").status_code == 503  # the profile route
    assert body["served_model"] is None and body["profile"] is None
    assert body["models"] == [] and body["assignment"] is None
    assert [e["event_id"] for e in body["events"]] == ["p1"]
    assert body["consent"]["stored"] is False


def test_the_export_logs_the_id_and_counts_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    post(client, [purchase("EVT-PRIVATE-1", "log-1", ["ITEM-PRIVATE-2"])])
    caplog.set_level(logging.DEBUG)
    export(client, "log-1")
    # The test client's own log of its URLs (httpx) is not the service's.
    logged = [f"{r.getMessage()} {r.args!r}" for r in caplog.records if r.name != "httpx"]
    pseudonym = client.app.state.pseudonyms.of("log-1")
    assert any(pseudonym in line and "exported" in line for line in logged)
    assert not any("PRIVATE" in line or "log-1" in line for line in logged)


# --- erasure and the campaign files --------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_erasure_takes_the_customer_out_of_managed_campaign_files(
    client: TestClient, env: Path, tmp_path: Path, suffix: str
) -> None:
    out = campaign(tmp_path, tmp_path / f"campaign{suffix}")
    before = read(out)
    raw_before = out.read_bytes()
    theirs = rows_of(before, "a00")
    assert theirs == 3 and before.num_rows == 3 * len(CAMPAIGN)
    [registered] = SQLiteStore(env).batch_outputs()
    assert registered.path == str(out.resolve()) and registered.rows == before.num_rows
    assert registered.format == suffix[1:] and registered.run_id.startswith("batch-")

    # Before erasure the export shows the customer's rows in the file.
    [held] = export(client, "a00")["batch_files"]
    assert held["path"] == registered.path and held["run_id"] == registered.run_id
    assert len(held["rows"]) == theirs
    assert [r["rank"] for r in held["rows"]] in ([1, 2, 3], ["1", "2", "3"])
    assert {r["customer_id"] for r in held["rows"]} == {"a00"}

    receipt = erase(client, "a00")

    assert receipt["batch_files"] == [{"path": registered.path, "rows_removed": theirs}]
    assert receipt["batch_files_untouched"] == []
    after = read(out)
    assert rows_of(after, "a00") == 0
    assert after.schema == before.schema
    assert after.equals(without(before, "a00"))  # every other row unchanged, in order
    if suffix == ".csv":
        # Byte for byte: the same file minus the customer's lines.
        lines = raw_before.decode().splitlines(keepends=True)
        assert out.read_text() == "".join(line for line in lines if not line.startswith('"a00"'))
    else:
        assert pq.read_schema(out).equals(
            pq.read_schema(pa.BufferReader(raw_before)), check_metadata=True
        )
    assert SQLiteStore(env).batch_outputs()[0].rows == before.num_rows - theirs
    assert export(client, "a00")["batch_files"] == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    # Erasing again goes through the file again: nothing left to remove.
    again = erase(client, "a00")
    assert again["batch_files"] == [{"path": registered.path, "rows_removed": 0}]
    assert read(out).equals(after)


def test_a_customer_in_no_file_leaves_the_files_untouched(
    client: TestClient, tmp_path: Path
) -> None:
    out = campaign(tmp_path, tmp_path / "campaign.parquet")
    status = out.stat()
    receipt = erase(client, "b07")  # known to the model, not in the campaign
    assert receipt["batch_files"] == [{"path": str(out.resolve()), "rows_removed": 0}]
    assert out.stat().st_ino == status.st_ino and out.stat().st_mtime_ns == status.st_mtime_ns


def test_files_that_cannot_be_rewritten_are_listed_with_the_reason(
    client: TestClient, env: Path, tmp_path: Path
) -> None:
    """Missing, replaced by a folder, under a folder that became a file, replaced by a
    file nbo did not write: each listed as untouched with its reason, and the erasure
    still goes through the files it can (and the store and the model)."""
    folders = {name: tmp_path / name for name in ("gone", "folder", "parent", "foreign", "ok")}
    outs = {}
    for name, folder in folders.items():
        folder.mkdir()
        outs[name] = campaign(tmp_path, folder / "campaign.parquet")
    outs["gone"].unlink()
    outs["folder"].unlink()
    outs["folder"].mkdir()
    for child in folders["parent"].iterdir():
        child.unlink()
    folders["parent"].rmdir()
    folders["parent"].write_text("not a folder any more", encoding="utf-8")
    pq.write_table(pa.table({"email": ["someone@example.com"]}), outs["foreign"])
    foreign = outs["foreign"].read_bytes()
    ok_before = read(outs["ok"])

    receipt = erase(client, "a00")

    reasons = {Path(f["path"]).parent.name: f["reason"] for f in receipt["batch_files_untouched"]}
    assert set(reasons) == {"gone", "folder", "parent", "foreign"}
    assert reasons["gone"].startswith("missing")
    assert reasons["folder"].startswith("not a file")
    assert reasons["parent"].startswith("missing")
    assert reasons["foreign"].startswith("not written by nbo")
    assert receipt["batch_files"] == [
        {"path": str(outs["ok"].resolve()), "rows_removed": rows_of(ok_before, "a00")}
    ]
    assert len(receipt["batch_files"]) + len(receipt["batch_files_untouched"]) == len(outs)
    assert read(outs["ok"]).equals(without(ok_before, "a00"))
    assert outs["foreign"].read_bytes() == foreign  # not nbo's: left alone
    assert receipt["deleted"] and receipt["model_row_removed"] is True
    # The export names the same files as unread.
    unread = {Path(f["path"]).parent.name for f in export(client, "a01")["batch_files_unread"]}
    assert unread == {"gone", "folder", "parent", "foreign"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_file_is_listed_untouched(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    out = campaign(tmp_path, folder / "campaign.csv")
    before = out.read_bytes()
    out.chmod(0o444)
    folder.chmod(0o444)
    try:
        receipt = erase(client, "a00")
    finally:
        folder.chmod(0o755)
        out.chmod(0o644)
    [untouched] = receipt["batch_files_untouched"]
    assert untouched["path"] == str(out.resolve())
    assert "permission denied" in untouched["reason"] or "read-only" in untouched["reason"]
    assert receipt["batch_files"] == []
    assert out.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_file_in_a_read_only_folder_is_listed_not_writable(
    client: TestClient, tmp_path: Path
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    out = campaign(tmp_path, folder / "campaign.parquet")
    before = out.read_bytes()
    folder.chmod(0o555)
    try:
        receipt = erase(client, "a00")
    finally:
        folder.chmod(0o755)
    assert [f["reason"] for f in receipt["batch_files_untouched"]] == [
        "not writable: its folder is read-only"
    ]
    assert out.read_bytes() == before


def test_an_unmanaged_campaign_is_not_registered_nor_touched(
    client: TestClient, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = campaign(tmp_path, tmp_path / "managed.csv")
    assert len(SQLiteStore(env).batch_outputs()) == 1
    # Written again, unmanaged, at the same path: the registration goes with it.
    campaign(tmp_path, out, "--unmanaged")
    assert "unmanaged" in capsys.readouterr().out
    assert SQLiteStore(env).batch_outputs() == []
    before = out.read_bytes()
    receipt = erase(client, "a00")
    assert receipt["batch_files"] == [] and receipt["batch_files_untouched"] == []
    assert out.read_bytes() == before and rows_of(read(out), "a00") == 3


def test_a_customer_erased_while_the_batch_runs_is_left_out_of_its_file(
    models_dir: Path, env: Path, tmp_path: Path
) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK, store_url=f"sqlite:///{env}")
    run = open_run(RunSpec(settings, "email", 3, NOW, True, "run-1"))
    ids = [str(c) for c in run.context.models.current.customers.ids]
    erased_early = ids[0]  # decided in the first chunk, erased during the second
    out = tmp_path / "campaign.parquet"

    def erase_midway(done: int, _decided: int) -> None:
        if done == 10:
            run.store.erase(erased_early)

    summary = write_batch(run, Selection(ids), out, chunk=10, progress=erase_midway)
    table = read(out)
    assert rows_of(table, erased_early) == 0 and summary.erased_rows == 3
    assert summary.rows == table.num_rows == 3 * (len(ids) - 1)
    assert run.store.batch_outputs()[0].rows == table.num_rows
    # Nothing was recorded for them either (a delivery records impressions).
    assert run.store.events_of(erased_early) == []
    run.store.close()


def test_concurrent_erasures_of_one_file_lose_no_removal(
    client: TestClient, env: Path, tmp_path: Path
) -> None:
    out = campaign(tmp_path, tmp_path / "campaign.csv")
    before = read(out)
    store = SQLiteStore(env)
    errors: list[BaseException] = []

    def take_out(customer_id: str) -> None:
        try:
            erase_from_outputs(store, customer_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take_out, args=(c,)) for c in CAMPAIGN[:4]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    after = read(out)
    assert after.column("customer_id").to_pylist() == ["new-1"] * 3
    assert after.equals(before.filter(pc.equal(before["customer_id"], "new-1")))
    assert store.batch_outputs()[0].rows == 3


def test_the_store_registers_campaign_files(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.schema_version == len(MIGRATIONS) >= 4  # batch_outputs came in 4
    first = BatchOutput("/data/a.csv", 100, "run-1", 30, "csv")
    store.register_batch_output(first)
    store.register_batch_output(BatchOutput("/data/b.parquet", 101, "run-2", 5, "parquet"))
    # Written again at the same path: the record is replaced, not doubled.
    store.register_batch_output(BatchOutput("/data/a.csv", 200, "run-3", 12, "csv"))
    store.set_batch_output_rows("/data/b.parquet", 2)
    assert store.batch_outputs() == [
        BatchOutput("/data/a.csv", 200, "run-3", 12, "csv"),
        BatchOutput("/data/b.parquet", 101, "run-2", 2, "parquet"),
    ]
    store.unregister_batch_output("/data/a.csv")
    assert [o.path for o in store.batch_outputs()] == ["/data/b.parquet"]
    assert store.erased_at("c1") is None
    store.erase("c1")
    assert isinstance(store.erased_at("c1"), int)
    assert set(EVENT_TYPES) >= {e.type for e in store.stored_events_of("c1")}
    store.close()
