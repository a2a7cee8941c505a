"""Drift detection: Evidently verdicts and PSI on generated data, too little data (PSI itself:
test_psi.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from kernel.contract import ContractViolation
from kernel.store import PROBABILITY_COLUMN
from monitoring.config import DriftSettings
from monitoring.drift import detect_drift, prepare_current
from training.generate import GeneratorConfig, generate_customers


def _current(entry, drifted: bool, rows: int, seed: int) -> pd.DataFrame:
    customers = generate_customers(GeneratorConfig(rows=rows, seed=seed, drifted=drifted))
    return prepare_current(customers, entry.contract, entry.model, entry.version).frame


def _reference(entry) -> pd.DataFrame:
    return entry.reference[[*entry.contract.features, PROBABILITY_COLUMN]]


def test_drifted_generated_data_is_detected_and_fresh_data_is_not(trained_entry) -> None:
    settings = DriftSettings()
    fresh = detect_drift(_reference(trained_entry), _current(trained_entry, False, 800, 101),
                         trained_entry.contract, trained_entry.metadata.categories, settings)
    drifted = detect_drift(_reference(trained_entry), _current(trained_entry, True, 800, 102),
                           trained_entry.contract, trained_entry.metadata.categories, settings)

    assert not fresh.result.drift_detected, fresh.result.drifted_features
    assert fresh.result.drift_share < settings.drift_share
    assert not fresh.result.prediction.detected
    assert all(f.unseen_share == 0 for f in fresh.result.features)

    result = drifted.result
    assert result.drift_detected and result.drift_share >= settings.drift_share
    by_name = {f.feature: f for f in result.features}
    # The generator's drift: price rise, a new region, lower engagement, missing surveys.
    assert {"monthly_charge", "region", "logins_last_30d"} <= set(result.drifted_features)
    assert by_name["monthly_charge"].psi_band == "drift"
    assert by_name["region"].unseen_values == ["africa"] and by_name["region"].unseen_share > 0.05
    assert by_name["satisfaction_score"].missing_share > 2 * by_name[
        "satisfaction_score"].reference_missing_share
    assert by_name["plan"].detected is False  # untouched by the generator's drift
    assert result.prediction.detected
    assert result.prediction.current_mean > result.prediction.reference_mean
    # The method is fitted to size and type: >1000 reference rows -> distances, not p-values.
    assert by_name["monthly_charge"].method.startswith("Wasserstein")
    assert by_name["region"].method.startswith("Jensen-Shannon")
    assert drifted.snapshot is not None


def test_too_few_rows_give_insufficient_data_not_a_verdict(trained_entry) -> None:
    current = _current(trained_entry, True, 50, 103)  # drifted, but far too little of it
    run = detect_drift(_reference(trained_entry), current, trained_entry.contract,
                       trained_entry.metadata.categories, DriftSettings(min_rows=200))
    assert run.result.insufficient_data
    assert run.result.drift_detected is False and run.result.drift_share is None
    assert run.result.features == [] and run.snapshot is None
    assert run.result.current_rows == 50


def test_prepare_current_rescores_rows_of_other_model_versions(trained_entry) -> None:
    customers = generate_customers(GeneratorConfig(rows=30, seed=104))
    customers["model_version"] = ["canary"] * 10 + [trained_entry.version] * 20
    customers[PROBABILITY_COLUMN] = 0.5
    customers.loc[0, "plan"] = "platinum"  # breaks the closed set: dropped
    prepared = prepare_current(customers, trained_entry.contract, trained_entry.model,
                               trained_entry.version)
    assert prepared.rejected_rows == 1 and len(prepared.frame) == 29
    assert prepared.rescored_rows == 9
    assert (prepared.frame[PROBABILITY_COLUMN].iloc[:9] != 0.5).all()
    assert (prepared.frame[PROBABILITY_COLUMN].iloc[9:] == 0.5).all()


def test_current_data_without_a_contract_column_is_an_error_not_insufficient_data(
    trained_entry,
) -> None:
    customers = generate_customers(GeneratorConfig(rows=20, seed=105)).drop(columns="region")
    with pytest.raises(ContractViolation, match='"region"'):
        prepare_current(customers, trained_entry.contract, trained_entry.model, None)
    empty = prepare_current(pd.DataFrame(), trained_entry.contract, trained_entry.model, None)
    assert len(empty.frame) == 0  # an empty inference log is just no data
