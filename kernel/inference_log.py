"""The inference log's format, shared by its writer (the service) and its readers (drift,
performance, retention, Dask, the drill): file names, what "closed" means, and reading.

Every served prediction (sampled) is one record. Files live in one folder that many writers may
share (N pods with 1-2 workers each on one ReadWriteMany volume), named
``inferences-<UTC start yyyymmddTHHMMSS>-<host>-<pid>-<n>.arrows``: the host (``$POD_NAME``, else
the host name) and pid tell writers apart, ``n`` counts a writer's files, and a name is created
exclusively (``O_EXCL``), so two writers never share a file even with equal host, pid and
second. Names without a host (``...-<pid>-<n>.jsonl``, written before hosts were added) stay
readable. A writer appends one Arrow IPC stream per file (``.arrows``): a schema, then one record
batch per flush, typed from the contract (``record_schema``); writers before it wrote one flat
JSON object per line (``.jsonl``), which every reader still reads. A record: ``timestamp``
(UTC), ``request_id``,
``model_tag``, ``model_version``, ``customer_id``, each contract feature as received,
``churn_probability``, ``will_churn``, ``risk_level``, ``unseen_categories`` (``RECORD_FIELDS``
around the features). A pod that knows its track (``CHURN_TRACK``: stable or canary, from its
label) adds ``track``; a service with a shadow model adds ``SHADOW_FIELDS``: the shadow's
version, probability, decision and risk level for the same customer (null for a batch the shadow
skipped), the pairs ``churn shadow analyze`` judges.

**Closing** (what lets a compactor know a file is closed for sure): a writer never writes to a
file ``rotate_seconds`` or more after opening it (checked right before every write), closes it
within ``flush_seconds`` after that (checked on every flush tick, with or without traffic), and
on closing flushes, fsyncs and *seals* it: ``chmod a-w``. ``rotate_seconds`` and
``flush_seconds`` are capped (``MAX_ROTATE_SECONDS``, ``MAX_FLUSH_SECONDS``). So a file is
closed when it is sealed, or when its name stamp is older than ``UNSEALED_CLOSED_AFTER`` (the
caps plus a clock margin): that covers a writer that died before sealing.

Why Arrow and not JSON lines: formatting every value as text cost the writer thread 31-43 ms of
CPU per 10,000 records, taken from the same two cores as the requests it logs; an Arrow batch of
the same records costs about 3 ms (docs/benchmarks.md).

**Compaction** (``monitoring/log_retention.py``) turns a closed file into a Parquet twin with
the same stem (``.parquet``), whose modification time is copied from the written file. The
reader reads every form into the same DataFrame and, when a written file and its twin both
exist (a compaction interrupted after its rename), reads only the Parquet twin, so no record
counts twice.

The writer is ``service.inference_log.InferenceLogWriter``. This module imports only the
standard library, numpy, pandas, pyarrow and orjson: it is packed into the Bento.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger("churn.inference_log")

# A record: these fields, the contract's features between the two groups.
IDENTITY_FIELDS = ("timestamp", "request_id", "model_tag", "model_version", "customer_id")
PREDICTION_FIELDS = ("churn_probability", "will_churn", "risk_level", "unseen_categories")
RECORD_FIELDS = IDENTITY_FIELDS + PREDICTION_FIELDS
TRACK_FIELD = "track"
SHADOW_FIELDS = ("shadow_model_version", "shadow_churn_probability", "shadow_will_churn",
                 "shadow_risk_level")
TRACK_ENV = "CHURN_TRACK"

PREFIX = "inferences-"
JSON_SUFFIX = ".jsonl"  # written by writers before ARROW_SUFFIX; still read and compacted
ARROW_SUFFIX = ".arrows"  # an Arrow IPC stream, what writers write
PARQUET_SUFFIX = ".parquet"
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
_NAME = re.compile(
    rf"^{PREFIX}(?P<stamp>\d{{8}}T\d{{6}})-(?:(?P<host>.+)-)?(?P<pid>\d+)-(?P<number>\d+)"
    rf"(?P<suffix>{re.escape(JSON_SUFFIX)}|{re.escape(ARROW_SUFFIX)}|{re.escape(PARQUET_SUFFIX)})$"
)
LogForm = Literal["jsonl", "arrows", "parquet"]
WRITTEN_FORMS: tuple[LogForm, ...] = ("arrows", "jsonl")  # what writers append to
_FORMS: dict[str, LogForm] = {JSON_SUFFIX: "jsonl", ARROW_SUFFIX: "arrows",
                              PARQUET_SUFFIX: "parquet"}
_UNSAFE_HOST = re.compile(r"[^A-Za-z0-9._-]")
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class InferenceLogError(ValueError):
    """A log file cannot be read as inference records (names the file and the reason)."""


# -- file names -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFileName:
    """The parts of a log file's name. ``host`` is empty for names written before hosts."""

    stem: str
    opened: datetime
    host: str
    pid: int
    number: int
    form: LogForm

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
                   form=_FORMS[suffix])


def log_file_name(opened: datetime, host: str, pid: int, number: int) -> str:
    """The file name a writer on ``host`` with ``pid`` gives its ``number``-th file."""
    return f"{PREFIX}{opened.astimezone(UTC):%Y%m%dT%H%M%S}-{host}-{pid}-{number}{ARROW_SUFFIX}"


def writer_host() -> str:
    """``$POD_NAME`` if set, else the host name (a pod's name in Kubernetes), with anything but
    letters, digits, ``.``, ``_`` and ``-`` replaced, so the name stays one path segment."""
    host = os.environ.get(POD_NAME_ENV) or socket.gethostname() or "unknown-host"
    return _UNSAFE_HOST.sub("_", host)


def is_sealed(mode: int) -> bool:
    """A file whose writer closed it: nobody may write to it (see the module docstring)."""
    return mode & WRITE_BITS == 0


# -- the folder -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFile:
    """One log file under its stem: as its writer wrote it (an Arrow stream, or JSON lines
    from older writers), its Parquet twin, or both (an interrupted compaction; the twin is
    complete and is what is read)."""

    name: LogFileName
    written_path: Path | None
    parquet_path: Path | None
    size: int  # bytes of both forms
    modified: datetime  # no record in the file is stamped later (up to CLOCK_MARGIN of skew)
    sealed: bool  # the written form was closed by its writer (always True for Parquet only)

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
        written = next((found[f] for f in WRITTEN_FORMS if f in found), None)
        parquet_form = found.get("parquet")
        infos = [info for _, info in found.values()]
        files.append(LogFile(
            name=names[stem], written_path=written[0] if written else None,
            parquet_path=parquet_form[0] if parquet_form else None,
            size=sum(i.st_size for i in infos),
            modified=datetime.fromtimestamp(max(i.st_mtime for i in infos), UTC),
            sealed=written is None or is_sealed(written[1].st_mode),
        ))
    return files


# -- reading ----------------------------------------------------------------------------------
def read_inference_log(
    directory: Path, start: datetime | None = None, end: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Records with ``start <= timestamp < end`` (naive datetimes are taken as UTC), sorted by
    timestamp, from Arrow, JSON-lines and Parquet files alike; ``columns`` (plus ``timestamp``)
    limits what is loaded. Returns an empty DataFrame when there are none.

    Files that cannot hold records of the window are skipped by name stamp and modification
    time without being opened. An incomplete last batch or line (a file being written, or a
    crash) is skipped; so is any other unreadable JSON line, with a warning. Raises
    InferenceLogError for a file that cannot be read at all.
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
    for a written file and its Parquet twin; None when it holds none or vanished (a
    compactor or retention run removed it meanwhile)."""
    paths = [p for p in (log_file.parquet_path, log_file.written_path) if p is not None]
    if log_file.written_path is not None:  # replaced by its twin since the listing?
        paths.append(log_file.written_path.with_suffix(PARQUET_SUFFIX))
    for path in paths:
        try:
            if path.suffix == PARQUET_SUFFIX:
                return _read_parquet(path, columns)
            table = written_table(path)
        except FileNotFoundError:
            continue
        if table is not None and columns is not None:
            table = table.select([c for c in table.column_names
                                  if c == "timestamp" or c in columns])
        return table
    return None


def written_table(path: Path) -> pa.Table | None:
    """The records of a file as its writer wrote it (Arrow stream or JSON lines), typed as
    ``read_log_file`` returns them; None when it holds none. Raises FileNotFoundError."""
    data = path.read_bytes()
    if path.suffix == ARROW_SUFFIX:
        return arrow_stream_table(data, str(path))
    return json_lines_table(data, str(path))


def arrow_stream_table(data: bytes, source: str) -> pa.Table | None:
    """The record batches of an Arrow IPC stream, up to the first incomplete one (a file being
    written, or a crash: skipped, with a warning if it is not just the end not yet written).
    None when there is no record. Raises InferenceLogError when not even the schema reads."""
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        if len(data) < 8:  # opened, schema not yet flushed
            return None
        raise InferenceLogError(f"{source}: not an Arrow stream: {exc}") from exc
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            logger.warning("skipping the incomplete last batch of %s", source)
            break
    table = pa.Table.from_batches(batches, reader.schema)
    if table.num_rows == 0:
        return None
    return _with_timestamps(table, source)


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
    if pa.types.is_timestamp(text.type):  # an Arrow stream's
        return table.set_column(index, "timestamp", pc.cast(text, pa.timestamp("ns", "UTC")))
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
