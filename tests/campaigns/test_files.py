"""Erasure reaches the campaign files nbo wrote and still manages: rewritten without the
customer, or listed with the reason in the receipt. Through the real app and the real
``nbo batch`` command, on the planted model of conftest."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.campaigns.batch import RunSpec, Selection, open_run, write_batch
from nbo.campaigns.files import erase_from_outputs
from nbo.cli import main
from nbo.settings import Settings
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
