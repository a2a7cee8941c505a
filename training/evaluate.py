"""Metrics, the business-value threshold and risk cut-offs. Pure functions of arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from kernel.contract import Costs, DataContract
from kernel.model import calibration_error
from kernel.store import HoldoutMetrics, RiskCutoffs


def selection_score(metric: str, target: np.ndarray, scores: np.ndarray) -> float:
    if metric == "pr_auc":
        return float(average_precision_score(target, scores))
    return float(roc_auc_score(target, scores))


def expected_value(target: np.ndarray, flagged: np.ndarray, costs: Costs) -> float:
    """Value of sending an offer to the flagged customers: churners kept minus offers paid."""
    kept = costs.saved_customer_value * costs.offer_success_rate
    return float(np.sum(flagged * (target * kept - costs.offer_cost)))


def best_threshold(target: np.ndarray, probability: np.ndarray, costs: Costs) -> float:
    """The threshold that maximises expected value on these (out-of-fold) predictions.

    Flagging the k most likely churners is worth cumsum(kept * y - cost) over the top k; the
    best k sets the threshold. When no k has positive value, nobody is flagged (threshold 1).
    """
    order = np.argsort(-probability, kind="stable")
    p_sorted = probability[order]
    kept = costs.saved_customer_value * costs.offer_success_rate
    gain = np.cumsum(target[order] * kept - costs.offer_cost)
    # Only cut between distinct probabilities: tied customers get the same decision.
    distinct = np.append(p_sorted[1:] < p_sorted[:-1], True)
    gain = np.where(distinct, gain, -np.inf)
    k = int(np.argmax(gain))
    if gain[k] <= 0:
        return 1.0
    below = p_sorted[k + 1] if k + 1 < len(p_sorted) else 0.0
    return float((p_sorted[k] + below) / 2)


def risk_cutoffs(probability: np.ndarray, threshold: float, high_share: float) -> RiskCutoffs:
    """MEDIUM starts at the business threshold; HIGH is the top ``high_share`` of customers,
    or halfway from the threshold to 1 when the threshold is already above that quantile."""
    quantile = float(np.quantile(probability, 1 - high_share))
    high = quantile if quantile > threshold else threshold + (1 - threshold) / 2
    # Not rounded: MEDIUM must start exactly where will_churn does.
    return RiskCutoffs(medium=threshold, high=high)


def holdout_metrics(
    target: np.ndarray, probability: np.ndarray, threshold: float, costs: Costs
) -> HoldoutMetrics:
    flagged = (probability >= threshold).astype(int)
    value = expected_value(target, flagged, costs)
    return HoldoutMetrics(
        roc_auc=float(roc_auc_score(target, probability)),
        pr_auc=float(average_precision_score(target, probability)),
        precision=float(precision_score(target, flagged, zero_division=0)),
        recall=float(recall_score(target, flagged, zero_division=0)),
        f1=float(f1_score(target, flagged, zero_division=0)),
        brier=float(brier_score_loss(target, probability)),
        expected_value=value,
        expected_value_per_customer=value / len(target),
        calibration_error=calibration_error(target, probability),
        positive_rate=float(target.mean()),
        flagged_rate=float(flagged.mean()),
    )


def monotone_violations(
    predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, contract: DataContract
) -> dict[str, float]:
    """Share of rows whose risk moves against a declared ``monotone`` feature when that
    feature alone is raised by one standard deviation (tree models are constrained; a linear
    model can still learn the wrong sign on unusual data)."""
    base = predict(rows)
    violations = {}
    for column, spec in contract.features.items():
        if spec.monotone is None:
            continue
        step = float(np.nanstd(rows[column].to_numpy(float))) or 1.0
        shifted = rows.copy()
        shifted[column] = shifted[column] + step
        if spec.max is not None:
            shifted[column] = shifted[column].clip(upper=spec.max)
        delta = predict(shifted) - base
        wrong = delta < -1e-9 if spec.monotone == "increasing" else delta > 1e-9
        if wrong.any():
            violations[column] = float(wrong.mean())
    return violations
