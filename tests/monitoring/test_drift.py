"""Drift detection: Evidently verdicts and PSI on generated data, too little data, and each
step of ``detect_drift`` on its own (PSI itself: test_psi.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kernel.contract import ContractViolation, coerce_features
from kernel.store import PROBABILITY_COLUMN
from monitoring.config import DriftSettings
from monitoring.drift import (
    ColumnTest,
    columns_to_test,
    detect_drift,
    drift_verdict,
    feature_drift,
    prediction_drift,
    prepare_current,
    undecided_result,
)
from monitoring.drift_statistics import DriftStatistics, psi_from_statistics, reference_edges
from monitoring.psi import psi_band
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


# --- the steps of detect_drift, on small typed frames ----------------------------------------

def _typed(contract, rows: int, seed: int, drifted: bool = False) -> pd.DataFrame:
    frame = coerce_features(generate_customers(GeneratorConfig(rows=rows, seed=seed,
                                                               drifted=drifted)), contract)[0]
    frame[PROBABILITY_COLUMN] = np.random.default_rng(seed).beta(1.5, 4 if drifted else 6,
                                                                 len(frame))
    return frame


@pytest.fixture(scope="module")
def counted(contract):
    """(reference rows, current rows, their counts) of fresh and drifted customers."""
    reference, current = _typed(contract, 600, 1), _typed(contract, 400, 2, drifted=True)
    edges = reference_edges(reference, contract, 10)
    return (reference, current, DriftStatistics.of(reference, contract, edges),
            DriftStatistics.of(current, contract, edges))


def test_undecided_result_is_insufficient_below_min_rows(counted) -> None:
    _, current, _, current_counts = counted
    settings = DriftSettings(min_rows=401)
    few = undecided_result(600, current_counts, None, settings)
    assert few.insufficient_data and few.drift_share is None and few.features == []
    assert (few.reference_rows, few.current_rows, few.min_rows) == (600, 400, 401)
    enough = undecided_result(600, current_counts, 100, DriftSettings(min_rows=400))
    assert not enough.insufficient_data and enough.evidently_rows == 100


def test_columns_to_test_leave_out_a_feature_without_values_on_one_side(contract,
                                                                        counted) -> None:
    reference, current, _, _ = counted
    columns = columns_to_test(reference, current, contract)
    assert columns == [*contract.features, PROBABILITY_COLUMN]
    emptied = current.assign(monthly_charge=np.nan).drop(columns=PROBABILITY_COLUMN)
    assert columns_to_test(reference, emptied, contract) == [
        c for c in contract.features if c != "monthly_charge"]


def test_feature_drift_takes_evidentlys_test_or_else_judges_by_psi(contract, counted) -> None:
    _, _, reference_counts, current_counts = counted
    settings = DriftSettings()
    tested = feature_drift("monthly_charge", contract,
                           ColumnTest("Wasserstein distance (normed)", 0.1, 0.02, False),
                           reference_counts, current_counts, None, settings)
    psi = psi_from_statistics(reference_counts, current_counts, "monthly_charge", 1e-4)
    assert (tested.method, tested.score, tested.detected, tested.psi) == (
        "Wasserstein distance (normed)", 0.02, False, psi)
    assert tested.psi_band == psi_band(psi) == "drift"  # the generator's price rise

    alone = feature_drift("monthly_charge", contract, None, reference_counts, current_counts,
                          None, settings)
    assert alone.method == "PSI only (no values on one side)" and alone.score is None
    assert alone.detected and alone.threshold == settings.psi_drift

    seen = ["north_america", "europe", "latam", "apac"]
    region = feature_drift("region", contract, None, reference_counts, current_counts, seen,
                           settings)
    assert region.kind == "categorical" and region.unseen_values == ["africa"]
    assert region.unseen_share == current_counts.unseen("region", seen)[0] > 0
    assert region.missing_share == current_counts.missing_share("region")


def test_prediction_drift_compares_the_mean_probability(counted) -> None:
    reference, current, reference_counts, current_counts = counted
    prediction = prediction_drift(ColumnTest("Wasserstein distance (normed)", 0.1, 0.3, True),
                                  reference_counts, current_counts,
                                  float(reference[PROBABILITY_COLUMN].mean()), DriftSettings())
    assert prediction.detected and prediction.score == 0.3
    assert prediction.current_mean == pytest.approx(current[PROBABILITY_COLUMN].mean())
    assert prediction.current_mean > prediction.reference_mean
    assert prediction.psi == psi_from_statistics(reference_counts, current_counts,
                                                  PROBABILITY_COLUMN, 1e-4)


def test_drift_verdict_detects_drift_from_the_share_of_drifted_features(contract,
                                                                        counted) -> None:
    _, _, reference_counts, current_counts = counted
    settings = DriftSettings(drift_share=0.5)
    undecided = undecided_result(600, current_counts, None, settings)

    def judged(column: str, detected: bool):
        return feature_drift(column, contract, ColumnTest("test", 0.1, 0.0, detected),
                             reference_counts, current_counts, None, settings)

    half = drift_verdict(undecided, [judged("age", True), judged("plan", False)], None, 0.5)
    assert half.drift_detected and half.drift_share == 0.5 and half.drifted_features == ["age"]
    third = drift_verdict(undecided, [judged("age", True), judged("plan", False),
                                      judged("region", False)], None, 0.5)
    assert not third.drift_detected and third.drift_share == pytest.approx(1 / 3)
    assert third.current_rows == 400 and third.prediction is None
