"""The campaign files nbo wrote and still manages, and taking a customer out of them.

``nbo batch`` registers every file it finishes in the store (``Store.batch_outputs``).
An erasure rewrites each registered file without the customer's rows, so their offers,
stage and churn risk do not outlive the erasure in a file nbo made; the data export
reads the same files to show what they hold on a customer.

A file is rewritten only when it holds the customer, through a temporary file beside it
renamed over it (never half-written), keeping its format, its schema, its permissions
and every other row. A file nbo cannot rewrite is never an error of the erasure: it is
reported with the reason (missing, unreadable, not writable, or no longer a file nbo
wrote), so the operator knows what is left to clean by hand.

``nbo batch --engine spark`` writes a folder of Parquet parts instead of one file
(registered with the format ``PARTS``): an erasure rewrites, the same way, each part that
holds the customer, and leaves the others as they are.

Rewrites in one folder are serialised by an exclusive ``flock`` on the folder, which
``nbo batch`` also takes to rename a new file into place: two erasures (threads of the
service, or the service and a batch process) never rewrite one file from the same old
copy, and a rewrite never puts an old copy back over a newer campaign.
"""

from __future__ import annotations

import csv
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nbo.campaigns.recovery import clear_dead_partials
from nbo.core.errors import NboError
from nbo.core.outputs import create_private
from nbo.store.base import BatchOutput, Store

FORMATS = {".parquet": "parquet", ".csv": "csv"}
# A folder of Parquet parts, as Spark writes them (``part-00000-...parquet``, in order):
# readers (pyarrow, Spark) skip the names starting with "." or "_" (``_SUCCESS``, checksums,
# an erasure's temporary file).
PARTS = "parquet-parts"
CUSTOMER_ID = "customer_id"
# Rows read and written at a time: a large campaign is rewritten in bounded memory.
_ROWS_PER_BATCH = 65_536

# The columns of a campaign file nbo writes (``nbo batch``), in order.
SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("rank", pa.int32()),
        ("offer_id", pa.string()),
        ("kind", pa.string()),
        ("item_id", pa.string()),
        ("item_name", pa.string()),
        ("title", pa.string()),
        ("incentive", pa.string()),
        ("amount", pa.float64()),
        ("priority", pa.float64()),
        ("propensity", pa.float64()),
        ("value", pa.float64()),
        ("stage_weight", pa.float64()),
        ("lever", pa.float64()),
        ("score", pa.float64()),
        ("reason_source", pa.string()),
        ("reason_because", pa.string()),
        ("reason_text", pa.string()),
        ("stage", pa.string()),
        ("churn_risk", pa.float64()),
        ("best_send_at", pa.string()),
        ("personalized", pa.bool_()),
        ("suppressed_reason", pa.string()),
        # With suppressed_reason frequency_cap: when the channel's cap next allows a
        # delivery (ISO time, as the API's next_allowed_at); null otherwise.
        ("next_allowed_at", pa.string()),
        ("model_version", pa.string()),
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("request_id", pa.string()),
    ]
)


class OutputProblem(NboError):
    """Why a managed file could not be read or rewritten. An erasure reports it in the
    receipt and carries on; it never fails because of a file."""


@dataclass(frozen=True)
class Scrubbed:
    """A managed file an erasure went through (``rows_removed`` may be 0)."""

    path: str
    rows_removed: int


@dataclass(frozen=True)
class Untouched:
    """A managed file an erasure (or an export) could not go through, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class CustomerRows:
    """A managed file's rows of one customer (the data export)."""

    path: str
    written_at: int
    run_id: str
    rows: pa.Table


def format_of(path: Path) -> str:
    """``parquet`` or ``csv``, by the file's suffix (``nbo batch`` checked it)."""
    return FORMATS[path.suffix.lower()]


@contextmanager
def folder_lock(folder: Path) -> Iterator[int]:
    """Hold the exclusive lock on ``folder`` (answers its descriptor, for an fsync). An
    advisory ``flock``: it binds nbo's own writers (batch renames, erasure rewrites),
    in this process and others; closing the descriptor releases it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutputProblem(
            f"unreadable: its folder cannot be opened ({exc.strerror or exc})"
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)


def clear_dead_runs_files(store: Store) -> list[str]:
    """Remove the temporary files of campaign runs that died, in the folders of the
    managed campaign files and where dead delivering runs wrote
    (``nbo.campaigns.recovery.clear_dead_partials``): they hold customers' rows that an
    erasure cannot take anyone out of. Answers the paths removed."""
    folders = [Path(output.path).parent for output in store.batch_outputs()]
    return clear_dead_partials(store, folders)


def erase_from_outputs(store: Store, customer_id: str) -> tuple[list[Scrubbed], list[Untouched]]:
    """Take one customer out of every managed file: the files gone through (with the rows
    removed) and those left untouched (with the reason)."""
    return _take_out(store, customer_id, store.batch_outputs())


def withdraw_from_outputs(
    store: Store, customer_id: str, channels: Collection[str]
) -> tuple[list[Scrubbed], list[Untouched]]:
    """Take a customer who withdrew consent to ``channels`` out of the managed files of
    campaigns on those channels, as an erasure does: a file handed to the sending tool
    (imported again at send time, or not sent yet) must not reach them. Files on other
    channels keep their rows, and so do files registered before nbo kept a file's
    channel (which channel they went out on is not known). The impressions a delivered
    run recorded stay: they are the store's record of what was decided and sent."""
    wanted = set(channels)
    outputs = [o for o in store.batch_outputs() if o.channel is not None and o.channel in wanted]
    return _take_out(store, customer_id, outputs)


def _take_out(
    store: Store, customer_id: str, outputs: list[BatchOutput]
) -> tuple[list[Scrubbed], list[Untouched]]:
    """``customer_id``'s rows out of each of ``outputs``; the files gone through and those
    left untouched, with the reason."""
    scrubbed: list[Scrubbed] = []
    untouched: list[Untouched] = []
    for output in outputs:

        def rewritten(kept: int, path: str = output.path) -> None:
            store.set_batch_output_rows(path, kept)

        try:
            removed = remove_customers(
                Path(output.path), output.format, [customer_id], rewritten=rewritten
            )
        except OutputProblem as problem:
            untouched.append(Untouched(output.path, str(problem)))
            continue
        scrubbed.append(Scrubbed(output.path, removed))
    return scrubbed, untouched


def rows_in_outputs(store: Store, customer_id: str) -> tuple[list[CustomerRows], list[Untouched]]:
    """A customer's rows in every managed file that holds some, and the files that could
    not be read (with the reason). Reads only: no lock, since a rewrite is an atomic
    rename and a reader sees the old file or the new one."""
    found: list[CustomerRows] = []
    unread: list[Untouched] = []
    for output in store.batch_outputs():
        try:
            table = customer_rows(Path(output.path), output.format, customer_id)
        except OutputProblem as problem:
            unread.append(Untouched(output.path, str(problem)))
            continue
        if table.num_rows:
            found.append(CustomerRows(output.path, output.written_at, output.run_id, table))
    return found, unread


def customer_rows(path: Path, fmt: str, customer_id: str) -> pa.Table:
    """The rows of ``customer_id`` in a campaign file (or folder of parts), with the
    file's schema."""
    if fmt == PARTS:
        parts = _parts_in(path)
        found = [customer_rows(part, "parquet", customer_id) for part in parts]
        return pa.concat_tables(found) if found else SCHEMA.empty_table()
    _file_stat(path)
    _check_columns(path, fmt)
    wanted = pa.array([customer_id], pa.string())
    with _reading(path, fmt) as (schema, batches):
        parts = [batch.filter(_matches(batch, wanted)) for batch in batches]
    return pa.Table.from_batches(parts, schema=schema)


def read_batches(
    path: Path, fmt: str, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of a campaign file, or of a folder of parts (part after part), in
    batches of bounded size and with the campaign's column types; OutputProblem when
    it cannot be read."""
    if fmt == PARTS:
        for part in _parts_in(path):
            yield from read_batches(part, "parquet", columns)
        return
    _file_stat(path)
    with _reading(path, fmt, columns) as (_schema, batches):
        yield from batches


@dataclass
class Outcomes:
    """How many customers of a campaign file have offers, and how many have none, per
    reason: each decided customer has a row of rank 1 (with offers) or one row of rank 0
    with the reason (without)."""

    with_offers: int = 0
    without_offers: dict[str, int] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return self.with_offers + sum(self.without_offers.values())

    def add(self, batch: pa.RecordBatch) -> None:
        """Count the customers of ``batch`` (its rank and suppressed_reason columns)."""
        rank = batch.column("rank")
        self.with_offers += int(pc.sum(pc.equal(rank, 1).cast(pa.int64())).as_py() or 0)
        reasons = batch.column("suppressed_reason").filter(pc.equal(rank, 0))
        for entry in pc.value_counts(reasons).to_pylist():
            key = str(entry["values"])
            self.without_offers[key] = self.without_offers.get(key, 0) + entry["counts"]

    def merge(self, other: Outcomes) -> None:
        self.with_offers += other.with_offers
        for reason, count in other.without_offers.items():
            self.without_offers[reason] = self.without_offers.get(reason, 0) + count


def remove_customers(
    path: Path,
    fmt: str,
    customer_ids: Collection[str],
    rewritten: Callable[[int], None] | None = None,
    removed: Outcomes | None = None,
) -> int:
    """Rewrite a campaign file without the rows of ``customer_ids``; answers the rows
    removed (0, and the file untouched, when it holds none of them). ``rewritten`` is
    called with the rows kept, under the folder's lock, once the new file is in place;
    ``removed`` counts the customers taken out (a batch's summary leaves them out).
    Raises OutputProblem, saying why, for a file that cannot be rewritten."""
    wanted = pa.array(sorted(set(customer_ids)), pa.string())
    if fmt == PARTS:
        return _remove_from_parts(path, wanted, rewritten, removed)
    _file_stat(path)
    folder = path.parent
    with folder_lock(folder) as descriptor:
        # Again under the lock: the file may have changed since.
        status = _file_stat(path)
        _check_columns(path, fmt)
        if _count(path, fmt, wanted) == 0:
            return 0
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputProblem("not writable: its folder is read-only")
        if not os.access(path, os.W_OK):
            raise OutputProblem("not writable: the file is read-only")
        rows, kept = _rewrite(path, fmt, wanted, stat.S_IMODE(status.st_mode), removed)
        os.fsync(descriptor)  # the rename itself is durable
        if rewritten is not None:
            rewritten(kept)
        return rows


def _remove_from_parts(
    folder: Path,
    wanted: pa.Array,
    rewritten: Callable[[int], None] | None,
    removed: Outcomes | None,
) -> int:
    """``remove_customers`` for a folder of parts: every part is checked before any is
    rewritten (a part nbo cannot rewrite leaves the whole folder as it was), then each
    part that holds one of ``wanted`` is rewritten like a file; the others are left as
    they are. Under the lock of the folder's parent, which a batch takes to put a new
    folder in place."""
    _parts_in(folder)
    with folder_lock(folder.parent):
        parts = _parts_in(folder)  # again under the lock
        counts = []
        for part in parts:
            _check_columns(part, "parquet")
            counts.append(_count(part, "parquet", wanted))
        if sum(counts) == 0:
            return 0
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputProblem("not writable: its folder of parts is read-only")
        if any(n and not os.access(part, os.W_OK) for part, n in zip(parts, counts, strict=True)):
            raise OutputProblem("not writable: a part is read-only")
        rows = kept = 0
        for part, n in zip(parts, counts, strict=True):
            if n == 0:
                kept += _rows_in(part)
                continue
            mode = stat.S_IMODE(part.stat().st_mode)
            gone, left = _rewrite(part, "parquet", wanted, mode, removed)
            rows += gone
            kept += left
            # Hadoop's checksum of the old part: a reader that checks it would refuse the new one.
            with suppress(OSError):
                part.with_name(f".{part.name}.crc").unlink(missing_ok=True)
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)  # the renames inside the folder are durable
        finally:
            os.close(descriptor)
        if rewritten is not None:
            rewritten(kept)
        return rows


def _parts_in(folder: Path) -> list[Path]:
    """The Parquet parts of a folder nbo wrote, in their order (their names'), or
    OutputProblem when no readable folder is at the path."""
    status = _status(folder, "the folder of parts")
    if not stat.S_ISDIR(status.st_mode):
        raise OutputProblem("not a folder: something other than a folder of parts is at the path")
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise OutputProblem(f"unreadable: {exc.strerror or exc}") from None
    parts = [folder / name for name in names if is_part(name)]
    for part in parts:
        _file_stat(part)
    return parts


def is_part(name: str) -> bool:
    """A Parquet part of a folder of parts (not a marker, checksum or temporary file)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _rows_in(part: Path) -> int:
    try:
        return int(pq.ParquetFile(part).metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise OutputProblem(f"unreadable: not a parquet file nbo can read ({exc})") from None


def _rewrite(
    path: Path, fmt: str, wanted: pa.Array, mode: int, removed: Outcomes | None = None
) -> tuple[int, int]:
    """Write the file's rows except ``wanted``'s to a temporary file beside it, flush it
    to disk and rename it over the file: (rows removed, rows kept); ``removed`` counts
    the customers taken out, once the new file is in place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.erasing")
    rows = kept = 0
    taken = Outcomes()
    try:
        with _reading(path, fmt) as (schema, batches):
            # Never readable by others meanwhile; the file's own mode once complete.
            create_private(temporary)
            writer: pq.ParquetWriter | pacsv.CSVWriter = (
                pq.ParquetWriter(temporary, schema)
                if fmt == "parquet"
                else pacsv.CSVWriter(temporary, schema)
            )
            try:
                for batch in batches:
                    hit = _matches(batch, wanted)
                    rows += int(pc.sum(hit.cast(pa.int64())).as_py() or 0)
                    if removed is not None:
                        taken.add(batch.filter(hit))
                    rest = batch.filter(pc.invert(hit))
                    kept += rest.num_rows
                    if rest.num_rows:
                        writer.write_batch(rest)
            finally:
                writer.close()
        os.chmod(temporary, mode)
        _fsync_file(temporary)
        os.replace(temporary, path)
        if removed is not None:
            removed.merge(taken)
    except PermissionError:
        raise OutputProblem("not writable: permission denied") from None
    except (OSError, pa.ArrowException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OutputProblem(f"not writable: {reason}") from None
    finally:
        # Best effort: a leftover holds no row of the customers it was removing.
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
    return rows, kept


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _status(path: Path, what: str) -> os.stat_result:
    """The status of what is at the path (``what`` names it in the message), or
    OutputProblem when nothing readable is there."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise OutputProblem(f"missing: {what} no longer exists") from None
    except NotADirectoryError:
        raise OutputProblem("missing: its folder is no longer a folder") from None
    except PermissionError:
        raise OutputProblem("unreadable: permission denied") from None
    except OSError as exc:
        raise OutputProblem(f"unreadable: {exc.strerror or exc}") from None


def _file_stat(path: Path) -> os.stat_result:
    """The file's status, or OutputProblem when nothing readable is at the path."""
    status = _status(path, "the file")
    if not stat.S_ISREG(status.st_mode):
        raise OutputProblem("not a file: something other than a file is at the path")
    return status


def _check_columns(path: Path, fmt: str) -> None:
    """A file without a customer_id column is not a campaign nbo wrote: left alone."""
    if CUSTOMER_ID not in _column_names(path, fmt):
        raise OutputProblem(f"not written by nbo: no {CUSTOMER_ID} column")


def _column_names(path: Path, fmt: str) -> list[str]:
    try:
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        with path.open(newline="", encoding="utf-8") as lines:
            header = next(csv.reader(lines), None)
    except PermissionError:
        raise OutputProblem("unreadable: permission denied") from None
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise OutputProblem(f"unreadable: not a {fmt} file nbo can read ({exc})") from None
    if header is None:
        raise OutputProblem("unreadable: the file is empty")
    return header


def _count(path: Path, fmt: str, wanted: pa.Array) -> int:
    """Rows of ``wanted`` in the file, reading its customer_id column only."""
    count = 0
    with _reading(path, fmt, columns=[CUSTOMER_ID]) as (_schema, batches):
        for batch in batches:
            count += int(pc.sum(_matches(batch, wanted).cast(pa.int64())).as_py() or 0)
    return count


def _matches(batch: pa.RecordBatch, wanted: pa.Array) -> pa.Array:
    """True on the rows of ``wanted`` (never on a null id: those rows stay)."""
    column = batch.column(CUSTOMER_ID)
    if not pa.types.is_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.fill_null(pc.is_in(column, value_set=wanted), False)


@contextmanager
def _reading(
    path: Path, fmt: str, columns: list[str] | None = None
) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """The file's schema and its rows in batches; a file that cannot be opened or read
    raises OutputProblem (errors of the caller's own work pass through unchanged)."""
    schema, batches, close = _open(path, fmt, columns)
    try:
        yield schema, _guarded(batches)
    finally:
        close()


def _open(
    path: Path, fmt: str, columns: list[str] | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch], Callable[[], None]]:
    """CSV is read with the campaign's column types (other columns as text) and
    pyarrow's own null convention, so a rewrite writes every other row back exactly as
    it was."""
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            if columns is not None:
                schema = pa.schema([schema.field(name) for name in columns])
            batches = parquet.iter_batches(batch_size=_ROWS_PER_BATCH, columns=columns)
            return schema, batches, parquet.close
        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=_csv_types(_column_names(path, fmt)),
                include_columns=columns,
                # As pyarrow writes them: an empty field is null, a quoted "" is "".
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        return reader.schema, iter(reader), reader.close
    except PermissionError:
        raise OutputProblem("unreadable: permission denied") from None
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise OutputProblem(f"unreadable: not a {fmt} file nbo can read ({exc})") from None


def _guarded(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Batches whose read errors (a corrupt block half-way) become OutputProblem."""
    try:
        yield from batches
    except (pa.ArrowException, OSError) as exc:
        raise OutputProblem(f"unreadable: {exc}") from None


def _csv_types(names: list[str]) -> dict[str, pa.DataType]:
    known = {field.name: field.type for field in SCHEMA}
    return {name: known.get(name, pa.string()) for name in names}
