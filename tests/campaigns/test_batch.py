"""``nbo batch``: the same offers as the API for the same customers and clock (and the same
experiment variants), every rule applied, written whole or not at all."""

from __future__ import annotations

import errno
import gc
import logging
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from support import CLOCK, DEMO_CATALOG, without_progress

from nbo.campaigns import batch
from nbo.campaigns import workers as workers_module
from nbo.campaigns.batch import BatchRun, RunSpec, Selection, open_run, write_batch
from nbo.campaigns.files import erase_from_outputs
from nbo.campaigns.workers import BatchWorkers
from nbo.catalog.loading import default_catalog
from nbo.cli import main
from nbo.core.ids import CaseIndex, IdMap
from nbo.core.pseudonyms import Pseudonyms
from nbo.experiments.assignment import ServingModels
from nbo.models.registry import set_alias
from nbo.models.served import load_serving_model
from nbo.offers.decision import Occasion
from nbo.runtime.decide import Context, contact_policy, decide_customers
from nbo.settings import Settings
from nbo.store import open_store

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)


def _batch(*args: str) -> int:
    return main(["batch", *args])


def _post_purchase(client: TestClient, customer_id: str, item: str) -> None:
    answer = client.post(
        "/v1/events",
        json={
            "type": "purchase",
            "event_id": f"p-{customer_id}-{item}",
            "customer_id": customer_id,
            "timestamp": "2026-06-30T10:00:00Z",
            "items": [{"item_id": item}],
        },
    )
    assert answer.status_code == 200, answer.text


def test_batch_rows_are_the_apis_answers(
    client: TestClient, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # State the rules must see: a posted purchase (suppressed), a customer without
    # consent to email (no offers), one without consent to personalization (popular).
    first = client.get("/v1/customers/a00/offers?k=5").json()["offers"][0]["item_id"]
    _post_purchase(client, "a00", first)
    consent = {"personalization": True, "channels": {"email": False}}
    assert client.put("/v1/customers/a01/consent", json=consent).status_code == 200
    consent = {"personalization": False, "channels": {}}
    assert client.put("/v1/customers/b02/consent", json=consent).status_code == 200

    customers = ["a00", "a01", "b02", "b05", "new-customer"]
    (tmp_path / "ids.txt").write_text("\n".join(customers) + "\n", encoding="utf-8")
    out = tmp_path / "campaign.parquet"
    assert _batch("--customers", str(tmp_path / "ids.txt"), "--k", "5", "--out", str(out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    rows = pd.read_parquet(out)
    assert sorted(rows["customer_id"].unique()) == sorted(customers)
    for customer_id in customers:
        api = client.get(f"/v1/customers/{customer_id}/offers?k=5").json()
        mine = rows[rows["customer_id"] == customer_id].sort_values("rank")
        assert set(mine["model_version"]) == {api["model_version"]}
        assert set(mine["stage"]) == {api["stage"]}
        if not api["offers"]:
            assert mine["rank"].tolist() == [0]
            assert mine["suppressed_reason"].tolist() == [api["suppressed_reason"]]
            continue
        assert mine["offer_id"].tolist() == [o["offer_id"] for o in api["offers"]]
        assert mine["reason_text"].tolist() == [o["reason"]["text"] for o in api["offers"]]
        assert mine["priority"].tolist() == pytest.approx([o["priority"] for o in api["offers"]])
        assert set(mine["best_send_at"]) == {api["best_send_time"]["next_at"]}
    assert first not in set(rows.loc[rows["customer_id"] == "a00", "item_id"])
    assert rows.loc[rows["customer_id"] == "a01", "suppressed_reason"].tolist() == [
        "no_channel_consent"
    ]
    assert not rows.loc[rows["customer_id"] == "b02", "personalized"].any()
    # a01 consents to personalization but not to email: nothing was ranked, so the row
    # says neither that its offers were personalized nor that they were not.
    assert rows.loc[rows["customer_id"] == "a01", "personalized"].isna().all()
    assert rows.loc[rows["rank"] > 0, "personalized"].notna().all()


def test_recorded_batch_counts_against_the_frequency_cap(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "campaign.csv"
    assert _batch("--customers", "all", "--k", "3", "--out", str(out), "--record") == 0
    first_line = capsys.readouterr().out
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert (rows["rank"] > 0).any()
    # Each impression says what the row says: the offer's kind and source, the stage.
    shown = rows[(rows["customer_id"] == "a03") & (rows["rank"] > 0)]
    events = [e for e in client.app.state.store.events_of("a03") if e["type"] == "offer_impression"]
    assert sorted((e["item_id"], e["kind"], e["source"], e["stage"]) for e in events) == sorted(
        zip(
            shown["item_id"].fillna(shown["offer_id"]),
            shown["kind"],
            shown["reason_source"],
            shown["stage"],
            strict=True,
        )
    )
    # Email allows one delivery a week: the real-time call after the campaign is capped.
    answer = client.get("/v1/customers/a03/offers?k=3&record=true").json()
    assert answer["suppressed_reason"] == "frequency_cap"
    assert rows["next_allowed_at"].isna().all()  # nobody was capped
    # A second recorded campaign the same day reaches nobody, and says when it may.
    again = tmp_path / "again.csv"
    assert _batch("--customers", "all", "--k", "3", "--out", str(again), "--record") == 0
    second = pd.read_csv(again, dtype={"customer_id": str})
    # Said delivered either way: the capped run is told from a preview, which says so.
    customers = second["customer_id"].nunique()
    assert "impressions recorded (delivered, --record: " in first_line
    assert (
        f"; 0 impressions recorded (delivered, --record: 0 customers recorded, "
        f"{customers:,} frequency-capped)" in capsys.readouterr().out
    )
    assert _batch("--customers", "all", "--k", "3", "--out", str(tmp_path / "p.csv")) == 0
    assert "; a preview: nothing recorded (no --record)" in capsys.readouterr().out
    assert set(second["suppressed_reason"].dropna()) == {"frequency_cap"}
    assert (second["rank"] == 0).all()
    capped = second.set_index("customer_id")["next_allowed_at"]
    assert capped["a03"] == answer["next_allowed_at"]  # the API's, for the same customer
    assert capped.notna().all()
    # Capped, nothing ranked: no claim either way about personalization (was "False").
    assert second["personalized"].isna().all()


def test_a_recorded_campaign_file_is_not_replaced_without_overwrite(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file of a delivered campaign is the record of what was sent: a second run
    onto it (everyone capped by the first) would leave rank-0 rows in its place."""
    out = tmp_path / "camp1.csv"
    args = ["--customers", "all", "--k", "3", "--out", str(out)]
    assert _batch(*args, "--record") == 0
    sent = out.read_bytes()
    capsys.readouterr()
    for again in (["--record"], []):  # a preview would replace it just the same
        assert _batch(*args, *again) == 2
        err = without_progress(capsys.readouterr().err)
        assert err.count("\n") == 1 and err.startswith(f"nbo batch: error: --out {out}: holds "), (
            err
        )
        assert "delivered (" in err and "pass --overwrite to replace it" in err
        assert out.read_bytes() == sent
    # A preview file (no impressions recorded) is replaced as before.
    preview = tmp_path / "preview.csv"
    preview_args = ["--customers", "all", "--k", "3", "--out", str(preview)]
    assert _batch(*preview_args) == 0
    assert _batch(*preview_args) == 0
    # Said explicitly, the delivered file is replaced.
    assert _batch(*args, "--record", "--overwrite") == 0
    replaced = pd.read_csv(out, dtype={"customer_id": str})
    assert (replaced["rank"] == 0).all()


def test_stage_selection_keeps_only_that_stage(
    client: TestClient,
    env: Path,
    tmp_path: Path,
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An active customer who then withdrew consent to personalization: their answer
    # says "active" (the neutral profile's stage), but they have no stage of their own
    # and a campaign for a stage never selects them.
    actives = [
        c
        for c in ("a00", "a01", "a02", "a03", "b00", "b01")
        if client.get(f"/v1/customers/{c}").json()["stage"] == "active"
    ]
    withdrawn = actives[0]
    consent = {"personalization": False, "channels": {}}
    assert client.put(f"/v1/customers/{withdrawn}/consent", json=consent).status_code == 200
    assert client.get(f"/v1/customers/{withdrawn}/offers").json()["stage"] == "active"
    capsys.readouterr()
    out = tmp_path / "active.csv"
    assert _batch("--customers", "stage=active", "--out", str(out)) == 0
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert len(rows) > 0 and set(rows["stage"]) == {"active"}
    assert withdrawn not in set(rows["customer_id"]) and set(actives[1:]) <= set(
        rows["customer_id"]
    )
    # The summary tells the customers screened (all of them) from those written, each
    # with its rate: a rate of the screened alone overstated the campaign's speed.
    screened = len(load_serving_model(models_dir).customers.ids)
    written = rows["customer_id"].nunique()
    assert 0 < written < screened
    printed, progress = capsys.readouterr()
    assert (
        f"for {written:,} customers in active ({written:,} with offers) of {screened:,} "
        f"screened ({screened - written:,} not in active), in "
    ) in printed
    assert " screened/s, " in printed and " written/s; " in printed
    # Not a terminal: plain progress lines on stderr, one per step.
    last = progress.splitlines()[-1]
    assert last.startswith("nbo batch: offers: done in ")
    assert last.endswith(f" s, {screened:,} screened, {written:,} written")
    assert "nbo batch: select customers: done in " in progress
    assert without_progress(progress) == ""


def test_a_clock_far_past_the_models_data_is_a_warning_not_an_error(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's campaign without NBO_CLOCK on the bundled sample: the clock was
    today, every customer lapsed, and an empty at_risk file came out without a word."""
    monkeypatch.setenv("NBO_CLOCK", "2027-06-30T12:00:00Z")
    out = tmp_path / "winback.csv"
    assert _batch("--customers", "stage=at_risk", "--out", str(out)) == 0
    assert len(pd.read_csv(out)) == 0
    _, err = capsys.readouterr()
    (warning,) = [line for line in err.splitlines() if "past the last purchase" in line]
    assert warning.startswith("nbo batch: warning: clock 2027-06-30T12:00:00+00:00 is 366 days")
    assert "every customer who has bought nothing since is lapsed" in warning
    assert "NBO_CLOCK=2026-06-29T" in warning


@pytest.mark.parametrize("record", [False, True], ids=["plain", "record"])
def test_customers_erased_during_the_run_are_not_counted(
    client: TestClient,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record: bool,
) -> None:
    """Two customers of the first chunk (one with offers, one without: no consent to
    email) are erased through the API while the batch runs: their rows are left out, and
    so are they from the summary's customers, with_offers and without_offers."""
    decide_chunk = batch.decide_chunk
    first: list[str] = []

    def erasing(run: BatchRun, customer_ids: list[str], stage: str | None) -> batch.ChunkResult:
        if not first:
            first.extend(customer_ids[:2])
            consent = {"personalization": True, "channels": {"email": False}}
            assert client.put(f"/v1/customers/{first[1]}/consent", json=consent).status_code == 200
        else:
            for customer_id in first:
                assert client.delete(f"/v1/customers/{customer_id}").status_code == 200
            first.append("erased")  # once
        return decide_chunk(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", erasing)
    out = tmp_path / "campaign.csv"
    args = ["--customers", "all", "--k", "3", "--out", str(out), "--chunk", "10"]
    assert _batch(*args, "--workers", "1", *(["--record"] if record else [])) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert not set(first[:2]) & set(rows["customer_id"])
    customers = rows["customer_id"].nunique()
    with_offers = rows.loc[rows["rank"] > 0, "customer_id"].nunique()
    without = rows.loc[rows["rank"] == 0, "suppressed_reason"].value_counts().to_dict()
    assert not without  # the one without offers was erased
    listed = "".join(f"; without: {r} {n:,}" for r, n in sorted(without.items()))
    assert (
        f": {len(rows):,} rows for {customers:,} customers ({with_offers:,} with offers{listed})"
        in printed
    )
    assert "; 2 customers erased during the run left out (" in printed


def test_without_a_stage_every_customer_screened_is_written(
    env: Path, tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.csv"
    assert _batch("--customers", "all", "--out", str(out)) == 0
    customers = len(load_serving_model(models_dir).customers.ids)
    printed = capsys.readouterr().out
    assert f"for {customers:,} customers (" in printed
    assert " customers/s; " in printed and "screened" not in printed


def test_a_list_with_ids_nobody_knows_says_so(
    client: TestClient, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids known neither to the model nor to the store get a new customer's offers; the
    command counts them, and names the spreadsheet's "a00.0" for the model's "a00"."""
    _post_purchase(client, "posted-only", "A01")  # known to the store alone: not a stranger
    ids = ["a00", "posted-only", "a00.0", "nobody", "A01", "POSTED-ONLY"]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    out = tmp_path / "campaign.csv"
    assert _batch("--customers", str(tmp_path / "ids.txt"), "--out", str(out)) == 0
    err = capsys.readouterr().err
    # Named by their pseudonyms, as the service's logs name them, never by the ids.
    store = open_store(f"sqlite:///{env}")
    pseudonyms = Pseudonyms(store.pseudonym_key())
    store.close()
    assert (
        "4 of 6 customers are known neither to the model nor to the store "
        f"({pseudonyms.of('a00.0')}, {pseudonyms.of('nobody')}, {pseudonyms.of('A01')}, ...)"
    ) in err
    assert "1 look like numbers a spreadsheet wrote: the model knows them without their '.0'" in err
    # "A01" for the model's "a01" and "POSTED-ONLY" for the store's "posted-only": the
    # list's case was changed (a spreadsheet, by hand).
    assert "; 2 differ only in upper or lower case from ids the model or the store knows" in err
    assert "a00.0" not in err and "nobody" not in err and "A01" not in err
    # Every customer of the list is still written.
    assert sorted(pd.read_csv(out, dtype=str)["customer_id"].unique()) == sorted(ids)
    # All or a stage covers known customers only: no such line.
    assert _batch("--customers", "all", "--out", str(tmp_path / "all.csv")) == 0
    assert "known neither" not in capsys.readouterr().err


def test_a_catalogue_naming_items_the_model_does_not_know_is_said_once(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalogue is accepted (a newer model may know the items), but an exclusion of
    a mistyped id excludes nothing: the command names the ids on stderr."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nitems:\n  - {item_id: a00, exclude: true}\n")
    monkeypatch.setenv("NBO_CATALOG", str(catalog))
    assert _batch("--customers", "all", "--out", str(tmp_path / "c.csv")) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "does not know" in line]
    assert len(err) == 1 and err[0].startswith("nbo batch: the catalogue names 1 item model ")
    assert err[0].endswith(
        "('a00'): their terms, exclusions and offers apply to nothing "
        "until a model knows them; the model knows 'A00', not 'a00'"
    )


def test_the_catalogues_warnings_start_as_the_commands_lines_do(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalogue's load warning (incentives eligible together beyond max_incentives)
    reached stderr bare, among lines that all start 'nbo batch:'."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "version: 1\noffers:\n"
        "  - {id: winback-20, kind: incentive, incentive: percent_off, amount: 20, value: 30.0}\n"
        "  - {id: winback-10, kind: incentive, incentive: percent_off, amount: 10, value: 40.0}\n"
    )
    monkeypatch.setenv("NBO_CATALOG", str(catalog))
    assert _batch("--customers", "all", "--out", str(tmp_path / "c.csv")) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "eligible together" in line]
    assert len(err) == 1
    assert err[0].startswith(f"nbo batch: catalogue {catalog}: incentives winback-20, winback-10")
    # The command's handler goes with it: a later log warning is not printed with it.
    assert not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        for h in logging.getLogger("nbo").handlers
    )


def test_an_interrupted_batch_leaves_no_file(models_dir: Path, env: Path, tmp_path: Path) -> None:
    model = load_serving_model(models_dir)
    store = open_store(f"sqlite:///{env}")
    folder = tmp_path / "campaigns"
    folder.mkdir()
    out = folder / "campaign.parquet"
    out.write_bytes(b"last week's campaign")
    run = BatchRun(
        Context(ServingModels(model), default_catalog(), contact_policy(Settings()), store),
        Occasion("email", 3, int(NOW.timestamp())),
    )
    chunks: list[int] = []

    def interrupt(done: int, _decided: int) -> None:
        chunks.append(done)
        if len(chunks) == 2:
            raise KeyboardInterrupt

    ids = [str(c) for c in model.customers.ids]
    with pytest.raises(KeyboardInterrupt):
        write_batch(run, Selection(ids), out, chunk=10, progress=interrupt)
    store.close()
    assert chunks == [10, 20]
    # The previous file is untouched and nothing half-written is left beside it.
    assert out.read_bytes() == b"last week's campaign"
    assert sorted(p.name for p in folder.iterdir()) == ["campaign.parquet"]


@pytest.mark.parametrize("record", [True, False], ids=["record", "preview"])
def test_ctrl_c_says_at_once_that_the_batch_is_stopping(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record: bool,
) -> None:
    """One line before the clean-up (which waits for the workers' chunks and takes a
    delivered campaign's impressions back, with Ctrl-C ignored), and no progress after
    it: the lines had gone on counting while the command only cleaned up."""
    decide, stopped_when = batch.decide_chunk, []

    def interrupted(run: BatchRun, customer_ids: list[str], stage: str | None) -> object:
        if len(stopped_when) == 2:
            raise KeyboardInterrupt
        stopped_when.append(len(customer_ids))
        return decide(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", interrupted)
    out = tmp_path / "campaign.parquet"
    command = ["--customers", "all", "--chunk", "10", "--workers", "1", "--out", str(out)]
    assert _batch(*command, *(["--record"] if record else [])) == 130
    lines = capsys.readouterr().err.splitlines()
    stopping = [line for line in lines if line.startswith("nbo batch: stopping: ")]
    assert len(stopping) == 1 and lines[-2:] == [stopping[0], "nbo batch: interrupted"]
    assert ("a further interrupt is ignored until this is done" in stopping[0]) is record
    assert "no campaign file is written" in stopping[0] and not out.exists()
    store = open_store(f"sqlite:///{env}")
    try:
        assert store.contacts_of_many([f"a{c:02d}" for c in range(30)], 0) == {}
    finally:
        store.close()


def test_batch_errors_are_one_line(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "a.csv")
    (tmp_path / "noids.csv").write_text("id\nx\n", encoding="utf-8")
    afile = tmp_path / "afile"
    afile.write_text("a regular file, not a folder\n", encoding="utf-8")
    (tmp_path / "sub.csv").mkdir()
    (tmp_path / "control.txt").write_text("a01\nbad\x01id\n", encoding="utf-8")
    (tmp_path / "long.csv").write_text(f"customer_id\na01\n{'x' * 300}\n", encoding="utf-8")
    cases = [
        (["--customers", "stage=vip", "--out", out], "unknown stage 'vip'"),
        # Ids no customer can have: a delivered run failed on them half-way, a traceback.
        (
            ["--customers", str(tmp_path / "control.txt"), "--record", "--out", out],
            "customer id 'bad\\x01id' holds the unprintable character U+0001",
        ),
        (
            ["--customers", str(tmp_path / "long.csv"), "--record", "--out", out],
            "customer id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' must be at most 256",
        ),
        (["--customers", str(tmp_path / "none.txt"), "--out", out], "no such file"),
        # A file without a suffix was read as a list (another suffix was refused), and
        # what is not a regular file was said not to exist.
        (["--customers", str(afile), "--out", out], "a customer list is a .txt, .csv or"),
        (["--customers", str(tmp_path / "sub.csv"), "--out", out], "not a regular file"),
        (["--customers", os.devnull, "--out", out], f"{os.devnull}: not a regular file"),
        (["--customers", str(tmp_path / "noids.csv"), "--out", out], "no 'customer_id' column"),
        (["--out", str(tmp_path / "a.json")], "a .parquet or .csv file"),
        (["--out", str(tmp_path / "missing" / "a.csv")], "does not exist"),
        (["--out", str(tmp_path / "sub.csv")], "is a folder; name a file"),
        (["--out", str(afile / "a.csv")], f"{afile} is not a folder"),
        (["--k", "0", "--out", out], "--k 0: must be between 1 and 100"),
    ]
    if Path("/proc").is_dir():
        # Writable to root by its permission bits, yet no file can be created there.
        cases.append((["--out", "/proc/a.csv"], "--out /proc/a.csv: cannot be written (no file"))
    for args, message in cases:
        assert _batch(*args) == 2, args
        err = without_progress(capsys.readouterr().err)
        assert err.count("\n") == 1 and err.startswith("nbo batch: error: "), err
        assert message in err, (message, err)
    assert not (tmp_path / "a.csv").exists()


def test_a_pin_may_name_an_alias_and_one_naming_nothing_says_so(
    models_dir: Path,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """NBO_MODEL_VERSION takes an alias, as the service does (it was read as a folder)."""
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    version = (models / "CURRENT").read_text(encoding="utf-8").strip()
    set_alias(models, "previous", version)
    monkeypatch.setenv("NBO_MODELS_DIR", str(models))
    monkeypatch.setenv("NBO_MODEL_VERSION", "previous")
    out = tmp_path / "a.csv"
    assert _batch("--customers", "stage=active", "--k", "2", "--out", str(out)) == 0
    assert set(pd.read_csv(out)["model_version"]) == {version}
    monkeypatch.setenv("NBO_MODEL_VERSION", "nope")
    capsys.readouterr()
    assert _batch("--k", "2", "--out", str(tmp_path / "b.csv")) == 2
    err = without_progress(capsys.readouterr().err)
    assert err.count("\n") == 1, err
    assert "NBO_MODEL_VERSION 'nope': no such alias or version" in err
    assert "previous" in err and version in err


@pytest.mark.parametrize(
    "store", ["not-a-database", "a-file-in-the-way", "in-memory", "a-missing-folder"]
)
def test_a_store_url_naming_no_store_is_one_line(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: str,
) -> None:
    (tmp_path / "purchases.csv").write_text("customer_id,item_id\n", encoding="utf-8")
    url, message = {
        "not-a-database": (f"sqlite:///{tmp_path / 'purchases.csv'}", "file is not a database"),
        "a-file-in-the-way": (f"sqlite:///{tmp_path / 'purchases.csv' / 'nbo.db'}", "not a folder"),
        "in-memory": ("sqlite:///:memory:", "keeps nothing"),
        # Not made: a new store only in a folder that exists (or the default's).
        "a-missing-folder": (f"sqlite:///{tmp_path / 'nowhere' / 'nbo.db'}", "no folder"),
    }[store]
    monkeypatch.setenv("NBO_STORE_URL", url)
    assert _batch("--out", str(tmp_path / "a.csv")) == 2
    err = without_progress(capsys.readouterr().err)
    assert err.count("\n") == 1 and err.startswith("nbo batch: error: setting NBO_STORE_URL: ")
    assert message in err, err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "nowhere").exists()


def test_spawned_workers_write_the_same_file_as_one_process(
    models_dir: Path, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned whatever this process may do (a fork from pytest's process is the
    # subprocess test's, in tests/campaigns/test_workers.py).
    monkeypatch.setattr(workers_module, "fork_refused", lambda: "a test spawns them")
    settings = Settings(models_dir=models_dir, clock=CLOCK, store_url=f"sqlite:///{env}")
    spec = RunSpec(settings, "email", 3, NOW, False, "run-1")
    run = open_run(spec)
    ids = [str(c) for c in run.context.models.current.customers.ids]
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    done: list[tuple[int, int]] = []
    first = write_batch(run, Selection(ids), one, chunk=10)
    with BatchWorkers(run, spec, 2) as workers:
        assert not workers.forked
        second = write_batch(
            run,
            Selection(ids),
            two,
            chunk=10,
            progress=lambda screened, decided: done.append((screened, decided)),
            workers=workers,
        )
    run.store.close()
    assert first == second and first.customers == len(ids) == 60
    # In order, one call per chunk: screened and decided (every one: no stage).
    assert done == [(n, n) for n in range(10, 61, 10)]
    assert pd.read_parquet(one).equals(pd.read_parquet(two))


def test_small_batches_run_in_one_process_large_ones_on_every_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nbo.campaigns.workers import (
        FORKED_CUSTOMERS_PER_WORKER,
        SPAWNED_CUSTOMERS_PER_WORKER,
        default_workers,
        worker_count,
    )

    cpus = os.cpu_count() or 1
    for refused, each in (
        (None, FORKED_CUSTOMERS_PER_WORKER),
        ("no", SPAWNED_CUSTOMERS_PER_WORKER),
    ):
        monkeypatch.setattr(workers_module, "fork_refused", lambda refused=refused: refused)
        assert default_workers(0) == 1
        assert default_workers(each - 1) == 1
        assert default_workers(2 * each) == min(2, cpus)
        assert default_workers(1000 * each) == cpus
    # Never more workers than chunks, asked for or not.
    assert worker_count(25, 10, asked=8) == 3
    assert worker_count(25, 10) == 1


CUSTOMERS = [f"{g}{c:02d}" for g in "ab" for c in range(30)]


def test_batch_rows_name_the_same_variants_as_the_api(
    experiment_client: TestClient,
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    isolated_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBO_MODELS_DIR", str(two_models[0]))
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{isolated_store}")
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(CUSTOMERS[:20]), encoding="utf-8")
    out = tmp_path / "campaign.csv"
    assert main(["batch", "--customers", str(ids), "--k", "3", "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype=str)
    for customer_id, mine in rows.groupby("customer_id"):
        api = experiment_client.get(f"/v1/customers/{customer_id}/offers?k=3").json()
        assert set(mine["variant"]) == {api["variant"]}
        assert set(mine["model_version"]) == {api["model_version"]}
        assert mine["offer_id"].tolist() == [o["offer_id"] for o in api["offers"]]


def test_a_campaign_runs_on_a_frozen_heap(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is loaded before the heap is frozen, and the customers are decided
    inside it (``nbo.core.processes``): the collector's full passes leave the model out."""
    seen: dict[str, int] = {}
    decide = batch.decide_chunk

    def decide_chunk(*args: object, **kwargs: object) -> object:
        seen.setdefault("frozen while deciding", gc.get_freeze_count())
        return decide(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "decide_chunk", decide_chunk)
    out = tmp_path / "out.parquet"
    assert _batch("--customers", "all", "--k", "3", "--out", str(out)) == 0
    assert seen["frozen while deciding"] > 0
    assert gc.get_freeze_count() == 0


def test_null_ids_in_a_customer_list_are_no_customers(tmp_path: Path) -> None:
    """An empty cell of a list's customer_id column is skipped like a blank line, and
    counted, not read as a customer called "nan" (or "None") who would get offers and
    impressions."""
    text = tmp_path / "ids.csv"
    text.write_text("customer_id,name\na00,Ann\n\n,Bo\na01,Cy\n", encoding="utf-8")
    assert batch._listed_ids(text) == (["a00", "a01"], 1)
    objects = tmp_path / "objects.parquet"
    pd.DataFrame({"customer_id": ["a00", None, "a01"]}).to_parquet(objects)
    assert batch._listed_ids(objects) == (["a00", "a01"], 1)
    lines = tmp_path / "ids.txt"
    lines.write_text("a00\n\n  \na01\n\n\n", encoding="utf-8")  # blank lines at the end: none
    assert batch._listed_ids(lines) == (["a00", "a01"], 2)


def test_a_float_column_of_ids_is_read_as_the_whole_numbers_it_holds(tmp_path: Path) -> None:
    """pandas writes a column of numeric ids with a blank among them as floats: 12347.0
    was served as a new customer "12347.0" (and got round 12347's frequency cap)."""
    parquet = tmp_path / "ids.parquet"
    pd.DataFrame({"customer_id": [12347.0, np.nan, 12355.0]}).to_parquet(parquet)
    assert batch._listed_ids(parquet) == (["12347", "12355"], 1)
    # A number that is not whole is no customer's id: refused, naming the column.
    pd.DataFrame({"customer_id": [12347.0, 12347.5]}).to_parquet(parquet)
    with pytest.raises(batch.BatchError) as refused:
        batch._listed_ids(parquet)
    assert str(refused.value) == (
        f"--customers {parquet}: column 'customer_id' holds 12347.5, not a whole number: "
        "customer ids are whole numbers or text"
    )


def test_a_customer_id_too_long_for_a_request_id_is_delivered_under_its_digest(
    env: Path, tmp_path: Path
) -> None:
    """A customer id may be 256 characters; a delivery's request id is the run's id, '-'
    and the customer's, which did not fit (a traceback half-way through the run). Such a
    customer's delivery is named by the run and a digest, and taken back like any."""
    long_id = "c" * 250
    listed = tmp_path / "customers.txt"
    listed.write_text(f"a01\n{long_id}\n", encoding="utf-8")
    out = tmp_path / "campaign.csv"
    assert _batch("--customers", str(listed), "--record", "--out", str(out)) == 0
    rows = pd.read_csv(out, dtype=str)
    requests = dict(zip(rows["customer_id"], rows["request_id"], strict=False))
    run_id = requests["a01"].removesuffix("-a01")
    assert requests[long_id].startswith(f"{run_id}-sha256-") and len(requests[long_id]) < 200
    store = open_store(f"sqlite:///{env}")
    try:
        assert store.contacts_of_many([long_id], 0)
        run = SimpleNamespace(run_id=run_id, store=store)
        assert batch.take_back(run, [long_id]) > 0  # type: ignore[arg-type]
        assert store.contacts_of_many([long_id], 0) == {}
    finally:
        store.close()


@pytest.mark.parametrize(
    "text",
    [
        "customer_id\na00\nb05\n",
        "\ufeffcustomer_id\r\na00\r\nb05\r\n",
        "  customer_id \n\na00\nb05",
    ],
)
def test_a_txt_list_with_the_csv_header_is_not_a_customer_called_customer_id(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(text, encoding="utf-8")
    assert batch._listed_ids(path)[0] == ["a00", "b05"]


@pytest.mark.parametrize("header", ["CustomerID", "Customer ID", "customer-id", "client_id"])
def test_a_list_with_another_customer_id_header_is_not_a_customer_of_that_name(
    tmp_path: Path, header: str
) -> None:
    """A list exported under the column's name in the source system (Online Retail's
    CustomerID) was served as a customer called "CustomerID"; a .csv or .parquet list's
    column of that name is its column of ids."""
    path = tmp_path / "ids.txt"
    path.write_text(f"{header}\na00\nb05\n", encoding="utf-8")
    assert batch._listed_ids(path) == (["a00", "b05"], 0)
    table = tmp_path / "ids.csv"
    table.write_text(f"{header},name\na00,Ann\nb05,Bo\n", encoding="utf-8")
    assert batch._listed_ids(table) == (["a00", "b05"], 0)
    # A name that is not a customer id's is still refused, naming the columns.
    table.write_text("name\nAnn\n", encoding="utf-8")
    with pytest.raises(batch.BatchError, match=r"no 'customer_id' column \(columns: name\)"):
        batch._listed_ids(table)


def test_a_txt_list_of_a_header_alone_has_no_customers(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("customer_id\n", encoding="utf-8")
    with pytest.raises(batch.BatchError, match="no customer ids in the file"):
        batch._listed_ids(path)
    # Only a first line is a header: further down it is an id like any other.
    path.write_text("a00\ncustomer_id\n", encoding="utf-8")
    assert batch._listed_ids(path) == (["a00", "customer_id"], 0)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_campaign_files_and_their_partial_files_are_their_owners_alone(
    suffix: str, models_dir: Path, env: Path, tmp_path: Path
) -> None:
    """Customers' rows: 0600 while written (the .partial file), once in place (also over
    a file that was readable by all), and after an erasure rewrote it."""
    old_umask = os.umask(0o022)
    try:
        out = tmp_path / f"campaign{suffix}"
        out.write_text("last week's campaign")
        os.chmod(out, 0o644)
        seen: list[int] = []

        def progress(_done: int, _decided: int) -> None:
            (partial,) = tmp_path.glob(f".campaign{suffix}.*.partial")
            seen.append(_mode(partial))

        model = load_serving_model(models_dir)
        store = open_store(f"sqlite:///{env}")
        run = BatchRun(
            Context(ServingModels(model), default_catalog(), contact_policy(Settings()), store),
            Occasion("email", 3, int(NOW.timestamp())),
        )
        ids = [str(c) for c in model.customers.ids][:20]
        write_batch(run, Selection(ids), out, chunk=10, progress=progress)
        assert seen == [0o600, 0o600]
        assert _mode(out) == 0o600

        store.erase(ids[0])
        (scrubbed,), _ = erase_from_outputs(store, ids[0])
        store.close()
        assert scrubbed.rows_removed > 0 and _mode(out) == 0o600
    finally:
        os.umask(old_umask)


def test_erased_customers_of_a_list_are_left_out_unless_they_came_back(
    client: TestClient, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Erasure drops the consent record with the rest: a customer who had withdrawn
    consent to email would get campaign rows again from an old list. An erased id the
    store knows nothing of since is left out; one who came back (a purchase, a consent
    record since) stays in."""
    no_email = {"personalization": True, "channels": {"email": False}}
    assert client.put("/v1/customers/a00/consent", json=no_email).is_success
    for customer in ("a00", "a01", "a02"):
        assert client.delete(f"/v1/customers/{customer}").status_code == 200
    _post_purchase(client, "a01", "A01")  # came back
    assert client.put("/v1/customers/a02/consent", json=no_email).is_success  # said again
    (tmp_path / "ids.txt").write_text("a00\na01\na02\na03\n", encoding="utf-8")
    out = tmp_path / "campaign.csv"

    assert _batch("--customers", str(tmp_path / "ids.txt"), "--out", str(out)) == 0

    err = capsys.readouterr().err
    assert (
        "nbo batch: 1 of 4 customers are erased and not heard from since (no event, no "
        "consent record): left out\n"
    ) in err
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sorted(rows["customer_id"].unique()) == ["a01", "a02", "a03"]
    a02 = rows[rows["customer_id"] == "a02"]
    assert a02["suppressed_reason"].tolist() == ["no_channel_consent"]


def test_ids_listed_twice_are_decided_once_and_counted(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list holding a customer twice (two exports pasted together): one set of rows,
    and a line saying so (it said nothing, though unknown and erased ids are counted)."""
    ids = tmp_path / "ids.csv"
    ids.write_text("customer_id\na00\nb05\n\na00\na00\n", encoding="utf-8")
    out = tmp_path / "campaign.csv"
    assert _batch("--customers", str(ids), "--k", "2", "--out", str(out)) == 0
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert sorted(rows["customer_id"].unique()) == ["a00", "b05"]
    assert (rows["customer_id"] == "a00").sum() == 2
    err = capsys.readouterr().err
    assert f"nbo batch: 2 ids of {ids} are listed again after their first line" in err
    assert "without a customer id" not in err


def test_rows_without_an_id_are_left_out_and_counted(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.parquet"
    pd.DataFrame({"customer_id": ["a00", None, "b05", ""]}).to_parquet(ids)
    out = tmp_path / "campaign.csv"
    assert _batch("--customers", str(ids), "--k", "2", "--out", str(out)) == 0
    assert sorted(pd.read_csv(out, dtype=str)["customer_id"].unique()) == ["a00", "b05"]
    err = capsys.readouterr().err
    assert (
        f"nbo batch: 2 rows of {ids} without a customer id (a blank line, an empty cell): left out"
    ) in err


def test_each_row_is_the_offer_the_api_answers(models_dir: Path, env: Path) -> None:
    # The demo catalogue's incentives (with and without an amount) beside the products,
    # and a customer with no consent to email: the columns read from the chunk's offer
    # tables are each offer's fields, in rank order.
    settings = Settings(
        models_dir=models_dir, store_url=f"sqlite:///{env}", catalog=DEMO_CATALOG, clock=CLOCK
    )
    run = open_run(RunSpec(settings, "email", 5, settings.now(), False, "batch-test"))
    run.store.set_consent("a01", True, {"email": False})
    customers = [str(c) for c in run.context.models.current.customers.ids] + ["new-customer"]
    decided = decide_customers(run.context, customers, run.occasion)
    rows = batch.chunk_table(run, decided).to_pylist()
    expected = []
    for one in decided:
        decision = one.decision
        ranking = decision.ranking
        offers = [] if ranking is None else ranking.offers
        for offer in offers or [None]:
            expected.append(
                {
                    "customer_id": one.customer_id,
                    "rank": 0 if offer is None else offer.rank,
                    "offer_id": None if offer is None else offer.offer_id,
                    "kind": None if offer is None else offer.kind,
                    "item_id": None if offer is None else offer.item_id,
                    "title": None if offer is None else offer.title,
                    "incentive": None if offer is None else offer.incentive,
                    "amount": None if offer is None else offer.amount,
                    "reason_text": None if offer is None else offer.reason.text,
                    "reason_because": None if offer is None else "|".join(offer.reason.because),
                    "stage": decision.profile.stage,
                    "suppressed_reason": decision.suppressed_reason if offer is None else None,
                    "request_id": f"batch-test-{one.customer_id}",
                }
            )
    assert [{name: row[name] for name in expected[0]} for row in rows] == expected
    amounts = {row["offer_id"]: row["amount"] for row in rows if row["kind"] == "incentive"}
    assert None in amounts.values() and len(set(amounts.values())) > 1
    assert any(row["suppressed_reason"] == "no_channel_consent" for row in rows)
    run.store.close()


def test_the_case_count_folds_case_as_casefold_does() -> None:
    """'STRASSE' for the model's 'straße' is a case slip (``lower`` would not see it)."""
    customers = IdMap(["straße", "M-1", "12347"])
    model = SimpleNamespace(
        customers=customers, customer_case_index=lambda: CaseIndex(customers.ids)
    )
    found = ["STRASSE", "m-1", "m-1", "nobody", "12347.0"]
    line = batch.strangers_line(found, 9, model, Pseudonyms(b"k" * 32))  # type: ignore[arg-type]
    assert line.endswith(
        "; 1 look like numbers a spreadsheet wrote: the model knows them without their '.0'"
        "; 3 differ only in upper or lower case from ids the model or the store knows ('m-1' "
        "is not "
        "'M-1': ids are matched exactly): correct the list's case"
    )
    assert line.startswith("5 of 9 customers are known neither to the model nor to the store")


def test_the_case_hint_knows_the_stores_customers_too() -> None:
    """A customer known to the store alone (a posted purchase, not in the model) whose
    id a list wrote in another case was counted a stranger without the case hint: only
    the model's customers were folded."""
    customers = IdMap(["M-1"])
    model = SimpleNamespace(
        customers=customers, customer_case_index=lambda: CaseIndex(customers.ids)
    )
    found = ["posted-1", "m-1", "nobody"]
    pseudonyms = Pseudonyms(b"k" * 32)
    without = batch.strangers_line(found, 3, model, pseudonyms)  # type: ignore[arg-type]
    assert "; 1 differ only in upper or lower case" in without
    line = batch.strangers_line(found, 3, model, pseudonyms, ["POSTED-1"])  # type: ignore[arg-type]
    assert "; 2 differ only in upper or lower case from ids the model or the store knows" in line


def test_out_of_memory_is_one_line_naming_the_step(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ulimit -v 900000; nbo batch`` ended in a traceback ending ArrowMemoryError."""

    def out_of_memory(*_args: object, **_kwargs: object) -> object:
        raise pa.lib.ArrowMemoryError("malloc of size 4096 failed")

    monkeypatch.setattr(batch, "decide_chunk", out_of_memory)
    out = tmp_path / "campaign.parquet"

    assert _batch("--customers", "all", "--workers", "1", "--out", str(out)) == 71
    assert without_progress(capsys.readouterr().err).endswith(
        "nbo batch: out of memory during offers (malloc of size 4096 failed): give it a "
        "machine or a limit with more memory, or less data; see docs/operations.md, Sizing\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("campaign")) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_naming_the_campaign_file(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
) -> None:
    """pyarrow's writer on a full disk: a traceback ending ``OSError: [Errno 28] Error
    writing bytes to file. Detail: [errno 28] No space left on device``."""
    written: list[int] = []

    class FullDisk(batch.pq.ParquetWriter):  # type: ignore[misc]
        def write_table(self, table: pa.Table, *args: Any, **kwargs: Any) -> None:
            if written:
                detail = f"[errno {code}] {os.strerror(code)}"
                raise OSError(code, f"Error writing bytes to file. Detail: {detail}")
            written.append(table.num_rows)
            super().write_table(table, *args, **kwargs)

    monkeypatch.setattr(batch.pq, "ParquetWriter", FullDisk)
    out = tmp_path / "campaign.parquet"
    command = ["--customers", "all", "--chunk", "10", "--workers", "1", "--out", str(out)]

    assert _batch(*command) == 74
    reason = os.strerror(code)
    assert without_progress(capsys.readouterr().err) == (
        f"nbo batch: error: {out}: {reason[0].lower()}{reason[1:]}\n"
    )
    assert written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("campaign", ".campaign"))]


def test_without_unreachable_leaves_out_who_the_campaign_may_not_reach(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a01 withdrew consent to email: by default a rank-0 row, which an email platform
    # importing the file could send to; --without-unreachable leaves them out.
    consent = {"personalization": True, "channels": {"email": False}}
    assert client.put("/v1/customers/a01/consent", json=consent).status_code == 200
    (tmp_path / "ids.txt").write_text("a00\na01\na03\n", encoding="utf-8")
    ids = str(tmp_path / "ids.txt")
    every = tmp_path / "every.csv"
    assert _batch("--customers", ids, "--k", "3", "--out", str(every)) == 0
    assert "a01" in set(pd.read_csv(every, dtype={"customer_id": str})["customer_id"])
    capsys.readouterr()
    out = tmp_path / "sendable.csv"
    args = ("--customers", ids, "--k", "3", "--without-unreachable")
    assert _batch(*args, "--out", str(out), "--record") == 0
    line = capsys.readouterr().out
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert set(rows["customer_id"]) == {"a00", "a03"}
    assert (rows["rank"] > 0).all()
    assert "2 customers (2 with offers)" in line
    assert "left out as unreachable (--without-unreachable): no_channel_consent 1" in line
    # Delivered again the same day: every customer capped or without consent, so the
    # file has no row at all, and the summary says why.
    again = tmp_path / "again.csv"
    assert _batch(*args, "--out", str(again), "--record") == 0
    line = capsys.readouterr().out
    assert pd.read_csv(again).empty
    assert "frequency_cap 2, no_channel_consent 1" in line


def test_without_unreachable_is_refused_on_spark(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.parquet")
    assert _batch("--engine", "spark", "--without-unreachable", "--out", out) == 2
    assert "--without-unreachable: only with --engine local" in capsys.readouterr().err


@pytest.mark.parametrize("record", [False, True])
def test_a_consent_withdrawn_during_the_run_takes_the_customer_out_of_its_file(
    client: TestClient,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record: bool,
) -> None:
    """A customer of the first chunk, given offers, withdraws consent to email while the
    second chunk is decided: the file (registered only at the end, so the withdrawal
    could not rewrite it) leaves them out, their impressions are taken back, and the
    summary says so; one who withdrew consent to the app only keeps their offers."""
    decide_chunk = batch.decide_chunk
    first: list[str] = []

    def withdrawing(run: BatchRun, customer_ids: list[str], stage: str | None) -> batch.ChunkResult:
        if first:
            for customer_id, channel in zip(first[:2], ("email", "app"), strict=True):
                consent = {"personalization": True, "channels": {channel: False}}
                answer = client.put(f"/v1/customers/{customer_id}/consent", json=consent)
                assert answer.status_code == 200
            first.append("withdrawn")  # once
        else:
            first.extend(customer_ids[:2])
        return decide_chunk(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", withdrawing)
    out = tmp_path / "campaign.csv"
    args = ["--customers", "all", "--k", "3", "--out", str(out), "--chunk", "10"]
    assert _batch(*args, "--workers", "1", *(["--record"] if record else [])) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(out, dtype={"customer_id": str})
    assert first[0] not in set(rows["customer_id"])
    assert (rows.loc[rows["customer_id"] == first[1], "rank"] > 0).all()
    assert "; 1 customers who withdrew consent to email during the run left out (3 rows)" in printed
    customers = rows["customer_id"].nunique()
    assert f": {len(rows):,} rows for {customers:,} customers (" in printed
    store = client.app.state.store
    shown = [e for e in store.events_of(first[0]) if e["type"] == "offer_impression"]
    assert shown == []
    if record:
        assert [e for e in store.events_of(first[1]) if e["type"] == "offer_impression"]
