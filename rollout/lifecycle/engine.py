"""One lifecycle step: read the state, take the lock (an intent with a lease), act, record.

A step advances the lifecycle as far as it can without waiting: from idle through retraining
and the start of the shadow in one go, then one judgement per phase; it stops where the loop
must wait for traffic (shadow, canary), for a person (awaiting approval) or for a reason to
retrain (idle). Each transition is persisted before the next action begins, with its reason and
evidence, so a step killed at any point leaves either the previous state or an intent the next
step completes (``state`` explains the lock). The decisions themselves are pure functions of
the state and what the judges say (``advance``); what they change in the world goes through a
``Platform`` (the cluster's kubectl argument lists, or local servers).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from rollout.lifecycle.state import (
    Conflict,
    Intent,
    LifecycleConfig,
    LifecycleError,
    LifecycleState,
    Phase,
    StateStore,
    lease_expired,
    lease_until,
    owner_name,
    stamp,
    utc_now,
)

log = logging.getLogger("churn.lifecycle")
Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Judged:
    """What a judge said, and the evidence (its table) a transition records."""

    verdict: Verdict
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trained:
    """A retraining's outcome: the registered challenger (None if nothing was registered) and
    whether it passed the gate."""

    tag: str | None
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


class World(Protocol):
    """What the lifecycle asks of the rest of the system (monitoring, training, the judges)."""

    def retrain_recommended(self) -> Judged: ...

    def train_challenger(self, cycle: int, key: str) -> Trained: ...

    def reject_challenger(self, tag: str, reason: str) -> None: ...

    def promote_in_store(self, tag: str, reason: str) -> None: ...

    def judge_shadow(self, state: LifecycleState) -> Judged: ...

    def judge_canary(self, state: LifecycleState) -> Judged: ...


class Platform(Protocol):
    """What the lifecycle changes where the models serve. On a cluster: the same kubectl
    argument lists as `churn shadow` and `churn canary` (rollout.shadow, rollout.canary)."""

    def champion(self) -> str | None: ...

    def start_shadow(self, tag: str) -> None: ...

    def stop_shadow(self, reason: str) -> None: ...

    def start_canary(self, tag: str, weight: int) -> None: ...

    def step_canary(self, weight: int, reason: str) -> None: ...

    def abort_canary(self, reason: str) -> None: ...

    def promote_canary(self, reason: str) -> None: ...

    def record(self, state: LifecycleState) -> None: ...


@dataclass
class Outcome:
    """What one step did: the transitions it made and why it stopped."""

    state: LifecycleState
    moved: list[str] = field(default_factory=list)
    waiting: str = ""


class Lifecycle:
    """Runs steps of the state machine against a store, a world and a platform."""

    def __init__(self, config: LifecycleConfig, store: StateStore, world: World,
                 platform: Platform, steps: list[int],
                 on_change: Callable[[LifecycleState], None] = lambda state: None,
                 archive: Callable[[LifecycleState], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.world = world
        self.platform = platform
        self.steps = [s for s in steps if s < 100]  # 100 is the promotion, not a step
        self.on_change = on_change
        # Gets the state after each recorded transition (its newest, evidence whole): the
        # state itself keeps the evidence of the newest transitions only (EVIDENCE_KEPT).
        self.archive = archive
        self.owner = owner_name()

    # ------------------------------------------------------------------ persistence

    def _save(self, state: LifecycleState, transition: bool = True) -> LifecycleState:
        """Write ``state``; with ``transition`` (it ends in a new history record), archive it."""
        saved = self.store.write(state)
        self.on_change(saved)
        if transition and self.archive is not None:
            try:
                self.archive(saved)
            except Exception as exc:  # noqa: BLE001 - the transition stands; the log says so
                log.warning("could not archive the lifecycle transition: %s", exc)
        try:
            self.platform.record(saved)
        except Exception as exc:  # noqa: BLE001 - an annotation must not undo a transition
            log.warning("could not record the lifecycle state on the cluster: %s", exc)
        return saved

    def _claim(self, state: LifecycleState, action: str, **args: Any) -> LifecycleState:
        """Write our intent: the lock. Raises Conflict if another step wrote meanwhile."""
        intent = Intent(action=action, owner=self.owner, started_at=stamp(),
                        lease_until=lease_until(self.config.lease_minutes), args=args)
        return self.store.write(state.model_copy(update={"intent": intent}))

    def _renewing(self, state: LifecycleState) -> _Renewer:
        return _Renewer(self, state)

    # ------------------------------------------------------------------ commands

    def status(self) -> LifecycleState:
        return self.store.read()

    def step(self, now: datetime | None = None) -> Outcome:
        """Advance as far as possible without waiting. Never raises Conflict: a step that
        finds another at work does nothing and says so."""
        state = self.store.read()
        outcome = Outcome(state)
        intent = state.intent
        if intent is not None and not lease_expired(intent, now) and intent.owner != self.owner:
            outcome.waiting = (f"busy: {intent.owner} is at {intent.action} (since "
                               f"{intent.started_at}, lease until {intent.lease_until})")
            return outcome
        if state.paused and intent is None:
            outcome.waiting = f"paused: {state.paused_reason}"
            return outcome
        try:
            if intent is not None:  # a step died half-way: take its intent over, finish it
                log.warning("resuming %s left by %s (lease expired %s)", intent.action,
                            intent.owner, intent.lease_until)
                outcome.state = self._complete(self._claim(state, intent.action,
                                                           **intent.args), resumed=True)
                outcome.moved.append(f"{state.phase} -> {outcome.state.phase} (resumed)")
                if outcome.state.paused:  # finished what was started; no further while paused
                    outcome.waiting = f"paused: {outcome.state.paused_reason}"
                    return outcome
            while True:
                before = outcome.state.phase
                outcome.state, waiting = self._advance(outcome.state)
                if outcome.state.phase != before:
                    outcome.moved.append(f"{before} -> {outcome.state.phase}")
                if waiting:
                    outcome.waiting = waiting
                    return outcome
        except Conflict as exc:
            outcome.waiting = f"busy: {exc}"
            return outcome

    def _act(self, state: LifecycleState, action: str, reason: str,
             evidence: dict[str, Any] | None = None, **args: Any) -> LifecycleState:
        """Claim ``action`` (the lock, and what the next step resumes if this one dies), do it,
        record the transition it makes."""
        claimed = self._claim(state, action, reason=reason, evidence=evidence or {}, **args)
        try:
            return self._complete(claimed)
        except Exception:
            # It failed cleanly (kubectl refused, training could not read its data): release
            # the lock so the next step tries again at once rather than after the lease.
            current = self.store.read()
            if current.intent is not None and current.intent.owner == self.owner:
                self.store.write(current.model_copy(update={"intent": None}))
            raise

    def _complete(self, state: LifecycleState, resumed: bool = False) -> LifecycleState:
        """Do the claimed intent's action (each is idempotent) and save its transition."""
        intent = state.intent
        args, action = intent.args, intent.action
        reason = args.get("reason", action) + (" (resumed after an interrupted step)"
                                               if resumed else "")
        evidence = args.get("evidence", {})
        platform = self.platform
        if action == "retrain":
            return self._save(state.moved(Phase.RETRAINING, reason, evidence,
                                          cycle=args["cycle"],
                                          cycle_id=args.get("cycle_id", ""),
                                          champion=platform.champion(),
                                          challenger=None, canary_step=0))
        if action == "train":
            with self._renewing(state) as renewer:
                trained = self.world.train_challenger(state.cycle, state.cycle_key)
            state = renewer.state
            if trained.tag is None or not trained.passed:
                if trained.tag:
                    self.world.reject_challenger(trained.tag, trained.reason)
                return self._save(state.moved(Phase.REJECTED, trained.reason,
                                              trained.evidence, challenger=trained.tag))
            return self._save(state.moved(Phase.CHALLENGER, trained.reason, trained.evidence,
                                          challenger=trained.tag))
        if action == "start_shadow":
            platform.start_shadow(state.challenger)
            return self._save(state.moved(Phase.SHADOW, reason, evidence))
        if action == "start_canary":
            platform.stop_shadow(reason)
            platform.start_canary(state.challenger, self.steps[0])
            return self._save(state.moved(Phase.CANARY, reason, evidence, canary_step=0))
        if action == "step_canary":
            platform.step_canary(self.steps[args["step"]], reason)
            return self._save(state.moved(Phase.CANARY, reason, evidence,
                                          canary_step=args["step"]))
        if action == "await_approval":
            return self._save(state.moved(Phase.AWAITING_APPROVAL, reason, evidence))
        if action == "promote":
            platform.promote_canary(reason)
            self.world.promote_in_store(state.challenger, reason)
            return self._save(state.moved(Phase.PROMOTED, reason, evidence,
                                          champion=state.challenger))
        if action == "reject":
            undo = args.get("undo")
            if undo == "shadow":
                platform.stop_shadow(reason)
            elif undo == "canary":
                platform.abort_canary(reason)
            if state.challenger:
                self.world.reject_challenger(state.challenger, reason)
            return self._save(state.moved(Phase.REJECTED, reason, evidence))
        if action == "end_cycle":
            return self._save(state.moved(Phase.IDLE, reason, evidence))
        raise LifecycleError(f"unknown action {action!r} in the lifecycle state")

    def _advance(self, state: LifecycleState) -> tuple[LifecycleState, str]:
        """The next action (and its transition), or why the loop waits."""
        phase = state.phase
        if phase is Phase.IDLE:
            cooling = self._cooldown(state)
            if cooling:
                return state, cooling
            judged = self.world.retrain_recommended()
            if judged.verdict != "fail":  # "fail": the current champion needs replacing
                return state, f"idle: {judged.summary}"
            return self._act(state, "retrain", f"retraining recommended: {judged.summary}",
                             judged.evidence, cycle=state.cycle + 1,
                             cycle_id=secrets.token_hex(4)), ""
        if phase is Phase.RETRAINING:
            return self._act(state, "train", "train a challenger"), ""
        if phase is Phase.CHALLENGER:
            return self._act(state, "start_shadow", f"stable's pods score {state.challenger} "
                             f"beside {state.champion}: no answer changes"), ""
        if phase is Phase.SHADOW:
            return self._judge_shadow(state)
        if phase is Phase.CANARY:
            return self._judge_canary(state)
        if phase is Phase.AWAITING_APPROVAL:
            return state, (f"awaiting approval: {state.challenger} passed the shadow and every "
                           "canary step; `churn lifecycle approve` promotes it, `churn "
                           "lifecycle reject` takes it out")
        if phase in (Phase.PROMOTED, Phase.REJECTED):
            ended = self._act(state, "end_cycle", f"cycle {state.cycle} ended {phase.value}")
            return ended, f"idle: cycle {state.cycle} ended {phase.value}"
        raise LifecycleError(f"unknown phase {phase}")

    def _cooldown(self, state: LifecycleState) -> str:
        """Why a new cycle must wait: the last one ended rejected less than cooldown_hours
        ago."""
        ended = [t for t in state.history if t.target is Phase.REJECTED]
        if not ended:
            return ""
        since = utc_now() - datetime.fromisoformat(ended[-1].at)
        wait = timedelta(hours=self.config.cooldown_hours) - since
        if wait <= timedelta(0):
            return ""
        return (f"idle: cooling down after a rejected challenger ({ended[-1].reason[:120]}); "
                f"the next retraining may start in {wait.total_seconds() / 3600:.1f} h")

    def _judge_shadow(self, state: LifecycleState) -> tuple[LifecycleState, str]:
        elapsed = utc_now() - datetime.fromisoformat(state.entered_at)
        if elapsed < timedelta(minutes=self.config.shadow.min_minutes):
            return state, (f"shadow: judged after {self.config.shadow.min_minutes:g} minutes "
                           f"of traffic ({elapsed.total_seconds() / 60:.0f} so far)")
        judged = self.world.judge_shadow(state)
        evidence = {"judgement": judged.evidence, "look": state.looks + 1}
        if judged.verdict == "fail":
            return self._act(state, "reject", f"shadow judged fail: {judged.summary}", evidence,
                             undo="shadow"), ""
        if judged.verdict == "pass":
            return self._act(state, "start_canary", f"shadow passed: {judged.summary}; "
                             f"canary at {self.steps[0]}%", evidence), ""
        if elapsed > timedelta(hours=self.config.shadow.max_hours):
            return self._act(state, "reject", f"shadow still inconclusive after "
                             f"{self.config.shadow.max_hours:g} h: {judged.summary}", evidence,
                             undo="shadow"), ""
        state = self._save(state.model_copy(update={"looks": state.looks + 1}), transition=False)
        return state, f"shadow: inconclusive ({judged.summary})"

    def _judge_canary(self, state: LifecycleState) -> tuple[LifecycleState, str]:
        weight = self.steps[state.canary_step]
        elapsed = utc_now() - datetime.fromisoformat(state.entered_at)
        if elapsed < timedelta(minutes=self.config.canary.min_minutes):
            return state, (f"canary at {weight}%: judged after {self.config.canary.min_minutes:g}"
                           f" minutes at this step ({elapsed.total_seconds() / 60:.0f} so far)")
        judged = self.world.judge_canary(state)
        evidence = {"judgement": judged.evidence, "step": weight, "look": state.looks + 1}
        if judged.verdict == "fail":
            return self._act(state, "reject", f"canary judged fail at {weight}%: "
                             f"{judged.summary}", evidence, undo="canary"), ""
        if judged.verdict == "pass":
            if state.canary_step + 1 < len(self.steps):
                following = state.canary_step + 1
                return self._act(state, "step_canary", f"canary passed at {weight}%: "
                                 f"{judged.summary}; now {self.steps[following]}%", evidence,
                                 step=following), ""
            if not self.config.auto_promote:
                return self._act(state, "await_approval", f"canary passed at every step "
                                 f"({weight}% last): {judged.summary}", evidence), ""
            return self._act(state, "promote", "auto_promote: the shadow and every canary "
                             "step passed", evidence), ""
        if state.looks + 1 >= self.config.canary.max_looks_per_step:
            return self._act(state, "reject", f"canary at {weight}% still inconclusive after "
                             f"{state.looks + 1} analyses: {judged.summary}", evidence,
                             undo="canary"), ""
        state = self._save(state.model_copy(update={"looks": state.looks + 1}), transition=False)
        return state, f"canary at {weight}%: inconclusive ({judged.summary})"

    # ------------------------------------------------------------------ a person decides

    def approve(self, reason: str) -> LifecycleState:
        state = self.store.read()
        if state.phase is not Phase.AWAITING_APPROVAL:
            raise LifecycleError(f"nothing awaits approval: the lifecycle is {state.phase}"
                                 + (f" ({state.challenger})" if state.challenger else ""))
        return self._act(state, "promote", f"approved: {reason}",
                         {"approved_by": self.owner})

    def reject(self, reason: str) -> LifecycleState:
        state = self.store.read()
        undo = {Phase.SHADOW: "shadow", Phase.CANARY: "canary",
                Phase.AWAITING_APPROVAL: "canary", Phase.CHALLENGER: None}
        if state.phase not in undo:
            raise LifecycleError(f"no challenger to reject: the lifecycle is {state.phase}")
        return self._act(state, "reject", f"rejected by hand: {reason}",
                         {"rejected_by": self.owner}, undo=undo[state.phase])

    def pause(self, reason: str) -> LifecycleState:
        state = self.store.read()
        return self._save(state.noted(f"paused: {reason}", paused=True, paused_reason=reason))

    def resume(self, reason: str) -> LifecycleState:
        state = self.store.read()
        return self._save(state.noted(f"resumed: {reason}", paused=False, paused_reason=""))


class _Renewer:
    """Keeps an intent's lease alive while a long action (training) runs: a step that is
    working is never taken for dead."""

    def __init__(self, lifecycle: Lifecycle, state: LifecycleState) -> None:
        self.lifecycle = lifecycle
        self.state = state
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lifecycle-lease", daemon=True)

    def __enter__(self) -> _Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        period = self.lifecycle.config.lease_minutes * 60 / 3
        while not self._stop.wait(period):
            with self._lock:
                intent = self.state.intent.model_copy(update={
                    "lease_until": lease_until(self.lifecycle.config.lease_minutes)})
                try:
                    self.state = self.lifecycle.store.write(
                        self.state.model_copy(update={"intent": intent}))
                except Conflict:  # someone took it over: our result will not be saved
                    log.error("the lifecycle lease was taken over while this step worked")
                    return
