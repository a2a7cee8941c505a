"""The inference log's writer: every served prediction (sampled), durable, for drift detection.

The format (file names, fields, what "closed" means) and its readers live in
``kernel.inference_log``, which the monitoring jobs share. The request path only puts a
reference to arrays it already has on a queue; a background thread gathers the blocks of one
flush interval (or ``MERGE_ROWS``), samples, appends them to the file's Arrow stream as one
record batch and flushes, and ``close()`` (called on shutdown and at exit) drains the queue, so a
graceful stop (SIGTERM) loses nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kernel.inference_log import (
    MAX_FLUSH_SECONDS,
    MAX_ROTATE_BYTES,
    MAX_ROTATE_SECONDS,
    TRACK_ENV,
    TRACK_FIELD,
    UNSEALED_CLOSED_AFTER,
    WRITE_BITS,
    log_file_name,
    writer_host,
)
from kernel.store import ModelEntry
from service.config import InferenceLogConfig
from service.metrics import ServiceMetrics
from service.scoring import all_alike

logger = logging.getLogger("churn.service.inference_log")

_STOP = object()
MERGE_ROWS = 10_000  # rows gathered before a write, unless the flush comes first
TIMESTAMP = pa.timestamp("ms", "UTC")
WRITER_NICE = 10  # the writer thread's niceness (0: as the requests; 19: the lowest)
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC: continuation, length 0
# Uncompressed: lz4 (120 B a record) cost the writer 2 ms per 10,000 records on the cores the
# requests need; the compactor makes Parquet of a file within minutes of its closing anyway.
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)  # 258 B a record; JSON lines took 663


@dataclass(frozen=True)
class ShadowScores:
    """The shadow model's answer for the rows of one block, written beside the champion's."""

    version: str
    probability: np.ndarray
    will_churn: np.ndarray
    risk_level: np.ndarray


@dataclass
class LogBlock:
    """Predictions scored together: columns of equal length, plus per-row request ids (or one
    shared by every row: a /predict_batch call), and the shadow's answers once it has scored
    them (``service.shadow``). ``texts``: some of the same columns already held as Arrow text
    (``customer_id`` and categorical features of a body Arrow decoded), written as they are
    instead of converted from Python objects."""

    timestamp: str
    request_ids: Sequence[str] | str
    customer_ids: Sequence[str]
    features: dict[str, np.ndarray]
    probability: np.ndarray
    will_churn: np.ndarray
    risk_level: np.ndarray
    unseen: Sequence[tuple[str, ...]]
    shadow: ShadowScores | None = None
    texts: Mapping[str, pa.Array | pa.ChunkedArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.customer_ids)


def start_inference_log(settings: InferenceLogConfig, entry: ModelEntry, metrics: ServiceMetrics,
                        shadow: bool) -> InferenceLogWriter | None:
    """The served model's inference-log writer as the config says (None when disabled), with
    the pod's track (``CHURN_TRACK``) and, with a shadow, its fields on every record."""
    if not settings.enabled:
        return None
    return InferenceLogWriter(
        settings.resolved_directory(), model_tag=entry.tag, model_version=entry.version,
        boolean_features=entry.contract.boolean, sample_rate=settings.sample_rate,
        rotate_bytes=settings.rotate_bytes, rotate_seconds=settings.rotate_seconds,
        flush_seconds=settings.flush_seconds, queue_rows=settings.queue_rows,
        on_written=metrics.log_records.labels(model_version=entry.version).inc,
        on_dropped=metrics.log_dropped.labels(model_version=entry.version).inc,
        track=os.environ.get(TRACK_ENV) or None, shadow=shadow)


def _epoch_ms(stamp: str) -> int:
    """Milliseconds since the epoch of a ``utc_timestamp()`` (a stamp without offset is UTC)."""
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _yield_cores() -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads one by one), so
    that where it competes for a core with the requests it logs, the requests win; the log
    only has to keep up over a flush interval. Where the system refuses, nothing changes."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not on Linux
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)


def _stream_bytes(schema: pa.Schema, batch: pa.RecordBatch | None = None) -> memoryview:
    """An Arrow IPC stream of ``schema`` (and ``batch``) without its end marker, encoded in
    memory by Arrow: the file gets one write per flush. Arrow writing into the Python file
    itself makes one Python call per buffer (about 50 a batch), each taking the GIL back from
    the request being decoded meanwhile."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=IPC_OPTIONS) as writer:
        if batch is not None:
            writer.write_batch(batch)
    return memoryview(sink.getvalue())[:-len(END_OF_STREAM)]


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _repeated(value: str, n: int) -> pa.Array:
    """A string column of one value, built from its buffers (no n Python references)."""
    text = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(text)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text * n))


def _text_lists(values: Sequence[tuple[str, ...]]) -> pa.Array:
    """Tuples of names as list<string>: usually all the one empty tuple (no unseen category)."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    if not (all_alike(values) and not values[0]):
        lengths = np.fromiter(map(len, values), dtype=np.int32, count=len(values))
        np.cumsum(lengths, out=offsets[1:])
    names = list(itertools.chain.from_iterable(values)) if offsets[-1] else []
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()))


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        track: str | None = None,
        shadow: bool = False,
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
        self.track = track  # written with every record when set
        self.shadow = shadow  # write SHADOW_FIELDS (null where the shadow skipped a batch)
        self.on_written = on_written or (lambda n: None)
        self.on_dropped = on_dropped or (lambda n: None)
        self._rng = np.random.default_rng(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._file = None
        self._schema: pa.Schema | None = None
        self._schema_size = 0
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
        _yield_cores()
        # Blocks are gathered until the next flush (or MERGE_ROWS) and written in one go: a
        # batch costs ~0.5 ms of fixed work whatever its rows, too much per /predict call.
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
        batch = self._batch(blocks, rows)
        if self._file is not None and (self._expired() or self._removed()
                                       or batch.schema != self._schema):
            # Never write to a file past its age, nor to a deleted one; and a stream has one
            # schema (a batch's bytes are cut after the file's own schema).
            self._close_file()
        start = 0
        per_row = max(1.0, batch.nbytes / batch.num_rows)  # in memory; then as written
        while start < batch.num_rows:  # whole records, rotating once a file reaches rotate_bytes
            if self._file is None:
                self._open_file(batch.schema)
            room = self.rotate_bytes - self._file_bytes
            part = batch.slice(start, max(1, int(room / per_row)))
            before = self._file_bytes
            try:
                self._file.write(_stream_bytes(part.schema, part)[self._schema_size:])
            except OSError:
                # Part of a batch may be in the file: a reader stops there, so nothing more
                # goes after it. The next records start a new file.
                self._guarded(self._close_file, "close")
                raise
            self._file_bytes = self._file.tell()
            per_row = max(1.0, (self._file_bytes - before) / part.num_rows)  # as written
            start += part.num_rows
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

    def _batch(self, blocks: list[LogBlock], rows: np.ndarray) -> pa.RecordBatch:
        """The ``rows`` (positions in the blocks, in order) of ``blocks`` as one Arrow batch:
        built from the arrays the request path already has, without a text per value."""
        def column(parts: list[Sequence | np.ndarray]) -> Sequence | np.ndarray:
            if all(isinstance(p, np.ndarray) for p in parts):
                values = np.concatenate(parts) if len(parts) > 1 else parts[0]
                return values if len(rows) == len(values) else values[rows]
            values = list(itertools.chain.from_iterable(parts))
            return values if len(rows) == len(values) else [values[i] for i in rows]

        def text(values: Sequence | np.ndarray) -> pa.Array:
            return pa.array(values, pa.string(), from_pandas=True)

        def held(name: str) -> pa.Array | None:
            """The column as the blocks hold it in Arrow already, if they all do."""
            if not all(name in b.texts for b in blocks):
                return None
            chunks = [c for b in blocks for c in _chunks(b.texts[name])]
            array = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
            return array if len(rows) == len(array) else array.take(pa.array(rows))

        n = len(rows)
        stamps = column([np.full(len(b), _epoch_ms(b.timestamp), dtype=np.int64)
                         for b in blocks])
        fields: dict[str, pa.Array] = {
            "timestamp": pa.array(stamps, TIMESTAMP),
            "model_tag": _repeated(self.model_tag, n),
            "model_version": _repeated(self.model_version, n),
        }
        requests = [b.request_ids for b in blocks]
        if all(isinstance(r, str) for r in requests) and len(set(requests)) == 1:
            fields["request_id"] = _repeated(requests[0], n)  # one /predict_batch call
        else:
            fields["request_id"] = text(column([[r] * len(b) if isinstance(r, str) else r
                                                for b, r in zip(blocks, requests, strict=True)]))
        ids = held("customer_id")
        fields["customer_id"] = ids if ids is not None else text(
            column([b.customer_ids for b in blocks]))
        for name in blocks[0].features:
            if (arrow := held(name)) is not None:
                fields[name] = arrow
                continue
            values = column([b.features[name] for b in blocks])
            if name in self.boolean_features:  # received as 0/1 (NaN: missing)
                fields[name] = pc.not_equal(pa.array(values, pa.float64(), from_pandas=True), 0)
            elif isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
                fields[name] = pa.array(values, pa.float64(), from_pandas=True)
            else:
                fields[name] = text(values)
        fields["churn_probability"] = pa.array(column([b.probability for b in blocks]),
                                               pa.float64())
        fields["will_churn"] = pa.array(column([b.will_churn for b in blocks]), pa.bool_())
        fields["risk_level"] = text(column([b.risk_level for b in blocks]))
        fields["unseen_categories"] = _text_lists(column([b.unseen for b in blocks]))
        if self.track:
            fields[TRACK_FIELD] = _repeated(self.track, n)
        if self.shadow:
            def shadow(part: Callable[[ShadowScores], np.ndarray], missing: object
                       ) -> Sequence | np.ndarray:
                return column([part(b.shadow) if b.shadow is not None
                               else np.full(len(b), missing, dtype=object) for b in blocks])

            fields["shadow_model_version"] = text(column(
                [np.full(len(b), b.shadow.version if b.shadow else None, dtype=object)
                 for b in blocks]))
            fields["shadow_churn_probability"] = pa.array(column(
                [b.shadow.probability if b.shadow is not None else np.full(len(b), np.nan)
                 for b in blocks]), pa.float64(), from_pandas=True)
            fields["shadow_will_churn"] = pa.array(
                shadow(lambda s: s.will_churn.astype(object), None), pa.bool_())
            fields["shadow_risk_level"] = text(shadow(lambda s: s.risk_level.astype(object),
                                                      None))
        return pa.RecordBatch.from_pydict(fields)

    def _open_file(self, schema: pa.Schema) -> None:
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
        header = _stream_bytes(schema)
        self._schema, self._schema_size = schema, len(header)  # a batch's encoding starts so
        self._file.write(header)
        self._file.flush()  # the schema: a reader sees a stream, empty for now
        self._file_bytes = self._file.tell()

    def _close_file(self) -> None:
        """Flush, fsync, seal, close. The file is forgotten even when a step fails, so a
        broken disk cannot keep a file open past its age."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.write(END_OF_STREAM)
            file.flush()
            os.fsync(file.fileno())
            self._seal(file.fileno())
        finally:
            file.close()

    def _seal(self, fd: int) -> None:
        try:
            mode = os.fstat(fd).st_mode
            os.fchmod(fd, stat.S_IMODE(mode) & ~WRITE_BITS)
        except OSError as exc:  # e.g. a volume that ignores modes: closed by age instead
            if not self._seal_failed:
                logger.warning("cannot seal inference log files (%s); a compactor takes them "
                               "as closed %s after they were opened", exc,
                               UNSEALED_CLOSED_AFTER)
                self._seal_failed = True
