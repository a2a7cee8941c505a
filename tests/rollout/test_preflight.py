"""`churn k8s check` against a stand-in API server the real kubectl talks to
(tests/rollout/fake_apiserver.py): a cluster that has everything the overlays need passes every
row, and each missing piece fails (or warns about) its own row with a fix, and only that row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitoring.k8s_render import render_all
from rollout import kubectl as k
from rollout import preflight
from rollout.config import KubernetesSettings
from tests.rollout.conftest import real_kubectl
from tests.rollout.fake_apiserver import Cluster, StandInServer

pytestmark = pytest.mark.integration  # the real kubectl against a stand-in server

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "churn-serve"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/warn": "restricted"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """The renderings whose needs, together, cover every row: production with the Dask and
    monitoring components, the kubectl canary, Argo Rollouts."""
    texts = render_all(REPO, real_kubectl(), only={"prod+dask", "canary", "argo-rollouts"})
    return {name: [o for o in yaml.safe_load_all(text) if o] for name, text in texts.items()}


def crd(group: str, kind: str, version: str, plural: str = "") -> dict:
    plural = plural or kind.lower() + "s"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind},
                     "versions": [{"name": version, "served": True, "storage": True}]}}


def namespace(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name,
                                                  **(labels or {})}}}


def storage_class(name: str, provisioner: str, default: bool = False) -> dict:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": provisioner,
            "metadata": {"name": name, "annotations": annotations}}


def secret(name: str, where: str = NAMESPACE) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": where}, "data": {"url": "eA=="}}


def verb(argv: list[str]) -> str:
    """The kubectl verb of a call the runner made (after --context C --namespace N)."""
    return argv[5]


def complete_cluster() -> Cluster:
    """Everything every overlay and component needs, as a cluster operator would set it up."""
    storage = yaml.safe_load((REPO / "k8s/overlays/prod/storage-class.yaml").read_text())
    release = yaml.safe_load((REPO / "k8s/components/monitoring/release-label.yaml")
                             .read_text())["labels"]["release"]
    selector = {"matchLabels": {"release": release}}
    return Cluster(pullable={"churn-serve:0.1.0", "churn-jobs:0.1.0",
                             "quay.io/prometheus/pushgateway:v1.11.1"}).add(
        crd("monitoring.coreos.com", "ServiceMonitor", "v1"),
        crd("monitoring.coreos.com", "PodMonitor", "v1"),
        crd("monitoring.coreos.com", "PrometheusRule", "v1"),
        crd("monitoring.coreos.com", "Prometheus", "v1", "prometheuses"),
        crd("argoproj.io", "Rollout", "v1alpha1"),
        crd("argoproj.io", "AnalysisTemplate", "v1alpha1"),
        crd("kubernetes.dask.org", "DaskCluster", "v1"),
        crd("kubernetes.dask.org", "DaskAutoscaler", "v1"),
        storage_class("standard", "pd.csi.storage.gke.io", default=True),
        storage_class(storage["data"]["storageClassName"], "nfs.csi.k8s.io"),
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
         "metadata": {"name": "nfs.csi.k8s.io"}, "spec": {"fsGroupPolicy": "File"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io"},
         "status": {"conditions": [{"type": "Available", "status": "True"}]}},
        namespace(NAMESPACE, RESTRICTED), namespace("monitoring"), namespace("dask-operator"),
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
         "metadata": {"name": "kube-prometheus-stack-prometheus", "namespace": "monitoring"},
         "spec": {"serviceMonitorSelector": selector, "serviceMonitorNamespaceSelector": {},
                  "podMonitorSelector": selector, "podMonitorNamespaceSelector": {},
                  "ruleSelector": selector, "ruleNamespaceSelector": {}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "prometheus-operated", "namespace": "monitoring"},
         "spec": {"ports": [{"port": 9090}]}},
        secret("churn-training-data"), secret("churn-mlflow-db"), secret("churn-labels"),
    )


def find(cluster: Cluster, kind: str, name: str) -> dict:
    (found,) = [o for o in cluster.objects if (o["kind"], o["metadata"]["name"]) == (kind, name)]
    return found


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs the preflight on a cluster against the stand-in server: run(objects, cluster)."""
    def run(objects: list[dict], cluster: Cluster, images: bool = False
            ) -> tuple[list[preflight.Check], k.Kubectl]:
        with StandInServer(cluster, tmp_path) as server:
            monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
            monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "cache"))
            runner = k.Kubectl(KubernetesSettings(kubectl=real_kubectl(),
                                                  context=server.context))
            return preflight.check(objects, runner, images=images, pull_timeout=20), runner
    return run


def rows_by_status(rows: list[preflight.Check]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row.status, []).append(row.name)
    return out


def only_row_not_ok(rows: list[preflight.Check], name: str, status: str) -> preflight.Check:
    """The one row that is not ok: ``name`` with ``status``, with a fix."""
    bad = [row for row in rows if row.status != preflight.OK]
    assert [(r.name, r.status) for r in bad] == [(name, status)], preflight.table(rows)
    assert bad[0].fix, bad[0]
    return bad[0]


@pytest.mark.parametrize("rendering", ["prod+dask", "canary", "argo-rollouts"])
def test_a_cluster_with_everything_passes_every_row(rendered, stand_in, rendering):
    rows, runner = stand_in(rendered[rendering], complete_cluster())
    assert rows_by_status(rows).keys() == {preflight.OK}, preflight.table(rows)
    names = {row.name for row in rows}
    assert "Kubernetes >= 1.30" in names
    assert f"namespace {NAMESPACE}: Pod Security" in names
    expected = {
        "prod+dask": {"CRD daskclusters.kubernetes.dask.org", "CRD servicemonitors."
                      "monitoring.coreos.com", "metrics API (metrics-server)",
                      "ReadWriteMany StorageClass nfs-client", "volume ownership on nfs-client",
                      "default StorageClass", "Prometheus selects the monitoring objects",
                      "namespace dask-operator", "Secret churn-training-data"},
        "canary": {"permissions of `churn canary`"},
        "argo-rollouts": {"CRD rollouts.argoproj.io", "CRD analysistemplates.argoproj.io",
                          "Prometheus at http://prometheus-operated.monitoring.svc:9090"},
    }[rendering]
    assert expected <= names, sorted(names)
    # A preflight reads: every kubectl call it made is a read.
    assert {verb(argv) for argv in runner.history} <= {"version", "api-resources", "api-versions",
                                                   "get", "auth"}, runner.history


def without(*pieces: tuple[str, str]):
    def change(cluster: Cluster) -> None:
        for kind, name in pieces:
            cluster.remove(kind, name)
    return change


def edit(kind: str, name: str, update):
    def change(cluster: Cluster) -> None:
        update(find(cluster, kind, name))
    return change


MISSING = {
    "old server": ("prod+dask", lambda c: setattr(c, "version", "v1.29.4"),
                   "Kubernetes >= 1.30", "FAIL"),
    "no ServiceMonitor CRD": ("prod+dask", without(
        ("CustomResourceDefinition", "servicemonitors.monitoring.coreos.com")),
        "CRD servicemonitors.monitoring.coreos.com", "FAIL"),
    "no Dask operator CRD": ("prod+dask", without(
        ("CustomResourceDefinition", "daskautoscalers.kubernetes.dask.org")),
        "CRD daskautoscalers.kubernetes.dask.org", "FAIL"),
    "no Argo Rollouts CRD": ("argo-rollouts", without(
        ("CustomResourceDefinition", "rollouts.argoproj.io")), "CRD rollouts.argoproj.io",
        "FAIL"),
    "no ReadWriteMany class": ("prod+dask", without(("StorageClass", "nfs-client")),
                               "ReadWriteMany StorageClass nfs-client", "FAIL"),
    "a block class under the RWX name": ("prod+dask", edit(
        "StorageClass", "nfs-client", lambda o: o.update(provisioner="ebs.csi.aws.com")),
        "ReadWriteMany StorageClass nfs-client", "FAIL"),
    "fsGroup not applied to RWX volumes": ("prod+dask", edit(
        "CSIDriver", "nfs.csi.k8s.io", lambda o: o["spec"].update(
            fsGroupPolicy="ReadWriteOnceWithFSType")), "volume ownership on nfs-client",
        "warn"),
    "no default class": ("prod+dask", edit(
        "StorageClass", "standard", lambda o: o["metadata"].update(annotations={})),
        "default StorageClass", "FAIL"),
    "no metrics-server": ("prod+dask", without(("APIService", "v1beta1.metrics.k8s.io")),
                          "metrics API (metrics-server)", "FAIL"),
    "metrics-server down": ("prod+dask", edit(
        "APIService", "v1beta1.metrics.k8s.io", lambda o: o["status"]["conditions"][0].update(
            status="False", message="FailedDiscoveryCheck")),
        "metrics API (metrics-server)", "FAIL"),
    "namespace enforcing another profile": ("prod+dask", edit(
        "Namespace", NAMESPACE, lambda o: o["metadata"]["labels"].update({
            "pod-security.kubernetes.io/enforce": "privileged"})),
        f"namespace {NAMESPACE}: Pod Security", "FAIL"),
    "Prometheus selecting another release": ("prod+dask", edit(
        "Prometheus", "kube-prometheus-stack-prometheus", lambda o: [
            s["matchLabels"].update(release="monitoring-stack") for key, s in o["spec"].items()
            if key.endswith("Selector") and "release" in s.get("matchLabels", {})]),
        "Prometheus selects the monitoring objects", "FAIL"),
    "no Prometheus": ("prod+dask", without(("Prometheus", "kube-prometheus-stack-prometheus")),
                      "Prometheus selects the monitoring objects", "FAIL"),
    "no Dask operator namespace": ("prod+dask", without(("Namespace", "dask-operator")),
                                   "namespace dask-operator", "FAIL"),
    "Prometheus elsewhere than the Argo analysis says": ("argo-rollouts", without(
        ("Service", "prometheus-operated")),
        "Prometheus at http://prometheus-operated.monitoring.svc:9090", "FAIL"),
    "no training-data Secret": ("prod+dask", without(("Secret", "churn-training-data")),
                                "Secret churn-training-data", "FAIL"),
    "no labels Secret (its CronJob is suspended)": ("prod+dask", without(
        ("Secret", "churn-labels")), "Secret churn-labels", "warn"),
    "canary may not scale": ("canary", lambda c: c.denied.add(
        ("patch", "deployments", "scale")), "permissions of `churn canary`", "FAIL"),
}


@pytest.mark.parametrize("case", MISSING, ids=list(MISSING))
def test_each_missing_piece_fails_its_own_row_with_a_fix(rendered, stand_in, case):
    rendering, change, name, status = MISSING[case]
    cluster = complete_cluster()
    change(cluster)
    rows, _ = stand_in(rendered[rendering], cluster)
    row = only_row_not_ok(rows, name, status)
    print(preflight.table(rows))
    if case == "Prometheus selecting another release":
        assert "release-label.yaml to monitoring-stack" in row.fix
    if case == "canary may not scale":
        assert row.found == "denied: patch deployments/scale"


def test_no_namespace_yet_is_fine_and_secrets_are_then_missing(rendered, stand_in):
    cluster = complete_cluster()
    without(("Namespace", NAMESPACE), ("Secret", "churn-training-data"),
            ("Secret", "churn-mlflow-db"), ("Secret", "churn-labels"))(cluster)
    rows, _ = stand_in(rendered["prod+dask"], cluster)
    by_name = {row.name: row for row in rows}
    pod_security = by_name[f"namespace {NAMESPACE}: Pod Security"]
    assert pod_security.status == preflight.OK and "created by the apply" in pod_security.found
    assert rows_by_status(rows)[preflight.FAIL] == ["Secret churn-mlflow-db",
                                                    "Secret churn-training-data"]
    assert "namespace.yaml first" in by_name["Secret churn-mlflow-db"].found


def test_an_unreachable_cluster_is_one_failed_row(rendered, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    runner = k.Kubectl(KubernetesSettings(kubectl=real_kubectl()))
    (row,) = preflight.check(rendered["prod+dask"], runner)
    assert (row.name, row.status) == ("cluster reachable", preflight.FAIL)
    assert "127.0.0.1:9" in row.found and "--context" in row.fix


def test_images_are_pulled_by_a_pod_each_and_the_pods_removed(rendered, stand_in):
    cluster = complete_cluster()
    cluster.pullable.discard("churn-jobs:0.1.0")
    rows, runner = stand_in(rendered["prod+dask"], cluster, images=True)
    images = {row.name: row for row in rows if row.name.startswith("image ")}
    assert {n: r.status for n, r in images.items()} == {
        "image churn-jobs:0.1.0": preflight.FAIL, "image churn-serve:0.1.0": preflight.OK,
        "image quay.io/prometheus/pushgateway:v1.11.1": preflight.OK}
    assert "ErrImagePull" in images["image churn-jobs:0.1.0"].found
    created = [a for a in runner.history if verb(a) == "run"]
    assert len(created) == 3
    assert sorted(cluster.deleted) == sorted(f"pods/{argv[6]}" for argv in created)
    # The pods meet the namespace's "restricted" profile, or admission would refuse them.
    overrides = json.loads(next(a for a in created[0] if a.startswith("--overrides="))
                           .split("=", 1)[1])
    container = overrides["spec"]["containers"][0]
    assert overrides["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_permissions_checked_are_those_the_canary_commands_use(cluster, tmp_path):
    """Run the canary commands against the canary tests' stand-in (fake_kubectl.py) and map
    every call they made to the API permissions it needs: all must be among those checked."""
    from rollout.canary import Canary, PromotionFailed
    from rollout.config import CanaryConfig

    config = CanaryConfig()
    config.kubernetes.kubectl = str(cluster.parent / "kubectl")
    canary = Canary(config, k.Kubectl(config.kubernetes), tmp_path / "decisions.jsonl")
    canary.start("streaming_churn:v2", "registry.example/churn-serve:2.0")
    canary.step(25, "next step")
    (cluster / "broken.json").write_text(json.dumps(["registry.example/churn-serve:2.0"]))
    with pytest.raises(PromotionFailed):
        canary.promote("try")  # rolled back: rollout undo
    canary.abort("done")
    calls = [json.loads(line) for line in (cluster / "calls.jsonl").read_text().splitlines()]
    verbs = {(c[0], c[1]) if c[0] == "rollout" else (c[0],) for c in calls}
    assert {("rollout", "undo"), ("rollout", "status"), ("scale",), ("set",), ("patch",),
            ("annotate",), ("get",)} <= verbs
    needed = set()
    for argv in calls:
        kind = next((a.split("/")[0] for a in argv if a.startswith(("deployment/",
                                                                     "configmap/"))), None)
        kind = kind or argv[1]
        needed |= preflight.permissions(k.Call(tuple(argv), "", kind))
    assert needed <= set(preflight.canary_permissions()), needed - set(
        preflight.canary_permissions())


def test_pull_state_reads_a_pods_image_pull():
    def pod(state: dict) -> dict:
        return {"status": {"containerStatuses": [{"state": state}]}}

    assert preflight.pull_state({"status": {}}) is None
    assert preflight.pull_state(pod({"waiting": {"reason": "ContainerCreating"}})) is None
    assert preflight.pull_state(pod({"waiting": {"reason": "ImagePullBackOff",
                                                 "message": "back-off"}})) == (
        False, "ImagePullBackOff: back-off")
    assert preflight.pull_state(pod({"terminated": {"exitCode": 0}})) == (True, "pulled")
    assert preflight.pull_state(pod({"waiting": {"reason": "CreateContainerError"}}))[0]


def test_needs_reads_what_production_with_dask_asks_of_a_cluster(rendered):
    wanted = preflight.needs(rendered["prod+dask"])
    assert wanted.namespace == NAMESPACE
    assert set(wanted.resources) == {"servicemonitors.monitoring.coreos.com",
                                     "prometheusrules.monitoring.coreos.com",
                                     "daskclusters.kubernetes.dask.org",
                                     "daskautoscalers.kubernetes.dask.org"}
    assert sorted(wanted.shared_classes["nfs-client"]) == [
        "churn-batch", "churn-inference-log", "churn-model-store", "churn-reports"]
    assert set(wanted.secrets) == {"churn-training-data", "churn-mlflow-db", "churn-labels"}
    assert wanted.optional_secrets == {"churn-labels"}
    assert set(wanted.admitted_namespaces) == {"dask-operator"}
    assert not wanted.canary and wanted.autoscalers == ["HorizontalPodAutoscaler churn-serve"]
    assert preflight.needs(rendered["canary"]).canary
    assert preflight.needs(rendered["canary"], namespace="other").namespace == "other"


def test_the_table_has_one_fix_per_row_that_is_not_ok():
    rows = [preflight.Check("a", "x", preflight.OK, "fine"),
            preflight.Check("b", "y", preflight.FAIL, "missing", "install b"),
            preflight.Check("c", "z", preflight.WARN, "unsure", "look at c")]
    text = preflight.table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "needed", "by", "result", "found"]
    assert lines[2].split()[:3] == ["b", "y", "FAIL"]
    assert lines[-3:] == ["1 of 3 checks failed, 1 warning; to fix:", "  FAIL b: install b",
                          "  warn c: look at c"]
    assert preflight.table(rows[:1]).endswith("all 1 checks passed")


def churn(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn_cli", "k8s", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_the_command_prints_the_table_and_exits_1_on_a_failed_row(tmp_path):
    cluster = complete_cluster()
    cluster.remove("StorageClass", "nfs-client")
    with StandInServer(cluster, tmp_path) as server:
        env = {"KUBECONFIG": str(server.kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
        done = churn("--kubectl", real_kubectl(), "--context", server.context, env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stdout.startswith("k8s/overlays/prod on context stand-in, namespace "
                                      "churn-serve:\ncheck ")
        assert "  FAIL ReadWriteMany StorageClass nfs-client: set storageClassName in " \
               "k8s/overlays/prod/storage-class.yaml" in done.stdout
        cluster.add(storage_class("nfs-client", "nfs.csi.k8s.io"), namespace("churn-dev"),
                    secret("churn-training-data", "churn-dev"), secret("churn-labels",
                                                                        "churn-dev"))
        done = churn("--kubectl", real_kubectl(), "--context", server.context, "--overlay",
                     "k8s/overlays/dev", "--overlay", "k8s/overlays/prod", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("checks passed") == 2
        assert "k8s/overlays/dev on context stand-in, namespace churn-dev:" in done.stdout


def test_an_overlay_that_does_not_render_is_one_error_line(tmp_path):
    done = churn("--overlay", str(tmp_path), "--kubectl", real_kubectl(), env={})
    assert done.returncode == 2
    *logged, line = done.stderr.strip().splitlines()
    assert [" churn.config config canary.yaml: " in log for log in logged] == [True]
    assert line.startswith(f"error: RenderError: kubectl kustomize {tmp_path} failed: ")


def test_help_explains_every_option():
    done = subprocess.run([sys.executable, "-m", "churn_cli", "k8s", "check", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    for option in ("--overlay", "--context", "--namespace", "--images", "--kubectl",
                   "--config"):
        assert option in done.stdout
    assert done.returncode == 0
