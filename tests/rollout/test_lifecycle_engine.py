"""The lifecycle's state machine on a real file store, with the world and the platform as
scripted stand-ins (what each judge says, what each edit did): every transition, the lock, and
the resumption of a step that died. The same engine against real servers, Prometheus and the
stand-in API server: test_lifecycle_e2e.py."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollout.lifecycle.engine import Judged, Lifecycle, Trained
from rollout.lifecycle.state import (
    EVIDENCE_KEPT,
    Conflict,
    FileStateStore,
    Intent,
    LifecycleConfig,
    LifecycleError,
    LifecycleState,
    Phase,
    TransitionArchive,
    lease_until,
    stamp,
)

STEPS = [5, 25, 50, 100]


@dataclass
class ScriptedWorld:
    """Says what the tests tell it to; counts what it was asked."""

    retrain: bool = True
    trained: Trained = Trained("churn:c1", True, "non-inferior")
    shadow: list[str] = field(default_factory=lambda: ["pass"])
    canary: list[str] = field(default_factory=lambda: ["pass", "pass", "pass"])
    calls: list[str] = field(default_factory=list)
    train_seconds: float = 0.0

    def retrain_recommended(self) -> Judged:
        self.calls.append("retrain_check")
        return Judged("fail" if self.retrain else "pass", "drift in 4 of 12 features")

    def train_challenger(self, cycle: int, key: str = "") -> Trained:
        self.calls.append(f"train {cycle}")
        time.sleep(self.train_seconds)
        return self.trained

    def reject_challenger(self, tag: str, reason: str) -> None:
        self.calls.append(f"reject {tag}")

    def promote_in_store(self, tag: str, reason: str) -> None:
        self.calls.append(f"promote {tag}")

    def judge_shadow(self, state: LifecycleState) -> Judged:
        verdict = self.shadow.pop(0) if self.shadow else "inconclusive"
        return Judged(verdict, f"shadow {verdict}", {"table": "..."})

    def judge_canary(self, state: LifecycleState) -> Judged:
        self.calls.append(f"judge_canary {state.canary_step}")
        verdict = self.canary.pop(0) if self.canary else "inconclusive"
        return Judged(verdict, f"canary {verdict}", {"table": "..."})


@dataclass
class RecordingPlatform:
    edits: list[str] = field(default_factory=list)
    fail_on: str | None = None

    def champion(self) -> str:
        return "churn:v0"

    def _edit(self, what: str) -> None:
        if self.fail_on and what.startswith(self.fail_on):
            raise RuntimeError(f"kubectl refused {what}")
        self.edits.append(what)

    def start_shadow(self, tag: str) -> None:
        self._edit(f"start_shadow {tag}")

    def stop_shadow(self, reason: str) -> None:
        self._edit("stop_shadow")

    def start_canary(self, tag: str, weight: int) -> None:
        self._edit(f"start_canary {tag} {weight}")

    def step_canary(self, weight: int, reason: str) -> None:
        self._edit(f"step_canary {weight}")

    def abort_canary(self, reason: str) -> None:
        self._edit("abort_canary")

    def promote_canary(self, reason: str) -> None:
        self._edit("promote_canary")

    def record(self, state: LifecycleState) -> None:
        return None


def lifecycle(tmp_path: Path, world=None, platform=None, **config) -> Lifecycle:
    settings = LifecycleConfig(**{"shadow": {"min_minutes": 0}, "canary": {"min_minutes": 0},
                                  **config})
    return Lifecycle(settings, FileStateStore(tmp_path / "state.json"), world or ScriptedWorld(),
                     platform or RecordingPlatform(), STEPS)


def phases(state: LifecycleState) -> list[str]:
    return [f"{t.source}->{t.target}" for t in state.history]


def test_the_whole_loop_stops_for_approval_then_promotes(tmp_path: Path) -> None:
    loop = lifecycle(tmp_path)
    first = loop.step()
    assert first.state.phase is Phase.AWAITING_APPROVAL and "awaiting approval" in first.waiting
    assert loop.platform.edits == ["start_shadow churn:c1", "stop_shadow",
                                   "start_canary churn:c1 5", "step_canary 25",
                                   "step_canary 50"]
    assert phases(first.state) == [
        "idle->retraining", "retraining->challenger", "challenger->shadow", "shadow->canary",
        "canary->canary", "canary->canary", "canary->awaiting_approval"]
    assert all(t.reason for t in first.state.history)
    assert first.state.history[3].evidence["judgement"] == {"table": "..."}
    assert loop.step().state.phase is Phase.AWAITING_APPROVAL  # waits; nothing changes
    assert "promote" not in " ".join(loop.world.calls)  # never without a person
    promoted = loop.approve("reviewed the judge's tables")
    assert promoted.phase is Phase.PROMOTED and promoted.champion == "churn:c1"
    assert loop.platform.edits[-1] == "promote_canary"
    assert loop.world.calls[-1] == "promote churn:c1"
    loop.world.retrain = False  # the new champion has no drift yet
    assert loop.step().state.phase is Phase.IDLE  # the cycle ends, the next one may begin
    assert loop.store.read().intent is None


def test_the_state_keeps_every_transition_and_the_newest_evidence_the_archive_all(
        tmp_path: Path) -> None:
    """Cycle after cycle the state must stay small enough for a ConfigMap (and kubectl): the
    evidence of transitions older than the EVIDENCE_KEPT newest is dropped from it, never the
    transitions; the archive has every one with its evidence whole."""
    archive = tmp_path / "reports" / "transitions.jsonl"
    loop = lifecycle(tmp_path)
    loop.archive = TransitionArchive(archive)
    for _ in range(5):  # five whole cycles, 9 transitions each
        loop.world.canary, loop.world.shadow, loop.world.retrain = ["pass"] * 3, ["pass"], True
        loop.step()
        loop.approve("reviewed")
        loop.world.retrain = False
        loop.step()
    history = loop.store.read().history
    assert len(history) == 45
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [(r["from"], r["to"], r["reason"]) for r in lines] == [
        (t.source.value, t.target.value, t.reason) for t in history]
    for number, (kept, whole) in enumerate(zip(history, lines, strict=True)):
        if number < len(history) - EVIDENCE_KEPT:  # older: the record stays, its evidence not
            assert kept.evidence == {} and kept.evidence_dropped is bool(whole["evidence"])
        else:
            assert kept.evidence == whole["evidence"] and not kept.evidence_dropped
    assert sum(t.evidence_dropped for t in history) >= 10
    judged = [r for r in lines if r["reason"].startswith("shadow passed")]
    assert len(judged) == 5 and all(r["evidence"]["judgement"] == {"table": "..."}
                                    for r in judged)
    assert lines[0]["cycle"].startswith("1-") and lines[-1]["cycle"].startswith("5-")


def test_auto_promote_promotes_after_the_last_canary_step(tmp_path: Path) -> None:
    loop = lifecycle(tmp_path, auto_promote=True)
    outcome = loop.step()
    assert "canary->promoted" in phases(outcome.state)
    assert loop.world.calls[-1] == "promote churn:c1"


def test_a_challenger_failing_the_gate_shadow_or_canary_never_reaches_customers(
        tmp_path: Path) -> None:
    gated = lifecycle(tmp_path / "gate", ScriptedWorld(trained=Trained("churn:c1", False,
                                                                       "below the floor")))
    state = gated.step().state
    assert "retraining->rejected" in phases(state) and gated.platform.edits == []
    assert "reject churn:c1" in gated.world.calls and state.phase is Phase.IDLE
    # The same drift would retrain at once, and again: a rejected cycle cools down first.
    assert gated.step().waiting.startswith("idle: cooling down after a rejected challenger")
    assert gated.world.calls.count("train 1") == 1 and "train 2" not in gated.world.calls

    shadowed = lifecycle(tmp_path / "shadow", ScriptedWorld(shadow=["fail"]))
    state = shadowed.step().state
    assert "shadow->rejected" in phases(state)
    assert shadowed.platform.edits == ["start_shadow churn:c1", "stop_shadow"]  # no canary

    canary = lifecycle(tmp_path / "canary", ScriptedWorld(canary=["pass", "fail"]))
    state = canary.step().state
    assert "canary->rejected" in phases(state)
    assert canary.platform.edits[-1] == "abort_canary"
    assert not any("promote" in call for call in canary.world.calls)


def test_an_undecidable_canary_is_rejected_after_its_looks(tmp_path: Path) -> None:
    loop = lifecycle(tmp_path, ScriptedWorld(canary=[]), canary={"max_looks_per_step": 3,
                                                                  "min_minutes": 0})
    outcomes = [loop.step() for _ in range(3)]
    assert [o.state.looks for o in outcomes[:2]] == [1, 2]
    assert "inconclusive" in outcomes[0].waiting
    assert "canary->rejected" in phases(outcomes[2].state)
    assert "still inconclusive after 3 analyses" in outcomes[2].state.history[-2].reason


def test_two_steps_at_once_act_once(tmp_path: Path) -> None:
    world = ScriptedWorld(train_seconds=1.0)
    first, second = lifecycle(tmp_path, world), lifecycle(tmp_path, world)
    second.owner = "another-pod:1"
    outcomes = {}
    threads = [threading.Thread(target=lambda n=n, lc=lc: outcomes.__setitem__(n, lc.step()))
               for n, lc in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert world.calls.count("train 1") == 1
    waits = [o.waiting for o in outcomes.values()]
    assert sum(w.startswith("busy") for w in waits) == 1, waits
    assert first.store.read().phase is Phase.AWAITING_APPROVAL


def died_moving_the_canary_to_25(tmp_path: Path, **state: object) -> Lifecycle:
    """A lifecycle whose step took the lock to move the canary from 5% to 25% and died (its
    lease has expired), with ``state`` set; the world passes the next two canary looks."""
    store = FileStateStore(tmp_path / "state.json")
    written = store.write(LifecycleState(phase=Phase.CANARY, cycle=1, champion="churn:v0",
                                         challenger="churn:c1", canary_step=0, **state))
    dead = Intent(action="step_canary", owner="dead-pod:7", started_at=stamp(),
                  lease_until=lease_until(-1), args={"reason": "canary passed at 5%",
                                                     "evidence": {}, "step": 1})
    store.write(written.model_copy(update={"intent": dead}))
    return lifecycle(tmp_path, ScriptedWorld(canary=["pass", "pass"]))


def test_a_step_killed_mid_canary_is_resumed_by_the_next(tmp_path: Path) -> None:
    """A step took the lock to move the canary to 25% and died: its lease expires, the next
    step finishes that step (one scale, recorded as resumed) and goes on."""
    loop = died_moving_the_canary_to_25(tmp_path)
    outcome = loop.step()
    assert outcome.moved[0] == "canary -> canary (resumed)"
    assert loop.platform.edits == ["step_canary 25", "step_canary 50"]
    assert "(resumed after an interrupted step)" in outcome.state.history[0].reason
    assert outcome.state.phase is Phase.AWAITING_APPROVAL


def test_a_live_lock_held_by_another_step_is_respected(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    state = store.write(LifecycleState(phase=Phase.RETRAINING, cycle=1))
    store.write(state.model_copy(update={"intent": Intent(
        action="train", owner="trainer-pod:3", started_at=stamp(),
        lease_until=lease_until(30))}))
    loop = lifecycle(tmp_path)
    outcome = loop.step()
    assert outcome.waiting.startswith("busy: trainer-pod:3 is at train")
    assert loop.world.calls == []


def test_a_failed_action_releases_the_lock_and_raises(tmp_path: Path) -> None:
    loop = lifecycle(tmp_path, platform=RecordingPlatform(fail_on="start_shadow"))
    with pytest.raises(RuntimeError, match="kubectl refused start_shadow"):
        loop.step()
    state = loop.store.read()
    assert state.phase is Phase.CHALLENGER and state.intent is None  # retried next step
    loop.platform.fail_on = None
    assert loop.step().state.phase is Phase.AWAITING_APPROVAL


def test_pause_resume_reject_and_misuse(tmp_path: Path) -> None:
    loop = lifecycle(tmp_path, ScriptedWorld(shadow=[]))
    loop.pause("quarter-end freeze")
    assert loop.step().waiting == "paused: quarter-end freeze"
    assert loop.world.calls == []
    loop.resume("freeze over")
    noted = loop.store.read().history[-2:]
    assert [(t.source, t.target, t.reason) for t in noted] == [
        (Phase.IDLE, Phase.IDLE, "paused: quarter-end freeze"),
        (Phase.IDLE, Phase.IDLE, "resumed: freeze over")]
    assert loop.step().state.phase is Phase.SHADOW  # inconclusive: waits for traffic
    with pytest.raises(LifecycleError, match="nothing awaits approval: the lifecycle is shadow"):
        loop.approve("too early")
    rejected = loop.reject("the business changed its mind")
    assert rejected.phase is Phase.REJECTED and loop.platform.edits[-1] == "stop_shadow"
    with pytest.raises(LifecycleError, match="no challenger to reject"):
        loop.reject("again")


def test_the_file_store_refuses_a_stale_write(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    read = store.read()
    store.write(read)
    with pytest.raises(Conflict, match="generation 1, not 0"):
        store.write(read)


def test_each_canary_step_is_judged_only_on_its_own_traffic(tmp_path: Path) -> None:
    """With canary.min_minutes, a step just started is not judged (the analysis window still
    holds the step before's traffic): the loop waits, and judges once the step has served."""
    loop = lifecycle(tmp_path, canary={"min_minutes": 10})
    first = loop.step()
    assert first.state.phase is Phase.CANARY and first.state.canary_step == 0
    assert "judged after 10 minutes at this step" in first.waiting
    assert not [c for c in loop.world.calls if c.startswith("judge_canary")]
    store = loop.store
    state = store.read()
    earlier = (datetime.now(UTC) - timedelta(minutes=11)).isoformat(timespec="seconds")
    store.write(state.model_copy(update={"entered_at": earlier}))
    second = loop.step()
    assert second.state.canary_step == 1 and loop.platform.edits[-1] == "step_canary 25"
    assert "judged after 10 minutes" in second.waiting  # the new step waits again


def test_a_paused_lifecycle_finishes_the_interrupted_action_and_goes_no_further(
        tmp_path: Path) -> None:
    loop = died_moving_the_canary_to_25(tmp_path, paused=True, paused_reason="freeze")
    outcome = loop.step()
    assert outcome.moved == ["canary -> canary (resumed)"]
    assert outcome.waiting == "paused: freeze"
    assert loop.platform.edits == ["step_canary 25"]  # finished, not continued


@pytest.mark.integration
def test_the_configmap_store_creates_then_writes_only_over_what_it_read(cluster: Path) -> None:
    """Against the stand-in API server with the real kubectl's JSON patch (its ``test``
    operation is what makes the write conditional)."""
    import json

    from rollout import kubectl as k
    from rollout.config import CanaryConfig
    from rollout.lifecycle.state import ConfigMapStateStore

    config = CanaryConfig()
    config.kubernetes.kubectl = str(cluster.parent / "kubectl")
    store = ConfigMapStateStore(k.Kubectl(config.kubernetes), "churn-lifecycle")
    assert store.read().generation == 0  # none yet: a fresh state
    first = store.write(store.read().moved(Phase.RETRAINING, "drift", cycle=1))
    assert first.generation == 1 and store.read().phase is Phase.RETRAINING
    stale = store.read()
    store.write(stale.moved(Phase.CHALLENGER, "gated"))
    with pytest.raises(Conflict, match="generation 1, now 2"):
        store.write(stale.moved(Phase.REJECTED, "a second step, on what it read before"))
    assert store.read().phase is Phase.CHALLENGER
    # Any other refusal is an error to see, not "busy".
    (cluster / "forbidden.json").write_text(json.dumps(["patch"]))
    with pytest.raises(k.KubectlError, match="Forbidden"):
        store.write(store.read().moved(Phase.SHADOW, "start"))


@pytest.mark.integration
def test_the_configmap_store_writes_a_state_larger_than_one_argument_may_be(
        cluster: Path) -> None:
    """Linux caps one command-line argument at 128 KiB: a state sent as `kubectl patch -p`
    failed after a few cycles of judgements. The patch goes in a file."""
    from rollout import kubectl as k
    from rollout.config import CanaryConfig
    from rollout.lifecycle.state import ConfigMapStateStore, Transition

    config = CanaryConfig()
    config.kubernetes.kubectl = str(cluster.parent / "kubectl")
    store = ConfigMapStateStore(k.Kubectl(config.kubernetes), "churn-lifecycle-big")
    first = store.write(store.read().moved(Phase.RETRAINING, "drift", cycle=1))
    table = {"checks": [{"name": f"check {i}", "effect": i / 3, "interval": [0.1, 0.2]}
                        for i in range(60)]}
    history = [Transition(at=stamp(), source=Phase.SHADOW, target=Phase.SHADOW,
                          reason=f"look {i}", evidence={"judgement": table})
               for i in range(40)]
    big = first.model_copy(update={"history": history})
    assert len(big.model_dump_json(by_alias=True)) > 128 * 1024
    store.write(big)
    read = store.read()
    assert read.generation == 2 and [t.reason for t in read.history] == [
        f"look {i}" for i in range(40)]
    assert read.history[-1].evidence == {"judgement": table}
