"""Table I/O: read a customer table from CSV, Parquet or SQL (any SQLAlchemy URL) and write
scores or data back, failing with one clear line and never leaving half a table behind.

A source or destination is a file path, or a SQLAlchemy URL with the table (``schema.table``
works) or a query after a ``#``: ``sqlite:///.churn/data/customers.db#customers``,
``postgresql://analyst@db.internal/crm#SELECT * FROM customers WHERE region = 'europe'``.
``postgresql://`` uses psycopg 3, the driver churn-serve depends on. Passwords never appear
in a message: every URL printed goes through ``mask_url`` (credentials belong in
``PGPASSWORD``/``~/.pgpass``, see docs/state.md).

Reading streams: SQL results come through a server-side cursor, files in row groups or CSV
chunks, so memory is bounded by ``chunk_rows``. Writing is all or nothing (``TableWriter``).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pandas as pd

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("churn.ingest")

# Rows per INSERT/COPY batch inside one write: bounds the driver's buffers, not the result.
SQL_BATCH_ROWS = 10_000
# libpq waits for an unreachable host as long as TCP does (minutes) unless told otherwise.
CONNECT_TIMEOUT_SECONDS = 10
# Drivers for a URL without one: ours first (psycopg 3); SQLAlchemy would pick psycopg2.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary",
                   "pymysql": "pymysql", "MySQLdb": "mysqlclient", "pyodbc": "pyodbc",
                   "oracledb": "oracledb"}


class IngestError(ValueError):
    """The source could not be read as a table, or the destination could not be written."""


# --- URLs -----------------------------------------------------------------------------------

def is_sql_source(source: str) -> bool:
    return "://" in source


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the only way a URL is printed."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL: show nothing that could be a secret
        return re.sub(r"//[^/@#]*@", "//***@", url)
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url.replace(f"//{parts.netloc}", f"//{user}:***@{hostinfo}", 1)


def without_password(url: str) -> str:
    """``url`` with the password removed (not masked): still usable where the password comes
    from the environment (``PGPASSWORD``, ``~/.pgpass``, ``MLFLOW_TRACKING_PASSWORD``), and
    safe to store in model metadata."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    return url.replace(f"//{parts.netloc}", f"//{userinfo.partition(':')[0]}@{hostinfo}", 1)


def _redact(message: str, url: str) -> str:
    """Remove the URL's password from a driver's message (drivers may echo the DSN)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return message
    for secret in {password, unquote(password or "")} - {None, ""}:
        message = message.replace(secret, "***")
    return message


def _split_sql(source: str) -> tuple[str, str]:
    url, sep, what = source.partition("#")
    if not sep or not what.strip():
        raise IngestError(
            f"SQL source {mask_url(url)!r} needs a table or query after '#', "
            f"e.g. {mask_url(url)}#customers"
        )
    return url, what.strip()


def _is_query(what: str) -> bool:
    return what.split(None, 1)[0].lower() in {"select", "with"}


def _table_name(what: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); ``table`` -> (None, table)."""
    schema, dot, table = what.rpartition(".")
    return (schema or None) if dot else None, table


def with_default_driver(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) -> ``postgresql+psycopg://``; others as given."""
    scheme, sep, rest = url.partition("://")
    return f"{DEFAULT_DRIVERS.get(scheme.lower(), scheme)}{sep}{rest}"


def _first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the SQL and a docs link)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0].strip()


def _engine(url: str) -> sa.Engine:
    """An engine for ``url`` with a connect timeout, transactional DDL on SQLite, and a clear
    IngestError for a missing driver or a malformed URL."""
    import sqlalchemy as sa

    url = with_default_driver(url)
    shown = mask_url(url)
    try:
        parsed = sa.engine.make_url(url)
        connect_args = {}
        if (parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query
                and not os.environ.get("PGCONNECT_TIMEOUT")):
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        engine = sa.create_engine(parsed, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        package = DRIVER_PACKAGES.get(str(exc.name), exc.name)
        raise IngestError(f"the database driver for {shown} is not installed: "
                          f"pip install {package}") from exc
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        raise IngestError(f"cannot use database URL {shown}: {_first_line(exc)}") from exc
    if engine.dialect.name == "sqlite":
        _transactional_sqlite(engine)
    return engine


def _transactional_sqlite(engine: sa.Engine) -> None:
    """Python's sqlite3 commits before DDL on its own; SQLAlchemy's documented recipe makes
    BEGIN explicit, so a staging table and the swap share one transaction as on PostgreSQL."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: object, record: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _connect(engine: sa.Engine, url: str) -> sa.Connection:
    import sqlalchemy as sa

    try:
        return engine.connect()
    except sa.exc.SQLAlchemyError as exc:
        raise IngestError(f"cannot connect to {mask_url(url)}: "
                          f"{_redact(_first_line(exc), url)}") from exc


def probe_database(url: str) -> None:
    """Connect once and disconnect. Raises IngestError (one line, no password) when the
    database cannot be reached, before any work depends on it."""
    engine = _engine(url)
    try:
        _connect(engine, url).close()
    finally:
        engine.dispose()


# --- reading --------------------------------------------------------------------------------

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
    shown = f"{mask_url(url)}#{what}"
    engine = _engine(url)
    try:
        with _connect(engine, url) as conn:
            if _is_query(what):
                statement = sa.text(what)
            else:
                schema, table = _table_name(what)
                inspector = sa.inspect(conn)
                if not inspector.has_table(table, schema=schema):
                    raise IngestError(f"table {what!r} not found in {mask_url(url)}")
                columns = [sa.column(c["name"])
                           for c in inspector.get_columns(table, schema=schema)]
                statement = sa.select(sa.table(table, *columns, schema=schema))
            if chunk_rows is not None:
                # A server-side cursor: PostgreSQL sends rows as they are fetched, instead of
                # the driver buffering the whole result before the first chunk.
                conn = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows)
            # coerce_float: NUMERIC arrives as Decimal; floats are what the contract parses.
            result = pd.read_sql(statement, conn, chunksize=chunk_rows, coerce_float=True)
            chunks = [result] if chunk_rows is None else result
            seen = False
            for chunk in chunks:
                if not chunk.empty:
                    seen = True
                    yield chunk
            if not seen:
                raise IngestError(f"{shown} returned no rows")
    except IngestError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise IngestError(f"reading {shown} failed: {_redact(_first_line(exc), url)}") from exc
    finally:
        engine.dispose()


# --- writing --------------------------------------------------------------------------------

class TableWriter:
    """Writes a table chunk by chunk to a .csv, .parquet or SQL (``url#table``) destination,
    all or nothing, with memory bounded by the chunk size.

    Chunks go to a temporary file beside the destination, or to a staging table inside one
    database transaction. ``commit()`` publishes them in one step (a rename of the file; on SQL
    ``DROP`` old + ``ALTER TABLE staging RENAME`` and ``COMMIT``); until then the destination
    is untouched. ``abort()``, or leaving the ``with`` block without ``commit()``, removes the
    temporary file or rolls back (which drops the staging table), so a failure mid-way (a bad
    row, a killed connection, Ctrl-C) leaves the previous destination as it was.
    """

    def __init__(self, destination: str | Path, *, batch_rows: int = SQL_BATCH_ROWS):
        self.destination = str(destination)
        self.shown = _mask_destination(self.destination)
        self.batch_rows = batch_rows
        self.rows = 0
        self._started = False
        self._done = False
        self._opened = False
        # SQL
        self._url = ""
        self._schema: str | None = None
        self._table = ""
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._transaction: sa.RootTransaction | None = None
        self._staging = ""
        # files
        self._temp: Path | None = None
        self._parquet = None

    @property
    def started(self) -> bool:
        """True once a chunk (even an empty one) was written."""
        return self._started

    def open(self) -> TableWriter:
        """Check the destination can be written (connect, or create the folder) before any
        work is done. Called by ``with`` and by the first ``write``. Raises IngestError."""
        if self._opened:
            return self
        if self._done:
            raise IngestError(f"writer for {self.shown} is already closed")
        self._opened = True
        if is_sql_source(self.destination):
            url, what = _split_sql(self.destination)
            if _is_query(what):
                raise IngestError(f"cannot write to a query: give a table name after '#' in "
                                  f"{self.shown}")
            self._url, (self._schema, self._table) = url, _table_name(what)
            self._engine = _engine(url)
            try:
                self._conn = _connect(self._engine, url)
                self._transaction = self._conn.begin()
            except BaseException:
                self._release()
                raise
            # Unique per writer: two jobs writing the same table never share a staging table.
            self._staging = f"_churn_staging_{secrets.token_hex(4)}_{self._table}"[:63]
        else:
            path = Path(self.destination)
            if path.is_dir():
                raise IngestError(f"output {path} is a folder: give a file name")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
                self._temp.touch()
            except OSError as exc:
                raise IngestError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return self

    def write(self, frame: pd.DataFrame) -> None:
        """Append a chunk (to the temporary file or staging table). Raises IngestError; the
        writer is then aborted."""
        self.open()
        try:
            if self._conn is not None:
                self._write_sql(frame)
            else:
                self._write_file(frame)
        except Exception as exc:
            self.abort()
            if isinstance(exc, IngestError):
                raise
            raise IngestError(f"writing {self.shown} failed after {self.rows} rows: "
                              f"{self._describe(exc)}") from exc
        self.rows += len(frame)
        self._started = True

    def _write_sql(self, frame: pd.DataFrame) -> None:
        method = _copy_rows if self._conn.dialect.name == "postgresql" else None
        frame.to_sql(self._staging, self._conn, schema=self._schema, index=False,
                     if_exists="append", chunksize=self.batch_rows, method=method)

    def _write_file(self, frame: pd.DataFrame) -> None:
        if Path(self.destination).suffix.lower() in {".parquet", ".pq"}:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._temp, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            frame.to_csv(self._temp, mode="a" if self._started else "w",
                         header=not self._started, index=False)

    def commit(self) -> None:
        """Replace the destination with what was written, in one step. Nothing written: the
        destination is left alone. Raises IngestError (after aborting)."""
        if self._done:
            return
        if not self._started:
            self.abort()
            return
        try:
            if self._conn is not None:
                self._swap_tables()
            else:
                if self._parquet is not None:
                    self._parquet.close()
                    self._parquet = None
                os.replace(self._temp, self.destination)  # atomic on one filesystem
                self._temp = None
        except Exception as exc:
            self.abort()
            raise IngestError(f"publishing {self.shown} failed: {self._describe(exc)}") from exc
        self._done = True
        self._release()

    def _swap_tables(self) -> None:
        import sqlalchemy as sa

        preparer = self._conn.dialect.identifier_preparer
        target = preparer.quote(self._table)
        if self._schema:
            target = f"{preparer.quote_schema(self._schema)}.{target}"
        staging = preparer.quote(self._staging)
        qualified_staging = f"{preparer.quote_schema(self._schema)}.{staging}" \
            if self._schema else staging
        if sa.inspect(self._conn).has_table(self._table, schema=self._schema):
            self._conn.exec_driver_sql(f"DROP TABLE {target}")
        # RENAME keeps the schema; the new name is given bare.
        self._conn.exec_driver_sql(f"ALTER TABLE {qualified_staging} RENAME TO "
                                   f"{preparer.quote(self._table)}")
        self._transaction.commit()

    def abort(self) -> None:
        """Discard everything written; the destination stays as it was. Never raises."""
        if self._done:
            return
        self._done = True
        if self._parquet is not None:
            with contextlib.suppress(Exception):  # the file is deleted next anyway
                self._parquet.close()
            self._parquet = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
        self._release()

    def _release(self) -> None:
        """Close the connection: an open transaction rolls back, dropping the staging table
        (PostgreSQL also does that on its own when the connection dies)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # noqa: BLE001 - a dead connection has nothing to undo
                log.warning("closing the connection to %s: %s", self.shown, _first_line(exc))
            self._conn = None
            self._transaction = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _describe(self, exc: BaseException) -> str:
        return _redact(_first_line(exc), self._url)

    def __enter__(self) -> TableWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()  # a no-op after commit()


def write_table(frame: pd.DataFrame, destination: str | Path) -> None:
    """Write a whole table to .csv, .parquet or a SQL URL (``url#table``), replacing what was
    there only once everything is written. Raises IngestError."""
    with TableWriter(destination) as writer:
        writer.write(frame)
        writer.commit()


def _mask_destination(destination: str) -> str:
    if not is_sql_source(destination):
        return destination
    url, sep, what = destination.partition("#")
    return f"{mask_url(url)}{sep}{what}"


def _copy_rows(table: object, conn: sa.Connection, keys: list[str],
               data_iter: Iterator[tuple]) -> int:
    """pandas ``to_sql`` method for PostgreSQL: ``COPY ... FROM STDIN``, row by row through
    psycopg's adapters (about 2x pandas' default INSERTs; figures in docs/state.md)."""
    preparer = conn.dialect.identifier_preparer
    name = preparer.quote(table.name)
    if table.schema:
        name = f"{preparer.quote_schema(table.schema)}.{name}"
    columns = ", ".join(preparer.quote(k) for k in keys)
    rows = 0
    with conn.connection.cursor() as cursor, \
            cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
        for row in data_iter:
            copy.write_row(row)
            rows += 1
    return rows
