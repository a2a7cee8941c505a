"""Ingestion from CSV, Parquet and SQL (real SQLite through SQLAlchemy), and its clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from kernel.ingest import IngestError, iter_table, read_table, write_table
from training.generate import GeneratorConfig, generate_customers


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(GeneratorConfig(rows=300, seed=5))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_files_round_trip(tmp_path, customers, suffix):
    path = tmp_path / f"c.{suffix}"
    write_table(customers, path)
    back = read_table(path)
    assert back.shape == customers.shape
    assert back["customer_id"].tolist() == customers["customer_id"].tolist()


def test_sqlite_table_and_query(tmp_path, customers):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    write_table(customers, f"{url}#customers")
    assert len(read_table(f"{url}#customers")) == len(customers)
    europe = read_table(f"{url}#SELECT * FROM customers WHERE region = 'europe'")
    assert len(europe) == (customers["region"] == "europe").sum() > 0


def test_chunks_bound_memory(tmp_path, customers):
    path = tmp_path / "c.parquet"
    write_table(customers, path)
    sizes = [len(chunk) for chunk in iter_table(path, chunk_rows=100)]
    assert sizes == [100, 100, 100]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("a,b,c\n", "has a header but no rows"),
        ("a;b;c\n1;2;3\n4;5;6\n", "wrong delimiter; it looks delimited by ';'"),
        ('a,b\n1,"unterminated\n', "not a readable CSV"),
    ],
    ids=["empty", "header-only", "semicolons", "corrupt"],
)
def test_bad_csv_files_fail_with_one_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(IngestError, match=message):
        read_table(path)


def test_corrupt_parquet_and_missing_sources(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(IngestError, match="not a readable Parquet"):
        read_table(path)
    with pytest.raises(IngestError, match="not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(IngestError, match="table 'nope' not found"):
        read_table(f"sqlite:///{tmp_path / 'x.db'}#nope")
    with pytest.raises(IngestError, match="needs a table or query"):
        read_table(f"sqlite:///{tmp_path / 'x.db'}")
