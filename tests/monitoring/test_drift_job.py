"""`churn drift` end to end: the service's inference log in, reports out, gauges on a real
Pushgateway; too little data; an unreachable Pushgateway (in a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.stack import free_port
from tests.monitoring.conftest import REPO, log_predictions, pushed_samples
from training.generate import GeneratorConfig, generate_customers

DRIFT_GAUGES = [
    "churn_drift_share", "churn_drift_detected", "churn_drift_insufficient_data",
    "churn_prediction_drift_score", "churn_prediction_psi", "churn_drift_current_rows",
    "churn_estimated_roc_auc", "churn_estimated_precision", "churn_estimated_recall",
    "churn_reference_roc_auc", "churn_drift_last_run_timestamp_seconds",
]
FEATURE_GAUGES = [
    "churn_feature_drift_score", "churn_feature_drift_detected", "churn_feature_psi",
    "churn_feature_missing_share", "churn_feature_unseen_share",
]


def _value(url: str, name: str, version: str, **labels: str) -> float:
    matches = [value for found, value in pushed_samples(url, name)
               if found.get("job") == "churn_drift" and found.get("model_version") == version
               and all(found.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


@pytest.fixture(scope="module")
def drifted_log(trained_entry, tmp_path_factory):
    """An hour-old inference log of 800 drifted customers, plus one from two days ago."""
    directory = tmp_path_factory.mktemp("inference_log")
    now = datetime.now(UTC)
    customers = generate_customers(GeneratorConfig(rows=800, seed=401, drifted=True))
    log_predictions(directory, trained_entry, customers, now - timedelta(hours=1))
    old = generate_customers(GeneratorConfig(rows=100, seed=402))
    log_predictions(directory, trained_entry, old, now - timedelta(days=2))
    return directory


def test_drift_job_reports_and_pushes_the_agreed_gauges(
    trained_entry, drifted_log, tmp_path, pushgateway, churn, capsys
) -> None:
    reports = tmp_path / "reports"
    started = time.time()
    code = churn(["drift", "--window", "24h", "--inference-log", str(drifted_log),
                  "--report-dir", str(reports), "--pushgateway", pushgateway])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "DRIFT DETECTED" in out and "africa" in out

    version = trained_entry.version
    assert _value(pushgateway, "churn_drift_detected", version) == 1
    assert _value(pushgateway, "churn_drift_insufficient_data", version) == 0
    assert _value(pushgateway, "churn_drift_current_rows", version) == 800  # window: 24h only
    assert _value(pushgateway, "churn_drift_share", version) >= 0.3
    assert _value(pushgateway, "churn_feature_psi", version, feature="monthly_charge") > 0.25
    assert _value(pushgateway, "churn_feature_unseen_share", version, feature="region") > 0.05
    assert _value(pushgateway, "churn_feature_drift_detected", version, feature="plan") == 0
    assert _value(pushgateway, "churn_reference_roc_auc", version) == pytest.approx(
        trained_entry.metadata.metrics.roc_auc)
    assert 0.5 < _value(pushgateway, "churn_estimated_roc_auc", version) < 1
    assert _value(pushgateway, "churn_drift_last_run_timestamp_seconds", version) >= started
    for name in DRIFT_GAUGES:
        _value(pushgateway, name, version)
    for name in FEATURE_GAUGES:
        features = {found["feature"] for found, _ in pushed_samples(pushgateway, name)
                    if found.get("model_version") == version}
        assert features == set(trained_entry.contract.features), name

    (report,) = reports.glob(f"drift-{version}-*.json")
    saved = json.loads(report.read_text())
    assert saved["drift"]["drift_detected"] is True
    assert saved["reference_calibration"]["calibrated"] is True
    html = report.with_suffix(".html").read_text()
    assert "<html" in html.lower() and len(html) > 10_000  # the Evidently report


def test_too_little_data_is_pushed_as_insufficient_not_as_drift(
    trained_entry, drifted_log, tmp_path, pushgateway, churn, capsys
) -> None:
    code = churn(["drift", "--window", "24h", "--min-rows", "1000", "--inference-log",
                  str(drifted_log), "--report-dir", str(tmp_path), "--pushgateway", pushgateway])
    out = capsys.readouterr().out
    assert code == 0
    assert "insufficient data" in out
    version = trained_entry.version
    assert _value(pushgateway, "churn_drift_insufficient_data", version) == 1
    assert _value(pushgateway, "churn_drift_detected", version) == 0
    assert _value(pushgateway, "churn_drift_current_rows", version) == 800
    # The push replaced the group: no stale drift share or feature scores are left behind.
    assert not [s for s in pushed_samples(pushgateway, "churn_drift_share")
                if s[0].get("model_version") == version]
    assert list(tmp_path.glob(f"drift-{version}-*.html"))


def test_unreachable_pushgateway_still_writes_the_report_then_fails(
    trained_entry, tmp_path
) -> None:
    current = tmp_path / "current.csv"
    generate_customers(GeneratorConfig(rows=300, seed=403, drifted=True)).to_csv(
        current, index=False)  # no churn_probability column: the job scores it
    config = tmp_path / "monitoring.yaml"
    config.write_text("pushgateway: {retries: 2, backoff_seconds: 0.05, timeout_seconds: 1}\n")
    dead = f"http://127.0.0.1:{free_port()}"
    reports = tmp_path / "reports"
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "churn_cli", "drift", "--current", str(current),
         "--pushgateway", dead, "--config", str(config), "--report-dir", str(reports)],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=180,
    )
    assert process.returncode == 2, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert dead in errors[0] and "after 3 attempts" in errors[0]
    assert "DRIFT DETECTED" in process.stdout
    (report,) = reports.glob("drift-*.json")
    saved = json.loads(report.read_text())
    assert saved["drift"]["current_rows"] == 300 and saved["rescored_rows"] == 300
    assert time.monotonic() - started < 120  # bounded retries, not a hang
