"""Settings of the monitoring jobs, read from ``configs/monitoring.yaml``.

Every field has a default that works, so a missing file means "defaults". Paths left empty are
resolved against ``CHURN_HOME`` by the command line, not here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernel.yaml_model import load_yaml_model

DEFAULT_CONFIG = Path("configs/monitoring.yaml")
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_window(value: str) -> str:
    parse_window(value)
    return value


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


class MonitoringConfig(_Section):
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

    @classmethod
    def from_yaml(cls, path: Path | None) -> MonitoringConfig:
        """Read the file; None or a missing default file gives the defaults.

        Raises MonitoringConfigError naming the bad key.
        """
        if path is None:
            return cls()
        return load_yaml_model(cls, path, "monitoring config", MonitoringConfigError)
