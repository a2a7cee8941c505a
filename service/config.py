"""Service configuration: one YAML file (``configs/service.yaml``) parsed into pydantic.

Every field has a default that works, so the file (and each section of it) is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kernel.inference_log import MAX_FLUSH_SECONDS, MAX_ROTATE_BYTES, MAX_ROTATE_SECONDS
from kernel.yaml_model import JobConfig

CONFIG_ENV = "CHURN_SERVICE_CONFIG"
CONFIG_NAME = "service.yaml"

# Process settings of the service's worker processes, set by service/service.py in the parent
# before it starts them (each reads these at its own start; a value already set wins).
# - OpenMP (XGBoost): threads that finished scoring a large /predict_batch call sleep instead of
#   spinning for the next parallel region, which took a core from the decoding of the next
#   request. /predict batches score on one thread and never start a team.
# - glibc malloc: a 10,000-row request allocates and frees some 25 MB in blocks of 0.1-4 MB
#   (body, Arrow buffers, matrix, answer). With glibc's adaptive defaults (starting at 128 KiB)
#   large blocks are mapped fresh and freed memory goes back to the system, so requests fault
#   their memory in again and again: 8-10 ms of CPU per 10,000-row request. With these fixed
#   thresholds it is kept for reuse (the worker's memory stays at its working set instead of
#   dropping between requests: docs/serving.md).
PROCESS_ENVIRONMENT = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchingConfig(_Section):
    """BentoML adaptive batching of concurrent ``/predict`` requests (see docs/serving.md)."""

    enabled: bool = True
    max_batch_size: int = Field(64, ge=2, description="rows merged into one model call at most")
    max_latency_ms: int = Field(
        1000, ge=1, description="hard budget per request; a request that cannot meet it is "
        "answered 503, so keep it far above the p99 you expect"
    )


class InferenceLogConfig(_Section):
    """The durable log of served predictions that drift detection reads. Retention and
    compaction of the files are the monitoring side's (configs/monitoring.yaml, log_retention):
    the caps below are what lets a compactor know a file is closed (kernel/inference_log.py)."""

    enabled: bool = True
    directory: Path | None = Field(
        None, description="default: $CHURN_HOME/inference_log (CHURN_HOME defaults to .churn)"
    )
    sample_rate: float = Field(1.0, ge=0, le=1, description="share of predictions logged")
    rotate_bytes: int = Field(64 * 2**20, ge=1024, le=MAX_ROTATE_BYTES,
                              description="start a new file past this size")
    rotate_seconds: float = Field(
        300, gt=0, le=MAX_ROTATE_SECONDS, description="start a new file after this long; a "
        "file is compacted to Parquet once closed, so this is also how long records stay in "
        "the written form")
    flush_seconds: float = Field(1.0, gt=0, le=MAX_FLUSH_SECONDS,
                                 description="buffered records reach disk this often")
    queue_rows: int = Field(
        1_000_000, ge=1000, description="rows waiting for the writer; beyond it rows are "
        "dropped and counted, so a stuck disk never blocks a request"
    )

    def resolved_directory(self) -> Path:
        from kernel.paths import inference_log_dir

        return self.directory if self.directory is not None else inference_log_dir()


class ShadowConfig(_Section):
    """A second model scoring every batch beside the champion, never answering
    (``service/shadow.py``, docs/shadow.md). ``CHURN_SHADOW_MODEL_TAG``, when set (a key of the
    model ConfigMap in Kubernetes; empty = off), wins over ``model_tag``."""

    model_tag: str | None = Field(None, description="name:version of the shadow; null = off")
    max_lag_seconds: float = Field(
        2.0, gt=0, description="a batch that waited longer for the shadow is skipped (counted): "
        "a shadow slower than the traffic falls behind, never the answers")
    queue_rows: int = Field(100_000, ge=100, description="rows waiting for the shadow; beyond "
                            "it batches are skipped (counted)")
    merge_rows: int = Field(4096, ge=1, description="queued batches merged into one model call "
                            "up to this many rows")


class ServiceConfig(JobConfig, _Section):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "service config"
    CONFIG_ENV: ClassVar[str | None] = CONFIG_ENV

    model_tag: str | None = Field(
        None, description="serve this name:version (CHURN_MODEL_TAG, if set, wins); pods name "
        "their model this way")
    model_name: str | None = Field(
        None, description="without a tag: serve this dataset's champion; null = the champion "
        "of the only dataset in the store")
    workers: int = Field(2, ge=1, description="worker processes (one per core)")
    max_batch_rows: int = Field(10_000, ge=1, description="customers per /predict_batch call")
    large_request_threads: int = Field(
        2, ge=1, description="threads one large /predict_batch call may use to parse its body "
        "(from 1 MiB) and score (from 2,048 rows); /predict batches use one")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="larger bodies answer 413")
    timeout_seconds: float = Field(60, gt=0, description="BentoML request timeout")
    max_in_flight: int | None = Field(
        256, ge=1, description="requests being served per worker beyond which new ones are "
        "shed with 429 (counted), so latency stays bounded under overload; null = unbounded")
    access_log: bool = Field(True, description="one JSON line per request (with request id)")
    batching: BatchingConfig = BatchingConfig()
    inference_log: InferenceLogConfig = InferenceLogConfig()
    shadow: ShadowConfig = ShadowConfig()
    recommendations: dict[str, str] = Field(
        default={
            "LOW": "No action: keep the regular experience.",
            "MEDIUM": "Send a retention offer (e.g. one free month).",
            "HIGH": "Priority outreach: personal call plus a retention offer.",
        },
        description="action per risk level, shown with each prediction",
    )

