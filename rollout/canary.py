"""The canary commands against a cluster: read both Deployments, make a plan's kubectl calls,
wait for them, and record every decision with its reasons twice: as annotations on the canary
Deployment (what the cluster shows, ``churn canary status``) and as a JSON line in the local
decision log (what the person or CI job that ran it keeps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from rollout import kubectl as k
from rollout import plan
from rollout.config import CanaryConfig, KubernetesSettings, duration_seconds
from rollout.measure import EXIT_CODES, Report

log = logging.getLogger("churn.canary")


class CanaryError(RuntimeError):
    """A canary command could not do what it was asked (the message says what to do)."""


class PromotionFailed(CanaryError):
    """Stable did not roll out the canary's model or image; it was rolled back."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Canary:
    config: CanaryConfig
    kubectl: k.Kubectl
    decision_log: Path
    echo: Callable[[str], None] = lambda line: None

    @property
    def settings(self) -> KubernetesSettings:
        return self.config.kubernetes

    # ------------------------------------------------------------------ reading

    def read(self) -> tuple[plan.Workload, plan.Workload]:
        """(stable, canary) as the cluster has them."""
        settings = self.settings

        def configmap_value(name: str, key: str) -> str | None:
            return self.kubectl.read("configmap", name).get("data", {}).get(key)

        stable, canary = (plan.read_workload(self.kubectl.read("deployment", name), settings,
                                             configmap_value)
                          for name in (settings.stable, settings.canary))
        return stable, canary

    def status(self) -> str:
        stable, canary = self.read()
        lines = []
        for role, workload in (("stable", stable), ("canary", canary)):
            lines.append(f"{role:<7} {workload.name:<20} {workload.serves}  "
                         f"ready {workload.ready}/{workload.replicas}")
        lines.append(f"traffic: canary {canary.ready} of {canary.ready + stable.ready} ready "
                     f"pods = {plan.share(canary.ready, stable.ready):.0%}")
        notes = canary.annotations
        if k.DECISION in notes:
            lines.append(f"last decision: {notes[k.DECISION]} at {notes.get(k.UPDATED, '?')} "
                         f"(step {notes.get(k.STEP, '?')}): {notes.get(k.REASON, '')}")
        else:
            lines.append("last decision: none recorded")
        return "\n".join(lines)

    # ------------------------------------------------------------------ acting

    def execute(self, calls: list[k.Call]) -> None:
        for call in calls:
            self.kubectl.run(call)

    def record(self, decision: str, reason: str, **facts: object) -> None:
        """Append the decision to the local log (the annotations are part of each plan)."""
        entry = {"at": now(), "decision": decision, "reason": reason,
                 "dry_run": self.kubectl.dry_run, "context": self.settings.context,
                 "namespace": self.settings.namespace, "canary": self.settings.canary, **facts}
        log.info("canary %s: %s", decision, reason)
        if not self.kubectl.dry_run:
            k.append_decision(self.decision_log, entry)

    def start(self, model: str | None, image: str | None, weight: int | None = None) -> str:
        """Point the canary at the model/image and scale it to the first step; returns the
        step's label. Raises CanaryError while another canary runs."""
        stable, canary = self.read()
        if canary.replicas > 0:
            raise CanaryError(f"a canary is already running ({canary.serves}, "
                              f"{canary.replicas} replicas): promote or abort it first")
        weight = weight or self.config.run.steps[0]
        calls = plan.start_plan(self.settings, stable, model=model, image=image, weight=weight,
                                at=now())
        self.execute(calls)
        label = plan.step_label(weight, stable.ready)
        self.record("started", plan.start_reason(stable, model or stable.model.tag or "",
                                                 image or stable.image), step=label)
        return label

    def step(self, weight: int, reason: str) -> str:
        """Resize the canary for ``weight``% (sized from stable's ready pods now)."""
        stable, _ = self.read()
        self.execute(plan.step_plan(self.settings, stable, weight, reason, now()))
        label = plan.step_label(weight, stable.ready)
        self.record("step", reason, step=label)
        return label

    def abort(self, reason: str) -> None:
        self.execute(plan.abort_plan(self.settings, reason, now()))
        self.record("aborted", reason)

    def promote(self, reason: str, canary_as: plan.Workload | None = None) -> str:
        """Stable takes the canary's model/image, then the canary leaves. If stable does not
        roll out, it is rolled back, the canary scaled to zero, and PromotionFailed raised.
        ``canary_as`` stands in for the canary a dry run never started."""
        stable, canary = self.read()
        canary = canary_as or canary
        promotion = plan.promote_plan(self.settings, stable, canary, reason, now())
        made: list[k.Call] = []
        try:
            for call in promotion.change:
                self.kubectl.run(call)
                made.append(call)
        except k.KubectlError as exc:
            # An edit kubectl refused was not made; only what was made is taken back.
            problems = [str(exc)]
            for back in promotion.rollback(made):
                try:  # every step of the way back is tried, even if one fails
                    self.kubectl.run(back)
                except k.KubectlError as undo_error:
                    problems.append(f"rollback step failed: {undo_error}")
            self.record("promote-failed", "; ".join(problems), tried=promotion.summary)
            raise PromotionFailed(
                f"promotion failed, stable rolled back and canary scaled to zero: {problems[0]}"
                + (f" ({len(problems) - 1} rollback step(s) failed too: see the decision log)"
                   if len(problems) > 1 else "")) from exc
        self.execute(promotion.finish)
        self.record("promoted", f"{reason}; {promotion.summary}")
        return promotion.summary

    def annotate_analysis(self, report: Report, step: str) -> None:
        self.kubectl.run(k.annotate(self.settings.canary, k.decision_annotations(
            f"analysis-{report.verdict}", report.summary(), step, now())))
        self.record(f"analysis-{report.verdict}", report.summary(), step=step,
                    analysis=report.to_dict())

    def run(self, model: str | None, image: str | None, analyze: Callable[[int], Report],
            sleep: Callable[[float], None], show: Callable[[Report], None]) -> int:
        """Start, then for each step: pause, analyse (again while inconclusive, up to the
        configured retries), abort on a fail or a lasting inconclusive, else the next step;
        the 100% step promotes. Returns the exit code (0 promoted or held, 1 failed, 3
        inconclusive)."""
        steps = self.config.run.steps
        pause = duration_seconds(self.config.run.pause)
        stable, canary = self.read()
        # What the canary will serve: a dry run promotes this, since it never starts one.
        started = replace(canary, replicas=1, image=image or stable.image,
                          model=plan.ModelSource(model or stable.model.tag))
        label = self.start(model, image, steps[0])
        for index, weight in enumerate(steps):
            if weight == 100:
                summary = self.promote(
                    f"analysis passed at every step ({steps[index - 1]}% last)" if index
                    else "promoted without a step",
                    started if self.kubectl.dry_run else None)
                self.echo(f"promoted: {summary}")
                return 0
            if index:
                label = self.step(weight, f"analysis passed at {steps[index - 1]}%")
            report = None
            for attempt in range(1 + self.config.run.inconclusive_retries):
                self.echo(f"step {label}: waiting {self.config.run.pause} before analysis "
                          f"{attempt + 1}")
                if not self.kubectl.dry_run:
                    sleep(pause)
                report = analyze(index + 1)  # each step a sample of its own
                show(report)
                if not self.kubectl.dry_run:
                    self.annotate_analysis(report, label)
                if report.verdict != "inconclusive":
                    break
            if report.verdict != "pass":
                self.abort(f"analysis {report.summary()} at {label}")
                return EXIT_CODES[report.verdict]
        self.record("held", f"every step passed; the canary stays at {steps[-1]}% until "
                    "churn canary promote or abort")
        return 0
