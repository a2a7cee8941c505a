"""Measured performance: late labels joined to logged predictions, per model version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from monitoring.performance import LabelError, join_labels, measure_performance, parse_labels
from tests.monitoring.conftest import log_predictions, pushed_samples
from training.generate import GeneratorConfig, generate_customers

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _labels(rows: list[tuple[str, object, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "churned", "observed_at"])


def test_each_prediction_gets_the_first_label_observed_after_it_within_the_horizon() -> None:
    predictions = pd.DataFrame({
        "timestamp": [T0, T0 + timedelta(days=20), T0, T0],
        "customer_id": ["A", "A", "B", "C"],
        "model_version": "v1",
        "churn_probability": [0.8, 0.3, 0.5, 0.5],
    })
    labels = parse_labels(_labels([
        ("A", 1, "2026-03-11T00:00:00Z"),   # 10 days after A's first prediction
        ("A", "0", "2026-03-31"),           # after A's second one
        ("B", "yes", "2026-02-28"),         # before B was scored: not its outcome
        ("C", 0, "2026-05-01"),             # 61 days later: beyond the 45-day horizon
    ]), "customer_id", "churned", "observed_at")
    joined = join_labels(predictions, labels, "customer_id", "observed_at", timedelta(days=45))
    assert joined["customer_id"].tolist() == ["A", "A"]
    assert joined["churned"].tolist() == [1, 0]
    assert joined["churn_probability"].tolist() == [0.8, 0.3]


def test_unreadable_labels_fail_with_the_column_named() -> None:
    with pytest.raises(LabelError, match="observed_at"):
        parse_labels(_labels([("A", 1, "2026-03-01")]).drop(columns="observed_at"),
                     "customer_id", "churned", "observed_at")
    with pytest.raises(LabelError, match='"churned": 1 rows are not 0/1'):
        parse_labels(_labels([("A", "maybe", "2026-03-01")]), "customer_id", "churned",
                     "observed_at")


def test_metrics_per_version_and_window_match_sklearn() -> None:
    joined = pd.DataFrame({
        "timestamp": [T0 + timedelta(days=d) for d in (0, 1, 2, 8, 9, 10, 0, 1)],
        "model_version": ["v1"] * 6 + ["v2"] * 2,
        "churn_probability": [0.9, 0.2, 0.6, 0.1, 0.7, 0.4, 0.9, 0.1],
        "will_churn": [True, False, True, False, True, False, True, False],
        "churned": [1, 0, 0, 0, 1, 1, 1, 0],
    })
    versions = measure_performance(joined, "churned", {}, T0, timedelta(days=7), min_rows=5)
    v1, v2 = versions
    target, probability = joined["churned"][:6], joined["churn_probability"][:6]
    flagged = joined["will_churn"][:6]
    assert v1.model_version == "v1" and v1.sufficient and not v2.sufficient
    assert v1.roc_auc == pytest.approx(roc_auc_score(target, probability))
    assert v1.precision == pytest.approx(precision_score(target, flagged))
    assert v1.recall == pytest.approx(recall_score(target, flagged))
    assert [w.rows for w in v1.windows] == [3, 3]
    assert v1.windows[1].start == (T0 + timedelta(days=7)).isoformat()


def test_performance_command_pushes_measured_metrics_per_model_version(
    trained_entry, tmp_path, pushgateway, churn, capsys
) -> None:
    log_dir = tmp_path / "inference_log"
    scored_at = datetime.now(UTC) - timedelta(days=10)
    customers = generate_customers(GeneratorConfig(rows=900, seed=301))
    stable = log_predictions(log_dir, trained_entry, customers.iloc[:700], scored_at)
    log_predictions(log_dir, trained_entry, customers.iloc[700:], scored_at, "canary")
    labels = customers[["customer_id", "churned"]].assign(
        observed_at=(scored_at + timedelta(days=5)).isoformat())
    labels_file = tmp_path / "labels.csv"
    labels.iloc[:850].to_csv(labels_file, index=False)  # 50 outcomes not known yet

    code = churn(["performance", "--labels", str(labels_file), "--inference-log", str(log_dir),
                  "--report-dir", str(tmp_path / "reports"), "--pushgateway", pushgateway])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "850 of 900 logged predictions have a label" in out

    expected = roc_auc_score(stable["churned"], stable["churn_probability"])
    measured = {labels["model_version"]: value
                for labels, value in pushed_samples(pushgateway, "churn_measured_roc_auc")
                if labels["job"] == "churn_performance"}
    assert measured[trained_entry.version] == pytest.approx(expected, abs=1e-9)
    assert "canary" in measured  # judged on its own predictions, beside the stable version
    rows = {labels["model_version"]: value
            for labels, value in pushed_samples(pushgateway, "churn_measured_labelled_rows")}
    assert rows == {trained_entry.version: 700.0, "canary": 150.0}
    reference = dict((labels["model_version"], value) for labels, value in
                     pushed_samples(pushgateway, "churn_reference_roc_auc")
                     if labels["job"] == "churn_performance")
    assert reference == {trained_entry.version: pytest.approx(
        trained_entry.metadata.metrics.roc_auc)}  # the canary is not in the store
    for name in ("churn_measured_precision", "churn_measured_recall",
                 "churn_measured_calibration_error",
                 "churn_performance_last_run_timestamp_seconds"):
        assert {s[0]["model_version"] for s in pushed_samples(pushgateway, name)} >= {
            trained_entry.version, "canary"}, name
    assert list((tmp_path / "reports").glob("performance-all-*.json"))


def test_no_logged_predictions_is_a_quiet_run(trained_entry, tmp_path, churn, capsys) -> None:
    labels = tmp_path / "labels.csv"
    _labels([("A", 1, "2026-03-01")]).to_csv(labels, index=False)
    code = churn(["performance", "--labels", str(labels), "--inference-log",
                  str(tmp_path / "empty"), "--report-dir", str(tmp_path), "--no-push"])
    assert code == 0
    assert "0 of 0 logged predictions have a label" in capsys.readouterr().out
