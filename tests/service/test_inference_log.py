"""The inference log: complete after close, rotated, sampled, readable while being written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from service.inference_log import InferenceLogWriter, LogBlock, read_inference_log, utc_timestamp


def _block(n: int, request_id: str = "r1", timestamp: str | None = None) -> LogBlock:
    return LogBlock(
        timestamp=timestamp or utc_timestamp(), request_ids=[request_id] * n,
        customer_ids=[f"c{i}" for i in range(n)],
        features={"tenure_days": np.arange(n, dtype=float),
                  "auto_renew_enabled": np.where(np.arange(n) % 2, 1.0, np.nan),
                  "region": np.array(["europe", None] * (n // 2) + ["x"] * (n % 2), dtype=object)},
        probability=np.linspace(0, 1, n), will_churn=np.linspace(0, 1, n) >= 0.5,
        risk_level=np.array(["LOW"] * n, dtype=object),
        unseen=[("region",) if i % 3 == 0 else () for i in range(n)],
    )


def _writer(tmp_path, **kwargs) -> InferenceLogWriter:
    return InferenceLogWriter(tmp_path, model_tag="m:v1", model_version="v1",
                              boolean_features=["auto_renew_enabled"], **kwargs)


def test_close_writes_every_record_with_the_agreed_fields(tmp_path):
    writer = _writer(tmp_path, flush_seconds=60)
    for i in range(20):
        writer.log(_block(50, request_id=f"req-{i}"))
    writer.close()
    frame = read_inference_log(tmp_path)
    assert len(frame) == 1000 == writer.written
    assert {"timestamp", "request_id", "model_tag", "model_version", "customer_id",
            "tenure_days", "auto_renew_enabled", "region", "churn_probability", "will_churn",
            "risk_level", "unseen_categories"} <= set(frame.columns)
    first = frame.iloc[0]
    assert first["model_version"] == "v1" and first["request_id"] == "req-0"
    assert first["auto_renew_enabled"] is None or np.isnan(first["auto_renew_enabled"])
    assert frame.iloc[1]["auto_renew_enabled"] is True  # booleans as received, not 1.0
    assert first["unseen_categories"] == ["region"]


def test_rotates_by_size_and_never_reopens_a_file(tmp_path):
    writer = _writer(tmp_path, rotate_bytes=20_000)
    for _ in range(10):
        writer.log(_block(100))
    writer.close()
    files = sorted(tmp_path.glob("inferences-*.jsonl"))
    assert len(files) >= 5
    assert len({f.name.split("-")[2] for f in files}) == 1  # one pid
    assert len(read_inference_log(tmp_path)) == 1000


def test_sampling_keeps_about_the_configured_share(tmp_path):
    writer = _writer(tmp_path, sample_rate=0.2, seed=1)
    writer.log(_block(5000))
    writer.close()
    assert 850 < len(read_inference_log(tmp_path)) < 1150


def test_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    dropped = []
    writer = _writer(tmp_path, queue_rows=1000, on_dropped=dropped.append)
    for _ in range(50):
        writer.log(_block(600))
    writer.close()
    assert sum(dropped) == writer.dropped > 0
    assert len(read_inference_log(tmp_path)) + writer.dropped == 50 * 600


def test_reader_skips_a_truncated_last_line_and_filters_time(tmp_path):
    now = datetime.now(UTC)
    writer = _writer(tmp_path)
    writer.log(_block(10, timestamp=(now - timedelta(minutes=2)).isoformat()))
    writer.log(_block(10, timestamp=now.isoformat()))
    writer.close()
    (path,) = tmp_path.glob("inferences-*.jsonl")
    with path.open("ab") as handle:
        handle.write(orjson.dumps({"timestamp": now.isoformat()})[:-5])  # a crash mid-line
    assert len(read_inference_log(tmp_path)) == 20
    assert len(read_inference_log(tmp_path, start=now - timedelta(minutes=1))) == 10
    assert len(read_inference_log(tmp_path, end=now - timedelta(minutes=1))) == 10
    assert len(read_inference_log(tmp_path, end=now - timedelta(hours=1))) == 0
    assert read_inference_log(tmp_path / "nothing").empty
