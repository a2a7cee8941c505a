"""A synthetic subscription-streaming customer base, realistic enough to be hard.

Each row is a customer observed on a monthly ``snapshot_date``; ``churned`` says whether they
cancelled within the following 30 days. Churn is driven by a hidden engagement level that the
data shows only through noisy proxies (logins, watch hours, recency), by non-linear effects
(early-tenure risk, price sensitivity), by interactions (payment failures hurt most without
auto-renew; tickets hurt most when satisfaction is low), and by unobserved noise, so a good model
reaches ROC-AUC near 0.87, not 0.99.

Traps a pipeline must survive: an id column, a post-churn leakage column
(``cancellation_reason`` is only known after the customer left; ``days_until_cancellation`` too),
missing values (satisfaction, age), and numbers stored as text with blanks when written to CSV.

``drifted=True`` produces the population a monitoring job should flag: lower engagement, a price
rise, a new region, more gift cards and more missing satisfaction scores. By default the churn
rate is re-fitted to ``churn_rate``, which also moves P(churn | features) (concept drift);
``keep_churn_rate=False`` keeps the undrifted intercept, a pure covariate shift, which is what
label-free performance estimation assumes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

PLANS = np.array(["basic", "standard", "premium"])
PLAN_PRICE = np.array([8.99, 13.99, 19.99])
REGIONS = np.array(["north_america", "europe", "latam", "apac"])
PAYMENT_METHODS = np.array(["credit_card", "debit_card", "paypal", "gift_card"])
DEVICES = np.array(["tv", "mobile", "web", "tablet"])
REASONS = np.array(["price", "content", "technical", "payment_failed", "other"])


class GeneratorConfig(BaseModel):
    rows: int = Field(10_000, ge=10, description="number of customers")
    churn_rate: float = Field(0.15, gt=0.01, lt=0.9, description="target share of churners")
    seed: int = 42
    start: str = Field("2025-01-01", description="first monthly snapshot")
    months: int = Field(18, ge=1, description="number of monthly snapshots")
    drifted: bool = Field(False, description="generate the shifted population")
    keep_churn_rate: bool = Field(
        True, description="drifted only: re-fit the churn rate (False: pure covariate shift)"
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """Bisection on the intercept so the mean churn probability equals ``rate``."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logit + mid).mean() > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def generate_customers(config: GeneratorConfig | None = None) -> pd.DataFrame:
    """Generate ``config.rows`` customers (vectorised: a million rows take a few seconds)."""
    config = config or GeneratorConfig()
    intercept = None
    if config.drifted and not config.keep_churn_rate:
        _, intercept = _generate(config.model_copy(update={"drifted": False}), None)
    return _generate(config, intercept)[0]


def _generate(config: GeneratorConfig, intercept: float | None) -> tuple[pd.DataFrame, float]:
    """The population and the intercept used (fitted to the churn rate unless given)."""
    rng = np.random.default_rng(config.seed + (7919 if config.drifted else 0))
    n = config.rows
    drift = config.drifted

    snapshots = pd.date_range(config.start, periods=config.months, freq="MS")
    snapshot = snapshots[rng.integers(0, len(snapshots), n)]
    tenure = np.minimum(rng.gamma(1.3, 320, n), 2900).round()
    signup = snapshot - pd.to_timedelta(tenure, unit="D")

    engagement = rng.normal(-0.45 if drift else 0.0, 1.0, n)
    plan_idx = rng.choice(3, n, p=[0.45, 0.35, 0.20])
    region_pool = np.append(REGIONS, "africa") if drift else REGIONS
    region_p = [0.35, 0.27, 0.15, 0.10, 0.13] if drift else [0.40, 0.30, 0.18, 0.12]
    region = rng.choice(region_pool, n, p=region_p)
    pay_p = [0.35, 0.25, 0.20, 0.20] if drift else [0.45, 0.27, 0.20, 0.08]
    payment = rng.choice(PAYMENT_METHODS, n, p=pay_p)
    device = rng.choice(DEVICES, n, p=[0.45, 0.30, 0.15, 0.10])

    price_rise = 2.0 if drift else 0.0
    discount = rng.random(n) < 0.18
    monthly_charge = (
        PLAN_PRICE[plan_idx] + price_rise - discount * rng.uniform(1, 4, n) + rng.normal(0, 0.3, n)
    ).clip(0.99, None).round(2)

    logins = rng.poisson(np.exp(2.4 + 0.6 * engagement + rng.normal(0, 0.2, n)))
    watch_hours = rng.gamma(4.0, np.exp(1.9 + 0.6 * engagement) / 4.0).round(1)
    days_since_login = np.minimum(
        rng.exponential(np.exp(1.3 - 0.8 * engagement)), 90
    ).round()
    satisfaction = (3.4 + 0.45 * engagement + rng.normal(0, 0.9, n)).clip(1, 5).round(1)
    tickets = rng.poisson(np.exp(-0.6 - 0.35 * (satisfaction - 3)))
    failure_rate = 0.08 + 0.35 * (payment == "gift_card") + 0.1 * (payment == "debit_card")
    failures = rng.poisson(failure_rate * (1 + rng.gamma(1, 0.7, n)))
    auto_renew = rng.random(n) < np.where(payment == "gift_card", 0.35, 0.8)
    profiles = rng.integers(1, 6, n)
    age = rng.normal(38, 12, n).clip(18, 85).round()

    # The truth: hidden engagement, non-linear tenure and price effects, interactions, noise.
    logit = 1.6 * (
        -0.9 * engagement
        + 1.3 * np.exp(-tenure / 110)
        + 0.55 * np.log1p(failures) * np.where(auto_renew, 1.0, 2.2)
        + 0.85 * ~auto_renew
        + 0.9 * (days_since_login > 14)
        + 0.8 * ((tenure < 60) & ~auto_renew)
        - 0.45 * (satisfaction - 3)
        + 0.25 * tickets * (satisfaction < 3)
        + 0.10 * (monthly_charge - 13)
        + 0.8 * ((plan_idx == 2) & (watch_hours < 4))
        + 0.45 * (payment == "gift_card")
        + 0.15 * (payment == "paypal")
        - 0.25 * discount
        - 0.12 * (profiles - 1)
        + 0.3 * (device == "mobile")
        + 0.2 * (region == "latam")
        + rng.normal(0, 0.6, n)  # what no dataset records
    )
    if intercept is None:
        intercept = _intercept_for_rate(logit, config.churn_rate)
    churned = rng.random(n) < _sigmoid(logit + intercept)

    # Missingness: satisfaction surveys are skipped more by disengaged customers.
    sat_missing = rng.random(n) < (0.25 if drift else 0.08) + 0.06 * (engagement < -1)
    satisfaction = np.where(sat_missing, np.nan, satisfaction)
    age = np.where(rng.random(n) < 0.05, np.nan, age)

    reason = np.where(churned, rng.choice(REASONS, n, p=[0.35, 0.25, 0.1, 0.15, 0.15]), None)
    reason = np.where(churned & (failures > 0) & (rng.random(n) < 0.6), "payment_failed", reason)
    days_until = np.where(churned, rng.integers(1, 31, n), np.nan)

    ids = np.char.add("C", np.char.zfill(rng.permutation(n * 3)[:n].astype(str), 8))
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "snapshot_date": snapshot.strftime("%Y-%m-%d"),
            "signup_date": signup.strftime("%Y-%m-%d"),
            "tenure_days": tenure.astype(int),
            "plan": PLANS[plan_idx],
            "region": region,
            "payment_method": payment,
            "primary_device": device,
            "monthly_charge": monthly_charge,
            "discount_applied": discount,
            "logins_last_30d": logins,
            "watch_hours_last_30d": watch_hours,
            "days_since_last_login": days_since_login.astype(int),
            "satisfaction_score": satisfaction,
            "support_tickets_90d": tickets,
            "payment_failures_6m": failures,
            "auto_renew_enabled": auto_renew,
            "profiles": profiles,
            "age": age,
            "cancellation_reason": reason,
            "days_until_cancellation": days_until,
            "churned": churned.astype(int),
        }
    )
    return frame.sort_values("snapshot_date", kind="stable").reset_index(drop=True), intercept
