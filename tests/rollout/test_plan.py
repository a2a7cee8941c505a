"""kubectl plans of start, step, promote, abort and run: their argument lists, and their edits
replayed offline by the real kubectl (`kubectl set image|set env|patch|annotate --local`) on the
rendered canary overlay, where every edited object must still pass the strict validation of
tests/k8s (tests/k8s/test_validate.py)."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from rollout import kubectl as k
from rollout import plan
from rollout.config import CanaryConfig
from tests.k8s.conftest import KUBECTL, REPO, Manifests, render
from tests.k8s.test_validate import validate

pytestmark = pytest.mark.integration  # renders and edits with the kubectl binary
SETTINGS = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml").kubernetes
NEW_TAG = "streaming_churn:v2canary"
NEW_IMAGE = "registry.example/churn-serve:0.2.0"
AT = "2026-11-30T12:00:00+00:00"


@pytest.fixture(scope="module")
def canary_overlay() -> Manifests:
    return Manifests("canary", render(REPO / "k8s" / "overlays" / "canary"))


class Cluster:
    """The rendered objects, edited call by call with kubectl's offline twin of each call."""

    def __init__(self, manifests: Manifests, folder: Path, stable_ready: int = 3):
        self.folder = folder
        self.objects = {(o["kind"].lower(), o["metadata"]["name"]): copy.deepcopy(o)
                        for o in manifests.objects}
        stable = self.objects[("deployment", SETTINGS.stable)]
        stable["status"] = {"replicas": stable_ready, "readyReplicas": stable_ready}

    def configmap_value(self, name: str, key: str) -> str | None:
        return self.objects[("configmap", name)].get("data", {}).get(key)

    def workload(self, name: str) -> plan.Workload:
        return plan.read_workload(self.objects[("deployment", name)], SETTINGS,
                                  self.configmap_value)

    def apply(self, call: k.Call) -> dict | None:
        """Replay an editing call; return the edited object (validated), None for a wait."""
        if not call.edits:
            return None
        key = (call.kind, call.name)
        source = self.folder / f"{call.kind}-{call.name}.json"
        source.write_text(json.dumps(self.objects[key]))
        done = subprocess.run([KUBECTL, *call.local_args(str(source))], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"{call.args}: {done.stderr}"
        edited = json.loads(done.stdout) if done.stdout.strip() else self.objects[key]
        edited.pop("status", None)
        validate(edited)  # the strict schemas of tests/k8s: an edit must not break the object
        status = self.objects[key].get("status")
        self.objects[key] = edited | ({"status": status} if status else {})
        return edited


def container(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == SETTINGS.container)


def env(deployment: dict) -> dict:
    return {e["name"]: e for e in container(deployment).get("env", [])}


def test_the_overlay_is_what_the_plans_expect(canary_overlay: Manifests, tmp_path: Path) -> None:
    cluster = Cluster(canary_overlay, tmp_path)
    stable, canary = cluster.workload(SETTINGS.stable), cluster.workload(SETTINGS.canary)
    assert stable.model.configmap and stable.model.configmap.startswith("churn-model")
    assert stable.model.tag == canary.model.tag and stable.image == canary.image
    assert canary.replicas == 0


def test_start_plan_argument_lists(canary_overlay: Manifests, tmp_path: Path) -> None:
    cluster = Cluster(canary_overlay, tmp_path)
    stable = cluster.workload(SETTINGS.stable)
    calls = plan.start_plan(SETTINGS, stable, model=NEW_TAG, image=None, weight=5, at=AT)
    assert [c.args for c in calls] == [
        ("set", "image", "deployment/churn-serve-canary", f"churn-serve={stable.image}"),
        ("set", "env", "deployment/churn-serve-canary", "-c", "churn-serve",
         f"CHURN_MODEL_TAG={NEW_TAG}", "CHURN_SHADOW_MODEL_TAG="),
        ("annotate", "deployment/churn-serve-canary", "--overwrite",
         "churn-serve/canary-decision=started",
         f"churn-serve/canary-reason=trying model {NEW_TAG}, image {stable.image} (stable: "
         f"{stable.serves})", f"churn-serve/canary-updated={AT}",
         "churn-serve/canary-step=5% -> 1 canary of 4 pods (25%)"),
        ("scale", "deployment/churn-serve-canary", "--replicas=1"),
        ("rollout", "status", "deployment/churn-serve-canary", "--timeout=10m"),
    ]
    runner = k.Kubectl(SETTINGS.model_copy(update={"context": "prod", "namespace": "churn"}))
    assert runner.argv(calls[3]) == ["kubectl", "--context", "prod", "--namespace", "churn",
                                     "scale", "deployment/churn-serve-canary", "--replicas=1"]


def test_start_and_steps_replayed_on_the_manifests(canary_overlay: Manifests,
                                                   tmp_path: Path) -> None:
    cluster = Cluster(canary_overlay, tmp_path)
    stable_before = copy.deepcopy(cluster.objects[("deployment", SETTINGS.stable)])
    for call in plan.start_plan(SETTINGS, cluster.workload(SETTINGS.stable), model=NEW_TAG,
                                image=NEW_IMAGE, weight=5, at=AT):
        cluster.apply(call)
    canary = cluster.objects[("deployment", SETTINGS.canary)]
    assert env(canary)["CHURN_MODEL_TAG"] == {"name": "CHURN_MODEL_TAG", "value": NEW_TAG}
    assert container(canary)["image"] == NEW_IMAGE and canary["spec"]["replicas"] == 1
    assert canary["metadata"]["annotations"][k.DECISION] == "started"
    assert canary["spec"]["selector"]["matchLabels"]["track"] == "canary"  # untouched
    sizes = []
    for weight in (25, 50):
        for call in plan.step_plan(SETTINGS, cluster.workload(SETTINGS.stable), weight,
                                   "analysis passed", AT):
            cluster.apply(call)
        sizes.append(cluster.objects[("deployment", SETTINGS.canary)]["spec"]["replicas"])
    assert sizes == [1, 3]
    assert cluster.objects[("deployment", SETTINGS.stable)] == stable_before


@pytest.mark.parametrize("change", ["model", "image", "both"])
def test_promote_replayed_on_the_manifests(canary_overlay: Manifests, tmp_path: Path,
                                           change: str) -> None:
    cluster = Cluster(canary_overlay, tmp_path)
    model = NEW_TAG if change in ("model", "both") else None
    image = NEW_IMAGE if change in ("image", "both") else None
    for call in plan.start_plan(SETTINGS, cluster.workload(SETTINGS.stable), model=model,
                                image=image, weight=5, at=AT):
        cluster.apply(call)
    stable_before = cluster.workload(SETTINGS.stable)
    promotion = plan.promote_plan(SETTINGS, stable_before, cluster.workload(SETTINGS.canary),
                                  "looked good", AT)
    for call in promotion.change + promotion.finish:
        cluster.apply(call)
    stable = cluster.workload(SETTINGS.stable)
    assert stable.model.tag == (model or stable_before.model.tag)
    assert stable.image == (image or stable_before.image)
    deployment = cluster.objects[("deployment", SETTINGS.stable)]
    # The tag stays in the ConfigMap stable (and every CronJob) reads; the pod label the
    # ServiceMonitor copies onto every series follows it, and that template change rolls the
    # pods (no restart needed; test_canary.py covers a Deployment without the label).
    assert "configMapKeyRef" in env(deployment)["CHURN_MODEL_TAG"]["valueFrom"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[plan.VERSION_LABEL] == (model or stable_before.model.tag).partition(":")[2]
    assert k.RESTARTED_AT not in deployment["spec"]["template"]["metadata"].get(
        "annotations", {})
    assert len([c for c in promotion.change if c.args[0] == "patch" and
                c.args[1].startswith("deployment/")]) == 1  # one rollout of stable
    canary = cluster.objects[("deployment", SETTINGS.canary)]
    assert canary["spec"]["replicas"] == 0
    assert canary["metadata"]["annotations"][k.DECISION] == "promoted"
    kinds = [(c.args[0], c.args[1]) for c in promotion.change]
    assert kinds[-1] == ("rollout", "status")
    # The way back undoes what was made, the ConfigMap first, then the pod template; after
    # only the ConfigMap edit, the Deployment (unchanged) is not undone.
    edits = promotion.change[:-1]
    back = [c.args[:2] for c in promotion.rollback(edits)]
    assert back[:2] == ([("patch", "configmap"), ("rollout", "undo")] if model
                        else [("rollout", "undo"), ("rollout", "status")])
    assert back[-3:] == [("scale", "deployment/churn-serve-canary"),
                         ("annotate", "deployment/churn-serve-canary"),
                         ("rollout", "status")]
    if model:
        assert [c.args[:2] for c in promotion.rollback(edits[:1])][:2] == [
            ("patch", "configmap"), ("scale", "deployment/churn-serve-canary")]


def test_abort_replayed_on_the_manifests(canary_overlay: Manifests, tmp_path: Path) -> None:
    cluster = Cluster(canary_overlay, tmp_path)
    for call in plan.start_plan(SETTINGS, cluster.workload(SETTINGS.stable), model=NEW_TAG,
                                image=None, weight=50, at=AT):
        cluster.apply(call)
    assert cluster.objects[("deployment", SETTINGS.canary)]["spec"]["replicas"] == 3
    calls = plan.abort_plan(SETTINGS, "analysis failed: probability_psi 0.18 > 0.1", AT)
    assert calls[0].args == ("scale", "deployment/churn-serve-canary", "--replicas=0")
    for call in calls:
        cluster.apply(call)
    canary = cluster.objects[("deployment", SETTINGS.canary)]
    assert canary["spec"]["replicas"] == 0
    assert canary["metadata"]["annotations"][k.REASON].startswith("analysis failed")


def test_plans_refuse_what_cannot_work(canary_overlay: Manifests, tmp_path: Path) -> None:
    cluster = Cluster(canary_overlay, tmp_path, stable_ready=0)
    stable = cluster.workload(SETTINGS.stable)
    with pytest.raises(plan.PlanError, match="no ready pod"):
        plan.start_plan(SETTINGS, stable, model=NEW_TAG, image=None, weight=5, at=AT)
    ready = Cluster(canary_overlay, tmp_path).workload(SETTINGS.stable)
    with pytest.raises(plan.PlanError, match="nothing to try"):
        plan.start_plan(SETTINGS, ready, model=ready.model.tag, image=None, weight=5, at=AT)
    with pytest.raises(plan.PlanError, match="--model TAG or --image"):
        plan.start_plan(SETTINGS, ready, model=None, image=None, weight=5, at=AT)
    with pytest.raises(plan.PlanError, match="no canary is running"):
        plan.promote_plan(SETTINGS, ready, cluster.workload(SETTINGS.canary), "x", AT)
    with pytest.raises(plan.PlanError, match="no container 'other'"):
        plan.read_workload(cluster.objects[("deployment", SETTINGS.stable)],
                           SETTINGS.model_copy(update={"container": "other"}),
                           cluster.configmap_value)
    assert [plan.canary_replicas(w, 3) for w in (5, 25, 50, 75)] == [1, 1, 3, 9]
    assert plan.canary_replicas(5, 40) == 3  # 3 / 43 = 7%: rounded up to reach 5%


# Cases of Argo Rollouts' own test of the function argo_split follows
# (TestApproximateWeightedNewStableReplicaCounts): (replicas, weight, max_surge) -> (canary,
# stable).
ARGO_CASES = {
    (0, 50, 1): (0, 0), (1, 49, 0): (0, 1), (1, 50, 0): (1, 0), (1, 1, 1): (1, 1),
    (1, 100, 1): (1, 0), (2, 1, 0): (1, 1), (2, 99, 0): (1, 1), (2, 1, 1): (1, 2),
    (2, 50, 1): (1, 1), (2, 99, 1): (2, 1), (3, 25, 0): (1, 2), (3, 50, 0): (2, 1),
    (3, 10, 1): (1, 3), (3, 33, 1): (1, 2), (3, 49, 1): (2, 2), (3, 50, 1): (2, 2),
    (10, 14, 0): (1, 9), (10, 15, 0): (2, 8), (10, 99, 0): (9, 1), (10, 1, 1): (1, 10),
    (10, 19, 1): (2, 9), (10, 20, 1): (2, 8), (10, 23, 1): (2, 8), (10, 24, 1): (3, 8),
    (10, 99, 1): (10, 1), (10, 100, 1): (10, 0),
}


@pytest.mark.parametrize(("case", "expected"), ARGO_CASES.items())
def test_argo_split_matches_argo_rollouts_own_cases(case, expected):
    assert plan.argo_split(*case) == expected


def test_argo_scales_stable_down_where_the_kubectl_canary_keeps_it():
    """The issue's example: 2 replicas, 5% and 25% give a third, 50% halves stable."""
    assert [plan.argo_split(2, w, 1) for w in (5, 25, 50)] == [(1, 2), (1, 2), (1, 1)]
    assert [plan.canary_replicas(w, 2) for w in (5, 25, 50)] == [1, 1, 2]
