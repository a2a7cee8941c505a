"""Label-free performance estimation (CBPE idea): exact on calibrated scores, close to the
realised ROC-AUC on drifted generated data scored by a real trained model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kernel.contract import coerce_features
from kernel.store import PROBABILITY_COLUMN
from monitoring.estimate import check_calibration, estimate_performance, expected_roc_auc
from training.generate import GeneratorConfig, generate_customers


def test_expected_auc_matches_realised_auc_when_scores_are_calibrated() -> None:
    rng = np.random.default_rng(0)
    probability = rng.beta(1.2, 5.0, 40_000)
    target = (rng.random(len(probability)) < probability).astype(int)
    assert expected_roc_auc(probability) == pytest.approx(roc_auc_score(target, probability),
                                                          abs=0.01)


def test_expected_auc_of_identical_scores_is_a_coin_flip() -> None:
    assert expected_roc_auc(np.full(100, 0.3)) == pytest.approx(0.5)
    assert expected_roc_auc(np.zeros(10)) is None  # no expected positives: undefined


def test_expected_confusion_counts_at_the_threshold() -> None:
    estimate = estimate_performance(np.array([0.9, 0.6, 0.2, 0.1]), threshold=0.5)
    assert estimate.precision == pytest.approx((0.9 + 0.6) / 2)
    assert estimate.recall == pytest.approx((0.9 + 0.6) / 1.8)
    assert estimate.flagged_rate == 0.5 and estimate.expected_positive_rate == pytest.approx(0.45)
    nobody = estimate_performance(np.array([0.1, 0.2]), threshold=0.5)
    assert nobody.precision is None and nobody.recall == 0.0


def test_calibration_check_accepts_calibrated_and_rejects_distorted_scores() -> None:
    rng = np.random.default_rng(1)
    probability = rng.beta(1.2, 5.0, 20_000)
    target = (rng.random(len(probability)) < probability).astype(int)
    assert check_calibration(target, probability, max_error=0.05).calibrated
    assert not check_calibration(target, np.sqrt(probability), max_error=0.05).calibrated


def test_stored_reference_probabilities_are_calibrated(trained_entry) -> None:
    reference = trained_entry.reference
    check = check_calibration(reference[trained_entry.contract.target.column].to_numpy(),
                              reference[PROBABILITY_COLUMN].to_numpy(), max_error=0.05)
    assert check.calibrated, check


def test_estimate_lands_within_0_03_roc_auc_of_realised_on_drifted_data(
    trained_entry,
) -> None:
    # CBPE assumes covariate shift: P(churn | features) unchanged. keep_churn_rate=False keeps
    # the undrifted intercept, so the drift is a pure covariate shift (lower engagement, price
    # rise, new region, more gift cards, missing surveys).
    drifted = generate_customers(
        GeneratorConfig(rows=6000, seed=202, drifted=True, keep_churn_rate=False))

    features, _, bad = coerce_features(drifted, trained_entry.contract)
    assert not bad.any()
    probability = trained_entry.model.predict_proba(features)
    target = drifted[trained_entry.contract.target.column].to_numpy()
    realised = roc_auc_score(target, probability)
    estimate = estimate_performance(probability, trained_entry.metadata.threshold)
    assert abs(estimate.roc_auc - realised) < 0.03, (estimate.roc_auc, realised)
    # It is an estimate on shifted data, not the reference figure repeated.
    assert probability.mean() > trained_entry.reference[PROBABILITY_COLUMN].mean() + 0.03
