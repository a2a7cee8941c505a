"""The served artefact: a fitted feature pipeline + classifier, and a calibration map.

Calibration is a Platt map on the classifier's log-odds, fitted on out-of-fold predictions.
Class weights and SMOTE distort raw probabilities; after this map a 0.3 reads as "about 30% of
such customers churn". The map is strictly increasing, so it keeps ranking (ROC-AUC) and any
monotone constraint of the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

EPS = 1e-6


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


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
        estimator = self.pipeline.steps[-1][1]
        return self.calibration.apply(estimator.predict_proba(matrix)[:, 1])

    @property
    def preprocessor(self) -> Pipeline:
        return self.pipeline[:-1]


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
