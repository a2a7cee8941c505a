"""Data tests: the contract rejects each kind of bad data with a message naming column, count
and rule, and reports every problem together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kernel.contract import (
    ContractError,
    ContractViolation,
    DataContract,
    split_valid_rows,
    validate_training_data,
)
from training.generate import GeneratorConfig, generate_customers


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(GeneratorConfig(rows=600, seed=3))


def problems_of(frame: pd.DataFrame, contract: DataContract) -> list[str]:
    with pytest.raises(ContractViolation) as info:
        validate_training_data(frame, contract)
    return [str(p) for p in info.value.problems]


def test_clean_generated_data_passes(customers, contract):
    result = validate_training_data(customers, contract)
    assert list(result.features.columns) == list(contract.features)
    assert set(result.target.unique()) == {0, 1}
    # Leakage and id columns never reach the features.
    assert not {"cancellation_reason", "days_until_cancellation", "customer_id"} & set(
        result.features.columns)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: f.drop(columns=["tenure_days"]),
         'column "tenure_days": 600 rows missing: declared feature not in the data'),
        (lambda f: f.assign(tenure_days=f["tenure_days"].astype(object).where(
            f.index >= 5, "abc")), 'column "tenure_days": 5 rows not numeric'),
        (lambda f: f.assign(satisfaction_score=f["satisfaction_score"].where(
            f.index >= 7, 9.0)), 'column "satisfaction_score": 7 rows above max 5'),
        (lambda f: f.assign(tenure_days=f["tenure_days"].where(f.index >= 3, -1)),
         'column "tenure_days": 3 rows below min 0'),
        (lambda f: f.assign(plan=f["plan"].where(f.index >= 4, "gold")),
         'column "plan": 4 rows outside the allowed values'),
        (lambda f: f.assign(monthly_charge=f["monthly_charge"].where(f.index >= 2)),
         'column "monthly_charge": 2 rows null but the contract says not nullable'),
        (lambda f: f.assign(auto_renew_enabled=f["auto_renew_enabled"].astype(object).where(
            f.index >= 6, "maybe")), 'column "auto_renew_enabled": 6 rows not a boolean'),
        (lambda f: f.assign(churned=f["churned"].astype(float).where(f.index >= 8)),
         'column "churned": 8 rows missing target'),
        (lambda f: f.assign(churned=0), 'column "churned": 600 rows single class'),
        (lambda f: f.drop(columns=["churned"]),
         "column \"churned\": 600 rows missing: the contract's target column"),
        (lambda f: f.assign(customer_id=f["customer_id"].where(f.index >= 2, "C1")),
         'column "customer_id": 2 rows duplicate id'),
        (lambda f: f.head(50), 'column "<table>": 50 rows present, fewer than min_rows 200'),
        (lambda f: f.assign(snapshot_date=f["snapshot_date"].where(f.index >= 3, "soon")),
         'column "snapshot_date": 3 rows not a date/time'),
    ],
    ids=["missing-column", "wrong-type", "above-max", "below-min", "closed-category", "null",
         "boolean", "missing-target", "single-class", "no-target", "duplicate-id", "too-few-rows",
         "bad-event-time"],
)
def test_each_kind_of_bad_data_is_named(customers, contract, mutate, expected):
    found = problems_of(mutate(customers.copy()), contract)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_are_reported_together(customers, contract):
    bad = customers.copy()
    bad.loc[:2, "tenure_days"] = -5
    bad.loc[:9, "plan"] = "platinum"
    bad = bad.drop(columns=["age"])
    with pytest.raises(ContractViolation) as info:
        validate_training_data(bad, contract)
    columns = {p.column for p in info.value.problems}
    assert columns == {"tenure_days", "plan", "age"}
    assert "(of 600 rows)" in str(info.value)


def test_numbers_stored_as_text_with_blanks_are_parsed(customers, contract):
    text = customers.astype(str)
    text.loc[:19, "satisfaction_score"] = " "  # blank = missing, and the column is nullable
    text.loc[:4, "auto_renew_enabled"] = ["yes", "No", "1", "FALSE", "t"]
    result = validate_training_data(text, contract)
    assert result.features["satisfaction_score"].iloc[:20].isna().all()
    assert result.features["auto_renew_enabled"].iloc[:5].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert result.features["tenure_days"].dtype == float


def test_target_with_text_labels(customers, contract):
    relabelled = customers.assign(churned=np.where(customers["churned"] == 1, "Yes", "No"))
    spec = contract.model_copy(update={"target": contract.target.model_copy(
        update={"positive": "Yes"})})
    result = validate_training_data(relabelled, spec)
    assert result.target.sum() == customers["churned"].sum()


def test_undeclared_columns_are_reported_and_ignored(customers, contract):
    result = validate_training_data(customers.assign(favourite_colour="red"), contract)
    assert result.ignored_columns == ["favourite_colour"]


def test_scoring_splits_rejects_with_reasons(customers, contract):
    bad = customers.copy()
    bad.loc[0, "tenure_days"] = -1
    bad.loc[1, "plan"] = "gold"
    valid, rejects, ids = split_valid_rows(bad, contract)
    assert len(valid) == len(bad) - 2 and len(ids) == len(valid)
    assert rejects["reject_reason"].tolist() == [
        "tenure_days: below min 0", "plan: outside the allowed values"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "target": {"column": "y"}, "id": "i", "features": {}}, "at least one"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"y": {"type": "numeric"}}}, "cannot be features"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"a": {"type": "wrong"}}}, "features.a.type"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"a": {"type": "numeric", "monotone": "increasing"}},
          "derived": {"b": "a * 2"}}, "monotone guarantee"),
    ],
)
def test_inconsistent_contracts_are_refused(raw, message):
    with pytest.raises(ContractError, match=message):
        DataContract.from_dict(raw)


def test_collapsed_labels_are_refused_with_the_rate(contract):
    import numpy as np
    import pandas as pd

    from kernel.contract import ContractViolation, validate_training_data
    from training.generate import GeneratorConfig, generate_customers

    frame = generate_customers(GeneratorConfig(rows=10_000, seed=1))
    positives = np.flatnonzero(frame["churned"].to_numpy() == 1)
    frame.loc[positives[30:], "churned"] = 0  # 30 churners left of 10,000: 0.30%
    with pytest.raises(ContractViolation) as raised:
        validate_training_data(pd.DataFrame(frame), contract)
    assert 'column "churned": 30 rows positive (1), a rate of 0.30%, below ' \
           "min_positive_rate 0.50%" in str(raised.value)
