"""Session-wide fixtures: an isolated model store and MLflow database, and one real champion
trained on generated data that the service and monitoring tests share."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate the whole session from the user's model store before anything imports bentoml
# (bentoml reads BENTOML_HOME once, at import).
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="churn-test-"))
os.environ["CHURN_HOME"] = str(_SESSION_HOME)
os.environ["BENTOML_HOME"] = str(_SESSION_HOME / "bentoml")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

REPO = Path(__file__).resolve().parents[1]
CONTRACT_PATH = REPO / "configs" / "streaming_churn.contract.yaml"
CHURN = str(REPO / ".venv" / "bin" / "churn")


def _churn_logging_state() -> tuple:
    import logging

    logger = logging.getLogger("churn")
    return list(logger.handlers), logger.propagate, logger.level


_PRISTINE_LOGGING = _churn_logging_state()


@pytest.fixture(autouse=True)
def _churn_logging_restored():
    """Every test starts and ends with ``churn.*`` logging as the session began. The service's
    JSON logging (``ChurnService.__init__``, run by module and session fixtures too) stops
    ``churn.*`` records from propagating, and a library's ``logging.config.dictConfig``
    (BentoML's) disables every logger that exists by then: either would hide later tests'
    records from caplog."""
    import logging

    def restore() -> None:
        logger = logging.getLogger("churn")
        handlers, propagate, level = _PRISTINE_LOGGING
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)
        for name, each in list(logging.Logger.manager.loggerDict.items()):
            if name.startswith("churn") and isinstance(each, logging.Logger):
                each.disabled = False

    restore()
    yield
    restore()


@pytest.fixture(scope="session")
def churn_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def contract():
    from kernel.contract import DataContract

    return DataContract.from_yaml(CONTRACT_PATH)


@pytest.fixture(scope="session")
def fast_config():
    """A training config small enough for tests: two candidates, no tuning round."""
    from training.config import TrainConfig

    return TrainConfig(algorithms=["logistic", "xgboost"], imbalance=["class_weight"],
                       search_budget_seconds=0, max_trials=0, cv_folds=3, reference_rows=2000)


@pytest.fixture(scope="session")
def training_csv(churn_home: Path) -> Path:
    from training.generate import GeneratorConfig, generate_customers

    path = churn_home / "data" / "customers.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_customers(GeneratorConfig(rows=4000, seed=7)).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_entry(training_csv: Path, contract, fast_config, churn_home: Path):
    """A real champion in the session's model store (trained once, ~10-20 s), named by
    CHURN_MODEL_TAG as a pod names its model: other tests add other datasets to the store."""
    from kernel.store import MODEL_TAG_ENV, load_entry
    from training.run import train_and_register

    summary = train_and_register(str(training_csv), contract, fast_config, churn_home)
    assert summary.promoted, summary.decision
    os.environ[MODEL_TAG_ENV] = summary.model_tag
    return load_entry(summary.model_tag)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (the real server, fsync off) in a temp dir on a free
    port, for the whole session; started on first use (~2 s), stopped at the end."""
    import shutil

    from training.mlflow_server import start_postgres

    root = Path(tempfile.mkdtemp(prefix="churn-pg-"))
    root.chmod(0o755)  # the server runs as the `postgres` user when the tests run as root
    with start_postgres(root, durable=False) as cluster:
        yield cluster
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dask_scheduler():
    """Address of a real Dask LocalCluster with 2 worker processes (1 thread each), for the
    whole session: `--dask tcp://...` runs against it as against a remote scheduler."""
    import logging

    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # closing-race tracebacks
    cluster.close()


# A test that needs one of these is an integration test (a real process, or the trained model).
INTEGRATION_FIXTURES = frozenset({
    "trained_entry", "service_module", "server", "pushgateway", "bodies", "churn",
    "postgres", "postgres_url", "mlflow_server", "prometheus_stack", "dask_scheduler",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test its tier: explicit e2e/integration markers win, then the fixtures."""
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("integration"):
            continue
        needs = INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if needs else pytest.mark.unit)
