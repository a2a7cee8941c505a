"""A new user's dataset needs a contract, not code: tables shaped like the public telecom and
bank churn datasets (their column names, text booleans, blank numbers, identifier columns)
train unchanged and match a tuned gradient-boosting baseline on the same split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from kernel.contract import DataContract, validate_training_data
from kernel.store import load_entry
from tests.conftest import REPO
from training.config import TrainConfig
from training.run import train_and_register
from training.split import split_rows


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def telco_like(n: int, rng: np.random.Generator) -> pd.DataFrame:
    yes_no = np.array(["No", "Yes"])
    tenure = rng.integers(0, 73, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.21, 0.24])
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.34, 0.44, 0.22])
    addon = lambda: np.where(internet == "No", "No internet service",  # noqa: E731
                             rng.choice(["No", "Yes"], n))
    security, support = addon(), addon()
    payment = rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                          "Credit card (automatic)"], n)
    monthly = (20 + 30 * (internet == "DSL") + 55 * (internet == "Fiber optic")
               + rng.normal(0, 8, n)).clip(18, 120).round(2)
    total = np.where(tenure == 0, " ", (monthly * tenure).round(2).astype(str))
    senior = (rng.random(n) < 0.16).astype(int)
    logit = (-1.2 + 1.4 * (contract == "Month-to-month") - 0.9 * (contract == "Two year")
             - 0.9 * np.log1p(tenure) / np.log(73) * 2 + 0.7 * (internet == "Fiber optic")
             + 0.5 * (payment == "Electronic check") + 0.4 * (support == "No")
             + 0.4 * (security == "No") + 0.3 * senior + rng.normal(0, 0.3, n))
    churn = rng.random(n) < _sigmoid(logit)
    return pd.DataFrame({
        "customerID": [f"{i:04d}-{''.join(rng.choice(list('ABCDEFGH'), 5))}" for i in range(n)],
        "gender": rng.choice(["Female", "Male"], n), "SeniorCitizen": senior,
        "Partner": yes_no[rng.integers(0, 2, n)], "Dependents": yes_no[rng.integers(0, 2, n)],
        "tenure": tenure, "PhoneService": yes_no[(rng.random(n) < 0.9).astype(int)],
        "MultipleLines": rng.choice(["No", "Yes", "No phone service"], n),
        "InternetService": internet, "OnlineSecurity": security, "OnlineBackup": addon(),
        "DeviceProtection": addon(), "TechSupport": support, "StreamingTV": addon(),
        "StreamingMovies": addon(), "Contract": contract,
        "PaperlessBilling": yes_no[rng.integers(0, 2, n)], "PaymentMethod": payment,
        "MonthlyCharges": monthly, "TotalCharges": total, "Churn": yes_no[churn.astype(int)],
    })


def bank_like(n: int, rng: np.random.Generator) -> pd.DataFrame:
    age = rng.normal(39, 10, n).clip(18, 92).round()
    geography = rng.choice(["France", "Spain", "Germany"], n, p=[0.5, 0.25, 0.25])
    products = rng.choice([1, 2, 3, 4], n, p=[0.5, 0.46, 0.03, 0.01])
    active = rng.integers(0, 2, n)
    balance = np.where(rng.random(n) < 0.36, 0.0, rng.normal(120_000, 30_000, n).clip(0))
    logit = (-2.0 + 0.09 * (age - 40) - 0.002 * (age - 40) ** 2 * (age > 55)
             + 0.8 * (geography == "Germany") - 0.9 * active
             + np.select([products == 1, products == 2], [0.3, -1.2], 2.5)
             + 0.3 * (balance > 0) + rng.normal(0, 0.3, n))
    exited = (rng.random(n) < _sigmoid(logit)).astype(int)
    return pd.DataFrame({
        "RowNumber": np.arange(1, n + 1), "CustomerId": 15_600_000 + rng.permutation(n),
        "Surname": rng.choice(["Hargrave", "Hill", "Onio", "Boni", "Mitchell"], n),
        "CreditScore": rng.normal(650, 95, n).clip(350, 850).round(),
        "Geography": geography, "Gender": rng.choice(["Female", "Male"], n), "Age": age,
        "Tenure": rng.integers(0, 11, n), "Balance": balance.round(2),
        "NumOfProducts": products, "HasCrCard": rng.integers(0, 2, n),
        "IsActiveMember": active, "EstimatedSalary": rng.uniform(10, 200_000, n).round(2),
        "Exited": exited,
    })


def tuned_gbm_baseline(data, split) -> float:
    """HistGradientBoosting (native categoricals) tuned on a small grid by its own
    validation split, refit on the training rows, scored on the same test rows."""
    X = data.features.copy()
    for column in X.columns[(X.dtypes == "object").to_numpy()]:
        X[column] = X[column].astype("category")
    y = data.target.to_numpy()
    train, test = split.train, split.test
    inner = np.random.default_rng(0).random(len(train)) < 0.75
    best, best_params = -1.0, None
    for lr in (0.03, 0.1):
        for leaves in (7, 15, 31):
            model = HistGradientBoostingClassifier(learning_rate=lr, max_leaf_nodes=leaves,
                                                   max_iter=300, categorical_features="from_dtype",
                                                   early_stopping=False, random_state=0)
            model.fit(X.iloc[train[inner]], y[train[inner]])
            auc = roc_auc_score(y[train[~inner]],
                                model.predict_proba(X.iloc[train[~inner]])[:, 1])
            if auc > best:
                best, best_params = auc, {"learning_rate": lr, "max_leaf_nodes": leaves}
    final = HistGradientBoostingClassifier(**best_params, max_iter=300, random_state=0,
                                           categorical_features="from_dtype",
                                           early_stopping=False).fit(X.iloc[train], y[train])
    return roc_auc_score(y[test], final.predict_proba(X.iloc[test])[:, 1])


@pytest.mark.e2e
@pytest.mark.parametrize("dataset", ["telco", "bank"])
def test_public_dataset_shapes_train_unchanged_and_match_a_tuned_gbm(
    dataset, tmp_path: Path, churn_home
):
    rng = np.random.default_rng(17)
    frame = telco_like(4000, rng) if dataset == "telco" else bank_like(4000, rng)
    path = tmp_path / f"{dataset}.csv"
    frame.to_csv(path, index=False)
    contract = DataContract.from_yaml(REPO / "configs" / "examples" / f"{dataset}.contract.yaml")

    # The default search, with a shorter budget to keep the suite fast.
    config = TrainConfig(imbalance=["none", "class_weight"], search_budget_seconds=30, cv_folds=3)
    summary = train_and_register(str(path), contract, config, churn_home)
    entry = load_entry(summary.model_tag)
    assert summary.split.startswith("stratified")
    assert not {"RowNumber", "Surname", "CustomerId", "customerID"} & set(entry.metadata.features)

    data = validate_training_data(pd.read_csv(path, dtype=str, keep_default_na=False,
                                              na_values=[""]), contract)
    baseline = tuned_gbm_baseline(data, split_rows(data, config.test_size, config.seed))
    print(dataset, summary.algorithm, summary.roc_auc, baseline)
    assert summary.roc_auc >= baseline - 0.01, (summary.roc_auc, baseline)
