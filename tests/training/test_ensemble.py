"""The stacked ensemble: kept only when it wins out of fold by more than the noise of the
comparison, monotone when its members are, and served exactly like a single model, through the
compiled fast path too."""

from __future__ import annotations

import logging

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.tree import DecisionTreeClassifier

from kernel.contract import DataContract, FeatureSpec, TargetSpec, validate_training_data
from kernel.model import ChurnModel, LogOddsBlend, PlattCalibration, log_odds
from kernel.store import EntryMetadata, HoldoutMetrics, RiskCutoffs, load_entry, save_entry
from service.scoring import MatrixBuilder, Scorer
from training.config import TrainConfig
from training.evaluate import monotone_violations
from training.generate import GeneratorConfig, generate_customers
from training.train import (
    Candidate,
    _Searcher,
    fit_candidate,
    select_model,
    stacking_weights,
    trial_budget,
)


@pytest.fixture(scope="module")
def small(contract):
    data = validate_training_data(generate_customers(GeneratorConfig(rows=2500, seed=5)),
                                  contract)
    return data.features, data.target.to_numpy()


@pytest.fixture(scope="module")
def selection(contract, small):
    X, y = small
    config = TrainConfig(algorithms=["logistic", "random_forest", "xgboost"], imbalance=["none"],
                         max_trials=0, cv_folds=3)
    return select_model(X, y, contract, config), config


def test_blend_is_a_positive_weighted_sum_of_member_log_odds():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(300, 3))
    y = (matrix[:, 0] + rng.normal(size=300) > 0).astype(int)
    members = [("linear", LogisticRegression().fit(matrix, y)),
               ("tree", DecisionTreeClassifier(max_depth=3, random_state=0).fit(matrix, y))]
    blend = LogOddsBlend(members, [0.7, 0.3])
    expected = 0.7 * log_odds(members[0][1].predict_proba(matrix)[:, 1]) + 0.3 * log_odds(
        members[1][1].predict_proba(matrix)[:, 1])
    np.testing.assert_allclose(log_odds(blend.predict_proba(matrix)[:, 1]), expected,
                               atol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        LogOddsBlend(members, [1.0, 0.0])


def test_stacking_drops_members_that_do_not_earn_a_positive_weight():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=4000)
    y = (truth + rng.normal(size=4000) > 0.8).astype(int)
    good = truth + rng.normal(scale=0.5, size=4000)
    other = truth + rng.normal(scale=0.5, size=4000)  # as good, with different errors
    noise = rng.normal(size=4000)
    inverted = -truth
    keep, weights = stacking_weights(np.column_stack([good, noise, other, inverted]), y)
    assert keep == [0, 2]
    assert (weights > 0.3).all() and weights.sum() == pytest.approx(1.0)


def test_trial_budget_scales_with_the_table():
    config = TrainConfig(trial_rows=200_000, max_trials=40, finalists=2)
    assert trial_budget(config, 8_000) == 25
    assert trial_budget(config, 2_666) == 40  # capped
    assert trial_budget(config, 1_000_000) == 2  # every finalist still gets a trial
    assert trial_budget(config.model_copy(update={"max_trials": 0}), 8_000) == 0


def test_the_choice_follows_the_rule_and_its_evidence_explains_it(selection):
    fitted, config = selection
    board = fitted.leaderboard
    assert [c.cv_score for c in board] == sorted((c.cv_score for c in board), reverse=True)
    singles = [c for c in board if not c.members]
    blends = [c for c in board if c.members]
    assert len(singles) == 3 and len(blends) == 1, [c.name for c in board]
    blend = blends[0]
    assert {m.algorithm for m, _ in blend.members} <= {"logistic", "random_forest", "xgboost"}
    assert sum(w for _, w in blend.members) == pytest.approx(1.0)
    # One evidence row per leaderboard candidate, each with its folds, size and cost.
    rows = {row.candidate: row for row in fitted.selection}
    assert list(rows) == [c.name for c in board]
    assert [row.candidate for row in fitted.selection if row.chosen] == [fitted.candidate.name]
    for candidate in board:
        assert len(candidate.fold_scores) == config.cv_folds and candidate.size > 0
        assert candidate.cost.batch_rows == config.scoring_batch_rows
        assert rows[candidate.name].ms_per_row_batch == candidate.cost.ms_per_row_batch
    assert blend.size == sum(m.size for m, _ in blend.members) + len(blend.members)
    # The chosen one is within its margin of the best; everything simpler is not.
    chosen = rows[fitted.candidate.name]
    assert chosen.gap_to_best <= chosen.margin
    for candidate in board:
        row = rows[candidate.name]
        if (row.members, row.size) < (chosen.members, chosen.size):
            assert row.gap_to_best > row.margin >= config.min_gain, row
    # A forest is the biggest single model, logistic regression the smallest.
    size = {c.algorithm: c.size for c in singles}
    assert size["logistic"] < size["xgboost"] < size["random_forest"]


# --- the rule end to end, on tables built so the answer is known ------------------------------

def _table(logit: np.ndarray, features: dict[str, np.ndarray], rng: np.random.Generator):
    y = (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(int)
    X = pd.DataFrame(features)
    contract = DataContract(name="rule_check", target=TargetSpec(column="churned"),
                            features={c: FeatureSpec(type="numeric") for c in X.columns})
    return X, y, contract


def complementary_signals(rows: int, seed: int):
    """Two signals, each seen by one model family: 40 usage measures with small additive
    effects (a linear model adds them up; trees of depth 3 approximate each with steps) and a
    sharp rule on two others (customers high on both leave; a linear model cannot express it)."""
    rng = np.random.default_rng(seed)
    usage = rng.normal(size=(rows, 40))
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    logit = usage.sum(axis=1) * 0.3 + 3.0 * ((a > 0.5) & (b > 0.5)) - 1.5
    return _table(logit, {**{f"usage_{i}": usage[:, i] for i in range(40)}, "a": a, "b": b},
                  rng)


def shared_signal(rows: int, seed: int):
    """One signal both families see: a saturating effect and three linear ones (noise in
    two more features)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    logit = 1.5 * np.tanh(x[:, 0]) + 0.8 * x[:, 1] - 0.6 * x[:, 2] + 0.3 * x[:, 3] - 1.7
    return _table(logit, {f"f{i}": x[:, i] for i in range(6)}, rng)


RULE_CONFIG = TrainConfig(algorithms=["logistic", "xgboost"], imbalance=["none"], max_trials=0)


def fresh_roc_auc(fitted, candidate, table, make, rows: int = 20_000) -> float:
    """ROC-AUC of ``candidate`` fitted on ``table``'s rows, on fresh rows of its population:
    what its gain is worth beyond the folds."""
    X, y, contract = table
    X_new, y_new, _ = make(rows, seed=999)
    pipeline = fit_candidate(candidate, X, y, contract, fitted.categories, RULE_CONFIG)
    return roc_auc_score(y_new, pipeline.predict_proba(X_new)[:, 1])


@pytest.mark.e2e
def test_an_ensemble_whose_gain_is_within_noise_gives_way_to_the_single_model():
    # Measured on seeds 0-3 at 3,000 rows: the ensemble was within 0.0008 of logistic
    # regression out of fold (ahead on three, margin 0.0020-0.0026) and gained 0.0001-0.0012 on
    # 20,000 fresh rows; logistic regression was chosen each time.
    table = X, y, contract = shared_signal(3000, seed=0)
    fitted = select_model(X, y, contract, RULE_CONFIG)
    rows = {row.candidate: row for row in fitted.selection}
    blend = next(c for c in fitted.leaderboard if c.members)
    assert fitted.leaderboard[0] is blend, "the ensemble scores best out of fold"
    assert fitted.candidate.name == "logistic+none"
    single = rows["logistic+none"]
    assert 0 < single.gap_to_best <= single.margin
    assert rows[blend.name].reason.startswith("best, but its gain over logistic+none")
    # And the gain was not real: on fresh rows the ensemble does no better by a margin.
    gain = fresh_roc_auc(fitted, blend, table, shared_signal) - fresh_roc_auc(
        fitted, fitted.candidate, table, shared_signal)
    assert gain < RULE_CONFIG.min_gain


@pytest.mark.e2e
def test_an_ensemble_that_wins_by_a_real_margin_is_kept():
    # Measured on seeds 0-5 at 4,000 rows: the ensemble leads logistic regression by
    # 0.006-0.011 out of fold (margin 0.002-0.006) and by 0.007-0.011 on 20,000 fresh rows;
    # it was kept each time (at 3,000 rows once in four it was not: its lead was 0.0008).
    table = X, y, contract = complementary_signals(4000, seed=1)
    fitted = select_model(X, y, contract, RULE_CONFIG)
    assert fitted.candidate.members, fitted.selection
    assert {m.algorithm for m, _ in fitted.candidate.members} == {"logistic", "xgboost"}
    rows = {row.candidate: row for row in fitted.selection}
    for name in ("logistic+none", "xgboost+none"):
        assert rows[name].gap_to_best > rows[name].margin, rows[name]
    best_single = next(c for c in fitted.leaderboard if not c.members)
    gain = fresh_roc_auc(fitted, fitted.candidate, table, complementary_signals) - \
        fresh_roc_auc(fitted, best_single, table, complementary_signals)
    assert gain > RULE_CONFIG.min_gain


def test_over_the_scoring_budget_the_cheapest_is_kept_and_the_run_says_so(small, contract,
                                                                            caplog):
    X, y = small
    config = RULE_CONFIG.model_copy(update={"cv_folds": 2, "max_scoring_ms_per_row": 1e-9})
    with caplog.at_level(logging.INFO, logger="churn.train"):
        fitted = select_model(X.head(1000), y[:1000], contract, config)
    cheapest = min(fitted.leaderboard, key=lambda c: c.cost.ms_per_row_batch)
    assert fitted.candidate is cheapest
    assert not any(c.members for c in fitted.leaderboard), "no stack of over-budget members"
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "every candidate is over the scoring budget (1e-09 " \
        "ms/row): the cheapest is kept" in warning[0].getMessage()
    assert "over the scoring budget" in caplog.text


def test_a_linear_model_against_a_declared_monotone_feature_is_not_a_member(contract, small):
    X, y = small
    # Declare the opposite of the truth: more logins *raise* risk. A linear model learns a
    # negative coefficient, so it cannot join a blend that must stay monotone; trees can.
    wrong = contract.model_copy(update={"features": {
        **contract.features,
        "logins_last_30d": FeatureSpec(type="numeric", min=0, monotone="increasing")}})
    config = TrainConfig(cv_folds=2)
    searcher = _Searcher(X, y, wrong, {c: sorted(X[c].dropna().unique()) for c in
                                       wrong.categorical}, config)
    linear = Candidate("logistic", "none", {"C": 0.5}, 0.8)
    assert not searcher.respects_monotone(linear)
    assert searcher.respects_monotone(Candidate("xgboost", "none", {"n_estimators": 20}, 0.8))
    right = _Searcher(X, y, contract, searcher.categories, config)
    assert right.respects_monotone(linear)

    # Nor is it selected alone, though it scores best out of fold (the constrained forest is
    # hurt by the wrong declaration): the gate would reject it.
    fitted = select_model(X, y, wrong, TrainConfig(algorithms=["logistic", "random_forest"],
                                                   imbalance=["none"], max_trials=0,
                                                   cv_folds=2))
    board = {c.name: c.cv_score for c in fitted.leaderboard}
    assert board["logistic+none"] > board["random_forest+none"]
    assert fitted.candidate.name == "random_forest+none"
    assert monotone_violations(fitted.model.predict_proba, X.head(300), wrong) == {}


def test_an_ensemble_is_served_exactly_through_the_fast_path(contract, small, selection,
                                                              churn_home):
    fitted, config = selection
    X, y = small
    blend = next(c for c in fitted.leaderboard if c.members)
    pipeline = fit_candidate(blend, X, y, contract, fitted.categories, config)
    assert isinstance(pipeline.steps[-1][1], LogOddsBlend)
    model = ChurnModel(pipeline, PlattCalibration(1.1, -0.2))
    rows = X.head(400)
    # Monotone in the declared features, like each member.
    assert monotone_violations(model.predict_proba, rows, contract) == {}

    # Through a real store entry and the service's scorer.
    test_contract = contract.model_copy(update={"name": "ensemble_check"})
    metadata = EntryMetadata(
        dataset=test_contract.name, algorithm=blend.algorithm, imbalance=blend.imbalance,
        params=blend.params, selection_metric="roc_auc", cv_score=blend.cv_score,
        metrics=HoldoutMetrics(roc_auc=0.9, pr_auc=0.6, precision=0.5, recall=0.5, f1=0.5,
                               brier=0.1, expected_value=1.0, expected_value_per_customer=0.1,
                               calibration_error=0.01, positive_rate=0.15, flagged_rate=0.2),
        threshold=0.3, risk_cutoffs=RiskCutoffs(medium=0.3, high=0.6),
        features=list(contract.features), categories=fitted.categories,
        trained_at="2026-01-01T00:00:00Z", data_fingerprint="0", train_rows=len(X),
        test_rows=0, split="none", library_versions={}, mlflow_run_id="-",
        mlflow_model_version="-", mlflow_tracking_uri="-", scoring_cost=blend.cost)
    reference = rows.reset_index(drop=True)
    reference["churn_probability"] = model.predict_proba(rows)
    reference[contract.target.column] = y[:400]
    entry = load_entry(save_entry(model, test_contract, metadata, reference,
                                  stage="challenger").tag)
    scorer = Scorer(entry)
    assert scorer.builder is not None, "an ensemble must keep the compiled fast path"
    assert scorer.verify(rows) <= 1e-12 and scorer.builder is not None
    np.testing.assert_allclose(scorer.probabilities(rows), model.predict_proba(rows),
                               rtol=0, atol=1e-12)
    # Serving runs every member on one thread (it does not change a prediction).
    assert all(m.get_params()["n_jobs"] == 1 for m in entry.model.classifier.estimators
               if "n_jobs" in m.get_params())
    assert MatrixBuilder.compile(entry.model.preprocessor, contract) is not None
    reloaded = joblib.load(entry.path / "model.joblib")
    np.testing.assert_allclose(reloaded.predict_proba(rows), model.predict_proba(rows),
                               rtol=0, atol=1e-12)
