"""Gauges for the Pushgateway: one group per job and model version, pushed with bounded retries.

Each push replaces its whole group (HTTP PUT), so a metric that has no value in this run (for
example the feature scores of an "insufficient data" run) disappears instead of going stale.
Metric names are part of the interface with the alert rules and dashboards: docs/monitoring.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from monitoring.config import PushgatewaySettings

if TYPE_CHECKING:  # only annotations: importing them would pull in Evidently and scikit-learn
    from monitoring.drift import DriftJobResult
    from monitoring.performance import VersionPerformance
    from monitoring.retrain import RetrainDecision

log = logging.getLogger("churn.monitoring")

DRIFT_JOB = "churn_drift"
PERFORMANCE_JOB = "churn_performance"
RETRAIN_JOB = "churn_retrain_check"


class PushError(OSError):
    """The Pushgateway did not accept the metrics after every retry."""


class _Metrics:
    """A registry with a terse way to set optional gauges (None values are left out)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}

    def set(self, name: str, help_text: str, value: float | bool | None,
            labels: dict[str, str] | None = None) -> None:
        if value is None:
            return
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = Gauge(name, help_text, list(labels or {}), registry=self.registry)
            self._gauges[name] = gauge
        (gauge.labels(**labels) if labels else gauge).set(float(value))


def drift_registry(result: DriftJobResult, now: float) -> CollectorRegistry:
    """The ``churn_drift`` group: dataset and feature drift, prediction drift, estimates."""
    m = _Metrics()
    drift = result.drift
    m.set("churn_drift_insufficient_data", "1 when the window had fewer rows than min_rows "
          "(no drift verdict)", drift.insufficient_data)
    m.set("churn_drift_detected", "1 when the share of drifted features reached the threshold",
          drift.drift_detected)
    m.set("churn_drift_current_rows", "rows in the current window", drift.current_rows)
    m.set("churn_reference_roc_auc", "test ROC-AUC stored with the model",
          result.reference_roc_auc)
    m.set("churn_drift_last_run_timestamp_seconds", "end of the last drift run (unix time)", now)
    if drift.insufficient_data:
        return m.registry
    m.set("churn_drift_share", "share of features whose drift test fired", drift.drift_share)
    for f in drift.features:
        labels = {"feature": f.feature}
        m.set("churn_feature_drift_score", "drift score of the feature (method in the report)",
              f.score, labels)
        m.set("churn_feature_drift_detected", "1 when the feature's drift test fired",
              f.detected, labels)
        m.set("churn_feature_psi", "population stability index (<0.1 stable, >0.25 drift)",
              f.psi, labels)
        m.set("churn_feature_missing_share", "share of current rows with the feature missing",
              f.missing_share, labels)
        m.set("churn_feature_unseen_share", "share of current rows with a category unseen in "
              "training", f.unseen_share, labels)
    if drift.prediction is not None:
        m.set("churn_prediction_drift_score", "drift score of churn_probability",
              drift.prediction.score)
        m.set("churn_prediction_psi", "PSI of churn_probability", drift.prediction.psi)
    if result.estimate is not None:
        m.set("churn_estimated_roc_auc", "ROC-AUC expected from calibrated probabilities "
              "(no labels)", result.estimate.roc_auc)
        m.set("churn_estimated_precision", "precision expected at the model threshold",
              result.estimate.precision)
        m.set("churn_estimated_recall", "recall expected at the model threshold",
              result.estimate.recall)
    return m.registry


def performance_registry(version: VersionPerformance, now: float) -> CollectorRegistry:
    """The ``churn_performance`` group of one model version (metrics only when enough rows)."""
    m = _Metrics()
    m.set("churn_measured_labelled_rows", "predictions joined to a label", version.rows)
    m.set("churn_reference_roc_auc", "test ROC-AUC stored with the model",
          version.reference_roc_auc)
    m.set("churn_performance_last_run_timestamp_seconds", "end of the last performance run "
          "(unix time)", now)
    if version.sufficient:
        m.set("churn_measured_roc_auc", "ROC-AUC on labelled predictions", version.roc_auc)
        m.set("churn_measured_precision", "precision of the served decision", version.precision)
        m.set("churn_measured_recall", "recall of the served decision", version.recall)
        m.set("churn_measured_calibration_error", "expected calibration error, 10 bins",
              version.calibration_error)
    return m.registry


def retrain_registry(decision: RetrainDecision, now: float) -> CollectorRegistry:
    """The ``churn_retrain_check`` group: the decision and one 0/1 series per reason."""
    m = _Metrics()
    m.set("churn_retrain_recommended", "1 when retraining is recommended", decision.recommended)
    for reason, fired in decision.reasons.items():
        m.set("churn_retrain_reason", "1 when this reason recommends retraining", fired,
              {"reason": reason})
    m.set("churn_model_age_days", "days since the model was trained", decision.model_age_days)
    m.set("churn_retrain_check_last_run_timestamp_seconds", "end of the last retrain check "
          "(unix time)", now)
    return m.registry


def push_metrics(
    registry: CollectorRegistry, job: str, model_version: str, settings: PushgatewaySettings,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """PUT the group ``{job, model_version}``; retry ``settings.retries`` times with doubling
    backoff. Raises PushError naming the gateway and the last failure."""
    from prometheus_client import push_to_gateway

    attempts = settings.retries + 1
    wait = settings.backoff_seconds
    for attempt in range(1, attempts + 1):
        try:
            push_to_gateway(settings.url, job=job, registry=registry,
                            grouping_key={"model_version": model_version},
                            timeout=settings.timeout_seconds)
            log.info("pushed %s metrics for model version %s to %s", job, model_version,
                     settings.url)
            return
        except OSError as exc:  # URLError, connection refused, HTTP errors from the gateway
            last = exc
            if attempt < attempts:
                log.warning("push to %s failed (attempt %d of %d): %s; retrying in %.1fs",
                            settings.url, attempt, attempts, exc, wait)
                sleep(wait)
                wait *= 2
    raise PushError(f"Pushgateway {settings.url} did not accept the {job} metrics after "
                    f"{attempts} attempts: {last}")
