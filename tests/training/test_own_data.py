"""A new user's own table, as they would run it: no id column, their own contract name, and no
model named on any command while the store holds one dataset (real `churn` subprocesses)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.training.lookalikes import telecom_like
from tests.training.test_cli import churn

pytestmark = pytest.mark.e2e

FAST = "algorithms: [xgboost]\nimbalance: [none]\nsearch_budget_seconds: 0\nmax_trials: 0\n" \
       "cv_folds: 3\nreference_rows: 500\n"
TELECOM_CONTRACT = REPO / "configs" / "examples" / "telecom.contract.yaml"  # no id column


def telecom_table(rows: int, seed: int) -> pd.DataFrame:
    return telecom_like(rows, np.random.default_rng(seed))


def test_a_table_without_id_trains_scores_and_drifts_without_naming_the_model(tmp_path):
    table = tmp_path / "telecom.csv"
    telecom_table(1500, seed=3).to_csv(table, index=False)
    (tmp_path / "telecom.contract.yaml").write_text(TELECOM_CONTRACT.read_text())
    (tmp_path / "train.yaml").write_text(FAST)
    trained = churn("train", "--data", str(table), "--contract",
                    str(tmp_path / "telecom.contract.yaml"), "--config",
                    str(tmp_path / "train.yaml"), "--summary", str(tmp_path / "summary.json"),
                    home=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["stage"] == "champion"

    fresh = telecom_table(300, seed=4).drop(columns="Churn")
    fresh.loc[7, "Total day minutes"] = -1  # breaks the contract: rejected, by position
    fresh.to_csv(tmp_path / "fresh.csv", index=False)
    scored = churn("score", "--input", str(tmp_path / "fresh.csv"), "--output",
                   str(tmp_path / "scores.csv"), "--chunk-rows", "100", home=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    scores = pd.read_csv(tmp_path / "scores.csv")
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    # Rows are identified by their position in the input table, across chunks.
    assert scores["row"].tolist() == [i for i in range(300) if i != 7]
    assert rejects["row"].tolist() == [7]
    assert "Total day minutes: below min 0" in rejects["reject_reason"][0]

    drift = churn("drift", "--current", str(tmp_path / "fresh.csv"), "--no-push",
                  "--min-rows", "100", home=tmp_path)
    assert drift.returncode == 0, drift.stderr[-2000:]
    assert drift.stdout.startswith("telecom:")

    # A second dataset in the store: a command that needs a model must now be told which.
    (tmp_path / "other.contract.yaml").write_text(
        TELECOM_CONTRACT.read_text().replace("name: telecom", "name: other"))
    assert churn("train", "--data", str(table), "--contract", str(tmp_path / "other.contract.yaml"),
                 "--config", str(tmp_path / "train.yaml"), home=tmp_path).returncode == 0
    ambiguous = churn("score", "--input", str(tmp_path / "fresh.csv"), "--output",
                      str(tmp_path / "again.csv"), home=tmp_path)
    assert ambiguous.returncode == 2
    error = ambiguous.stderr.strip().splitlines()[-1]
    assert "holds models of 2 datasets (other, telecom)" in error and "--model" in error
    assert not (tmp_path / "again.csv").exists()
    named = churn("score", "--input", str(tmp_path / "fresh.csv"), "--output",
                  str(tmp_path / "again.csv"), "--model", "other", home=tmp_path)
    assert named.returncode == 0, named.stderr[-2000:]
    assert "scored 299 of 300 rows with other:" in named.stdout
