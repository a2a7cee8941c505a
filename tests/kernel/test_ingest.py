"""Ingestion from CSV, Parquet and SQL (real SQLite through SQLAlchemy), and its clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from kernel.ingest import (
    IngestError,
    TableWriter,
    iter_table,
    mask_url,
    read_table,
    without_password,
    write_table,
)
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


# --- URLs in messages ----------------------------------------------------------------------

def test_urls_are_printed_masked_and_stored_without_password():
    url = "postgresql://analyst:s3cr%40t@db.internal:5432/crm"
    assert mask_url(url) == "postgresql://analyst:***@db.internal:5432/crm"
    assert without_password(url) == "postgresql://analyst@db.internal:5432/crm"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_url("http://u:pw@mlflow:5000") == "http://u:***@mlflow:5000"


def test_missing_driver_is_named_with_the_package_to_install():
    with pytest.raises(IngestError, match=r"driver .* not installed: pip install psycopg2-binary"
                       ) as caught:
        read_table("postgresql+psycopg2://u:hunter2@localhost/crm#customers")
    assert "hunter2" not in str(caught.value)


# --- all-or-nothing writes -----------------------------------------------------------------

def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_file_is_replaced_only_when_the_writer_commits(tmp_path, customers, suffix):
    path = tmp_path / f"scores.{suffix}"
    write_table(customers.head(5), path)
    with TableWriter(path) as writer:
        writer.write(customers.iloc[:100])
        writer.write(customers.iloc[100:])
        assert len(read_table(path)) == 5, "the destination changed before commit"
        writer.commit()
    assert len(read_table(path)) == len(customers)
    assert _leftovers(tmp_path) == []


def test_failed_file_write_leaves_the_old_file(tmp_path, customers):
    path = tmp_path / "scores.parquet"
    write_table(customers.head(5), path)
    before = path.read_bytes()
    bad = customers.iloc[100:200].assign(tenure_days="not a number")  # cannot join int64 column
    with pytest.raises(IngestError, match="failed after 100 rows"), TableWriter(path) as writer:
        writer.write(customers.iloc[:100])
        writer.write(bad)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_sqlite_write_leaves_the_old_table(tmp_path, customers):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'c.db'}"
    write_table(customers.head(5), f"{url}#scores")
    with pytest.raises(IngestError, match="failed after 100 rows"), \
            TableWriter(f"{url}#scores") as writer:
        writer.write(customers.iloc[:100])
        writer.write(customers.iloc[100:200].assign(surprise_column=1))  # no such column
    assert read_table(f"{url}#scores")["customer_id"].tolist() == \
        customers["customer_id"].head(5).tolist()
    engine = sa.create_engine(url)
    assert sa.inspect(engine).get_table_names() == ["scores"]  # staging table rolled back
    engine.dispose()


def test_sqlite_table_is_swapped_on_commit(tmp_path, customers):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    write_table(customers.head(5), f"{url}#scores")
    with TableWriter(f"{url}#scores") as writer:
        for start in range(0, len(customers), 100):
            writer.write(customers.iloc[start:start + 100])
        writer.commit()
    assert len(read_table(f"{url}#scores")) == len(customers)
