"""``nbo batch --engine spark``: the local engine's rows, decided by Spark's executors in
local mode, on the bundled sample with state in the store (posted purchases, consent,
contacts, an experiment); ``--record`` and erasure as for the local engine.

The tests that run Spark skip, saying why, where PySpark or Java is missing
(``make install-spark`` adds PySpark; CI installs it); the one on PostgreSQL also skips,
saying how to run it, without a server (``NBO_TEST_POSTGRES_URL``, as ``.ci/run`` sets
it). One local session serves the module: ``nbo batch`` runs on a session already
running in its process. A partition's work (its store, its bulk reads, a task run
again) is tested in-process too, on both backends, without Spark."""

from __future__ import annotations

import errno
import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from backends import postgres_schema
from fastapi.testclient import TestClient
from support import CLOCK as PLANTED_CLOCK
from support import without_progress

from nbo.campaigns import batch as batch_module
from nbo.campaigns import cli as batch_cli
from nbo.campaigns import spark as spark_module
from nbo.campaigns.batch import RunSpec
from nbo.campaigns.files import PARTS
from nbo.campaigns.spark import SparkOptions, decide_partition, spark_missing, spark_session
from nbo.cli import main
from nbo.data.events import ImpressionEvent, PurchaseEvent
from nbo.models.served import load_serving_model
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store import open_store
from nbo.store.base import Store
from nbo.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "online_retail_sample.parquet"
CATALOG = REPO / "data" / "catalog.yaml"
EXPERIMENTS = REPO / "data" / "experiments.yaml"
CLOCK = "2011-12-09T13:00:00Z"
NOW = datetime(2011, 12, 9, 13, tzinfo=UTC)

MISSING = spark_missing()
needs_spark = pytest.mark.skipif(
    MISSING is not None, reason=f"the Spark engine cannot run here: {MISSING}"
)


@pytest.fixture(scope="module")
def sample_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("sample") / "models"
    args = ["train", "--data", str(SAMPLE), "--mapping", "online-retail"]
    assert main([*args, "--models-dir", str(models)]) == 0
    return models


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with spark_session(SparkOptions()) as session:
        yield session


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sample_models: Path, isolated_store: Path) -> Path:
    """``nbo batch`` (either engine) and the app share the model, clock, catalogue,
    experiments and store."""
    monkeypatch.setenv("NBO_MODELS_DIR", str(sample_models))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    monkeypatch.setenv("NBO_CATALOG", str(CATALOG))
    monkeypatch.setenv("NBO_EXPERIMENTS", str(EXPERIMENTS))
    return isolated_store


def batch(*args: str) -> int:
    return main(["batch", *args])


def counts(printed: str) -> str:
    """A summary line's counts: what was written, before the timing and the path."""
    line = printed.strip().splitlines()[-1]
    return re.split(r" in [\d.]+ s", line.split(": ", 1)[1])[0]


def plant_state(store_url: str, customers: list[str]) -> None:
    """What the rules must see, for customers spread over the partitions: a posted
    purchase of a customer's best offer (suppressed), no consent to email (no offers),
    no consent to personalization (popular, outside the experiment), an item shown
    three times without an answer (resting: fatigue), and a customer the model never
    saw with a posted purchase."""
    store = open_store(store_url)
    at = "2011-12-08T10:00:00Z"
    events: list[Any] = [
        PurchaseEvent.model_validate(
            {
                "type": "purchase",
                "event_id": "p1",
                "customer_id": customers[0],
                "timestamp": at,
                "items": [{"item_id": "85123A"}, {"item_id": "22423"}],
            }
        ),
        PurchaseEvent.model_validate(
            {
                "type": "purchase",
                "event_id": "p2",
                "customer_id": "new-customer-1",
                "timestamp": at,
                "items": [{"item_id": "85123A"}],
            }
        ),
    ]
    events += [
        ImpressionEvent.model_validate(
            {
                "type": "offer_impression",
                "event_id": f"i{n}",
                "customer_id": customers[3],
                "timestamp": at,
                "item_id": "22423",
                "channel": "app",
            }
        )
        for n in range(3)
    ]
    assert len(store.add_events(events).accepted) == len(events)
    store.set_consent(customers[1], True, {"email": False})
    store.set_consent(customers[2], False, {})
    store.close()


@needs_spark
def test_spark_writes_the_local_engines_rows_and_erasure_reaches_them(
    spark: Any,
    env: Path,
    sample_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [str(c) for c in load_serving_model(sample_models).customers.ids]
    plant_state(f"sqlite:///{env}", [ids[5], ids[350], ids[700], ids[900]])
    local, distributed = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    common = ["--customers", "all", "--k", "5", "--chunk", "100"]

    assert batch(*common, "--out", str(local)) == 0
    local_line = capsys.readouterr().out
    assert batch(*common, "--engine", "spark", "--partitions", "3", "--out", str(distributed)) == 0
    printed, err = capsys.readouterr()
    assert without_progress(err) == "", err  # Spark's logs stay quiet

    # Three partitions, three parts, read in name order: the local file's rows.
    names = sorted(os.listdir(distributed))
    assert names[0] == "_SUCCESS" and len(names) == 4
    assert all(re.fullmatch(r"part-0000[0-2]-.*\.parquet", name) for name in names[1:])
    expected, got = pq.read_table(local), pq.read_table(distributed)
    assert got.schema.equals(expected.schema)
    assert got.drop(["request_id"]).equals(expected.drop(["request_id"]))
    assert got.num_rows == expected.num_rows > 5 * len(ids) * 0.9
    # The request ids name the run (each run its own) and the customer.
    run_ids = {
        r.removesuffix(f"-{c}")
        for r, c in zip(got["request_id"].to_pylist(), got["customer_id"].to_pylist(), strict=True)
    }
    assert len(run_ids) == 1 and run_ids.pop().startswith("batch-")
    assert counts(printed) == counts(local_line)
    assert "a folder of Parquet parts (spark engine)" in printed
    # The planted state was seen: each rule made a difference somewhere.
    for column, value in (
        ("suppressed_reason", "no_channel_consent"),
        ("personalized", False),
        ("variant", "control"),
        ("variant", "personalized"),
    ):
        assert value in set(got[column].to_pylist()), (column, value)
    assert "new-customer-1" in set(got["customer_id"].to_pylist())

    # Registered as a folder of parts; an erasure takes the customer out of it.
    registered = {o.path: o for o in SQLiteStore(env).batch_outputs()}
    assert registered[str(local)].format == "parquet"
    assert registered[str(distributed)].format == PARTS
    assert registered[str(distributed)].rows == got.num_rows
    settings = Settings(
        models_dir=sample_models, clock=CLOCK, store_url=f"sqlite:///{env}", catalog=CATALOG
    )
    with TestClient(create_app(settings)) as client:
        receipt = client.delete(f"/v1/customers/{ids[5]}").json()
    theirs = int(pc.sum(pc.equal(got["customer_id"], ids[5]).cast(pa.int64())).as_py())
    assert receipt["batch_files"] == [
        {"path": str(local), "rows_removed": theirs},
        {"path": str(distributed), "rows_removed": theirs},
    ]
    after = pq.read_table(distributed)
    assert after.equals(got.filter(pc.not_equal(got["customer_id"], ids[5])))


@needs_spark
def test_selections_by_stage_and_by_file_are_the_local_engines(
    spark: Any,
    env: Path,
    sample_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [str(c) for c in load_serving_model(sample_models).customers.ids]
    listed = tmp_path / "ids.csv"
    listed.write_text("customer_id\n" + "\n".join([*ids[::7], "unknown-1"]) + "\n")
    for selection in ("stage=at_risk", str(listed)):
        local, distributed = tmp_path / "local.parquet", tmp_path / "spark.parquet"
        assert batch("--customers", selection, "--chunk", "50", "--out", str(local)) == 0
        local_line = capsys.readouterr().out
        args = ["--customers", selection, "--chunk", "50", "--engine", "spark"]
        assert batch(*args, "--out", str(distributed)) == 0
        printed = capsys.readouterr().out
        expected, got = pq.read_table(local), pq.read_table(distributed)
        assert expected.num_rows > 0
        assert got.drop(["request_id"]).equals(expected.drop(["request_id"])), selection
        assert counts(printed) == counts(local_line)
        if selection.startswith("stage="):
            assert set(got["stage"].to_pylist()) == {"at_risk"}
            assert "not in at_risk" in counts(printed)
        else:
            assert "unknown-1" in set(got["customer_id"].to_pylist())


@needs_spark
def test_a_recorded_spark_campaign_records_each_offer_once_and_caps_the_next(
    spark: Any, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "campaign.parquet"
    (tmp_path / "ids.txt").write_text("12347\n12348\n12349\n12350\n", encoding="utf-8")
    selection = ["--customers", str(tmp_path / "ids.txt"), "--k", "3", "--engine", "spark"]
    assert batch(*selection, "--record", "--out", str(out)) == 0
    first = pq.read_table(out)
    delivered = first.filter(pc.greater(first["rank"], 0))
    assert delivered.num_rows == 12
    assert f"; {delivered.num_rows} impressions recorded" in capsys.readouterr().out
    store = SQLiteStore(env)
    [request_id] = set(delivered.filter(pc.equal(delivered["customer_id"], "12347"))["request_id"])
    shown = [e for e in store.events_of("12347") if e["type"] == "offer_impression"]
    # One impression per delivered offer, with the local engine's idempotent ids.
    assert sorted(e["event_id"] for e in shown) == [f"{request_id}-{rank}" for rank in (1, 2, 3)]
    assert store.event_count() == delivered.num_rows
    # In place: off the record of runs being delivered (nbo.campaigns.recovery).
    assert store.delivering_runs() == []

    # The next recorded campaign the same day, at the same path, is refused: the folder
    # is the record of what was sent (nbo.campaigns.batch.check_replaces_no_delivery).
    assert batch(*selection, "--record", "--out", str(out)) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert pq.read_table(out).equals(first)
    # With --overwrite it reaches nobody (email: one delivery a week) and replaces it,
    # saying when each customer may be sent the next one.
    assert batch(*selection, "--record", "--overwrite", "--out", str(out)) == 0
    second = pq.read_table(out)
    assert None not in second["next_allowed_at"].to_pylist()
    assert set(second["suppressed_reason"].to_pylist()) == {"frequency_cap"}
    assert store.event_count() == delivered.num_rows
    [registered] = store.batch_outputs()
    assert f"{registered.run_id}-12347" in set(second["request_id"].to_pylist())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    store.close()


@needs_spark
def test_a_task_carries_the_runs_settings_not_the_model(sample_models: Path) -> None:
    """What Spark ships with every task is the partition function and the run's spec;
    the executors load the model from the models folder themselves."""
    from pyspark import cloudpickle

    settings = Settings(models_dir=sample_models, clock=CLOCK)
    spec = RunSpec(settings, "email", 10, NOW, False, "run-1")
    shipped = len(cloudpickle.dumps(partial(decide_partition, spec, None)))
    artifact = sum(p.stat().st_size for p in sample_models.rglob("*") if p.is_file())
    assert shipped < 20_000 < artifact / 50


def test_the_engines_flags_are_checked_in_one_line(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.parquet"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine", encoding="utf-8")
    out = str(tmp_path / "a.parquet")
    cases = [
        (["--engine", "spark", "--out", str(tmp_path / "a.csv")], "a folder of Parquet parts"),
        (["--engine", "spark", "--workers", "2", "--out", out], "--workers: only with --engine"),
        (["--partitions", "2", "--out", out], "--partitions: only with --engine spark"),
        (["--engine", "spark", "--partitions", "0", "--out", out], "must be at least 1"),
        (["--engine", "spark", "--spark-conf", "oops", "--out", out], "expected KEY=VALUE"),
        (["--engine", "spark", "--out", str(taken)], "holds more than Parquet parts (notes.txt)"),
        (["--engine", "spark", "--out", str(taken / "notes.txt" / "a.parquet")], "not a folder"),
    ]
    if Path("/proc").is_dir():
        # Writable to root by its permission bits, yet no part can be created there.
        cases.append((["--engine", "spark", "--out", "/proc/a.parquet"], "cannot be written"))
    for args, message in cases:
        assert batch(*args) == 2, args
        err = without_progress(capsys.readouterr().err)
        assert err.count("\n") == 1 and err.startswith("nbo batch: error: "), err
        assert message in err, (message, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.parquet"]


def test_without_java_the_spark_engine_says_so_in_one_line(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert batch("--engine", "spark", "--out", str(tmp_path / "a.parquet")) == 2
    err = without_progress(capsys.readouterr().err)
    assert err.count("\n") == 1 and err.startswith("nbo batch: error: --engine spark: "), err
    assert "no Java found" in err or "PySpark is not installed" in err


@needs_spark
def test_ctrl_c_under_spark_stops_as_the_local_engine_does(
    spark: Any,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while the executors deliver: the local engine's stopping line, once, at
    once; the impressions recorded so far taken back; nothing written; exit 130. Spark
    printed no stopping line (and Java stack traces), its job went on. The executors'
    part is played in-process: the first chunk delivered by a run of the job's spec, then
    the interrupt as ``run_job`` meets it (the stopping line first); ``run_job`` itself is
    tested on a real job below."""
    delivered: list[str] = []

    def interrupted(  # spark_module._decide_on_spark's parameters
        _spark: Any,
        spec: RunSpec,
        stage: str | None,
        chunks: Any,
        _folder: Path,
        _options: SparkOptions,
        _progress: Any = None,
        stopping: Any = None,
    ) -> None:
        run = batch_module.open_run(spec)
        try:
            result = batch_module.decide_chunk(run, chunks[0], stage)
            assert result.recorded > 0
            delivered.extend(chunks[0])
        finally:
            run.store.close()
        if stopping is not None:
            stopping()
        raise KeyboardInterrupt

    monkeypatch.setattr(spark_module, "_decide_on_spark", interrupted)
    out = tmp_path / "campaign.parquet"
    (tmp_path / "ids.txt").write_text("12347\n12348\n12349\n12350\n", encoding="utf-8")
    selection = ["--customers", str(tmp_path / "ids.txt"), "--chunk", "2", "--engine", "spark"]

    assert batch(*selection, "--record", "--out", str(out)) == 130

    lines = capsys.readouterr().err.splitlines()
    stopping = [line for line in lines if line.startswith("nbo batch: stopping: ")]
    assert stopping == [f"nbo batch: {batch_cli.stopping_line(True)}"]
    assert lines[-2:] == [stopping[0], "nbo batch: interrupted"]
    assert delivered == ["12347", "12348"]
    store = SQLiteStore(env)
    try:
        assert impressions_in(store, delivered) == []
        assert store.delivering_runs() == [] and store.batch_outputs() == []
    finally:
        store.close()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@needs_spark
def test_run_job_calls_a_running_job_off_when_interrupted(spark: Any) -> None:
    """The interrupt reaches the wait, not a call into the JVM: the stopping callback
    runs once, the job group is cancelled and its tasks (each asleep for ten minutes)
    have ended when the interrupt goes on."""
    context = spark.sparkContext
    group = "nbo-test-call-off"
    said: list[str] = []
    interrupter = threading.Thread(target=_interrupt_once_running, args=(context, group))
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            spark_module.run_job(
                context,
                group,
                "a job that sleeps",
                lambda: context.parallelize([600, 600], 2).foreach(time.sleep),
                lambda: said.append("stopping"),
            )
    finally:
        interrupter.join()
    assert said == ["stopping"]
    tracker = context.statusTracker()
    assert spark_module._running_tasks(tracker, group) == 0
    jobs = tracker.getJobIdsForGroup(group)
    assert jobs and all(tracker.getJobInfo(job).status == "FAILED" for job in jobs)
    assert not set(jobs) & set(tracker.getActiveJobsIds())


def _interrupt_once_running(context: Any, group: str) -> None:
    """Ctrl-C to the main thread once a task of ``group`` runs."""
    tracker = context.statusTracker()
    while not spark_module._running_tasks(tracker, group):
        time.sleep(0.05)
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def impressions_in(store: Store, customers: list[str]) -> list[str]:
    """The event ids of the impressions ``customers`` were shown, sorted."""
    return sorted(
        str(e["event_id"])
        for c in customers
        for e in store.events_of(c)
        if e["type"] == "offer_impression"
    )


@needs_spark
def test_on_postgresql_spark_delivers_the_local_engines_rows_recording_each_offer_once(
    spark: Any,
    env: Path,
    sample_models: Path,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both engines deliver the same campaign, each on a PostgreSQL store of its own
    holding the same state: the executors open the store from its URL, read the state
    and record the impressions there."""
    ids = [str(c) for c in load_serving_model(sample_models).customers.ids]
    planted = [ids[5], ids[350], ids[700], ids[900]]
    chosen = [*dict.fromkeys([*ids[::4], *planted]), "new-customer-1"]
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    common = ["--customers", str(listed), "--k", "3", "--chunk", "40", "--record"]
    local, distributed = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    with postgres_schema() as spark_url:
        for url in (postgres_url, spark_url):
            plant_state(url, planted)
        monkeypatch.setenv("NBO_STORE_URL", postgres_url)
        assert batch(*common, "--out", str(local)) == 0
        local_line = capsys.readouterr().out
        monkeypatch.setenv("NBO_STORE_URL", spark_url)
        args = [*common, "--engine", "spark", "--partitions", "3"]
        assert batch(*args, "--out", str(distributed)) == 0
        printed = capsys.readouterr().out

        expected, got = pq.read_table(local), pq.read_table(distributed)
        assert got.drop(["request_id"]).equals(expected.drop(["request_id"]))
        assert counts(printed) == counts(local_line)
        assert "no_channel_consent" in set(got["suppressed_reason"].to_pylist())
        assert "new-customer-1" in set(got["customer_id"].to_pylist())
        delivered = got.filter(pc.greater(got["rank"], 0))
        assert delivered.num_rows > 2 * len(chosen)
        assert f"; {delivered.num_rows} impressions recorded" in printed

        # One impression per delivered offer, with the local engine's ids.
        store = open_store(spark_url)
        want = sorted(
            f"{r}-{n}"
            for r, n in zip(
                delivered["request_id"].to_pylist(), delivered["rank"].to_pylist(), strict=True
            )
        )
        recorded = [e for e in impressions_in(store, chosen) if e.startswith("batch-")]
        assert recorded == want
        planted_events = 5
        assert store.event_count() == planted_events + delivered.num_rows
        [registered] = store.batch_outputs()
        assert (registered.path, registered.format) == (str(distributed), PARTS)

        # The same campaign again the same day (replacing the delivered folder, said
        # explicitly): capped for everyone, nothing recorded.
        assert batch(*args, "--overwrite", "--out", str(distributed)) == 0
        again = pq.read_table(distributed)
        reasons = set(again["suppressed_reason"].to_pylist())
        assert reasons <= {"frequency_cap", "no_channel_consent"}, reasons
        assert store.event_count() == planted_events + delivered.num_rows
        store.close()


@pytest.fixture
def partition_runs() -> Iterator[None]:
    """The runs ``decide_partition`` opens in this process, closed after the test."""
    yield
    for _spec, run in spark_module._OPENED:
        run.store.close()
    spark_module._OPENED.clear()


def chunk_rows(chunks: list[list[str]]) -> pa.RecordBatch:
    """A partition's input, as Spark hands it to ``mapInArrow``: one row per chunk."""
    return pa.record_batch({"customer_ids": pa.array(chunks, pa.list_(pa.string()))})


def test_a_partition_opens_the_store_from_its_url_and_reads_each_chunks_state_in_bulk(
    store_url: str,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    partition_runs: None,
) -> None:
    """What a task carries is the run's settings (no store, no connection); the
    partition opens the store from the URL and reads consent, contacts and posted
    purchases with one query each per chunk, never one per customer."""
    settings = Settings(models_dir=models_dir, clock=PLANTED_CLOCK, store_url=store_url)
    spec = RunSpec(settings, "email", 3, settings.now(), False, "run-bulk")
    shipped = pickle.dumps(partial(decide_partition, spec, None))
    assert b"nbo.store" not in shipped and b"psycopg" not in shipped and b"sqlite3" not in shipped

    opened: list[str] = []
    calls: dict[str, int] = {}

    def counted(store: Store, name: str) -> None:
        method = getattr(store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return method(*args, **kwargs)

        setattr(store, name, call)

    def spied_open(url: str) -> Store:
        opened.append(url)
        store = open_store(url)
        for name in ("consents_of", "contacts_of_many", "purchases_of_many", "erased_among"):
            counted(store, name)
        for name in ("consent_of", "contacts_of", "purchases_of"):
            counted(store, name)
        return store

    monkeypatch.setattr(batch_module, "open_store", spied_open)
    ids = [str(c) for c in load_serving_model(models_dir).customers.ids][:30]
    chunks = [ids[0:10], ids[10:20], ids[20:30]]
    out = pa.Table.from_batches(list(decide_partition(spec, None, iter([chunk_rows(chunks)]))))
    assert opened == [store_url]
    assert calls == {
        "consents_of": 3,
        "contacts_of_many": 3,
        "purchases_of_many": 3,
        "erased_among": 3,
    }
    assert out.column("customer_id").unique().to_pylist() == ids
    # A second task in the same Python worker reuses the run: no second store.
    list(decide_partition(spec, None, iter([chunk_rows([ids[:5]])])))
    assert opened == [store_url]


def test_a_delivered_partition_run_again_records_each_offer_once(
    store_url: str, models_dir: Path, partition_runs: None
) -> None:
    """Spark runs a task again when its executor is lost: the second attempt takes back
    what the first recorded, so it decides as the first did (the run's own impressions
    do not cap it) and each offer is recorded once."""
    settings = Settings(models_dir=models_dir, clock=PLANTED_CLOCK, store_url=store_url)
    spec = RunSpec(settings, "email", 3, settings.now(), True, "run-again")
    ids = [str(c) for c in load_serving_model(models_dir).customers.ids][:12]
    chunks = [ids[:6], ids[6:]]

    def attempt() -> pa.Table:
        return pa.Table.from_batches(list(decide_partition(spec, None, iter([chunk_rows(chunks)]))))

    first = attempt()
    delivered = first.filter(pc.greater(first["rank"], 0))
    assert delivered.num_rows == 3 * len(ids)
    store = open_store(store_url)
    want = sorted(f"run-again-{c}-{n}" for c in ids for n in (1, 2, 3))
    assert impressions_in(store, ids) == want
    second = attempt()
    assert second.equals(first)
    assert impressions_in(store, ids) == want
    assert store.event_count() == len(want)
    store.close()


class Py4JJavaError(Exception):
    """Stands for py4j's: its text is the JVM's stack, the system's reason inside it."""


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_spark_write_the_system_refused_is_an_os_error_naming_the_folder(code: int) -> None:
    """A full disk under Spark's parts: 727 lines of Spark's log and a Py4JJavaError
    traceback; it is now the OSError nbo.cli says in one line."""
    out = Path("/campaigns/week.parquet")
    failure = Py4JJavaError(
        "An error occurred while calling o123.parquet.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: ...\n"
        f"Caused by: java.io.IOException: {os.strerror(code)}\n"
        "\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)\n"
    )

    refused = spark_module.write_refused(failure, out)

    assert isinstance(refused, OSError)
    assert (refused.errno, refused.filename) == (code, str(out))


def test_other_spark_failures_stay_as_they_are() -> None:
    failure = Py4JJavaError("java.lang.NullPointerException\n\tat org.apache.spark...")
    assert spark_module.write_refused(failure, Path("/campaigns/week.parquet")) is None
    assert spark_module.write_refused(ValueError("a bug"), Path("/c.parquet")) is None
