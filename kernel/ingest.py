"""Read a customer table from CSV, Parquet or SQL (any SQLAlchemy URL), failing with a clear line.

``--data`` takes a file path, or a SQLAlchemy URL with the table or query after a ``#``:
``sqlite:///.churn/data/customers.db#customers`` or
``sqlite:///x.db#SELECT * FROM customers WHERE region = 'europe'``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


class IngestError(ValueError):
    """The source could not be read as a table."""


def is_sql_source(source: str) -> bool:
    return "://" in source


def _split_sql(source: str) -> tuple[str, str]:
    url, sep, what = source.partition("#")
    if not sep or not what.strip():
        raise IngestError(
            f"SQL source {url!r} needs a table or query after '#', e.g. {url}#customers"
        )
    return url, what.strip()


def _is_query(what: str) -> bool:
    return what.split(None, 1)[0].lower() in {"select", "with"}


def read_table(source: str | Path) -> pd.DataFrame:
    """Read the whole table. Raises IngestError for empty, corrupt or unreadable sources."""
    return pd.concat(list(iter_table(source, chunk_rows=None)), ignore_index=True)


def iter_table(source: str | Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of ``chunk_rows`` (all at once with None); memory stays bounded."""
    text = str(source)
    if is_sql_source(text):
        yield from _iter_sql(text, chunk_rows)
        return
    path = Path(text)
    if not path.exists():
        raise IngestError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise IngestError(f"data file is empty: {path}")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        yield from _iter_parquet(path, chunk_rows)
    elif suffix in {".csv", ".txt", ".gz"}:
        yield from _iter_csv(path, chunk_rows)
    else:
        raise IngestError(f"unsupported file type {suffix!r} for {path}: use .csv or .parquet")


def _iter_csv(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    # Everything is read as text: the contract, not pandas' guesses, decides each column's type
    # (so " " in a numeric column is a blank, not a reason to crash later).
    try:
        reader = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows,
            skipinitialspace=False,
        )
        chunks = [reader] if chunk_rows is None else reader
        first = True
        for chunk in chunks:
            if first:
                _check_csv_shape(chunk, path)
                first = False
            yield chunk
        if first:
            raise IngestError(f"{path} has a header but no rows")
    except pd.errors.EmptyDataError as exc:
        raise IngestError(f"{path} has no columns: the file is empty or not CSV") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from exc


def _check_csv_shape(chunk: pd.DataFrame, path: Path) -> None:
    if chunk.empty:
        raise IngestError(f"{path} has a header but no rows")
    if chunk.shape[1] == 1:
        header = str(chunk.columns[0])
        try:
            dialect = csv.Sniffer().sniff(header, delimiters=";\t|")
            hint = f"; it looks delimited by {dialect.delimiter!r}, not ','"
        except csv.Error:
            hint = ""
        raise IngestError(
            f"{path} parsed as a single column {header[:60]!r}: wrong delimiter{hint}"
        )


def _iter_parquet(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows == 0:
            raise IngestError(f"{path} has no rows")
        if chunk_rows is None:
            yield parquet.read().to_pandas()
            return
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    except IngestError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise IngestError(f"{path} is not a readable Parquet file: {exc}") from exc


def _iter_sql(source: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import sqlalchemy as sa

    url, what = _split_sql(source)
    try:
        engine = sa.create_engine(url)
    except Exception as exc:
        raise IngestError(f"cannot use database URL {url!r}: {exc}") from exc
    statement = sa.text(what) if _is_query(what) else None
    try:
        with engine.connect() as conn:
            if statement is None:
                if not sa.inspect(conn).has_table(what):
                    raise IngestError(f"table {what!r} not found in {url}")
                statement = sa.select(sa.table(what, *[
                    sa.column(c["name"]) for c in sa.inspect(conn).get_columns(what)
                ]))
            result = pd.read_sql(statement, conn, chunksize=chunk_rows)
            chunks = [result] if chunk_rows is None else result
            seen = False
            for chunk in chunks:
                if chunk.empty and not seen and chunk_rows is None:
                    break
                seen = seen or not chunk.empty
                yield chunk
            if not seen:
                raise IngestError(f"{what!r} in {url} returned no rows")
    except IngestError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise IngestError(f"SQL source {url}#{what} failed: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def write_table(frame: pd.DataFrame, destination: str | Path) -> None:
    """Write a table to .csv, .parquet or a SQL URL (``url#table``, replacing the table)."""
    text = str(destination)
    if is_sql_source(text):
        import sqlalchemy as sa

        url, table = _split_sql(text)
        engine = sa.create_engine(url)
        try:
            frame.to_sql(table, engine, if_exists="replace", index=False, chunksize=50_000)
        finally:
            engine.dispose()
        return
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
