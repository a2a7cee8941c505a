"""The training job, end to end: read -> validate -> split -> select -> evaluate -> gate ->
track -> store -> promote or reject. Nothing is registered, stored or promoted unless every
step before it passed.

Three parts a caller can use apart (``train_and_register`` is all three in a row):
``evaluate_challenger`` trains and judges a model and writes nothing; ``registered_challenger``
records it in MLflow and the model store as a challenger, undone if anything in its block
fails; ``apply_gate`` promotes it or labels it rejected. The steps are in ``training.steps``.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from kernel.contract import DataContract
from kernel.store import delete_entry, save_entry, set_stage, utc_now
from training.config import TrainConfig
from training.promote import GateDecision, promote_champion
from training.steps import (
    Challenger,
    LeakageSuspected,
    Registration,
    TrainingSummary,
    check_leakage,
    entry_metadata,
    evaluate_on_test,
    gate_challenger,
    read_training_rows,
    reference_sample,
    run_record,
    score_champion,
    split_train_test,
    training_summary,
    validate_rows,
)
from training.train import select_model

__all__ = ["LeakageSuspected", "TrainingSummary", "apply_gate", "evaluate_challenger",
           "register_challenger", "registered_challenger", "train_and_register"]

log = logging.getLogger("churn.train")

SERVING_PACKAGES = ["scikit-learn", "xgboost-cpu", "pandas", "numpy", "joblib", "pydantic",
                    "pyyaml"]


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that train and serve, as installed here."""
    out = {"python": platform.python_version()}
    for package in ("scikit-learn", "xgboost", "xgboost-cpu", "pandas", "numpy",
                    "imbalanced-learn", "bentoml", "mlflow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def pinned(packages: list[str]) -> list[str]:
    """``package==version`` of each of ``packages`` installed here (the others left out)."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def evaluate_challenger(data_source: str, contract: DataContract,
                        config: TrainConfig) -> Challenger:
    """Train a model on ``data_source`` and judge it against the champion; writes nothing.

    Raises IngestError (unreadable source), ContractViolation, ValueError (a time split
    without both classes) or LeakageSuspected, each before any model is trained or saved."""
    rows = read_training_rows(data_source, contract.target.column, config.sample_rows,
                              config.seed)
    data = validate_rows(rows.frame, contract)
    split = split_train_test(data, config.test_size, config.seed)
    suspects = check_leakage(split, contract.target.column, config)
    fitted = select_model(split.X_train, split.y_train, contract, config)
    metrics = evaluate_on_test(fitted, split, contract.costs)
    # The champion scores the same raw test rows through its own contract's typing.
    current = score_champion(contract.name, rows.frame.iloc[split.test_positions], split.y_test,
                             config.selection_metric)
    gate = gate_challenger(fitted, metrics, split.X_test, current, contract, config)
    reference = reference_sample(split, fitted.oof_probability, contract.target.column,
                                 config.reference_rows, config.seed)
    return Challenger(rows, data.ignored_columns, split, suspects, fitted, metrics, current,
                      gate, reference)


@contextlib.contextmanager
def registered_challenger(challenger: Challenger, contract: DataContract, config: TrainConfig,
                          home: Path) -> Iterator[Registration]:
    """Record ``challenger`` as a challenger, whatever its gate said: an MLflow run (params,
    metrics, contract, leaderboard, tags), a registered model version, and a model store entry
    with stage ``challenger``. If this or the ``with`` block raises, the store entry and the
    MLflow version are deleted again and the run ends FAILED: nothing stays registered, and
    the error is raised."""
    from kernel.paths import default_mlflow_uri
    from training import tracking

    tracking_uri = config.mlflow_tracking_uri or default_mlflow_uri(home)
    record = run_record(challenger, contract, config)
    with tracking.tracked_run(tracking_uri, config.mlflow_experiment, home / "mlruns",
                              record.run_name) as run:
        tracking.log_record(record)
        mlflow_version = tracking.log_fitted_model(challenger.fitted.model, contract.name,
                                                   pinned(SERVING_PACKAGES))
        # From here on a failure must undo the MLflow registration and the store entry: a
        # failed run leaves no model behind and no champion changed.
        entry = None
        try:
            metadata = entry_metadata(
                challenger, contract, config, mlflow_run_id=run.info.run_id,
                mlflow_model_version=mlflow_version,
                mlflow_tracking_uri=tracking.stored_uri(tracking_uri), trained_at=utc_now(),
                library_versions=library_versions())
            entry = save_entry(challenger.fitted.model, contract, metadata, challenger.reference,
                               stage="challenger")
            tracking.tag_run("bentoml_tag", entry.tag)
            yield Registration(entry.tag, run.info.run_id, mlflow_version, tracking_uri)
        except BaseException:
            if entry is not None:
                delete_entry(entry.tag)
            tracking.delete_version(tracking_uri, contract.name, mlflow_version)
            raise


def register_challenger(challenger: Challenger, contract: DataContract, config: TrainConfig,
                        home: Path) -> Registration:
    """``registered_challenger`` on its own: the model stays a challenger even when its gate
    would promote it (promote later with ``apply_gate`` or ``promote_champion``)."""
    with registered_challenger(challenger, contract, config, home) as registration:
        return registration


def apply_gate(model_tag: str, gate: GateDecision, tracking_uri: str | None) -> str:
    """Carry out the gate's decision on a stored model: make it the champion (the store label
    and the MLflow alias together, ``promote_champion``) or label it ``rejected``. Returns the
    stage it now has; raises what the store or the registry raised."""
    if gate.promote:
        promote_champion(model_tag, gate.reason, tracking_uri)
        return "champion"
    set_stage(model_tag, "rejected", gate.reason)
    return "rejected"


def train_and_register(
    data_source: str, contract: DataContract, config: TrainConfig, home: Path
) -> TrainingSummary:
    """Run the whole training job: evaluate a challenger, register it, then promote or reject
    it as the gate decided. Raises before anything is registered when a step fails; a failure
    after the registration deletes the store entry and the MLflow version again."""
    challenger = evaluate_challenger(data_source, contract, config)
    with registered_challenger(challenger, contract, config, home) as registration:
        stage = apply_gate(registration.model_tag, challenger.gate, registration.tracking_uri)
        if challenger.champion.tag:
            log.info("previous champion: %s", challenger.champion.tag)
    return training_summary(challenger, registration, stage)
