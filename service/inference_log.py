"""The inference log: every served prediction (sampled), durable, for drift detection.

Files live in one folder that many writers may share (N pods with 1-2 workers each on one
ReadWriteMany volume), named ``inferences-<UTC start yyyymmddTHHMMSS>-<host>-<pid>-<n>.jsonl``:
the host (``$POD_NAME``, else the host name) and pid tell writers apart, ``n`` counts a
writer's files, and a name is created exclusively (``O_EXCL``), so two writers never share a
file even with equal host, pid and second. Names without a host (``...-<pid>-<n>.jsonl``,
written before hosts were added) stay readable. One flat JSON object per line: ``timestamp``
(ISO-8601 UTC), ``request_id``, ``model_tag``, ``model_version``, ``customer_id``, each
contract feature as received, ``churn_probability``, ``will_churn``, ``risk_level``,
``unseen_categories``.

**Closing** (what lets a compactor know a file is closed for sure): a writer never writes to a
file ``rotate_seconds`` or more after opening it (checked right before every write), closes it
within ``flush_seconds`` after that (checked on every flush tick, with or without traffic), and
on closing flushes, fsyncs and *seals* it: ``chmod a-w``. ``rotate_seconds`` and
``flush_seconds`` are capped (``MAX_ROTATE_SECONDS``, ``MAX_FLUSH_SECONDS``). So a file is
closed when it is sealed, or when its name stamp is older than ``UNSEALED_CLOSED_AFTER`` (the
caps plus a clock margin): that covers a writer that died before sealing.

**Compaction** (``monitoring/log_retention.py``) turns a closed file into a Parquet twin with
the same stem (``.parquet``), whose modification time is copied from the JSON file. The reader
reads both forms into the same DataFrame and, when both exist (a compaction interrupted after
its rename), reads only the Parquet twin, so no record counts twice.

The request path only puts a reference to arrays it already has on a queue; a background thread
gathers the blocks of one flush interval (or ``MERGE_ROWS``), samples, serialises them
column-wise (``service.json_columns``) and writes, and ``close()`` (called on shutdown and at
exit) drains the queue, so a graceful stop (SIGTERM) loses nothing.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from service.json_columns import json_objects, json_texts

logger = logging.getLogger("churn.service.inference_log")

PREFIX = "inferences-"
JSON_SUFFIX = ".jsonl"
PARQUET_SUFFIX = ".parquet"
FILE_PATTERN = f"{PREFIX}*{JSON_SUFFIX}"
POD_NAME_ENV = "POD_NAME"
# Writer settings are capped so that "closed" can be known from a file's age alone.
MAX_ROTATE_SECONDS = 3600
MAX_FLUSH_SECONDS = 60
MAX_ROTATE_BYTES = 2**30  # a file is parsed in one Arrow block, which must stay below 2 GiB
# Stamps come from the writers' clocks, modification times from the volume's: allow for skew.
CLOCK_MARGIN = timedelta(minutes=5)
UNSEALED_CLOSED_AFTER = timedelta(seconds=MAX_ROTATE_SECONDS + MAX_FLUSH_SECONDS) + CLOCK_MARGIN
# A record is stamped when scored and written a little later (queue); a file opened this long
# after a window's end cannot hold records of it.
QUEUE_MARGIN = pd.Timedelta(minutes=10)
_STOP = object()
MERGE_ROWS = 10_000  # rows gathered before a write, unless the flush comes first
_NAME = re.compile(
    rf"^{PREFIX}(?P<stamp>\d{{8}}T\d{{6}})-(?:(?P<host>.+)-)?(?P<pid>\d+)-(?P<number>\d+)"
    rf"(?P<suffix>{re.escape(JSON_SUFFIX)}|{re.escape(PARQUET_SUFFIX)})$"
)
_UNSAFE_HOST = re.compile(r"[^A-Za-z0-9._-]")
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class InferenceLogError(ValueError):
    """A log file cannot be read as inference records (names the file and the reason)."""


@dataclass
class LogBlock:
    """Predictions scored together: columns of equal length, plus per-row request ids."""

    timestamp: str
    request_ids: Sequence[str]
    customer_ids: Sequence[str]
    features: dict[str, np.ndarray]
    probability: np.ndarray
    will_churn: np.ndarray
    risk_level: np.ndarray
    unseen: Sequence[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.customer_ids)


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- file names -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFileName:
    """The parts of a log file's name. ``host`` is empty for names written before hosts."""

    stem: str
    opened: datetime
    host: str
    pid: int
    number: int
    form: Literal["jsonl", "parquet"]

    @classmethod
    def parse(cls, name: str) -> LogFileName | None:
        """The parts of ``name``, or None when it is not a log file's name."""
        match = _NAME.match(name)
        if match is None:
            return None
        try:
            opened = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return None
        suffix = match["suffix"]
        return cls(stem=name.removesuffix(suffix), opened=opened, host=match["host"] or "",
                   pid=int(match["pid"]), number=int(match["number"]),
                   form="jsonl" if suffix == JSON_SUFFIX else "parquet")


def log_file_name(opened: datetime, host: str, pid: int, number: int) -> str:
    """The JSON-lines file name a writer on ``host`` with ``pid`` gives its ``number``-th file."""
    return f"{PREFIX}{opened.astimezone(UTC):%Y%m%dT%H%M%S}-{host}-{pid}-{number}{JSON_SUFFIX}"


def writer_host() -> str:
    """``$POD_NAME`` if set, else the host name (a pod's name in Kubernetes), with anything but
    letters, digits, ``.``, ``_`` and ``-`` replaced, so the name stays one path segment."""
    host = os.environ.get(POD_NAME_ENV) or socket.gethostname() or "unknown-host"
    return _UNSAFE_HOST.sub("_", host)


def is_sealed(mode: int) -> bool:
    """A file whose writer closed it: nobody may write to it (see the module docstring)."""
    return mode & _WRITE_BITS == 0


# -- writer -----------------------------------------------------------------------------------
class InferenceLogWriter:
    """Background writer with sampling, size/age rotation and a bounded queue.

    ``on_written(n)`` and ``on_dropped(n)`` are called from the writer thread (metrics hooks).
    Raises ValueError when ``rotate_seconds``/``flush_seconds``/``rotate_bytes`` exceed the caps
    that the compactor relies on.
    """

    def __init__(
        self,
        directory: Path,
        *,
        model_tag: str,
        model_version: str,
        boolean_features: Sequence[str] = (),
        sample_rate: float = 1.0,
        rotate_bytes: int = 64 * 2**20,
        rotate_seconds: float = 300.0,
        flush_seconds: float = 1.0,
        queue_rows: int = 1_000_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        seed: int | None = None,
        host: str | None = None,
    ) -> None:
        if not 0 < rotate_seconds <= MAX_ROTATE_SECONDS:
            raise ValueError(f"rotate_seconds must be in (0, {MAX_ROTATE_SECONDS}]: "
                             f"{rotate_seconds}")
        if not 0 < flush_seconds <= MAX_FLUSH_SECONDS:
            raise ValueError(f"flush_seconds must be in (0, {MAX_FLUSH_SECONDS}]: "
                             f"{flush_seconds}")
        if not 0 < rotate_bytes <= MAX_ROTATE_BYTES:
            raise ValueError(f"rotate_bytes must be in (0, {MAX_ROTATE_BYTES}]: {rotate_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.model_tag, self.model_version = model_tag, model_version
        self.boolean_features = set(boolean_features)
        self.sample_rate = sample_rate
        self.rotate_bytes, self.rotate_seconds = rotate_bytes, rotate_seconds
        self.flush_seconds = flush_seconds
        self.queue_rows = queue_rows
        self.host = host or writer_host()
        self.on_written = on_written or (lambda n: None)
        self.on_dropped = on_dropped or (lambda n: None)
        self._rng = np.random.default_rng(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._file = None
        self._path: Path | None = None
        self._file_opened = 0.0
        self._file_bytes = 0
        self._file_count = 0
        self._seal_failed = False
        self.written = 0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- request path -------------------------------------------------------------------
    def log(self, block: LogBlock) -> None:
        """Queue a block; never blocks. Rows beyond the queue bound are dropped and counted."""
        n = len(block)
        if self._closed or self.sample_rate <= 0 or n == 0:
            return
        with self._pending_lock:
            if self._pending + n > self.queue_rows:
                self.dropped += n
                full = True
            else:
                self._pending += n
                full = False
        if full:
            self.on_dropped(n)
            return
        self._queue.put(block)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then close (and seal) the current file. Safe to call
        twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("inference log writer did not finish within %.0f s", timeout)

    # -- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        # Blocks are gathered until the next flush (or MERGE_ROWS) and written in one go: the
        # column-wise JSON costs ~1 ms per call whatever the rows, too much per /predict call.
        blocks: list[LogBlock] = []
        rows = 0
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, LogBlock):
                blocks.append(item)
                rows += len(item)
            if item is _STOP or rows >= MERGE_ROWS or time.monotonic() >= deadline:
                self._write_blocks(blocks)
                blocks, rows = [], 0
                deadline = time.monotonic() + self.flush_seconds
            if item is _STOP:
                self._guarded(self._close_file, "close")
                return

    def _write_blocks(self, blocks: list[LogBlock]) -> None:
        try:
            if blocks:
                self._write(blocks)
        except Exception:  # noqa: BLE001 - a bad block must not kill the writer
            logger.exception("could not write %d inference records", sum(map(len, blocks)))
        finally:
            with self._pending_lock:
                self._pending -= sum(map(len, blocks))
        # Apart from the write, even after a failed one: the closing promise must hold.
        self._guarded(self._flush_or_rotate, "flush")

    def _guarded(self, step: Callable[[], None], what: str) -> None:
        try:
            step()
        except Exception:  # noqa: BLE001 - the writer thread must live on
            logger.exception("could not %s inference log file %s", what, self._path)

    def _flush_or_rotate(self) -> None:
        if self._file is None:
            return
        if self._expired():
            self._close_file()
        else:
            self._file.flush()

    def _expired(self) -> bool:
        return time.monotonic() - self._file_opened >= self.rotate_seconds

    def _write(self, blocks: list[LogBlock]) -> None:
        total = sum(map(len, blocks))
        rows = np.arange(total)
        if self.sample_rate < 1.0:
            rows = rows[self._rng.random(total) < self.sample_rate]
        if len(rows) == 0:
            return
        payload = self._serialise(blocks, rows)
        if self._file is not None and (self._expired() or self._removed()):
            self._close_file()  # never write to a file past its age, nor to a deleted one
        start = 0
        while start < len(payload):  # whole lines, rotating once a file reaches rotate_bytes
            if self._file is None:
                self._open_file()
            end = payload.find(b"\n", start + self.rotate_bytes - self._file_bytes - 1) + 1
            end = end or len(payload)
            self._file.write(payload[start:end])
            self._file_bytes += end - start
            start = end
            if self._file_bytes >= self.rotate_bytes:
                self._close_file()
        self.written += len(rows)
        self.on_written(len(rows))

    def _removed(self) -> bool:
        """The open file was deleted (by hand, or a compactor misconfigured): writes to it
        would be lost, so the next records go to a new file."""
        if os.fstat(self._file.fileno()).st_nlink > 0:
            return False
        logger.error("inference log file %s was deleted while open; writing to a new file",
                     self._path)
        return True

    def _serialise(self, blocks: list[LogBlock], rows: np.ndarray) -> bytes:
        def column(parts: list[Sequence | np.ndarray]) -> Sequence | np.ndarray:
            if all(isinstance(p, np.ndarray) for p in parts):
                values = np.concatenate(parts) if len(parts) > 1 else parts[0]
                return values if len(rows) == len(values) else values[rows]
            values = list(itertools.chain.from_iterable(parts))
            return values if len(rows) == len(values) else [values[i] for i in rows]

        stamps = {b.timestamp for b in blocks}
        fields: dict[str, pa.StringArray | str] = {
            "timestamp": orjson.dumps(*stamps).decode() if len(stamps) == 1 else json_texts(
                column([[b.timestamp] * len(b) for b in blocks])),
            "model_tag": orjson.dumps(self.model_tag).decode(),
            "model_version": orjson.dumps(self.model_version).decode(),
            "request_id": json_texts(column([b.request_ids for b in blocks])),
            "customer_id": json_texts(column([b.customer_ids for b in blocks])),
        }
        for name in blocks[0].features:
            fields[name] = json_texts(column([b.features[name] for b in blocks]),
                                      boolean=name in self.boolean_features)
        fields["churn_probability"] = json_texts(column([b.probability for b in blocks]))
        fields["will_churn"] = json_texts(column([b.will_churn for b in blocks]))
        fields["risk_level"] = json_texts(column([b.risk_level for b in blocks]))
        fields["unseen_categories"] = json_texts(column([b.unseen for b in blocks]))
        return json_objects(fields, "\n")

    def _open_file(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)  # it may have been cleaned up
        opened = datetime.now(UTC)
        while True:
            self._file_count += 1
            path = self.directory / log_file_name(opened, self.host, os.getpid(),
                                                  self._file_count)
            try:
                self._file = open(path, "xb")  # noqa: SIM115 - lives until rotation or close
                break
            except FileExistsError:  # same host, pid and second: a restarted container
                continue
        self._path = path
        self._file_opened = time.monotonic()
        self._file_bytes = 0

    def _close_file(self) -> None:
        """Flush, fsync, seal, close. The file is forgotten even when a step fails, so a
        broken disk cannot keep a file open past its age."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.flush()
            os.fsync(file.fileno())
            self._seal(file.fileno())
        finally:
            file.close()

    def _seal(self, fd: int) -> None:
        try:
            mode = os.fstat(fd).st_mode
            os.fchmod(fd, stat.S_IMODE(mode) & ~_WRITE_BITS)
        except OSError as exc:  # e.g. a volume that ignores modes: closed by age instead
            if not self._seal_failed:
                logger.warning("cannot seal inference log files (%s); a compactor takes them "
                               "as closed %s after they were opened", exc,
                               UNSEALED_CLOSED_AFTER)
                self._seal_failed = True


# -- the folder -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFile:
    """One log file under its stem: JSON lines, its Parquet twin, or both (an interrupted
    compaction; the twin is complete and is what is read)."""

    name: LogFileName
    json_path: Path | None
    parquet_path: Path | None
    size: int  # bytes of both forms
    modified: datetime  # no record in the file is stamped later (up to CLOCK_MARGIN of skew)
    sealed: bool  # the JSON form was closed by its writer (always True for Parquet only)

    @property
    def stem(self) -> str:
        return self.name.stem

    def closed(self, now: datetime) -> bool:
        """No writer will append to it any more (see the module docstring)."""
        return self.parquet_path is not None or self.sealed or (
            now - self.name.opened >= UNSEALED_CLOSED_AFTER)


def list_log_files(directory: Path) -> list[LogFile]:
    """Every log file of ``directory`` by stem, oldest name first; other files are ignored.
    A file deleted while listing is left out."""
    directory = Path(directory)
    forms: dict[str, dict[str, tuple[Path, os.stat_result]]] = {}
    names: dict[str, LogFileName] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = LogFileName.parse(entry.name)
        if name is None:
            continue
        try:
            info = entry.stat()
        except FileNotFoundError:
            continue
        forms.setdefault(name.stem, {})[name.form] = (Path(entry.path), info)
        names.setdefault(name.stem, name)
    files = []
    for stem in sorted(forms):
        found = forms[stem]
        json_form, parquet_form = found.get("jsonl"), found.get("parquet")
        infos = [info for _, info in found.values()]
        files.append(LogFile(
            name=names[stem], json_path=json_form[0] if json_form else None,
            parquet_path=parquet_form[0] if parquet_form else None,
            size=sum(i.st_size for i in infos),
            modified=datetime.fromtimestamp(max(i.st_mtime for i in infos), UTC),
            sealed=json_form is None or is_sealed(json_form[1].st_mode),
        ))
    return files


# -- reading ----------------------------------------------------------------------------------
def read_inference_log(
    directory: Path, start: datetime | None = None, end: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Records with ``start <= timestamp < end`` (naive datetimes are taken as UTC), sorted by
    timestamp, from JSON-lines and Parquet files alike; ``columns`` (plus ``timestamp``) limits
    what is loaded. Returns an empty DataFrame when there are none.

    Files that cannot hold records of the window are skipped by name stamp and modification
    time without being opened. An incomplete last line (a file being written, or a crash) is
    skipped; so is any other unreadable line, with a warning. Raises InferenceLogError for a
    file that cannot be read at all.
    """
    start_ts, end_ts = _utc(start), _utc(end)
    tables = []
    for log_file in files_in_window(directory, start, end):
        table = read_log_file(log_file, columns)
        if table is not None:
            table = _in_window(table, start_ts, end_ts)
            if table.num_rows:
                tables.append(table)
    if not tables:
        return pd.DataFrame()
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InferenceLogError(f"{directory}: files disagree on a field's type: {exc}") from exc
    return records_frame(table)


def files_in_window(directory: Path, start: datetime | None = None,
                    end: datetime | None = None) -> list[LogFile]:
    """The log files that may hold records of ``[start, end)``, oldest first, judged by name
    stamp and modification time without opening them (what ``read_inference_log`` reads, and
    the partitions of ``churn drift --dask``)."""
    start_ts, end_ts = _utc(start), _utc(end)
    return [log_file for log_file in list_log_files(directory)
            # opened well after the window: every record in it is too late
            if not (end_ts is not None and log_file.name.opened >= end_ts + QUEUE_MARGIN)
            # last written before the window
            and not (start_ts is not None and log_file.modified < start_ts - CLOCK_MARGIN)]


def read_window(log_file: LogFile, start: datetime | None, end: datetime | None,
                columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The records of one file with ``start <= timestamp < end``, as ``read_inference_log``
    returns them (one partition of a window)."""
    table = read_log_file(log_file, columns)
    if table is None:
        return pd.DataFrame()
    table = _in_window(table, _utc(start), _utc(end))
    return records_frame(table) if table.num_rows else pd.DataFrame()


def read_log_file(log_file: LogFile, columns: Sequence[str] | None = None) -> pa.Table | None:
    """One file's records as an Arrow table (``timestamp`` as timestamp[ns, UTC]), the same
    for a JSON-lines file and its Parquet twin; None when it holds none or vanished (a
    compactor or retention run removed it meanwhile)."""
    paths = [p for p in (log_file.parquet_path, log_file.json_path) if p is not None]
    if log_file.json_path is not None:  # replaced by its twin since the listing?
        paths.append(log_file.json_path.with_suffix(PARQUET_SUFFIX))
    for path in paths:
        try:
            if path.suffix == PARQUET_SUFFIX:
                return _read_parquet(path, columns)
            table = json_lines_table(path.read_bytes(), str(path))
        except FileNotFoundError:
            continue
        if table is not None and columns is not None:
            table = table.select([c for c in table.column_names
                                  if c == "timestamp" or c in columns])
        return table
    return None


def json_lines_table(data: bytes, source: str) -> pa.Table | None:
    """Parse JSON lines into Arrow with the types the values have (strings stay strings; the
    ``timestamp`` field becomes timestamp[ns, UTC]). None when there is no record.
    Raises InferenceLogError naming ``source`` when the lines cannot form one table."""
    complete = data[:data.rfind(b"\n") + 1]
    tail = data[len(complete):]
    if tail.strip() and _is_record(tail):  # last line whole, only its newline missing
        complete = data + b"\n"
    if not complete.strip():
        return None
    try:
        table = _parse_json_lines(complete)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        lines = complete.split(b"\n")
        good = []
        for number, line in enumerate(lines, start=1):
            if line.strip() and _is_record(line):
                good.append(line)
            elif line.strip():
                logger.warning("skipping unreadable line %d of %s", number, source)
        if not good:
            return None
        try:
            table = _parse_json_lines(b"\n".join(good) + b"\n")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InferenceLogError(f"{source}: records disagree on a field's type: "
                                    f"{exc}") from exc
    return _with_timestamps(table, source)


def _parse_json_lines(data: bytes, text: dict[str, pa.DataType] | None = None) -> pa.Table:
    from pyarrow import json as arrow_json

    text = {"timestamp": pa.string(), **(text or {})}
    # One block: one type inference for the whole file (blocks may disagree otherwise).
    block = min(max(len(data) + 1, 1 << 20), 2**31 - 1)
    table = arrow_json.read_json(
        pa.BufferReader(data), read_options=arrow_json.ReadOptions(block_size=block),
        parse_options=arrow_json.ParseOptions(explicit_schema=pa.schema(list(text.items())),
                                              unexpected_field_behavior="infer"))
    # JSON has no date type: Arrow guesses one for strings that look like dates ("2025-01-01"
    # as a customer id or category). Such fields were text: read them again as text.
    dated = {f.name: _text_type(f.type) for f in table.schema
             if f.name not in text and _text_type(f.type) is not None}
    return _parse_json_lines(data, {**text, **dated}) if dated else table


def _text_type(kind: pa.DataType) -> pa.DataType | None:
    """The type to read a field as when Arrow took its text (or its list's) for dates."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pa.string()
    if pa.types.is_list(kind) and _text_type(kind.value_type) is not None:
        return pa.list_(pa.string())
    return None


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _with_timestamps(table: pa.Table, source: str) -> pa.Table:
    if "timestamp" not in table.column_names:
        raise InferenceLogError(f"{source}: records have no timestamp field")
    index = table.column_names.index("timestamp")
    text = table.column(index)
    try:
        stamps = pc.cast(text, pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Stamps without an offset (taken as UTC) or unreadable ones (dropped, counted).
        parsed = pd.to_datetime(text.to_pandas(), utc=True, format="ISO8601", errors="coerce")
        stamps = pa.array(parsed, pa.timestamp("ns", "UTC"))
        bad = int(stamps.null_count) - int(text.null_count)
        if bad:
            logger.warning("skipping %d records of %s with an unreadable timestamp", bad,
                           source)
    table = table.set_column(index, "timestamp", stamps)
    return table.filter(pc.is_valid(table.column("timestamp")))


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pa.Table:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    wanted = None if columns is None else [c for c in names
                                           if c == "timestamp" or c in columns]
    return parquet.read(columns=wanted)


def _in_window(table: pa.Table, start: pd.Timestamp | None,
               end: pd.Timestamp | None) -> pa.Table:
    stamps = table.column("timestamp")
    keep = None
    if start is not None:
        keep = pc.greater_equal(stamps, pa.scalar(start, stamps.type))
    if end is not None:
        before = pc.less(stamps, pa.scalar(end, stamps.type))
        keep = before if keep is None else pc.and_(keep, before)
    return table if keep is None else table.filter(keep)


def records_frame(table: pa.Table) -> pd.DataFrame:
    """The DataFrame of records: pandas' own types (object for text and for booleans with
    gaps, float64 for numbers with gaps), lists as lists, sorted by timestamp (stable)."""
    lists = [f.name for f in table.schema
             if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    frame = table.drop_columns(lists).to_pandas(split_blocks=True)
    for name in lists:  # Arrow gives numpy arrays; JSON readers expect lists
        frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object)
    frame = frame[table.column_names]
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _utc(moment: datetime | None) -> pd.Timestamp | None:
    if moment is None:
        return None
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
