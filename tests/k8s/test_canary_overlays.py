"""The canary overlays (k8s/overlays/canary, k8s/overlays/argo-rollouts): what they add to the
production overlay, and that the Argo AnalysisTemplate is the CLI's analysis. Their schema
validation is the general one (test_validate.py renders every overlay)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from rollout.config import CanaryConfig, duration_seconds
from rollout.render import analysis_template, judge_command, template_command
from tests.k8s.conftest import REPO, render

pytestmark = pytest.mark.integration  # renders with the kubectl binary
CONFIG = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml")
TEMPLATE = REPO / "k8s" / "overlays" / "argo-rollouts" / "analysistemplate.yaml"


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_canary_overlay_adds_a_canary_beside_stable_behind_one_service(rendered) -> None:
    canary_overlay, prod = rendered["canary"], rendered["prod"]
    stable = canary_overlay.get("Deployment", "churn-serve")
    canary = canary_overlay.get("Deployment", "churn-serve-canary")
    assert stable == prod.get("Deployment", "churn-serve")  # stable is production, unchanged
    assert canary["spec"]["replicas"] == 0
    assert canary["spec"]["template"]["spec"] == stable["spec"]["template"]["spec"]
    assert canary["spec"]["strategy"] == stable["spec"]["strategy"]
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "churn-serve", "track": "canary"}
    assert labels["track"] == "canary"
    assert labels["app.kubernetes.io/part-of"] == "churn-serve"
    service = canary_overlay.get("Service", "churn-serve")
    assert selects(service["spec"]["selector"], labels)
    assert selects(service["spec"]["selector"], stable["spec"]["template"]["metadata"]["labels"])
    # Only stable is autoscaled; each track has its own budget, and no pod is under two.
    assert [h["spec"]["scaleTargetRef"]["name"]
            for h in canary_overlay.of_kind("HorizontalPodAutoscaler")] == ["churn-serve"]
    budgets = canary_overlay.of_kind("PodDisruptionBudget")
    for pod_labels in (labels, stable["spec"]["template"]["metadata"]["labels"]):
        assert len([b for b in budgets
                    if selects(b["spec"]["selector"]["matchLabels"], pod_labels)]) == 1
    # The analysis needs the track on every scraped series.
    monitors = [m for m in canary_overlay.of_kind("ServiceMonitor")
                if m["metadata"]["name"] == "churn-serve"]
    assert "track" in monitors[0]["spec"]["podTargetLabels"]
    # Nothing else differs from production.
    extra = {(o["kind"], o["metadata"]["name"]) for o in canary_overlay.objects} - {
        (o["kind"], o["metadata"]["name"]) for o in prod.objects}
    assert extra == {("Deployment", "churn-serve-canary"),
                     ("PodDisruptionBudget", "churn-serve-canary")}


def test_argo_overlay_runs_the_service_as_a_rollout_with_the_analysis(rendered) -> None:
    argo, prod = rendered["argo-rollouts"], rendered["prod"]
    assert not [d for d in argo.of_kind("Deployment") if d["metadata"]["name"] == "churn-serve"]
    rollout = argo.get("Rollout", "churn-serve")
    stable = prod.get("Deployment", "churn-serve")
    # The pod spec is production's, but for the label the spread counts a rollout's pods by.
    pod = copy.deepcopy(rollout["spec"]["template"]["spec"])
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["matchLabelKeys"] == ["rollouts-pod-template-hash"]
        constraint["matchLabelKeys"] = ["pod-template-hash"]
    assert pod == stable["spec"]["template"]["spec"]
    assert rollout["spec"]["selector"]["matchLabels"] == {"app": "churn-serve"}
    assert "track" not in rollout["spec"]["template"]["metadata"]["labels"]  # Argo sets it
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryMetadata"]["labels"] == {"track": "canary"}
    assert canary["stableMetadata"]["labels"] == {"track": "stable"}
    assert selects(argo.get("Service", "churn-serve")["spec"]["selector"],
                   rollout["spec"]["template"]["metadata"]["labels"])
    # The steps are `churn canary run`'s: each share, a pause of run.pause, the analysis.
    steps = canary["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    assert weights == [w for w in CONFIG.run.steps if w < 100]
    pauses = {duration_seconds(s["pause"]["duration"]) for s in steps if "pause" in s}
    assert pauses == {duration_seconds(CONFIG.run.pause)}
    template = argo.get("AnalysisTemplate", "churn-canary")
    analyses = [s["analysis"] for s in steps if "analysis" in s]
    assert [a["templates"] for a in analyses] == [[{"templateName": "churn-canary"}]] * len(weights)
    # Each analysis judges its own step: a sample of its own for the judge.
    assert [a["args"] for a in analyses] == [[{"name": "step", "value": str(i)}]
                                             for i in range(1, len(weights) + 1)]
    hpa = argo.get("HorizontalPodAutoscaler", "churn-serve")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    # The template in the cluster runs the CLI's judge, in the drift CronJob's pod: the same
    # tagged jobs image, service account, volumes (the inference log it judges) and env.
    assert template_command(template) == judge_command(CONFIG)
    judge_pod = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
    drift_pod = argo.get("CronJob", "churn-drift")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]
    for key in ("serviceAccountName", "securityContext", "volumes"):
        assert judge_pod[key] == drift_pod[key], key
    (judge,), (drift,) = judge_pod["containers"], drift_pod["containers"]
    for key in ("image", "env", "volumeMounts", "securityContext", "resources"):
        assert judge[key] == drift[key], key
    assert ":" in judge["image"]  # tagged, as every image of every rendering


def test_the_committed_template_is_the_rendered_one() -> None:
    committed = yaml.safe_load(TEMPLATE.read_text())
    assert committed == analysis_template(CONFIG), "run `churn canary render`"


def test_a_new_model_literal_in_the_argo_overlay_reaches_the_rollout(tmp_path: Path) -> None:
    """kustomize knows the Rollout's pod template (rollout-transform.yaml): a churn-model
    ConfigMap regenerated in the overlay (a new model) is renamed in the Rollout too."""
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "argo-rollouts"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["configMapGenerator"] = [{"name": "churn-model", "behavior": "merge",
                                            "literals": ["CHURN_MODEL_TAG=streaming_churn:v9"]}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = render(overlay)
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"].startswith("churn-model")]
    assert configmap["data"]["CHURN_MODEL_TAG"] == "streaming_churn:v9"
    (rollout,) = [o for o in objects if o["kind"] == "Rollout"]
    refs = [e["valueFrom"]["configMapKeyRef"]["name"]
            for c in rollout["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", []) if "configMapKeyRef" in e.get("valueFrom", {})]
    assert refs and set(refs) == {configmap["metadata"]["name"]}  # the champion's and shadow's


def argo_split_table(replicas: range, weights: list[int], max_surge: int) -> str:
    """The Markdown table docs/canary.md shows: per replica count (stable before the step),
    Argo's canary + stable pods and the canary's share at each step, then `churn canary run`'s
    (stable unchanged)."""
    from rollout.plan import argo_split, canary_replicas

    lines = ["| replicas | " + " | ".join(f"{w}%: Argo" for w in weights) + " | "
             + " | ".join(f"{w}%: `churn canary run`" for w in weights) + " |",
             "| ---: |" + " --- |" * (2 * len(weights))]
    for count in replicas:
        argo = [argo_split(count, w, max_surge) for w in weights]
        run = [(canary_replicas(w, count), count) for w in weights]
        lines.append(f"| {count} | " + " | ".join(
            f"{c} + {s} = {100 * c / (c + s):.0f}%" for c, s in argo + run) + " |")
    return "\n".join(lines)


def test_the_docs_state_argos_real_split_at_every_replica_count_the_hpa_allows(rendered):
    argo = rendered["argo-rollouts"]
    hpa = argo.get("HorizontalPodAutoscaler", "churn-serve")["spec"]
    surge = argo.get("Rollout", "churn-serve")["spec"]["strategy"]["canary"]["maxSurge"]
    table = argo_split_table(range(hpa["minReplicas"], hpa["maxReplicas"] + 1),
                             [w for w in CONFIG.run.steps if w < 100], surge)
    docs = (REPO / "docs" / "canary.md").read_text()
    assert table in docs, f"docs/canary.md#argo-rollouts needs this table:\n{table}"
    assert "| 2 | 1 + 2 = 33% | 1 + 2 = 33% | 1 + 1 = 50% |" in table  # the example


def test_the_migration_note_removes_what_applying_argo_over_production_leaves_behind(rendered):
    """`kubectl apply -k` deletes nothing: what production (or the kubectl canary) has and the
    Argo overlay has not keeps running unless the note's commands remove it; and back."""
    import re

    def names(overlay: str) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] in {
            "ConfigMap", "Secret"} else o["metadata"]["name"]) for o in rendered[overlay].objects}

    argo = names("argo-rollouts")
    left_behind = (names("prod") | names("canary")) - argo
    back = argo - names("canary")
    assert left_behind == {("Deployment", "churn-serve"), ("Deployment", "churn-serve-canary")}
    assert back == {("Rollout", "churn-serve"), ("AnalysisTemplate", "churn-canary")}
    docs = (REPO / "docs" / "canary.md").read_text()
    note = docs.split("**Moving an existing production install to Argo Rollouts.**", 1)[1]
    note = note.split("\n## ", 1)[0].replace("\n", " ")
    for kind, name in left_behind | back:
        assert re.search(rf"delete {kind.lower()}( [\w-]+)* {name}\b", note), (kind, name)
