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


@dataclass(frozen=True)
class ColumnTest:
    """Evidently's drift test of one column: its method, threshold, score and verdict."""

    method: str
    threshold: float | None
    score: float | None
    detected: bool


def run_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, contract: DataContract,
    columns: list[str], drift_share: float,
) -> tuple[dict[str, ColumnTest], Any]:
    """Evidently's test of each of ``columns``, and the snapshot for the HTML report."""
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
    tests: dict[str, ColumnTest] = {}
    for metric in content["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        tests[config["column"]] = ColumnTest(
            str(config.get("method")), config.get("threshold"), float(metric["value"]),
            bool(failed.get(metric["id"], False)),
        )
    return tests, snapshot


def undecided_result(reference_rows: int, current: DriftStatistics, evidently_rows: int | None,
                     settings: DriftSettings) -> DriftResult:
    """The result before any test: row counts, thresholds, and ``insufficient_data`` when
    fewer than ``settings.min_rows`` current rows were counted (then it is the final one)."""
    return DriftResult(reference_rows=reference_rows, current_rows=current.rows,
                       evidently_rows=evidently_rows, min_rows=settings.min_rows,
                       insufficient_data=current.rows < settings.min_rows,
                       drift_share_threshold=settings.drift_share)


def columns_to_test(reference: pd.DataFrame, current: pd.DataFrame,
                     contract: DataContract) -> list[str]:
    """The columns Evidently can test: the features with values on both sides (an all-missing
    column is judged by PSI alone), then the probability when both sides have it."""
    features = [c for c in contract.features
                if reference[c].notna().any() and current[c].notna().any()]
    with_prediction = (PROBABILITY_COLUMN in reference.columns
                       and PROBABILITY_COLUMN in current.columns)
    return features + ([PROBABILITY_COLUMN] if with_prediction else [])


def feature_drift(
    column: str, contract: DataContract, test: ColumnTest | None, reference: DriftStatistics,
    current: DriftStatistics, vocabulary: list[str] | None, settings: DriftSettings,
) -> FeatureDrift:
    """One feature's verdict: Evidently's ``test``, or without one (no values on one side)
    PSI above ``settings.psi_drift``; its PSI, missing shares, and for a categorical feature
    with a ``vocabulary`` (the categories the model saw) the share of values outside it."""
    kind = contract.features[column].type
    psi = psi_from_statistics(reference, current, column, settings.psi_epsilon)
    unseen_share, unseen_values = 0.0, []
    if kind == "categorical" and vocabulary is not None:
        unseen_share, unseen_values = current.unseen(column, vocabulary)
    if test is None:
        test = ColumnTest("PSI only (no values on one side)", settings.psi_drift, None,
                          psi > settings.psi_drift)
    return FeatureDrift(
        feature=column, kind=kind, method=test.method, threshold=test.threshold,
        score=test.score, detected=test.detected, psi=psi,
        psi_band=psi_band(psi, settings.psi_watch, settings.psi_drift),
        missing_share=current.missing_share(column),
        reference_missing_share=reference.missing_share(column),
        unseen_share=unseen_share, unseen_values=unseen_values,
    )


def prediction_drift(test: ColumnTest, reference: DriftStatistics, current: DriftStatistics,
                     reference_mean: float, settings: DriftSettings) -> PredictionDrift:
    """The predicted probability's verdict (Evidently's ``test``), its PSI and mean on both
    sides (``reference_mean`` as the reference rows give it; the current one from the sum)."""
    psi = psi_from_statistics(reference, current, PROBABILITY_COLUMN, settings.psi_epsilon)
    return PredictionDrift(
        method=test.method, threshold=test.threshold, score=test.score,
        detected=test.detected, psi=psi,
        psi_band=psi_band(psi, settings.psi_watch, settings.psi_drift),
        reference_mean=reference_mean, current_mean=current.probability_sum / current.rows,
    )


def drift_verdict(undecided: DriftResult, features: list[FeatureDrift],
                  prediction: PredictionDrift | None, drift_share: float) -> DriftResult:
    """The data-drift verdict: detected when at least ``drift_share`` of the features
    drifted. Raises ZeroDivisionError without features."""
    drifted = [f.feature for f in features if f.detected]
    share = len(drifted) / len(features)
    return undecided.model_copy(update={
        "drift_share": share, "drifted_features": drifted,
        "drift_detected": share >= drift_share, "features": features,
        "prediction": prediction,
    })


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
    undecided = undecided_result(len(reference), counted, len(current) if sampled else None,
                                 settings)
    if undecided.insufficient_data:
        return DriftRun(result=undecided, snapshot=None)
    counted_reference = DriftStatistics.of(reference, contract, edges)
    columns = columns_to_test(reference, current, contract)
    tests, snapshot = run_evidently(reference, current, contract, columns, settings.drift_share)
    features = [feature_drift(column, contract, tests.get(column), counted_reference, counted,
                              categories.get(column), settings) for column in contract.features]
    prediction = (prediction_drift(tests[PROBABILITY_COLUMN], counted_reference, counted,
                                   float(reference[PROBABILITY_COLUMN].mean()), settings)
                  if PROBABILITY_COLUMN in columns else None)
    return DriftRun(result=drift_verdict(undecided, features, prediction, settings.drift_share),
                    snapshot=snapshot)
