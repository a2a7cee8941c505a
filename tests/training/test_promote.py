"""Champion/challenger gate and promotion against a real BentoML store and a real MLflow
(SQLite) registry."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kernel import store
from kernel.contract import ContractViolation, QualityFloor
from kernel.store import HoldoutMetrics, champion, delete_entry, list_entries
from training.promote import decide, promote_champion
from training.run import train_and_register


def metrics(roc_auc: float) -> HoldoutMetrics:
    return HoldoutMetrics(roc_auc=roc_auc, pr_auc=0.5, precision=0.5, recall=0.5, f1=0.5,
                          brier=0.1, expected_value=1.0, expected_value_per_customer=0.1,
                          calibration_error=0.01, positive_rate=0.15, flagged_rate=0.2)


@pytest.mark.parametrize(
    ("score", "champion_score", "promote", "why"),
    [
        (0.88, None, True, "first model"),
        (0.79, None, False, "below the quality floor"),
        (0.88, 0.87, True, "beats champion"),
        (0.872, 0.871, False, "does not beat champion"),
        (0.86, 0.87, False, "does not beat champion"),
    ],
)
def test_gate_rules(score, champion_score, promote, why):
    decision = decide(metrics(score), champion_score, "roc_auc", 0.005, QualityFloor(roc_auc=0.8))
    assert decision.promote is promote
    assert why in decision.reason


def test_gate_refuses_a_model_that_breaks_declared_monotonicity():
    decision = decide(metrics(0.95), 0.80, "roc_auc", 0.005, QualityFloor(roc_auc=0.8),
                      monotone_violations={"payment_failures_6m": 0.12})
    assert not decision.promote
    assert "payment_failures_6m (12.0% of rows)" in decision.reason


@pytest.fixture(scope="module")
def gate_contract(contract):
    # Its own dataset name: these promotions must not touch the session's shared champion.
    return contract.model_copy(update={"name": "gate_test"})


def registry_state(name: str, home):
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
    try:
        alias = str(client.get_model_version_by_alias(name, "champion").version)
    except Exception:  # no alias yet
        alias = None
    return versions, alias


@pytest.mark.e2e
def test_worse_challenger_is_kept_but_never_replaces_the_champion(
    gate_contract, fast_config, training_csv, churn_home
):
    first = train_and_register(str(training_csv), gate_contract, fast_config, churn_home)
    assert first.promoted and champion("gate_test").tag == first.model_tag
    versions, alias = registry_state("gate_test", churn_home)
    assert alias == first.mlflow_model_version

    # Same rows, a contract that hides the informative features: clearly worse.
    weak = gate_contract.model_copy(update={
        "features": {k: v for k, v in gate_contract.features.items()
                     if k in {"region", "primary_device", "age"}},
        "derived": {}, "quality_floor": QualityFloor(roc_auc=0.5)})
    second = train_and_register(str(training_csv), weak, fast_config, churn_home)
    assert not second.promoted
    assert second.roc_auc < first.roc_auc
    assert "does not beat champion" in second.decision
    assert champion("gate_test").tag == first.model_tag
    stages = {e.tag: e.stage for e in list_entries("gate_test")}
    assert stages == {first.model_tag: "champion", second.model_tag: "rejected"}
    assert registry_state("gate_test", churn_home)[1] == first.mlflow_model_version


@pytest.mark.e2e
def test_failed_runs_register_nothing(gate_contract, fast_config, training_csv, churn_home,
                                      tmp_path):
    import pandas as pd

    before_store = sorted(e.tag for e in list_entries("gate_test"))
    before_registry = registry_state("gate_test", churn_home)

    broken = tmp_path / "broken.csv"
    frame = pd.read_csv(training_csv)
    frame.loc[:9, "tenure_days"] = -3
    frame.to_csv(broken, index=False)
    with pytest.raises(ContractViolation, match='"tenure_days": 10 rows below min 0'):
        train_and_register(str(broken), gate_contract, fast_config, churn_home)

    # A failure late in the run, after training (the tracking database cannot be created
    # because its folder is a file), also leaves no trace.
    (tmp_path / "not-a-folder").write_text("")
    unusable = fast_config.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path}/not-a-folder/mlflow.db"})
    with pytest.raises(Exception):  # noqa: B017 - whatever MLflow raises, nothing may be saved
        train_and_register(str(training_csv), gate_contract, unusable, churn_home)

    assert sorted(e.tag for e in list_entries("gate_test")) == before_store
    assert registry_state("gate_test", churn_home) == before_registry


# --- one identity: the store label is the truth, the MLflow alias its mirror -----------------

@pytest.fixture(scope="module")
def two_models(contract, fast_config, training_csv, churn_home):
    """A champion and a rejected challenger of their own dataset, registered in MLflow."""
    own = contract.model_copy(update={"name": "identity_test"})
    first = train_and_register(str(training_csv), own, fast_config, churn_home)
    second = train_and_register(str(training_csv), own, fast_config, churn_home)
    assert first.promoted and not second.promoted  # same data: it cannot beat the champion
    yield first, second
    for entry in list_entries("identity_test"):
        delete_entry(entry.tag)


def identity(home) -> tuple[dict[str, str], str | None]:
    return {e.tag: e.stage for e in list_entries("identity_test")}, \
        registry_state("identity_test", home)[1]


@pytest.mark.e2e
def test_a_store_failure_after_the_mirror_moved_rolls_both_back(two_models, churn_home,
                                                                monkeypatch):
    first, second = two_models
    before = identity(churn_home)
    assert before == ({first.model_tag: "champion", second.model_tag: "rejected"},
                      first.mlflow_model_version)

    # Fault injection: a disk failure at exactly this step (retiring the old champion, after
    # the new one was labelled and the alias moved) cannot be produced on demand here.
    real_set_stage = store.set_stage

    def failing(tag, stage, decision=None):
        if stage == "retired":
            raise OSError("disk full")
        real_set_stage(tag, stage, decision)

    monkeypatch.setattr(store, "set_stage", failing)
    with pytest.raises(OSError, match="disk full"):
        promote_champion(second.model_tag, "by hand")
    monkeypatch.undo()
    assert identity(churn_home) == before

    promote_champion(second.model_tag, "by hand")  # and without the fault, both move
    assert identity(churn_home) == ({first.model_tag: "retired", second.model_tag: "champion"},
                                    second.mlflow_model_version)


@pytest.mark.e2e
def test_a_mirror_failure_changes_nothing_in_the_store(two_models, churn_home):
    first, second = two_models
    if identity(churn_home)[0][second.model_tag] != "champion":
        promote_champion(second.model_tag, "by hand")
    before = identity(churn_home)
    # A real registry failure: the retired model's MLflow version is gone.
    MlflowClient(tracking_uri=f"sqlite:///{churn_home / 'mlflow.db'}").delete_model_version(
        "identity_test", first.mlflow_model_version)
    with pytest.raises(MlflowException):
        promote_champion(first.model_tag, "by hand")
    assert identity(churn_home) == before


@pytest.mark.e2e
def test_a_failed_store_write_after_registration_unregisters(contract, fast_config,
                                                             training_csv, churn_home):
    """A real failure after the MLflow registration: the store cannot create the entry because
    the dataset's folder in the store is a file. The registered version is deleted again."""
    from kernel.paths import model_store_dir

    own = contract.model_copy(update={"name": "blocked_store"})
    blocker = model_store_dir() / "models" / "blocked_store"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    try:
        with pytest.raises(NotADirectoryError):
            train_and_register(str(training_csv), own, fast_config, churn_home)
    finally:
        blocker.unlink()
    assert registry_state("blocked_store", churn_home) == ([], None)
    assert list_entries("blocked_store") == []


def test_a_leaking_feature_stops_training_before_anything_is_registered(
    contract, fast_config, training_csv, churn_home, tmp_path
):
    import pandas as pd

    from kernel.contract import FeatureSpec
    from training.run import LeakageSuspected

    # An upstream change adds a field derived from the outcome, and the contract takes it in.
    frame = pd.read_csv(training_csv)
    frame["account_closed_flag"] = frame["churned"]
    leaky = tmp_path / "leaky.csv"
    frame.to_csv(leaky, index=False)
    own = contract.model_copy(update={"name": "leak_test", "features": {
        **contract.features, "account_closed_flag": FeatureSpec(type="boolean")}})
    with pytest.raises(LeakageSuspected, match='"account_closed_flag" \\(ROC-AUC 1.000\\)'):
        train_and_register(str(leaky), own, fast_config, churn_home)
    assert list_entries("leak_test") == []
    assert registry_state("leak_test", churn_home) == ([], None)
