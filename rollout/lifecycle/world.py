"""What the lifecycle asks of the rest of churn-serve: the retrain check (monitoring), a
challenger (training, registered but never promoted by training), the judges of the shadow and
the canary, and the store's champion label (training.promote: the store and its MLflow mirror
together).

Every call is what the corresponding command does (`churn retrain-check`, `churn train`,
`churn shadow analyze`, `churn canary analyze`, `churn promote`): the lifecycle adds no second
way of doing any of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rollout.lifecycle.engine import Judged, Trained
from rollout.lifecycle.state import LifecycleConfig, LifecycleError, LifecycleState

log = logging.getLogger("churn.lifecycle")
TRAINING_DATA_ENV = "CHURN_TRAINING_DATA"
CYCLE_LABEL = "lifecycle_cycle"  # the store label that ties a challenger to its cycle
GATE_LABEL = "lifecycle_gate"  # pass | fail: the gate's outcome, written with the cycle label


@dataclass
class ChurnWorld:
    """The lifecycle's world, made of the project's own jobs.

    ``judge_shadow`` and ``judge_canary`` are the analyses `churn shadow analyze` and `churn
    canary analyze` run (given by the caller, which knows where the logs and Prometheus are)."""

    config: LifecycleConfig
    home: Path
    retrain_check: Callable[[], Judged]
    judge_shadow_with: Callable[[LifecycleState], Judged]
    judge_canary_with: Callable[[LifecycleState], Judged]
    train_config_path: Path | None = None
    dataset: str | None = None

    def retrain_recommended(self) -> Judged:
        return self.retrain_check()

    def judge_shadow(self, state: LifecycleState) -> Judged:
        return self.judge_shadow_with(state)

    def judge_canary(self, state: LifecycleState) -> Judged:
        return self.judge_canary_with(state)

    # ------------------------------------------------------------------ training

    def training_data(self) -> str:
        source = os.environ.get(TRAINING_DATA_ENV) or self.config.training_data
        if not source:
            raise LifecycleError(f"no training data: set {TRAINING_DATA_ENV} (or training_data "
                                 "in configs/lifecycle.yaml) to the table the challenger is "
                                 "trained on")
        return source

    def train_challenger(self, cycle: int, key: str) -> Trained:
        """Train on the configured table with the champion's contract, register the model as
        a challenger labelled with ``key`` (the cycle's number and random id; one already
        labelled so is adopted: a resumed step), and gate it as configured. Training itself
        never promotes it."""
        from kernel.adapters.bentoml_internals import relabel_model
        from kernel.store import list_entries, resolve_entry
        from training.config import TrainConfig
        from training.run import evaluate_challenger, register_challenger

        champion = resolve_entry(None, dataset=self.dataset)
        contract = champion.contract
        adopted = [e for e in list_entries(contract.name)
                   if e.labels.get(CYCLE_LABEL) == key]
        if adopted:
            entry = adopted[0]
            # The gate's outcome is labelled with the cycle, in one write: an entry without it
            # (the step died between registering and labelling) is not trusted as passed.
            passed = (entry.labels.get(GATE_LABEL) == "pass"
                      and entry.labels.get("stage") == "challenger")
            log.info("adopting %s, registered by an interrupted step of cycle %d", entry.tag,
                     cycle)
            return Trained(entry.tag, passed, f"adopted {entry.tag} ({entry.metadata.decision})",
                           {"metrics": entry.metadata.metrics.model_dump()})
        config = TrainConfig.locate(self.train_config_path)
        margin = (config.promotion_margin if self.config.gate == "better"
                  else self.config.non_inferiority_margin)
        gating = config if self.config.gate == "better" else config.model_copy(
            update={"promotion_margin": -margin})
        challenger = evaluate_challenger(self.training_data(), contract, gating)
        registration = register_challenger(challenger, contract, config, self.home)
        gate = challenger.gate
        relabel_model(registration.model_tag, {
            CYCLE_LABEL: key, GATE_LABEL: "pass" if gate.promote else "fail"}, {})
        metric = config.selection_metric
        if self.config.gate == "better" or gate.champion_score is None:
            reason = gate.reason
        elif gate.promote:
            reason = (f"challenger {registration.model_tag}: {metric} "
                      f"{gate.challenger_score:.4f} on its test rows, champion "
                      f"{gate.champion_score:.4f}: not worse by more than {margin}")
        elif "does not beat" in gate.reason:
            reason = (f"rejected: {metric} {gate.challenger_score:.4f} is more than {margin} "
                      f"below the champion's {gate.champion_score:.4f} on the same test rows")
        else:
            reason = gate.reason
        return Trained(registration.model_tag, gate.promote, reason, {
            "metrics": challenger.metrics.model_dump(), "gate": gate.reason,
            "champion_score": gate.champion_score, "mode": self.config.gate})

    def reject_challenger(self, tag: str, reason: str) -> None:
        from kernel.store import set_stage

        set_stage(tag, "rejected", reason[:500])

    def promote_in_store(self, tag: str, reason: str) -> None:
        from training.promote import promote_champion

        promote_champion(tag, reason[:500])
