"""MLflow tracking: one run per training, the model registered, ``champion`` as an alias.

The tracking URI is passed explicitly to every function here (``churn train --mlflow-uri``,
``mlflow_tracking_uri`` in configs/train.yaml, else SQLite in ``$CHURN_HOME``), because the
registry may be a shared tracking server (``http://...``) that several jobs use. Against a
server, artifacts are uploaded through it (``mlflow server --serve-artifacts``): a local
artifact path would only exist on the machine that trained. URIs are printed with
``mask_url`` and stored in model metadata without a password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from kernel.adapters.mlflow_internals import UnvalidatedPythonModel
from kernel.ingest import (
    IngestError,
    is_sql_source,
    mask_url,
    probe_database,
    with_default_driver,
    without_password,
)

if TYPE_CHECKING:
    from training.steps import RunRecord

log = logging.getLogger("churn.tracking")
CHAMPION_ALIAS = "champion"
REMOTE_SCHEMES = ("http://", "https://")


class TrackingError(RuntimeError):
    """The tracking server or database cannot be reached."""


def is_remote(tracking_uri: str) -> bool:
    """A tracking server (clients talk HTTP to it), not a database or folder we open."""
    return tracking_uri.lower().startswith(REMOTE_SCHEMES)


def normalized(tracking_uri: str) -> str:
    """``postgresql://`` means psycopg 3 here too (the driver churn-serve ships)."""
    return with_default_driver(tracking_uri) if is_sql_source(tracking_uri) else tracking_uri


def stored_uri(tracking_uri: str) -> str:
    """What model metadata records: the URI without a password (it comes from the
    environment: MLFLOW_TRACKING_PASSWORD, PGPASSWORD, ~/.pgpass)."""
    return without_password(tracking_uri)


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, before any training, when the server or database is unreachable
    (MLflow's own client retries for minutes). Raises TrackingError."""
    if is_remote(tracking_uri):
        import httpx

        try:
            # Any HTTP answer means reachable; authentication is MLflow's to report.
            httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout)
        except httpx.HTTPError as exc:
            raise TrackingError(f"MLflow tracking server {mask_url(tracking_uri)} is not "
                                f"reachable: {exc or type(exc).__name__}") from exc
    elif is_sql_source(tracking_uri) and not tracking_uri.lower().startswith("sqlite"):
        try:
            probe_database(tracking_uri)
        except IngestError as exc:
            raise TrackingError(f"MLflow backend: {exc}") from exc


def client(tracking_uri: str) -> MlflowClient:
    """A client of this tracking server / database; its model registry is the same store."""
    uri = normalized(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class ChurnPyfunc(UnvalidatedPythonModel):
    """Lets ``mlflow.pyfunc.load_model("models:/<name>@champion")`` score raw contract rows
    (a DataFrame of contract columns, validated by the contract, not by MLflow type hints)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import joblib

        self.model = joblib.load(context.artifacts["churn_model"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        return self.model.predict_proba(model_input)


@contextlib.contextmanager
def tracked_run(tracking_uri: str, experiment: str, artifact_root: Path,
                run_name: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FAILED when the block raises (and nothing is registered).

    A new experiment on a tracking server keeps the server's artifact location (uploads go
    through the server); on a local database it gets ``artifact_root``."""
    # Its artifact progress bars would interleave with our progress lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = normalized(tracking_uri)
    # The registry follows the tracking URI. (mlflow.set_registry_uri would also export
    # MLFLOW_REGISTRY_URI to this process's environment and every child's.)
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        if is_remote(uri):
            mlflow.create_experiment(experiment)
        else:
            artifact_root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(experiment,
                                     artifact_location=artifact_root.resolve().as_uri())
    elif is_remote(uri) and existing.artifact_location.startswith("file:"):
        log.warning("experiment %r stores artifacts in %s, a path on the machine that created "
                    "it: other machines cannot read them. Use a new mlflow_experiment name "
                    "so the server's artifact store is used.", experiment,
                    existing.artifact_location)
    mlflow.set_experiment(experiment)
    log.info("tracking in %s, experiment %r", mask_url(uri), experiment)
    with mlflow.start_run(run_name=run_name) as run:
        yield run


def log_record(record: RunRecord) -> None:
    """Write ``record`` to the active run: params, metrics, text and JSON artifacts, tags."""
    mlflow.log_params(record.params)
    mlflow.log_metrics(record.metrics)
    for artifact_file, text in record.texts.items():
        mlflow.log_text(text, artifact_file)
    for artifact_file, content in record.dicts.items():
        mlflow.log_dict(content, artifact_file)
    mlflow.set_tags(record.tags)


def tag_run(key: str, value: str) -> None:
    """Set one tag on the active run (e.g. the model store tag, once the entry exists)."""
    mlflow.set_tag(key, value)


def log_fitted_model(model: object, registered_name: str, requirements: list[str]) -> str:
    """Save ``model`` with joblib, then ``log_model`` it; returns the registered version."""
    import joblib

    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.joblib"
        joblib.dump(model, model_file)
        return log_model(model_file, registered_name, requirements)


def log_model(model_file: Path, registered_name: str, requirements: list[str]) -> str:
    """Log the joblib'ed ChurnModel as a pyfunc and register it; returns the version."""
    # MLflow's advice (models-from-code, pip version) is noise in our progress output: the
    # pyfunc only wraps a file we wrote, and the requirements are pinned by the caller.
    with _quiet("mlflow.pyfunc", "mlflow.utils.environment",
                "mlflow.store.model_registry.abstract_store"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ChurnPyfunc(),
            artifacts={"churn_model": str(model_file)},
            pip_requirements=requirements,
            registered_model_name=registered_name,
        )
    return str(info.registered_model_version)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Only errors from these loggers while the block runs."""
    previous = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in previous:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in previous:
            logger.setLevel(level)


def delete_version(tracking_uri: str, registered_name: str, version: str) -> None:
    """Undo a registration when the later BentoML save fails: a failed run registers nothing."""
    client(tracking_uri).delete_model_version(registered_name, version)


def set_champion(tracking_uri: str, registered_name: str, version: str) -> None:
    """Point the ``champion`` alias of ``registered_name`` at ``version``."""
    client(tracking_uri).set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)


def remove_champion(tracking_uri: str, registered_name: str) -> None:
    """Remove the ``champion`` alias (undoing the first promotion of a dataset)."""
    client(tracking_uri).delete_registered_model_alias(registered_name, CHAMPION_ALIAS)


def get_champion_version(tracking_uri: str, registered_name: str) -> tuple[str, str] | None:
    """(version, run id) the ``champion`` alias points at; None when the model is not
    registered there or has no champion."""
    from mlflow.exceptions import MlflowException

    if _missing_sqlite(tracking_uri):  # opening it would create an empty registry
        return None
    registry = client(tracking_uri)
    try:
        version = registry.get_registered_model(registered_name).aliases.get(CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if version is None:
        return None
    return str(version), registry.get_model_version(registered_name, str(version)).run_id


def _missing_sqlite(tracking_uri: str) -> bool:
    if not tracking_uri.lower().startswith("sqlite:"):
        return False
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    return bool(database) and database != ":memory:" and not Path(database).exists()
