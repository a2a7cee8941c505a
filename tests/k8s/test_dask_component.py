"""k8s/components/dask: rendered by the real kubectl (kustomize) on the real base, every
object valid against a strict schema (the DaskCluster against the operator's own CRD, with
unknown fields forbidden), the restricted security profile, and the wiring the jobs rely on."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "k8s" / "components" / "dask"
SCHEMAS = Path(__file__).parent / "schemas"
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
KUBERNETES_VERSION = "1.37.0"

# An overlay like the ones the component is meant for: the real base plus this component, with
# the image set the way CI sets it (`kustomize edit set image churn-jobs=...`).
OVERLAY = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [BASE]
components: [COMPONENT]
images:
  - name: churn-jobs
    newName: registry.example/churn-jobs
    newTag: "1.2.3"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("dask-overlay")
    (root / "kustomization.yaml").write_text(
        OVERLAY.replace("BASE", os.path.relpath(REPO / "k8s" / "base", root))
        .replace("COMPONENT", os.path.relpath(COMPONENT, root)))
    done = subprocess.run([KUBECTL, "kustomize", str(root)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _schema(obj: dict) -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    path = SCHEMAS / group / f"{obj['kind'].lower()}_{version}.json"
    assert path.exists(), f"no schema for {obj['kind']} ({obj['apiVersion']}): {path}"
    return json.loads(path.read_text())


def validate(obj: dict) -> None:
    """Strict validation: custom resources by their schema here, built-in kinds by the upstream
    schemas; a kind neither knows fails."""
    group = obj["apiVersion"].rpartition("/")[0]
    if group and (SCHEMAS / group).is_dir():
        jsonschema.Draft7Validator(_schema(obj)).validate(obj)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind
                and o["metadata"]["name"].startswith(name)]
    return found


def test_every_object_is_valid_against_a_strict_schema(rendered):
    kinds = {o["kind"] for o in rendered}
    assert {"DaskCluster", "DaskAutoscaler", "CronJob", "NetworkPolicy"} <= kinds
    for obj in rendered:
        validate(obj)


def test_the_dask_schemas_are_strict(rendered):
    cluster = _one(rendered, "DaskCluster", "churn-dask")
    for path, field in ((("spec",), "workers"), (("spec", "worker", "spec"), "containerz"),
                        (("spec", "scheduler", "service"), "clusterIp")):
        broken = copy.deepcopy(cluster)
        target = broken
        for key in path:
            target = target[key]
        target[field] = 1
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            validate(broken)
    wrong_type = copy.deepcopy(cluster)  # quantities are strings in the CRD, as in the API
    wrong_type["spec"]["worker"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong_type)


def _pods(objects: list[dict]) -> list[tuple[str, dict]]:
    pods = []
    for obj in objects:
        if obj["kind"] == "DaskCluster":
            pods += [(f"dask {part}", obj["spec"][part]["spec"])
                     for part in ("scheduler", "worker")]
        elif obj["kind"] == "CronJob":
            pods.append((obj["metadata"]["name"],
                         obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return pods


def test_dask_pods_and_the_scoring_job_keep_the_restricted_profile(rendered):
    for name, pod in _pods(rendered):
        if not name.startswith("dask") and name != "churn-score":
            continue  # the base's pods: its own tests check them
        assert pod["automountServiceAccountToken"] is False, name
        security = pod["securityContext"]
        assert security["runAsNonRoot"] and security["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"], name
            # One image entry sets the jobs' and the cluster's image: they must agree.
            assert container["image"] == "registry.example/churn-jobs:1.2.3", name


def test_workers_spill_before_their_memory_limit_and_run_one_thread(rendered):
    worker = _one(rendered, "DaskCluster", "churn-dask")["spec"]["worker"]["spec"]
    (container,) = worker["containers"]
    args = container["args"]
    assert args[args.index("--nthreads") + 1] == "1"
    limit = args[args.index("--memory-limit") + 1]
    assert limit.endswith("MiB") and container["resources"]["limits"]["memory"].endswith("Gi")
    share = int(limit.removesuffix("MiB")) / (
        int(container["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024)
    assert 0.7 <= share <= 0.85  # the LocalCluster's 80% rule (kernel/cluster.py)


def test_jobs_name_the_scheduler_the_operator_creates(rendered):
    from kernel.cluster import SCHEDULER_ENV

    config = _one(rendered, "ConfigMap", "churn-dask")
    cluster = _one(rendered, "DaskCluster", "churn-dask")
    port = next(p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]
                if p["name"] == "tcp-comm")
    # The operator names the scheduler's Service <DaskCluster name>-scheduler.
    expected = f"tcp://{cluster['metadata']['name']}-scheduler:{port}"
    assert config["data"][SCHEDULER_ENV] == expected
    for name in ("churn-drift", "churn-score"):
        pod = _one(rendered, "CronJob", name)["spec"]["jobTemplate"]["spec"]["template"]
        (env,) = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == SCHEDULER_ENV]
        assert env["valueFrom"]["configMapKeyRef"]["name"] == config["metadata"]["name"], name
        assert pod["metadata"]["labels"]["churn-serve/dask-client"] == "true", name
    score = _one(rendered, "CronJob", "churn-score")
    command = score["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["churn", "score"] and f"$({SCHEDULER_ENV})" in command
    autoscaler = _one(rendered, "DaskAutoscaler", "churn-dask")["spec"]
    assert autoscaler["cluster"] == cluster["metadata"]["name"] and autoscaler["minimum"] >= 1


def test_the_scoring_command_exists_with_those_options():
    from typer.testing import CliRunner

    from churn_cli import app

    help_text = CliRunner().invoke(app, ["score", "--help"], terminal_width=200).output
    for option in ("--input", "--output", "--dask", "--partition-rows"):
        assert option in help_text
