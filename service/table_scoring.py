"""`churn score` in one process: a whole table scored in chunks, all or nothing.

``score_table`` reads the source in chunks (``kernel.ingest.iter_table``), validates and scores
each (``service.scoring.score_chunks``: the contract's rules, rejects with their reason) and
writes scores and rejects through ``TableWriter``s, which replace their destinations only once
everything was written. Not part of the server (``bentofile.yaml`` leaves it out): the service
scores requests, this scores tables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from service.scoring import Scorer, ScoreReport, score_chunks


def rejects_beside(output: str) -> str:
    """Where the rejects go by default: ``x.rejects.csv`` beside ``x.csv``, a ``_rejects``
    table beside a SQL table."""
    if "://" in output:
        url, _, table = output.partition("#")
        return f"{url}#{table}_rejects"
    stem, dot, ext = output.rpartition(".")
    return f"{stem}.rejects.{ext}" if dot else f"{output}.rejects"


def count_rows(source: str) -> int | None:
    """Rows of a Parquet file (its footer) or a CSV file (a fast newline count; an estimate
    if fields hold line breaks), None for SQL."""
    path = Path(source)
    if "://" in source or not path.is_file():
        return None
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - the real read reports a proper error
            return None
    if path.suffix.lower() != ".csv":
        return None
    with path.open("rb") as handle:
        lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 22), b""))
    return max(lines - 1, 0) or None


def score_table(source: str, output: str, rejects: str, scorer: Scorer, chunk_rows: int,
                on_chunk: Callable[[int], None] = lambda rows: None) -> tuple[ScoreReport,
                                                                              str, str]:
    """Score ``source`` into ``output`` (rejects into ``rejects``), calling ``on_chunk(rows)``
    after each chunk. Returns the report and the two destinations as they may be shown
    (passwords masked). Raises before anything is replaced when a step fails."""
    import pandas as pd

    from kernel.ingest import TableWriter, iter_table

    report = ScoreReport()
    # Opened (connected, folder created) before the first row is read: an unreachable or
    # unwritable destination fails in seconds, not after the whole table was scored.
    with TableWriter(output) as scored_out, TableWriter(rejects) as rejects_out:
        for scored, rejected in score_chunks(iter_table(source, chunk_rows), scorer):
            scored_out.write(scored)
            if len(rejected):
                rejects_out.write(rejected)
            report.chunks += 1
            report.scored += len(scored)
            report.rejected += len(rejected)
            report.high_risk += int((scored["risk_level"] == "HIGH").sum())
            on_chunk(len(scored) + len(rejected))
        if not rejects_out.started:  # an empty rejects table says "checked, none" explicitly
            rejects_out.write(pd.DataFrame({"reject_reason": pd.Series(dtype=str)}))
        # Scores last: new scores in place imply their rejects are too.
        rejects_out.commit()
        scored_out.commit()
    report.rows = report.scored + report.rejected
    return report, scored_out.shown, rejects_out.shown
