"""Drill settings: one YAML file (``configs/drill.yaml``) parsed into pydantic.

The drill breaks the system as the project configures it: the guards' settings (leakage
refusal, the gate's margin, ``max_in_flight``, ``flush_seconds``, alert thresholds, canary
limits) are read from the project's own config files named here. What the drill sets itself is
only how big and how fast: table sizes, the training budget, traffic volumes and the factor by
which alert time is compressed.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drill import CONFIG_NAME  # noqa: F401 (re-exported: the config's file name)
from kernel.yaml_model import JobConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectFiles(_Section):
    """The project's own configs: the guards under test, as configured."""

    contract: Path = Path("configs/streaming_churn.contract.yaml")
    train: Path = Path("configs/train.yaml")
    service: Path = Path("configs/service.yaml")
    monitoring: Path = Path("configs/monitoring.yaml")
    canary: Path = Path("configs/canary.yaml")
    judge: Path = Path("configs/judge.yaml")
    rules: Path = Path("monitoring/prometheus/rules.yml")
    prometheus: Path = Path("monitoring/prometheus/prometheus.yml")
    canary_overlay: Path = Path("k8s/overlays/canary")


class TrainingSpeed(_Section):
    """Overrides of the training config's speed knobs only (its guards stay as configured)."""

    rows: int = Field(4000, ge=500, description="customers the drill's champion learns from")
    seed: int = 7
    algorithms: list[str] = ["logistic", "xgboost"]
    imbalance: list[str] = ["class_weight"]
    cv_folds: int = Field(3, ge=2)
    max_trials: int = Field(0, ge=0)
    search_budget_seconds: float = Field(0, ge=0)
    ensemble: bool = False
    reference_rows: int = Field(2000, ge=100)


class ServingLoad(_Section):
    """How hard the serving scenarios push a real `bentoml serve`."""

    workers: int = Field(2, ge=1, description="workers of the servers that are stopped")
    rate: float = Field(150, gt=0, description="requests/s of the steady load that SIGTERM "
                        "and SIGKILL interrupt")
    clients: int = Field(24, ge=1, description="connections carrying that load")
    seconds_before_signal: float = Field(3.0, gt=0)
    overload_max_in_flight: int = Field(
        12, ge=1, description="capacity of the overload server (per worker, one worker): the "
        "project's max_in_flight scaled down so the drill's own load generator, on the same "
        "cores, can exceed it; a project setting of null (no shedding) stays null")
    overload_clients: int = Field(48, ge=2, description="concurrent clients, four times the "
                                  "capacity (more measures the load generator, not the server)")
    overload_seconds: float = Field(6.0, gt=0)
    overload_retry_seconds: float = Field(0.05, ge=0, description="pause of a client after a "
                                          "429 (impatient clients: Retry-After says 1 s)")
    overload_p99_ms: float = Field(
        1000.0, gt=0, description="bound on the p99 of answered requests under overload as "
        "the service measures it (histogram bucket bound): 10x the 100 ms alert threshold, for "
        "a machine shared with the load generator (75-500 ms measured at load 2-4 on 2 cores)")
    overload_client_p99_ms: float = Field(
        3000.0, gt=0, description="bound on the same p99 as the clients saw it (adds the load "
        "generator's own queueing on the same cores; 150-1000 ms measured at load 4 on 2 cores)")
    recovery_requests: int = Field(20, ge=1)


class MonitoringLoad(_Section):
    rows: int = Field(800, ge=300, description="customers sent per drift scenario (drift "
                      "needs drift.min_rows)")
    min_estimate_drop: float = Field(
        0.02, gt=0, description="the label-free ROC-AUC estimate must fall at least this far "
        "below the model's test ROC-AUC before labels arrive (it sees only the shift in "
        "scores, not the change in P(churn | features))")
    concept_segment_share: float = Field(0.7, gt=0, lt=1, description="share of concept-drift "
                                         "traffic from the segment the change hits")


class CanaryLoad(_Section):
    requests: int = Field(1200, ge=100, description="/predict requests split between tracks")
    shadow_requests: int = Field(3000, ge=500, description="/predict requests to the shadowed "
                                 "champion (shadow-segment): the segment needs 400 pairs")
    canary_every: int = Field(4, ge=2, description="every n-th request goes to the canary "
                              "(4 = a 25% step)")
    min_requests: int = Field(100, ge=1, description="traffic gates of configs/canary.yaml "
                              "scaled to the drill's traffic")
    min_predictions: int = Field(150, ge=1)
    latency_floor_seconds: float = Field(
        0.5, gt=0, description="servers share two busy cores with the drill: a p99 of a few "
        "hundred ms is the machine, not the canary")


class DrillConfig(JobConfig, _Section):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "drill config"

    project: ProjectFiles = ProjectFiles()
    training: TrainingSpeed = TrainingSpeed()
    serving: ServingLoad = ServingLoad()
    monitoring: MonitoringLoad = MonitoringLoad()
    canary: CanaryLoad = CanaryLoad()
    time_scale: float = Field(
        360, ge=1, description="alert time runs this much faster in the drill's Prometheus: "
        "for: durations and staleness thresholds are divided by it (360: 1 h -> 10 s)")
    alert_timeout_seconds: float = Field(120, gt=0, description="longest wait for an alert")
    server_timeout_seconds: float = Field(300, gt=0, description="longest wait for a server")
