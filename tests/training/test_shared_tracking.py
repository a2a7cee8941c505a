"""A team's setup, for real: customers in PostgreSQL, `churn mlflow-server` (MLflow on its own
PostgreSQL, artifacts served), training jobs that register into it, and other processes that
read the registry back knowing nothing but its URL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from kernel.ingest import write_table
from kernel.processes import free_port, http_ok, start_process
from tests.conftest import CHURN, CONTRACT_PATH
from training.generate import GeneratorConfig, generate_customers

REPO = CONTRACT_PATH.parents[1]
FAST = {"algorithms": ["logistic"], "imbalance": ["class_weight"], "search_budget_seconds": 0,
        "max_trials": 0, "cv_folds": 3, "reference_rows": 500}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the MLflow URIs in-process runs export to it."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}}
    return {**env, **extra}


def churn(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = clean_env(CHURN_HOME=str(home), BENTOML_HOME=str(home / "bentoml"))
    return subprocess.run([CHURN, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def customers_db(postgres) -> str:
    """The team's customer table, in PostgreSQL."""
    url = postgres.create_database("crm")
    write_table(generate_customers(GeneratorConfig(rows=1500, seed=3)), f"{url}#customers")
    return url


@pytest.fixture(scope="module")
def server():
    """`churn mlflow-server` as a user starts it (its PostgreSQL under its CHURN_HOME)."""
    home = Path(tempfile.mkdtemp(prefix="churn-mlflow-"))
    home.chmod(0o755)  # its PostgreSQL runs as the `postgres` user when tests run as root
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_process(
        [CHURN, "mlflow-server", "--port", str(port)], name="churn mlflow-server",
        log_path=home / "command.log", cwd=REPO, ready=lambda: http_ok(f"{url}/health"),
        env=clean_env(CHURN_HOME=str(home)), timeout=240)
    yield url, home, process
    process.stop(timeout=60)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> Path:
    """The training job's machine: its own home and model store, no MLflow of its own."""
    home = tmp_path_factory.mktemp("trainer")
    (home / "fast.yaml").write_text(yaml.safe_dump(FAST))
    return home


def stored(home: Path, *args: str) -> list[dict]:
    result = churn("models", "--json", *args, home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.e2e
def test_training_registers_into_the_shared_server(server, trainer, customers_db):
    url, server_home, _ = server
    runs = [f"{customers_db}#customers",
            f"{customers_db}#SELECT * FROM customers WHERE region <> 'apac'"]
    for number, data in enumerate(runs, start=1):
        result = churn("train", "--data", data, "--contract", str(CONTRACT_PATH),
                       "--config", str(trainer / "fast.yaml"), "--mlflow-uri", url,
                       "--summary", str(trainer / f"run{number}.json"), home=trainer)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((trainer / f"run{number}.json").read_text())[
            "mlflow_model_version"] == str(number)

    # A second process reads the registry: the alias points at the store's champion only.
    rows = stored(trainer, "--mlflow-uri", url)
    assert sorted(r["mlflow_version"] for r in rows) == ["1", "2"]
    for row in rows:
        assert row["mlflow_champion"] is (row["stage"] == "champion"), row
    # Artifacts went through the server into its artifact store, not the trainer's disk.
    assert list((server_home / "mlflow-artifacts").rglob("MLmodel"))
    assert not (trainer / "mlruns").exists()


@pytest.mark.e2e
def test_promotion_moves_the_alias_a_plain_mlflow_client_sees(server, trainer, tmp_path):
    url, _, _ = server
    rows = stored(trainer, "--mlflow-uri", url)
    assert len(rows) == 2, "needs the registrations of the previous test"
    other = next(r for r in rows if r["stage"] != "champion")
    result = churn("promote", other["tag"], "--mlflow-uri", url, home=trainer)
    assert result.returncode == 0, result.stderr

    # Another machine: only the URL. It sees the alias and loads the model through the server.
    reader = """
import json, sys
import mlflow, pandas as pd
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
version = client.get_registered_model("streaming_churn").aliases["champion"]
experiment = client.get_experiment_by_name("churn-serve")
model = mlflow.pyfunc.load_model("models:/streaming_churn@champion")
rows = pd.read_csv(sys.argv[2]).head(5)
print(json.dumps({"version": version, "artifacts": experiment.artifact_location,
                  "scores": [float(p) for p in model.predict(rows)]}))
"""
    sample = tmp_path / "rows.csv"
    generate_customers(GeneratorConfig(rows=20, seed=9)).to_csv(sample, index=False)
    env = clean_env(MLFLOW_TRACKING_URI=url, CHURN_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", reader, url, str(sample)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["version"] == other["mlflow_version"]
    assert seen["artifacts"].startswith("mlflow-artifacts:")  # served, not a local path
    assert len(seen["scores"]) == 5 and all(0 <= p <= 1 for p in seen["scores"])
    rows = {r["tag"]: r for r in stored(trainer, "--mlflow-uri", url)}
    assert rows[other["tag"]]["mlflow_champion"] is True


@pytest.mark.e2e
def test_server_command_stops_mlflow_and_postgres_on_sigterm(server):
    url, home, process = server
    postmaster = home / "postgres" / "data" / "postmaster.pid"
    assert postmaster.exists()
    assert process.stop(timeout=60) == 0
    assert not http_ok(f"{url}/health")
    assert not postmaster.exists()  # PostgreSQL shut down cleanly, not left running
    assert "Ctrl-C stops both" in process.log_tail()


def test_unreachable_tracking_server_fails_before_training(trainer, customers_db):
    url = f"http://127.0.0.1:{free_port()}"
    before = sorted((trainer / "bentoml").rglob("model.yaml"))
    result = churn("train", "--data", f"{customers_db}#customers", "--contract",
                   str(CONTRACT_PATH), "--config", str(trainer / "fast.yaml"),
                   "--mlflow-uri", url, home=trainer, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"MLflow tracking server {url} is not reachable" in errors[0]
    assert "Traceback" not in result.stderr
    assert sorted((trainer / "bentoml").rglob("model.yaml")) == before


def test_models_reads_the_alias_from_each_entrys_own_registry(trained_entry):
    # The session's champion was registered in the embedded SQLite registry.
    from typer.testing import CliRunner

    from churn_cli import app

    assert trained_entry.metadata.mlflow_tracking_uri.startswith("sqlite:///")
    plain = CliRunner().invoke(app, ["models", "--json"])
    checked = CliRunner().invoke(app, ["models", "--json", "--registry"])
    assert plain.exit_code == 0 and checked.exit_code == 0, checked.output
    row = next(r for r in json.loads(checked.stdout) if r["tag"] == trained_entry.tag)
    assert row["mlflow_champion"] is True, (row, checked.stderr)
    assert row["mlflow_version"] == trained_entry.metadata.mlflow_model_version
    unasked = next(r for r in json.loads(plain.stdout) if r["tag"] == trained_entry.tag)
    assert unasked["mlflow_champion"] is None  # not asked: unknown, not False
