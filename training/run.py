"""The training job, end to end: read -> validate -> split -> select -> evaluate -> track ->
store -> gate. Nothing is registered, stored or promoted unless every step before it passed."""

from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from kernel.contract import DataContract, ValidatedData, validate_training_data
from kernel.ingest import read_table
from kernel.store import (
    PROBABILITY_COLUMN,
    EntryMetadata,
    HoldoutMetrics,
    StoreError,
    champion,
    delete_entry,
    save_entry,
    set_stage,
    utc_now,
)
from training.config import TrainConfig
from training.evaluate import holdout_metrics, monotone_violations, selection_score
from training.promote import GateDecision, decide, promote_champion
from training.sample import TrainingSample, sample_training_rows
from training.split import split_rows
from training.train import leakage_suspects, select_model

log = logging.getLogger("churn.train")

SERVING_PACKAGES = ["scikit-learn", "xgboost-cpu", "pandas", "numpy", "joblib", "pydantic",
                    "pyyaml"]


class LeakageSuspected(ValueError):
    """A feature separates the classes almost perfectly on its own: refused before training."""


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


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable hash of the training table's content (column names, order and values)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("scikit-learn", "xgboost", "xgboost-cpu", "pandas", "numpy",
                    "imbalanced-learn", "bentoml", "mlflow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def _pinned(packages: list[str]) -> list[str]:
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def champion_score_on(
    dataset: str, test: pd.DataFrame, y_test: np.ndarray, metric: str
) -> tuple[float | None, str | None, str | None]:
    """(score, error, tag) of the current champion on the challenger's test rows."""
    try:
        current = champion(dataset)
    except StoreError:
        return None, None, None
    try:
        probability = current.model.predict_proba(test)
    except (KeyError, ValueError) as exc:
        return None, f"{current.tag} cannot score this data: {exc}", current.tag
    return selection_score(metric, y_test, probability), None, current.tag


def train_and_register(
    data_source: str, contract: DataContract, config: TrainConfig, home: Path
) -> TrainingSummary:
    """Run the whole training job; raises before anything is registered when a step fails."""
    sample = None
    if config.sample_rows is None:
        frame = read_table(data_source)
    else:
        frame, sample = sample_training_rows(data_source, contract.target.column,
                                             config.sample_rows, config.seed)
    log.info("read %d rows x %d columns from %s", len(frame), frame.shape[1], data_source)
    data: ValidatedData = validate_training_data(frame, contract)
    if data.ignored_columns:
        log.warning("columns not in the contract, ignored: %s", ", ".join(data.ignored_columns))

    split = split_rows(data, config.test_size, config.seed)
    X_train = data.features.iloc[split.train]
    y_train = data.target.to_numpy()[split.train]
    X_test = data.features.iloc[split.test]
    y_test = data.target.to_numpy()[split.test]
    log.info("split %s: %d train rows, %d test rows", split.kind, len(X_train), len(X_test))

    suspects = leakage_suspects(X_train, y_train, config.leakage_auc)
    for column, auc in suspects.items():
        log.warning('feature "%s" alone has ROC-AUC %.3f: check it is known before churn '
                    "(leakage?)", column, auc)
    if suspects and config.leakage_action == "refuse":
        named = ", ".join(f'"{c}" (ROC-AUC {auc:.3f})' for c, auc in suspects.items())
        raise LeakageSuspected(
            f"feature(s) {named} alone predict {contract.target.column!r} at or above "
            f"leakage_auc {config.leakage_auc}: such a column is usually known only after the "
            "outcome; add it to the contract's drop list (or set leakage_action: warn)")

    fitted = select_model(X_train, y_train, contract, config)
    test_probability = fitted.model.predict_proba(X_test)
    metrics: HoldoutMetrics = holdout_metrics(y_test, test_probability, fitted.threshold,
                                              contract.costs)
    log.info("test split: roc_auc %.4f  pr_auc %.4f  precision %.3f  recall %.3f  at %.3f",
             metrics.roc_auc, metrics.pr_auc, metrics.precision, metrics.recall,
             fitted.threshold)

    # The champion scores the same raw test rows through its own contract's typing.
    champ_score, champ_error, champ_tag = champion_score_on(
        contract.name, frame.iloc[split.test], y_test, config.selection_metric)
    violations = monotone_violations(fitted.model.predict_proba, X_test, contract)
    gate: GateDecision = decide(metrics, champ_score, config.selection_metric,
                                config.promotion_margin, contract.quality_floor, champ_error,
                                violations)
    log.info("gate: %s", gate.reason)

    rng = np.random.default_rng(config.seed)
    keep = np.sort(rng.choice(len(X_train), min(config.reference_rows, len(X_train)),
                              replace=False))
    reference = X_train.iloc[keep].reset_index(drop=True)
    reference[PROBABILITY_COLUMN] = fitted.oof_probability[keep]
    reference[contract.target.column] = y_train[keep]

    from kernel.paths import default_mlflow_uri
    from training import tracking

    tracking_uri = config.mlflow_tracking_uri or default_mlflow_uri(home)
    run_name = f"{contract.name}-{fitted.candidate.name}"
    with tracking.tracked_run(tracking_uri, config.mlflow_experiment, home / "mlruns",
                              run_name) as run:
        import mlflow

        mlflow.log_params({"algorithm": fitted.candidate.algorithm,
                           "imbalance": fitted.candidate.imbalance,
                           "selection_metric": config.selection_metric,
                           "train_rows": len(X_train), "test_rows": len(X_test),
                           "split": split.kind,
                           "sampled_from_rows": sample.source_rows if sample else len(frame),
                           **{f"param_{k}": v for k, v in fitted.candidate.params.items()}})
        mlflow.log_metrics({**metrics.model_dump(), "threshold": fitted.threshold,
                            f"cv_{config.selection_metric}": fitted.candidate.cv_score})
        mlflow.log_text(contract.to_yaml(), "contract.yaml")
        mlflow.log_dict({"leaderboard": [
            {"candidate": c.name, "cv_score": c.cv_score, "params": c.params}
            for c in fitted.leaderboard]}, "leaderboard.json")
        mlflow.set_tags({"gate": gate.reason, "dataset": contract.name})

        with tempfile.TemporaryDirectory() as tmp:
            model_file = Path(tmp) / "model.joblib"
            joblib.dump(fitted.model, model_file)
            mlflow_version = tracking.log_model(model_file, contract.name,
                                                _pinned(SERVING_PACKAGES))
        # From here on a failure must undo the MLflow registration and the store entry: a
        # failed run leaves no model behind and no champion changed.
        entry = None
        try:
            metadata = EntryMetadata(
                dataset=contract.name,
                algorithm=fitted.candidate.algorithm,
                imbalance=fitted.candidate.imbalance,
                params=fitted.candidate.params,
                selection_metric=config.selection_metric,
                cv_score=fitted.candidate.cv_score,
                metrics=metrics,
                threshold=fitted.threshold,
                risk_cutoffs=fitted.risk_cutoffs,
                features=list(contract.features),
                categories=fitted.categories,
                trained_at=utc_now(),
                data_fingerprint=fingerprint(frame),
                train_rows=len(X_train),
                test_rows=len(X_test),
                split=split.kind,
                library_versions=library_versions(),
                mlflow_run_id=run.info.run_id,
                mlflow_model_version=mlflow_version,
                mlflow_tracking_uri=tracking.stored_uri(tracking_uri),
                decision=gate.reason,
            )
            entry = save_entry(fitted.model, contract, metadata, reference, stage="challenger")
            mlflow.set_tag("bentoml_tag", entry.tag)
            if gate.promote:
                promote_champion(entry.tag, gate.reason, tracking_uri)
                stage = "champion"
            else:
                set_stage(entry.tag, "rejected", gate.reason)
                stage = "rejected"
        except BaseException:
            if entry is not None:
                delete_entry(entry.tag)
            tracking.delete_version(tracking_uri, contract.name, mlflow_version)
            raise
        if champ_tag:
            log.info("previous champion: %s", champ_tag)

    return TrainingSummary(
        model_tag=entry.tag, promoted=gate.promote, stage=stage, decision=gate.reason,
        algorithm=fitted.candidate.algorithm, imbalance=fitted.candidate.imbalance,
        threshold=fitted.threshold, **metrics.model_dump(),
        cv_score=fitted.candidate.cv_score, champion_score=gate.champion_score,
        split=split.kind, train_rows=len(X_train), test_rows=len(X_test),
        ignored_columns=data.ignored_columns, leakage_suspects=suspects,
        mlflow_run_id=run.info.run_id, mlflow_model_version=mlflow_version, sample=sample,
    )
