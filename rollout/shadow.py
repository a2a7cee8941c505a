"""`churn shadow start|stop|status` against a cluster: stable's pods load a second model, the
*shadow*, which scores every batch beside the champion and never answers (service/shadow.py).

The shadow is named by ``CHURN_SHADOW_MODEL_TAG`` in stable's pods: a key of the same model
ConfigMap the champion's tag lives in (empty = off), so the drift and retrain jobs, which read
that ConfigMap too, can tell which challenger is being shadowed. Starting or stopping writes
the key and restarts stable's pods (one rolling restart: no answer changes, the champion stays
the same model); a stable whose env var is a literal value gets the env var set instead.
Nothing a customer sees changes. Every call is a kubectl argument list (``rollout.kubectl``),
shown by ``--dry-run``; every decision is recorded as annotations on stable
(``churn-serve/shadow-decision``, ``-reason``, ``-updated``) and as a JSON line in the decision
log, like the canary's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rollout import kubectl as k
from rollout import plan
from rollout.config import KubernetesSettings

SHADOW_ENV = plan.SHADOW_ENV
SUBJECT = "shadow"
DECISION = f"{k.PREFIX}{SUBJECT}-decision"
REASON = f"{k.PREFIX}{SUBJECT}-reason"
UPDATED = f"{k.PREFIX}{SUBJECT}-updated"

log = logging.getLogger("churn.shadow")


def read_shadow(deployment: dict, settings: KubernetesSettings,
                configmap_value: Callable[[str, str], str | None]) -> plan.ModelSource:
    """Where stable's pods read the shadow's tag, and its value (None or "": off)."""
    shadow_settings = settings.model_copy(update={"model_env": SHADOW_ENV})
    return plan.read_workload(deployment, shadow_settings, configmap_value).model


def start_plan(settings: KubernetesSettings, stable: plan.Workload, shadow: plan.ModelSource,
               model: str, at: str) -> list[k.Call]:
    """Stable's pods load ``model`` as their shadow: write it where they read it, restart
    them, record why, wait for them."""
    if not model.strip():
        raise plan.PlanError("name the shadow: --model name:version")
    if stable.ready < 1:
        raise plan.PlanError(f"deployment {stable.name} has no ready pod to run a shadow in")
    replaced = f" (replacing shadow {shadow.tag})" if shadow.tag else ""
    same = " (the champion itself: an A/A check of the judge)" if model == stable.model.tag \
        else ""
    reason = f"shadowing model {model} beside champion {stable.model.tag}{same}{replaced}"
    return [*_write(settings, stable, shadow, model, at),
            k.annotate(stable.name, k.decision_annotations("started", reason, at=at,
                                                           subject=SUBJECT)),
            k.rollout_status(stable.name, settings.rollout_timeout)]


def stop_plan(settings: KubernetesSettings, stable: plan.Workload, shadow: plan.ModelSource,
              reason: str, at: str) -> list[k.Call]:
    """Stable's pods drop their shadow; why is recorded."""
    if not shadow.tag:
        raise plan.PlanError(f"deployment {stable.name} runs no shadow")
    return [*_write(settings, stable, shadow, "", at),
            k.annotate(stable.name, k.decision_annotations(
                "stopped", f"{reason} (was {shadow.tag})", at=at, subject=SUBJECT)),
            k.rollout_status(stable.name, settings.rollout_timeout)]


def _write(settings: KubernetesSettings, stable: plan.Workload, shadow: plan.ModelSource,
           value: str, at: str) -> list[k.Call]:
    if shadow.configmap:
        return [k.patch_configmap(shadow.configmap, shadow.key or SHADOW_ENV, value),
                k.restart(stable.name, at)]
    return [k.set_env(stable.name, settings.container, SHADOW_ENV, value)]


@dataclass
class Shadow:
    """The shadow commands on one cluster (stable's Deployment and its ConfigMap)."""

    settings: KubernetesSettings
    kubectl: k.Kubectl
    decision_log: Path
    echo: Callable[[str], None] = lambda line: None

    def read(self) -> tuple[plan.Workload, plan.ModelSource]:
        def configmap_value(name: str, key: str) -> str | None:
            return self.kubectl.read("configmap", name).get("data", {}).get(key)

        deployment = self.kubectl.read("deployment", self.settings.stable)
        return (plan.read_workload(deployment, self.settings, configmap_value),
                read_shadow(deployment, self.settings, configmap_value))

    def start(self, model: str) -> str:
        stable, shadow = self.read()
        self._run(start_plan(self.settings, stable, shadow, model, _now()))
        self._record("started", f"shadowing {model} beside {stable.model.tag}", model=model,
                     champion=stable.model.tag, replaced=shadow.tag or None)
        return f"{stable.name}'s pods score {model} beside {stable.model.tag}"

    def stop(self, reason: str) -> None:
        stable, shadow = self.read()
        self._run(stop_plan(self.settings, stable, shadow, reason, _now()))
        self._record("stopped", reason, model=shadow.tag, champion=stable.model.tag)

    def status(self) -> str:
        stable, shadow = self.read()
        lines = [f"stable  {stable.name:<20} {stable.serves}  ready {stable.ready}/"
                 f"{stable.replicas}",
                 f"shadow  {shadow.tag or 'none'}" + (
                     f" (read from configmap {shadow.configmap} key {shadow.key})"
                     if shadow.configmap else "")]
        notes = stable.annotations
        if DECISION in notes:
            lines.append(f"last decision: {notes[DECISION]} at {notes.get(UPDATED, '?')}: "
                         f"{notes.get(REASON, '')}")
        else:
            lines.append("last decision: none recorded")
        return "\n".join(lines)

    def _run(self, calls: list[k.Call]) -> None:
        for call in calls:
            self.kubectl.run(call)

    def _record(self, decision: str, reason: str, **facts: object) -> None:
        log.info("shadow %s: %s", decision, reason)
        if not self.kubectl.dry_run:
            k.append_decision(self.decision_log, {
                "at": _now(), "decision": decision, "reason": reason,
                "context": self.settings.context, "namespace": self.settings.namespace,
                "stable": self.settings.stable, **facts})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
