"""Erasure reaches the campaign files nbo wrote and still manages: rewritten without the
customer, or listed with the reason in the receipt. Through the real app and the real
``nbo batch`` command, on the planted model of conftest.

A campaign written as a folder of Parquet parts (what ``nbo batch --engine spark``
writes) is made here from a real ``nbo batch`` file cut into parts with pyarrow, laid out
as Spark lays it out, so those tests need no Spark: each part that holds the customer is
rewritten without them, the others are left as they are."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.campaigns.batch import RunSpec, Selection, open_run, write_batch
from nbo.campaigns.files import (
    PARTS,
    OutputProblem,
    customer_rows,
    erase_from_outputs,
    read_batches,
    remove_customers,
)
from nbo.cli import main
from nbo.settings import Settings
from nbo.store.base import BatchOutput
from nbo.store.sqlite import SQLiteStore

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)


# The campaign's customers: two of each group and one the model has never seen.
CAMPAIGN = ["a00", "a01", "b00", "b01", "new-1"]


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


# --- folders of parts (nbo batch --engine spark) ---


def parts_campaign(tmp_path: Path, env: Path) -> tuple[Path, pa.Table]:
    """A campaign of ``CAMPAIGN`` (3 offers each) as a registered folder of three parts:
    a00 and a01 in the first, b00 and b01 in the second, new-1 in the third; with
    Spark's success marker and Hadoop's checksum files beside the parts."""
    table = pq.read_table(campaign(tmp_path, tmp_path / "whole.parquet", "--unmanaged"))
    folder = tmp_path / "campaign.parquet"
    folder.mkdir()
    (folder / "_SUCCESS").write_bytes(b"")
    for n, (start, length) in enumerate([(0, 6), (6, 6), (12, 3)]):
        name = f"part-{n:05d}-0f1e-c000.snappy.parquet"
        pq.write_table(table.slice(start, length), folder / name)
        (folder / f".{name}.crc").write_bytes(b"checksum")
    store = SQLiteStore(env)
    store.register_batch_output(
        BatchOutput(str(folder), int(time.time()), "run-1", table.num_rows, PARTS)
    )
    store.close()
    return folder, table


def parts_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-"))


def test_erasure_rewrites_only_the_parts_holding_the_customer(
    client: TestClient, env: Path, tmp_path: Path
) -> None:
    folder, table = parts_campaign(tmp_path, env)
    first, second, third = parts_of(folder)
    untouched = {p: p.stat().st_ino for p in (second, third)}
    # Before: the export shows their rows, read from the parts.
    [held] = client.get("/v1/customers/a01/data").json()["batch_files"]
    assert held["path"] == str(folder) and [r["rank"] for r in held["rows"]] == [1, 2, 3]

    answer = client.delete("/v1/customers/a01")
    assert answer.status_code == 200, answer.text
    receipt = answer.json()

    assert receipt["batch_files"] == [{"path": str(folder), "rows_removed": 3}]
    assert receipt["batch_files_untouched"] == []
    left = pq.read_table(folder)
    assert left.equals(table.filter(pc.not_equal(table["customer_id"], "a01")))
    assert pq.read_table(first).column("customer_id").to_pylist() == ["a00"] * 3
    # The other parts, their checksums and the marker are as they were; the rewritten
    # part's stale checksum is gone, and no temporary file is left.
    assert {p: p.stat().st_ino for p in (second, third)} == untouched
    names = sorted(p.name for p in folder.iterdir())
    checksums = [f".{second.name}.crc", f".{third.name}.crc"]
    assert names == sorted(["_SUCCESS", first.name, second.name, third.name, *checksums])
    assert SQLiteStore(env).batch_outputs()[0].rows == table.num_rows - 3
    assert client.get("/v1/customers/a01/data").json()["erased"] is True
    assert client.get("/v1/customers/b00/data").json()["batch_files"][0]["path"] == str(folder)

    # A customer in no part: nothing is rewritten.
    again = client.delete("/v1/customers/b07").json()
    assert again["batch_files"] == [{"path": str(folder), "rows_removed": 0}]
    assert {p: p.stat().st_ino for p in (second, third)} == untouched


def test_a_folder_of_parts_that_cannot_be_rewritten_is_listed_with_the_reason(
    client: TestClient, env: Path, tmp_path: Path
) -> None:
    folder, _table = parts_campaign(tmp_path, env)
    shutil.rmtree(folder)
    missing = client.delete("/v1/customers/a00").json()["batch_files_untouched"]
    assert missing == [
        {"path": str(folder), "reason": "missing: the folder of parts no longer exists"}
    ]
    folder.write_text("a file now", encoding="utf-8")
    replaced = client.delete("/v1/customers/a01").json()["batch_files_untouched"]
    assert replaced[0]["reason"].startswith("not a folder")
    assert client.get("/v1/customers/b00/data").json()["batch_files_unread"] == replaced


def test_a_part_nbo_did_not_write_leaves_every_part_as_it_was(env: Path, tmp_path: Path) -> None:
    folder, table = parts_campaign(tmp_path, env)
    pq.write_table(pa.table({"email": ["someone@example.com"]}), folder / "part-00009.parquet")
    with pytest.raises(OutputProblem, match="not written by nbo"):
        remove_customers(folder, PARTS, ["a00"])
    assert pq.read_table(parts_of(folder)[0]).equals(table.slice(0, 6))


def test_parts_are_read_in_order_for_the_export(env: Path, tmp_path: Path) -> None:
    folder, table = parts_campaign(tmp_path, env)
    read = pa.Table.from_batches(list(read_batches(folder, PARTS)))
    assert read.equals(table)
    assert customer_rows(folder, PARTS, "b01").equals(
        table.filter(pc.equal(table["customer_id"], "b01"))
    )
    assert customer_rows(folder, PARTS, "nobody").num_rows == 0


def test_withdrawing_a_channels_consent_takes_the_customer_out_of_its_campaign_files(
    client: TestClient, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The email files, written before the withdrawal, no longer reach the customer; the
    app file keeps them, and so does the impressions' record of the delivered run."""
    email = campaign(tmp_path, tmp_path / "email.csv", "--record")
    app = campaign(tmp_path, tmp_path / "app.parquet", "--channel", "app")
    email_before, app_before = read(email), read(app)
    assert rows_of(email_before, "a00") == 3 and rows_of(app_before, "a00") == 3
    recorded = SQLiteStore(env).count_run_impressions(
        next(o.run_id for o in SQLiteStore(env).batch_outputs() if o.channel == "email")
    )

    # Personalization only: no channel withdrawn, no file touched.
    consent = {"personalization": False, "channels": {}}
    assert client.put("/v1/customers/a00/consent", json=consent).status_code == 200
    assert read(email).equals(email_before)
    consent = {"personalization": True, "channels": {"email": False}}
    assert client.put("/v1/customers/a00/consent", json=consent).status_code == 200
    assert read(email).equals(without(email_before, "a00"))
    assert read(app).equals(app_before)
    outputs = {Path(o.path).name: o for o in SQLiteStore(env).batch_outputs()}
    assert outputs["email.csv"].rows == email_before.num_rows - 3
    assert SQLiteStore(env).count_run_impressions(outputs["email.csv"].run_id) == recorded

    # From the command line too, with a line saying what the files saw.
    store_url = f"sqlite:///{env}"
    args = ["customers", "consent", "b00", "--personalization", "yes"]
    assert main([*args, "--channel", "app=no", "--store-url", store_url]) == 0
    said = capsys.readouterr().out
    assert "consent to app withdrawn: 3 rows taken out of 1 campaign file" in said
    assert rows_of(read(app), "b00") == 0 and rows_of(read(email), "b00") == 3
    # Sent again: nothing withdrawn now, nothing said (no file scanned).
    assert main([*args, "--channel", "app=no", "--store-url", store_url]) == 0
    assert "withdrawn" not in capsys.readouterr().out
