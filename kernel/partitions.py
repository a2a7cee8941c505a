"""A table of files as partitions of bounded size, and partitioned Parquet output published
all or nothing: what `--dask` jobs read and write.

Input: one CSV or Parquet file, a folder of them, or a glob (``customers/*.parquet``), read in
sorted path order (so a row's position in the table is well defined for tables without an id).

Partitions (``TablePiece``) are bounded twice (docs/scale.md):
- Parquet: consecutive row groups of one file, packed while the piece stays within
  ``partition_rows`` rows and ``partition_bytes`` uncompressed bytes. A row group is never
  split, so a file written as one huge row group is one piece (rewrite it with smaller groups);
- CSV: byte ranges of ``partition_bytes`` of one file, cut at line ends (so a quoted field with
  a line break inside cannot be split safely: a piece that reads a different number of records
  than it has lines says so).
Inside a piece rows are read ``chunk_rows`` at a time, so a task's memory is bounded by the
chunk (plus, for CSV, the piece's bytes), not by the table.

Output: part files written by the tasks into a temporary folder beside the destination, which
``publish_folder`` renames into place once every part is written.
"""

from __future__ import annotations

import glob
import io
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from kernel.cluster import DEFAULT_PARTITION_BYTES, DEFAULT_PARTITION_ROWS
from kernel.ingest import IngestError, is_sql_source

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
CSV_SUFFIXES = frozenset({".csv", ".txt"})
PART_NAME = "part-{:05d}.parquet"


@dataclass(frozen=True)
class TablePiece:
    """One partition: row groups of a Parquet file, or a byte range of a CSV file."""

    path: str
    kind: Literal["parquet", "csv"]
    row_groups: tuple[int, ...] = ()
    start: int = 0  # CSV byte range [start, end)
    end: int = 0
    rows: int | None = None  # known up front for Parquet


def table_files(source: str) -> list[Path]:
    """The files of ``source`` (a file, a folder of .csv/.parquet files, or a glob), sorted.
    Raises IngestError for SQL URLs, a pattern that matches nothing, or mixed file types."""
    if is_sql_source(source):
        raise IngestError("--dask reads CSV or Parquet files (a file, a folder or a glob), not "
                          "SQL: export the table to Parquet, or score it without --dask")
    path = Path(source)
    if any(ch in source for ch in "*?["):
        files = [Path(p) for p in glob.glob(source, recursive=True)]
    elif path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in PARQUET_SUFFIXES | CSV_SUFFIXES]
    elif path.exists():
        files = [path]
    else:
        raise IngestError(f"data file not found: {path}")
    files = sorted(p.resolve() for p in files if p.is_file() and not p.name.startswith("."))
    if not files:
        raise IngestError(f"no .csv or .parquet files in {source}")
    kinds = {_kind(p) for p in files}
    if len(kinds) > 1:
        raise IngestError(f"{source} mixes CSV and Parquet files: give one kind")
    return files


def _kind(path: Path) -> Literal["parquet", "csv"]:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise IngestError(f"unsupported file type {suffix!r} for {path}: use .csv or .parquet")


def plan_pieces(files: list[Path], partition_rows: int = DEFAULT_PARTITION_ROWS,
                partition_bytes: int = DEFAULT_PARTITION_BYTES) -> list[TablePiece]:
    """Cut ``files`` into pieces bounded by rows and bytes (see the module docstring).
    Raises IngestError naming an empty or unreadable file."""
    pieces: list[TablePiece] = []
    for path in files:
        if path.stat().st_size == 0:
            raise IngestError(f"data file is empty: {path}")
        if _kind(path) == "parquet":
            pieces += _parquet_pieces(path, partition_rows, partition_bytes)
        else:
            pieces += _csv_pieces(path, partition_bytes)
    if not pieces:
        raise IngestError(f"no rows in {', '.join(map(str, files[:3]))}")
    return pieces


def _parquet_pieces(path: Path, max_rows: int, max_bytes: int) -> list[TablePiece]:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise IngestError(f"{path} is not a readable Parquet file: {exc}") from exc
    pieces, groups, rows, size = [], [], 0, 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if groups and (rows + group.num_rows > max_rows or size + group.total_byte_size
                       > max_bytes):
            pieces.append(TablePiece(str(path), "parquet", tuple(groups), rows=rows))
            groups, rows, size = [], 0, 0
        groups.append(index)
        rows += group.num_rows
        size += group.total_byte_size
    if groups and rows:
        pieces.append(TablePiece(str(path), "parquet", tuple(groups), rows=rows))
    return pieces


def _csv_pieces(path: Path, max_bytes: int) -> list[TablePiece]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.readline()
    if not header.strip():
        raise IngestError(f"{path} has no columns: the file is empty or not CSV")
    bounds = list(range(len(header), size, max(1, max_bytes))) + [size]
    return [TablePiece(str(path), "csv", start=a, end=b) for a, b in zip(bounds, bounds[1:],
                                                                         strict=False)
            if b > a]


def read_piece(piece: TablePiece, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The piece's rows, ``chunk_rows`` at a time, typed as ``kernel.ingest.iter_table`` types
    them (CSV as text, Parquet as stored). Raises IngestError naming the file."""
    if piece.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(piece.path)
            for batch in parquet.iter_batches(batch_size=chunk_rows,
                                              row_groups=list(piece.row_groups)):
                yield batch.to_pandas()
        except Exception as exc:
            if isinstance(exc, IngestError):
                raise
            raise IngestError(f"{piece.path} is not a readable Parquet file: {exc}") from exc
        return
    data, lines = _csv_range(piece)
    if not lines:
        return
    records = 0
    try:
        # The same reading options as kernel.ingest: text in, the contract decides the types.
        reader = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                             na_values=[""], chunksize=chunk_rows)
        for chunk in reader:
            records += len(chunk)
            yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{piece.path} is not a readable CSV: "
                          f"{str(exc).splitlines()[0]}") from exc
    if records != lines:
        raise IngestError(f"{piece.path}: bytes {piece.start}-{piece.end} hold {lines} lines but "
                          f"{records} records: a quoted field contains a line break, which "
                          "--dask cannot split safely; convert the file to Parquet")


def _csv_range(piece: TablePiece) -> tuple[bytes, int]:
    """Header + the lines that start inside [start, end), and how many there are."""
    with open(piece.path, "rb") as handle:
        header = handle.readline()
        handle.seek(piece.start - 1)
        if handle.read(1) != b"\n":
            handle.readline()  # the line under way belongs to the previous piece
        begin = handle.tell()
        body = b""
        if begin < piece.end:
            body = handle.read(piece.end - begin)
            if not body.endswith(b"\n"):
                body += handle.readline()  # finish the last line that starts in the range
    if body and not body.endswith(b"\n"):
        body += b"\n"
    # Blank lines are no records (pandas skips them, as the single-process reader does).
    lines = sum(1 for line in body.split(b"\n") if line not in (b"", b"\r"))
    return header + body, lines


def piece_rows(piece: TablePiece) -> int:
    """Records in the piece (Parquet: from the footer; CSV: its line count)."""
    if piece.rows is not None:
        return piece.rows
    return _csv_range(piece)[1]


# --- partitioned output -------------------------------------------------------------------

def output_folder(destination: str) -> Path:
    """``destination`` as the folder a partitioned output goes to. Raises IngestError for SQL
    URLs, single-file names and an existing file."""
    if is_sql_source(destination):
        raise IngestError("--dask writes partitioned Parquet to a folder, not to SQL: give a "
                          "folder, or score without --dask")
    path = Path(destination.rstrip("/") or destination)
    if path.suffix.lower() in PARQUET_SUFFIXES | CSV_SUFFIXES:
        raise IngestError(f"--dask writes partitioned Parquet to a folder: give a folder name, "
                          f"not {path.name}")
    if path.exists() and not path.is_dir():
        raise IngestError(f"output {path} exists and is not a folder")
    return path


def temporary_folder(destination: Path) -> Path:
    """An empty hidden folder beside ``destination`` (same filesystem: the rename is cheap).
    Raises IngestError when it cannot be created."""
    temp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
    try:
        temp.mkdir(parents=True)
    except OSError as exc:
        raise IngestError(f"cannot write {destination}: {exc.strerror or exc}") from exc
    return temp


def publish_folder(temp: Path, destination: Path) -> None:
    """Put ``temp`` in place of ``destination``: the old folder (if any) is renamed aside, the
    new one renamed in, then the old one deleted. Both renames are in one parent folder; if the
    process dies between them, the previous output is still whole at ``.<name>.old-*``."""
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{secrets.token_hex(4)}")
        os.rename(destination, old)
    try:
        os.rename(temp, destination)
    except OSError:
        if old is not None:
            os.rename(old, destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard_folder(temp: Path | None) -> None:
    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)
