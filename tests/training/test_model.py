"""Model tests: honest quality on the time split, no leakage, calibrated probabilities, and
behaviour a churn model must have whatever algorithm wins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from kernel.contract import Costs, DataContract, FeatureSpec, validate_training_data
from kernel.features import frequent_categories
from training.config import TrainConfig
from training.evaluate import (
    best_threshold,
    calibration_error,
    expected_value,
    monotone_violations,
)
from training.generate import GeneratorConfig, generate_customers
from training.split import split_rows
from training.train import Candidate, fit_candidate, leakage_suspects


@pytest.fixture(scope="module")
def split_data(contract):
    data = validate_training_data(generate_customers(GeneratorConfig(rows=6000, seed=11)),
                                  contract)
    return data, split_rows(data, 0.2, 0)


def fit_xgboost(contract: DataContract, X: pd.DataFrame, y: np.ndarray):
    candidate = Candidate("xgboost", "class_weight", {"n_estimators": 150, "max_depth": 4,
                                                      "learning_rate": 0.1}, 0.0)
    return fit_candidate(candidate, X, y, contract, frequent_categories(X, contract),
                         TrainConfig(seed=0))


def test_time_split_puts_the_newest_rows_in_test(split_data):
    data, split = split_data
    assert data.event_time.iloc[split.train].max() < data.event_time.iloc[split.test].min()
    assert 0.15 < len(split.test) / len(data.target) < 0.3


@pytest.mark.e2e
def test_leakage_column_would_inflate_roc_auc_and_is_flagged(contract, split_data):
    data, split = split_data
    raw = generate_customers(GeneratorConfig(rows=6000, seed=11))
    leaky = contract.model_copy(update={
        "drop": [c for c in contract.drop if c != "days_until_cancellation"],
        "features": {**contract.features,
                     "days_until_cancellation": FeatureSpec(type="numeric", nullable=True)},
    })
    leaky_data = validate_training_data(raw, leaky)
    y = data.target.to_numpy()
    tr, te = split.train, split.test
    honest = fit_xgboost(contract, data.features.iloc[tr], y[tr])
    cheat = fit_xgboost(leaky, leaky_data.features.iloc[tr], y[tr])
    honest_auc = roc_auc_score(y[te], honest.predict_proba(data.features.iloc[te])[:, 1])
    cheat_auc = roc_auc_score(y[te], cheat.predict_proba(leaky_data.features.iloc[te])[:, 1])
    assert cheat_auc > 0.99 > 0.92 > honest_auc > 0.8
    # The training job warns about such a column by itself.
    suspects = leakage_suspects(leaky_data.features.iloc[tr], y[tr], limit=0.97)
    assert list(suspects) == ["days_until_cancellation"]
    # And with the real contract it is not a feature at all.
    assert "days_until_cancellation" not in data.features.columns


def probe(model, rows: pd.DataFrame, column: str, deltas: list[float]) -> np.ndarray:
    """Probabilities (rows x deltas) with ``column`` shifted by each delta, all else equal."""
    out = []
    for delta in deltas:
        shifted = rows.copy()
        shifted[column] = (shifted[column] + delta).clip(lower=0)
        out.append(model.predict_proba(shifted))
    return np.column_stack(out)


@pytest.mark.parametrize("which", ["champion", "xgboost"])
def test_more_payment_failures_and_fewer_logins_never_lower_risk(
    which, trained_entry, contract, split_data
):
    data, split = split_data
    rows = data.features.iloc[split.test].head(400)
    if which == "champion":
        model = trained_entry.model
    else:
        y = data.target.to_numpy()
        pipe = fit_xgboost(contract, data.features.iloc[split.train], y[split.train])

        class _Proba:  # the pipeline's positive-class column, like ChurnModel
            def predict_proba(self, frame):
                return pipe.predict_proba(frame)[:, 1]

        model = _Proba()
    failures = probe(model, rows, "payment_failures_6m", [0, 1, 2, 4])
    assert (np.diff(failures, axis=1) >= -1e-9).all()
    assert (failures[:, -1] > failures[:, 0]).mean() > 0.5  # and it does matter
    logins = probe(model, rows, "logins_last_30d", [0, -2, -5, -10])
    assert (np.diff(logins, axis=1) >= -1e-9).all()
    # The gate runs the same check on every new model.
    assert monotone_violations(model.predict_proba, rows, contract) == {}


def test_customer_id_and_undeclared_columns_have_no_effect(trained_entry, split_data):
    data, split = split_data
    raw = generate_customers(GeneratorConfig(rows=300, seed=99))
    base = trained_entry.model.predict_proba(raw)
    changed = raw.assign(customer_id=[f"X{i}" for i in range(len(raw))],
                         cancellation_reason="price", days_until_cancellation=1)
    np.testing.assert_array_equal(trained_entry.model.predict_proba(changed), base)


def test_probabilities_read_as_probabilities(trained_entry):
    fresh = generate_customers(GeneratorConfig(rows=5000, seed=123))
    p = trained_entry.model.predict_proba(fresh)
    y = fresh["churned"].to_numpy()
    assert calibration_error(y, p) < 0.04
    assert abs(p.mean() - y.mean()) < 0.03


def test_threshold_maximises_value_by_brute_force():
    rng = np.random.default_rng(0)
    p = rng.random(400)
    y = (rng.random(400) < p).astype(int)
    costs = Costs(saved_customer_value=100, offer_cost=20, offer_success_rate=0.5)
    chosen = best_threshold(y, p, costs)
    best = max(expected_value(y, (p >= t).astype(int), costs) for t in np.append(p, 1.01))
    assert expected_value(y, (p >= chosen).astype(int), costs) == pytest.approx(best)
    # Break-even for a calibrated score is cost / kept value = 0.4: the optimum is near it.
    assert 0.25 < chosen < 0.55
    assert best_threshold(y, p, Costs(saved_customer_value=1, offer_cost=10)) == 1.0
