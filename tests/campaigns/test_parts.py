"""Erasure and the data export reach a campaign written as a folder of Parquet parts (what
``nbo batch --engine spark`` writes): each part that holds the customer is rewritten
without them, the others are left as they are. The folder is made here from a real
``nbo batch`` file cut into parts with pyarrow, laid out as Spark lays it out, so these
tests need no Spark."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from nbo.campaigns.files import (
    PARTS,
    OutputProblem,
    customer_rows,
    read_batches,
    remove_customers,
)
from nbo.cli import main
from nbo.store.base import BatchOutput
from nbo.store.sqlite import SQLiteStore

CAMPAIGN = ["a00", "a01", "b00", "b01", "new-1"]


def parts_campaign(tmp_path: Path, env: Path) -> tuple[Path, pa.Table]:
    """A campaign of ``CAMPAIGN`` (3 offers each) as a registered folder of three parts:
    a00 and a01 in the first, b00 and b01 in the second, new-1 in the third; with
    Spark's success marker and Hadoop's checksum files beside the parts."""
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(CAMPAIGN) + "\n", encoding="utf-8")
    whole = tmp_path / "whole.parquet"
    args = ["batch", "--customers", str(ids), "--k", "3", "--out", str(whole), "--unmanaged"]
    assert main(args) == 0
    table = pq.read_table(whole)
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
