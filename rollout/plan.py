"""What each canary command does, as kubectl calls computed from the two Deployments: pure
functions of their state (no I/O), so the tests run them on the rendered manifests.

Traffic share = ready canary pods / all ready pods: the one Service selects both Deployments
(``app: churn-serve``) and kube-proxy spreads connections over ready endpoints. A step sizes the
canary from the stable's *ready* pods and never writes the stable's replica count, so the
stable's HorizontalPodAutoscaler stays the only thing that scales it (docs/canary.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rollout import kubectl as k
from rollout.config import KubernetesSettings

# The pod label the monitoring component sets from the model tag and the ServiceMonitor copies
# onto every series (k8s/components/monitoring): it must follow the model stable serves.
VERSION_LABEL = "model_version"
SHADOW_ENV = "CHURN_SHADOW_MODEL_TAG"  # service/shadow.py; rollout/shadow.py writes it


class PlanError(ValueError):
    """The Deployments are not in a state the command can act on."""


@dataclass(frozen=True)
class ModelSource:
    """Which model a Deployment's pods serve, and where that is written."""

    tag: str | None  # the tag (a literal env value, or the ConfigMap's value)
    configmap: str | None = None  # set when the env var reads a ConfigMap key
    key: str | None = None


@dataclass(frozen=True)
class Workload:
    """What the canary commands need to know about one Deployment."""

    name: str
    image: str
    model: ModelSource
    replicas: int
    ready: int
    annotations: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)  # of the pod template

    @property
    def serves(self) -> str:
        return f"model {self.model.tag or '?'}, image {self.image}"


def read_workload(deployment: dict, settings: KubernetesSettings,
                  configmap_value: Callable[[str, str], str | None]) -> Workload:
    """Parse a Deployment (live JSON or a rendered manifest). ``configmap_value(name, key)``
    resolves a tag the pods read from a ConfigMap. Raises PlanError naming what is missing."""
    name = deployment.get("metadata", {}).get("name", "?")
    containers = deployment["spec"]["template"]["spec"].get("containers", [])
    container = next((c for c in containers if c.get("name") == settings.container), None)
    if container is None:
        found = ", ".join(c.get("name", "?") for c in containers) or "none"
        raise PlanError(f"deployment {name} has no container {settings.container!r} (it has "
                        f"{found}): set kubernetes.container in configs/canary.yaml")
    variable = next((e for e in container.get("env", []) if e["name"] == settings.model_env),
                    None)
    if variable is None:
        model = ModelSource(None)
    elif "value" in variable:
        model = ModelSource(variable["value"])
    else:
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if ref is None:
            raise PlanError(f"deployment {name}: {settings.model_env} must be a value or a "
                            "configMapKeyRef")
        model = ModelSource(configmap_value(ref["name"], ref["key"]), ref["name"], ref["key"])
    status = deployment.get("status", {})
    return Workload(name=name, image=container.get("image", ""), model=model,
                    replicas=int(deployment["spec"].get("replicas", 1)),
                    ready=int(status.get("readyReplicas", 0)),
                    annotations=dict(deployment["metadata"].get("annotations", {})),
                    pod_labels=dict(deployment["spec"]["template"]["metadata"].get("labels",
                                                                                  {})))


def canary_replicas(weight: int, stable_ready: int) -> int:
    """Canary pods so that they are at least ``weight``% of all ready pods (rounded up), and at
    least one, beside an unchanged stable. Argo Rollouts splits differently: argo_split."""
    if not 0 < weight < 100:
        raise PlanError(f"a canary step is a share in 1..99%, not {weight}")
    return max(1, math.ceil(weight * stable_ready / (100 - weight)))


def argo_split(replicas: int, weight: int, max_surge: int) -> tuple[int, int]:
    """(canary, stable) pods Argo Rollouts aims for at a ``setWeight`` step without traffic
    routing (a service mesh): of the splits whose total is ``replicas`` (or ``replicas + 1``
    when ``max_surge`` allows a surge), the one whose canary share is closest to ``weight``;
    floor and ceiling of the canary count are both candidates (the ceiling wins a tie), and a
    share of 1-99% never rounds the canary to 0 pods. So stable is scaled down, unlike
    `churn canary run`. After approximateWeightedCanaryStableReplicaCounts in Argo Rollouts'
    utils/replicaset/canary.go (docs/canary.md#argo-rollouts has the table)."""
    if replicas == 0:
        return 0, 0
    exact = replicas * weight / 100
    ceiling, floor = math.ceil(exact), math.floor(exact)
    zero_allowed = weight in (0, 100) or (replicas == 1 and max_surge == 0)

    def tied(total: int) -> bool:  # floor and ceiling equally far from the weight
        return (total * (weight / 100)) % 1 == 0.5  # Argo's float order

    options = []
    if ceiling < replicas or zero_allowed:
        options.append((ceiling, replicas))
    if not tied(replicas) and (floor != 0 or zero_allowed):
        options.append((floor, replicas))
    if max_surge > 0:
        options.append((ceiling, replicas + 1))
        if not tied(replicas + 1) and (floor != 0 or zero_allowed):
            options.append((floor, replicas + 1))
    if not options:
        return 0, replicas
    # The first of the closest wins, as Argo's strict "less than" comparison does.
    canary, total = min(options, key=lambda o: abs(100 * o[0] / o[1] - weight))
    return canary, total - canary


def share(canary_ready: int, stable_ready: int) -> float:
    total = canary_ready + stable_ready
    return canary_ready / total if total else 0.0


def step_label(weight: int, stable_ready: int) -> str:
    canary = canary_replicas(weight, stable_ready)
    return (f"{weight}% -> {canary} canary of {canary + stable_ready} pods "
            f"({share(canary, stable_ready):.0%})")


def _require_ready_stable(stable: Workload) -> None:
    if stable.ready < 1:
        raise PlanError(f"deployment {stable.name} has no ready pod: there is nothing to "
                        f"compare a canary with (kubectl get deployment {stable.name})")


def start_plan(settings: KubernetesSettings, stable: Workload, *, model: str | None,
               image: str | None, weight: int, at: str) -> list[k.Call]:
    """Point the canary at the new model or image (everything else as stable), record why,
    scale it to the first step and wait for it."""
    if not model and not image:
        raise PlanError("name what the canary tries: --model TAG or --image IMAGE")
    _require_ready_stable(stable)
    model = model or stable.model.tag
    if not model:
        raise PlanError(f"deployment {stable.name} names no model ({settings.model_env}): "
                        "give --model")
    image = image or stable.image
    if model == stable.model.tag and image == stable.image:
        raise PlanError(f"stable already serves {stable.serves}: nothing to try")
    canary = settings.canary
    reason = start_reason(stable, model, image)
    replicas = canary_replicas(weight, stable.ready)
    return [
        k.set_image(canary, settings.container, image),
        # A canary's pods run no shadow: they copy stable's pod spec, shadow key included.
        k.set_env(canary, settings.container, settings.model_env, model,
                  **{SHADOW_ENV: ""}),
        k.annotate(canary, k.decision_annotations(
            "started", reason, step_label(weight, stable.ready), at)),
        k.scale(canary, replicas),
        k.rollout_status(canary, settings.rollout_timeout),
    ]


def start_reason(stable: Workload, model: str, image: str) -> str:
    return f"trying model {model}, image {image} (stable: {stable.serves})"


def step_plan(settings: KubernetesSettings, stable: Workload, weight: int, reason: str,
              at: str) -> list[k.Call]:
    """Resize the canary for the next share of traffic and wait for its pods."""
    _require_ready_stable(stable)
    canary = settings.canary
    return [
        k.scale(canary, canary_replicas(weight, stable.ready)),
        k.annotate(canary, k.decision_annotations("step", reason,
                                                  step_label(weight, stable.ready), at)),
        k.rollout_status(canary, settings.rollout_timeout),
    ]


def abort_plan(settings: KubernetesSettings, reason: str, at: str,
               decision: str = "aborted") -> list[k.Call]:
    """Take the canary out of traffic first, then record why."""
    canary = settings.canary
    return [
        k.scale(canary, 0),
        k.annotate(canary, k.decision_annotations(decision, reason, "0%", at)),
        k.rollout_status(canary, settings.rollout_timeout),
    ]


REVISION = "deployment.kubernetes.io/revision"  # set by the Deployment controller


@dataclass(frozen=True)
class Promotion:
    change: list[k.Call]  # stable takes the canary's model and image, and is waited for
    finish: list[k.Call]  # then the canary leaves
    undo: dict[k.Call, list[k.Call]]  # what takes back each change call, once it was made
    leave: list[k.Call]  # the canary out, recorded as a failed promotion
    summary: str

    def rollback(self, made: list[k.Call]) -> list[k.Call]:
        """The way back after a failure, given the calls that were made: only what was
        changed is undone (an undo of an unchanged Deployment would revert an older rollout),
        the ConfigMap before the pods, then the canary leaves."""
        back = [call for change in made for call in self.undo.get(change, [])]
        return [*back, *self.leave]


def promote_plan(settings: KubernetesSettings, stable: Workload, canary: Workload,
                 reason: str, at: str) -> Promotion:
    """Make stable serve what the canary serves, in one rollout of stable.

    A new model is written where stable reads it: the ConfigMap key when its env var points
    at one (the CronJobs read the same key, so the drift job follows the promoted model), else
    the env var itself. Everything the pod template needs (image, a literal env var, the
    ``model_version`` pod label the ServiceMonitor copies onto every series) changes in one
    strategic patch; a model that only moved in the ConfigMap restarts the pods (the template
    annotation ``kubectl rollout restart`` sets) so they read it.
    """
    if canary.replicas < 1:
        raise PlanError(f"no canary is running ({canary.name} has 0 replicas): start one first")
    model = canary.model.tag
    new_model = bool(model) and model != stable.model.tag
    new_image = canary.image != stable.image
    config: list[k.Call] = []
    undo: dict[k.Call, list[k.Call]] = {}
    if new_model and stable.model.configmap:
        config.append(k.patch_configmap(stable.model.configmap, stable.model.key or "",
                                        model or ""))
        undo[config[0]] = [k.patch_configmap(stable.model.configmap, stable.model.key or "",
                                             stable.model.tag)] if stable.model.tag else []
    container: dict = {}
    if new_image:
        container["image"] = canary.image
    if new_model and not stable.model.configmap:
        container["env"] = [{"name": settings.model_env, "value": model}]
    metadata: dict = {}
    if new_model and VERSION_LABEL in stable.pod_labels:
        metadata["labels"] = {VERSION_LABEL: (model or "").partition(":")[2] or "champion"}
    if config and not container and not metadata:
        metadata["annotations"] = {k.RESTARTED_AT: at}
    template: dict = {}
    if metadata:
        template["metadata"] = metadata
    if container:
        template["spec"] = {"containers": [{"name": settings.container, **container}]}
    changes = [*config]
    wait_stable = k.rollout_status(stable.name, settings.rollout_timeout)
    if template:
        patch = k.patch_deployment(
            stable.name, {"spec": {"template": template}},
            f"{stable.name} serves model {model if new_model else stable.model.tag}, image "
            f"{canary.image}")
        changes.append(patch)
        # Back to the revision stable ran before (the number, when the cluster says it).
        undo[patch] = [k.rollout_undo(stable.name, stable.annotations.get(REVISION)),
                       wait_stable]
    summary = (f"stable now serves model {model if new_model else stable.model.tag}, image "
               f"{canary.image}" if changes else f"stable already serves {stable.serves}")
    return Promotion(
        change=[*changes, wait_stable] if changes else [],
        finish=abort_plan(settings, f"{reason}; {summary}", at, decision="promoted"),
        undo=undo,
        leave=abort_plan(settings, f"promotion failed, stable rolled back: {reason}", at,
                         decision="promote-failed"),
        summary=summary,
    )
