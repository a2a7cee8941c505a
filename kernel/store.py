"""The BentoML model store entry: the only contract between training, serving and monitoring.

An entry is a BentoML model named after the data contract (``streaming_churn:<version>``) with
labels ``dataset``, ``stage`` (challenger, champion, rejected, retired) and ``algorithm``, and
metadata holding everything a consumer needs (``EntryMetadata``). Its folder holds:

- ``model.joblib``: the ``ChurnModel`` (feature pipeline + classifier + calibration)
- ``contract.yaml``: the data contract it was trained under
- ``reference.parquet``: a sample of training rows (contract features, the out-of-fold churn
  probability and the target) for drift detection and label-free performance estimation

The ``stage=champion`` label is the one source of truth of which model is the champion (the
service trusts only the store); the MLflow ``champion`` alias mirrors it (``training.promote``).
Which model a command or pod uses is decided by ``choose_model``, nowhere else.

Imports only bentoml, pandas, pydantic and joblib: packed into the Bento.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import joblib
import pandas as pd
from pydantic import BaseModel, Field

from kernel.contract import DataContract
from kernel.model import ChurnModel

Stage = Literal["challenger", "champion", "rejected", "retired"]
MODEL_TAG_ENV = "CHURN_MODEL_TAG"  # the model a pod or job uses: name:version (or name:champion)
MODEL_FILE = "model.joblib"
CONTRACT_FILE = "contract.yaml"
REFERENCE_FILE = "reference.parquet"
PROBABILITY_COLUMN = "churn_probability"


class StoreError(LookupError):
    """No such model, or no champion yet."""


class HoldoutMetrics(BaseModel):
    """Scores on the untouched test split (the threshold was chosen without it)."""

    roc_auc: float
    pr_auc: float
    precision: float
    recall: float
    f1: float
    brier: float
    expected_value: float = Field(description="total value of acting at the threshold")
    expected_value_per_customer: float
    calibration_error: float = Field(description="expected calibration error, 10 bins")
    positive_rate: float
    flagged_rate: float = Field(description="share of customers flagged at the threshold")


class RiskCutoffs(BaseModel):
    """LOW below ``medium``, MEDIUM from ``medium`` (the business threshold), HIGH from ``high``."""

    medium: float
    high: float


class ScoringCost(BaseModel):
    """What scoring costs for this model, measured when it was trained: its classifier and
    calibration on the feature matrix, one thread (as the service runs it), best of several
    timed rounds. The feature matrix is left out: every candidate shares it."""

    ms_per_row_batch_1: float = Field(description="one customer per call")
    ms_per_row_batch: float = Field(description="per customer in a batch of batch_rows")
    batch_rows: int


class EntryMetadata(BaseModel):
    dataset: str
    algorithm: str
    imbalance: str
    params: dict[str, float | int | str | bool | None]
    selection_metric: str
    cv_score: float
    metrics: HoldoutMetrics
    threshold: float
    risk_cutoffs: RiskCutoffs
    features: list[str]
    categories: dict[str, list[str]] = Field(description="category vocabulary seen in training")
    trained_at: str
    data_fingerprint: str
    train_rows: int
    test_rows: int
    split: str
    library_versions: dict[str, str]
    mlflow_run_id: str | None = None
    mlflow_model_version: str | None = None
    mlflow_tracking_uri: str | None = None
    decision: str = ""
    scoring_cost: ScoringCost | None = None  # None: trained before it was measured


class ModelEntry:
    """A model store entry, loaded. The model and reference sample load on first use."""

    def __init__(self, bento_model: object) -> None:
        self._model = bento_model
        self.tag: str = str(bento_model.tag)
        self.version: str = bento_model.tag.version
        self.labels: dict[str, str] = dict(bento_model.info.labels)
        self.metadata = EntryMetadata.model_validate(bento_model.info.metadata)
        self.path = Path(bento_model.path)
        self.created_at: datetime = bento_model.info.creation_time
        self.resolved_by = self.tag  # how it was chosen (resolve_entry fills in why)

    @property
    def stage(self) -> str:
        return self.labels.get("stage", "")

    @cached_property
    def contract(self) -> DataContract:
        return DataContract.from_yaml(self.path / CONTRACT_FILE)

    @cached_property
    def model(self) -> ChurnModel:
        return joblib.load(self.path / MODEL_FILE)

    @cached_property
    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / REFERENCE_FILE)


def save_entry(
    model: ChurnModel,
    contract: DataContract,
    metadata: EntryMetadata,
    reference: pd.DataFrame,
    stage: Stage,
) -> ModelEntry:
    """Write a new entry. BentoML commits it only when the block exits without error."""
    import bentoml

    labels = {"dataset": contract.name, "stage": stage, "algorithm": metadata.algorithm}
    with bentoml.models.create(
        contract.name,
        labels=labels,
        metadata=metadata.model_dump(mode="json"),
    ) as bento_model:
        out = Path(bento_model.path)
        joblib.dump(model, out / MODEL_FILE)
        (out / CONTRACT_FILE).write_text(contract.to_yaml())
        reference.to_parquet(out / REFERENCE_FILE, index=False)
    return load_entry(str(bento_model.tag))


def load_entry(tag: str) -> ModelEntry:
    """Load ``name:version``; ``name:champion`` (or a bare ``name``) is its current champion."""
    import bentoml

    name, _, version = tag.partition(":")
    if version in ("champion", ""):
        return champion(name)
    try:
        return ModelEntry(bentoml.models.get(tag))
    except bentoml.exceptions.NotFound as exc:
        raise StoreError(f"model {tag!r} is not in the model store at {store_home()}") from exc


def list_entries(name: str | None = None) -> list[ModelEntry]:
    """Entries of one dataset (or all), newest first. Foreign models in the store are skipped."""
    import bentoml

    entries = []
    try:
        found = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return []
    for bento_model in found:
        if "stage" in bento_model.info.labels and "dataset" in bento_model.info.labels:
            entries.append(ModelEntry(bento_model))
    return sorted(entries, key=lambda e: e.created_at, reverse=True)


def datasets() -> list[str]:
    """Names of the datasets (contracts) with at least one model in the store."""
    return sorted({entry.metadata.dataset for entry in list_entries()})


def champion(name: str) -> ModelEntry:
    """The current champion of a dataset: the newest entry labelled stage=champion."""
    for entry in list_entries(name):
        if entry.stage == "champion":
            return entry
    raise StoreError(
        f"no champion for {name!r} in the model store at {store_home()}: run `churn train` first"
    )


def choose_model(tag: str | None = None, *, configured_tag: str | None = None,
                 dataset: str | None = None) -> tuple[str, str]:
    """Which model to use, and why: the one model identity rule of every command and the service.

    1. ``tag``: given explicitly (a command's ``--model``);
    2. ``$CHURN_MODEL_TAG``: what a pod or a CronJob is told to serve or check;
    3. ``configured_tag``: a config file's pinned ``model_tag``;
    4. the champion of ``dataset`` (a config's model name);
    5. the champion of the only dataset in the store (the local default).
    A tag is ``name:version``; ``name`` or ``name:champion`` means that dataset's champion.
    Raises StoreError when the store is empty, or holds several datasets and nothing names one.
    """
    for candidate, why in ((tag, "given"), (os.environ.get(MODEL_TAG_ENV), f"${MODEL_TAG_ENV}"),
                           (configured_tag, "model_tag in the config")):
        if candidate:
            name, _, version = candidate.strip().partition(":")
            return f"{name}:{version or 'champion'}", why
    if dataset:
        return f"{dataset}:champion", "champion of the configured dataset"
    names = datasets()
    if len(names) == 1:
        return f"{names[0]}:champion", "champion of the only dataset in the store"
    if not names:
        raise StoreError(f"no churn model in the model store at {store_home()}: "
                         "run `churn train` first")
    raise StoreError(f"the model store at {store_home()} holds models of {len(names)} datasets "
                     f"({', '.join(names)}): name one with --model NAME[:VERSION] or "
                     f"{MODEL_TAG_ENV}")


def resolve_entry(tag: str | None = None, *, configured_tag: str | None = None,
                  dataset: str | None = None) -> ModelEntry:
    """Load the model ``choose_model`` picks; ``entry.resolved_by`` says why it was picked."""
    chosen, why = choose_model(tag, configured_tag=configured_tag, dataset=dataset)
    entry = load_entry(chosen)
    entry.resolved_by = f"{chosen} ({why})"
    return entry


def delete_entry(tag: str) -> None:
    """Remove an entry from the store (a training run that failed after saving it)."""
    import bentoml

    bentoml.models.delete(tag)


def set_stage(tag: str, stage: Stage, decision: str | None = None) -> None:
    """Relabel an entry in place (BentoML keeps labels in the entry's model.yaml)."""
    from kernel.adapters.bentoml_internals import relabel_model

    relabel_model(tag, {"stage": stage}, {} if decision is None else {"decision": decision})


def promote(tag: str, decision: str) -> list[str]:
    """Make ``tag`` the champion in the store (the source of truth); returns the retired tags.

    The new champion is marked before the old one is retired, so a crash in between leaves two
    champions (the newest wins), never none. If a relabel fails, every entry changed so far gets
    its stage and decision back before the error is raised.
    """
    entry = load_entry(tag)
    previous = [e for e in list_entries(entry.metadata.dataset)
                if e.stage == "champion" and e.tag != tag]
    changes = [(entry, "champion", decision)] + [
        (old, "retired", f"replaced by {tag}") for old in previous]
    done: list[ModelEntry] = []
    try:
        for target, stage, why in changes:
            set_stage(target.tag, stage, why)
            done.append(target)
    except BaseException:
        for target in reversed(done):
            set_stage(target.tag, target.stage, target.metadata.decision)
        raise
    return [old.tag for old in previous]


def store_home() -> str:
    from kernel.paths import model_store_dir

    return str(model_store_dir())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
