"""Measured performance: late-arriving ground truth joined to the logged predictions.

A label row says "customer X churned (or not), as observed at time T". It is joined to every
logged prediction for X made before T and at most ``horizon`` earlier (a label observed much
later is about a later period). Metrics are computed per model version, so a canary and the
stable model are judged on their own predictions, overall and per time window.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from kernel.contract import parse_boolean
from kernel.model import calibration_error
from kernel.store import PROBABILITY_COLUMN


class LabelError(ValueError):
    """The labels table lacks a column or has unreadable values."""


class WindowPerformance(BaseModel):
    start: str
    end: str
    rows: int
    positives: int
    roc_auc: float | None
    precision: float | None
    recall: float | None
    calibration_error: float | None


class VersionPerformance(BaseModel):
    """Measured metrics of one model version; ``sufficient`` is False below the row minimum
    (the metrics are then reported but not pushed)."""

    model_version: str
    rows: int
    positives: int
    sufficient: bool
    roc_auc: float | None
    precision: float | None
    recall: float | None
    calibration_error: float | None
    reference_roc_auc: float | None = None
    reference_precision: float | None = None
    reference_recall: float | None = None
    windows: list[WindowPerformance] = []


class PerformanceJobResult(BaseModel):
    """What one run of ``churn performance`` found and pushed (the JSON report)."""

    kind: Literal["performance"] = "performance"
    run_at: str
    labels_source: str
    window_start: str
    window_end: str
    predictions: int
    labels: int
    labelled_predictions: int
    versions: list[VersionPerformance]


def parse_labels(
    frame: pd.DataFrame, id_column: str, target_column: str, observed_at_column: str
) -> pd.DataFrame:
    """(id, 0/1 target, UTC observed_at) from a labels table. Raises LabelError when a column
    is missing or values cannot be read."""
    missing = [c for c in (id_column, target_column, observed_at_column) if c not in frame.columns]
    if missing:
        raise LabelError(f"labels lack column(s) {missing}; expected {id_column}, "
                         f"{target_column}, {observed_at_column}")
    target, not_boolean = parse_boolean(frame[target_column])
    bad_target = not_boolean | target.isna().to_numpy()
    if bad_target.any():
        raise LabelError(f'labels column "{target_column}": {int(bad_target.sum())} rows are '
                         "not 0/1 (or true/false)")
    observed = pd.to_datetime(frame[observed_at_column], errors="coerce", utc=True, format="mixed")
    if observed.isna().any():
        raise LabelError(f'labels column "{observed_at_column}": {int(observed.isna().sum())} '
                         "rows are not a date/time")
    return pd.DataFrame({
        id_column: frame[id_column].astype(str).to_numpy(),
        target_column: target.astype(int).to_numpy(),
        observed_at_column: observed.to_numpy(),
    })


def join_labels(
    predictions: pd.DataFrame, labels: pd.DataFrame, id_column: str, observed_at_column: str,
    horizon: timedelta,
) -> pd.DataFrame:
    """Each prediction with the first label observed at or after it, within ``horizon``.

    Predictions without such a label are dropped (their outcome is not known yet).
    """
    if predictions.empty or labels.empty:
        return predictions.iloc[0:0].assign(**{observed_at_column: pd.Series(dtype=object)})
    left = predictions.assign(
        timestamp=pd.to_datetime(predictions["timestamp"], utc=True, format="mixed"),
        **{id_column: predictions[id_column].astype(str)},
    ).sort_values("timestamp", kind="stable")
    right = labels.assign(
        **{observed_at_column: pd.to_datetime(labels[observed_at_column], utc=True)}
    ).sort_values(observed_at_column, kind="stable")
    # merge_asof needs identical datetime resolutions on both keys.
    left["timestamp"] = left["timestamp"].astype("datetime64[ns, UTC]")
    right[observed_at_column] = right[observed_at_column].astype("datetime64[ns, UTC]")
    right = right.rename(columns={c: f"label_{c}" for c in right.columns
                                  if c in left.columns and c not in (id_column,)})
    joined = pd.merge_asof(
        left, right, left_on="timestamp", right_on=observed_at_column, by=id_column,
        direction="forward", tolerance=pd.Timedelta(horizon), allow_exact_matches=True,
    )
    return joined[joined[observed_at_column].notna()].reset_index(drop=True)


def _metrics(target: np.ndarray, probability: np.ndarray, flagged: np.ndarray) -> dict:
    both_classes = 0 < target.sum() < len(target)
    true_positives = float(np.sum(flagged & (target == 1)))
    return {
        "rows": len(target),
        "positives": int(target.sum()),
        "roc_auc": float(roc_auc_score(target, probability)) if both_classes else None,
        "precision": true_positives / flagged.sum() if flagged.any() else None,
        "recall": true_positives / target.sum() if target.sum() else None,
        "calibration_error": calibration_error(target, probability) if len(target) else None,
    }


def measure_performance(
    joined: pd.DataFrame, target_column: str, thresholds: dict[str, float],
    window_start: datetime, breakdown: timedelta, min_rows: int,
) -> list[VersionPerformance]:
    """Per model version: ROC-AUC, precision, recall (of the logged ``will_churn`` decision,
    or probability >= that version's threshold) and calibration error, overall and per
    ``breakdown`` window from ``window_start``."""
    results: list[VersionPerformance] = []
    if joined.empty:
        return results
    for version, rows in joined.groupby("model_version", sort=True):
        target = rows[target_column].to_numpy(dtype=int)
        probability = rows[PROBABILITY_COLUMN].to_numpy(dtype=float)
        if "will_churn" in rows.columns and rows["will_churn"].notna().all():
            flagged = rows["will_churn"].astype(bool).to_numpy()
        else:
            flagged = probability >= thresholds.get(str(version), 0.5)
        windows = []
        step = pd.Timedelta(breakdown)
        index = ((rows["timestamp"] - pd.Timestamp(window_start)) // step).to_numpy()
        for i in np.unique(index):
            mask = index == i
            start = pd.Timestamp(window_start) + int(i) * step
            windows.append(WindowPerformance(
                start=start.isoformat(), end=(start + step).isoformat(),
                **_metrics(target[mask], probability[mask], flagged[mask]),
            ))
        results.append(VersionPerformance(
            model_version=str(version), sufficient=len(rows) >= min_rows, windows=windows,
            **_metrics(target, probability, flagged),
        ))
    return results
