"""`churn score --dask`: the same scores as `churn score` and as `/predict` of a real `bentoml
serve`, on a real 2-worker Dask cluster; partitioned Parquet out, all or nothing."""

from __future__ import annotations

import os
import subprocess

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from churn_cli import app, with_optional_values
from kernel.processes import free_port
from tests.conftest import CHURN
from tests.servers import request_bodies

COLUMNS = ["churn_probability", "will_churn", "risk_level", "unseen_categories",
           "model_version", "model_tag"]


@pytest.fixture(scope="module")
def customers(trained_entry) -> pd.DataFrame:
    """600 customers as a raw table: nulls, unseen categories and 3 rows that break the
    contract, with every value as text (as a CSV holds it)."""
    raw = pd.DataFrame(request_bodies(trained_entry, 600)).astype(object)
    raw.loc[raw.index[::9], "region"] = "antarctica"  # an open set: scored, flagged unseen
    raw.loc[raw.index[::7], "satisfaction_score"] = None
    raw.loc[10, "monthly_charge"] = "lots"
    raw.loc[20, "plan"] = "platinum"
    raw.loc[30, "profiles"] = None
    return raw.astype(object).where(raw.notna(), None).astype(str).replace("None", "")


def _score(*args: str) -> None:
    result = CliRunner().invoke(app, ["score", *args])
    assert result.exit_code == 0, result.output


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id").set_index("customer_id")


def test_dask_scores_equal_single_process_and_predict(
    trained_entry, customers, dask_scheduler, server, tmp_path
):
    single_in = tmp_path / "customers.parquet"
    customers.to_parquet(single_in, index=False)
    _score("--input", str(single_in), "--output", str(tmp_path / "single.parquet"))
    single = _by_id(pd.read_parquet(tmp_path / "single.parquet"))

    # Three Parquet files of 50-row groups, 2 groups per task: 6 tasks of 100 rows.
    folder = tmp_path / "customers"
    folder.mkdir()
    for i in range(3):
        part = pa.Table.from_pandas(customers.iloc[i * 200:(i + 1) * 200], preserve_index=False)
        pq.write_table(part, folder / f"c{i}.parquet", row_group_size=50)
    out = tmp_path / "scores"
    _score("--input", str(folder / "*.parquet"), "--output", str(out), "--dask", dask_scheduler,
           "--partition-rows", "100", "--chunk-rows", "30")
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(6)]
    parquet_scores = _by_id(pd.read_parquet(out))

    # The same table as one CSV, cut into byte ranges of 8 KiB.
    csv_in = tmp_path / "customers.csv"
    customers.to_csv(csv_in, index=False)
    _score("--input", str(csv_in), "--output", str(tmp_path / "csv_scores"), "--dask",
           dask_scheduler, "--partition-bytes", "8192")
    csv_scores = _by_id(pd.read_parquet(tmp_path / "csv_scores"))

    assert len(single) == 597
    for scores in (parquet_scores, csv_scores):
        pd.testing.assert_frame_equal(scores[COLUMNS], single[COLUMNS], check_exact=True)
    assert (single["unseen_categories"] == "region").sum() > 50
    rejects = pd.read_parquet(tmp_path / "scores.rejects")
    assert sorted(rejects["customer_id"]) == sorted(customers["customer_id"].iloc[[10, 20, 30]])
    assert "plan: outside the allowed values" in " | ".join(rejects["reject_reason"])

    # The service answers the same for the same customers (its JSON floats round-trip).
    bodies = request_bodies(trained_entry, 600)
    for i in (41, 43, 44, 46, 47, 50):  # rows the fixture left as they were
        body = bodies[i]
        answer = httpx.post(f"{server.url}/predict", json=body, timeout=30).json()
        row = parquet_scores.loc[body["customer_id"]]
        assert answer["churn_probability"] == row["churn_probability"]
        assert answer["risk_level"] == row["risk_level"]
        assert answer["model_version"] == row["model_version"]


def test_a_failed_task_leaves_the_previous_output(trained_entry, customers, dask_scheduler,
                                                  tmp_path):
    out = tmp_path / "scores"
    _score("--input", _write_csv(customers, tmp_path / "good.csv"), "--output", str(out),
           "--dask", dask_scheduler)
    before = pd.read_parquet(out)
    # A quoted line break in the last piece: that task fails after the others wrote parts.
    broken = customers.copy()
    broken.loc[590, "plan"] = "basic\nplus"
    result = CliRunner().invoke(app, ["score", "--input", _write_csv(broken, tmp_path / "b.csv"),
                                      "--output", str(out), "--dask", dask_scheduler,
                                      "--partition-bytes", "8192"])
    assert result.exit_code != 0
    # The piece holding the record sees more lines than records, or a cut inside the quotes.
    assert "line break" in str(result.exception) or "not a readable CSV" in str(
        result.exception), result.exception
    pd.testing.assert_frame_equal(pd.read_parquet(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "good.csv", "scores",
                                                          "scores.rejects"]


def _write_csv(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_unreachable_scheduler_exits_2_and_writes_nothing(trained_entry, customers, tmp_path):
    source = tmp_path / "customers.parquet"
    customers.to_parquet(source, index=False)
    address = f"tcp://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [CHURN, "score", "--input", str(source), "--output", str(tmp_path / "scores"),
         "--dask", address, "--dask-timeout", "2"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0] and "did not answer" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.parquet"]


def test_dask_without_a_value_means_a_local_cluster():
    assert with_optional_values(["score", "--dask"]) == ["score", "--dask", "local"]
    assert with_optional_values(["score", "--dask", "--chunk-rows", "5"]) == [
        "score", "--dask", "local", "--chunk-rows", "5"]
    assert with_optional_values(["drift", "--dask", "tcp://h:8786"]) == [
        "drift", "--dask", "tcp://h:8786"]


def test_local_cluster_is_sized_from_cpus_and_memory():
    from kernel.cluster import local_cluster_size

    size = local_cluster_size(cpus=4, memory_bytes=20 * 2**30)
    assert (size.workers, size.threads_per_worker) == (4, 1)
    assert size.memory_limit_bytes == int(20 * 2**30 * 0.8 / 4)
    assert np.isclose(local_cluster_size(cpus=1, memory_bytes=2**30).memory_limit_bytes,
                      0.8 * 2**30)
