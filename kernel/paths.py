"""Where churn-serve keeps its state: one folder, ``CHURN_HOME`` (default ``./.churn``).

Resolved when asked, never at import, so the CLI's ``--home`` (which sets the variable) and a
test's temporary home both apply. Everything that defaults to a path under the home asks here.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CHURN_HOME"
DEFAULT_HOME = Path(".churn")


def churn_home() -> Path:
    """``$CHURN_HOME``, else ``./.churn`` (relative to the working directory)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def inference_log_dir() -> Path:
    """Default folder of the inference log the service writes and the jobs read."""
    return churn_home() / "inference_log"


def report_dir() -> Path:
    """Default folder of the monitoring jobs' HTML/JSON reports."""
    return churn_home() / "reports"


def model_store_dir() -> Path:
    """The BentoML model store: ``$BENTOML_HOME`` (as BentoML reads it), else ~/bentoml."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def default_mlflow_uri(home: Path | None = None) -> str:
    """MLflow when neither ``--mlflow-uri`` nor the training config names one: SQLite in the
    home folder. (Not ``$MLFLOW_TRACKING_URI``: ``mlflow.set_tracking_uri`` exports it to the
    process, so it would carry one run's registry into the next.)"""
    return f"sqlite:///{((home or churn_home()) / 'mlflow.db').resolve()}"
