"""What the lifecycle persists, where, and how two steps never both act.

The state is one small JSON document: the phase, the challenger and champion, the canary step,
the history of transitions (each with its reason and evidence), and an *intent*: an action a
step has begun and not yet confirmed (a restart of stable's pods, a canary step, a training
run). It lives where every pod and job can read it: a ConfigMap (``churn-lifecycle``) in the
cluster, a file locally.

**One step at a time.** Every write is a compare-and-swap on ``generation``: a step reads the
state, and its write succeeds only if nobody wrote in between (a JSON-patch ``test`` on the
ConfigMap, a lock-protected check on the file). A step first writes its intent with an owner and
a lease; a second step that finds a live lease held by another does nothing ("busy"). A step
killed half-way leaves its intent behind: once its lease has expired, the next step takes the
intent over and completes it (every action is idempotent: writing a tag that is already there
changes nothing) or rolls the phase back, so the lifecycle is never left between states.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from kernel.yaml_model import JobConfig
from rollout.lifecycle import CONFIG_NAME


class Phase(StrEnum):
    IDLE = "idle"
    RETRAINING = "retraining"
    CHALLENGER = "challenger"
    SHADOW = "shadow"
    CANARY = "canary"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    REJECTED = "rejected"


# The number each phase is pushed as (churn_lifecycle_state), in the order the loop runs.
PHASE_CODES = {phase: code for code, phase in enumerate(Phase)}
# Transitions whose evidence the state keeps: the last three cycles or so (7-8 each).
EVIDENCE_KEPT = 24


class LifecycleError(RuntimeError):
    """The lifecycle cannot do what it was asked (the message says what to do)."""


class Conflict(LifecycleError):
    """Another step wrote the state since it was read: this step acts not."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime | None = None) -> str:
    return (moment or utc_now()).isoformat(timespec="seconds")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transition(_Section):
    """One move of the state machine, with why, and the evidence it rests on; or a decision
    that kept the phase (pause, resume: ``from`` and ``to`` are the same)."""

    at: str
    source: Phase = Field(alias="from")
    target: Phase = Field(alias="to")
    reason: str
    evidence: dict[str, Any] = {}
    evidence_dropped: bool = False  # older than the EVIDENCE_KEPT newest: reason kept only

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Intent(_Section):
    """An action a step has begun: what, for which phase, by whom, until when it is theirs."""

    action: str
    owner: str
    lease_until: str
    started_at: str
    args: dict[str, Any] = {}


class LifecycleState(_Section):
    phase: Phase = Phase.IDLE
    cycle: int = 0  # one cycle per retraining: idle -> ... -> promoted / rejected
    # Random per cycle: the store label that ties a challenger to its cycle is "<cycle>-<id>",
    # so a state reset (cycle numbers from 1 again) never adopts an older loop's model.
    cycle_id: str = ""
    champion: str | None = None
    challenger: str | None = None
    canary_step: int = 0  # index into the canary's steps
    looks: int = 0  # analyses made in this phase (and canary step)
    entered_at: str = Field(default_factory=stamp)  # when this phase (or step) began
    paused: bool = False
    paused_reason: str = ""
    intent: Intent | None = None
    generation: int = 0  # every write adds one: the compare-and-swap token
    history: list[Transition] = []

    @property
    def cycle_key(self) -> str:
        return f"{self.cycle}-{self.cycle_id}" if self.cycle_id else str(self.cycle)

    def moved(self, target: Phase, reason: str, evidence: dict[str, Any] | None = None,
              **changes: Any) -> LifecycleState:
        """The state after a transition to ``target`` (recorded), with ``changes``."""
        now = stamp()
        record = Transition(at=now, source=self.phase, target=target, reason=reason,
                            evidence=evidence or {})
        return self.model_copy(update={
            "phase": target, "entered_at": now, "looks": 0, "intent": None,
            "history": _kept([*self.history, record]), **changes})

    def noted(self, reason: str, **changes: Any) -> LifecycleState:
        """The state with ``changes`` and a record that keeps the phase (its clock and looks
        too): a pause or a resume, in the history with why."""
        record = Transition(at=stamp(), source=self.phase, target=self.phase, reason=reason,
                            evidence=dict(changes))
        return self.model_copy(update={"history": _kept([*self.history, record]), **changes})


def _kept(history: list[Transition]) -> list[Transition]:
    """Every transition, with the evidence (a judgement's table: 5-7 kB) of the EVIDENCE_KEPT
    newest only. A cycle records 15-20 kB of evidence, and the state must stay well inside a
    ConfigMap (1 MiB) and what kubectl can send. ``TransitionArchive`` keeps them all."""
    old = len(history) - EVIDENCE_KEPT
    return [t.model_copy(update={"evidence": {}, "evidence_dropped": True})
            if i < old and t.evidence else t for i, t in enumerate(history)]


class TransitionArchive:
    """Every transition with its evidence whole, one JSON line each, appended and synced (on a
    cluster, in the reports volume): the full record the state trims (``_kept``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, state: LifecycleState) -> None:
        newest = state.history[-1]
        line = {"cycle": state.cycle_key, "champion": state.champion,
                "challenger": state.challenger, **newest.model_dump(mode="json", by_alias=True)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.write(orjson.dumps(line) + b"\n")
            file.flush()
            os.fsync(file.fileno())


class StateStore(Protocol):
    """Where the state lives. ``write`` succeeds only if ``state.generation`` is what the store
    holds (the store then holds ``generation + 1``); else it raises Conflict."""

    where: str

    def read(self) -> LifecycleState: ...

    def write(self, state: LifecycleState) -> LifecycleState: ...


class FileStateStore:
    """A JSON file, written whole under an exclusive lock (``flock`` on a lock file beside it)
    after checking the generation: what a laptop or a single job needs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> LifecycleState:
        if not self.path.exists():
            return LifecycleState()
        return LifecycleState.model_validate_json(self.path.read_text())

    def read(self) -> LifecycleState:
        with self._locked():
            return self._load()

    def write(self, state: LifecycleState) -> LifecycleState:
        with self._locked():
            held = self._load().generation
            if held != state.generation:
                raise Conflict(f"{self.path} is at generation {held}, not {state.generation}: "
                               "another step wrote it")
            new = state.model_copy(update={"generation": held + 1})
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(new.model_dump_json(by_alias=True, indent=1))
            os.replace(temporary, self.path)  # a reader sees the old or the new file, whole
            return new


def owner_name() -> str:
    """Who holds an intent: the pod (``POD_NAME``) or host, and the process."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}:{os.getpid()}"


def lease_expired(intent: Intent, now: datetime | None = None) -> bool:
    return datetime.fromisoformat(intent.lease_until) <= (now or utc_now())


def lease_until(minutes: float, now: datetime | None = None) -> str:
    return stamp((now or utc_now()) + timedelta(minutes=minutes))


class ShadowSettings(_Section):
    min_minutes: float = Field(
        15, ge=0, description="judge the shadow only after this long (a window of traffic: "
        "hours of the day differ); earlier looks are inconclusive")
    max_hours: float = Field(
        24, gt=0, description="a shadow still undecided after this long is rejected: a "
        "challenger that cannot be judged is not promoted")


class CanarySettings(_Section):
    min_minutes: float = Field(
        10, ge=0, description="judge a canary step only after it has served this long (the "
        "canary analysis' window, configs/canary.yaml): each step judged on its own traffic, "
        "never on the step before's")
    max_looks_per_step: int = Field(
        4, ge=1, description="analyses of one canary step that may be inconclusive before the "
        "challenger is rejected (a step every 15 minutes: an hour)")


class LifecycleConfig(JobConfig):
    """``configs/lifecycle.yaml``: how the loop runs. The canary's steps and thresholds are
    configs/canary.yaml's, the judge's configs/judge.yaml's, training's configs/train.yaml's."""

    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    CONFIG_KIND: ClassVar[str] = "lifecycle config"
    model_config = ConfigDict(extra="forbid")

    auto_promote: bool = Field(
        False, description="promote after the last canary step without a person's approval; "
        "false: stop at awaiting_approval and alert (ChurnChallengerAwaitingApproval)")
    training_data: str | None = Field(
        None, description="table the challenger is trained on (CHURN_TRAINING_DATA wins: a URL "
        "with a password belongs in the environment)")
    gate: Literal["non_inferior", "better"] = Field(
        "non_inferior", description="non_inferior: the challenger's score on its test rows may "
        "be at most non_inferiority_margin below the champion's there (shadow and canary judge "
        "it next); better: it must beat the champion by promotion_margin, as `churn train` does")
    non_inferiority_margin: float = Field(
        0.01, ge=0, lt=0.1, description="how far below the champion's test score a challenger "
        "may be: a model retrained on another sample of the same population differs by more "
        "than train.yaml's promotion_margin (0.002) by chance (measured: -0.0021 on 4,000 "
        "rows); 0.01 is the shadow judge's ROC-AUC tolerance (configs/judge.yaml)")
    cooldown_hours: float = Field(
        24, ge=0, description="after a rejected challenger, the next retraining waits this "
        "long: the same data would likely give the same challenger, and each retraining costs")
    lease_minutes: float = Field(
        30, gt=0, description="an intent not renewed for this long belongs to a dead step and "
        "is taken over; a step renews it while it works (training included)")
    state: Literal["file", "configmap"] = Field(
        "file", description="where the state lives: a file under $CHURN_HOME/lifecycle, or the "
        "ConfigMap configmap_name (in the cluster: every job and pod can read it)")
    configmap_name: str = "churn-lifecycle"
    shadow: ShadowSettings = ShadowSettings()
    canary: CanarySettings = CanarySettings()


class ConfigMapStateStore:
    """The state in a ConfigMap (keys ``state``: the JSON, ``generation``: its counter),
    written with a JSON patch whose ``test`` of the generation makes the write conditional: the
    API server applies it whole or refuses it. Created on first use, not by `kubectl apply -k`,
    which would reset it on every apply."""

    def __init__(self, kubectl: Any, name: str) -> None:  # rollout.kubectl.Kubectl
        self.kubectl = kubectl
        self.name = name
        namespace = kubectl.settings.namespace
        self.where = f"configmap/{name}" + (f" in {namespace}" if namespace else "")

    def read(self) -> LifecycleState:
        from rollout.kubectl import KubectlError

        try:
            found = self.kubectl.read("configmap", self.name)
        except KubectlError as exc:
            if "NotFound" not in str(exc) and "not found" not in str(exc):
                raise
            return LifecycleState()
        data = found.get("data") or {}
        if not data.get("state"):
            return LifecycleState()
        state = LifecycleState.model_validate_json(data["state"])
        return state.model_copy(update={"generation": int(data.get("generation", "0"))})

    def write(self, state: LifecycleState) -> LifecycleState:
        from rollout import kubectl as k

        new = state.model_copy(update={"generation": state.generation + 1})
        text = new.model_dump_json(by_alias=True)
        if state.generation == 0 and not self._exists():
            try:
                self.kubectl.run(k.create_configmap(self.name, {"state": text,
                                                                "generation": "1"}))
            except k.KubectlError as exc:
                if "AlreadyExists" not in str(exc) and "already exists" not in str(exc):
                    raise
                raise Conflict(f"{self.where} was created by another step meanwhile") from exc
            return new
        patch = [{"op": "test", "path": "/data/generation", "value": str(state.generation)},
                 {"op": "replace", "path": "/data/generation", "value": str(new.generation)},
                 {"op": "replace", "path": "/data/state", "value": text}]
        try:
            self.kubectl.run(k.json_patch_configmap(self.name, patch,
                                                    f"lifecycle state -> {new.phase}"))
        except k.KubectlError as exc:
            # Only a changed generation is another step's write; anything else (RBAC, the
            # network, the object's size) is an error to see, not a "busy".
            held = self.read().generation
            if held == state.generation:
                raise
            raise Conflict(f"{self.where} changed since it was read (generation "
                           f"{state.generation}, now {held}): another step wrote it") from exc
        return new

    def _exists(self) -> bool:
        from rollout.kubectl import KubectlError

        try:
            self.kubectl.read("configmap", self.name)
        except KubectlError as exc:
            if "NotFound" not in str(exc) and "not found" not in str(exc):
                raise
            return False
        return True
