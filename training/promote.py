"""Champion/challenger gate: a new model replaces the champion only when it is clearly better
on the same test rows and meets the contract's quality floor."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.contract import QualityFloor
from kernel.store import HoldoutMetrics


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger_score: float
    champion_score: float | None


def decide(
    challenger: HoldoutMetrics,
    champion_score: float | None,
    metric: str,
    margin: float,
    floor: QualityFloor,
    champion_error: str | None = None,
    monotone_violations: dict[str, float] | None = None,
) -> GateDecision:
    """``champion_score`` is the champion's ``metric`` on the challenger's test rows (None when
    there is no champion). ``champion_error`` says why an existing champion could not be scored."""
    score = getattr(challenger, metric)
    below = [
        f"{name} {getattr(challenger, name):.4f} < floor {limit:.4f}"
        for name, limit in (("roc_auc", floor.roc_auc), ("pr_auc", floor.pr_auc))
        if getattr(challenger, name) < limit
    ]
    if below:
        return GateDecision(False, "rejected: below the quality floor: " + ", ".join(below),
                            score, champion_score)
    if monotone_violations:
        broken = ", ".join(f"{c} ({share:.1%} of rows)" for c, share in monotone_violations.items())
        return GateDecision(False, f"rejected: risk moves against declared monotone features: "
                            f"{broken}", score, champion_score)
    if champion_error is not None:
        return GateDecision(False, f"rejected: the champion could not be compared "
                            f"({champion_error}); promote explicitly with `churn promote`",
                            score, None)
    if champion_score is None:
        return GateDecision(True, f"promoted: first model, {metric} {score:.4f} meets the floor",
                            score, None)
    if score >= champion_score + margin:
        return GateDecision(True, f"promoted: {metric} {score:.4f} beats champion "
                            f"{champion_score:.4f} by >= {margin}", score, champion_score)
    return GateDecision(False, f"rejected: {metric} {score:.4f} does not beat champion "
                        f"{champion_score:.4f} by {margin}", score, champion_score)
