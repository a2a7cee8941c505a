"""The training job's steps, in the order ``training.run`` calls them: read the rows, validate
them, split, refuse leakage, (select a model: ``training.train.select_model``), evaluate on the
test rows, score the champion on them, decide the gate, keep a reference sample; then what
MLflow and the model store record of the result, and the summary.

Each step takes and returns typed values (DataFrames, arrays, pydantic models, dataclasses).
``read_training_rows`` (the table) and ``score_champion`` (the store's champion) read; the
others are pure. Writing to MLflow and the model store is ``training.run``'s wiring.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kernel.contract import Costs, DataContract, ValidatedData, validate_training_data
from kernel.ingest import read_table
from kernel.store import (
    PROBABILITY_COLUMN,
    EntryMetadata,
    HoldoutMetrics,
    ScoringCost,
    StoreError,
    champion,
)
from training.config import TrainConfig
from training.evaluate import holdout_metrics, monotone_violations, selection_score
from training.promote import GateDecision, decide
from training.sample import TrainingSample, sample_training_rows
from training.selection import SelectionRow
from training.split import split_rows
from training.train import FittedModel, leakage_suspects

log = logging.getLogger("churn.train")


class LeakageSuspected(ValueError):
    """A feature separates the classes almost perfectly on its own: refused before training."""


@dataclass(frozen=True)
class TrainingRows:
    """The table as read: every row, or a stratified sample of a larger one."""

    frame: pd.DataFrame
    sample: TrainingSample | None  # None: every row of the table

    @property
    def source_rows(self) -> int:
        """Rows in the whole table (the sample was drawn from this many)."""
        return self.sample.source_rows if self.sample else len(self.frame)


@dataclass(frozen=True)
class TrainTestRows:
    """Validated features and target, cut into training rows and held-out test rows."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    test_positions: np.ndarray  # where the test rows are in the table as read
    kind: str  # how the rows were cut, e.g. "stratified random, seed 42"


@dataclass(frozen=True)
class ChampionScore:
    """The current champion on the challenger's test rows."""

    tag: str | None = None  # None: the dataset has no champion yet
    score: float | None = None  # its selection metric; None without a champion or on error
    error: str | None = None  # why an existing champion could not score these rows


@dataclass(frozen=True)
class Challenger:
    """A model trained, evaluated on held-out rows and judged by the gate: everything its
    registration needs. Nothing is registered, stored or promoted yet."""

    rows: TrainingRows
    ignored_columns: list[str]
    split: TrainTestRows
    leakage_suspects: dict[str, float]
    fitted: FittedModel
    metrics: HoldoutMetrics
    champion: ChampionScore
    gate: GateDecision
    reference: pd.DataFrame  # the sample the drift job compares current rows with


@dataclass(frozen=True)
class RunRecord:
    """What MLflow records of one training run, besides the model."""

    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    texts: dict[str, str]  # artifact file -> its text
    dicts: dict[str, dict[str, Any]]  # artifact file -> its JSON content
    tags: dict[str, str]


@dataclass(frozen=True)
class Registration:
    """Where a challenger was recorded: its model store entry, MLflow run and model version."""

    model_tag: str
    mlflow_run_id: str
    mlflow_model_version: str
    tracking_uri: str  # as configured (the store's copy has no password)


class TrainingSummary(HoldoutMetrics):
    """What `churn train --summary` writes: the holdout metrics, flat, and what became of them."""

    model_tag: str
    promoted: bool
    stage: str
    decision: str
    algorithm: str
    imbalance: str
    threshold: float
    cv_score: float
    champion_score: float | None
    split: str
    train_rows: int
    test_rows: int
    ignored_columns: list[str]
    leakage_suspects: dict[str, float]
    mlflow_run_id: str
    mlflow_model_version: str
    # How the rows were chosen: None = every row of the table; else the stratified sample.
    sample: TrainingSample | None = None
    scoring_cost: ScoringCost | None = None
    # Why this candidate: every candidate's scores, gap to the best, noise, cost and verdict.
    selection: list[SelectionRow] = []


def read_training_rows(source: str, target: str, sample_rows: int | None,
                       seed: int) -> TrainingRows:
    """Every row of ``source``, or (``sample_rows``) a sample stratified by ``target`` drawn
    while the table streams in chunks. Raises IngestError when the source cannot be read."""
    sample = None
    if sample_rows is None:
        frame = read_table(source)
    else:
        frame, sample = sample_training_rows(source, target, sample_rows, seed)
    log.info("read %d rows x %d columns from %s", len(frame), frame.shape[1], source)
    return TrainingRows(frame, sample)


def validate_rows(frame: pd.DataFrame, contract: DataContract) -> ValidatedData:
    """The rows typed by the contract; columns it does not name are ignored, with a warning.
    Raises ContractViolation naming every broken rule."""
    data = validate_training_data(frame, contract)
    if data.ignored_columns:
        log.warning("columns not in the contract, ignored: %s", ", ".join(data.ignored_columns))
    return data


def split_train_test(data: ValidatedData, test_size: float, seed: int) -> TrainTestRows:
    """Training and test rows as ``training.split.split_rows`` cuts them (by event time when
    the contract has one, else stratified). Raises ValueError when a time split leaves no
    training rows or a test set without both classes."""
    split = split_rows(data, test_size, seed)
    target = data.target.to_numpy()
    rows = TrainTestRows(X_train=data.features.iloc[split.train], y_train=target[split.train],
                         X_test=data.features.iloc[split.test], y_test=target[split.test],
                         test_positions=split.test, kind=split.kind)
    log.info("split %s: %d train rows, %d test rows", split.kind, len(rows.X_train),
             len(rows.X_test))
    return rows


def check_leakage(rows: TrainTestRows, target: str, config: TrainConfig) -> dict[str, float]:
    """Features whose ROC-AUC alone reaches ``config.leakage_auc`` on the training rows (each
    logged as a warning). Raises LeakageSuspected when there is one and
    ``config.leakage_action`` is "refuse"."""
    suspects = leakage_suspects(rows.X_train, rows.y_train, config.leakage_auc)
    for column, auc in suspects.items():
        log.warning('feature "%s" alone has ROC-AUC %.3f: check it is known before churn '
                    "(leakage?)", column, auc)
    if suspects and config.leakage_action == "refuse":
        named = ", ".join(f'"{c}" (ROC-AUC {auc:.3f})' for c, auc in suspects.items())
        raise LeakageSuspected(
            f"feature(s) {named} alone predict {target!r} at or above "
            f"leakage_auc {config.leakage_auc}: such a column is usually known only after the "
            "outcome; add it to the contract's drop list (or set leakage_action: warn)")
    return suspects


def evaluate_on_test(fitted: FittedModel, rows: TrainTestRows, costs: Costs) -> HoldoutMetrics:
    """The model's metrics on the held-out test rows, at its business threshold."""
    probability = fitted.model.predict_proba(rows.X_test)
    metrics = holdout_metrics(rows.y_test, probability, fitted.threshold, costs)
    log.info("test split: roc_auc %.4f  pr_auc %.4f  precision %.3f  recall %.3f  at %.3f",
             metrics.roc_auc, metrics.pr_auc, metrics.precision, metrics.recall,
             fitted.threshold)
    return metrics


def score_champion(dataset: str, test_rows: pd.DataFrame, y_test: np.ndarray,
                   metric: str) -> ChampionScore:
    """The model store's champion of ``dataset`` scored by ``metric`` on the challenger's raw
    test rows (typed by its own contract). Empty when there is no champion; ``error`` says why
    when it cannot score these rows (its contract wants columns they lack)."""
    try:
        current = champion(dataset)
    except StoreError:
        return ChampionScore()
    try:
        probability = current.model.predict_proba(test_rows)
    except (KeyError, ValueError) as exc:
        return ChampionScore(tag=current.tag, error=f"{current.tag} cannot score this data: {exc}")
    return ChampionScore(tag=current.tag, score=selection_score(metric, y_test, probability))


def gate_challenger(fitted: FittedModel, metrics: HoldoutMetrics, X_test: pd.DataFrame,
                    current: ChampionScore, contract: DataContract,
                    config: TrainConfig) -> GateDecision:
    """The champion/challenger gate (``training.promote.decide``): the quality floor, the
    declared monotone features (checked on ``X_test``), then the champion's score."""
    violations = monotone_violations(fitted.model.predict_proba, X_test, contract)
    gate = decide(metrics, current.score, config.selection_metric, config.promotion_margin,
                  contract.quality_floor, current.error, violations)
    log.info("gate: %s", gate.reason)
    return gate


def reference_sample(rows: TrainTestRows, oof_probability: np.ndarray, target: str,
                     size: int, seed: int) -> pd.DataFrame:
    """Up to ``size`` training rows drawn without replacement (``seed``), in table order, with
    their out-of-fold probability and their target: what the drift job compares with."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(rows.X_train), min(size, len(rows.X_train)), replace=False))
    reference = rows.X_train.iloc[keep].reset_index(drop=True)
    reference[PROBABILITY_COLUMN] = oof_probability[keep]
    reference[target] = rows.y_train[keep]
    return reference


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable hash of the training table's content (column names, order and values)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def run_record(challenger: Challenger, contract: DataContract, config: TrainConfig) -> RunRecord:
    """The MLflow run of ``challenger``: the chosen candidate, the selection rule and the rows
    as params; the test metrics, threshold, cross-validated score, size and scoring cost as
    metrics; the contract, the leaderboard and the selection evidence as artifacts; the gate's
    reason and the dataset as tags."""
    fitted, candidate, split = challenger.fitted, challenger.fitted.candidate, challenger.split
    cost = candidate.cost
    return RunRecord(
        run_name=f"{contract.name}-{candidate.name}",
        params={"algorithm": candidate.algorithm, "imbalance": candidate.imbalance,
                "selection_metric": config.selection_metric,
                "gain_standard_errors": config.gain_standard_errors,
                "min_gain": config.min_gain,
                "max_scoring_ms_per_row": config.max_scoring_ms_per_row,
                "train_rows": len(split.X_train), "test_rows": len(split.X_test),
                "split": split.kind, "sampled_from_rows": challenger.rows.source_rows,
                **{f"param_{k}": v for k, v in candidate.params.items()}},
        metrics={**challenger.metrics.model_dump(), "threshold": fitted.threshold,
                 f"cv_{config.selection_metric}": candidate.cv_score,
                 "model_size": candidate.size,
                 **({"scoring_ms_per_row_batch_1": cost.ms_per_row_batch_1,
                     f"scoring_ms_per_row_batch_{cost.batch_rows}": cost.ms_per_row_batch}
                    if cost else {})},
        texts={"contract.yaml": contract.to_yaml()},
        dicts={"leaderboard.json": {"leaderboard": [
            {"candidate": c.name, "cv_score": c.cv_score, "fold_scores": list(c.fold_scores),
             "size": c.size, "scoring_cost": c.cost.model_dump() if c.cost else None,
             "params": c.params}
            for c in fitted.leaderboard]},
            "selection.json": {
                "rule": {"gain_standard_errors": config.gain_standard_errors,
                         "min_gain": config.min_gain,
                         "max_scoring_ms_per_row": config.max_scoring_ms_per_row,
                         "scoring_batch_rows": config.scoring_batch_rows},
                "chosen": candidate.name,
                "candidates": [row.model_dump() for row in fitted.selection]}},
        tags={"gate": challenger.gate.reason, "dataset": contract.name},
    )


def entry_metadata(challenger: Challenger, contract: DataContract, config: TrainConfig, *,
                   mlflow_run_id: str, mlflow_model_version: str, mlflow_tracking_uri: str,
                   trained_at: str, library_versions: dict[str, str]) -> EntryMetadata:
    """What the model store keeps beside ``challenger``'s model: the candidate, its metrics,
    threshold and cut-offs, the data it saw, the environment and its MLflow identity.
    ``mlflow_tracking_uri`` is stored as given: pass it without a password."""
    fitted, candidate, split = challenger.fitted, challenger.fitted.candidate, challenger.split
    return EntryMetadata(
        dataset=contract.name,
        algorithm=candidate.algorithm,
        imbalance=candidate.imbalance,
        params=candidate.params,
        selection_metric=config.selection_metric,
        cv_score=candidate.cv_score,
        metrics=challenger.metrics,
        threshold=fitted.threshold,
        risk_cutoffs=fitted.risk_cutoffs,
        features=list(contract.features),
        categories=fitted.categories,
        trained_at=trained_at,
        data_fingerprint=fingerprint(challenger.rows.frame),
        train_rows=len(split.X_train),
        test_rows=len(split.X_test),
        split=split.kind,
        library_versions=library_versions,
        mlflow_run_id=mlflow_run_id,
        mlflow_model_version=mlflow_model_version,
        mlflow_tracking_uri=mlflow_tracking_uri,
        decision=challenger.gate.reason,
        scoring_cost=candidate.cost,
    )


def training_summary(challenger: Challenger, registration: Registration,
                     stage: str) -> TrainingSummary:
    """The job's result: the test metrics, flat, and what became of the model (``stage``)."""
    fitted, candidate, split = challenger.fitted, challenger.fitted.candidate, challenger.split
    return TrainingSummary(
        model_tag=registration.model_tag, promoted=stage == "champion", stage=stage,
        decision=challenger.gate.reason, algorithm=candidate.algorithm,
        imbalance=candidate.imbalance, threshold=fitted.threshold,
        **challenger.metrics.model_dump(), cv_score=candidate.cv_score,
        champion_score=challenger.gate.champion_score, split=split.kind,
        train_rows=len(split.X_train), test_rows=len(split.X_test),
        ignored_columns=challenger.ignored_columns,
        leakage_suspects=challenger.leakage_suspects,
        mlflow_run_id=registration.mlflow_run_id,
        mlflow_model_version=registration.mlflow_model_version, sample=challenger.rows.sample,
        scoring_cost=candidate.cost, selection=fitted.selection,
    )
