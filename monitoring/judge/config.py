"""Settings of the model judge, read from ``configs/judge.yaml``.

Every field has a default that works; why each number is what it is (and the simulation that
measured it) is in docs/judge.md. Tolerances are in the unit of the check's effect:
shares as fractions (0.04 = 4 percentage points), the mean probability as a relative change
(0.2 = the ratio of means between 1/1.2 and 1.2), latency as a ratio.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernel.yaml_model import JobConfig

CONFIG_NAME = "judge.yaml"


class JudgeConfigError(ValueError):
    """The judge config file is unreadable or has invalid values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckSettings(_Section):
    """One check: its practical tolerance and its weight in the score (0 = shown, not scored)."""

    tolerance: float = Field(gt=0)
    weight: float = Field(1.0, ge=0)


def _check(tolerance: float, weight: float = 1.0):
    return Field(default_factory=lambda: CheckSettings(tolerance=tolerance, weight=weight))


class ScoreSettings(_Section):
    """Kayenta's rule: score = weighted share of passing checks, against two thresholds."""

    pass_threshold: float = Field(95.0, gt=0, le=100, description="score (0-100) at or above "
                                  "which the judgement passes")
    marginal_threshold: float = Field(
        90.0, gt=0, le=100, description="the judgement fails when the score could not reach "
        "this even if every undecided check passed; above the lightest scored weight's share "
        "so that one failing check fails (spinnaker #6278)")

    @model_validator(mode="after")
    def _ordered(self) -> ScoreSettings:
        if self.marginal_threshold > self.pass_threshold:
            raise ValueError("marginal_threshold must not exceed pass_threshold")
        return self


class PairedChecks(_Section):
    flagged_share: CheckSettings = _check(0.04)
    high_share: CheckSettings = _check(0.02)
    mean_probability: CheckSettings = _check(0.20)
    disagreement: CheckSettings = _check(0.10)
    segment_disagreement: CheckSettings = _check(0.15)
    segment_ranking: CheckSettings = _check(0.2)
    roc_auc: CheckSettings = _check(0.01)
    moved_share: CheckSettings = _check(0.25, 0.0)
    risk_jumps: CheckSettings = _check(0.01, 0.0)


class PairedSettings(_Section):
    """The shadow: both models scored the same customers."""

    planned_samples: int = Field(1, ge=1, description="separate samples judged in turn; the "
                                 "shadow's pairs are one growing sample")
    min_pairs: int = Field(200, ge=10, description="fewer pairs: every check is NoData")
    min_segment_pairs: int = Field(200, ge=10, description="segments with fewer pairs are "
                                   "listed, not tested for disagreement")
    min_ranking_pairs: int = Field(400, ge=10, description="segments with fewer pairs are not "
                                   "tested for rank agreement (a correlation needs more)")
    min_labelled: int = Field(200, ge=10, description="labelled pairs (with both classes) "
                              "needed for the ROC-AUC check")
    moved_by: float = Field(0.10, gt=0, lt=1, description="a customer whose probability moved "
                            "by more than this counts as moved")
    top_segments: int = Field(5, ge=0, description="segments listed in the judgement")
    checks: PairedChecks = Field(default_factory=PairedChecks)


class UnpairedChecks(_Section):
    flagged_share: CheckSettings = _check(0.04)
    high_share: CheckSettings = _check(0.02)
    mean_probability: CheckSettings = _check(0.20)
    probability_shift: CheckSettings = _check(0.02, 0.0)
    probability_distribution: CheckSettings = _check(0.25, 0.0)
    failed_requests: CheckSettings = _check(0.01)
    rejected_input: CheckSettings = _check(0.02)
    latency_p95: CheckSettings = _check(1.5)
    latency_p99: CheckSettings = _check(2.0)

    @model_validator(mode="after")
    def _ratios(self) -> UnpairedChecks:
        for name in ("latency_p95", "latency_p99"):
            if getattr(self, name).tolerance <= 1:
                raise ValueError(f"{name}.tolerance is a ratio canary/stable and must be > 1")
        return self


class UnpairedSettings(_Section):
    """The canary: two tracks, different customers."""

    planned_samples: int = Field(3, ge=1, description="separate samples judged in turn: the "
                                 "canary's analysed steps (5, 25, 50%), one window each")
    min_predictions: int = Field(200, ge=10, description="per track; fewer: the prediction "
                                 "checks are NoData")
    min_requests: int = Field(200, ge=10, description="per track; fewer: the HTTP checks are "
                              "NoData")
    latency_floor_seconds: float = Field(0.02, gt=0, description="stable latency below this "
                                         "counts as this (as rollout/analysis.py)")
    checks: UnpairedChecks = Field(default_factory=UnpairedChecks)


class JudgeConfig(JobConfig, _Section):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "judge config"
    CONFIG_ERROR: ClassVar[type[Exception]] = JudgeConfigError

    alpha: float = Field(0.05, gt=0, lt=0.5, description="chance, over every look, that a "
                         "confidence sequence misses a check's true effect")
    tightest_at: int = Field(2000, ge=10, description="sample size at which the confidence "
                             "sequences are tuned to be narrowest")
    max_needed: int = Field(10_000_000, ge=1000, description="a needed sample size beyond this "
                            "is reported as out of reach")
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    paired: PairedSettings = Field(default_factory=PairedSettings)
    unpaired: UnpairedSettings = Field(default_factory=UnpairedSettings)
