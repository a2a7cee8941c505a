"""`churn drift --dask`: the current data counted on a Dask cluster, one task per partition.

Partitions are the inference-log files that may hold records of the window
(``kernel.inference_log.files_in_window``: Arrow streams, JSON lines of older writers, or their
compacted Parquet twins, each read whole by one task and filtered to the window), or, for
``--current`` files, the table pieces of ``kernel.partitions``. Each task types and checks its
rows by the contract and rescores stale ones exactly as ``prepare_current`` does for all rows at
once, then returns:

- ``DriftStatistics`` of its rows (counts per reference bin and per value, sums), which merge
  exactly, so PSI, missing and unseen shares and the prediction distribution cover every row;
- a uniform sample: every row draws a random key, the task keeps its ``sample_rows`` smallest,
  and the client keeps the ``sample_rows`` smallest of all: a uniform sample without
  replacement of the whole window, bounded whatever its size, on which Evidently runs.

So the client holds at most the sample and one partition's result at a time, and a worker one
partition (one log file, at most ``MAX_ROTATE_BYTES`` of JSON) or one chunk of a table piece.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kernel.cluster import peak_rss_bytes
from kernel.contract import DataContract
from kernel.inference_log import LogFile, files_in_window, read_window
from kernel.model import ChurnModel
from kernel.partitions import TablePiece, plan_pieces, read_piece, table_files
from kernel.store import PROBABILITY_COLUMN, ModelEntry
from monitoring.drift import prepare_current
from monitoring.drift_statistics import DriftStatistics, reference_edges

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("churn.monitoring.dask_drift")
SAMPLE_KEY = "__sample_key"


@dataclass(frozen=True)
class DriftModel:
    """What a task needs (picklable): the contract, the model for rescoring, the reference's
    bin edges and the decision threshold of the estimate."""

    contract: DataContract
    model: ChurnModel
    version: str
    edges: dict[str, np.ndarray]
    threshold: float


@dataclass(frozen=True)
class LogPartition:
    log_file: LogFile
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class TablePartition:
    piece: TablePiece
    chunk_rows: int


@dataclass
class PartitionCounts:
    """One task's answer: counts, a bounded sample with its keys, and what it ignored."""

    statistics: DriftStatistics | None = None
    sample: pd.DataFrame | None = None
    rejected: int = 0
    rescored: int = 0
    worker: str = ""
    peak_rss_bytes: int = 0


@dataclass
class CurrentOnDask:
    """All partitions merged: counts of every row, the uniform sample, the totals."""

    statistics: DriftStatistics
    sample: pd.DataFrame
    rejected: int
    rescored: int
    partitions: int
    worker_peak_rss: dict[str, int] = field(default_factory=dict)


def _frames(partition: LogPartition | TablePartition, contract: DataContract
            ) -> Iterator[pd.DataFrame]:
    if isinstance(partition, LogPartition):
        # Only what drift needs: the features, the logged probability and who scored it.
        columns = [*contract.features, PROBABILITY_COLUMN, "model_version"]
        yield read_window(partition.log_file, partition.start, partition.end, columns)
    else:
        yield from read_piece(partition.piece, partition.chunk_rows)


def _smallest_keys(sample: pd.DataFrame, rows: int) -> pd.DataFrame:
    if len(sample) <= rows:
        return sample
    return sample.nsmallest(rows, SAMPLE_KEY, keep="first")


def count_partition(index: int, partition: LogPartition | TablePartition, model: DriftModel,
                    sample_rows: int, seed: int) -> PartitionCounts:
    """The task: type, check and (re)score one partition's rows; count them; sample them."""
    rng = np.random.default_rng([seed, index])
    counts = PartitionCounts(worker=f"{socket.gethostname()}:{os.getpid()}")
    for raw in _frames(partition, model.contract):
        if raw.empty:
            continue
        prepared = prepare_current(raw, model.contract, model.model, model.version)
        counts.rejected += prepared.rejected_rows
        counts.rescored += prepared.rescored_rows
        frame = prepared.frame
        if frame.empty:
            continue
        statistics = DriftStatistics.of(frame, model.contract, model.edges, model.threshold)
        counts.statistics = (statistics if counts.statistics is None
                             else counts.statistics.merge(statistics))
        frame[SAMPLE_KEY] = rng.random(len(frame))
        sample = frame if counts.sample is None else pd.concat([counts.sample, frame],
                                                               ignore_index=True)
        counts.sample = _smallest_keys(sample, sample_rows)
    counts.peak_rss_bytes = peak_rss_bytes()
    return counts


def log_partitions(log_dir, start: datetime, end: datetime) -> list[LogPartition]:
    return [LogPartition(f, start, end) for f in files_in_window(log_dir, start, end)]


def table_partitions(source: str, partition_rows: int, partition_bytes: int,
                     chunk_rows: int) -> list[TablePartition]:
    pieces = plan_pieces(table_files(source), partition_rows, partition_bytes)
    return [TablePartition(piece, chunk_rows) for piece in pieces]


def current_on_dask(client: Client, entry: ModelEntry,
                    partitions: list[LogPartition | TablePartition], *, psi_bins: int,
                    sample_rows: int, seed: int = 0) -> CurrentOnDask:
    """Count every current row of ``partitions`` on the cluster and draw the uniform sample
    (see the module docstring). Raises the first task's error (an unreadable file, a contract
    column missing from the log)."""
    from distributed import as_completed

    contract = entry.contract
    reference = entry.reference
    model = DriftModel(contract=contract, model=entry.model, version=entry.version,
                       edges=reference_edges(reference, contract, psi_bins),
                       threshold=entry.metadata.threshold)
    shipped = client.scatter(model, broadcast=True, hash=False) if partitions else None
    futures = [client.submit(count_partition, index, partition, shipped, sample_rows, seed,
                             pure=False) for index, partition in enumerate(partitions)]
    statistics, sample = None, None
    rejected = rescored = 0
    peaks: dict[str, int] = {}
    try:
        for future in as_completed(futures):
            counts: PartitionCounts = future.result()
            future.release()  # the client keeps the merged result, not every partition's
            rejected += counts.rejected
            rescored += counts.rescored
            peaks[counts.worker] = max(peaks.get(counts.worker, 0), counts.peak_rss_bytes)
            if counts.statistics is None:
                continue
            statistics = (counts.statistics if statistics is None
                          else statistics.merge(counts.statistics))
            sample = _smallest_keys(counts.sample if sample is None else pd.concat(
                [sample, counts.sample], ignore_index=True), sample_rows)
    finally:
        client.cancel(futures)
    columns = [*contract.features, PROBABILITY_COLUMN]
    if statistics is None:  # no row in the window: "insufficient data" downstream
        statistics = DriftStatistics(rows=0, missing={}, bins={}, values={})
        sample = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    # Sorted by key: the same rows in the same order whichever task finished first.
    sample = sample.sort_values(SAMPLE_KEY, kind="stable").reset_index(drop=True)
    return CurrentOnDask(statistics=statistics, sample=sample[columns], rejected=rejected,
                         rescored=rescored, partitions=len(partitions), worker_peak_rss=peaks)
