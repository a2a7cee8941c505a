"""`churn score`: every row either scored (with the model version) or rejected with a reason."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from churn_cli import app
from tests.conftest import CHURN
from tests.servers import request_bodies


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_writes_scores_and_rejects(trained_entry, tmp_path, suffix):
    raw = pd.DataFrame(request_bodies(trained_entry, 250))
    raw["snapshot_date"] = "2026-01-01"  # undeclared columns are carried in rejects, not scored
    raw = raw.astype(str).replace("None", "")
    raw.loc[10, "monthly_charge"] = "lots"
    raw.loc[20, "plan"] = "platinum"
    raw.loc[30, "profiles"] = ""
    source = tmp_path / f"customers{suffix}"
    raw.to_csv(source, index=False) if suffix == ".csv" else raw.to_parquet(source)
    output = tmp_path / f"scores{suffix}"

    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output", str(output),
                                      "--chunk-rows", "100"])
    assert result.exit_code == 0, result.output
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    scores = read(output)
    rejects = read(tmp_path / f"scores.rejects{suffix}")
    assert len(scores) == 247 and len(rejects) == 3
    assert set(scores["model_version"].astype(str)) == {trained_entry.version}
    assert scores["churn_probability"].between(0, 1).all()
    reasons = " | ".join(rejects["reject_reason"])
    for expected in ("monthly_charge: not numeric", "plan: outside the allowed values",
                     "profiles: null, not nullable"):
        assert expected in reasons
    assert "rejected 3 rows" in result.output


def test_score_missing_model_is_one_readable_line(tmp_path):
    source = tmp_path / "c.csv"
    source.write_text("customer_id\nc1\n")
    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output",
                                      str(tmp_path / "o.csv"), "--model", "nope:champion"])
    assert result.exit_code != 0
    assert "no champion for 'nope'" in str(result.exception)


# --- PostgreSQL in and out (the session's real server) -------------------------------------

@pytest.fixture(scope="module")
def scoring_db(postgres, trained_entry) -> str:
    """A database with 300 customers, one of them breaking the contract."""
    from kernel.ingest import write_table

    url = postgres.create_database("scoring")
    raw = pd.DataFrame(request_bodies(trained_entry, 300))
    raw.loc[7, "plan"] = "platinum"
    write_table(raw, f"{url}#customers")
    return url


def _churn(*args: str) -> subprocess.CompletedProcess:
    # The real command line: one `error:` line and the exit code are part of the contract.
    return subprocess.run([CHURN, *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))


def test_score_from_and_into_postgres(trained_entry, scoring_db):
    from kernel.ingest import read_table

    result = CliRunner().invoke(app, ["score", "--input", f"{scoring_db}#customers",
                                      "--output", f"{scoring_db}#scores", "--chunk-rows", "100"])
    assert result.exit_code == 0, result.output
    scores = read_table(f"{scoring_db}#scores")
    rejects = read_table(f"{scoring_db}#scores_rejects")
    assert len(scores) == 299 and len(rejects) == 1
    assert scores["churn_probability"].dtype == float and scores["will_churn"].dtype == bool
    assert set(scores["model_version"]) == {trained_entry.version}
    assert "plan: outside the allowed values" in rejects["reject_reason"].iloc[0]


def test_failed_score_leaves_the_previous_scores_table(trained_entry, scoring_db):
    from kernel.ingest import read_table, write_table

    previous = pd.DataFrame({"customer_id": ["kept"], "churn_probability": [0.5]})
    write_table(previous, f"{scoring_db}#nightly")
    # Row 250 of the streamed input fails on the server, after two chunks were scored and
    # written to the staging table.
    failing = (f"{scoring_db}#SELECT c.*, 1 / (250 - row_number() OVER ()) AS n "
               "FROM customers c")
    result = _churn("score", "--input", failing, "--output", f"{scoring_db}#nightly",
                    "--chunk-rows", "100")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "division by zero" in errors[0], result.stderr
    assert read_table(f"{scoring_db}#nightly")["customer_id"].tolist() == ["kept"]
    tables = read_table(f"{scoring_db}#SELECT tablename FROM pg_tables "
                        "WHERE schemaname = 'public'")["tablename"].tolist()
    assert not [t for t in tables if "staging" in t or t == "nightly_rejects"], tables


def test_unreachable_output_fails_before_scoring(trained_entry, scoring_db):
    from kernel.processes import free_port

    result = _churn("score", "--input", f"{scoring_db}#customers", "--output",
                    f"postgresql://scorer:hunter2@127.0.0.1:{free_port()}/dw#scores")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot connect to postgresql://scorer:***@" in errors[0]
    assert "hunter2" not in result.stderr and "scoring with" not in result.stderr
