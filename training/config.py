"""Training configuration: one YAML file (``configs/train.yaml``) parsed into pydantic."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from kernel.yaml_model import JobConfig

Algorithm = Literal["logistic", "random_forest", "xgboost"]
Imbalance = Literal["none", "class_weight", "smote"]


class TrainConfig(JobConfig):
    CONFIG_NAME: ClassVar[str] = "train.yaml"
    CONFIG_KIND: ClassVar[str] = "training config"
    model_config = ConfigDict(extra="forbid")

    test_size: float = Field(0.2, gt=0.05, lt=0.5, description="share of rows held out for test")
    cv_folds: int = Field(4, ge=2, le=10, description="folds for search and out-of-fold scores")
    seed: int = 42
    selection_metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    algorithms: list[Algorithm] = ["logistic", "random_forest", "xgboost"]
    # SMOTE stays available but is not a default: it never gave the best candidate out of fold
    # on the look-alike tables and costs up to 3.5x a plain fit (docs/training.md).
    imbalance: list[Imbalance] = ["none", "class_weight"]
    search_budget_seconds: float = Field(
        60.0, ge=0, description="wall-clock cap on the search; round 1 always completes"
    )
    trial_rows: int = Field(
        200_000, ge=0, description="tuning budget as trials x training rows (scales with "
        "the table: 8,000 rows get 25 trials, 2,500 rows get max_trials)"
    )
    max_trials: int = Field(40, ge=0, description="cap on tuning trials after the first round")
    finalists: int = Field(2, ge=1, description="best algorithms of the first round to tune")
    ensemble: bool = Field(
        True, description="stack the best model of each algorithm when that wins out of fold"
    )
    # Keep only real gains (docs/training.md, "Choosing among candidates"): the simplest
    # candidate whose cross-validated score is within max(gain_standard_errors x the standard
    # error of the paired per-fold differences, min_gain) of the best is chosen.
    gain_standard_errors: float = Field(
        1.0, ge=0, description="a more complex candidate must beat a simpler one by this many "
        "standard errors of their paired per-fold differences")
    min_gain: float = Field(
        0.002, ge=0, description="... and by at least this much of selection_metric")
    max_scoring_ms_per_row: float | None = Field(
        None, gt=0, description="candidates whose measured scoring cost per row at "
        "scoring_batch_rows is above this are not chosen; None = no budget")
    scoring_batch_rows: int = Field(
        64, ge=1, description="the service's typical batch (configs/service.yaml "
        "batching.max_batch_size) at which scoring cost is measured beside batch 1")
    promotion_margin: float = Field(
        0.002, ge=0, description="a challenger must beat the champion by this much"
    )
    reference_rows: int = Field(5000, ge=100, description="training rows kept for drift checks")
    sample_rows: int | None = Field(
        None, ge=100, description="train on a stratified sample of this many rows, read in "
        "chunks (tables larger than memory); None = every row (docs/scale.md)")
    high_risk_share: float = Field(0.10, gt=0, lt=1, description="share of customers rated HIGH")
    leakage_auc: float = Field(
        0.97, gt=0.5, le=1, description="a single feature this predictive is reported as leakage"
    )
    leakage_action: Literal["refuse", "warn"] = Field(
        "refuse", description="refuse: such a feature stops training before anything is "
        "registered; warn: log it and go on")
    mlflow_tracking_uri: str | None = Field(
        None, description="default: sqlite:///$CHURN_HOME/mlflow.db"
    )
    mlflow_experiment: str = "churn-serve"

