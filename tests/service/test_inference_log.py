"""The inference log: complete after close, rotated, sampled, readable while being written;
files named per host and pid, sealed when closed, never written after their age."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from kernel.inference_log import (
    UNSEALED_CLOSED_AFTER,
    LogFileName,
    list_log_files,
    read_inference_log,
    read_log_file,
)
from service.config import InferenceLogConfig
from service.inference_log import IPC_OPTIONS, InferenceLogWriter, LogBlock, utc_timestamp


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


def test_a_value_shared_by_every_row_is_written_into_every_record(tmp_path):
    """A /predict_batch block: one request id for all its rows and, usually, no unseen
    category; written as one shared text, read back on every record."""
    block = _block(300, request_id="only")
    block.unseen = [()] * 300
    writer = _writer(tmp_path)
    writer.log(block)
    writer.close()
    frame = read_inference_log(tmp_path)
    assert len(frame) == 300
    assert set(frame["request_id"]) == {"only"}
    assert all(u == [] for u in frame["unseen_categories"])
    assert list(frame["customer_id"]) == [f"c{i}" for i in range(300)]


def test_columns_held_as_arrow_and_one_shared_request_id_write_the_same_records(tmp_path):
    """A /predict_batch block hands over its ids and categorical features as the Arrow text it
    decoded, and its one request id as a string: the records are those of the plain block,
    sampled or not."""
    for sample_rate in (1.0, 0.5):
        stamp = utc_timestamp()
        plain, held = (_block(300, request_id="call", timestamp=stamp) for _ in range(2))
        held.request_ids = "call"
        held.texts = {"customer_id": pa.chunked_array([held.customer_ids[:100],
                                                       held.customer_ids[100:]]),
                      "region": pa.array(held.features["region"], pa.string())}
        frames = []
        for name, block in (("plain", plain), ("held", held)):
            writer = _writer(tmp_path / f"{name}{sample_rate}", sample_rate=sample_rate, seed=3)
            writer.log(block)
            writer.close()
            frames.append(read_inference_log(tmp_path / f"{name}{sample_rate}"))
        pd.testing.assert_frame_equal(*frames)
        assert 100 < len(frames[0]) <= 300 and set(frames[0]["request_id"]) == {"call"}


def test_rotates_by_size_and_never_reopens_a_file(tmp_path):
    writer = _writer(tmp_path, rotate_bytes=8_000)
    for _ in range(10):
        writer.log(_block(100))
    writer.close()
    files = sorted(tmp_path.glob("inferences-*.arrows"))
    assert len(files) >= 5
    names = [LogFileName.parse(f.name) for f in files]
    assert {(n.host, n.pid) for n in names} == {(writer.host, os.getpid())}
    assert sorted(n.number for n in names) == list(range(1, len(files) + 1))
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


def test_reader_skips_a_truncated_last_batch_and_filters_time(tmp_path):
    now = datetime.now(UTC)
    writer = _writer(tmp_path, flush_seconds=0.1)
    writer.log(_block(10, timestamp=(now - timedelta(minutes=2)).isoformat()))
    time.sleep(0.3)  # its own batch
    writer.log(_block(10, timestamp=now.isoformat()))
    writer.close()
    (path,) = tmp_path.glob("inferences-*.arrows")
    whole = path.read_bytes()
    stream = pa.ipc.open_stream(whole)
    batch = stream.read_next_batch()

    def encoded(*batches: pa.RecordBatch) -> bytes:  # a stream without its end marker
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, stream.schema, options=IPC_OPTIONS) as copy:
            for one in batches:
                copy.write_batch(one)
        return sink.getvalue().to_pybytes()[:-8]

    batch_bytes = encoded(batch)[len(encoded()):]  # one batch message, as the writer writes it
    assert whole.startswith(encoded()) and batch_bytes in whole
    path.chmod(0o644)  # unseal: as if the writer had crashed in the middle of a third batch
    path.write_bytes(whole[:-8] + batch_bytes[:len(batch_bytes) // 2])  # no end marker either
    assert len(read_inference_log(tmp_path)) == 20
    assert len(read_inference_log(tmp_path, start=now - timedelta(minutes=1))) == 10
    assert len(read_inference_log(tmp_path, end=now - timedelta(minutes=1))) == 10
    assert len(read_inference_log(tmp_path, end=now - timedelta(hours=1))) == 0
    assert read_inference_log(tmp_path / "nothing").empty


def test_json_lines_files_of_older_writers_still_read_alike(tmp_path):
    """Writers before the Arrow stream wrote one JSON object per line: a folder may hold both
    forms, read into one frame with the same types (a truncated last line skipped)."""
    writer = _writer(tmp_path)
    writer.log(_block(4))
    writer.close()
    arrow = read_inference_log(tmp_path)
    records = arrow.assign(timestamp=arrow["timestamp"].map(lambda t: t.isoformat()))
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records.to_dict("records"))
    old = tmp_path / "inferences-20261130T120000-old-pod-7-1.jsonl"
    old.write_bytes(lines + lines[:40])  # a crash mid-line
    both = read_inference_log(tmp_path)
    assert len(both) == 8
    first, again = both.iloc[:4].reset_index(drop=True), both.iloc[4:].reset_index(drop=True)
    assert first.equals(again) or first.astype(str).equals(again.astype(str))
    assert again["auto_renew_enabled"].tolist() == arrow["auto_renew_enabled"].tolist()
    assert again["unseen_categories"].tolist() == [["region"], [], [], ["region"]]


def test_file_names_carry_the_pod_name_even_with_hyphens_and_old_names_still_parse(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("POD_NAME", "churn-service-7d9f8b-x2k9p")
    writer = _writer(tmp_path)
    writer.log(_block(10))
    writer.close()
    (path,) = tmp_path.glob("inferences-*.arrows")
    name = LogFileName.parse(path.name)
    assert (name.host, name.pid, name.number, name.form) == (
        "churn-service-7d9f8b-x2k9p", os.getpid(), 1, "arrows")
    assert abs(name.opened - datetime.now(UTC)) < timedelta(minutes=1)

    monkeypatch.setenv("POD_NAME", "web 1/../x")  # one path segment whatever the variable
    assert _writer(tmp_path).host == "web_1_.._x"
    # A StatefulSet pod ends in digits; names of the pid-only era have no host at all.
    assert LogFileName.parse("inferences-20261130T120000-churn-0-17-3.parquet").host == "churn-0"
    old = LogFileName.parse("inferences-20261130T120000-4242-7.jsonl")
    assert (old.host, old.pid, old.number, old.form) == ("", 4242, 7, "jsonl")
    assert LogFileName.parse("inferences-20261130T120000-4242.jsonl") is None
    assert LogFileName.parse(".inferences-20261130T120000-h-1-1.parquet.h-1.tmp") is None


def test_two_writers_with_one_host_and_pid_never_share_a_file(tmp_path):
    """A restarted container gets the same pod name and often the same pid: the name is
    created exclusively, so the second writer takes the next number instead of appending."""
    first, second = _writer(tmp_path, host="pod-a"), _writer(tmp_path, host="pod-a")
    first.log(_block(10, request_id="first"))
    second.log(_block(10, request_id="second"))
    first.close()
    second.close()
    files = list_log_files(tmp_path)
    assert len(files) == 2
    for log_file in files:
        ids = set(read_log_file(log_file).column("request_id").to_pylist())
        assert len(ids) == 1  # each file holds one writer's records only
    assert len(read_inference_log(tmp_path)) == 20


def test_a_file_is_sealed_when_closed_by_age_even_without_traffic(tmp_path):
    writer = _writer(tmp_path, rotate_seconds=0.6, flush_seconds=0.1)
    writer.log(_block(10))
    time.sleep(0.3)
    (open_file,) = list_log_files(tmp_path)
    assert not open_file.sealed and not open_file.closed(datetime.now(UTC))
    time.sleep(1.0)  # no traffic: the flush tick alone closes the file
    (closed_file,) = list_log_files(tmp_path)
    assert closed_file.sealed and closed_file.closed(datetime.now(UTC))
    writer.log(_block(5))
    writer.close()
    assert len(list_log_files(tmp_path)) == 2  # a later record opens a new file
    assert len(read_inference_log(tmp_path)) == 15
    # A writer that died before sealing: its file counts as closed once older than any
    # writer may keep a file open.
    assert open_file.closed(open_file.name.opened + UNSEALED_CLOSED_AFTER)


def test_a_file_deleted_while_open_is_not_written_to_again(tmp_path):
    writer = _writer(tmp_path, flush_seconds=0.1)
    writer.log(_block(10))
    time.sleep(0.4)
    (first,) = tmp_path.glob("inferences-*.arrows")
    first.unlink()  # by hand, or a compactor told the wrong age
    writer.log(_block(7))
    writer.close()
    assert len(read_inference_log(tmp_path)) == 7  # the later records are in a new file


class _DiskFullAfterHalf:
    """The open log file, on a disk that fills up in the middle of the next write (a stand-in:
    this machine has no volume to fill)."""

    def __init__(self, file):
        self.file = file

    def write(self, data) -> int:
        self.file.write(bytes(data)[:len(data) // 2])
        self.file.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_write_that_fails_halfway_costs_its_records_only(tmp_path):
    """Half a batch in a file would stop every reader there: the writer leaves that file and
    puts the next records in a new one."""
    writer = _writer(tmp_path, flush_seconds=0.1)
    writer.log(_block(10, request_id="before"))
    time.sleep(0.4)
    writer._file = _DiskFullAfterHalf(writer._file)  # the writer thread waits on its queue
    writer.log(_block(7, request_id="lost"))
    time.sleep(0.4)
    writer.log(_block(5, request_id="after"))
    writer.close()
    frame = read_inference_log(tmp_path)
    assert frame["request_id"].value_counts().to_dict() == {"before": 10, "after": 5}
    assert len(list_log_files(tmp_path)) == 2


def test_a_batch_of_another_shape_starts_a_new_file(tmp_path):
    """A stream has one schema: records shaped otherwise (here a feature fewer) go to a new
    file, and both read."""
    writer = _writer(tmp_path, flush_seconds=0.1)
    writer.log(_block(10))
    time.sleep(0.4)
    other = _block(5)
    del other.features["region"]
    writer.log(other)
    writer.close()
    frame = read_inference_log(tmp_path)
    assert len(list_log_files(tmp_path)) == 2 and len(frame) == 15
    assert frame["region"].isna().sum() == 5 + 5  # five sent as null, five never sent


def test_dates_in_text_fields_stay_text(tmp_path):
    """Arrow's JSON reader would take "2025-01-01" for a date; JSON has no dates."""
    writer = _writer(tmp_path)
    block = _block(4)
    block.customer_ids = ["2025-01-01", "2025-01-02", "2025-01-03", "c4"]
    block.features["region"] = np.array(["2025-01-01"] * 4, dtype=object)
    block.unseen = [("2025-01-01",)] * 4
    writer.log(block)
    writer.close()
    frame = read_inference_log(tmp_path)
    records = frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat()))
    old = tmp_path / "older"  # the same records as an older writer's JSON lines
    old.mkdir()
    (old / "inferences-20261130T120000-pod-7-1.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in records.to_dict("records")))
    for read in (frame, read_inference_log(old)):
        assert read["customer_id"].tolist() == ["2025-01-01", "2025-01-02", "2025-01-03", "c4"]
        assert read["region"].tolist() == ["2025-01-01"] * 4
        assert read["unseen_categories"].tolist() == [["2025-01-01"]] * 4


def test_writer_settings_are_capped_so_closed_files_can_be_known():
    with pytest.raises(ValueError, match="rotate_seconds"):
        InferenceLogConfig(rotate_seconds=7200)
    with pytest.raises(ValueError, match="flush_seconds"):
        InferenceLogConfig(flush_seconds=120)
    assert InferenceLogConfig().rotate_seconds == 300
