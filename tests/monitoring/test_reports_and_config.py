"""Report files (naming, newest lookup, retention) and the monitoring config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.config import MonitoringConfig, MonitoringConfigError, parse_window
from monitoring.reports import latest_report, prune_reports, write_report
from monitoring.retrain import RetrainDecision, RetrainEvidence

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _decision(when: datetime) -> RetrainDecision:
    evidence = RetrainEvidence(model_tag="m:v1", model_version="v1",
                               trained_at=when.isoformat(), reference_roc_auc=0.9)
    return RetrainDecision(run_at=when.isoformat(), recommended=False,
                           reasons={"drift": False, "performance": False, "age": False},
                           explanations=[], model_age_days=0.0, evidence=evidence)


def test_reports_are_timestamped_found_newest_first_and_pruned(tmp_path: Path) -> None:
    for days in (40, 35, 2, 0):
        write_report(tmp_path, "retrain", "v1", _decision(NOW), NOW - timedelta(days=days))
    write_report(tmp_path, "retrain", "v2", _decision(NOW), NOW - timedelta(days=90))
    write_report(tmp_path, "retrain", "v1", _decision(NOW), NOW)  # same second: no overwrite
    assert len(list(tmp_path.glob("*.json"))) == 6

    newest = latest_report(tmp_path, "retrain", "v1")
    assert newest.name == "retrain-v1-20260601T120000Z-1.json"
    assert latest_report(tmp_path, "retrain", "v1", not_before=NOW + timedelta(hours=1)) is None
    assert latest_report(tmp_path, "drift", "v1") is None

    deleted = prune_reports(tmp_path, retention_days=30, now=NOW)
    assert len(deleted) == 4  # two old v1 runs, .json and .html each
    left = sorted(p.name for p in tmp_path.glob("*.json"))
    # v2's only run is kept whatever its age: the newest report of a kind always stays.
    assert [n[:10] for n in left] == ["retrain-v1", "retrain-v1", "retrain-v1", "retrain-v2"]
    assert "<html" in newest.with_suffix(".html").read_text()


def test_project_config_parses_and_windows_read_as_durations() -> None:
    config = MonitoringConfig.from_yaml(REPO / "configs" / "monitoring.yaml")
    assert config == MonitoringConfig()  # the file states the defaults
    assert parse_window(config.drift.window) == timedelta(hours=24)
    assert parse_window("90m") == timedelta(minutes=90)
    assert parse_window("2w") == timedelta(days=14)
    with pytest.raises(ValueError, match="positive duration"):
        parse_window("yesterday")


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.yaml"
    path.write_text("drift: {min_rows: 0, window: soon}\n")
    with pytest.raises(MonitoringConfigError, match=r"drift\.window.*drift\.min_rows"):
        MonitoringConfig.from_yaml(path)
    path.write_text("drift: {psi_bin: 10}\n")
    with pytest.raises(MonitoringConfigError, match="psi_bin"):
        MonitoringConfig.from_yaml(path)
