"""The training job's steps one by one, on small tables; and its parts (evaluate, register as
challenger, apply the gate) called apart. tests/training/test_promote.py runs the whole job."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from kernel.contract import ContractViolation
from kernel.store import PROBABILITY_COLUMN, HoldoutMetrics
from training.config import TrainConfig
from training.evaluate import holdout_metrics
from training.generate import GeneratorConfig, generate_customers
from training.promote import GateDecision
from training.run import evaluate_challenger
from training.steps import (
    ChampionScore,
    LeakageSuspected,
    Registration,
    TrainTestRows,
    check_leakage,
    entry_metadata,
    evaluate_on_test,
    fingerprint,
    gate_challenger,
    read_training_rows,
    reference_sample,
    run_record,
    score_champion,
    split_train_test,
    training_summary,
    validate_rows,
)

DATASET = "steps_test"  # its own dataset: the session's champion is not touched


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("steps") / "customers.csv"
    generate_customers(GeneratorConfig(rows=800, seed=5)).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def own_contract(contract):
    return contract.model_copy(update={"name": DATASET})


@pytest.fixture(scope="module")
def quick_config() -> TrainConfig:
    """One candidate, no tuning, no ensemble: a model in about a second."""
    return TrainConfig(algorithms=["logistic"], imbalance=["class_weight"],
                       search_budget_seconds=0, max_trials=0, cv_folds=2, ensemble=False,
                       reference_rows=100)


@pytest.fixture(scope="module")
def challenger(table, own_contract, quick_config):
    return evaluate_challenger(table, own_contract, quick_config)


def toy_rows(rows: int = 400, seed: int = 0) -> TrainTestRows:
    """Training rows of two numeric features, one a copy of the target."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    X = pd.DataFrame({"outcome_copy": y.astype(float), "noise": rng.normal(size=rows)},
                     index=np.arange(rows) * 10)
    return TrainTestRows(X_train=X, y_train=y, X_test=X.iloc[:0], y_test=y[:0],
                         test_positions=np.array([], dtype=int), kind="toy")


# --- read, validate, split, leakage ----------------------------------------------------------

def test_read_training_rows_reads_every_row_or_a_stratified_sample(table, caplog):
    with caplog.at_level(logging.INFO, logger="churn.train"):
        every = read_training_rows(table, "churned", None, seed=1)
    assert len(every.frame) == every.source_rows == 800 and every.sample is None
    assert f"read 800 rows x {every.frame.shape[1]} columns from {table}" in caplog.text

    sampled = read_training_rows(table, "churned", 300, seed=1)
    assert len(sampled.frame) == sampled.sample.rows == 300
    assert sampled.source_rows == 800


def test_validate_rows_ignores_unknown_columns_with_a_warning_and_refuses_broken_rows(
    own_contract, caplog
):
    frame = generate_customers(GeneratorConfig(rows=200, seed=6)).assign(note="x")
    with caplog.at_level(logging.WARNING, logger="churn.train"):
        data = validate_rows(frame, own_contract)
    assert "note" in data.ignored_columns and "columns not in the contract, ignored" in caplog.text
    assert list(data.features.columns) == list(own_contract.features)

    frame.loc[:2, "tenure_days"] = -1
    with pytest.raises(ContractViolation, match='"tenure_days": 3 rows below min 0'):
        validate_rows(frame, own_contract)


def test_split_train_test_keeps_features_target_and_positions_aligned(own_contract):
    frame = generate_customers(GeneratorConfig(rows=500, seed=7))
    data = validate_rows(frame, own_contract)
    rows = split_train_test(data, test_size=0.2, seed=3)
    # The contract has an event time: the newest rows are the test rows.
    assert rows.kind.startswith("time: test = event time >= ")
    times = data.event_time.to_numpy()
    assert times[rows.test_positions].min() > np.delete(times, rows.test_positions).max()
    assert len(rows.X_train) + len(rows.X_test) == 500 and len(rows.y_train) == len(rows.X_train)
    pd.testing.assert_frame_equal(rows.X_test, data.features.iloc[rows.test_positions])
    assert (rows.y_test == data.target.to_numpy()[rows.test_positions]).all()
    assert not set(rows.X_train.index) & set(rows.X_test.index)

    untimed = validate_rows(frame, own_contract.model_copy(update={"event_time": None}))
    stratified = split_train_test(untimed, test_size=0.2, seed=3)
    assert stratified.kind == "stratified random, seed 3" and len(stratified.X_test) == 100


def test_check_leakage_refuses_a_feature_that_copies_the_outcome_or_only_warns(caplog):
    rows = toy_rows()
    with pytest.raises(LeakageSuspected, match='"outcome_copy" \\(ROC-AUC 1.000\\)'):
        check_leakage(rows, "churned", TrainConfig())
    with caplog.at_level(logging.WARNING, logger="churn.train"):
        suspects = check_leakage(rows, "churned", TrainConfig(leakage_action="warn"))
    assert suspects == {"outcome_copy": 1.0}
    assert 'feature "outcome_copy" alone has ROC-AUC 1.000' in caplog.text
    clean = TrainTestRows(rows.X_train[["noise"]], rows.y_train, rows.X_test, rows.y_test,
                          rows.test_positions, rows.kind)
    assert check_leakage(clean, "churned", TrainConfig()) == {}


# --- evaluate, champion, gate, reference -----------------------------------------------------

def test_evaluate_on_test_scores_the_held_out_rows_at_the_threshold(challenger, own_contract):
    fitted, split = challenger.fitted, challenger.split
    metrics = evaluate_on_test(fitted, split, own_contract.costs)
    expected = holdout_metrics(split.y_test, fitted.model.predict_proba(split.X_test),
                               fitted.threshold, own_contract.costs)
    assert metrics == expected == challenger.metrics
    assert metrics.positive_rate == pytest.approx(split.y_test.mean())


def test_score_champion_of_a_dataset_without_one_is_empty():
    frame = generate_customers(GeneratorConfig(rows=20, seed=8))
    assert score_champion("no_champion_here", frame, frame["churned"].to_numpy(),
                          "roc_auc") == ChampionScore()


def test_gate_challenger_reads_the_champion_score(challenger, own_contract, quick_config):
    fitted, metrics, X_test = challenger.fitted, challenger.metrics, challenger.split.X_test

    def gate(current: ChampionScore) -> GateDecision:
        return gate_challenger(fitted, metrics, X_test, current, own_contract, quick_config)

    first = gate(ChampionScore())
    assert first.promote and "first model" in first.reason
    better = gate(ChampionScore(tag="x:1", score=0.99))
    assert not better.promote and "does not beat champion 0.9900" in better.reason
    broken = gate(ChampionScore(tag="x:1", error="x:1 cannot score this data: 'plan'"))
    assert not broken.promote and "could not be compared" in broken.reason
    floor = own_contract.model_copy(update={"quality_floor": own_contract.quality_floor.model_copy(
        update={"roc_auc": 0.999})})
    assert "below the quality floor" in gate_challenger(fitted, metrics, X_test,
                                                        ChampionScore(), floor,
                                                        quick_config).reason


def test_reference_sample_is_a_seeded_subset_of_training_rows_in_order():
    rows = toy_rows(rows=50)
    oof = np.linspace(0, 1, 50)
    reference = reference_sample(rows, oof, "churned", size=20, seed=4)
    assert len(reference) == 20 and list(reference.index) == list(range(20))
    assert list(reference.columns) == ["outcome_copy", "noise", PROBABILITY_COLUMN, "churned"]
    # Rows keep their order and their own probability and target.
    positions = np.searchsorted(oof, reference[PROBABILITY_COLUMN])
    assert (np.diff(positions) > 0).all()
    assert (reference["churned"].to_numpy() == rows.y_train[positions]).all()
    assert (reference["noise"].to_numpy() == rows.X_train["noise"].to_numpy()[positions]).all()
    pd.testing.assert_frame_equal(reference, reference_sample(rows, oof, "churned", 20, 4))
    assert len(reference_sample(rows, oof, "churned", size=500, seed=4)) == 50


# --- what MLflow and the store record, and the summary ---------------------------------------

def test_fingerprint_follows_content_and_column_names_not_the_index():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert fingerprint(frame) == fingerprint(frame.set_axis([7, 9]))
    assert fingerprint(frame) != fingerprint(frame.assign(a=[1, 3]))
    assert fingerprint(frame) != fingerprint(frame.rename(columns={"b": "c"}))


def test_run_record_holds_the_params_metrics_artifacts_and_tags_mlflow_shows(
    challenger, own_contract, quick_config
):
    record = run_record(challenger, own_contract, quick_config)
    candidate = challenger.fitted.candidate
    cost = candidate.cost
    assert record.run_name == f"{DATASET}-logistic+class_weight"
    assert record.params == {
        "algorithm": "logistic", "imbalance": "class_weight", "selection_metric": "roc_auc",
        "gain_standard_errors": 1.0, "min_gain": 0.002, "max_scoring_ms_per_row": None,
        "train_rows": len(challenger.split.X_train), "test_rows": len(challenger.split.X_test),
        "split": challenger.split.kind, "sampled_from_rows": 800,
        "param_C": candidate.params["C"]}
    assert record.metrics == {**challenger.metrics.model_dump(),
                              "threshold": challenger.fitted.threshold,
                              "cv_roc_auc": candidate.cv_score, "model_size": candidate.size,
                              "scoring_ms_per_row_batch_1": cost.ms_per_row_batch_1,
                              "scoring_ms_per_row_batch_64": cost.ms_per_row_batch}
    assert 0 < cost.ms_per_row_batch < cost.ms_per_row_batch_1 and cost.batch_rows == 64
    assert record.texts == {"contract.yaml": own_contract.to_yaml()}
    assert record.dicts["leaderboard.json"] == {"leaderboard": [
        {"candidate": "logistic+class_weight", "cv_score": candidate.cv_score,
         "fold_scores": list(candidate.fold_scores), "size": candidate.size,
         "scoring_cost": cost.model_dump(), "params": candidate.params}]}
    selection = record.dicts["selection.json"]
    assert selection["rule"] == {"gain_standard_errors": 1.0, "min_gain": 0.002,
                                 "max_scoring_ms_per_row": None, "scoring_batch_rows": 64}
    assert selection["chosen"] == "logistic+class_weight"
    assert [row["reason"] for row in selection["candidates"]] == [
        "chosen: the best, and nothing simpler is within noise of it"]
    assert record.tags == {"gate": challenger.gate.reason, "dataset": DATASET}


def test_entry_metadata_and_summary_describe_the_challenger(challenger, own_contract,
                                                           quick_config):
    metadata = entry_metadata(challenger, own_contract, quick_config, mlflow_run_id="run-1",
                              mlflow_model_version="3", mlflow_tracking_uri="sqlite:///x.db",
                              trained_at="2026-01-01T00:00:00Z",
                              library_versions={"python": "3.11"})
    assert metadata.dataset == DATASET and metadata.decision == challenger.gate.reason
    assert metadata.data_fingerprint == fingerprint(challenger.rows.frame)
    split = challenger.split
    assert (metadata.train_rows, metadata.test_rows, metadata.split) == (
        len(split.X_train), len(split.X_test), split.kind)
    assert metadata.features == list(own_contract.features)
    assert metadata.metrics == challenger.metrics
    assert (metadata.mlflow_run_id, metadata.mlflow_model_version,
            metadata.mlflow_tracking_uri) == ("run-1", "3", "sqlite:///x.db")
    assert metadata.scoring_cost == challenger.fitted.candidate.cost is not None

    registration = Registration("steps_test:abc", "run-1", "3", "sqlite:///x.db")
    summary = training_summary(challenger, registration, "challenger")
    assert summary.model_tag == "steps_test:abc" and summary.stage == "challenger"
    assert not summary.promoted  # registered, not promoted, whatever the gate said
    assert training_summary(challenger, registration, "champion").promoted
    assert HoldoutMetrics.model_validate(summary.model_dump(include=set(
        HoldoutMetrics.model_fields))) == challenger.metrics
    assert (summary.train_rows, summary.test_rows, summary.sample) == (
        len(split.X_train), len(split.X_test), None)
    assert summary.scoring_cost == metadata.scoring_cost
    assert summary.selection == challenger.fitted.selection and summary.selection[0].chosen


# --- the parts called apart, against the session's real store and MLflow registry ------------

def _registry(home):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


@pytest.mark.integration
def test_a_challenger_is_registered_without_promotion_and_promoted_apart(
    challenger, own_contract, quick_config, churn_home
):
    from kernel.store import delete_entry, list_entries, load_entry
    from training.run import apply_gate, register_challenger

    assert challenger.gate.promote  # the gate would promote it: registering must not
    try:
        registration = register_challenger(challenger, own_contract, quick_config, churn_home)
        assert {e.tag: e.stage for e in list_entries(DATASET)} == {
            registration.model_tag: "challenger"}
        registry = _registry(churn_home)
        assert registry.get_registered_model(DATASET).aliases == {}
        run = registry.get_run(registration.mlflow_run_id)
        assert run.data.tags["bentoml_tag"] == registration.model_tag
        assert run.data.tags["gate"] == challenger.gate.reason
        stored = load_entry(registration.model_tag).metadata
        assert stored.mlflow_model_version == registration.mlflow_model_version
        # The scoring cost is recorded with the model, in the store and in MLflow, and the
        # selection evidence beside the leaderboard.
        cost = challenger.fitted.candidate.cost
        assert stored.scoring_cost == cost
        assert run.data.metrics["scoring_ms_per_row_batch_64"] == cost.ms_per_row_batch
        assert run.data.params["min_gain"] == "0.002"
        artifacts = {a.path for a in registry.list_artifacts(registration.mlflow_run_id)}
        assert {"selection.json", "leaderboard.json", "contract.yaml"} <= artifacts

        assert apply_gate(registration.model_tag, challenger.gate,
                          registration.tracking_uri) == "champion"
        assert load_entry(registration.model_tag).stage == "champion"
        assert {alias: str(version) for alias, version in
                registry.get_registered_model(DATASET).aliases.items()} == {
            "champion": registration.mlflow_model_version}

        # The champion now scores a challenger's test rows, unless they lack its columns.
        test_rows = challenger.rows.frame.iloc[challenger.split.test_positions]
        scored = score_champion(DATASET, test_rows, challenger.split.y_test, "roc_auc")
        assert scored.tag == registration.model_tag and scored.error is None
        assert scored.score == pytest.approx(challenger.metrics.roc_auc)
        unusable = score_champion(DATASET, test_rows.drop(columns="plan"),
                                  challenger.split.y_test, "roc_auc")
        assert unusable.score is None and "cannot score this data" in unusable.error
    finally:
        for entry in list_entries(DATASET):
            delete_entry(entry.tag)


@pytest.mark.integration
def test_a_failure_inside_the_registration_block_leaves_nothing_registered(
    challenger, own_contract, quick_config, churn_home
):
    from kernel.store import list_entries
    from training.run import registered_challenger

    before = sorted(e.tag for e in list_entries(DATASET))
    with pytest.raises(RuntimeError, match="promotion failed"), \
            registered_challenger(challenger, own_contract, quick_config,
                                  churn_home) as registration:
        assert [e.stage for e in list_entries(DATASET)
                if e.tag == registration.model_tag] == ["challenger"]
        raise RuntimeError("promotion failed")
    assert sorted(e.tag for e in list_entries(DATASET)) == before
    versions = _registry(churn_home).search_model_versions(f"name='{DATASET}'")
    assert registration.mlflow_model_version not in {str(v.version) for v in versions}
    assert _registry(churn_home).get_run(registration.mlflow_run_id).info.status == "FAILED"
