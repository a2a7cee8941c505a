"""Compaction and retention of the inference log: the same records whatever the form, nothing
open touched, crash states counted once, two runs at once, the drift window kept; and end to
end on a log written by a real `bentoml serve`."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

from kernel.inference_log import LogFileName, list_log_files, read_inference_log, writer_host
from monitoring.config import MonitoringConfig, MonitoringConfigError
from monitoring.log_retention import (
    RetentionPolicy,
    compact,
    maintain_log,
    plan_retention,
)
from service.inference_log import InferenceLogWriter, LogBlock, utc_timestamp
from tests.monitoring.conftest import log_predictions, pushed_samples
from tests.servers import SERVICE, request_bodies, start_server

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _block(n: int, start: int = 0, timestamp: str | None = None) -> LogBlock:
    """Records with what makes types hard: booleans and categories with gaps, a column that is
    always missing, date-like ids, lists that are mostly empty."""
    index = np.arange(start, start + n)
    return LogBlock(
        timestamp=timestamp or utc_timestamp(), request_ids=[f"req-{i}" for i in index],
        customer_ids=[f"2025-01-{i % 28 + 1:02d}" if i % 2 else f"c{i}" for i in index],
        features={"tenure_days": index.astype(float),
                  "age": np.where(index % 3, index % 90, np.nan).astype(float),
                  "auto_renew_enabled": np.where(index % 4, (index % 2).astype(float), np.nan),
                  "region": np.array([None if i % 5 == 0 else f"r{i % 3}" for i in index],
                                     dtype=object),
                  "never_sent": np.full(n, np.nan)},
        probability=(index % 97) / 97, will_churn=(index % 97) / 97 >= 0.5,
        risk_level=np.array(["LOW", "MEDIUM", "HIGH"], dtype=object)[index % 3],
        unseen=[("region",) if i % 7 == 0 else () for i in index],
    )


def _write_log(directory: Path, blocks: int = 6, rows: int = 40, rotate_bytes: int = 4_000,
               **kwargs) -> InferenceLogWriter:
    writer = InferenceLogWriter(directory, model_tag="m:v1", model_version="v1",
                                boolean_features=["auto_renew_enabled"],
                                rotate_bytes=rotate_bytes, **kwargs)
    for b in range(blocks):
        writer.log(_block(rows, start=b * rows))
    return writer


def _policy(**kwargs) -> RetentionPolicy:
    return RetentionPolicy(**{"max_age": timedelta(days=60), "max_bytes": 10**12,
                              "protected": timedelta(hours=24), **kwargs})


def test_written_and_parquet_give_the_same_frame(tmp_path):
    _write_log(tmp_path).close()
    as_json = read_inference_log(tmp_path)
    assert len(as_json) == 240 and len(list_log_files(tmp_path)) >= 4
    files = list_log_files(tmp_path)
    compact(files[0])  # a mixed folder first, then all Parquet
    mixed = read_inference_log(tmp_path)
    for log_file in files[1:]:
        compact(log_file)
    assert {f.name.form for f in list_log_files(tmp_path)} == {"parquet"}
    as_parquet = read_inference_log(tmp_path)
    pd.testing.assert_frame_equal(as_json, mixed)
    pd.testing.assert_frame_equal(as_json, as_parquet)
    assert as_parquet["unseen_categories"].iloc[0] == ["region"]
    assert as_parquet["auto_renew_enabled"].iloc[0] is None
    assert as_parquet["customer_id"].iloc[1] == "2025-01-02"
    window = (datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC))
    columns = ["churn_probability", "customer_id"]
    assert list(read_inference_log(tmp_path, *window, columns=columns).columns) == [
        "timestamp", "customer_id", "churn_probability"]


def test_json_lines_of_an_older_writer_are_compacted_and_counted_by_form(tmp_path):
    """A folder written before the Arrow stream: its JSON lines compact to the same records."""
    _write_log(tmp_path, blocks=1, rows=10).close()
    arrow = read_inference_log(tmp_path)
    records = arrow.assign(timestamp=arrow["timestamp"].map(lambda t: t.isoformat()))
    old = tmp_path / "inferences-20261130T120000-old-pod-7-1.jsonl"
    old.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records.to_dict("records")))
    os.utime(old, (time.time(), time.time()))
    old.chmod(0o444)  # sealed by its writer
    before = maintain_log(tmp_path, _policy(), datetime.now(UTC), dry_run=True)
    assert before.files_after == {"arrows": 1, "jsonl": 1, "parquet": 0}
    result = maintain_log(tmp_path, _policy(), datetime.now(UTC))
    assert sorted((c.outcome, c.records) for c in result.compactions) == [
        ("compacted", 10), ("compacted", 10)]
    assert result.files_after == {"arrows": 0, "jsonl": 0, "parquet": 2}
    both = read_inference_log(tmp_path)
    assert len(both) == 20
    assert both["customer_id"].tolist() == arrow["customer_id"].tolist() * 2


def test_a_file_still_open_is_never_compacted(tmp_path):
    writer = _write_log(tmp_path, blocks=1, rows=10, flush_seconds=0.1)
    time.sleep(0.5)
    (open_file,) = list_log_files(tmp_path)
    result = maintain_log(tmp_path, _policy(max_bytes=1), datetime.now(UTC))
    assert result.compactions == [] and result.removed == {"age": [], "size": []}
    assert open_file.written_path.exists()  # over the size limit, yet open and protected
    writer.log(_block(5, start=10))
    writer.close()
    result = maintain_log(tmp_path, _policy(), datetime.now(UTC))
    assert [c.outcome for c in result.compactions] == ["compacted"]
    assert len(read_inference_log(tmp_path)) == 15


def test_a_dead_writers_file_is_compacted_once_old_without_its_torn_batch(tmp_path):
    _write_log(tmp_path, blocks=1, rows=10).close()
    (log_file,) = list_log_files(tmp_path)
    path = log_file.written_path
    os.chmod(path, 0o644)  # what a writer that died leaves: never sealed, no end marker,
    path.write_bytes(path.read_bytes()[:-8] + b"\xff\xff\xff\xff\x10\x02")  # a torn batch
    assert maintain_log(tmp_path, _policy(), datetime.now(UTC)).compactions == []
    later = log_file.name.opened + timedelta(hours=2)
    result = maintain_log(tmp_path, _policy(max_age=timedelta(days=365)), later)
    assert [(c.outcome, c.records) for c in result.compactions] == [("compacted", 10)]
    assert len(read_inference_log(tmp_path)) == 10


def test_an_interrupted_compaction_counts_every_record_once(tmp_path):
    _write_log(tmp_path).close()
    before = read_inference_log(tmp_path)
    first = list_log_files(tmp_path)[0]
    written = first.written_path.read_bytes()
    compact(first)
    # The state after a crash between the rename and the written file's deletion: both forms,
    # and a half-written temporary file of another crashed run.
    first.written_path.write_bytes(written)
    temp = tmp_path / f".{first.stem}.parquet.other-1.tmp"
    temp.write_bytes(b"PAR1 half")
    pd.testing.assert_frame_equal(read_inference_log(tmp_path), before)

    result = maintain_log(tmp_path, _policy(), datetime.now(UTC))
    assert result.compactions[0].outcome == "finished"
    assert not first.written_path.exists() and temp.exists()  # a temp file may be in use
    result = maintain_log(tmp_path, _policy(), datetime.now(UTC) + timedelta(hours=2))
    assert result.removed_temp_files == 1 and not temp.exists()
    pd.testing.assert_frame_equal(read_inference_log(tmp_path), before)


def test_two_runs_at_once_compact_each_file_exactly_once(tmp_path):
    _write_log(tmp_path, blocks=20).close()
    before = read_inference_log(tmp_path)
    files = len(list_log_files(tmp_path))
    results, errors = [], []

    def run() -> None:
        try:
            results.append(maintain_log(tmp_path, _policy(), datetime.now(UTC)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and all(r.failures == [] for r in results)
    assert sum(len(r.compacted()) for r in results) == files  # counted once, by one run
    assert sum(c.records for r in results for c in r.compacted()) == len(before)
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    pd.testing.assert_frame_equal(read_inference_log(tmp_path), before)


def _aged(log_file_path: Path, age: timedelta, folder: Path) -> None:
    """Move a closed file to ``folder``, looking ``age`` old (name stamp and modification
    time): tests cannot wait days."""
    name = LogFileName.parse(log_file_path.name)
    opened = name.opened - age
    target = folder / log_file_path.name.replace(f"{name.opened:%Y%m%dT%H%M%S}",
                                                 f"{opened:%Y%m%dT%H%M%S}")
    log_file_path.rename(target)
    stamp = (datetime.now(UTC) - age).timestamp()
    os.utime(target, (stamp, stamp))


def test_retention_removes_by_age_then_oldest_first_but_never_the_drift_window(tmp_path):
    for day in (70, 10, 3, 2):
        directory = tmp_path / f"d{day}"
        _write_log(directory, blocks=1, rows=30, rotate_bytes=2**20).close()
        for path in directory.iterdir():
            _aged(path, timedelta(days=day), tmp_path)
    _write_log(tmp_path, blocks=1, rows=30, rotate_bytes=2**20).close()  # today's: drift window
    now = datetime.now(UTC)
    files = list_log_files(tmp_path)
    size = files[0].size
    assert [f.size for f in files] == [size] * 5  # same records, same size

    plan = plan_retention(files, 0, _policy(max_bytes=3 * size), now)
    assert [(r.log_file.stem, r.reason) for r in plan.removals] == [
        (files[0].stem, "age"), (files[1].stem, "size")]
    assert plan.kept_bytes == 3 * size and not plan.over_limit

    plan = plan_retention(files, 0, _policy(max_bytes=size // 2), now)
    assert [r.reason for r in plan.removals] == ["age", "size", "size", "size"]
    assert plan.over_limit and plan.kept_bytes == plan.protected_bytes == size
    assert plan.removals[-1].log_file.stem == files[3].stem  # today's file is kept

    plan = plan_retention(files, 0, _policy(max_bytes=size // 2,
                                            protected=timedelta(days=60)), now)
    assert [r.reason for r in plan.removals] == ["age"] and plan.over_limit


def test_retention_shorter_than_the_drift_window_is_a_config_error(tmp_path):
    path = tmp_path / "monitoring.yaml"
    path.write_text("log_retention: {max_age: 12h}\n")
    with pytest.raises(MonitoringConfigError, match="max_age 12h is shorter than drift.window"):
        MonitoringConfig.from_yaml(path)
    path.write_text("log_retention: {max_age: 30d, protect_performance_window: true}\n")
    with pytest.raises(MonitoringConfigError, match="performance.window"):
        MonitoringConfig.from_yaml(path)
    path.write_text("log_retention: {max_bytes: 500MB, protect_performance_window: true}\n")
    policy = RetentionPolicy.from_config(MonitoringConfig.from_yaml(path))
    assert policy == RetentionPolicy(max_age=timedelta(days=60), max_bytes=500_000_000,
                                     protected=timedelta(days=60))
    path.write_text("log_retention: {max_bytes: a lot}\n")
    with pytest.raises(MonitoringConfigError, match="max_bytes"):
        MonitoringConfig.from_yaml(path)


# -- end to end: a real `bentoml serve` ------------------------------------------------------
@pytest.fixture(scope="module")
def served_log(trained_entry, tmp_path_factory) -> tuple[Path, list[str]]:
    """A log written by a real 2-worker `bentoml serve` (many small files, sealed on SIGTERM),
    plus files of 2 and 3 days ago written by the service's writer."""
    workdir = tmp_path_factory.mktemp("retention")
    log_dir = workdir / "inference_log"
    server = start_server(SERVICE, workdir, extra={
        "model_tag": trained_entry.tag,
        "inference_log": {"directory": str(log_dir), "flush_seconds": 0.2,
                          "rotate_bytes": 40_000}})
    bodies = request_bodies(trained_entry, 300, prefix="R")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for start in range(0, 300, 10):
                answer = client.post("/predict_batch", json={"customers": bodies[start:start + 10]})
                assert answer.status_code == 200, answer.text
            for body in bodies[:40]:
                assert client.post("/predict", json=body).status_code == 200
    finally:
        server.stop(timeout=30)  # SIGTERM: every worker drains and seals its files
    from training.generate import GeneratorConfig, generate_customers

    now = datetime.now(UTC)
    for days, seed in ((3, 501), (2, 502)):
        old_dir = workdir / f"old{days}"
        old = generate_customers(GeneratorConfig(rows=300, seed=seed))
        log_predictions(old_dir, trained_entry, old, now - timedelta(days=days))
        for path in old_dir.iterdir():
            _aged(path, timedelta(days=days), log_dir)
    return log_dir, [b["customer_id"] for b in bodies] + [b["customer_id"] for b in bodies[:40]]


def _drift(churn, capsys, log_dir: Path, reports: Path) -> dict:
    code = churn(["drift", "--window", "24h", "--inference-log", str(log_dir), "--report-dir",
                  str(reports), "--no-push"])
    output = capsys.readouterr()
    assert code == 0, output
    (report,) = reports.glob("drift-*.json")
    drift = json.loads(report.read_text())["drift"]
    assert drift["current_rows"] == 340
    return drift


def _config(path: Path, max_bytes: int) -> Path:
    path.write_text(yaml.safe_dump({"log_retention": {"max_bytes": max_bytes}}))
    return path


@pytest.mark.integration
def test_compaction_and_retention_of_a_served_log_keep_the_drift_window(
    served_log, tmp_path, churn, capsys, caplog, pushgateway
):
    log_dir, served_ids = served_log
    files = list_log_files(log_dir)
    assert {f.name.host for f in files} == {writer_host()}
    assert len({f.name.pid for f in files}) >= 2 and all(f.sealed for f in files)
    now = datetime.now(UTC)
    window = (now - timedelta(hours=24), now)
    before = read_inference_log(log_dir, *window)
    assert sorted(before["customer_id"]) == sorted(served_ids)
    drift_before = _drift(churn, capsys, log_dir, tmp_path / "r1")

    # First run: compaction only (the limit is far away).
    code = churn(["log", "compact", "--inference-log", str(log_dir), "--no-push",
                  "--config", str(_config(tmp_path / "wide.yaml", 10**12))])
    line = capsys.readouterr().out.strip()
    assert code == 0 and line.startswith(f"compacted {len(files)} files (940 records")
    compacted = list_log_files(log_dir)
    assert {f.name.form for f in compacted} == {"parquet"}
    pd.testing.assert_frame_equal(read_inference_log(log_dir, *window), before)
    assert _drift(churn, capsys, log_dir, tmp_path / "r2") == drift_before

    # Second run: a limit that forces the oldest (3-day) files out, not the 2-day ones.
    def opened_days_ago(f):
        return round((now - f.name.opened) / timedelta(days=1))

    old3 = [f for f in compacted if opened_days_ago(f) == 3]
    limit = sum(f.size for f in compacted) - sum(f.size for f in old3) + 100
    code = churn(["log", "compact", "--inference-log", str(log_dir), "--pushgateway",
                  pushgateway, "--config", str(_config(tmp_path / "tight.yaml", limit))])
    line = capsys.readouterr().out.strip()
    assert code == 0 and f"removed {len(old3)} by size" in line, line
    left = list_log_files(log_dir)
    assert sum(f.size for f in left) <= limit
    assert {opened_days_ago(f) for f in left} == {0, 2}
    pd.testing.assert_frame_equal(read_inference_log(log_dir, *window), before)
    assert _drift(churn, capsys, log_dir, tmp_path / "r3") == drift_before

    # A limit below what the drift window holds: everything it needs stays, loudly.
    code = churn(["log", "compact", "--inference-log", str(log_dir), "--pushgateway",
                  pushgateway, "--config", str(_config(tmp_path / "tiny.yaml", 1000))])
    captured = capsys.readouterr()
    assert code == 0 and "OVER LIMIT" in captured.out
    assert any(r.levelname == "ERROR" and "over its size limit" in r.getMessage()
               for r in caplog.records)
    pd.testing.assert_frame_equal(read_inference_log(log_dir, *window), before)
    assert {opened_days_ago(f) for f in list_log_files(log_dir)} == {0}

    def pushed(name: str, **labels: str) -> float:
        (value,) = [v for found, v in pushed_samples(pushgateway, name)
                    if found.get("job") == "churn_log_retention"
                    and all(found.get(k) == want for k, want in labels.items())]
        return value

    assert pushed("churn_inference_log_over_limit") == 1
    assert pushed("churn_inference_log_removed_files", reason="size") == len(
        [f for f in left if opened_days_ago(f) == 2])
    assert pushed("churn_inference_log_bytes", form="parquet") == sum(
        f.size for f in list_log_files(log_dir))
    assert pushed("churn_inference_log_limit_bytes") == 1000
