"""`churn score --dask`: the same scoring as `churn score`, one task per table partition on a
Dask cluster, written as partitioned Parquet all or nothing.

Every task scores its rows with ``service.scoring.Scorer`` and ``score_chunks``, the code the
service and the single-process command run (validation by the contract, the compiled numpy
preprocessor, the stored threshold and risk cut-offs), so a row scores the same whichever way
it is scored. The model travels to the workers with the tasks (``PortableModel``, scattered
once), so workers need the code and its libraries, not the model store.

Tasks write their part files into temporary folders beside the destinations and return only
counts; the client renames the folders into place once every task succeeded (rejects first,
then scores), so a failed task, a lost scheduler or Ctrl-C leaves the previous output as it was.
Not packed into the Bento (bentofile.yaml excludes it; dask is not a serving dependency).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from kernel.cluster import peak_rss_bytes
from kernel.contract import DataContract
from kernel.model import ChurnModel
from kernel.partitions import (
    PART_NAME,
    TablePiece,
    discard_folder,
    output_folder,
    piece_rows,
    plan_pieces,
    publish_folder,
    read_piece,
    table_files,
    temporary_folder,
)
from kernel.store import EntryMetadata, ModelEntry
from service.scoring import Scorer, ScoreReport, score_chunks

if TYPE_CHECKING:
    import pyarrow as pa
    from distributed import Client

log = logging.getLogger("churn.service.dask_scoring")


@dataclass(frozen=True)
class PortableModel:
    """The parts of a model entry a worker needs, picklable (a ``ModelEntry`` holds a BentoML
    handle, a ``Scorer`` compiled code objects). ``Scorer`` takes it in place of the entry."""

    tag: str
    version: str
    contract: DataContract
    model: ChurnModel
    metadata: EntryMetadata

    @classmethod
    def of(cls, entry: ModelEntry) -> PortableModel:
        return cls(entry.tag, entry.version, entry.contract, entry.model, entry.metadata)


_SCORERS: dict[str, Scorer] = {}  # per worker process: built once per model, not per task


def worker_scorer(model: PortableModel) -> Scorer:
    scorer = _SCORERS.get(model.tag)
    if scorer is None:
        scorer = _SCORERS[model.tag] = Scorer(model)  # type: ignore[arg-type]
    return scorer


@dataclass
class PieceReport:
    """What one task did (returned to the client instead of the rows)."""

    index: int
    scored: int = 0
    rejected: int = 0
    high_risk: int = 0
    worker: str = ""
    peak_rss_bytes: int = 0


@dataclass
class DaskScoreReport(ScoreReport):
    partitions: int = 0
    worker_peak_rss: dict[str, int] = field(default_factory=dict)  # worker -> bytes

    @property
    def max_worker_peak_rss(self) -> int:
        return max(self.worker_peak_rss.values(), default=0)


def scores_schema(scorer: Scorer) -> pa.Schema:
    """One schema for every part: the probability keeps the type the model returns (float32
    for XGBoost), as in the single-process output, even in a part without valid rows."""
    import numpy as np
    import pyarrow as pa

    probability = pa.float64()
    if scorer.builder is not None:
        probe = scorer.model.predict_proba_matrix(np.zeros((1, scorer.builder.width)))
        probability = pa.from_numpy_dtype(np.asarray(probe).dtype)
    return pa.schema([(scorer.contract.row_key, pa.string()), ("churn_probability", probability),
                      ("will_churn", pa.bool_()), ("risk_level", pa.string()),
                      ("unseen_categories", pa.string()), ("model_version", pa.string()),
                      ("model_tag", pa.string())])


def rejects_schema(piece: TablePiece, contract: DataContract) -> pa.Schema:
    """The input file's columns (CSV: all text) + ``row`` without an id + ``reject_reason``:
    the same for every part, so the folder reads as one table."""
    import pyarrow as pa

    if piece.kind == "parquet":
        import pyarrow.parquet as pq

        fields = list(pq.read_schema(piece.path))
    else:
        import csv

        with open(piece.path, newline="") as handle:
            header = next(csv.reader(handle))
        fields = [pa.field(name, pa.string()) for name in header]
    names = {f.name for f in fields}
    extra = [c for c in ("row", "reject_reason")
             if c not in names and (c == "reject_reason" or contract.id is None)]
    return pa.schema([*fields, *[pa.field(c, pa.string()) for c in extra]])


class _PartWriter:
    """One Parquet part file, opened on the first chunk."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema, self._writer = path, schema, None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def score_piece(index: int, piece: TablePiece, first_row: int, model: PortableModel,
                scores_dir: str, rejects_dir: str, chunk_rows: int) -> PieceReport:
    """The task: score one piece ``chunk_rows`` at a time into its own part files."""
    scorer = worker_scorer(model)
    name = PART_NAME.format(index)
    scores = _PartWriter(Path(scores_dir) / name, scores_schema(scorer))
    rejects = _PartWriter(Path(rejects_dir) / name, rejects_schema(piece, scorer.contract))
    report = PieceReport(index=index, worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        for scored, rejected in score_chunks(read_piece(piece, chunk_rows), scorer,
                                             first_row=first_row):
            scores.write(scored)
            if len(rejected):
                rejects.write(rejected)
            report.scored += len(scored)
            report.rejected += len(rejected)
            report.high_risk += int((scored["risk_level"] == "HIGH").sum())
    finally:
        scores.close()
        rejects.close()
    report.peak_rss_bytes = peak_rss_bytes()
    return report


def _first_rows(client: Client, pieces: list[TablePiece], contract: DataContract,
                files: list[Path]) -> list[int]:
    """Position of each piece's first row in the whole table: only needed when rows are keyed
    by position (no id column). Parquet knows its row counts; CSV pieces count their lines on
    the workers."""
    needed = contract.id is None or any(
        p.suffix.lower() == ".csv" and contract.id not in _csv_header(p) for p in files)
    if not needed or all(p.rows is not None for p in pieces):
        counts = [p.rows or 0 for p in pieces]
    else:
        counts = client.gather(client.map(piece_rows, pieces, pure=False))
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts


def _csv_header(path: Path) -> list[str]:
    import csv

    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def score_on_dask(
    client: Client, source: str, output: str, rejects: str, entry: ModelEntry, *,
    partition_rows: int, partition_bytes: int, chunk_rows: int,
    on_progress: Callable[[PieceReport, int, int], None] | None = None,
) -> DaskScoreReport:
    """Score every row of ``source`` (file, folder or glob of CSV/Parquet) on the cluster into
    the folders ``output`` and ``rejects`` (partitioned Parquet, replaced only when all parts
    are written). ``on_progress(report, done, total)`` follows each finished piece.
    Raises IngestError (bad input or output) or the first task's error; nothing is published
    then."""
    from distributed import as_completed

    scores_folder, rejects_folder = output_folder(output), output_folder(rejects)
    files = table_files(source)
    pieces = plan_pieces(files, partition_rows, partition_bytes)
    model = PortableModel.of(entry)
    report = DaskScoreReport(partitions=len(pieces))
    scores_temp = rejects_temp = None
    futures = []
    try:
        scores_temp = temporary_folder(scores_folder)
        rejects_temp = temporary_folder(rejects_folder)
        first_rows = _first_rows(client, pieces, model.contract, files)
        shipped = client.scatter(model, broadcast=True, hash=False)
        futures = [client.submit(score_piece, index, piece, first, shipped, str(scores_temp),
                                 str(rejects_temp), chunk_rows, pure=False)
                   for index, (piece, first) in enumerate(zip(pieces, first_rows, strict=True))]
        for done, future in enumerate(as_completed(futures), start=1):
            piece_report: PieceReport = future.result()  # re-raises the task's error
            report.chunks += 1
            report.scored += piece_report.scored
            report.rejected += piece_report.rejected
            report.high_risk += piece_report.high_risk
            worker = piece_report.worker
            report.worker_peak_rss[worker] = max(report.worker_peak_rss.get(worker, 0),
                                                 piece_report.peak_rss_bytes)
            if on_progress:
                on_progress(piece_report, done, len(pieces))
        if report.rejected == 0:  # an empty rejects table says "checked, none" explicitly
            pd.DataFrame({"reject_reason": pd.Series(dtype=str)}).to_parquet(
                rejects_temp / PART_NAME.format(0), index=False)
        report.rows = report.scored + report.rejected
        # Scores last: new scores in place imply their rejects are too.
        publish_folder(rejects_temp, rejects_folder)
        rejects_temp = None
        publish_folder(scores_temp, scores_folder)
        scores_temp = None
    finally:
        if futures:
            client.cancel(futures)
        discard_folder(scores_temp)
        discard_folder(rejects_temp)
    return report
