"""`churn score`: offline batch scoring with the served model and the same validation."""

from __future__ import annotations

import typer

from kernel.cluster import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PARTITION_BYTES,
    DEFAULT_PARTITION_ROWS,
    SCHEDULER_ENV,
)

DATA_HELP = ("CSV or Parquet path, or a SQLAlchemy URL with a table or query after '#', "
             "e.g. sqlite:///.churn/data/customers.db#customers")


def score(
    input: str = typer.Option(..., "--input", help=DATA_HELP),
    output: str = typer.Option(..., "--output", help="Where to write the scores: .csv, "
                               ".parquet or a SQLAlchemy URL '#table' (e.g. "
                               "postgresql://user@host/db#scores). Replaced only once every "
                               "row is written; on failure the old one is left as it was."),
    rejects: str | None = typer.Option(None, "--rejects", help="Where rows that break the "
                                       "contract go, with reject_reason (default: beside "
                                       "--output, named <output>.rejects.<ext>)."),
    model: str | None = typer.Option(
        None, "--model", help="Model store tag name:version (or name for its champion); default "
        "$CHURN_MODEL_TAG, else the champion of the only dataset in the store."),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows", min=1,
                                   help="Rows per chunk; memory stays bounded by it."),
    dask: str | None = typer.Option(
        None, "--dask", envvar=SCHEDULER_ENV, metavar="[ADDRESS]",
        help="Score on Dask: --dask alone (or 'local') starts a LocalCluster sized to this "
        "machine (a worker per CPU, 1 thread, 80% of memory shared out); --dask "
        "tcp://host:8786 uses a running scheduler whose workers see the same paths. --input "
        "may then be a folder or glob of CSV/Parquet files; --output is a folder of "
        "partitioned Parquet (rejects beside it, <output>.rejects). docs/scale.md."),
    dask_timeout: float = typer.Option(DEFAULT_CONNECT_TIMEOUT, "--dask-timeout", min=0.1,
                                       help="Seconds to wait for the Dask scheduler to "
                                       "answer; then exit 2 with nothing written."),
    partition_rows: int = typer.Option(
        DEFAULT_PARTITION_ROWS, "--partition-rows", min=1,
        help="With --dask: at most this many rows per task (Parquet row groups are packed up "
        "to it; a row group is never split)."),
    partition_bytes: int = typer.Option(
        DEFAULT_PARTITION_BYTES, "--partition-bytes", min=1024,
        help="With --dask: at most this many bytes per task (CSV: a byte range of a file; "
        "Parquet: uncompressed row-group bytes)."),
) -> None:
    """Score a whole customer table in chunks. Every output row carries the model version;
    rows that break the data contract go to the rejects file with the reason, never dropped.
    All or nothing: scores and rejects are written to a temporary file or staging table and
    replace the destinations only at the end."""
    from kernel.store import resolve_entry
    from service.scoring import Scorer
    from service.table_scoring import count_rows, rejects_beside, score_table

    entry = resolve_entry(model)
    if dask:
        _score_on_dask(input, output, rejects, entry, dask, dask_timeout, partition_rows,
                       partition_bytes, chunk_rows)
        return
    label, scorer = f"scoring with {entry.tag}", Scorer(entry)
    rejects = rejects or rejects_beside(output)
    total = count_rows(input)  # known up front for Parquet (footer) and CSV (lines)
    if total:
        with typer.progressbar(length=total, label=label, show_pos=True) as bar:
            report, scores_at, rejects_at = score_table(input, output, rejects, scorer,
                                                        chunk_rows, on_chunk=bar.update)
    else:  # a SQL source: rows so far, a line per chunk
        seen = [0]

        def progress(rows: int) -> None:
            seen[0] += rows
            typer.echo(f"{label}: {seen[0]:,} rows", err=True)

        report, scores_at, rejects_at = score_table(input, output, rejects, scorer,
                                                    chunk_rows, on_chunk=progress)
    typer.echo(f"scored {report.scored} of {report.rows} rows with {entry.tag} "
               f"({report.high_risk} HIGH) -> {scores_at}")
    typer.echo(f"rejected {report.rejected} rows (contract broken) -> {rejects_at}")


def _score_on_dask(input: str, output: str, rejects: str | None, entry, address: str,
                   timeout: float, partition_rows: int, partition_bytes: int,
                   chunk_rows: int) -> None:
    from kernel.cluster import dask_client, describe
    from kernel.partitions import output_folder
    from service.dask_scoring import score_on_dask

    rejects = rejects or f"{output_folder(output)}.rejects"
    output_folder(rejects)  # a bad destination fails before a cluster is started
    # Connected first: an unreachable scheduler fails in seconds, before anything is written.
    with dask_client(address, timeout=timeout) as client:
        label = f"scoring with {entry.tag} on {describe(address)}"
        with typer.progressbar(length=1, label=label, show_pos=True) as bar:
            def advance(piece, done: int, total: int) -> None:
                bar.length = total
                bar.update(1)

            report = score_on_dask(client, input, output, rejects, entry,
                                   partition_rows=partition_rows,
                                   partition_bytes=partition_bytes, chunk_rows=chunk_rows,
                                   on_progress=advance)
    typer.echo(f"scored {report.scored} of {report.rows} rows with {entry.tag} "
               f"({report.high_risk} HIGH) -> {output} ({report.partitions} partitions)")
    typer.echo(f"rejected {report.rejected} rows (contract broken) -> {rejects}")
    typer.echo(f"peak memory per worker: {report.max_worker_peak_rss / 2**20:.0f} MiB (max of "
               f"{len(report.worker_peak_rss)} workers)")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("score")(score)
