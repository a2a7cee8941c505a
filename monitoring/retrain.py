"""Should the model be retrained? Drift, a performance drop, or age, with an exit code a
CronJob can branch on (``churn retrain-check; [ $? -eq 10 ] && churn train ...``).

Exit codes of ``churn retrain-check``:

- 0  (``EXIT_NO_RETRAIN``): no reason to retrain.
- 10 (``EXIT_RETRAIN``): retraining recommended; the reasons are printed and pushed.
- 2  (``EXIT_ERROR``): the check could not run (no model, bad config, Pushgateway unreachable).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

EXIT_NO_RETRAIN = 0
EXIT_RETRAIN = 10
EXIT_ERROR = 2

Reason = Literal["drift", "performance", "age"]
REASONS: tuple[Reason, ...] = ("drift", "performance", "age")


class RetrainEvidence(BaseModel):
    """What the check looked at. ``None`` means "no recent report said anything about it"."""

    model_tag: str
    model_version: str
    trained_at: str
    reference_roc_auc: float
    drift_detected: bool | None = None
    drift_report: str | None = None
    measured_roc_auc: float | None = None
    performance_report: str | None = None
    estimated_roc_auc: float | None = None


class RetrainDecision(BaseModel):
    kind: Literal["retrain_check"] = "retrain_check"
    run_at: str
    recommended: bool
    reasons: dict[Reason, bool]
    explanations: list[str]
    model_age_days: float
    evidence: RetrainEvidence

    @property
    def exit_code(self) -> int:
        return EXIT_RETRAIN if self.recommended else EXIT_NO_RETRAIN


def model_age_days(trained_at: str, now: datetime) -> float:
    """Days since ``trained_at`` (ISO-8601; a naive time is read as UTC)."""
    trained = datetime.fromisoformat(trained_at)
    if trained.tzinfo is None:
        trained = trained.replace(tzinfo=now.tzinfo)
    return (now - trained).total_seconds() / 86400


def decide_retrain(
    evidence: RetrainEvidence, now: datetime, performance_margin: float, max_age_days: float
) -> RetrainDecision:
    """Recommend retraining when drift was detected, ROC-AUC (measured if known, else the
    label-free estimate) fell more than ``performance_margin`` below the stored test ROC-AUC,
    or the model is older than ``max_age_days``. Every reason found is reported."""
    age = model_age_days(evidence.trained_at, now)
    reasons: dict[Reason, bool] = dict.fromkeys(REASONS, False)
    explanations: list[str] = []

    if evidence.drift_detected:
        reasons["drift"] = True
        explanations.append(f"data drift detected ({evidence.drift_report})")

    observed, source = evidence.measured_roc_auc, "measured"
    if observed is None:
        observed, source = evidence.estimated_roc_auc, "estimated"
    if observed is not None:
        drop = evidence.reference_roc_auc - observed
        if drop > performance_margin:
            reasons["performance"] = True
            explanations.append(
                f"{source} ROC-AUC {observed:.3f} is {drop:.3f} below the test ROC-AUC "
                f"{evidence.reference_roc_auc:.3f} (margin {performance_margin:.3f})"
            )

    if age > max_age_days:
        reasons["age"] = True
        explanations.append(f"model is {age:.1f} days old (limit {max_age_days:g})")

    return RetrainDecision(
        run_at=now.isoformat(timespec="seconds"), recommended=any(reasons.values()),
        reasons=reasons, explanations=explanations, model_age_days=age, evidence=evidence,
    )
