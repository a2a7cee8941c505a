"""Custom Prometheus metrics of the service, beside BentoML's own ``bentoml_service_*``.

Create them with ``service_metrics()`` from the service's ``__init__``, not at import: BentoML
sets ``PROMETHEUS_MULTIPROC_DIR`` in each worker after the service module is imported, and
prometheus_client decides between single- and multi-process mode when a metric is created.
Gauges use ``multiprocess_mode="max"`` so N workers report one series, not one per pid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 .. 1.0


@dataclass(frozen=True)
class ServiceMetrics:
    predictions: object
    probability: object
    validation_failures: object
    unseen_categories: object
    model_info: object
    model_roc_auc: object
    log_records: object
    log_dropped: object

    def start_at_zero(self, version: str, risk_levels: list[str]) -> None:
        """Create the served version's series at 0: Prometheus' rate() and increase() cannot
        see the increment that creates a series, so the first predictions would be lost."""
        for level in risk_levels:
            self.predictions.labels(risk_level=level, model_version=version)
        self.probability.labels(model_version=version)

    def observe(self, version: str, probability: np.ndarray, risk_level: np.ndarray,
                unseen: list[tuple[str, ...]]) -> None:
        """Count one scored batch (vectorised: one call per level, not per row)."""
        levels, counts = np.unique(risk_level.astype(str), return_counts=True)
        for level, count in zip(levels, counts, strict=True):
            self.predictions.labels(risk_level=level, model_version=version).inc(int(count))
        observe_many(self.probability.labels(model_version=version), probability)
        for flagged in unseen:
            for feature in flagged:
                self.unseen_categories.labels(feature=feature).inc()

    def validation_failed(self, endpoint: str, reasons: list[str]) -> None:
        for reason in reasons:
            self.validation_failures.labels(endpoint=endpoint, reason=reason).inc()


def observe_many(histogram: object, values: np.ndarray) -> None:
    """Histogram.observe for a whole array: per-bucket counts added once per bucket.

    A 10,000-row batch would otherwise make 10,000 observe calls, each writing the shared
    multiprocess file. prometheus_client keeps per-bucket (non-cumulative) counters in
    ``_buckets`` and the sum in ``_sum``; without them, fall back to observe().
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 8:
        for value in np.asarray(values, dtype=float).tolist():
            histogram.observe(value)
        return
    index = np.searchsorted(np.asarray(bounds, dtype=float), values, side="left")
    counts = np.bincount(index, minlength=len(bounds))
    for i in np.flatnonzero(counts):
        buckets[i].inc(int(counts[i]))
    total.inc(float(np.sum(values)))


_METRICS: ServiceMetrics | None = None


def service_metrics() -> ServiceMetrics:
    """The process-wide metrics (created once: prometheus_client refuses duplicates)."""
    global _METRICS
    if _METRICS is None:
        from prometheus_client import Counter, Gauge, Histogram

        _METRICS = ServiceMetrics(
            predictions=Counter("churn_predictions", "Predictions served",
                                ["risk_level", "model_version"]),
            probability=Histogram("churn_prediction_probability",
                                  "Predicted churn probability", ["model_version"],
                                  buckets=PROBABILITY_BUCKETS),
            validation_failures=Counter("churn_validation_failures",
                                        "Rejected requests by endpoint and broken rule",
                                        ["endpoint", "reason"]),
            unseen_categories=Counter("churn_unseen_categories",
                                      "Values of open-set categories never seen in training",
                                      ["feature"]),
            model_info=Gauge("churn_model_info", "The served model (value 1)",
                             ["model_version", "model_tag", "trained_at"],
                             multiprocess_mode="max"),
            model_roc_auc=Gauge("churn_model_test_roc_auc",
                                "ROC-AUC of the served model on its held-out test split",
                                ["model_version"], multiprocess_mode="max"),
            log_records=Counter("churn_inference_log_records",
                                "Predictions written to the inference log"),
            log_dropped=Counter("churn_inference_log_dropped",
                                "Predictions dropped because the inference log queue was full"),
        )
    return _METRICS
