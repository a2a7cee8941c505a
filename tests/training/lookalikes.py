"""Look-alikes of the public churn tables a new user brings (none can be downloaded here):
the same column names, spellings and traps, and effects of the same shape and strength.

- ``telco_like``: IBM Telco Customer Churn (7,043 rows, ~26.5% churn, mostly categorical,
  TotalCharges blank for new customers, roughly additive effects).
- ``bank_like``: Churn_Modelling.csv (10,000 rows, ~20% "Exited", identifiers that must not be
  features, a non-linear age effect and a U-shaped number of products).
- ``telecom_like``: the classic telecom table (bigml "churn-80/20", 3,333 rows, ~14.5% churn,
  usage minutes/calls/charges per period, international and voice-mail plans, customer service
  calls, no id column). Its churn comes from sharp interactions (heavy users without a voice-mail
  plan, international-plan users with few calls or many minutes, four or more service calls at
  low usage), which is why tree ensembles reach ROC-AUC ~0.92 on it and a linear model ~0.8.

``tuned_gbm_baseline`` is the yardstick the issue measures against: a gradient-boosting model a
practitioner would tune by hand on the same training rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _sigmoid(logit + mid).mean() > rate else (mid, hi)
    return (lo + hi) / 2


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


STATES = np.array([
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL",
    "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE",
    "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
    "VA", "VT", "WA", "WI", "WV", "WY",
])
# States whose churn rate is a few points above the rest in the real table (NJ, CA, TX, MD...).
HIGH_CHURN_STATES = np.array(["NJ", "CA", "TX", "MD", "SC", "MI", "MS", "NV", "WA", "ME"])


def telecom_like(n: int, rng: np.random.Generator, churn_rate: float = 0.145) -> pd.DataFrame:
    """The classic telecom table's shape: marginals as in the real file (day minutes ~180 +- 54,
    charges = minutes x a fixed rate per period, ~10% international plans, ~28% voice-mail
    plans, ~1.6 service calls on average) and its known churn rules as sharp interactions."""
    state = rng.choice(STATES, n)
    account_length = rng.normal(101, 40, n).clip(1, 243).round().astype(int)
    area_code = rng.choice([408, 415, 510], n, p=[0.25, 0.5, 0.25])
    intl_plan = rng.random(n) < 0.097
    vmail_plan = rng.random(n) < 0.277
    vmail_messages = np.where(vmail_plan, rng.normal(29, 7.7, n).clip(4, 51).round(), 0)
    minutes, calls, charges = {}, {}, {}
    for period, mean, sd, rate in (("day", 180, 54, 0.17), ("eve", 201, 51, 0.085),
                                   ("night", 201, 51, 0.045)):
        minutes[period] = rng.normal(mean, sd, n).clip(0, None).round(1)
        calls[period] = rng.normal(100, 20, n).clip(0, None).round().astype(int)
        charges[period] = (minutes[period] * rate).round(2)
    minutes["intl"] = rng.normal(10.2, 2.8, n).clip(0, 20).round(1)
    calls["intl"] = rng.poisson(4.5, n)
    charges["intl"] = (minutes["intl"] * 0.27).round(2)
    service_calls = rng.choice(np.arange(10), n, p=[0.21, 0.35, 0.23, 0.13, 0.05, 0.02, 0.007,
                                                     0.0025, 0.0003, 0.0002])

    # Heavy users leave unless a voice-mail plan ties them; international-plan customers leave
    # when the plan does not fit their use; many service calls drive out light users.
    heavy = _sigmoid((charges["day"] + 0.6 * charges["eve"] - 52) / 0.8)
    misfit_intl = intl_plan & ((calls["intl"] < 3) | (minutes["intl"] > 13))
    unhappy = (service_calls >= 4) * _sigmoid((165 - minutes["day"]) / 8)
    logit = (7.0 * heavy * np.where(vmail_plan, 0.1, 1.0)
             + intl_plan * 0.8 + misfit_intl * 6.0
             + 6.0 * unhappy
             + 0.5 * np.isin(state, HIGH_CHURN_STATES)
             + rng.normal(0, 0.8, n))
    churn = rng.random(n) < _sigmoid(logit + _intercept_for_rate(logit, churn_rate))
    return pd.DataFrame({
        "State": state, "Account length": account_length, "Area code": area_code,
        "International plan": np.where(intl_plan, "Yes", "No"),
        "Voice mail plan": np.where(vmail_plan, "Yes", "No"),
        "Number vmail messages": vmail_messages.astype(int),
        **{f"Total {p} {kind}": values[p] for p in ("day", "eve", "night", "intl")
           for kind, values in (("minutes", minutes), ("calls", calls), ("charge", charges))},
        "Customer service calls": service_calls,
        "Churn": np.where(churn, "True", "False"),
    })


def tuned_gbm_scores(data, split) -> np.ndarray:
    """Test-row probabilities of HistGradientBoosting (native categoricals) tuned on a small
    grid by its own validation split and refit on the training rows."""
    from threadpoolctl import threadpool_limits

    X = data.features.copy()
    for column in X.columns[(X.dtypes == "object").to_numpy()]:
        X[column] = X[column].astype("category")
    y = data.target.to_numpy()
    train, test = split.train, split.test
    inner = np.random.default_rng(0).random(len(train)) < 0.75
    best, best_params = -1.0, None
    # One OpenMP thread: on a busy shared machine more threads spin-wait (10x slower fits);
    # the fitted model is the same.
    with threadpool_limits(1):
        for lr in (0.03, 0.1):
            for leaves in (7, 15, 31):
                model = HistGradientBoostingClassifier(
                    learning_rate=lr, max_leaf_nodes=leaves, max_iter=300,
                    categorical_features="from_dtype", early_stopping=False, random_state=0)
                model.fit(X.iloc[train[inner]], y[train[inner]])
                auc = roc_auc_score(y[train[~inner]],
                                    model.predict_proba(X.iloc[train[~inner]])[:, 1])
                if auc > best:
                    best, best_params = auc, {"learning_rate": lr, "max_leaf_nodes": leaves}
        final = HistGradientBoostingClassifier(**best_params, max_iter=300, random_state=0,
                                               categorical_features="from_dtype",
                                               early_stopping=False).fit(X.iloc[train], y[train])
        return final.predict_proba(X.iloc[test])[:, 1]


def tuned_gbm_baseline(data, split) -> float:
    """Test ROC-AUC of ``tuned_gbm_scores``."""
    return roc_auc_score(data.target.to_numpy()[split.test], tuned_gbm_scores(data, split))
