"""The model judge: one module for the shadow, the canary, the CLI, Argo and the alerts.

Pure functions on DataFrames (no I/O, no Prometheus queries, no files):

- ``judge_paired(pairs, config, segments=..., label=..., sample=...)``: the shadow, both
  models on the same customers;
- ``judge_unpaired(stable, canary, config, stable_traffic=..., canary_traffic=...,
  sample=...)``: the canary, two tracks of different customers;

each returning a ``Judgement`` (rows, score, verdict, ``exit_code``, ``table()``,
``to_dict()``); ``judgement_registry`` turns one into gauges for the Pushgateway. Settings:
``JudgeConfig`` (``configs/judge.yaml``). How it decides and how often it is wrong:
docs/judge.md.
"""

from monitoring.judge.config import CheckSettings, JudgeConfig, JudgeConfigError
from monitoring.judge.decision import (
    CLASS_CODES,
    EXIT_CODES,
    CheckResult,
    Classification,
    Judgement,
    SegmentRow,
    Tolerance,
    Verdict,
)
from monitoring.judge.metrics import CANARY_JOB, SHADOW_JOB, judgement_registry
from monitoring.judge.paired import judge_paired
from monitoring.judge.records import (
    PREDICTION_COLUMNS,
    RISK_LEVELS,
    SHADOW_PREFIX,
    JudgeInputError,
)
from monitoring.judge.sequential import SampleBudgetSpent
from monitoring.judge.unpaired import TrackTraffic, judge_unpaired

__all__ = [
    "CANARY_JOB", "CLASS_CODES", "EXIT_CODES", "PREDICTION_COLUMNS", "RISK_LEVELS",
    "SHADOW_JOB", "SHADOW_PREFIX", "CheckResult", "CheckSettings", "Classification",
    "JudgeConfig", "JudgeConfigError", "JudgeInputError", "Judgement", "SampleBudgetSpent",
    "SegmentRow", "Tolerance", "TrackTraffic", "Verdict", "judge_paired", "judge_unpaired",
    "judgement_registry",
]
