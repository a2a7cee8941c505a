"""The served artefact: a fitted feature pipeline + classifier, and a calibration map.

Calibration is a Platt map on the classifier's log-odds, fitted on out-of-fold predictions.
Class weights and SMOTE distort raw probabilities; after this map a 0.3 reads as "about 30% of
such customers churn". The map is strictly increasing, so it keeps ranking (ROC-AUC) and any
monotone constraint of the classifier.

The classifier is one model or a ``LogOddsBlend`` of several fitted on the same feature matrix
(the ensemble model selection keeps when it wins out of fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

EPS = 1e-6


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


class LogOddsBlend(ClassifierMixin, BaseEstimator):
    """A stacked ensemble: a weighted sum of its members' log-odds, as a classifier.

    The weights come from a logistic regression on the members' out-of-fold log-odds and are
    all positive, so the blend is increasing in every member's score: members that respect a
    monotone constraint give a blend that respects it too. Its output is a raw score like any
    classifier's; the Platt map of ``ChurnModel`` turns it into a probability.
    """

    def __init__(self, members: list[tuple[str, object]], weights: list[float]):
        if len(members) != len(weights) or not members:
            raise ValueError("a blend needs one weight per member and at least one member")
        if min(weights) <= 0:
            raise ValueError(f"blend weights must be positive, got {weights}")
        self.members = members
        self.weights = [float(w) for w in weights]
        self.classes_ = np.array([0, 1])

    def fit(self, matrix: np.ndarray, target: np.ndarray) -> LogOddsBlend:
        """Fit every member on the same rows (weights stay as given). Training builds blends
        from members it fitted itself, each with its own imbalance treatment."""
        for _, member in self.members:
            member.fit(matrix, target)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        try:
            for member in self.estimators:
                check_is_fitted(member)
        except NotFittedError:
            return False
        return True

    @property
    def estimators(self) -> list[object]:
        return [member for _, member in self.members]

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        score = np.zeros(len(matrix))
        for (_, member), weight in zip(self.members, self.weights, strict=True):
            score += weight * log_odds(member.predict_proba(matrix)[:, 1])
        positive = 1.0 / (1.0 + np.exp(-score))
        return np.column_stack([1.0 - positive, positive])


def base_estimators(estimator: object) -> list[object]:
    """The fitted models behind a classifier step: its members for a blend, else itself."""
    return estimator.estimators if isinstance(estimator, LogOddsBlend) else [estimator]


@dataclass(frozen=True)
class PlattCalibration:
    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def fit(cls, raw_scores: np.ndarray, target: np.ndarray) -> PlattCalibration:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(log_odds(raw_scores).reshape(-1, 1), target)
        slope = float(lr.coef_[0, 0])
        if slope <= 0:  # a useless classifier; keep ranking, do not invert it
            return cls(1.0, 0.0)
        return cls(slope, float(lr.intercept_[0]))

    def apply(self, raw_scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * log_odds(raw_scores) + self.intercept)))


@dataclass
class ChurnModel:
    """Raw contract columns in, calibrated churn probability out."""

    pipeline: Pipeline
    calibration: PlattCalibration

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(features)[:, 1]

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Churn probability per row (1-d array)."""
        return self.calibration.apply(self.raw_scores(features))

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """For an already-preprocessed matrix (the fast serving path skips pandas)."""
        return self.calibration.apply(self.classifier.predict_proba(matrix)[:, 1])

    @property
    def preprocessor(self) -> Pipeline:
        return self.pipeline[:-1]

    @property
    def classifier(self) -> object:
        return self.pipeline.steps[-1][1]


def calibration_error(target: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(probability[mask].mean() - target[mask].mean())
    return float(total)
