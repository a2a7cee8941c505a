"""Settings of the monitoring jobs, read from ``configs/monitoring.yaml``.

Every field has a default that works, so a missing file means "defaults". Paths left empty are
resolved against ``CHURN_HOME`` by the command line, not here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.cluster import DEFAULT_PARTITION_BYTES, DEFAULT_PARTITION_ROWS
from kernel.yaml_model import JobConfig

CONFIG_NAME = "monitoring.yaml"
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, **{f"{u}b": 1000 ** (i + 1) for i, u in enumerate("kmgt")},
               **{f"{u}ib": 1024 ** (i + 1) for i, u in enumerate("kmgt")}}


class MonitoringConfigError(ValueError):
    """The monitoring config file is unreadable or has invalid values."""


def parse_window(text: str) -> timedelta:
    """``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` -> timedelta. Raises ValueError otherwise."""
    match = _WINDOW.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"window {text!r} is not a positive duration like 30m, 24h, 7d or 2w"
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_size(value: int | str) -> int:
    """``1048576``, ``"500MB"``, ``"20GiB"`` -> bytes. Raises ValueError otherwise."""
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"size {value!r} is not a number of bytes like 500MB or 20GiB")
    return int(float(match.group(1)) * _UNIT_BYTES[(match.group(2) or "b").lower()])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_window(value: str) -> str:
    parse_window(value)
    return value


def _check_optional_window(value: str | None) -> str | None:
    return None if value is None else _check_window(value)


class PushgatewaySettings(_Section):
    url: str = "http://127.0.0.1:9091"
    retries: int = Field(3, ge=0, le=10, description="attempts after the first one")
    backoff_seconds: float = Field(1.0, ge=0, description="wait before the first retry; doubles")
    timeout_seconds: float = Field(5.0, gt=0)


class ReportSettings(_Section):
    retention_days: float = Field(30, gt=0)


class DriftSettings(_Section):
    window: str = "24h"
    min_rows: int = Field(200, ge=1)
    drift_share: float = Field(0.3, gt=0, le=1)
    psi_bins: int = Field(10, ge=2, le=100)
    psi_epsilon: float = Field(1e-4, gt=0, lt=0.01)
    psi_watch: float = Field(0.1, gt=0)
    psi_drift: float = Field(0.25, gt=0)
    # `churn drift --dask` (docs/scale.md): Evidently's tests run on a uniform sample this big
    # (100k rows x 16 columns: about 5 s); PSI, shares and means count every row.
    evidently_sample_rows: int = Field(100_000, ge=1000)
    sample_seed: int = 0
    partition_rows: int = Field(DEFAULT_PARTITION_ROWS, ge=1, description="--current files: "
                                "rows per task (inference-log files are one task each)")
    partition_bytes: int = Field(DEFAULT_PARTITION_BYTES, ge=1024)
    chunk_rows: int = Field(100_000, ge=1, description="rows a task holds at a time")

    _window = field_validator("window")(_check_window)


class EstimateSettings(_Section):
    max_reference_calibration_error: float = Field(0.05, gt=0, lt=1)
    calibration_bins: int = Field(10, ge=2, le=100)


class PerformanceSettings(_Section):
    window: str = "60d"
    breakdown: str = "7d"
    label_horizon_days: float = Field(45, gt=0)
    min_labelled_rows: int = Field(100, ge=1)
    observed_at_column: str = "observed_at"

    _window = field_validator("window", "breakdown")(_check_window)


class RetrainSettings(_Section):
    performance_margin: float = Field(0.05, ge=0, lt=1)
    max_age_days: float = Field(30, gt=0)
    max_report_age_hours: float = Field(48, gt=0)


class LogRetentionSettings(_Section):
    """Compaction and retention of the inference log (``churn log compact``): here, next to the
    windows it must keep (docs/monitoring.md)."""

    max_age: str | None = Field(
        None, description="files whose every record is older are removed; null = "
        "performance.window; never shorter than drift.window")
    max_bytes: int = Field(20 * 2**30, gt=0, description="the folder is kept under this by "
                           "removing its oldest files, but never one the protected windows need")
    protect_performance_window: bool = Field(
        False, description="also never remove, for size, records of performance.window (by "
        "default only drift.window is protected; the rest is kept as size allows)")

    _max_age = field_validator("max_age")(_check_optional_window)
    _max_bytes = field_validator("max_bytes", mode="before")(parse_size)


class MonitoringConfig(JobConfig, _Section):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "monitoring config"
    CONFIG_ERROR: ClassVar[type[Exception]] = MonitoringConfigError

    dataset: str | None = Field(
        None, description="dataset whose champion the jobs check; None = the only one in the store")
    inference_log_dir: Path | None = None
    report_dir: Path | None = None
    pushgateway: PushgatewaySettings = PushgatewaySettings()
    reports: ReportSettings = ReportSettings()
    drift: DriftSettings = DriftSettings()
    estimate: EstimateSettings = EstimateSettings()
    performance: PerformanceSettings = PerformanceSettings()
    retrain: RetrainSettings = RetrainSettings()
    log_retention: LogRetentionSettings = LogRetentionSettings()

    @model_validator(mode="after")
    def _retention_keeps_the_windows(self) -> MonitoringConfig:
        max_age = self.log_retention.max_age
        if max_age is None:
            return self
        for window, key, needed in (
            (self.drift.window, "drift.window", True),
            (self.performance.window, "performance.window",
             self.log_retention.protect_performance_window),
        ):
            if needed and parse_window(max_age) < parse_window(window):
                raise ValueError(f"log_retention.max_age {max_age} is shorter than {key} "
                                 f"{window}: retention would delete records that job reads")
        return self

