"""MLflow tracking: one run per training, the model registered, ``champion`` as an alias."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from kernel.adapters.mlflow_internals import UnvalidatedPythonModel

log = logging.getLogger("churn.tracking")
CHAMPION_ALIAS = "champion"


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
    """An MLflow run that ends FAILED when the block raises (and nothing is registered)."""
    # Its artifact progress bars would interleave with our progress lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        yield run


def log_model(model_file: Path, registered_name: str, requirements: list[str]) -> str:
    """Log the joblib'ed ChurnModel as a pyfunc and register it; returns the version."""
    # MLflow's advice (models-from-code, pip version) is noise in our progress output: the
    # pyfunc only wraps a file we wrote, and the requirements are pinned by the caller.
    with _quiet("mlflow.pyfunc", "mlflow.utils.environment"):
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


def delete_version(registered_name: str, version: str) -> None:
    """Undo a registration when the later BentoML save fails: a failed run registers nothing."""
    MlflowClient().delete_model_version(registered_name, version)


def set_champion(registered_name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)
