"""Label-free performance estimation from calibrated probabilities (the idea of NannyML's CBPE).

If a probability p is calibrated, a row with p = 0.3 is "0.3 of a churner and 0.7 of a
stayer". Summing these fractional rows gives the expected confusion matrix at the model's
threshold, and weighting every (positive, negative) pair by p_i * (1 - p_j) gives the expected
ROC-AUC, all without a single label. The assumption: calibration learnt on the reference still
holds on current data (covariate shift is fine, a changed P(churn | features) is not). So the
reference probabilities are checked for calibration first; see docs/monitoring.md.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from kernel.model import calibration_error


class CalibrationCheck(BaseModel):
    """Are the stored (out-of-fold) reference probabilities calibrated against their labels?"""

    rows: int
    calibration_error: float
    max_calibration_error: float
    calibrated: bool


class PerformanceEstimate(BaseModel):
    """Expected performance on unlabelled rows, at the model's decision threshold."""

    rows: int
    threshold: float
    roc_auc: float | None
    precision: float | None
    recall: float | None
    expected_positive_rate: float
    flagged_rate: float


def check_calibration(
    target: np.ndarray, probability: np.ndarray, max_error: float, bins: int = 10
) -> CalibrationCheck:
    """Expected calibration error of ``probability`` against ``target`` (0/1), and the verdict."""
    target = np.asarray(target, dtype=float)
    probability = np.asarray(probability, dtype=float)
    error = calibration_error(target, probability, bins) if len(target) else float("nan")
    return CalibrationCheck(rows=len(target), calibration_error=error,
                            max_calibration_error=max_error,
                            calibrated=bool(error <= max_error))


def expected_roc_auc(probability: np.ndarray) -> float | None:
    """ROC-AUC expected when each row is a positive with weight p and a negative with 1 - p.

    Pairs are ranked by p itself; ties count half; a row is never paired with itself.
    O(n log n). None when the expected positives or negatives are (almost) zero.
    """
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    if len(p) < 2:
        return None
    q = 1.0 - p
    values, group = np.unique(p, return_inverse=True)
    negative_weight = np.bincount(group, weights=q, minlength=len(values))
    negatives_below = np.concatenate([[0.0], np.cumsum(negative_weight)[:-1]])
    # Negative weight strictly below each row, plus half of its ties (without itself).
    concordant = np.sum(p * (negatives_below[group] + 0.5 * (negative_weight[group] - q)))
    pairs = p.sum() * q.sum() - np.sum(p * q)
    if pairs <= 1e-9:
        return None
    return float(concordant / pairs)


def estimate_performance(probability: np.ndarray, threshold: float) -> PerformanceEstimate:
    """Expected ROC-AUC, precision and recall of flagging rows with p >= ``threshold``."""
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    flagged = p >= threshold
    expected_positives = float(p.sum())
    expected_true_positives = float(p[flagged].sum())
    return PerformanceEstimate(
        rows=len(p),
        threshold=threshold,
        roc_auc=expected_roc_auc(p),
        precision=expected_true_positives / flagged.sum() if flagged.any() else None,
        recall=expected_true_positives / expected_positives if expected_positives > 0 else None,
        expected_positive_rate=expected_positives / len(p) if len(p) else 0.0,
        flagged_rate=float(flagged.mean()) if len(p) else 0.0,
    )
