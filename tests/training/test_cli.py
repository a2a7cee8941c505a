"""The `churn` command as a user runs it: real subprocesses, real files, a real SQLite source."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CHURN, CONTRACT_PATH


def churn(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHURN_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")}
    env.pop("CHURN_MODEL_TAG", None)  # a user's shell: the model comes from their own store
    return subprocess.run([CHURN, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=Path(CONTRACT_PATH).parents[1])


def stored_models(home: Path) -> list:
    result = churn("models", "--json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-home")


@pytest.fixture(scope="module")
def good_csv(cli_home: Path) -> Path:
    path = cli_home / "customers.csv"
    result = churn("generate", "--rows", "1500", "--output", str(path), home=cli_home)
    assert result.returncode == 0, result.stderr
    return path


def bad_sources(tmp: Path, good_csv: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty.csv"
    empty.write_text("")
    corrupt = tmp / "corrupt.parquet"
    corrupt.write_bytes(b"\x00\x01 not parquet at all")
    semicolons = tmp / "semi.csv"
    semicolons.write_text(good_csv.read_text().replace(",", ";"))
    other = tmp / "other.contract.yaml"
    other.write_text("name: other\ntarget: {column: churned}\nid: customer_id\n"
                     "features: {tenure: {type: numeric}, plan_code: {type: categorical}}\n")
    no_target = tmp / "no_target.contract.yaml"
    no_target.write_text(CONTRACT_PATH.read_text().replace("column: churned", "column: exited"))
    contract = ["--contract", str(CONTRACT_PATH)]
    return {
        "empty-file": (["--data", str(empty), *contract], "is empty"),
        "corrupt-file": (["--data", str(corrupt), *contract], "not a readable Parquet"),
        "wrong-delimiter": (["--data", str(semicolons), *contract], "wrong delimiter"),
        "contract-mismatch": (["--data", str(good_csv), "--contract", str(other)],
                              'column "tenure": 1500 rows missing'),
        "unknown-target": (["--data", str(good_csv), "--contract", str(no_target)],
                           'column "exited": 1500 rows missing: the contract\'s target column'),
    }


@pytest.mark.parametrize("case", ["empty-file", "corrupt-file", "wrong-delimiter",
                                  "contract-mismatch", "unknown-target"])
@pytest.mark.integration
def test_bad_input_is_one_clear_line_and_registers_nothing(case, cli_home, good_csv, tmp_path):
    args, message = bad_sources(tmp_path, good_csv)[case]
    result = churn("train", *args, home=cli_home)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    # Nothing registered: the store folder holds no model (read directly, no bentoml start-up).
    models_dir = cli_home / "bentoml" / "models"
    assert not models_dir.exists() or not any(models_dir.iterdir())


@pytest.mark.integration
def test_validate_lists_every_problem(cli_home, good_csv, tmp_path):
    text = good_csv.read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("tenure_days")] = "-4"
    row[header.index("plan")] = "gold"
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    result = churn("validate", "--data", str(broken), "--contract", str(CONTRACT_PATH),
                   home=cli_home)
    assert result.returncode == 2
    assert 'column "tenure_days": 1 row below min 0' in result.stderr
    assert 'column "plan": 1 row outside the allowed values' in result.stderr


@pytest.mark.e2e
def test_default_training_from_sqlite_reaches_the_floor_on_the_time_split(tmp_path):
    """README command 1's path on the default 10,000 customers, read through SQLAlchemy."""
    url = f"sqlite:///{tmp_path / 'customers.db'}#customers"
    assert churn("generate", "--output", url, home=tmp_path).returncode == 0
    summary = tmp_path / "summary.json"
    result = churn("train", "--data", url, "--contract", str(CONTRACT_PATH), "--summary",
                   str(summary), "--budget", "20", home=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(summary.read_text())
    assert facts["roc_auc"] >= 0.85
    assert facts["split"].startswith("time")
    assert facts["promoted"] is True and facts["stage"] == "champion"
    assert 0 < facts["threshold"] < 1 and facts["precision"] > 0.3 and facts["recall"] > 0.3
    assert "round 1" in result.stderr  # progress is shown
    listed = stored_models(tmp_path)
    assert [m["tag"] for m in listed] == [facts["model_tag"]]
    assert listed[0]["stage"] == "champion"
    # Why this model, and what it costs to score: in the summary, the output and the listing.
    assert listed[0]["scoring_cost"] == facts["scoring_cost"]
    assert listed[0]["scoring_cost"]["batch_rows"] == 64
    chosen = [row for row in facts["selection"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["candidate"].startswith(facts["algorithm"])
    assert "chosen: " in result.stdout and "ms/row " in result.stdout
    text = churn("models", home=tmp_path).stdout
    assert f"ms/row {listed[0]['scoring_cost']['ms_per_row_batch_1']:.4f}@1" in text


@pytest.mark.integration
def test_sigterm_ends_a_command_at_once_and_leaves_no_partial_output(tmp_path):
    """As a CronJob's PID 1 a command must not ignore SIGTERM, and what it was writing must not
    appear half-done (the all-or-nothing writers clean up on the way out)."""
    import signal
    import time

    output = tmp_path / "big.csv"
    env = {**os.environ, "CHURN_HOME": str(tmp_path)}
    process = subprocess.Popen([CHURN, "generate", "--rows", "3000000", "--output", str(output)],
                               env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(5)  # importing and generating take longer than this for 3M rows
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [] or not output.exists()
    assert not list(tmp_path.glob(".*big*"))
