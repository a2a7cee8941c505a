"""`churn retrain-check`: one decision per reason, and the exit codes a CronJob branches on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.drift import DriftJobResult, DriftResult
from monitoring.estimate import PerformanceEstimate
from monitoring.performance import PerformanceJobResult, VersionPerformance
from monitoring.reports import write_report
from monitoring.retrain import (
    EXIT_NO_RETRAIN,
    EXIT_RETRAIN,
    RetrainEvidence,
    decide_retrain,
)
from tests.monitoring.conftest import pushed_samples

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _evidence(**changes) -> RetrainEvidence:
    base = RetrainEvidence(model_tag="m:v1", model_version="v1",
                           trained_at=(NOW - timedelta(days=3)).isoformat(),
                           reference_roc_auc=0.88)
    return base.model_copy(update=changes)


@pytest.mark.parametrize(("changes", "reasons"), [
    ({}, set()),
    ({"drift_detected": False, "measured_roc_auc": 0.84}, set()),       # drop 0.04 < 0.05
    ({"drift_detected": True}, {"drift"}),
    ({"measured_roc_auc": 0.80}, {"performance"}),
    ({"estimated_roc_auc": 0.80}, {"performance"}),                     # no labels yet
    ({"measured_roc_auc": 0.87, "estimated_roc_auc": 0.70}, set()),     # measured wins
    ({"trained_at": (NOW - timedelta(days=31)).isoformat()}, {"age"}),
    ({"drift_detected": True, "measured_roc_auc": 0.7,
      "trained_at": "2026-01-01T00:00:00"}, {"drift", "performance", "age"}),
])
def test_decision_names_every_reason_that_fired(changes: dict, reasons: set[str]) -> None:
    decision = decide_retrain(_evidence(**changes), NOW, performance_margin=0.05,
                              max_age_days=30)
    assert {r for r, fired in decision.reasons.items() if fired} == reasons
    assert decision.recommended == bool(reasons)
    assert decision.exit_code == (EXIT_RETRAIN if reasons else EXIT_NO_RETRAIN)
    assert len(decision.explanations) == len(reasons)


def _drift_report(directory: Path, entry, when: datetime, detected: bool,
                  estimated_auc: float | None = None) -> None:
    drift = DriftResult(reference_rows=2000, current_rows=500, min_rows=200,
                        insufficient_data=False, drift_share_threshold=0.3,
                        drift_share=0.5 if detected else 0.0, drift_detected=detected)
    estimate = None if estimated_auc is None else PerformanceEstimate(
        rows=500, threshold=0.3, roc_auc=estimated_auc, precision=0.5, recall=0.5,
        expected_positive_rate=0.15, flagged_rate=0.2)
    result = DriftJobResult(run_at=when.isoformat(), model_tag=entry.tag,
                            model_version=entry.version, current_source="test", drift=drift,
                            reference_roc_auc=entry.metadata.metrics.roc_auc, estimate=estimate)
    write_report(directory, "drift", entry.version, result, when)


def _performance_report(directory: Path, entry, when: datetime, roc_auc: float) -> None:
    version = VersionPerformance(model_version=entry.version, rows=500, positives=80,
                                 sufficient=True, roc_auc=roc_auc, precision=0.5, recall=0.5,
                                 calibration_error=0.02)
    result = PerformanceJobResult(run_at=when.isoformat(), labels_source="test",
                                  window_start=when.isoformat(), window_end=when.isoformat(),
                                  predictions=500, labels=500, labelled_predictions=500,
                                  versions=[version])
    write_report(directory, "performance", "all", result, when)


def _pushed(url: str, name: str, version: str) -> dict[str, float]:
    return {labels.get("reason", ""): value for labels, value in pushed_samples(url, name)
            if labels["job"] == "churn_retrain_check" and labels["model_version"] == version}


def test_fresh_model_without_findings_exits_0_and_pushes_no(
    trained_entry, tmp_path, pushgateway, churn, capsys
) -> None:
    now = datetime.now(UTC)
    _drift_report(tmp_path, trained_entry, now - timedelta(days=3), detected=True)  # stale
    _drift_report(tmp_path, trained_entry, now - timedelta(hours=1), detected=False)
    code = churn(["retrain-check", "--report-dir", str(tmp_path), "--pushgateway", pushgateway])
    assert code == 0, capsys.readouterr().out
    assert "no retrain" in capsys.readouterr().out
    version = trained_entry.version
    assert _pushed(pushgateway, "churn_retrain_recommended", version) == {"": 0.0}
    assert _pushed(pushgateway, "churn_retrain_reason", version) == {
        "drift": 0.0, "performance": 0.0, "age": 0.0}
    assert _pushed(pushgateway, "churn_model_age_days", version)[""] < 1
    assert _pushed(pushgateway, "churn_retrain_check_last_run_timestamp_seconds", version)


def test_detected_drift_exits_10_and_pushes_the_reason(
    trained_entry, tmp_path, pushgateway, churn, capsys
) -> None:
    _drift_report(tmp_path, trained_entry, datetime.now(UTC), detected=True)
    code = churn(["retrain-check", "--report-dir", str(tmp_path), "--pushgateway", pushgateway])
    out = capsys.readouterr().out
    assert code == 10, out
    assert "RETRAIN RECOMMENDED" in out and "data drift detected" in out
    version = trained_entry.version
    assert _pushed(pushgateway, "churn_retrain_recommended", version) == {"": 1.0}
    assert _pushed(pushgateway, "churn_retrain_reason", version) == {
        "drift": 1.0, "performance": 0.0, "age": 0.0}
    assert list(tmp_path.glob(f"retrain-{version}-*.json"))


def test_measured_performance_drop_exits_10(trained_entry, tmp_path, churn, capsys) -> None:
    low = trained_entry.metadata.metrics.roc_auc - 0.08
    _performance_report(tmp_path, trained_entry, datetime.now(UTC), low)
    code = churn(["retrain-check", "--report-dir", str(tmp_path), "--no-push"])
    out = capsys.readouterr().out
    assert code == 10 and f"measured ROC-AUC {low:.3f}" in out


def test_estimated_performance_drop_exits_10_before_labels_arrive(
    trained_entry, tmp_path, churn, capsys
) -> None:
    low = trained_entry.metadata.metrics.roc_auc - 0.08
    _drift_report(tmp_path, trained_entry, datetime.now(UTC), detected=False, estimated_auc=low)
    code = churn(["retrain-check", "--report-dir", str(tmp_path), "--no-push"])
    out = capsys.readouterr().out
    assert code == 10 and f"estimated ROC-AUC {low:.3f}" in out
    # A looser margin accepts the same drop.
    assert churn(["retrain-check", "--report-dir", str(tmp_path), "--no-push",
                  "--margin", "0.1"]) == 0


def test_old_model_exits_10(trained_entry, tmp_path, churn, capsys) -> None:
    code = churn(["retrain-check", "--report-dir", str(tmp_path), "--no-push",
                  "--max-age-days", "0.00001"])
    out = capsys.readouterr().out
    assert code == 10 and "days old" in out


def test_unknown_model_exits_2(trained_entry, tmp_path, churn, capsys) -> None:
    code = churn(["retrain-check", "--model", "streaming_churn:nosuchversion",
                  "--report-dir", str(tmp_path), "--no-push"])
    assert code == 2
    assert "nosuchversion" in capsys.readouterr().err
