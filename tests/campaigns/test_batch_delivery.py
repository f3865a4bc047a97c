"""A campaign that will be sent (``nbo batch --record``) delivers chunk by chunk, on every
store backend: its impressions are recorded as each chunk is decided, and taken back
when the run fails before its file is in place or the customer is erased meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nbo.campaigns import batch
from nbo.campaigns.batch import RunSpec, Selection, decide_chunk, open_run, write_batch
from nbo.settings import Settings

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)


def impressions_of_run(run: batch.BatchRun, customers: list[str]) -> int:
    contacts = run.store.contacts_of_many(customers, 0)
    return sum(
        1
        for history in contacts.values()
        for contact in history.impressions
        if contact.delivery.startswith(run.run_id)
    )


def test_a_delivered_campaign_records_every_row_and_takes_back_the_erased(
    models_dir: Path, store_url: str, tmp_path: Path
) -> None:
    settings = Settings(models_dir=models_dir, store_url=store_url)
    run = open_run(RunSpec(settings, "email", 3, NOW, True, "run-1"))
    ids = [str(c) for c in run.context.models.current.customers.ids]
    late = ids[-1]  # decided in the last chunk, erased before it: recorded after erasure

    def erase_early(done: int, _decided: int) -> None:
        if done == 10:
            run.store.erase(late)

    out = tmp_path / "campaign.parquet"
    try:
        summary = write_batch(run, Selection(ids), out, chunk=10, progress=erase_early)
        rows = pq.read_table(out).to_pylist()
        offered = [r for r in rows if r["rank"] > 0]
        assert late not in {r["customer_id"] for r in rows}
        assert summary.recorded == len(offered) == impressions_of_run(run, ids) > 0
        assert run.store.events_of(late) == []
        stored = {
            (c, contact.item_id)
            for c, history in run.store.contacts_of_many(ids, 0).items()
            for contact in history.impressions
        }
        assert stored == {(r["customer_id"], r["item_id"]) for r in offered}
    finally:
        run.store.close()


def test_a_delivered_campaign_that_fails_takes_its_impressions_back(
    models_dir: Path, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(models_dir=models_dir, store_url=store_url)
    run = open_run(RunSpec(settings, "email", 3, NOW, True, "run-1"))
    ids = [str(c) for c in run.context.models.current.customers.ids]
    recorded: list[int] = []

    def full_disk(*_args: object) -> None:
        recorded.append(impressions_of_run(run, ids))
        raise OSError("No space left on device")

    monkeypatch.setattr(batch, "_put_in_place", full_disk)
    try:
        with pytest.raises(OSError):
            write_batch(run, Selection(ids), tmp_path / "campaign.parquet", chunk=10)
        assert recorded[0] > 0  # every chunk was delivered before the file failed
        assert impressions_of_run(run, ids) == 0
        # The customers can be reached by the campaign run again.
        monkeypatch.undo()
        again = write_batch(run, Selection(ids), tmp_path / "campaign.parquet", chunk=10)
        assert again.recorded == recorded[0]
    finally:
        run.store.close()


def test_a_chunk_called_off_records_nothing(
    models_dir: Path, store_url: str, tmp_path: Path
) -> None:
    """A stopping campaign's workers call their chunks off rather than record what the
    run would then take back: before the chunk starts, or half-way through the
    delivery's transaction, which rolls back."""
    settings = Settings(models_dir=models_dir, store_url=store_url)
    run = open_run(RunSpec(settings, "email", 3, NOW, True, "run-1"))
    ids = [str(c) for c in run.context.models.current.customers.ids][:10]
    asked: list[int] = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) > 4  # the chunk's start, then three customers' impressions

    try:
        assert batch.decide_chunk(run, ids, None, lambda: True).called_off
        result = decide_chunk(run, ids, None, after_three)
        assert result.called_off and result.table is None and result.recorded == 0
        assert len(asked) == 5
        assert impressions_of_run(run, ids) == 0
        recorded = decide_chunk(run, ids, None, lambda: False)
        assert not recorded.called_off and recorded.recorded == impressions_of_run(run, ids) > 0
    finally:
        run.store.close()


def test_a_delivered_campaigns_impressions_name_their_rows_model_version(
    two_models: tuple[Path, str, str], experiments_file: Path, store_url: str, tmp_path: Path
) -> None:
    """Each impression a delivered campaign records names the model version its row
    names (the customer's variant's model under an experiment), as an API delivery's
    does: the experiment report and the data export read it."""
    folder, production, candidate = two_models
    settings = Settings(models_dir=folder, store_url=store_url, experiments=experiments_file)
    run = open_run(RunSpec(settings, "email", 3, NOW, True, "run-1"))
    ids = [str(c) for c in run.context.models.current.customers.ids][:20]
    out = tmp_path / "campaign.parquet"
    try:
        write_batch(run, Selection(ids), out, chunk=10)
        rows = [r for r in pq.read_table(out).to_pylist() if r["rank"] > 0]
        stored = {
            (e["customer_id"], e["item_id"]): e["model_version"]
            for c in ids
            for e in run.store.events_of(c)
            if e["type"] == "offer_impression"
        }
    finally:
        run.store.close()
    assert stored == {(r["customer_id"], r["item_id"]): r["model_version"] for r in rows}
    assert set(stored.values()) == {production, candidate}
