"""What the judges read: prediction records as the inference log holds them.

A record carries ``churn_probability``, ``will_churn`` and ``risk_level`` (LOW / MEDIUM / HIGH),
as the service answers. A shadow pair carries the shadow's three beside the champion's, under
a prefix (``shadow_churn_probability`` ...). Rows without a probability (a batch the shadow
skipped) are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PROBABILITY = "churn_probability"
DECISION = "will_churn"
RISK = "risk_level"
PREDICTION_COLUMNS = (PROBABILITY, DECISION, RISK)
RISK_LEVELS = ("LOW", "MEDIUM", "HIGH")
SHADOW_PREFIX = "shadow_"


class JudgeInputError(ValueError):
    """The records lack a column the judge needs, or hold values it cannot read."""


@dataclass(frozen=True)
class Predictions:
    """One model's predictions as arrays: probability, decision, risk level (0 LOW, 1 MEDIUM,
    2 HIGH)."""

    probability: np.ndarray
    flagged: np.ndarray
    risk: np.ndarray

    def __len__(self) -> int:
        return len(self.probability)

    def take(self, rows: np.ndarray) -> Predictions:
        return Predictions(self.probability[rows], self.flagged[rows], self.risk[rows])


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise JudgeInputError(f"{what} lack column(s) {missing}; they have "
                              f"{list(frame.columns)[:20]}")


def _decisions(values: pd.Series, column: str) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        if not values.isin([0, 1]).all():
            raise JudgeInputError(f"column {column!r} holds values other than 0/1")
        return values.to_numpy().astype(bool)
    text = values.astype(str).str.lower()
    known = text.isin(["true", "false", "1", "0"])
    if not known.all():
        raise JudgeInputError(f"column {column!r} holds {sorted(set(values[~known]))[:5]}, "
                              "not booleans")
    return text.isin(["true", "1"]).to_numpy()


def _levels(values: pd.Series, column: str) -> np.ndarray:
    codes = values.map({level: i for i, level in enumerate(RISK_LEVELS)})
    if codes.isna().any():
        raise JudgeInputError(f"column {column!r} holds {sorted(set(values[codes.isna()]))[:5]}"
                              f", not one of {list(RISK_LEVELS)}")
    return codes.to_numpy().astype(np.int8)


def predictions(frame: pd.DataFrame, prefix: str = "", what: str = "records") -> Predictions:
    """The predictions under ``prefix`` of every row (rows must have a probability). Raises
    JudgeInputError naming a missing column or an unreadable value."""
    columns = [prefix + c for c in PREDICTION_COLUMNS]
    _require(frame, columns, what)
    probability = pd.to_numeric(frame[columns[0]], errors="coerce").to_numpy(float)
    if np.isnan(probability).any():
        raise JudgeInputError(f"column {columns[0]!r} has missing or non-numeric values")
    if ((probability < 0) | (probability > 1)).any():
        raise JudgeInputError(f"column {columns[0]!r} has values outside [0, 1]")
    return Predictions(probability, _decisions(frame[columns[1]], columns[1]),
                       _levels(frame[columns[2]], columns[2]))


def scored_rows(frame: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """The rows with a probability under ``prefix`` (a skipped shadow batch has none)."""
    column = prefix + PROBABILITY
    _require(frame, [column], "records")
    return frame[frame[column].notna()]
