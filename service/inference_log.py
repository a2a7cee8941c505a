"""The inference log: every served prediction (sampled), durable, for drift detection.

Format: JSON lines under one directory, files named
``inferences-<UTC start yyyymmddTHHMMSS>-<pid>-<n>.jsonl``. A file is only ever appended to by
the process named in it and never touched again once the next one is opened (rotation by size
or age), so readers can read any file at any time: at worst its last line is incomplete.
One flat JSON object per prediction: ``timestamp`` (ISO-8601 UTC), ``request_id``,
``model_tag``, ``model_version``, ``customer_id``, each contract feature as received,
``churn_probability``, ``will_churn``, ``risk_level``, ``unseen_categories``.

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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from service.json_columns import json_objects, json_texts

logger = logging.getLogger("churn.service.inference_log")

FILE_PATTERN = "inferences-*.jsonl"
# A record is stamped when scored and written a little later (queue); a file opened this long
# after a window's end cannot hold records of it.
QUEUE_MARGIN = pd.Timedelta(minutes=10)
_STOP = object()
MERGE_ROWS = 10_000  # rows gathered before a write, unless the flush comes first


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


class InferenceLogWriter:
    """Background writer with sampling, size/age rotation and a bounded queue.

    ``on_written(n)`` and ``on_dropped(n)`` are called from the writer thread (metrics hooks).
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
        rotate_seconds: float = 3600.0,
        flush_seconds: float = 1.0,
        queue_rows: int = 1_000_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.model_tag, self.model_version = model_tag, model_version
        self.boolean_features = set(boolean_features)
        self.sample_rate = sample_rate
        self.rotate_bytes, self.rotate_seconds = rotate_bytes, rotate_seconds
        self.flush_seconds = flush_seconds
        self.queue_rows = queue_rows
        self.on_written = on_written or (lambda n: None)
        self.on_dropped = on_dropped or (lambda n: None)
        self._rng = np.random.default_rng(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._file = None
        self._file_opened = 0.0
        self._file_bytes = 0
        self._file_count = 0
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
        """Write everything queued, then close the current file. Safe to call twice."""
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
                self._close_file()
                return

    def _write_blocks(self, blocks: list[LogBlock]) -> None:
        try:
            if blocks:
                self._write(blocks)
            if self._file is not None:
                self._file.flush()
                if time.monotonic() - self._file_opened >= self.rotate_seconds:
                    self._close_file()
        except Exception:  # noqa: BLE001 - a bad block must not kill the writer
            logger.exception("could not write %d inference records", sum(map(len, blocks)))
        finally:
            with self._pending_lock:
                self._pending -= sum(map(len, blocks))

    def _write(self, blocks: list[LogBlock]) -> None:
        total = sum(map(len, blocks))
        rows = np.arange(total)
        if self.sample_rate < 1.0:
            rows = rows[self._rng.random(total) < self.sample_rate]
        if len(rows) == 0:
            return
        payload = self._serialise(blocks, rows)
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
        self._file_count += 1
        self.directory.mkdir(parents=True, exist_ok=True)  # it may have been cleaned up
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"inferences-{stamp}-{os.getpid()}-{self._file_count}.jsonl"
        self._file = open(path, "ab")  # noqa: SIM115 - lives until rotation or close
        self._file_opened = time.monotonic()
        self._file_bytes = 0

    def _close_file(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None


def read_inference_log(
    directory: Path, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Records with ``start <= timestamp < end`` (naive datetimes are taken as UTC).

    Returns an empty DataFrame when there are none. An incomplete last line (a file being
    written, or a crash) is skipped; so is any other unreadable line, with a warning.
    """
    directory = Path(directory)
    start_ts = _utc(start)
    end_ts = _utc(end)
    records: list[dict] = []
    for path in sorted(directory.glob(FILE_PATTERN)) if directory.exists() else []:
        opened = _file_start(path)
        if end_ts is not None and opened is not None and opened >= end_ts + QUEUE_MARGIN:
            continue  # opened well after the window: every record in it is too late
        if start_ts is not None and pd.Timestamp(path.stat().st_mtime, unit="s",
                                                 tz="UTC") < start_ts:
            continue  # last written before the window
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                if number != len(lines) - 1:
                    logger.warning("skipping unreadable line %d of %s", number + 1, path)
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records(records)
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    keep = np.ones(len(frame), dtype=bool)
    if start_ts is not None:
        keep &= (stamps >= start_ts).to_numpy()
    if end_ts is not None:
        keep &= (stamps < end_ts).to_numpy()
    frame["timestamp"] = stamps
    return frame.loc[keep].sort_values("timestamp", kind="stable").reset_index(drop=True)


def _utc(moment: datetime | None) -> pd.Timestamp | None:
    if moment is None:
        return None
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _file_start(path: Path) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(datetime.strptime(path.name.split("-")[1], "%Y%m%dT%H%M%S"),
                            tz="UTC")
    except (IndexError, ValueError):
        return None
