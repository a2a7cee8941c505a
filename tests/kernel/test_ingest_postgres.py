"""Reading and writing PostgreSQL tables through a real server (the session's throwaway
cluster): streaming, types through the contract, clear errors, all-or-nothing writes."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from kernel.contract import validate_training_data
from kernel.ingest import IngestError, TableWriter, iter_table, read_table, write_table
from kernel.processes import free_port
from training.generate import GeneratorConfig, generate_customers


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(GeneratorConfig(rows=600, seed=11))


@pytest.fixture(scope="module")
def db(postgres, customers) -> str:
    """A database of its own, holding ``customers`` as `churn generate` writes it."""
    url = postgres.create_database("ingest")
    write_table(customers, f"{url}#customers")
    return url


def _run(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(sql)
            return result.fetchall() if result.returns_rows else []
    finally:
        engine.dispose()


def _staging_tables(url: str) -> list[str]:
    return [r[0] for r in _run(url, "SELECT tablename FROM pg_tables "
                                    "WHERE tablename LIKE '%%churn_staging%%'")]


def test_table_query_and_schema_round_trip(db, customers):
    back = read_table(f"{db}#customers")
    assert back["customer_id"].tolist() == customers["customer_id"].tolist()
    europe = read_table(f"{db}#SELECT * FROM customers WHERE region = 'europe'")
    assert len(europe) == (customers["region"] == "europe").sum() > 0
    _run(db, "CREATE SCHEMA IF NOT EXISTS crm")
    write_table(customers.head(50), f"{db}#crm.snapshot")
    assert len(read_table(f"{db}#crm.snapshot")) == 50
    # A plain postgresql:// URL means psycopg 3, the driver churn-serve depends on.
    plain = db.replace("postgresql+psycopg://", "postgresql://")
    assert len(read_table(f"{plain}#customers")) == len(customers)


def test_results_stream_in_chunks_through_a_server_side_cursor(db):
    # The division fails on row 450. A client-side cursor buffers the whole result before the
    # first chunk, so the error would come first; streamed, 400 rows arrive before it.
    source = f"{db}#SELECT c.*, 1 / (450 - row_number() OVER ()) AS boom FROM customers c"
    received = []
    with pytest.raises(IngestError, match="division by zero"):
        for chunk in iter_table(source, chunk_rows=100):
            received.append(len(chunk))
    assert received == [100, 100, 100, 100]


def test_postgres_column_types_keep_the_contract_like_csv(db, customers, contract, tmp_path):
    # NUMERIC (Decimal in Python), BOOLEAN, INTEGER, TIMESTAMPTZ, as a team's table would
    # declare them, must validate to the same typed features as the CSV export of the rows.
    _run(db, """
        CREATE TABLE typed AS SELECT
            customer_id, snapshot_date::timestamptz AS snapshot_date, signup_date::date,
            tenure_days::integer, plan, region, payment_method, primary_device,
            monthly_charge::numeric(10, 2), discount_applied::boolean,
            logins_last_30d::integer, watch_hours_last_30d::numeric,
            days_since_last_login::smallint, satisfaction_score::numeric(3, 1),
            support_tickets_90d::integer, payment_failures_6m::integer,
            auto_renew_enabled::boolean, profiles::integer, age::numeric,
            cancellation_reason, days_until_cancellation, (churned <> 0) AS churned
        FROM customers""")
    types = dict(_run(db, "SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'typed'"))
    assert types["monthly_charge"] == "numeric" and types["churned"] == "boolean"
    assert types["snapshot_date"] == "timestamp with time zone"

    from_postgres = validate_training_data(read_table(f"{db}#typed"), contract)
    csv_path = tmp_path / "customers.csv"
    customers.to_csv(csv_path, index=False)
    from_csv = validate_training_data(read_table(csv_path), contract)

    pd.testing.assert_frame_equal(from_postgres.features, from_csv.features,
                                  check_dtype=False, atol=0.051)  # numeric(x, 1/2) rounding
    assert from_postgres.target.tolist() == from_csv.target.tolist()
    assert from_postgres.event_time.dt.date.tolist() == from_csv.event_time.dt.date.tolist()
    assert from_postgres.features["satisfaction_score"].isna().sum() > 0  # NULL stays missing


def test_unreachable_host_is_one_line_without_the_password():
    port = free_port()  # nobody listens there
    with pytest.raises(IngestError) as caught:
        read_table(f"postgresql://analyst:hunter2@127.0.0.1:{port}/crm#customers")
    message = str(caught.value)
    assert message.startswith(f"cannot connect to postgresql://analyst:***@127.0.0.1:"
                              f"{port}/crm: ")
    assert "refused" in message and "hunter2" not in message and "\n" not in message


def test_missing_table_and_bad_query_name_the_problem(db):
    with pytest.raises(IngestError, match="table 'clients' not found in postgresql"):
        read_table(f"{db}#clients")
    with pytest.raises(IngestError, match='column "tenure" does not exist'):
        read_table(f"{db}#SELECT tenure FROM customers")
    with pytest.raises(IngestError, match='database "nowhere" does not exist'):
        read_table(f"{db.rsplit('/', 1)[0]}/nowhere#customers")


def test_bad_row_mid_write_leaves_the_previous_table(db, customers):
    write_table(customers.head(7), f"{db}#scores")
    ok = customers.iloc[:200]
    # Same columns, but text in the integer column PostgreSQL created from the first chunk.
    bad = customers.iloc[200:400].astype({"tenure_days": str})
    bad.iloc[50, bad.columns.get_loc("tenure_days")] = "ten"
    with pytest.raises(IngestError, match="failed after 200 rows: .*invalid input syntax"), \
            TableWriter(f"{db}#scores") as writer:
        writer.write(ok)
        writer.write(bad)
    assert len(read_table(f"{db}#scores")) == 7
    assert _staging_tables(db) == []


def test_killed_connection_mid_write_leaves_the_previous_table(db, customers):
    write_table(customers.head(7), f"{db}#killed")
    with pytest.raises(IngestError, match="failed after 200 rows"), \
            TableWriter(f"{db}#killed") as writer:
        writer.write(customers.iloc[:200])
        # An operator (or a failover) ends every other session on the database.
        _run(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        writer.write(customers.iloc[200:400])
    assert len(read_table(f"{db}#killed")) == 7
    assert _staging_tables(db) == []


def test_commit_swaps_the_table_in_one_step(db, customers):
    write_table(customers.head(7), f"{db}#swapped")
    with TableWriter(f"{db}#swapped", batch_rows=100) as writer:
        for start in range(0, len(customers), 250):
            writer.write(customers.iloc[start:start + 250])
        assert len(read_table(f"{db}#swapped")) == 7  # readers see the old table until commit
        writer.commit()
    back = read_table(f"{db}#swapped")
    assert back["customer_id"].tolist() == customers["customer_id"].tolist()
    assert back["satisfaction_score"].isna().sum() == customers["satisfaction_score"].isna().sum()
    assert _staging_tables(db) == []
