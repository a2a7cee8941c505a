"""A retrain on broken labels, inside the model lifecycle: drift has been reported, `churn
lifecycle step` retrains a challenger on a table whose labels were shuffled (a label join gone
wrong upstream; the contract cannot see it), and must stop at the gate. Real training, store,
MLflow and gate (rollout/lifecycle's ChurnWorld, as `churn lifecycle step` builds it), the
state in a file, stable and canary as local servers (LocalPlatform, as `churn lifecycle run
--local`). The drift signal itself is given (the retrain check is the covariate-drift
scenario's and the monitoring tests' subject): what is drilled is what comes after it."""

from __future__ import annotations

import numpy as np

from drill.scenario import Finding, Scenario
from drill.system import DrillSystem
from drill.traffic import bodies_of
from kernel.processes import free_port


def _answers(url: str, bodies: list[dict]) -> np.ndarray:
    import httpx

    with httpx.Client(timeout=60) as client:
        return np.array([client.post(f"{url}/predict", json=body).json()["churn_probability"]
                         for body in bodies])


def broken_labels_retrain(system: DrillSystem, finding: Finding) -> None:
    from rollout.lifecycle.engine import Judged, Lifecycle
    from rollout.lifecycle.platform import LocalPlatform, LocalServer
    from rollout.lifecycle.state import FileStateStore, LifecycleConfig, Phase
    from rollout.lifecycle.world import GATE_LABEL, ChurnWorld

    champion = system.champion()
    service = system.champion_service()
    contract = champion.contract
    probe = bodies_of(system.customers(50, 71)[list(contract.features)], contract, "LCY-")
    answers_before = _answers(service.url, probe)
    before = system.store_state(contract.name)

    frame = system.customers(system.settings.training.rows, system.settings.training.seed + 9)
    target = contract.target.column
    frame[target] = np.random.default_rng(9).permutation(frame[target].to_numpy())
    table = system.write_table(frame, "lifecycle-shuffled-labels.csv")

    folder = system.workdir / "lifecycle"
    settings = LifecycleConfig(training_data=str(table), shadow={"min_minutes": 0},
                               canary={"min_minutes": 0})
    judged_by_hand: list[str] = []
    world = ChurnWorld(
        settings, system.home,
        retrain_check=lambda: Judged("fail", "drift reported on the champion's traffic"),
        judge_shadow_with=lambda state: judged_by_hand.append("shadow") or Judged("pass", ""),
        judge_canary_with=lambda state: judged_by_hand.append("canary") or Judged("pass", ""),
        train_config_path=system.train_config_file(), dataset=contract.name)
    platform = LocalPlatform(
        LocalServer("stable", free_port(), folder / "stable"),
        LocalServer("canary", free_port(), folder / "canary"), champion_tag=champion.tag)
    lifecycle = Lifecycle(settings, FileStateStore(folder / "state.json"), world, platform,
                          [5, 25, 50, 100])
    finding.injected()
    outcome = lifecycle.step()
    finding.detected()
    state = outcome.state
    moves = [f"{t.source.value} -> {t.target.value}" for t in state.history]
    rejected = [t for t in state.history if t.target is Phase.REJECTED]
    reason = rejected[0].reason if rejected else ""
    finding.note("transitions", moves)
    finding.note("reason", reason)
    finding.note("waiting", outcome.waiting)
    finding.caught("the lifecycle stops at the gate: retraining -> rejected, with the reason",
                   moves[:2] == ["idle -> retraining", "retraining -> rejected"]
                   and bool(reason), f"{moves}: {reason[:160]}")
    after = system.store_state(contract.name)
    new = sorted(set(after.stages) - set(before.stages))
    from kernel.store import load_entry

    labels = load_entry(new[0]).labels if len(new) == 1 else {}
    finding.intact("the challenger is kept for the record, labelled rejected (gate: fail)",
                   len(new) == 1 and after.stages[new[0]] == "rejected"
                   and labels.get(GATE_LABEL) == "fail", {t: after.stages[t] for t in new})
    finding.intact("champion untouched (store label and MLflow alias)",
                   after.champion == before.champion
                   and after.mlflow_champion == before.mlflow_champion,
                   f"{after.champion}, MLflow v{after.mlflow_champion}")
    finding.intact("no shadow, no canary: nothing judged, no server started or restarted",
                   not judged_by_hand and platform.stable.process is None
                   and platform.canary.process is None and not platform.shadow_tag,
                   f"judged {judged_by_hand}")
    answers_after = _answers(service.url, probe)
    finding.intact("every answer is what it was (no customer reached)",
                   np.allclose(answers_before, answers_after, atol=1e-9),
                   f"{len(probe)} customers asked before and after")
    again = lifecycle.step()
    finding.intact("the cycle ends and the next step cools down instead of retraining again",
                   state.phase is Phase.IDLE and again.state.phase is Phase.IDLE
                   and "cooling down" in (again.waiting or ""), again.waiting)

SCENARIOS = [
    Scenario("lifecycle-broken-labels", "canary",
             "drift triggers `churn lifecycle step`, which retrains on a table whose labels "
             "were shuffled upstream (the contract cannot see it)",
             "the challenger gate inside the lifecycle (non-inferior on the same test rows, "
             "the quality floor) rejects it: no shadow, no canary, no customer reached",
             broken_labels_retrain),
]
