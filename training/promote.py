"""Champion/challenger gate: a new model replaces the champion only when it is clearly better
on the same test rows and meets the contract's quality floor. And the one way a model becomes
champion (``promote_champion``): the store label and its MLflow mirror, together or not at all."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kernel.contract import QualityFloor
from kernel.store import HoldoutMetrics

log = logging.getLogger("churn.promote")


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


class ChampionMirror:
    """The MLflow registry's ``champion`` alias of one registered model: a mirror of the model
    store's champion label, so MLflow users see the same champion. Never read to decide."""

    def __init__(self, tracking_uri: str, registered_name: str) -> None:
        self.tracking_uri, self.registered_name = tracking_uri, registered_name

    def current(self) -> str | None:
        """The version the alias points at now (None when there is no alias)."""
        from training import tracking

        found = tracking.get_champion_version(self.tracking_uri, self.registered_name)
        return found[0] if found else None

    def point_to(self, version: str | None) -> None:
        """Move the alias to ``version``; None removes it."""
        from training import tracking

        if version is None:
            tracking.remove_champion(self.tracking_uri, self.registered_name)
        else:
            tracking.set_champion(self.tracking_uri, self.registered_name, version)


def promote_champion(tag: str, decision: str, tracking_uri: str | None = None) -> list[str]:
    """Make ``tag`` the champion: the model store label (the source of truth, what the service
    and the jobs read) and the MLflow alias (its mirror) change in one step, or neither does.

    ``tracking_uri`` overrides the registry the entry recorded (which has no password). The
    mirror is written first, since a remote tracking server is what most often fails; then the
    store (``kernel.store.promote`` undoes its own partial relabelling); if the store fails,
    the alias goes back to where it pointed. Returns the tags of the retired champions.
    Raises whatever failed, after the rollback.
    """
    from kernel.store import load_entry, promote

    entry = load_entry(tag)
    meta = entry.metadata
    registry = tracking_uri or meta.mlflow_tracking_uri
    mirror = (ChampionMirror(registry, meta.dataset)
              if registry and meta.mlflow_model_version else None)
    before = mirror.current() if mirror else None
    if mirror:
        mirror.point_to(meta.mlflow_model_version)
    try:
        return promote(entry.tag, decision)
    except BaseException:
        if mirror:
            try:
                mirror.point_to(before)
            except Exception as undo:  # noqa: BLE001 - report both, raise the original
                log.error("could not move the MLflow champion alias of %s back to %s: %s",
                          meta.dataset, before, undo)
        raise
