"""Settings of the canary rollout, read from ``configs/canary.yaml``.

Every field has a default that works (why each number is what it is: docs/canary.md), so a
missing file means "defaults". The thresholds are read by ``rollout.analysis``, which renders
the same PromQL and conditions for ``churn canary analyze``, the Argo Rollouts
AnalysisTemplate and the ``ChurnCanaryAnalysisFailing`` alert.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.yaml_model import JobConfig
from rollout import CONFIG_NAME

# A Prometheus range duration, e.g. 90s, 10m, 1h (one unit: what both PromQL and kubectl take).
_DURATION = re.compile(r"^(\d+)(s|m|h)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class CanaryConfigError(ValueError):
    """The canary config file is unreadable or has invalid values."""


def duration_seconds(text: str) -> int:
    """``"90s"``, ``"10m"``, ``"1h"`` -> seconds. Raises ValueError otherwise."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"duration {text!r} is not a positive whole number of s, m or h "
                         "(e.g. 90s, 10m, 1h)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _check_duration(value: str) -> str:
    duration_seconds(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalysisSettings(_Section):
    """What the canary judge reads from Prometheus: canary and stable over the same window,
    each only what it serves now. The judgement itself (tolerances, the score, sequential
    looks) is configs/judge.yaml's (monitoring/judge)."""

    window: str = Field("10m", description="both tracks are compared over this last period "
                        "(from when what a track serves now began serving, if later)")
    match: dict[str, str] = Field(
        default_factory=dict,
        description="extra label matchers for every series, e.g. {namespace: churn}: needed "
        "when one Prometheus scrapes several churn-serve installations")
    identity_labels: list[str] = Field(
        ["instance", "pod", "model_version"],
        description="labels that say what an instance serves now: a series counts only if "
        "churn_model_info holds the same values at the time of the analysis (a pod or version "
        "that is gone, or replaced, no longer counts). `pod` is absent locally: that matches")
    latency_endpoint: str = Field("predict", description="endpoint label of the latency checks")
    wait: str = Field("20m", description="`--wait`: analyse again every minute until pass or "
                      "fail, at most this long (the Argo Rollouts job does)")

    _window = field_validator("window", "wait")(_check_duration)

    @field_validator("identity_labels")
    @classmethod
    def _identity(cls, value: list[str]) -> list[str]:
        if "model_version" not in value:
            raise ValueError("identity_labels must include model_version: the version is what "
                             "the analysis selects on")
        bad = [name for name in value if not _LABEL_NAME.match(name) or name == "__name__"]
        if bad:
            raise ValueError(f"identity_labels: {bad} are not label names")
        return value

    @field_validator("match")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME.match(name) or name in {"track", "le", "__name__"}:
                raise ValueError(f"match: {name!r} cannot be used as an extra label matcher")
        return value


class KubernetesSettings(_Section):
    """Where the two Deployments live and how kubectl reaches them."""

    kubectl: str = Field("kubectl", description="kubectl binary (a path or a name on PATH)")
    context: str | None = Field(None, description="kubeconfig context; None = current")
    namespace: str | None = Field(None, description="None = the context's namespace")
    stable: str = "churn-serve"
    canary: str = "churn-serve-canary"
    container: str = Field("churn-serve", description="the serving container of both Deployments")
    model_env: str = "CHURN_MODEL_TAG"
    rollout_timeout: str = Field("10m", description="kubectl rollout status --timeout")
    # Argo Rollouts: where the AnalysisTemplate's queries go (the in-cluster Prometheus).
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"

    _timeout = field_validator("rollout_timeout")(_check_duration)


class RunSettings(_Section):
    """``churn canary run``: traffic steps with an analysis after each."""

    steps: list[int] = Field([5, 25, 50, 100], description="canary traffic share per step, %; "
                             "100 means promote")
    pause: str = Field("10m", description="wait after each step before analysing; at least "
                       "the analysis window, so the window holds only this step's traffic")
    inconclusive_retries: int = Field(2, ge=0, description="extra pauses when an analysis is "
                                      "inconclusive before the run aborts")

    _pause = field_validator("pause")(_check_duration)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("steps must be increasing percentages in 1..100")
        return steps


class CanaryConfig(JobConfig, _Section):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "canary config"
    CONFIG_ERROR: ClassVar[type[Exception]] = CanaryConfigError

    prometheus_url: str = Field("http://127.0.0.1:9090", description="for churn canary analyze")
    analysis: AnalysisSettings = AnalysisSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    run: RunSettings = RunSettings()

    @model_validator(mode="after")
    def _pause_covers_window(self) -> CanaryConfig:
        if duration_seconds(self.run.pause) < duration_seconds(self.analysis.window):
            raise ValueError(f"run.pause {self.run.pause} is shorter than analysis.window "
                             f"{self.analysis.window}: the analysis would mix two steps")
        return self

