"""Data and prediction drift: the reference sample stored with the model vs current rows.

Pure functions of DataFrames. Evidently (0.7, ``DataDriftPreset``) gives the per-feature
drift score and verdict with the method it fits to size and type (KS / chi-squared / z-test up
to 1000 reference rows, normed Wasserstein / Jensen-Shannon above). Beside it, counted by
``monitoring.drift_statistics``: PSI per feature (``monitoring.psi``: quantile bins from the
reference, categories as bins, missing values as a bin of their own), missing-value share and
the share of categories the model never saw.
Evidently is imported inside functions: importing it takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from kernel.contract import ContractViolation, DataContract, coerce_features
from kernel.model import ChurnModel
from kernel.store import PROBABILITY_COLUMN
from monitoring.config import DriftSettings
from monitoring.drift_statistics import DriftStatistics, psi_from_statistics, reference_edges
from monitoring.estimate import CalibrationCheck, PerformanceEstimate
from monitoring.psi import PsiBand, psi_band

log = logging.getLogger("churn.monitoring")


class DriftVerdict(BaseModel):
    """One distribution compared: Evidently's test (method, threshold, score) and PSI."""

    method: str
    threshold: float | None
    score: float | None
    detected: bool
    psi: float
    psi_band: PsiBand


class FeatureDrift(DriftVerdict):
    feature: str
    kind: Literal["numeric", "categorical", "boolean"]
    missing_share: float
    reference_missing_share: float
    unseen_share: float = 0.0
    unseen_values: list[str] = []


class PredictionDrift(DriftVerdict):
    reference_mean: float
    current_mean: float


class DriftResult(BaseModel):
    """Everything the drift job measured. ``insufficient_data`` means: no verdict at all."""

    reference_rows: int
    current_rows: int
    # Evidently's tests ran on a uniform sample of this many current rows (`churn drift
    # --dask`); None: on all of them. PSI, shares and means always count every row.
    evidently_rows: int | None = None
    min_rows: int
    insufficient_data: bool
    drift_share_threshold: float
    drift_share: float | None = None
    drifted_features: list[str] = []
    drift_detected: bool = False
    features: list[FeatureDrift] = []
    prediction: PredictionDrift | None = None


class DriftJobResult(BaseModel):
    """What one run of ``churn drift`` found and pushed (the JSON report)."""

    kind: Literal["drift"] = "drift"
    run_at: str
    model_tag: str
    model_version: str
    current_source: str
    rejected_rows: int = 0
    rescored_rows: int = 0
    drift: DriftResult
    reference_roc_auc: float
    reference_calibration: CalibrationCheck | None = None
    estimate: PerformanceEstimate | None = None


@dataclass(frozen=True)
class DriftRun:
    result: DriftResult
    snapshot: Any | None  # evidently Snapshot (None when there was too little data)


@dataclass(frozen=True)
class CurrentData:
    frame: pd.DataFrame  # typed contract features + churn_probability
    rejected_rows: int
    rescored_rows: int


def prepare_current(
    raw: pd.DataFrame, contract: DataContract, model: ChurnModel, model_version: str | None
) -> CurrentData:
    """Type the current rows by the contract and make sure each has this model's probability.

    Rows breaking the contract are dropped (the service would have rejected them). Rows without
    a probability, or scored by another model version (a canary, a previous champion), are
    rescored with ``model`` so prediction drift compares like with like.
    Raises ContractViolation when rows exist but a contract feature column is absent.
    """
    features, problems, bad = coerce_features(raw, contract)
    absent = [p for p in problems if p.rule.startswith("missing")]
    if len(raw) and absent:
        raise ContractViolation(absent, total_rows=len(raw))
    keep = ~bad
    frame = features.loc[keep].reset_index(drop=True)
    if PROBABILITY_COLUMN in raw.columns:
        probability = pd.to_numeric(raw[PROBABILITY_COLUMN], errors="coerce").loc[keep]
        probability = probability.reset_index(drop=True)
    else:
        probability = pd.Series(np.nan, index=frame.index)
    stale = probability.isna()
    if model_version is not None and "model_version" in raw.columns:
        versions = raw["model_version"].loc[keep].astype(str).reset_index(drop=True)
        stale |= versions != model_version
    if stale.any():
        probability = probability.copy()
        probability[stale] = model.predict_proba(frame.loc[stale])
    frame[PROBABILITY_COLUMN] = probability.astype(float).to_numpy()
    return CurrentData(frame=frame, rejected_rows=int(bad.sum()),
                       rescored_rows=int(stale.sum()))


def _evidently_frame(
    frame: pd.DataFrame, contract: DataContract, columns: list[str]
) -> pd.DataFrame:
    """Categoricals as text, booleans as "true"/"false": Evidently then picks categorical tests."""
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        kind = contract.features[column].type if column in contract.features else "numeric"
        values = frame[column]
        if kind == "boolean":
            numbers = pd.to_numeric(values, errors="coerce")
            out[column] = numbers.map({1.0: "true", 0.0: "false"}).astype(object)
        elif kind == "categorical":
            out[column] = values.astype(object).where(values.notna(), None)
        else:
            out[column] = pd.to_numeric(values, errors="coerce").astype(float)
    return out


def _run_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, contract: DataContract,
    columns: list[str], drift_share: float,
) -> tuple[dict[str, tuple[str, float | None, float, bool]], Any]:
    """Per column: (method, threshold, score, detected), and the snapshot for the HTML."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    features = [c for c in columns if c != PROBABILITY_COLUMN]
    numeric = [c for c in columns
               if c == PROBABILITY_COLUMN or contract.features[c].type == "numeric"]
    categorical = [c for c in features if c not in numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics: list[Any] = [DataDriftPreset(columns=features, drift_share=drift_share)]
    if PROBABILITY_COLUMN in columns:
        metrics.append(ValueDrift(column=PROBABILITY_COLUMN))
    report = Report(metrics, include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(_evidently_frame(current, contract, columns),
                                         data_definition=definition),
        reference_data=Dataset.from_pandas(_evidently_frame(reference, contract, columns),
                                           data_definition=definition),
    )
    content = snapshot.dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL"
              for t in content.get("tests", []) if t.get("id") == "drift"}
    verdicts: dict[str, tuple[str, float | None, float, bool]] = {}
    for metric in content["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        verdicts[config["column"]] = (
            str(config.get("method")), config.get("threshold"), float(metric["value"]),
            bool(failed.get(metric["id"], False)),
        )
    return verdicts, snapshot


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: DataContract,
    categories: dict[str, list[str]],
    settings: DriftSettings,
    statistics: DriftStatistics | None = None,
) -> DriftRun:
    """Compare typed current rows with the reference sample, feature by feature and on the
    predicted probability. Too few current rows give ``insufficient_data`` and no verdict.

    ``reference`` and ``current`` hold the contract features (typed as ``coerce_features``
    returns them) and, optionally, ``churn_probability``. ``statistics``: the counts of all
    current rows when ``current`` is only a sample of them (``churn drift --dask``); PSI,
    missing and unseen shares and the mean probability then come from them, and Evidently's
    tests from the sample. Without it they are counted from ``current``.
    """
    edges = reference_edges(reference, contract, settings.psi_bins)
    counted = (statistics if statistics is not None
               else DriftStatistics.of(current, contract, edges))
    sampled = statistics is not None and len(current) < counted.rows
    base = DriftResult(reference_rows=len(reference), current_rows=counted.rows,
                       evidently_rows=len(current) if sampled else None,
                       min_rows=settings.min_rows,
                       insufficient_data=counted.rows < settings.min_rows,
                       drift_share_threshold=settings.drift_share)
    if base.insufficient_data:
        return DriftRun(result=base, snapshot=None)
    counted_reference = DriftStatistics.of(reference, contract, edges)

    features = list(contract.features)
    with_prediction = (PROBABILITY_COLUMN in reference.columns
                       and PROBABILITY_COLUMN in current.columns)
    # Evidently needs values on both sides; an all-missing column is judged by PSI alone.
    testable = [c for c in features if reference[c].notna().any() and current[c].notna().any()]
    columns = testable + ([PROBABILITY_COLUMN] if with_prediction else [])
    verdicts, snapshot = _run_evidently(reference, current, contract, columns,
                                        settings.drift_share)

    def band(value: float) -> PsiBand:
        return psi_band(value, settings.psi_watch, settings.psi_drift)

    results = []
    for column in features:
        kind = contract.features[column].type
        psi = psi_from_statistics(counted_reference, counted, column, settings.psi_epsilon)
        unseen_share, unseen_values = 0.0, []
        if kind == "categorical" and column in categories:
            unseen_share, unseen_values = counted.unseen(column, categories[column])
        if column in verdicts:
            method, threshold, score, detected = verdicts[column]
        else:
            method, threshold, score = "PSI only (no values on one side)", settings.psi_drift, None
            detected = psi > settings.psi_drift
        results.append(FeatureDrift(
            feature=column, kind=kind, method=method, threshold=threshold, score=score,
            detected=detected, psi=psi, psi_band=band(psi),
            missing_share=counted.missing_share(column),
            reference_missing_share=counted_reference.missing_share(column),
            unseen_share=unseen_share, unseen_values=unseen_values,
        ))

    prediction = None
    if with_prediction:
        method, threshold, score, detected = verdicts[PROBABILITY_COLUMN]
        psi = psi_from_statistics(counted_reference, counted, PROBABILITY_COLUMN,
                                  settings.psi_epsilon)
        prediction = PredictionDrift(
            method=method, threshold=threshold, score=score, detected=detected, psi=psi,
            psi_band=band(psi), reference_mean=float(reference[PROBABILITY_COLUMN].mean()),
            current_mean=counted.probability_sum / counted.rows,
        )

    drifted = [f.feature for f in results if f.detected]
    share = len(drifted) / len(results)
    result = base.model_copy(update={
        "drift_share": share, "drifted_features": drifted,
        "drift_detected": share >= settings.drift_share, "features": results,
        "prediction": prediction,
    })
    return DriftRun(result=result, snapshot=snapshot)
